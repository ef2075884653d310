//! Results and time-series queries over one experiment's aggregates.
//! Pure functions: the aggregate actor calls them on its own state.

use super::aggregates::{CellSeries, Counters, ExperimentAggregates, Group};
use super::sketch::{Sketch, SketchUnion};
use crate::limits;
use crate::stats::{self, Comparison, Sample};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Expected allocation weight by variation for the sample ratio
    /// mismatch check; `None`: equal.
    pub weights: Option<BTreeMap<Arc<str>, f64>>,
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
    /// `None` with fewer than two variations or no visitors.
    pub sample_ratio_mismatch: Option<SampleRatioMismatch>,
}

/// The chi-square test of a group's visitors per variation against the
/// expected allocation (docs/statistics.md, "Sample ratio mismatch").
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRatioMismatch {
    pub p_value: f64,
    /// Per variation (in the group's order), its expected share; sums to 1.
    pub expected_weights: Vec<(Arc<str>, f64)>,
    pub flagged: bool,
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
    #[error("`weights` names `{variation}`, which is not a variation of this experiment (variations: {variations})")]
    UnknownWeightedVariation {
        variation: String,
        variations: String,
    },
    #[error("`weights` must give every variation a weight; `{variation}` has none")]
    MissingWeight { variation: String },
    #[error(
        "`interval_ms` {interval_ms} must be a positive multiple of the bucket size {bucket_ms} ms"
    )]
    InvalidInterval { interval_ms: i64, bucket_ms: i64 },
    #[error("the series would have {points} points; the limit is {max}", max = limits::TIMESERIES_POINTS_MAX)]
    TooManyPoints { points: i64 },
    #[error("the query would read {cost} cell-buckets ({cells} cells × {buckets} buckets); the limit is {limit} (--query-cost-max); narrow the range, use a longer interval or drop the breakdown")]
    TooExpensive {
        cost: u64,
        cells: u64,
        buckets: u64,
        limit: u64,
    },
    #[error("the node is shutting down or overloaded; retry")]
    Unavailable,
}

/// Per variation and breakdown value, every metric `docs/semantics.md`
/// defines, from one store's aggregates. The same answer as `finish(partial(…))`, without
/// building a sketch per cell: each cell's union is estimated in place.
pub fn results(
    aggregates: &ExperimentAggregates,
    query: &ResultsQuery,
) -> Result<Results, QueryError> {
    let mut union = SketchUnion::new(aggregates.precision);
    let cells = cells_asked(aggregates, query.breakdown.as_ref())
        .map(|(key, series)| {
            let counters =
                aggregates.summarise_into(series, query.from_ms, query.to_ms, &mut union);
            (key, (counters, union.estimate()))
        })
        .collect();
    answer(
        Estimates {
            precision: aggregates.precision,
            decisions_by_variation: &aggregates.decisions_by_variation,
            keys: &aggregates.keys,
            cells,
        },
        query,
    )
}

/// (breakdown value, variation) of a partial's cell.
pub type PartialKey = (Option<Arc<str>>, Arc<str>);

/// One store's share of a results query: per (breakdown value, variation),
/// counters summed and sketches unioned over the range, and what defines
/// the variation list and the default keys. Shares of every store that
/// holds aggregates of the experiment add up (`merge`) to the whole, which
/// is how a query is answered across nodes: counters add, sketches union.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    pub precision: u8,
    pub decisions_by_variation: BTreeMap<Arc<str>, i64>,
    pub keys: BTreeSet<Arc<str>>,
    /// (breakdown value, `None` without a breakdown; variation) → summary.
    pub cells: BTreeMap<PartialKey, (Counters, Option<Sketch>)>,
}

impl Partial {
    /// Adds another store's share.
    pub fn merge(&mut self, other: Partial) {
        if self.precision == 0 {
            self.precision = other.precision;
        }
        for (variation, count) in other.decisions_by_variation {
            *self.decisions_by_variation.entry(variation).or_insert(0) += count;
        }
        self.keys.extend(other.keys);
        for (cell, (counters, sketch)) in other.cells {
            let (mine, my_sketch) = self.cells.entry(cell).or_default();
            mine.add(&counters);
            match (my_sketch.as_mut(), sketch) {
                (Some(union), Some(sketch)) => union.merge(&sketch),
                (None, Some(sketch)) => *my_sketch = Some(sketch),
                (_, None) => {}
            }
        }
    }
}

/// The cells a results query reads, with their partial key: the variation
/// totals without a breakdown, the cells of the asked attribute with one.
fn cells_asked<'a>(
    aggregates: &'a ExperimentAggregates,
    breakdown: Option<&'a Arc<str>>,
) -> impl Iterator<Item = (PartialKey, &'a CellSeries)> + 'a {
    aggregates.cells.iter().filter_map(move |series| {
        let value = match (&series.key.group, breakdown) {
            (Group::Total, None) => None,
            (Group::Breakdown { attribute, value }, Some(asked)) if attribute == asked => {
                Some(Arc::clone(value))
            }
            _ => return None,
        };
        Some(((value, Arc::clone(&series.key.variation)), series))
    })
}

/// The share of one store.
pub fn partial(aggregates: &ExperimentAggregates, query: &ResultsQuery) -> Partial {
    let mut union = SketchUnion::new(aggregates.precision);
    let cells = cells_asked(aggregates, query.breakdown.as_ref())
        .map(|(key, series)| {
            let counters =
                aggregates.summarise_into(series, query.from_ms, query.to_ms, &mut union);
            (key, (counters, union.to_sketch()))
        })
        .collect();
    Partial {
        precision: aggregates.precision,
        decisions_by_variation: aggregates.decisions_by_variation.clone(),
        keys: aggregates.keys.clone(),
        cells,
    }
}

/// Results from the sum of every store's share.
pub fn finish(partial: Partial, query: &ResultsQuery) -> Result<Results, QueryError> {
    let cells = partial
        .cells
        .into_iter()
        .map(|(key, (counters, sketch))| {
            let estimate = sketch.as_ref().map_or(0.0, Sketch::estimate);
            (key, (counters, estimate))
        })
        .collect();
    answer(
        Estimates {
            precision: partial.precision,
            decisions_by_variation: &partial.decisions_by_variation,
            keys: &partial.keys,
            cells,
        },
        query,
    )
}

/// What results are computed from, whether from one store or from the sum
/// of every store's share: per cell, counters and the active-visitor
/// estimate.
struct Estimates<'a> {
    precision: u8,
    decisions_by_variation: &'a BTreeMap<Arc<str>, i64>,
    keys: &'a BTreeSet<Arc<str>>,
    cells: BTreeMap<PartialKey, (Counters, f64)>,
}

fn answer(estimates: Estimates<'_>, query: &ResultsQuery) -> Result<Results, QueryError> {
    let variations = variations_of(estimates.decisions_by_variation);
    let keys = if query.keys.is_empty() {
        estimates.keys.iter().cloned().collect()
    } else {
        query.keys.clone()
    };
    let baseline = baseline_of(&variations, query.baseline.as_ref())?;
    let values = group_values(query.breakdown.is_some(), estimates.cells.keys());
    let expected_weights = expected_weights(&variations, query.weights.as_ref())?;
    let mut groups: Vec<GroupResults> = values
        .into_iter()
        .map(|value| {
            let variations =
                group_results(&estimates, &value, &variations, &keys, baseline.as_ref());
            GroupResults {
                sample_ratio_mismatch: sample_ratio_mismatch(&variations, &expected_weights),
                variations,
                value,
            }
        })
        .collect();
    correct_for_multiple_comparisons(&mut groups);
    Ok(Results {
        keys,
        baseline,
        groups,
    })
}

/// The groups of an answer: one without a breakdown, else one per
/// breakdown value among the cells (which are sorted by value).
fn group_values<'a>(
    breakdown: bool,
    cells: impl Iterator<Item = &'a PartialKey>,
) -> Vec<Option<Arc<str>>> {
    if !breakdown {
        return vec![None];
    }
    let mut values: Vec<Option<Arc<str>>> = cells.map(|(value, _)| value.clone()).collect();
    values.dedup();
    values
}

/// The variations of an experiment: those whose decisions add up to more
/// than zero (with retractions spread over nodes only the sum says so).
pub fn variations_of(decisions_by_variation: &BTreeMap<Arc<str>, i64>) -> Vec<Arc<str>> {
    decisions_by_variation
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(variation, _)| Arc::clone(variation))
        .collect()
}

/// The baseline: the asked one, which must be a variation, else the first.
fn baseline_of(
    variations: &[Arc<str>],
    asked: Option<&Arc<str>>,
) -> Result<Option<Arc<str>>, QueryError> {
    match asked {
        Some(baseline) if !variations.contains(baseline) => Err(QueryError::UnknownBaseline {
            baseline: baseline.to_string(),
        }),
        Some(baseline) => Ok(Some(Arc::clone(baseline))),
        None => Ok(variations.first().cloned()),
    }
}

/// Where a results answer's expected allocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsSource {
    Equal,
    Query,
    Stored,
}

/// An experiment's stored weights as a query's: restricted to the
/// variations with data (a variation weighted before its first decision is
/// not yet part of the split). `None` when a variation with data has no
/// stored weight: its share would be undefined, so the check assumes equal
/// shares and says so (`WeightsSource::Equal`).
pub fn stored_weights_for(
    variations: &[Arc<str>],
    stored: &BTreeMap<String, f64>,
) -> Option<BTreeMap<Arc<str>, f64>> {
    variations
        .iter()
        .map(|variation| {
            let weight = stored.get(variation.as_ref())?;
            Some((Arc::clone(variation), *weight))
        })
        .collect()
}

/// Per variation, its expected share of visitors (summing to 1): equal, or
/// the query's weights, which must name exactly the experiment's variations
/// (a missing one would leave its share undefined; an unknown one is a typo
/// the reader should hear about).
fn expected_weights(
    variations: &[Arc<str>],
    weights: Option<&BTreeMap<Arc<str>, f64>>,
) -> Result<Vec<(Arc<str>, f64)>, QueryError> {
    let raw: Vec<f64> = match weights {
        None => vec![1.0; variations.len()],
        Some(weights) => {
            if let Some(unknown) = weights.keys().find(|name| !variations.contains(name)) {
                return Err(QueryError::UnknownWeightedVariation {
                    variation: unknown.to_string(),
                    variations: variations.join(", "),
                });
            }
            let mut raw = Vec::with_capacity(variations.len());
            for variation in variations {
                let Some(weight) = weights.get(variation) else {
                    return Err(QueryError::MissingWeight {
                        variation: variation.to_string(),
                    });
                };
                raw.push(*weight);
            }
            raw
        }
    };
    let total: f64 = raw.iter().sum();
    Ok(variations
        .iter()
        .zip(raw)
        .map(|(variation, weight)| (Arc::clone(variation), weight / total))
        .collect())
}

fn sample_ratio_mismatch(
    variations: &[VariationResults],
    expected_weights: &[(Arc<str>, f64)],
) -> Option<SampleRatioMismatch> {
    // Every group lists the experiment's variations in the same order.
    debug_assert!(variations
        .iter()
        .map(|variation| &variation.variation)
        .eq(expected_weights.iter().map(|(variation, _)| variation)));
    let visitors: Vec<i64> = variations
        .iter()
        .map(|variation| variation.counters.visitors)
        .collect();
    let weights: Vec<f64> = expected_weights.iter().map(|(_, weight)| *weight).collect();
    let p_value = stats::sample_ratio_mismatch_p_value(&visitors, &weights)?;
    Some(SampleRatioMismatch {
        p_value,
        expected_weights: expected_weights.to_vec(),
        flagged: p_value < stats::SAMPLE_RATIO_MISMATCH_P_VALUE_MAX,
    })
}

/// Holm's correction over every fixed-horizon p-value of the answer: each
/// group (breakdown value) × variation × key × rate and value is one
/// hypothesis, because a reader scanning the page for "significant" cells
/// tests them all at once (docs/statistics.md, "Several comparisons").
fn correct_for_multiple_comparisons(groups: &mut [GroupResults]) {
    let comparisons = || {
        groups
            .iter()
            .flat_map(|group| &group.variations)
            .flat_map(|variation| &variation.comparisons)
            .flat_map(|comparison| [&comparison.rate, &comparison.value])
            .flatten()
    };
    let p_values: Vec<f64> = comparisons().map(|comparison| comparison.p_value).collect();
    let adjusted = stats::holm_adjusted(&p_values);
    let mut adjusted = adjusted.into_iter();
    for comparison in groups
        .iter_mut()
        .flat_map(|group| &mut group.variations)
        .flat_map(|variation| &mut variation.comparisons)
        .flat_map(|comparison| [&mut comparison.rate, &mut comparison.value])
        .flatten()
    {
        comparison.p_value_holm = adjusted
            .next()
            .expect("one adjusted p-value per comparison, in the same order");
    }
    debug_assert!(adjusted.next().is_none());
}

fn group_results(
    estimates: &Estimates<'_>,
    value: &Option<Arc<str>>,
    variations: &[Arc<str>],
    keys: &[Arc<str>],
    baseline: Option<&Arc<str>>,
) -> Vec<VariationResults> {
    let mut results: Vec<VariationResults> = variations
        .iter()
        .map(|variation| {
            let summary = estimates.cells.get(&(value.clone(), Arc::clone(variation)));
            let counters = summary
                .map(|(counters, _)| counters.clone())
                .unwrap_or_default();
            let active_estimate = summary.map_or(0.0, |(_, estimate)| *estimate);
            VariationResults {
                variation: Arc::clone(variation),
                counters,
                active_estimate,
                active_standard_error: stats::hll_standard_error(
                    active_estimate,
                    estimates.precision,
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
fn sample(visitors: i64, key: &super::aggregates::KeyCounters) -> Sample {
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
    /// Per key of the query, the comparison with the baseline over the
    /// counters summed from the start of the range to the end of this
    /// interval (counters of disjoint intervals add: each visitor, session
    /// and first conversion is counted in the interval of its time). Empty
    /// for the baseline and without keys.
    pub cumulative: Vec<KeyComparison>,
}

/// A time-series query whose range, interval and names are checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesQuery {
    pub breakdown: Option<Arc<str>>,
    /// The keys of the cumulative comparisons (none: no comparison).
    pub keys: Vec<Arc<str>>,
    /// `None`: the first variation.
    pub baseline: Option<Arc<str>>,
}

/// The series of one group: without a breakdown the only one, else one per
/// breakdown value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGroup {
    pub value: Option<Arc<str>>,
    pub variations: Series,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResults {
    pub baseline: Option<Arc<str>>,
    pub groups: Vec<SeriesGroup>,
}

/// The share of one store in a time series: one `Partial` (per variation
/// and breakdown value, or per variation without a breakdown) per interval
/// of [from_ms, to_ms).
pub fn series_partial(
    aggregates: &ExperimentAggregates,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
    breakdown: Option<&Arc<str>>,
) -> Vec<Partial> {
    let mut union = SketchUnion::new(aggregates.precision);
    (from_ms..to_ms)
        .step_by(usize::try_from(interval_ms).expect("interval is positive"))
        .map(|start_ms| {
            let end_ms = (start_ms + interval_ms).min(to_ms);
            let cells = cells_asked(aggregates, breakdown)
                .map(|(key, series)| {
                    let counters = aggregates.summarise_into(series, start_ms, end_ms, &mut union);
                    (key, (counters, union.to_sketch()))
                })
                .collect();
            Partial {
                precision: aggregates.precision,
                decisions_by_variation: aggregates.decisions_by_variation.clone(),
                keys: aggregates.keys.clone(),
                cells,
            }
        })
        .collect()
}

/// A time series from the sum of every store's `series_partial`: per group,
/// the variations whose decisions add up to more than zero, each with its
/// counters, active-visitor estimate and cumulative comparisons per
/// interval.
pub fn finish_series(
    intervals: Vec<Partial>,
    from_ms: i64,
    interval_ms: i64,
    query: &SeriesQuery,
) -> Result<SeriesResults, QueryError> {
    let variations = intervals.first().map_or_else(Vec::new, |first| {
        variations_of(&first.decisions_by_variation)
    });
    let baseline = baseline_of(&variations, query.baseline.as_ref())?;
    let all_cells: BTreeSet<&PartialKey> = intervals
        .iter()
        .flat_map(|interval| interval.cells.keys())
        .collect();
    let groups = group_values(query.breakdown.is_some(), all_cells.into_iter())
        .into_iter()
        .map(|value| SeriesGroup {
            variations: group_series(&intervals, &value, &variations, from_ms, interval_ms),
            value,
        })
        .map(|mut group| {
            add_cumulative_comparisons(&mut group.variations, &query.keys, baseline.as_ref());
            group
        })
        .collect();
    Ok(SeriesResults { baseline, groups })
}

/// Per variation, its points in one group (zero where an interval has no
/// cell), without comparisons.
fn group_series(
    intervals: &[Partial],
    value: &Option<Arc<str>>,
    variations: &[Arc<str>],
    from_ms: i64,
    interval_ms: i64,
) -> Series {
    variations
        .iter()
        .map(|variation| {
            let key = (value.clone(), Arc::clone(variation));
            let points = intervals
                .iter()
                .zip(0_i64..)
                .map(|(interval, index)| {
                    let (counters, sketch) = interval.cells.get(&key).cloned().unwrap_or_default();
                    SeriesPoint {
                        ts_ms: from_ms + index * interval_ms,
                        counters,
                        active_estimate: sketch.map_or(0.0, |sketch| sketch.estimate()),
                        cumulative: Vec::new(),
                    }
                })
                .collect();
            (Arc::clone(variation), points)
        })
        .collect()
}

/// Fills every non-baseline point's `cumulative`: the comparison of the
/// counters summed from the first interval through this one, against the
/// baseline's summed the same way. Holm's correction is not applied: these
/// are the same hypotheses looked at over time, which is what the
/// always-valid p-value and confidence sequence are for.
fn add_cumulative_comparisons(series: &mut Series, keys: &[Arc<str>], baseline: Option<&Arc<str>>) {
    let Some(baseline) = baseline else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let Some(baseline_totals) = series
        .iter()
        .find(|(variation, _)| variation == baseline)
        .map(|(_, points)| running_totals(points))
    else {
        return;
    };
    for (_, points) in series
        .iter_mut()
        .filter(|(variation, _)| variation != baseline)
    {
        let totals = running_totals(points);
        for ((point, total), baseline_total) in points.iter_mut().zip(&totals).zip(&baseline_totals)
        {
            point.cumulative = keys
                .iter()
                .map(|key| compare(baseline_total, total, key))
                .collect();
        }
    }
}

/// The counters summed from the first point through each point.
fn running_totals(points: &[SeriesPoint]) -> Vec<Counters> {
    let mut total = Counters::default();
    points
        .iter()
        .map(|point| {
            total.add(&point.counters);
            total.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::aggregates::KeyCounters;
    use super::*;

    fn counters(visitors: i64, conversions: i64) -> Counters {
        let key = KeyCounters {
            unique_conversions: conversions,
            total_conversions: conversions,
            ..KeyCounters::default()
        };
        Counters {
            visitors,
            keys: [(Arc::from("buy"), key)].into(),
            ..Counters::default()
        }
    }

    /// Two intervals of a "browser" breakdown: per value and variation,
    /// (visitors, conversions) of each interval.
    fn intervals() -> Vec<Partial> {
        let cell = |value: &str, variation: &str, visitors, conversions| {
            let key: PartialKey = (Some(Arc::from(value)), Arc::from(variation));
            (key, (counters(visitors, conversions), None))
        };
        let partial = |cells: Vec<(PartialKey, (Counters, Option<Sketch>))>| Partial {
            precision: 12,
            decisions_by_variation: [(Arc::from("a"), 2), (Arc::from("b"), 2)].into(),
            keys: [Arc::from("buy")].into(),
            cells: cells.into_iter().collect(),
        };
        vec![
            partial(vec![
                cell("chrome", "a", 100, 10),
                cell("chrome", "b", 100, 20),
                cell("firefox", "a", 50, 5),
            ]),
            partial(vec![
                cell("chrome", "a", 300, 30),
                cell("chrome", "b", 300, 60),
                cell("firefox", "b", 50, 5),
            ]),
        ]
    }

    #[test]
    fn a_series_follows_the_breakdown_with_one_group_per_value() {
        let query = SeriesQuery {
            breakdown: Some(Arc::from("browser")),
            keys: vec![Arc::from("buy")],
            baseline: None,
        };
        let series = finish_series(intervals(), 0, 10, &query).unwrap();
        assert_eq!(series.baseline.as_deref(), Some("a"));
        let values: Vec<_> = series.groups.iter().map(|g| g.value.clone()).collect();
        assert_eq!(
            values,
            vec![Some(Arc::from("chrome")), Some(Arc::from("firefox"))]
        );
        let firefox = &series.groups[1].variations;
        let visitors = |variation: usize| -> Vec<i64> {
            firefox[variation]
                .1
                .iter()
                .map(|p| p.counters.visitors)
                .collect()
        };
        assert_eq!(visitors(0), vec![50, 0]);
        assert_eq!(visitors(1), vec![0, 50]);
        assert_eq!(firefox[1].1[1].ts_ms, 10);
    }

    /// The last point's cumulative comparison is the comparison over the
    /// whole range, computed from counters summed over the intervals.
    #[test]
    fn cumulative_comparisons_compare_the_counters_summed_so_far() {
        let query = SeriesQuery {
            breakdown: Some(Arc::from("browser")),
            keys: vec![Arc::from("buy")],
            baseline: None,
        };
        let series = finish_series(intervals(), 0, 10, &query).unwrap();
        let chrome = &series.groups[0].variations;
        assert!(chrome[0].1.iter().all(|point| point.cumulative.is_empty()));
        let treatment = &chrome[1].1;
        let whole = compare(&counters(400, 40), &counters(400, 80), "buy");
        assert_eq!(treatment[1].cumulative, vec![whole.clone()]);
        let first = compare(&counters(100, 10), &counters(100, 20), "buy");
        assert_eq!(treatment[0].cumulative, vec![first.clone()]);
        let rate = whole.rate.expect("both groups converted");
        assert!((rate.relative_improvement - 1.0).abs() < 1e-12);
        let always_valid = rate.always_valid.expect("both groups have spread");
        assert!(always_valid.low < rate.relative_improvement);
        assert!(always_valid.high > rate.relative_improvement);
        // More data narrows the sequence.
        let early = first.rate.unwrap().always_valid.unwrap();
        assert!(always_valid.high - always_valid.low < early.high - early.low);
    }

    #[test]
    fn a_series_without_keys_compares_nothing_and_an_unknown_baseline_fails() {
        let series = finish_series(intervals(), 0, 10, &SeriesQuery::default()).unwrap();
        assert_eq!(series.groups.len(), 1);
        assert_eq!(series.groups[0].value, None);
        let query = SeriesQuery {
            baseline: Some(Arc::from("z")),
            ..SeriesQuery::default()
        };
        assert!(matches!(
            finish_series(intervals(), 0, 10, &query),
            Err(QueryError::UnknownBaseline { .. })
        ));
    }

    #[test]
    fn stored_weights_apply_when_they_name_every_variation_with_data() {
        let variations = [Arc::from("a"), Arc::from("b")];
        let stored = [
            ("a".to_string(), 2.0),
            ("b".to_string(), 1.0),
            ("c".to_string(), 5.0),
        ];
        let weights = stored_weights_for(&variations, &stored.into_iter().collect()).unwrap();
        assert_eq!(weights.len(), 2);
        assert_eq!(weights[&Arc::from("a")], 2.0);
        let only_a = [("a".to_string(), 2.0)].into_iter().collect();
        assert_eq!(stored_weights_for(&variations, &only_a), None);
    }
}
