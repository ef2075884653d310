//! Results and time-series queries over one experiment's aggregates.
//! Pure functions: the segment actor calls them on its own state.

use super::segment::{CellKey, Counters, ExperimentAggregates, Group};
use crate::limits;
use crate::stats::{self, Comparison, Sample};
use std::sync::Arc;

/// A results query whose range and names are already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub breakdown: Option<Arc<str>>,
    /// Empty: every key seen in the experiment.
    pub keys: Vec<Arc<str>>,
    pub baseline: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyComparison {
    pub rate: Option<Comparison>,
    pub value: Option<Comparison>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariationResults {
    pub variation: Arc<str>,
    pub counters: Counters,
    pub active_estimate: f64,
    pub active_standard_error: f64,
    /// One per key of `Results::keys`; empty for the baseline.
    pub comparisons: Vec<KeyComparison>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupResults {
    /// The breakdown value; `None` without a breakdown.
    pub value: Option<Arc<str>>,
    pub variations: Vec<VariationResults>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub keys: Vec<Arc<str>>,
    pub baseline: Option<Arc<str>>,
    pub groups: Vec<GroupResults>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("project `{project}` does not exist")]
    UnknownProject { project: String },
    #[error("experiment `{experiment}` has no data in project `{project}`")]
    UnknownExperiment { project: String, experiment: String },
    #[error(
        "`from` ({from_ms}) and `to` ({to_ms}) must be multiples of the bucket size {bucket_ms} ms"
    )]
    UnalignedRange {
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    },
    #[error("`from` ({from_ms}) must be before `to` ({to_ms})")]
    InvalidRange { from_ms: i64, to_ms: i64 },
    #[error("the range spans {buckets} buckets; the limit is {max}", max = limits::QUERY_BUCKETS_MAX)]
    TooManyBuckets { buckets: i64 },
    #[error("`{attribute}` is not a breakdown attribute of this project (available: {available})")]
    UnknownBreakdown {
        attribute: String,
        available: String,
    },
    #[error("baseline `{baseline}` is not a variation of this experiment")]
    UnknownBaseline { baseline: String },
    #[error("{count} keys asked; the limit is {max}", max = limits::QUERY_KEYS_MAX)]
    TooManyKeys { count: usize },
    #[error(
        "`interval_ms` {interval_ms} must be a positive multiple of the bucket size {bucket_ms} ms"
    )]
    InvalidInterval { interval_ms: i64, bucket_ms: i64 },
    #[error("the series would have {points} points; the limit is {max}", max = limits::TIMESERIES_POINTS_MAX)]
    TooManyPoints { points: i64 },
    #[error("the node is shutting down or overloaded; retry")]
    Unavailable,
}

/// Per variation and breakdown value, every metric of SPEC §4.
pub fn results(
    aggregates: &ExperimentAggregates,
    query: &ResultsQuery,
) -> Result<Results, QueryError> {
    let variations = aggregates.variations();
    let keys = if query.keys.is_empty() {
        aggregates.keys.iter().cloned().collect()
    } else {
        query.keys.clone()
    };
    let baseline = match &query.baseline {
        Some(baseline) if !variations.contains(baseline) => {
            return Err(QueryError::UnknownBaseline {
                baseline: baseline.to_string(),
            })
        }
        Some(baseline) => Some(Arc::clone(baseline)),
        None => variations.first().cloned(),
    };
    let groups = groups_of(aggregates, query.breakdown.as_ref())
        .into_iter()
        .map(|(value, group)| GroupResults {
            value,
            variations: group_results(
                aggregates,
                query,
                &variations,
                &group,
                &keys,
                baseline.as_ref(),
            ),
        })
        .collect();
    Ok(Results {
        keys,
        baseline,
        groups,
    })
}

/// The groups to report: the whole experiment, or one per breakdown value.
fn groups_of(
    aggregates: &ExperimentAggregates,
    breakdown: Option<&Arc<str>>,
) -> Vec<(Option<Arc<str>>, GroupSelector)> {
    let Some(attribute) = breakdown else {
        return vec![(None, GroupSelector::Total)];
    };
    let mut values: Vec<Arc<str>> = aggregates
        .cells
        .iter()
        .filter_map(|series| match &series.key.group {
            Group::Breakdown {
                attribute: name,
                value,
            } if name == attribute => Some(Arc::clone(value)),
            _ => None,
        })
        .collect();
    values.sort();
    values.dedup();
    values
        .into_iter()
        .map(|value| {
            let selector = GroupSelector::Breakdown(Group::Breakdown {
                attribute: Arc::clone(attribute),
                value: Arc::clone(&value),
            });
            (Some(value), selector)
        })
        .collect()
}

enum GroupSelector {
    Total,
    Breakdown(Group),
}

impl GroupSelector {
    fn group(&self) -> Group {
        match self {
            GroupSelector::Total => Group::Total,
            GroupSelector::Breakdown(group) => group.clone(),
        }
    }
}

fn group_results(
    aggregates: &ExperimentAggregates,
    query: &ResultsQuery,
    variations: &[Arc<str>],
    group: &GroupSelector,
    keys: &[Arc<str>],
    baseline: Option<&Arc<str>>,
) -> Vec<VariationResults> {
    let mut results: Vec<VariationResults> = variations
        .iter()
        .map(|variation| {
            let cell = CellKey {
                variation: Arc::clone(variation),
                group: group.group(),
            };
            let (counters, sketch) = aggregates.summarise(&cell, query.from_ms, query.to_ms);
            let active_estimate = sketch.map_or(0.0, |sketch| sketch.estimate());
            VariationResults {
                variation: Arc::clone(variation),
                counters,
                active_estimate,
                active_standard_error: stats::hll_standard_error(
                    active_estimate,
                    aggregates.precision,
                ),
                comparisons: Vec::new(),
            }
        })
        .collect();
    let Some(baseline) = baseline else {
        return results;
    };
    let Some(baseline_counters) = results
        .iter()
        .find(|result| result.variation == *baseline)
        .map(|result| result.counters.clone())
    else {
        return results;
    };
    for result in results
        .iter_mut()
        .filter(|result| result.variation != *baseline)
    {
        result.comparisons = keys
            .iter()
            .map(|key| compare(&baseline_counters, &result.counters, key))
            .collect();
    }
    results
}

fn compare(baseline: &Counters, variation: &Counters, key: &str) -> KeyComparison {
    let baseline_key = baseline.key_counters(key);
    let variation_key = variation.key_counters(key);
    KeyComparison {
        rate: stats::compare_rates(
            baseline_key.unique_conversions,
            baseline.visitors,
            variation_key.unique_conversions,
            variation.visitors,
        ),
        value: stats::compare_means(
            sample(baseline.visitors, &baseline_key),
            sample(variation.visitors, &variation_key),
        ),
    }
}

/// Per-visitor converted values as a sample: visitors without conversions
/// count as zeros, which the sums already include.
fn sample(visitors: i64, key: &super::segment::KeyCounters) -> Sample {
    Sample {
        count: visitors as f64,
        sum: key.value_sum_micros as f64 / 1e6,
        sum_squares: key.value_sum_squares_micros as f64 / 1e12,
    }
}

/// Per variation, its points.
pub type Series = Vec<(Arc<str>, Vec<SeriesPoint>)>;

/// One point of a variation's series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    pub ts_ms: i64,
    pub counters: Counters,
    pub active_estimate: f64,
}

/// Per variation, the counters of each interval in [from_ms, to_ms).
pub fn time_series(
    aggregates: &ExperimentAggregates,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
) -> Vec<(Arc<str>, Vec<SeriesPoint>)> {
    aggregates
        .variations()
        .into_iter()
        .map(|variation| {
            let cell = CellKey {
                variation: Arc::clone(&variation),
                group: Group::Total,
            };
            let points = (from_ms..to_ms)
                .step_by(usize::try_from(interval_ms).expect("interval is positive"))
                .map(|start_ms| {
                    let end_ms = (start_ms + interval_ms).min(to_ms);
                    let (counters, sketch) = aggregates.summarise(&cell, start_ms, end_ms);
                    SeriesPoint {
                        ts_ms: start_ms,
                        counters,
                        active_estimate: sketch.map_or(0.0, |sketch| sketch.estimate()),
                    }
                })
                .collect();
            (variation, points)
        })
        .collect()
}
