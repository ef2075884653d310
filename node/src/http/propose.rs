//! Placement changes asked of any member (`docs/cluster.md`, "Projects").
//!
//! Only the Raft leader proposes. A member that is not the leader hands
//! the command to the leader over `POST /v1/internal/propose` (cluster
//! secret; body and answer postcard-encoded with `journal::encode`), so an
//! operator can create or configure a project through any node. The
//! internal endpoint never forwards again: a node that is no longer the
//! leader answers `307 not_leader`, and the caller's request fails with a
//! retryable `placement_unavailable`.

use super::error::ApiError;
use super::AppState;
use crate::journal;
use crate::placement::{JoinError, PlacementCommand, PlacementResponse};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol::ErrorCode;
use std::sync::OnceLock;
use std::time::Duration;

pub const PROPOSE_PATH: &str = "/v1/internal/propose";
/// Largest command a member forwards (a project configuration).
const PROPOSE_BODY_BYTES_MAX: usize = 256 * 1024;
/// How long a forwarded proposal may take to commit.
const PROPOSE_WAIT: Duration = Duration::from_secs(10);

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource(PROPOSE_PATH)
            .wrap(actix_web::middleware::from_fn(
                super::auth::require_cluster_secret,
            ))
            .app_data(web::PayloadConfig::new(PROPOSE_BODY_BYTES_MAX))
            .route(web::post().to(serve_propose)),
    );
}

fn unavailable(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PlacementUnavailable,
        format!("the cluster could not agree on the change now: {detail}; retry"),
    )
}

/// `POST /v1/internal/propose`: proposes a forwarded command (leader only).
async fn serve_propose(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let command: PlacementCommand = journal::decode(&body, "placement command")
        .map_err(|error| ApiError::bad_request(ErrorCode::MalformedCommand, error.to_string()))?;
    match state.placement.propose(command).await {
        Ok(response) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(journal::encode(&response))),
        Err(JoinError::NotLeader { .. }) => Err(ApiError::new(
            StatusCode::TEMPORARY_REDIRECT,
            ErrorCode::NotLeader,
            "this node is no longer the leader",
        )),
        Err(JoinError::Unavailable(detail)) => Err(unavailable(detail)),
    }
}

/// Proposes `command` here if this node leads, else through the leader.
/// While no leader is known (an election, or a node that has just started
/// and not finished its bootstrap), waits up to `PROPOSE_WAIT` for one.
pub async fn propose_anywhere(
    state: &AppState,
    command: PlacementCommand,
) -> Result<PlacementResponse, ApiError> {
    let mut waited = false;
    let address = loop {
        match state.placement.propose(command.clone()).await {
            Ok(response) => return Ok(response),
            Err(JoinError::NotLeader {
                leader_address: Some(address),
                ..
            }) => break address,
            Err(JoinError::NotLeader { .. }) if !waited => {
                waited = true;
                state.placement.wait_for_leader(PROPOSE_WAIT).await;
            }
            Err(JoinError::NotLeader { .. }) => {
                return Err(unavailable(
                    "no leader is known (an election is in progress)".into(),
                ))
            }
            Err(JoinError::Unavailable(detail)) => return Err(unavailable(detail)),
        }
    };
    let url = format!("{}{PROPOSE_PATH}", crate::tls::peer_url(&address));
    let request = client()
        .post(&url)
        .bearer_auth(state.cluster_secret.expose())
        .header("content-type", "application/octet-stream")
        .body(journal::encode(&command));
    let body = crate::tls::peer_ok_body(request, &url)
        .await
        .map_err(unavailable)?;
    journal::decode(&body, "placement response").map_err(|error| unavailable(error.to_string()))
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        crate::tls::peer_client_builder()
            .timeout(PROPOSE_WAIT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}
