//! `GET /v1/shard-map`: the shard map a client routes events with
//! (`docs/api.md`, "Shard map"; `docs/client.md`, "Routing in a cluster").
//!
//! Nodes do not forward events: a node refuses an event of a shard it does
//! not own (`not_owner`, naming owner and epoch), and the client sends it to
//! the owner. This endpoint is how a client learns the owners in the first
//! place and after a refusal. It needs any project's ingest key or the
//! admin token (`docs/security.md`): a sender has one of them anyway.

use super::error::ApiError;
use super::AppState;
use crate::cluster::placement::Role;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol::ErrorCode;
use sessiondb_protocol::{self as wire, hashing::SHARD_HASH};

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/shard-map")
            .wrap(actix_web::middleware::from_fn(
                super::auth::require_ingest_or_admin,
            ))
            .route(web::get().to(shard_map)),
    );
}

async fn shard_map(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = state.cluster.placement.report();
    if report.shards.is_empty() {
        // A node that joined but has not yet received the placement state.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShardMapUnavailable,
            "this node has no shard map yet (it is joining the cluster); ask another node or retry",
        ));
    }
    let assignments = report
        .shards
        .iter()
        .enumerate()
        .map(|(shard, assignment)| wire::ShardMapEntry {
            shard: u32::try_from(shard).expect("at most SHARDS_MAX shards"),
            owner: assignment.owner,
            owner_address: report
                .members
                .get(&assignment.owner)
                .map(|member| member.address.clone()),
            epoch: assignment.epoch,
            moving: assignment.moving_to.is_some(),
        })
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(wire::ShardMap {
        version: report.applied_index.unwrap_or(0),
        node_id: report.node_id,
        hash: SHARD_HASH.to_string(),
        shards: u32::try_from(assignments.len()).expect("at most SHARDS_MAX shards"),
        assignments,
        members: report
            .members
            .iter()
            .map(|(node_id, member)| wire::ClusterMember {
                node_id: *node_id,
                address: member.address.clone(),
                role: match member.role {
                    Role::Voter => wire::MemberRole::Voter,
                    Role::Learner => wire::MemberRole::Learner,
                },
                draining: report.draining.contains(node_id),
            })
            .collect(),
    }))
}
