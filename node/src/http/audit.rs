//! `GET /v1/cluster/shards/{shard}/events` (admin token): the events a
//! shard holds on this node, for the chaos tests' final read
//! (`docs/reliability.md`, "Checkers"; `engine::audit`).
//!
//! The answer lists every retained event as `{project, visitor, id}` with
//! this node's role for the shard (`owner`, `fenced` or `elsewhere`) and
//! the epoch, so the checker can tell the owner's copy from a stale one.

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::engine::handoff::ShardRole;
use actix_web::{web, HttpResponse};
use serde::Serialize;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/cluster/shards/{shard}/events")
            .wrap(actix_web::middleware::from_fn(auth::require_admin))
            .route(web::get().to(shard_events)),
    );
}

#[derive(Debug, Serialize)]
struct AuditedEventBody {
    project: String,
    visitor: String,
    id: String,
}

#[derive(Debug, Serialize)]
struct ShardEventsBody {
    node_id: u64,
    shard: u32,
    /// `owner`, `fenced` or `elsewhere`.
    role: &'static str,
    /// The owner this node knows of: itself unless `elsewhere`.
    owner: u64,
    epoch: u64,
    events: Vec<AuditedEventBody>,
}

async fn shard_events(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
) -> Result<HttpResponse, ApiError> {
    let audit = state.engine.audit_shard(shard.into_inner()).await?;
    let (role, owner, epoch) = match audit.role {
        ShardRole::Owner { epoch } => ("owner", state.node_id, epoch),
        ShardRole::Fenced { epoch } => ("fenced", state.node_id, epoch),
        ShardRole::Elsewhere { owner, epoch } => ("elsewhere", owner, epoch),
    };
    Ok(HttpResponse::Ok().json(ShardEventsBody {
        node_id: state.node_id,
        shard: audit.shard,
        role,
        owner,
        epoch,
        events: audit
            .events
            .into_iter()
            .map(|event| AuditedEventBody {
                project: event.project,
                visitor: event.visitor,
                id: event.id,
            })
            .collect(),
    }))
}
