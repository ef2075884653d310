//! Results and time-series queries, and their conversion to wire types.

use super::error::ApiError;
use super::AppState;
use crate::engine::query::{Results, VariationResults};
use crate::engine::segment::Counters;
use crate::engine::{ResultsAnswer, ResultsRequest, SeriesAnswer};
use crate::stats::{self, Comparison};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sessiondb_protocol as wire;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    from: Option<i64>,
    to: Option<i64>,
    breakdown: Option<String>,
    keys: Option<String>,
    baseline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    from: Option<i64>,
    to: Option<i64>,
    interval_ms: Option<i64>,
    keys: Option<String>,
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
    answer
}

async fn results_answer(
    state: &AppState,
    path: web::Path<(String, String)>,
    params: web::Query<ResultsParams>,
) -> Result<HttpResponse, ApiError> {
    let (project, experiment) = path.into_inner();
    let params = params.into_inner();
    let request = ResultsRequest {
        from_ms: params.from,
        to_ms: params.to,
        breakdown: params.breakdown,
        keys: split_keys(params.keys.as_deref()),
        baseline: params.baseline,
    };
    // In a cluster of more than one member, every member's share
    // (`fanout.rs`); alone, this engine's answer.
    if let Some(gathered) =
        super::fanout::gather_results(state, &project, &experiment, &request).await?
    {
        let mut response = results_of(&project, &experiment, gathered.answer, 0);
        response.partial = !gathered.missing_nodes.is_empty();
        response.missing_nodes = gathered.missing_nodes;
        return Ok(HttpResponse::Ok().json(response));
    }
    let answer = state.engine.results(&project, &experiment, request).await?;
    let precision = state
        .engine
        .projects()
        .get(&project)
        .map_or(14, |config| config.settings.hll_precision);
    Ok(HttpResponse::Ok().json(results_of(&project, &experiment, answer, precision)))
}

pub async fn time_series(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let answer = time_series_answer(&state, path, params).await;
    state.engine.observe_query(started.elapsed());
    answer
}

async fn time_series_answer(
    state: &AppState,
    path: web::Path<(String, String)>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let (project, experiment) = path.into_inner();
    let params = params.into_inner();
    let keys = split_keys(params.keys.as_deref());
    // In a cluster, every member's share, as for results.
    let range = (params.from, params.to);
    if let Some(gathered) =
        super::fanout::gather_series(state, &project, &experiment, range, params.interval_ms)
            .await?
    {
        let mut response = series_of(&project, &experiment, gathered.answer, keys);
        response.partial = !gathered.missing_nodes.is_empty();
        response.missing_nodes = gathered.missing_nodes;
        return Ok(HttpResponse::Ok().json(response));
    }
    let answer = state
        .engine
        .time_series(
            &project,
            &experiment,
            params.from,
            params.to,
            params.interval_ms,
        )
        .await?;
    Ok(HttpResponse::Ok().json(series_of(&project, &experiment, answer, keys)))
}

fn results_of(
    project: &str,
    experiment: &str,
    answer: ResultsAnswer,
    _precision: u8,
) -> wire::ResultsResponse {
    let Results {
        keys,
        baseline,
        groups,
    } = answer.results;
    wire::ResultsResponse {
        project: project.to_string(),
        experiment: experiment.to_string(),
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
                    .map(|variation| variation_of(variation, &keys))
                    .collect(),
            })
            .collect(),
        partial: false,
        missing_nodes: Vec::new(),
    }
}

fn variation_of(result: &VariationResults, keys: &[std::sync::Arc<str>]) -> wire::VariationResults {
    let counters = &result.counters;
    wire::VariationResults {
        variation: result.variation.to_string(),
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
    }
}

fn series_of(
    project: &str,
    experiment: &str,
    answer: SeriesAnswer,
    keys: Vec<String>,
) -> wire::TimeSeriesResponse {
    let variations = answer
        .series
        .into_iter()
        .map(|(variation, points)| wire::VariationSeries {
            variation: variation.to_string(),
            points: points
                .into_iter()
                .map(|point| {
                    let per_key = |pick: &dyn Fn(&crate::engine::segment::KeyCounters) -> i64| {
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
                            .map(|key| {
                                point.counters.key_counters(key).value_sum_micros as f64 / 1e6
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect();
    let _ = stats::hll_standard_error;
    wire::TimeSeriesResponse {
        project: project.to_string(),
        experiment: experiment.to_string(),
        from: answer.from_ms,
        to: answer.to_ms,
        interval_ms: answer.interval_ms,
        keys,
        variations,
        partial: false,
        missing_nodes: Vec::new(),
    }
}
