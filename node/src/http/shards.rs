//! Shard move endpoints (`docs/api.md`, "Cluster"; `docs/cluster.md`, "The
//! move protocol" and "Rebalance"):
//!
//! - `POST /v1/internal/shards/{shard}/export` (cluster secret): fences the
//!   shard here and answers its state (`application/octet-stream`);
//! - `POST /v1/internal/shards/{shard}/import?epoch=E` (cluster secret,
//!   body: an exported state): installs it and owns the shard at `E`;
//! - `POST /v1/internal/shards/{shard}/drop?owner=N&epoch=E` (cluster
//!   secret): forgets the shard, now owned by `N` at `E`;
//! - `POST /v1/cluster/shards/{shard}/move` `{"to": N}` (admin token) and
//!   `POST /v1/cluster/rebalance` (admin token): leader only; another node
//!   answers `307 not_leader` naming the leader, as a join does, but
//!   without a `Location` header: admin tokens are per node, so the caller
//!   must ask the leader with the leader's token.
//!
//! The engine does the work (`engine::handoff`), the leader sequences it
//! (`shard_moves::ShardMover`); this module only maps requests and errors.

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::engine::handoff::HandoffError;
use crate::shard_moves::{self, MoveError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;

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
                .route("/{shard}/drop", web::post().to(drop_shard)),
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
            HandoffError::UnknownShard { .. } => (StatusCode::NOT_FOUND, "unknown_shard"),
            HandoffError::NotOwned { .. } => (StatusCode::CONFLICT, "not_owner"),
            HandoffError::Codec(_) => (StatusCode::BAD_REQUEST, "malformed_shard_state"),
            HandoffError::Storage { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            HandoffError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

async fn export(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
) -> Result<HttpResponse, ApiError> {
    let bytes = state.engine.export_shard(shard.into_inner()).await?;
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
    state.engine.import_shard(shard, &body, query.epoch).await?;
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

fn move_error(error: MoveError) -> HttpResponse {
    let code = shard_moves::error_code(&error);
    if let MoveError::NotLeader {
        leader_id,
        leader_address,
    } = &error
    {
        return HttpResponse::build(StatusCode::TEMPORARY_REDIRECT).json(wire::NotLeader {
            error: code.to_string(),
            message: error.to_string(),
            leader_id: *leader_id,
            leader_address: leader_address.clone(),
        });
    }
    let status = match &error {
        MoveError::UnknownShard { .. } => StatusCode::NOT_FOUND,
        MoveError::Refused(_) => StatusCode::CONFLICT,
        MoveError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        MoveError::StepFailed { .. } | MoveError::DropFailed { .. } => StatusCode::BAD_GATEWAY,
        MoveError::NotLeader { .. } => StatusCode::TEMPORARY_REDIRECT,
    };
    actix_web::ResponseError::error_response(&ApiError::new(status, code, error.to_string()))
}

async fn move_shard(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
    request: web::Json<wire::MoveShardRequest>,
) -> HttpResponse {
    match state.mover.move_shard(shard.into_inner(), request.to).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => move_error(error),
    }
}

async fn rebalance(state: web::Data<AppState>) -> HttpResponse {
    match state.mover.rebalance().await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => move_error(error),
    }
}
