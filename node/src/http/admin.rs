//! Health, status and the test clock.

use super::error::ApiError;
use super::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: no actor of the engine failed, its log has not failed, the
/// node has recovered (it
/// does before it listens), is a
/// member of a cluster whose placement leader it knows, owns every shard
/// the shard map gives it, and has no shard fenced (in the middle of a
/// move away). 503 with the first reason that fails otherwise.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if let Some(failure) = state.engine.failure() {
        // An actor failed: the node refuses work and is stopping
        // (`engine::supervisor`).
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "ready": false,
            "reason": "actor_failed",
            "shards": [],
            "detail": failure.to_string(),
        }));
    }
    if let Some(cause) = state.engine.storage_failure() {
        // The log failed for good (never retried): nothing new can be made
        // durable until the node is restarted on a working disk.
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "ready": false,
            "reason": ErrorCode::StorageFailed,
            "shards": [],
            "detail": cause,
        }));
    }
    let report = state.cluster.placement.report();
    let reason = if !report.members.contains_key(&report.node_id) {
        Some(("not_a_member", Vec::new()))
    } else if report.leader.is_none() {
        Some(("no_leader", Vec::new()))
    } else {
        shard_reason(&state, report.node_id, &report.shards)
    };
    match reason {
        None => HttpResponse::Ok().json(serde_json::json!({"ready": true})),
        Some((reason, shards)) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "reason": reason, "shards": shards})),
    }
}

/// `shard_fenced` with the shards fenced here, else `shards_not_owned` with
/// the shards the map gives this node that its engine does not serve yet
/// (the roles follow the map a moment after it changes).
fn shard_reason(
    state: &AppState,
    node_id: u64,
    shards: &[crate::cluster::placement::ShardAssignment],
) -> Option<(&'static str, Vec<u32>)> {
    use crate::engine::handoff::ShardRole;
    let mut fenced = Vec::new();
    let mut not_owned = Vec::new();
    for (shard, assignment) in (0_u32..).zip(shards) {
        let role = state.engine.shard_role(shard);
        if matches!(role, ShardRole::Fenced { .. }) {
            fenced.push(shard);
        } else if assignment.owner == node_id
            && role
                != (ShardRole::Owner {
                    epoch: assignment.epoch,
                })
        {
            not_owned.push(shard);
        }
    }
    if !fenced.is_empty() {
        Some(("shard_fenced", fenced))
    } else if !not_owned.is_empty() {
        Some(("shards_not_owned", not_owned))
    } else {
        None
    }
}

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(node_status(&state).await)
}

/// What `GET /v1/status` answers (the console reports it per member too).
pub async fn node_status(state: &AppState) -> wire::NodeStatus {
    let status = state.engine.status().await;
    wire::NodeStatus {
        node_id: state.node_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        shards: status.shards,
        projects: status.projects as u64,
        live_visitors: status.live_visitors,
        retained_events: status.retained_events,
        segment_cells: status.aggregate_cells,
        events_accepted: status.events_accepted,
        events_duplicate: status.events_duplicate,
        events_rejected: status.events_rejected,
        now_ms: status.now_ms,
        storage: storage_status(&state.engine),
    }
}

fn storage_status(engine: &crate::engine::Engine) -> wire::StorageStatus {
    let notes = engine.recovery_notes();
    wire::StorageStatus {
        failure: engine.storage_failure(),
        recovered_checkpoint_position: notes.checkpoint_position,
        checkpoints_skipped: notes
            .checkpoints_skipped
            .into_iter()
            .map(|skipped| wire::SkippedCheckpoint {
                id: skipped.id,
                reason: skipped.reason,
            })
            .collect(),
        log_bytes_cut: notes.log_bytes_cut,
        log_cut: notes.log_cut,
    }
}

/// The hidden fault route (`--fault-actor-panic`, testing only):
/// `POST /v1/admin/fault/shard-panic/{shard}` (admin token) makes the
/// shard's actor panic and answers once the failure is recorded.
pub fn configure_faults(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/admin/fault/shard-panic/{shard}")
            .wrap(actix_web::middleware::from_fn(super::auth::require_admin))
            .route(web::post().to(shard_panic)),
    );
}

/// How long the fault route waits for the supervisor to record the failure.
const FAULT_RECORDED_WAIT_MS: u64 = 10_000;

async fn shard_panic(
    state: web::Data<AppState>,
    shard: web::Path<u32>,
) -> Result<HttpResponse, ApiError> {
    let shard = shard.into_inner();
    if !state.engine.inject_shard_panic(shard) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownShard,
            format!("no shard {shard}, or its actor takes no message now"),
        ));
    }
    let wait = std::time::Duration::from_millis(FAULT_RECORDED_WAIT_MS);
    let failure = tokio::time::timeout(wait, state.engine.failed())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::FailureNotRecorded,
                format!("the panic was not recorded within {FAULT_RECORDED_WAIT_MS} ms"),
            )
        })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"failed": failure.to_string()})))
}

/// Takes a checkpoint now and reports it.
pub async fn checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = state.engine.checkpoint().await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::CheckpointFailed,
            error.to_string(),
        )
    })?;
    Ok(HttpResponse::Ok().json(wire::CheckpointResponse {
        position: report.position,
        bytes: report.bytes as u64,
        visitors: report.visitors,
        pause_ms: report.pause_ms,
        duration_ms: report.duration_ms,
        log_segments_removed: report.log_segments_removed as u64,
    }))
}

/// `POST /v1/admin/token/rotate`: a new admin token, shown once; the old one
/// keeps working for the grace period. On this node only: each node has its
/// own admin token (`docs/security.md`).
pub async fn rotate_admin_token(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let grace_ms = requested_grace_ms(&body, state.key_rotation_grace_ms)?;
    let token = state
        .admin_tokens
        .rotate(grace_ms)
        .map_err(|error| match error {
            crate::admin_token::RotationError::Grace(error) => {
                ApiError::bad_request(ErrorCode::InvalidGrace, error.to_string())
            }
            storage @ crate::admin_token::RotationError::Storage { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable,
                storage.to_string(),
            ),
        })?;
    tracing::info!(grace_ms, "admin token rotated");
    Ok(HttpResponse::Ok().json(wire::RotatedKey {
        key: token.expose().to_string(),
        previous_valid_until_ms: state.admin_tokens.previous_valid_until_ms(),
    }))
}

/// The grace period a rotation asks for: the body's `grace_ms`, or
/// `default_ms` with an empty body or none in it. A body that is not a
/// `RotateKeyRequest` is `400`, not silently the default.
pub fn requested_grace_ms(body: &[u8], default_ms: i64) -> Result<i64, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default_ms);
    }
    let request: wire::RotateKeyRequest = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("the body must be {{\"grace_ms\": <ms>}} or empty: {error}"),
        )
    })?;
    let grace_ms = request.grace_ms.unwrap_or(default_ms);
    crate::keys::check_grace_ms(grace_ms)
        .map_err(|error| ApiError::bad_request(ErrorCode::InvalidGrace, error.to_string()))
}

#[derive(Debug, Deserialize)]
pub struct SetClock {
    now_ms: i64,
}

/// Moves a manual clock. Refused unless the node runs one (`--manual-clock`).
pub async fn set_clock(
    state: web::Data<AppState>,
    body: web::Json<SetClock>,
) -> Result<HttpResponse, ApiError> {
    let Some(clock) = state.engine.clock().as_manual() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ClockNotManual,
            "this node runs on the system clock; start it with --manual-clock to set time",
        ));
    };
    clock.set_ms(body.now_ms);
    // Freeze what the jump closed before answering, so the caller sees a
    // defined state instead of racing the periodic maintenance.
    state.engine.maintain_now().await;
    Ok(HttpResponse::Ok().json(serde_json::json!({"now_ms": body.now_ms})))
}
