//! Results and time-series queries, and their conversion to wire types;
//! and the server side of `POST /v1/internal/partial`, a member's share of
//! another member's query. The answers are the query coordinator's
//! (`cluster::coordinator`), on a single node as in a cluster.

use super::error::ApiError;
use super::AppState;
use crate::cluster::coordinator::{share_request, Gathered};
use crate::engine::aggregates::Counters;
use crate::engine::journal;
use crate::engine::query::SeriesPoint;
use crate::engine::query::{Results, VariationResults, WeightsSource};
use crate::engine::{ResultsAnswer, ResultsRequest, SeriesAnswer, SeriesRequest};
use crate::experiment_aliases::ExperimentAlias;
use crate::limits;
use crate::stats::Comparison;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::BTreeMap;

/// Largest `PartialRequest` body (a few names and keys).
const PARTIAL_REQUEST_BYTES_MAX: usize = 64 * 1024;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource(crate::cluster::peer::QUERY_SHARE_PATH)
            .wrap(actix_web::middleware::from_fn(
                super::auth::require_cluster_secret,
            ))
            .app_data(web::JsonConfig::default().limit(PARTIAL_REQUEST_BYTES_MAX))
            .route(web::post().to(serve_share)),
    );
}

/// `POST /v1/internal/partial`: this node's share of a member's query.
async fn serve_share(
    state: web::Data<AppState>,
    request: web::Json<wire::PartialRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = share_request(request.into_inner());
    let share = state.cluster.coordinator.local_share(&request).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(journal::encode(&share)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    from: Option<i64>,
    to: Option<i64>,
    breakdown: Option<String>,
    keys: Option<String>,
    baseline: Option<String>,
    /// Expected allocation for the sample ratio mismatch check:
    /// `variation:weight,…`, every variation named (default: equal).
    weights: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    from: Option<i64>,
    to: Option<i64>,
    interval_ms: Option<i64>,
    keys: Option<String>,
    breakdown: Option<String>,
    baseline: Option<String>,
}

/// Counts a query refused for its cost (`/metrics`).
fn count_refusal(state: &AppState, answer: &Result<HttpResponse, ApiError>) {
    if matches!(answer, Err(error) if error.code == "query_too_expensive") {
        state
            .admission
            .refusals
            .query_cost
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn split_keys(keys: Option<&str>) -> Vec<String> {
    keys.map(|keys| {
        keys.split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

pub async fn results(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    params: web::Query<ResultsParams>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let answer = results_answer(&state, path, params).await;
    state.engine.observe_query(started.elapsed());
    count_refusal(&state, &answer);
    answer
}

/// The experiment a query names, by its stored name (the key) or by an id
/// the project's experiment aliases know: the stored name and, when
/// aliased, the experiment's id and its variations' ids.
struct Named {
    experiment: String,
    alias: Option<(String, ExperimentAlias)>,
}

impl Named {
    fn resolve(state: &AppState, project: &str, requested: String) -> Named {
        let placement = state.cluster.placement.view().current();
        let found = placement
            .aliases(project)
            .and_then(|aliases| aliases.experiment(&requested));
        match found {
            Some((id, alias)) => Named {
                experiment: alias.key.clone(),
                alias: Some((id.to_string(), alias.clone())),
            },
            None => Named {
                experiment: requested,
                alias: None,
            },
        }
    }

    fn experiment_id(&self) -> Option<String> {
        self.alias.as_ref().map(|(id, _)| id.clone())
    }

    fn variation_id(&self, variation: &str) -> Option<String> {
        let (_, alias) = self.alias.as_ref()?;
        alias.variation_id(variation).map(String::from)
    }
}

async fn results_answer(
    state: &AppState,
    path: web::Path<(String, String)>,
    params: web::Query<ResultsParams>,
) -> Result<HttpResponse, ApiError> {
    let (project, requested) = path.into_inner();
    let named = Named::resolve(state, &project, requested);
    let params = params.into_inner();
    let weights = params.weights.as_deref().map(parse_weights).transpose()?;
    let request = ResultsRequest {
        from_ms: params.from,
        to_ms: params.to,
        breakdown: params.breakdown,
        keys: split_keys(params.keys.as_deref()),
        baseline: params.baseline,
        weights,
    };
    let gathered = state
        .cluster
        .coordinator
        .results(&project, &named.experiment, &request)
        .await?;
    Ok(HttpResponse::Ok().json(results_of(&project, &named, gathered)))
}

/// Expected allocation weights by variation, as the query gave them; the
/// query checks them against the variations.
type Weights = BTreeMap<String, f64>;

/// Reads `variation:weight,…`: positive finite weights, each variation once,
/// at most `QUERY_WEIGHTS_MAX` of them.
fn parse_weights(text: &str) -> Result<Weights, ApiError> {
    let invalid = |reason: String| {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("invalid `weights` ({reason}); expected `variation:weight,…`, e.g. `control:1,treatment:1`"),
        )
    };
    let mut weights = Weights::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let Some((variation, weight)) = entry.rsplit_once(':') else {
            return Err(invalid(format!("`{entry}` has no `:weight`")));
        };
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| invalid(format!("`{weight}` is not a number")))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(invalid(format!(
                "the weight of `{variation}` must be positive and finite"
            )));
        }
        if weights
            .insert(variation.trim().to_string(), weight)
            .is_some()
        {
            return Err(invalid(format!("`{variation}` is given twice")));
        }
        if weights.len() > limits::QUERY_WEIGHTS_MAX {
            return Err(invalid(format!(
                "more than {} variations",
                limits::QUERY_WEIGHTS_MAX
            )));
        }
    }
    if weights.is_empty() {
        return Err(invalid("no variation given".to_string()));
    }
    Ok(weights)
}

pub async fn time_series(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let answer = time_series_answer(&state, path, params).await;
    state.engine.observe_query(started.elapsed());
    count_refusal(&state, &answer);
    answer
}

async fn time_series_answer(
    state: &AppState,
    path: web::Path<(String, String)>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let (project, requested) = path.into_inner();
    let named = Named::resolve(state, &project, requested);
    let params = params.into_inner();
    let request = SeriesRequest {
        from_ms: params.from,
        to_ms: params.to,
        interval_ms: params.interval_ms,
        breakdown: params.breakdown,
        keys: split_keys(params.keys.as_deref()),
        baseline: params.baseline,
    };
    let gathered = state
        .cluster
        .coordinator
        .time_series(&project, &named.experiment, &request)
        .await?;
    Ok(HttpResponse::Ok().json(series_of(&project, &named, gathered)))
}

fn results_of(
    project: &str,
    named: &Named,
    gathered: Gathered<ResultsAnswer>,
) -> wire::ResultsResponse {
    let answer = gathered.answer;
    let weights_source = match answer.weights_source {
        WeightsSource::Equal => wire::WeightsSource::Equal,
        WeightsSource::Query => wire::WeightsSource::Query,
        WeightsSource::Stored => wire::WeightsSource::Stored,
    };
    let Results {
        keys,
        baseline,
        groups,
    } = answer.results;
    wire::ResultsResponse {
        project: project.to_string(),
        experiment: named.experiment.clone(),
        experiment_id: named.experiment_id(),
        from: answer.from_ms,
        to: answer.to_ms,
        breakdown: answer.breakdown.map(|name| name.to_string()),
        baseline: baseline.map(|name| name.to_string()),
        keys: keys.iter().map(|key| key.to_string()).collect(),
        groups: groups
            .into_iter()
            .map(|group| wire::ResultsGroup {
                breakdown_value: group.value.map(|value| value.to_string()),
                variations: group
                    .variations
                    .iter()
                    .map(|variation| variation_of(variation, &keys, named))
                    .collect(),
                srm: group
                    .sample_ratio_mismatch
                    .map(|srm| wire::SampleRatioMismatch {
                        p_value: srm.p_value,
                        expected_weights: srm
                            .expected_weights
                            .into_iter()
                            .map(|(variation, weight)| (variation.to_string(), weight))
                            .collect(),
                        flagged: srm.flagged,
                        weights_source,
                    }),
            })
            .collect(),
        partial: !gathered.missing_nodes.is_empty(),
        missing_nodes: gathered.missing_nodes,
    }
}

fn variation_of(
    result: &VariationResults,
    keys: &[std::sync::Arc<str>],
    named: &Named,
) -> wire::VariationResults {
    let counters = &result.counters;
    wire::VariationResults {
        variation: result.variation.to_string(),
        variation_id: named.variation_id(&result.variation),
        visitors: counters.visitors,
        conflicts: counters.conflicts,
        active_visitors: wire::Estimate {
            value: result.active_estimate,
            standard_error: result.active_standard_error,
        },
        sessions: sessions_of(counters),
        metrics: keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let comparison = result.comparisons.get(index);
                key_metrics_of(counters, key, comparison)
            })
            .collect(),
    }
}

fn ratio(numerator: f64, denominator: i64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator / denominator as f64
    }
}

fn sessions_of(counters: &Counters) -> wire::SessionMetrics {
    wire::SessionMetrics {
        sessions: counters.sessions,
        bounced_sessions: counters.bounced_sessions,
        duration_ms_sum: counters.duration_ms_sum,
        pageviews_sum: counters.pageviews_sum,
        bounce_rate: ratio(counters.bounced_sessions as f64, counters.sessions),
        duration_ms_mean: ratio(counters.duration_ms_sum as f64, counters.sessions),
        pageviews_per_session: ratio(counters.pageviews_sum as f64, counters.sessions),
    }
}

fn key_metrics_of(
    counters: &Counters,
    key: &str,
    comparison: Option<&crate::engine::query::KeyComparison>,
) -> wire::KeyMetrics {
    let key_counters = counters.key_counters(key);
    let value_sum = key_counters.value_sum_micros as f64 / 1e6;
    wire::KeyMetrics {
        key: key.to_string(),
        unique_conversions: key_counters.unique_conversions,
        total_conversions: key_counters.total_conversions,
        value_sum,
        value_sum_squares: key_counters.value_sum_squares_micros as f64 / 1e12,
        conversion_rate: ratio(key_counters.unique_conversions as f64, counters.visitors),
        value_per_visitor: ratio(value_sum, counters.visitors),
        sessions_with_conversion: key_counters.sessions_with_conversion,
        rate_comparison: comparison
            .and_then(|comparison| comparison.rate)
            .map(comparison_of),
        value_comparison: comparison
            .and_then(|comparison| comparison.value)
            .map(comparison_of),
    }
}

fn comparison_of(comparison: Comparison) -> wire::Comparison {
    wire::Comparison {
        relative_improvement: comparison.relative_improvement,
        ci_low: comparison.ci_low,
        ci_high: comparison.ci_high,
        p_value: comparison.p_value,
        p_value_holm: Some(comparison.p_value_holm),
        always_valid_p_value: comparison
            .always_valid
            .map(|always_valid| always_valid.p_value),
        cs_low: comparison.always_valid.map(|always_valid| always_valid.low),
        cs_high: comparison
            .always_valid
            .map(|always_valid| always_valid.high),
    }
}

fn series_of(
    project: &str,
    named: &Named,
    gathered: Gathered<SeriesAnswer>,
) -> wire::TimeSeriesResponse {
    let answer = gathered.answer;
    let keys = &answer.keys;
    let mut groups: Vec<wire::TimeSeriesGroup> = answer
        .series
        .groups
        .into_iter()
        .map(|group| wire::TimeSeriesGroup {
            breakdown_value: group.value.map(|value| value.to_string()),
            variations: group
                .variations
                .into_iter()
                .map(|(variation, points)| wire::VariationSeries {
                    variation_id: named.variation_id(&variation),
                    variation: variation.to_string(),
                    points: points.iter().map(|point| point_of(point, keys)).collect(),
                })
                .collect(),
        })
        .collect();
    // Without a breakdown the only group's series are the answer's
    // `variations`, as before breakdowns existed.
    let variations = match answer.breakdown {
        None => groups
            .pop()
            .map(|group| group.variations)
            .unwrap_or_default(),
        Some(_) => Vec::new(),
    };
    wire::TimeSeriesResponse {
        project: project.to_string(),
        experiment: named.experiment.clone(),
        experiment_id: named.experiment_id(),
        from: answer.from_ms,
        to: answer.to_ms,
        interval_ms: answer.interval_ms,
        breakdown: answer.breakdown.map(|name| name.to_string()),
        baseline: answer.series.baseline.map(|name| name.to_string()),
        keys: keys.iter().map(|key| key.to_string()).collect(),
        variations,
        groups,
        partial: !gathered.missing_nodes.is_empty(),
        missing_nodes: gathered.missing_nodes,
    }
}

fn point_of(point: &SeriesPoint, keys: &[std::sync::Arc<str>]) -> wire::TimeSeriesPoint {
    let per_key = |pick: &dyn Fn(&crate::engine::aggregates::KeyCounters) -> i64| {
        keys.iter()
            .map(|key| pick(&point.counters.key_counters(key)))
            .collect()
    };
    wire::TimeSeriesPoint {
        ts: point.ts_ms,
        visitors: point.counters.visitors,
        active_visitors: point.active_estimate,
        sessions: point.counters.sessions,
        total_conversions: per_key(&|counters| counters.total_conversions),
        unique_conversions: per_key(&|counters| counters.unique_conversions),
        value_sum: keys
            .iter()
            .map(|key| point.counters.key_counters(key).value_sum_micros as f64 / 1e6)
            .collect(),
        cumulative: point
            .cumulative
            .iter()
            .map(|comparison| wire::CumulativeComparison {
                rate_comparison: comparison.rate.map(cumulative_comparison_of),
                value_comparison: comparison.value.map(cumulative_comparison_of),
            })
            .collect(),
    }
}

/// A cumulative comparison carries no Holm-adjusted p-value (see
/// `wire::CumulativeComparison`).
fn cumulative_comparison_of(comparison: Comparison) -> wire::Comparison {
    wire::Comparison {
        p_value_holm: None,
        ..comparison_of(comparison)
    }
}
