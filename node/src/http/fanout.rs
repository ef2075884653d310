//! Query fan-out (`docs/cluster.md`, "Query fan-out and merge").
//!
//! Aggregates stay on the node that emitted them, so in a cluster of more
//! than one member a results query needs every member's share: the node
//! that received the query (the coordinator) computes its own share
//! (`Engine::partial`), asks every other member for theirs over
//! `POST /v1/internal/partial` (cluster secret), concurrently and each
//! within `PARTIAL_REPLY_WAIT_MS`, adds them up (`query::Partial::merge`)
//! and finishes (`query::finish`). A member that does not answer makes the
//! answer partial and is named in it.
//!
//! The engine computes shares; this module only orchestrates. The member
//! list comes from placement (`PlacementView`).

use super::error::ApiError;
use super::AppState;
use crate::engine::query::{self, Partial, QueryError};
use crate::engine::{ResultsAnswer, ResultsRequest};
use crate::journal;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;
use std::sync::OnceLock;
use std::time::Duration;

/// How long the coordinator waits for one member's share (connection
/// included) before it counts the member as missing.
pub const PARTIAL_REPLY_WAIT_MS: u64 = 2_000;
/// How long opening a connection to a member may take.
pub const PARTIAL_CONNECT_WAIT_MS: u64 = 500;
/// Largest `PartialRequest` body (a few names and keys).
const PARTIAL_REQUEST_BYTES_MAX: usize = 64 * 1024;

/// A member's answer to `POST /v1/internal/partial`, postcard-encoded with
/// `journal::encode`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PartialShare {
    /// The member's first bucket of the experiment, if it holds any of it.
    pub first_ms: Option<i64>,
    /// The member's share over the asked range; `None` when `from` was not
    /// given or the member holds nothing of the experiment.
    pub partial: Option<Partial>,
}

/// A gathered answer: the results and the members whose share is missing.
#[derive(Debug)]
pub struct Gathered {
    pub answer: ResultsAnswer,
    pub missing_nodes: Vec<u64>,
}

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/internal/partial")
            .wrap(actix_web::middleware::from_fn(
                super::auth::require_cluster_secret,
            ))
            .app_data(web::JsonConfig::default().limit(PARTIAL_REQUEST_BYTES_MAX))
            .route(web::post().to(serve_partial)),
    );
}

/// `POST /v1/internal/partial`: this node's share.
async fn serve_partial(
    state: web::Data<AppState>,
    request: web::Json<wire::PartialRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let share = local_share(&state, &request).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(journal::encode(&share)))
}

/// This node's share; a project this node does not know has no share here.
async fn local_share(
    state: &AppState,
    request: &wire::PartialRequest,
) -> Result<PartialShare, QueryError> {
    let first_ms = match state.engine.experiments(&request.project).await {
        Ok(experiments) => experiments
            .into_iter()
            .find(|(name, _)| **name == *request.experiment)
            .and_then(|(_, first)| first),
        Err(QueryError::UnknownProject { .. }) => return Ok(PartialShare::default()),
        Err(error) => return Err(error),
    };
    let Some(from_ms) = request.from else {
        return Ok(PartialShare {
            first_ms,
            partial: None,
        });
    };
    let engine_request = ResultsRequest {
        from_ms: Some(from_ms),
        to_ms: Some(request.to),
        breakdown: request.breakdown.clone(),
        keys: request.keys.clone(),
        baseline: None,
    };
    let partial = state
        .engine
        .partial(&request.project, &request.experiment, engine_request)
        .await?;
    Ok(PartialShare { first_ms, partial })
}

/// Answers a results query from every member's share. `None` when this node
/// is the cluster's only member (or not in a cluster yet): the caller
/// answers from its own engine, with no network hop.
pub async fn gather_results(
    state: &AppState,
    project: &str,
    experiment: &str,
    request: &ResultsRequest,
) -> Result<Option<Gathered>, ApiError> {
    let members: Vec<(u64, String)> = state
        .placement
        .view()
        .current()
        .members()
        .iter()
        .filter(|(node_id, _)| **node_id != state.node_id)
        .map(|(node_id, member)| (*node_id, member.address.clone()))
        .collect();
    if members.is_empty() {
        return Ok(None);
    }
    let config =
        state
            .engine
            .projects()
            .get(project)
            .ok_or_else(|| QueryError::UnknownProject {
                project: project.to_string(),
            })?;
    let settings = &config.settings;
    let to_ms = request
        .to_ms
        .unwrap_or_else(|| settings.bucket_of(state.engine.clock().now_ms()) + settings.bucket_ms);
    let mut wire_request = wire::PartialRequest {
        project: project.to_string(),
        experiment: experiment.to_string(),
        from: None,
        to: to_ms,
        breakdown: request.breakdown.clone(),
        keys: request.keys.clone(),
    };
    let mut missing_nodes = Vec::new();
    let from_ms = match request.from_ms {
        Some(from_ms) => from_ms,
        None => {
            // The experiment's first bucket over the whole cluster.
            let (shares, missing) = gather(state, &members, &wire_request).await?;
            missing_nodes = missing;
            shares
                .iter()
                .filter_map(|share| share.first_ms)
                .min()
                .unwrap_or(to_ms - settings.bucket_ms)
                .min(to_ms - settings.bucket_ms)
        }
    };
    wire_request.from = Some(from_ms);
    // The engine's own checks (range, breakdown, keys), as a single node
    // makes them; a node without data of the experiment still passes them.
    let query = state
        .engine
        .results_query_for(project, from_ms, to_ms, request)?;
    let (shares, missing) = gather(state, &members, &wire_request).await?;
    missing_nodes.extend(missing);
    missing_nodes.sort_unstable();
    missing_nodes.dedup();
    let mut merged: Option<Partial> = None;
    for partial in shares.into_iter().filter_map(|share| share.partial) {
        match merged.as_mut() {
            Some(merged) => merged.merge(partial),
            None => merged = Some(partial),
        }
    }
    let merged = match merged {
        Some(merged) => merged,
        None if missing_nodes.is_empty() => {
            return Err(QueryError::UnknownExperiment {
                project: project.to_string(),
                experiment: experiment.to_string(),
            }
            .into())
        }
        // Nothing among the members that answered; the missing ones may
        // hold the experiment: an empty, partial answer.
        None => Partial {
            precision: settings.hll_precision,
            ..Partial::default()
        },
    };
    let breakdown = query.breakdown.clone();
    let results = query::finish(merged, &query)?;
    Ok(Some(Gathered {
        answer: ResultsAnswer {
            from_ms,
            to_ms,
            breakdown,
            results,
        },
        missing_nodes,
    }))
}

/// Every member's share (this node's first), and the members that did not
/// answer. An error of this node's engine fails the query.
async fn gather(
    state: &AppState,
    members: &[(u64, String)],
    request: &wire::PartialRequest,
) -> Result<(Vec<PartialShare>, Vec<u64>), ApiError> {
    let remote = futures::future::join_all(members.iter().map(|(node_id, address)| async move {
        (*node_id, remote_share(state, address, request).await)
    }));
    let (local, remote) = futures::join!(local_share(state, request), remote);
    let mut shares = vec![local?];
    let mut missing = Vec::new();
    for (node_id, share) in remote {
        match share {
            Ok(share) => shares.push(share),
            Err(detail) => {
                tracing::warn!(node_id, %detail, "member's query share missing");
                missing.push(node_id);
            }
        }
    }
    Ok((shares, missing))
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        crate::tls::peer_client_builder()
            .connect_timeout(Duration::from_millis(PARTIAL_CONNECT_WAIT_MS))
            .timeout(Duration::from_millis(PARTIAL_REPLY_WAIT_MS))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// One member's share over HTTP, within `PARTIAL_REPLY_WAIT_MS`.
async fn remote_share(
    state: &AppState,
    address: &str,
    request: &wire::PartialRequest,
) -> Result<PartialShare, String> {
    let url = format!("{}/v1/internal/partial", crate::tls::peer_url(address));
    let call = async {
        let response = client()
            .post(&url)
            .bearer_auth(state.cluster_secret.expose())
            .json(request)
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "{url}: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        journal::decode::<PartialShare>(&body, "a member's query share")
            .map_err(|error| format!("{url}: {error}"))
    };
    tokio::time::timeout(Duration::from_millis(PARTIAL_REPLY_WAIT_MS), call)
        .await
        .map_err(|_| format!("{url}: no answer within {PARTIAL_REPLY_WAIT_MS} ms"))?
}
