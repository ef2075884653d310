//! Shard move endpoints (`docs/api.md`, "Cluster"; `docs/cluster.md`, "The
//! move protocol" and "Rebalance"):
//!
//! - `POST /v1/internal/shards/{shard}/export` (cluster secret): fences the
//!   shard here and answers its state (`application/octet-stream`);
//! - `POST /v1/internal/shards/{shard}/import?epoch=E` (cluster secret,
//!   body: an exported state): installs it and owns the shard at `E`;
//! - `POST /v1/internal/shards/{shard}/drop?owner=N&epoch=E` (cluster
//!   secret): forgets the shard, now owned by `N` at `E`;
//! - `POST /v1/internal/stores/handover` and `.../absorb` (cluster secret):
//!   the two halves of moving a leaving node's aggregates
//!   (`engine::stores`);
//! - `POST /v1/cluster/shards/{shard}/move` `{"to": N}`,
//!   `POST /v1/cluster/rebalance`, `POST /v1/cluster/nodes/{id}/drain`,
//!   `.../undrain` and `.../remove` (admin token): run by the leader.
//!   A drain that could not move every shard it planned answers `502`
//!   with a `DrainFailure` body (the node stays draining).
//!   Any member takes them: a follower forwards the operation to the
//!   leader (`POST /v1/internal/leader`, cluster secret) and answers the
//!   leader's answer, so leader changes are invisible to operators. The
//!   internal endpoint never forwards again: a node that is no longer the
//!   leader answers `307 not_leader`.
//!
//! The engine does the work (`engine::handoff`, `engine::stores`), the
//! leader sequences it (`cluster::moves::ShardMover`) and operations reach
//! it through `cluster::leader`; this module only maps requests and errors.

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::cluster::leader::{LeaderError, OperationAnswer};
use crate::cluster::moves::{self, MoveError, OperationReport};
use crate::cluster::peer::{AbsorbedStores, ShardLoads};
use crate::cluster::ExportError;
use crate::engine::handoff::HandoffError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;

/// Largest shard state an import accepts in one body.
pub const IMPORT_BODY_BYTES_MAX: usize = 512 * 1024 * 1024;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope("/v1/internal/shards")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .app_data(web::PayloadConfig::new(IMPORT_BODY_BYTES_MAX))
                .route("/{shard}/export", web::post().to(export))
                .route("/{shard}/import", web::post().to(import))
                .route("/{shard}/drop", web::post().to(drop_shard))
                .route("/loads", web::get().to(shard_loads)),
        )
        .service(
            web::scope("/v1/internal/stores")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .app_data(web::PayloadConfig::new(IMPORT_BODY_BYTES_MAX))
                .route("/handover", web::post().to(hand_over_stores))
                .route("/absorb", web::post().to(absorb_stores)),
        )
        .service(
            web::resource("/v1/internal/leader")
                .wrap(actix_web::middleware::from_fn(auth::require_cluster_secret))
                .route(web::post().to(leader_operation)),
        )
        .service(
            web::resource("/v1/cluster/shards/{shard}/move")
                .wrap(actix_web::middleware::from_fn(auth::require_admin))
                .route(web::post().to(move_shard)),
        )
        .service(
            web::resource("/v1/cluster/rebalance")
                .wrap(actix_web::middleware::from_fn(auth::require_admin))
                .route(web::post().to(rebalance)),
        )
        .service(
            web::scope("/v1/cluster/nodes/{node}")
                .wrap(actix_web::middleware::from_fn(auth::require_admin))
                .route("/drain", web::post().to(drain))
                .route("/undrain", web::post().to(undrain))
                .route("/remove", web::post().to(remove)),
        );
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    epoch: u64,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DropQuery {
    owner: u64,
    epoch: u64,
}

impl From<HandoffError> for ApiError {
    fn from(error: HandoffError) -> Self {
        let (status, code) = match &error {
            HandoffError::UnknownShard { .. } => (StatusCode::NOT_FOUND, ErrorCode::UnknownShard),
            HandoffError::NotOwned { .. } => (StatusCode::CONFLICT, ErrorCode::NotOwner),
            HandoffError::Codec(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedShardState),
            HandoffError::Storage { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable,
            ),
            HandoffError::ShuttingDown | HandoffError::Actor(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown)
            }
            HandoffError::StillOwnsShard { .. } => {
                (StatusCode::CONFLICT, ErrorCode::StillOwnsShards)
            }
            HandoffError::StoresOverlap { .. } => (StatusCode::CONFLICT, ErrorCode::StoresOverlap),
            HandoffError::HandedOver => (StatusCode::CONFLICT, ErrorCode::StoresHandedOver),
        };
        ApiError::new(status, code, error.to_string())
    }
}

async fn export(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
) -> Result<HttpResponse, ApiError> {
    let bytes = state
        .cluster
        .export_shard(shard.into_inner())
        .await
        .map_err(|error| match error {
            ExportError::Engine(error) => ApiError::from(error),
            error @ ExportError::MoveNotBegun { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::MoveNotBegun,
                error.to_string(),
            ),
        })?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

async fn import(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
    query: web::Query<ImportQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let shard = shard.into_inner();
    state
        .cluster
        .import_shard(shard, &body, query.epoch)
        .await?;
    tracing::info!(
        shard,
        epoch = query.epoch,
        bytes = body.len(),
        "shard imported"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({"shard": shard, "epoch": query.epoch})))
}

async fn drop_shard(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
    query: web::Query<DropQuery>,
) -> Result<HttpResponse, ApiError> {
    let shard = shard.into_inner();
    state
        .engine
        .drop_shard(shard, query.owner, query.epoch)
        .await?;
    tracing::info!(
        shard,
        owner = query.owner,
        epoch = query.epoch,
        "shard dropped"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({"shard": shard, "epoch": query.epoch})))
}

/// `GET /v1/internal/shards/loads`: `{"loads": [events retained per
/// shard]}` (0 for shards owned elsewhere).
async fn shard_loads(state: web::Data<AppState>) -> HttpResponse {
    let loads = state.engine.shard_loads().await;
    HttpResponse::Ok().json(ShardLoads { loads })
}

async fn hand_over_stores(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let bytes = state.engine.hand_over_stores(state.node_id).await?;
    tracing::info!(bytes = bytes.len(), "stores handed over");
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

async fn absorb_stores(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let stores = state.engine.absorb_stores(state.node_id, &body).await?;
    tracing::info!(?stores, bytes = body.len(), "stores absorbed");
    Ok(HttpResponse::Ok().json(AbsorbedStores { stores }))
}

fn move_error(error: MoveError) -> HttpResponse {
    let code = moves::error_code(&error);
    if let MoveError::NotLeader {
        leader_id,
        leader_address,
    } = &error
    {
        return HttpResponse::build(StatusCode::TEMPORARY_REDIRECT).json(wire::NotLeader {
            error: code.clone(),
            message: error.to_string(),
            leader_id: *leader_id,
            leader_address: leader_address.clone(),
        });
    }
    let status = match &error {
        MoveError::UnknownShard { .. } | MoveError::NotAMember { .. } => StatusCode::NOT_FOUND,
        MoveError::Refused(_)
        | MoveError::NoOtherMember { .. }
        | MoveError::StillOwnsShards { .. } => StatusCode::CONFLICT,
        MoveError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        MoveError::StepFailed { .. }
        | MoveError::DropFailed { .. }
        | MoveError::RemoveFailed { .. } => StatusCode::BAD_GATEWAY,
        MoveError::NotLeader { .. } => StatusCode::TEMPORARY_REDIRECT,
    };
    actix_web::ResponseError::error_response(&ApiError::new(status, code, error.to_string()))
}

/// Runs `operation` here when this node leads; otherwise hands it to the
/// leader and answers what the leader answered.
async fn operate(state: &AppState, operation: wire::LeaderOperation) -> HttpResponse {
    let cluster = &state.cluster;
    match cluster.leader.operate(&cluster.mover, operation).await {
        Ok(OperationAnswer::Here(answer)) => report(answer),
        Ok(OperationAnswer::Forwarded(answer)) => HttpResponse::build(
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
        )
        .content_type("application/json")
        .body(answer.body),
        Err(LeaderError::Unknown) => move_error(MoveError::Unavailable {
            step: "leadership",
            detail: "no leader is known (an election is in progress); retry".to_string(),
        }),
        Err(LeaderError::Unavailable { detail }) => move_error(MoveError::Unavailable {
            step: "leadership",
            detail,
        }),
        Err(LeaderError::Forward(error)) => {
            actix_web::ResponseError::error_response(&ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::LeaderUnreachable,
                format!("the operation could not be handed to the leader: {error}"),
            ))
        }
    }
}

fn report(answer: Result<OperationReport, MoveError>) -> HttpResponse {
    match answer {
        Ok(OperationReport::Drain(report)) => drain_answer(report),
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => move_error(error),
    }
}

/// `200` with the report when every planned move of the drain was made;
/// `502` with a `DrainFailure` when some failed, or when the drained node
/// does not answer and still owns shards: a drain that leaves shards
/// behind must not look like a success.
fn drain_answer(report: wire::DrainReport) -> HttpResponse {
    let unreachable =
        report.remaining_shards > 0 && report.moves.unreachable.contains(&report.node_id);
    if report.moves.failures.is_empty() && !unreachable {
        return HttpResponse::Ok().json(report);
    }
    let failed_shards: Vec<u32> = report.moves.failures.iter().map(|f| f.shard).collect();
    let node = report.node_id;
    let (error, message) = if unreachable {
        (
            ErrorCode::NodeUnreachable,
            format!(
                "node {node} does not answer, so its {} shards cannot move; restart it, or undrain it (sessiondb-ctl nodes undrain {node})",
                report.remaining_shards
            ),
        )
    } else {
        let first = &report.moves.failures[0];
        (
            ErrorCode::MoveFailed,
            format!(
                "{} of the drain's moves failed (shards {failed_shards:?}; first: {}); node {node} still owns {} shards and stays draining: run the drain again, or undrain it (sessiondb-ctl nodes undrain {node})",
                failed_shards.len(),
                first.message,
                report.remaining_shards
            ),
        )
    };
    HttpResponse::build(StatusCode::BAD_GATEWAY).json(wire::DrainFailure {
        error,
        message,
        failed_shards,
        report,
    })
}

/// `POST /v1/internal/leader`: an operation a member forwarded.
async fn leader_operation(
    state: web::Data<AppState>,
    operation: web::Json<wire::LeaderOperation>,
) -> HttpResponse {
    if let Err(error) = state.cluster.placement.require_leader() {
        return move_error(MoveError::from_change("leadership", error));
    }
    report(state.cluster.mover.run(operation.into_inner()).await)
}

async fn move_shard(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
    request: web::Json<wire::MoveShardRequest>,
) -> HttpResponse {
    let operation = wire::LeaderOperation::MoveShard {
        shard: shard.into_inner(),
        to: request.to,
    };
    operate(&state, operation).await
}

async fn rebalance(state: web::Data<AppState>) -> HttpResponse {
    operate(&state, wire::LeaderOperation::Rebalance).await
}

async fn drain(state: web::Data<AppState>, node: web::Path<u64>) -> HttpResponse {
    let node_id = node.into_inner();
    operate(&state, wire::LeaderOperation::Drain { node_id }).await
}

async fn undrain(state: web::Data<AppState>, node: web::Path<u64>) -> HttpResponse {
    let node_id = node.into_inner();
    operate(&state, wire::LeaderOperation::Undrain { node_id }).await
}

async fn remove(state: web::Data<AppState>, node: web::Path<u64>) -> HttpResponse {
    let node_id = node.into_inner();
    operate(&state, wire::LeaderOperation::Remove { node_id }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: Vec<wire::FailedMove>, unreachable: Vec<u64>) -> wire::DrainReport {
        wire::DrainReport {
            node_id: 2,
            moves: wire::RebalanceReport {
                plan: Vec::new(),
                moved: Vec::new(),
                failed: failures.first().cloned(),
                failures,
                skipped: Vec::new(),
                unreachable,
            },
            remaining_shards: 5,
        }
    }

    #[tokio::test]
    async fn a_drain_that_left_shards_behind_is_not_a_success() {
        let failure = wire::FailedMove {
            shard: 7,
            from: 2,
            to: 1,
            error: ErrorCode::MoveFailed,
            message: "the move failed at step import".to_string(),
        };
        let answer = drain_answer(report(vec![failure], Vec::new()));
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
        let body = actix_web::body::to_bytes(answer.into_body()).await.unwrap();
        let body: wire::DrainFailure = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error, ErrorCode::MoveFailed);
        assert_eq!(body.failed_shards, vec![7]);
        assert_eq!(body.report.remaining_shards, 5);
        assert!(body.message.contains("undrain"), "{}", body.message);
        let answer = drain_answer(report(Vec::new(), vec![2]));
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
        // Another member being unreachable is no failure of this drain.
        let answer = drain_answer(report(Vec::new(), vec![3]));
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
