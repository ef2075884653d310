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
use crate::engine::{ResultsAnswer, ResultsRequest, SeriesAnswer};
use crate::journal;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
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
    /// The nodes whose aggregates the share counts: the member's own and
    /// those it absorbed from departed nodes (`engine::stores`); empty once
    /// it handed its stores over.
    pub stores: BTreeSet<u64>,
    /// For a time series request: one share per interval.
    pub series: Option<Vec<Partial>>,
}

/// A gathered time series and the members whose share is missing.
#[derive(Debug)]
pub struct GatheredSeries {
    pub answer: SeriesAnswer,
    pub missing_nodes: Vec<u64>,
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
    let stores = state.engine.store_coverage().stores(state.node_id);
    if stores.is_empty() {
        return Ok(PartialShare::default());
    }
    let first_ms = match state.engine.experiments(&request.project).await {
        Ok(experiments) => experiments
            .into_iter()
            .find(|(name, _)| **name == *request.experiment)
            .and_then(|(_, first)| first),
        Err(QueryError::UnknownProject { .. }) => {
            return Ok(PartialShare {
                stores,
                ..PartialShare::default()
            })
        }
        Err(error) => return Err(error),
    };
    let Some(from_ms) = request.from else {
        return Ok(PartialShare {
            first_ms,
            stores,
            ..PartialShare::default()
        });
    };
    if let Some(interval_ms) = request.interval_ms {
        let series = state
            .engine
            .series_partial(
                &request.project,
                &request.experiment,
                from_ms,
                request.to,
                interval_ms,
            )
            .await?;
        return Ok(PartialShare {
            first_ms,
            stores,
            series,
            ..PartialShare::default()
        });
    }
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
    Ok(PartialShare {
        first_ms,
        partial,
        stores,
        series: None,
    })
}

/// Answers a results query from every member's share. `None` when this node
/// is the cluster's only member (or not in a cluster yet): the caller
/// answers from its own engine, with no network hop.
/// The other members, or `None` when this node is alone.
fn other_members(state: &AppState) -> Option<Vec<(u64, String)>> {
    let members: Vec<(u64, String)> = state
        .placement
        .view()
        .current()
        .members()
        .iter()
        .filter(|(node_id, _)| **node_id != state.node_id)
        .map(|(node_id, member)| (*node_id, member.address.clone()))
        .collect();
    (!members.is_empty()).then_some(members)
}

/// Fills in the request's range as a single node would: `to` defaults to
/// the end of the current bucket, `from` to the experiment's first bucket
/// over the whole cluster. Answers the members that did not answer.
async fn resolve_range(
    state: &AppState,
    members: &[(u64, String)],
    wire_request: &mut wire::PartialRequest,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<Vec<u64>, ApiError> {
    let project = &wire_request.project;
    let config =
        state
            .engine
            .projects()
            .get(project)
            .ok_or_else(|| QueryError::UnknownProject {
                project: project.to_string(),
            })?;
    let settings = &config.settings;
    let to_ms = to_ms
        .unwrap_or_else(|| settings.bucket_of(state.engine.clock().now_ms()) + settings.bucket_ms);
    wire_request.to = to_ms;
    if let Some(from_ms) = from_ms {
        wire_request.from = Some(from_ms);
        return Ok(Vec::new());
    }
    wire_request.from = None;
    let (shares, missing) = gather(state, members, wire_request).await?;
    let first_ms = shares
        .iter()
        .filter_map(|share| share.first_ms)
        .min()
        .unwrap_or(to_ms - settings.bucket_ms)
        .min(to_ms - settings.bucket_ms);
    wire_request.from = Some(first_ms);
    Ok(missing)
}

pub async fn gather_results(
    state: &AppState,
    project: &str,
    experiment: &str,
    request: &ResultsRequest,
) -> Result<Option<Gathered>, ApiError> {
    let Some(members) = other_members(state) else {
        return Ok(None);
    };
    let mut wire_request = wire::PartialRequest {
        project: project.to_string(),
        experiment: experiment.to_string(),
        from: None,
        to: 0,
        breakdown: request.breakdown.clone(),
        keys: request.keys.clone(),
        interval_ms: None,
    };
    let mut missing_nodes = resolve_range(
        state,
        &members,
        &mut wire_request,
        request.from_ms,
        request.to_ms,
    )
    .await?;
    let (from_ms, to_ms) = (wire_request.from.unwrap_or(0), wire_request.to);
    let settings = state
        .engine
        .projects()
        .get(project)
        .map(|config| config.settings.clone())
        .ok_or_else(|| QueryError::UnknownProject {
            project: project.to_string(),
        })?;
    // The engine's own checks (range, breakdown, keys), as a single node
    // makes them; a node without data of the experiment still passes them.
    let query = state
        .engine
        .results_query_for(project, from_ms, to_ms, request)?;
    let (shares, missing) = gather(state, &members, &wire_request).await?;
    missing_nodes.extend(missing);
    missing_nodes.extend(uncovered_stores(state, &shares)?);
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

/// Answers a time series from every member's share (`None` when this node
/// is alone), as `gather_results` does for results.
pub async fn gather_series(
    state: &AppState,
    project: &str,
    experiment: &str,
    range: (Option<i64>, Option<i64>),
    interval_ms: Option<i64>,
) -> Result<Option<GatheredSeries>, ApiError> {
    let Some(members) = other_members(state) else {
        return Ok(None);
    };
    let mut wire_request = wire::PartialRequest {
        project: project.to_string(),
        experiment: experiment.to_string(),
        from: None,
        to: 0,
        breakdown: None,
        keys: Vec::new(),
        interval_ms: None,
    };
    let mut missing_nodes =
        resolve_range(state, &members, &mut wire_request, range.0, range.1).await?;
    let (from_ms, to_ms) = (wire_request.from.unwrap_or(0), wire_request.to);
    let interval_ms = state
        .engine
        .series_interval_for(project, from_ms, to_ms, interval_ms)?;
    wire_request.interval_ms = Some(interval_ms);
    let (shares, missing) = gather(state, &members, &wire_request).await?;
    missing_nodes.extend(missing);
    missing_nodes.extend(uncovered_stores(state, &shares)?);
    missing_nodes.sort_unstable();
    missing_nodes.dedup();
    let mut merged: Option<Vec<Partial>> = None;
    for series in shares.into_iter().filter_map(|share| share.series) {
        match merged.as_mut() {
            Some(merged) => {
                for (mine, theirs) in merged.iter_mut().zip(series) {
                    mine.merge(theirs);
                }
            }
            None => merged = Some(series),
        }
    }
    if merged.is_none() && missing_nodes.is_empty() {
        return Err(QueryError::UnknownExperiment {
            project: project.to_string(),
            experiment: experiment.to_string(),
        }
        .into());
    }
    let series = query::finish_series(merged.unwrap_or_default(), from_ms, interval_ms);
    Ok(Some(GatheredSeries {
        answer: SeriesAnswer {
            from_ms,
            to_ms,
            interval_ms,
            series,
        },
        missing_nodes,
    }))
}

/// The expected stores (`PlacementState::expected_stores`) that no share
/// counts. A store counted by two shares is an error: the answer would be
/// silently too high.
fn uncovered_stores(state: &AppState, shares: &[PartialShare]) -> Result<Vec<u64>, ApiError> {
    let mut counted: BTreeMap<u64, usize> = BTreeMap::new();
    for share in shares {
        for store in &share.stores {
            *counted.entry(*store).or_insert(0) += 1;
        }
    }
    if let Some((store, times)) = counted.iter().find(|(_, times)| **times > 1) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoresCountedTwice,
            format!("node {store}'s aggregates were counted {times} times (a node removal is in progress?); retry"),
        ));
    }
    let expected = state.placement.view().current().expected_stores();
    Ok(expected
        .into_iter()
        .filter(|store| !counted.contains_key(store))
        .collect())
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
        let call = client()
            .post(&url)
            .bearer_auth(state.cluster_secret.expose())
            .json(request);
        let body = crate::tls::peer_ok_body(call, &url).await?;
        journal::decode::<PartialShare>(&body, "a member's query share")
            .map_err(|error| format!("{url}: {error}"))
    };
    tokio::time::timeout(Duration::from_millis(PARTIAL_REPLY_WAIT_MS), call)
        .await
        .map_err(|_| format!("{url}: no answer within {PARTIAL_REPLY_WAIT_MS} ms"))?
}
