//! Cluster endpoints (`docs/api.md`, "Cluster"; `docs/cluster.md`):
//!
//! - `POST /v1/internal/raft/{append,vote,snapshot}` (cluster secret): a
//!   peer's Raft request, handed to the local Raft node as is;
//! - `POST /v1/internal/groups/{group}/raft/{append,vote,snapshot}`
//!   (cluster secret): a peer's Raft request for this node's replica of a
//!   shard group (`cluster::replicas`); `404 not_found` when none runs here;
//! - `POST /v1/cluster/join` (cluster secret): a node asks to become a
//!   member; only the leader admits it, any other node answers
//!   `307 not_leader` naming the leader, and the joining node retries there;
//!   A node whose data directory the cluster knows under another
//!   incarnation, or that belongs to another cluster, is refused with
//!   `409` (`docs/cluster.md`, "Node identity");
//! - `GET /v1/internal/cluster/identity?node_id=N` (cluster secret): the
//!   cluster's id and shard count and what it knows of node `N`, which a
//!   joining node checks before it starts;
//! - `GET /v1/cluster` (admin token): members, leader, term and shard map.
//!
//! The handlers see no openraft type: `PlacementHandle` takes and returns
//! bytes for Raft requests, and plain types for the rest.

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::cluster::identity::{self, IdentityError, NodeIdentity, RecordError};
use crate::cluster::peer::RaftRoute;
use crate::cluster::placement::{ChangeError, ClusterReport, RaftServerState, Role};
use crate::cluster::replicas::GroupServeError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;

/// Largest Raft request body: a batch of log entries or one snapshot chunk
/// (openraft's default chunk is 3 MiB, which JSON writes as up to 4 bytes
/// per byte).
const RAFT_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest address a joining node may announce (`host:port`).
const ADDRESS_BYTES_MAX: usize = 256;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope("/v1/internal/raft")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .app_data(web::PayloadConfig::new(RAFT_BODY_BYTES_MAX))
                .route("/append", web::post().to(raft_append))
                .route("/vote", web::post().to(raft_vote))
                .route("/snapshot", web::post().to(raft_snapshot)),
        )
        .service(
            web::scope("/v1/internal/groups/{group}/raft")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .app_data(web::PayloadConfig::new(RAFT_BODY_BYTES_MAX))
                .route("/append", web::post().to(group_raft_append))
                .route("/vote", web::post().to(group_raft_vote))
                .route("/snapshot", web::post().to(group_raft_snapshot)),
        )
        .service(
            web::resource("/v1/cluster/join")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .route(web::post().to(join)),
        )
        .service(
            web::resource(crate::cluster::peer::CLUSTER_IDENTITY_PATH)
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .route(web::get().to(cluster_identity)),
        )
        .service(
            web::resource("/v1/cluster")
                .wrap(actix_web::middleware::from_fn(
                    auth::require_viewer_or_admin,
                ))
                .route(web::get().to(status)),
        );
}

fn raft_answer(
    answer: Result<Vec<u8>, crate::cluster::placement::RaftRpcError>,
) -> Result<HttpResponse, ApiError> {
    let body = answer.map_err(|error| {
        ApiError::bad_request(ErrorCode::MalformedRaftRequest, error.to_string())
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

async fn group_raft(
    state: &AppState,
    group: u32,
    route: RaftRoute,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    match state.cluster.replicas.serve(group, route, body).await {
        Ok(answer) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(answer)),
        Err(error @ GroupServeError::NotHosted { .. }) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            error.to_string(),
        )),
        Err(error @ GroupServeError::Malformed(_)) => Err(ApiError::bad_request(
            ErrorCode::MalformedRaftRequest,
            error.to_string(),
        )),
    }
}

async fn group_raft_append(
    state: web::Data<AppState>,
    group: web::Path<u32>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    group_raft(&state, group.into_inner(), RaftRoute::Append, &body).await
}

async fn group_raft_vote(
    state: web::Data<AppState>,
    group: web::Path<u32>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    group_raft(&state, group.into_inner(), RaftRoute::Vote, &body).await
}

async fn group_raft_snapshot(
    state: web::Data<AppState>,
    group: web::Path<u32>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    group_raft(&state, group.into_inner(), RaftRoute::Snapshot, &body).await
}

/// `409 incarnation_mismatch` when the request names another incarnation
/// than this node's: the sender's cluster knows another data directory
/// under this node's id (this one was wiped, or belongs elsewhere), and
/// taking its log or snapshot would make this empty directory the owner
/// of the old node's shards.
fn check_incarnation(state: &AppState, request: &HttpRequest) -> Result<(), ApiError> {
    let named = request
        .headers()
        .get(crate::cluster::peer::INCARNATION_HEADER)
        .and_then(|value| value.to_str().ok());
    match (named, &state.cluster.incarnation) {
        (Some(named), Some(own)) if named != own => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IncarnationMismatch,
            format!(
                "node {} runs on another data directory than the one this cluster knows under its id (incarnation {own}, not {named})",
                state.node_id
            ),
        )),
        _ => Ok(()),
    }
}

async fn raft_append(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_incarnation(&state, &request)?;
    raft_answer(state.cluster.placement.serve_append(&body).await)
}

async fn raft_vote(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_incarnation(&state, &request)?;
    raft_answer(state.cluster.placement.serve_vote(&body).await)
}

async fn raft_snapshot(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_incarnation(&state, &request)?;
    raft_answer(state.cluster.placement.serve_snapshot(&body).await)
}

async fn join(
    state: web::Data<AppState>,
    request: web::Json<wire::JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    if request.address.is_empty()
        || request.address.len() > ADDRESS_BYTES_MAX
        || request.address.contains('/')
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidAddress,
            "`address` must be the joining node's `host:port`",
        ));
    }
    let placement = &state.cluster.placement;
    if let Some(incarnation) = &request.incarnation {
        let joining = NodeIdentity {
            incarnation: incarnation.clone(),
            cluster_id: request.cluster_id.clone(),
        };
        let known = identity::cluster_identity(&placement.view().current(), request.node_id);
        if let Err(error) =
            identity::check_identity(request.node_id, &joining, false, &known, "this cluster")
        {
            return Err(identity_refused(&error));
        }
    }
    match placement.admit(request.node_id, &request.address).await {
        Ok((role, leader_id)) => {
            if let Some(incarnation) = &request.incarnation {
                identity::record_identity(placement, request.node_id, incarnation)
                    .await
                    .map_err(|error| match error {
                        RecordError::KnownElsewhere(error) => identity_refused(&error),
                        other => ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            ErrorCode::MembershipUnavailable,
                            format!("the node is a member, but its incarnation is not recorded yet: {other}; retry"),
                        ),
                    })?;
            }
            tracing::info!(node_id = request.node_id, address = %request.address, ?role, "node admitted");
            Ok(HttpResponse::Ok().json(wire::JoinResponse {
                node_id: request.node_id,
                role: wire_role(role),
                leader_id,
            }))
        }
        Err(ChangeError::NotLeader {
            leader_id,
            leader_address,
        }) => {
            let mut response = HttpResponse::build(StatusCode::TEMPORARY_REDIRECT);
            if let Some(address) = &leader_address {
                response.insert_header((
                    header::LOCATION,
                    format!(
                        "{}{}",
                        state.cluster.peers.base_url(address),
                        crate::cluster::peer::JOIN_PATH
                    ),
                ));
            }
            Ok(response.json(wire::NotLeader {
                error: ErrorCode::NotLeader,
                message: "only the leader admits nodes; ask the leader".to_string(),
                leader_id,
                leader_address,
            }))
        }
        Err(ChangeError::Unavailable { detail }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MembershipUnavailable,
            detail,
        )),
    }
}

/// `409 cluster_mismatch` or `409 incarnation_mismatch`: the joining node
/// stops, since no retry can change its data directory.
fn identity_refused(error: &IdentityError) -> ApiError {
    let code = match error {
        IdentityError::OtherCluster { .. } => ErrorCode::ClusterMismatch,
        _ => ErrorCode::IncarnationMismatch,
    };
    tracing::warn!(%error, "join refused");
    ApiError::new(StatusCode::CONFLICT, code, error.to_string())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityQuery {
    node_id: u64,
}

async fn cluster_identity(
    state: web::Data<AppState>,
    query: web::Query<IdentityQuery>,
) -> HttpResponse {
    let placement = state.cluster.placement.view().current();
    HttpResponse::Ok().json(identity::cluster_identity(&placement, query.node_id))
}

async fn status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(wire_status(state.cluster.placement.report()))
}

fn wire_role(role: Role) -> wire::MemberRole {
    match role {
        Role::Voter => wire::MemberRole::Voter,
        Role::Learner => wire::MemberRole::Learner,
    }
}

fn wire_status(report: ClusterReport) -> wire::ClusterStatus {
    let state = match report.state {
        RaftServerState::Leader => wire::RaftState::Leader,
        RaftServerState::Follower => wire::RaftState::Follower,
        RaftServerState::Candidate => wire::RaftState::Candidate,
        RaftServerState::Learner => wire::RaftState::Learner,
        RaftServerState::Shutdown => wire::RaftState::Shutdown,
    };
    wire::ClusterStatus {
        node_id: report.node_id,
        state,
        leader: report.leader,
        term: report.term,
        applied_index: report.applied_index,
        members: report
            .members
            .into_iter()
            .map(|(node_id, member)| wire::ClusterMember {
                node_id,
                address: member.address,
                role: wire_role(member.role),
                draining: report.draining.contains(&node_id),
            })
            .collect(),
        retired: report
            .retired
            .iter()
            .map(|(node_id, kept_by)| wire::RetiredStores {
                node_id: *node_id,
                kept_by: *kept_by,
            })
            .collect(),
        shards: report
            .shards
            .iter()
            .enumerate()
            .map(|(shard, assignment)| wire::ShardOwnership {
                shard: u32::try_from(shard).expect("at most SHARDS_MAX shards"),
                owner: assignment.owner,
                epoch: assignment.epoch,
                moving_to: assignment.moving_to,
            })
            .collect(),
    }
}
