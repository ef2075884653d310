//! The admin token check in front of `/v1/admin/*`, `GET /v1/cluster` and
//! the console's data calls (`/console/api/*`); see `docs/console.md`. And
//! the cluster secret check in front of node-to-node calls
//! (`/v1/internal/*`, `POST /v1/cluster/join`; `docs/cluster.md`).
//!
//! The token travels only as `Authorization: Bearer <token>`: never in a
//! URL (URLs end up in logs, histories and referrers).

use super::error::ApiError;
use super::AppState;
use crate::admin_token::AdminToken;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

const BEARER_PREFIX: &str = "Bearer ";

/// Middleware (`actix_web::middleware::from_fn`): passes the request on when
/// it carries the node's admin token, answers `401 unauthorized` otherwise.
pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require_secret(
        request,
        next,
        |state| &state.admin_token,
        "this endpoint needs the admin token as `Authorization: Bearer <token>` (see docs/console.md)",
    )
    .await
}

/// Middleware: passes the request on when it carries the cluster secret,
/// answers `401 unauthorized` otherwise.
pub async fn require_cluster_secret(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require_secret(
        request,
        next,
        |state| &state.cluster_secret,
        "node-to-node endpoints need the cluster secret as `Authorization: Bearer <secret>` (see docs/cluster.md)",
    )
    .await
}

/// Compares the bearer token with the secret `expected` picks (in constant
/// time, `AdminToken::matches`).
async fn require_secret(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    expected: fn(&AppState) -> &AdminToken,
    hint: &'static str,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let authorized = match request.app_data::<web::Data<AppState>>() {
        Some(state) => presented_token(&request)
            .is_some_and(|candidate| expected(state).matches(candidate.as_bytes())),
        None => false,
    };
    if authorized {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let refusal = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", hint);
    let mut response = refusal.error_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Ok(request.into_response(response).map_into_right_body())
}

/// The token of an `Authorization: Bearer <token>` header, if any.
fn presented_token(request: &ServiceRequest) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(BEARER_PREFIX)
}
