//! The oracle: a plain batch computation of `docs/semantics.md`.
//!
//! It looks at all events at once, in event time, with no incremental state,
//! no retractions and no buckets, so that each metric reads like its
//! definition. It is deliberately slow and simple: every query walks every
//! visitor. The engine must agree with it on every exact metric.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use sessiondb_protocol::{
    Comparison, Event, EventType, KeyMetrics, ResultsResponse, VariationResults,
};
use sessiondb_workload::ts_ms;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The breakdown value of visitors whose exposure event lacks the attribute.
pub const NONE_VALUE: &str = "(none)";

/// The project settings the definitions depend on.
#[derive(Debug, Clone)]
pub struct OracleSettings {
    pub session_gap_ms: i64,
    pub session_max_ms: i64,
    pub midnight_split: bool,
    pub time_zone: Tz,
}

impl Default for OracleSettings {
    /// The documented project defaults.
    fn default() -> Self {
        OracleSettings {
            session_gap_ms: 30 * 60_000,
            session_max_ms: 24 * 60 * 60_000,
            midnight_split: false,
            time_zone: chrono_tz::UTC,
        }
    }
}

/// One event as the definitions see it.
#[derive(Debug, Clone)]
struct OracleEvent {
    ts: i64,
    id: String,
    event_type: EventType,
    key: Option<String>,
    value_micro: i128,
    attributes: BTreeMap<String, String>,
    /// (experiment, variation) in list order.
    decisions: Vec<(String, String)>,
}

/// One session of a visitor: indices into the visitor's sorted events.
#[derive(Debug, Clone)]
struct Session {
    first: usize,
    last: usize,
}

/// A results cell: one variation within one breakdown group (`None` when
/// the query has no breakdown).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cell {
    pub breakdown_value: Option<String>,
    pub variation: String,
}

/// Exact metrics of one key in one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub unique_conversions: i64,
    pub total_conversions: i64,
    /// Micro-units.
    pub value_sum_micro: i128,
    /// Micro-units squared.
    pub value_sum_squares_micro2: i128,
    pub sessions_with_conversion: i64,
}

/// Exact metrics of one cell, plus the bounds for the HyperLogLog estimate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellCounts {
    pub visitors: i64,
    pub conflicts: i64,
    pub sessions: i64,
    pub bounced_sessions: i64,
    pub duration_ms_sum: i64,
    pub pageviews_sum: i64,
    pub keys: BTreeMap<String, KeyCounts>,
    /// Exact number of distinct visitors active in range.
    pub active_visitors_exact: i64,
    /// Visitors that may sit in this cell's sketch: a late decision that
    /// moves a visitor to another cell cannot remove it from the sketch it
    /// was added to (docs/semantics.md, "Approximations"). Any decision of
    /// the visitor for the experiment may have been its sticky one for a
    /// while, so its cell is a possible home.
    pub active_visitors_upper: i64,
}

/// The oracle's answer to one results query.
#[derive(Debug, Clone, Default)]
pub struct OracleResults {
    pub cells: BTreeMap<Cell, CellCounts>,
    /// Every variation named by any decision for the experiment.
    pub variations: BTreeSet<String>,
}

/// A project's distinct events, grouped by visitor and sorted by `(ts, id)`.
#[derive(Debug, Clone)]
pub struct Oracle {
    settings: OracleSettings,
    visitors: BTreeMap<String, Vec<OracleEvent>>,
}

/// `round(value × 10⁶)`, ties away from zero (that is what `f64::round`
/// does); no value counts as 0.
pub fn value_micro(value: Option<f64>) -> i128 {
    value.map(|v| (v * 1e6).round() as i128).unwrap_or(0)
}

impl Oracle {
    /// Builds the oracle from events; an event whose `(visitor, id)` was
    /// seen before is a duplicate and ignored.
    pub fn new(settings: OracleSettings, events: &[Event]) -> Oracle {
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut visitors: BTreeMap<String, Vec<OracleEvent>> = BTreeMap::new();
        for event in events {
            if !seen.insert((event.visitor.clone(), event.id.clone())) {
                continue;
            }
            visitors
                .entry(event.visitor.clone())
                .or_default()
                .push(OracleEvent {
                    ts: ts_ms(event),
                    id: event.id.clone(),
                    event_type: event.event_type,
                    key: event.key.clone(),
                    value_micro: value_micro(event.value),
                    attributes: event.attributes.clone(),
                    decisions: event
                        .decisions
                        .iter()
                        .map(|d| (d.experiment.clone(), d.variation.clone()))
                        .collect(),
                });
        }
        for events in visitors.values_mut() {
            // (ts, id) order; String order is byte order.
            events.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
        }
        Oracle { settings, visitors }
    }

    /// Experiments named by any decision.
    pub fn experiments(&self) -> BTreeSet<String> {
        self.visitors
            .values()
            .flatten()
            .flat_map(|e| e.decisions.iter().map(|(x, _)| x.clone()))
            .collect()
    }

    /// Calendar date of `ts` in the project's time zone.
    fn local_date(&self, ts: i64) -> NaiveDate {
        DateTime::from_timestamp_millis(ts)
            .expect("timestamp in range")
            .with_timezone(&self.settings.time_zone)
            .date_naive()
    }

    /// Cuts a visitor's sorted events into sessions (the four rules of
    /// docs/semantics.md, "Sessions").
    fn sessions(&self, events: &[OracleEvent]) -> Vec<Session> {
        let mut sessions: Vec<Session> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let starts_new = match sessions.last() {
                None => true,
                Some(current) => {
                    let start = events[current.first].ts;
                    let previous = events[i - 1].ts;
                    event.ts - previous > self.settings.session_gap_ms
                        || event.ts - start > self.settings.session_max_ms
                        || (self.settings.midnight_split
                            && self.local_date(event.ts) != self.local_date(start))
                }
            };
            if starts_new {
                sessions.push(Session { first: i, last: i });
            } else {
                sessions.last_mut().expect("not empty").last = i;
            }
        }
        sessions
    }

    /// All metrics of experiment `experiment` over `[from, to)`, per cell.
    pub fn results(
        &self,
        experiment: &str,
        from: i64,
        to: i64,
        breakdown: Option<&str>,
        keys: &[&str],
    ) -> OracleResults {
        let in_range = |t: i64| from <= t && t < to;
        let mut out = OracleResults::default();
        let mut upper: BTreeMap<Cell, BTreeSet<&str>> = BTreeMap::new();
        let cell_of = |variation: &str, event: &OracleEvent| Cell {
            breakdown_value: breakdown.map(|a| {
                event
                    .attributes
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| NONE_VALUE.to_string())
            }),
            variation: variation.to_string(),
        };

        for (visitor, events) in &self.visitors {
            // Decisions for the experiment in (ts, id) order, then list order.
            let decisions: Vec<(&OracleEvent, &str)> = events
                .iter()
                .flat_map(|e| {
                    e.decisions
                        .iter()
                        .filter(|(x, _)| x == experiment)
                        .map(move |(_, variation)| (e, variation.as_str()))
                })
                .collect();
            let Some(&(exposure_event, sticky)) = decisions.first() else {
                continue;
            };
            for (_, variation) in &decisions {
                out.variations.insert(variation.to_string());
            }
            let t0 = exposure_event.ts;
            let cell = cell_of(sticky, exposure_event);
            let counts = out.cells.entry(cell.clone()).or_default();

            if in_range(t0) {
                counts.visitors += 1;
            }
            for (event, variation) in decisions.iter().skip(1) {
                if *variation != sticky && in_range(event.ts) {
                    counts.conflicts += 1;
                }
            }

            for &key in keys {
                let conversions: Vec<&OracleEvent> = events
                    .iter()
                    .filter(|e| e.key.as_deref() == Some(key) && e.ts >= t0)
                    .collect();
                let key_counts = counts.keys.entry(key.to_string()).or_default();
                if let Some(first) = conversions.first() {
                    if in_range(first.ts) {
                        key_counts.unique_conversions += 1;
                    }
                }
                for conversion in &conversions {
                    if in_range(conversion.ts) {
                        key_counts.total_conversions += 1;
                        key_counts.value_sum_micro += conversion.value_micro;
                    }
                }
                // S_v(t): the sum of the values of v's conversions before t.
                let s_before = |t: i64| -> i128 {
                    conversions
                        .iter()
                        .filter(|c| c.ts < t)
                        .map(|c| c.value_micro)
                        .sum()
                };
                let (s_to, s_from) = (s_before(to), s_before(from));
                key_counts.value_sum_squares_micro2 += s_to * s_to - s_from * s_from;
            }

            for session in self.sessions(events) {
                let start = events[session.first].ts;
                let last = events[session.last].ts;
                if t0 > last || !in_range(start) {
                    continue;
                }
                let members = &events[session.first..=session.last];
                counts.sessions += 1;
                if members.len() == 1 {
                    counts.bounced_sessions += 1;
                }
                counts.duration_ms_sum += last - start;
                counts.pageviews_sum += members
                    .iter()
                    .filter(|e| e.event_type == EventType::Pageview)
                    .count() as i64;
                for &key in keys {
                    let converted = members
                        .iter()
                        .any(|e| e.key.as_deref() == Some(key) && e.ts >= t0);
                    if converted {
                        let key_counts = counts.keys.entry(key.to_string()).or_default();
                        key_counts.sessions_with_conversion += 1;
                    }
                }
            }

            let active = events.iter().any(|e| e.ts >= t0 && in_range(e.ts));
            if active {
                counts.active_visitors_exact += 1;
                for (event, variation) in &decisions {
                    upper
                        .entry(cell_of(variation, event))
                        .or_default()
                        .insert(visitor.as_str());
                }
            }
        }

        for (cell, visitors) in upper {
            let counts = out.cells.entry(cell).or_default();
            counts.active_visitors_upper = visitors.len() as i64;
        }
        for counts in out.cells.values_mut() {
            for &key in keys {
                counts.keys.entry(key.to_string()).or_default();
            }
        }
        out
    }
}

/// Whether two floats agree up to the float conversion of exact integers.
pub fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * actual.abs().max(expected.abs()) + 1e-12
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

/// The metrics of one key in one variation, if the answer lists them.
fn key_metrics<'a>(variation: Option<&'a VariationResults>, key: &str) -> Option<&'a KeyMetrics> {
    variation.and_then(|v| v.metrics.iter().find(|m| m.key == key))
}

fn check_int(problems: &mut Vec<String>, here: &str, name: &str, got: i64, want: i64) {
    if got != want {
        problems.push(format!("{here}: {name} = {got}, oracle says {want}"));
    }
}

fn check_float(problems: &mut Vec<String>, here: &str, key: &str, name: &str, got: f64, want: f64) {
    if !close(got, want) {
        problems.push(format!("{here}: {key}.{name} = {got}, oracle says {want}"));
    }
}

/// Compares a results answer with the oracle; returns every disagreement
/// (empty when they agree). Integer counters must be equal; float fields
/// that carry exact micro-unit sums must agree up to their conversion to
/// f64; the HyperLogLog estimate must lie within 4 standard errors of the
/// exact count (above: of the upper bound, see `active_visitors_upper`).
pub fn compare(actual: &ResultsResponse, expected: &OracleResults, keys: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let asked_breakdown = actual.breakdown.is_some();

    let mut actual_cells: BTreeMap<Cell, &VariationResults> = BTreeMap::new();
    let mut previous_group: Option<&Option<String>> = None;
    for group in &actual.groups {
        if group.breakdown_value.is_some() != asked_breakdown {
            problems.push(format!(
                "group breakdown_value {:?} does not match breakdown {:?}",
                group.breakdown_value, actual.breakdown
            ));
        }
        if let Some(previous) = previous_group {
            if previous >= &group.breakdown_value {
                problems.push(format!(
                    "groups not sorted: {previous:?} before {:?}",
                    group.breakdown_value
                ));
            }
        }
        previous_group = Some(&group.breakdown_value);
        let names: Vec<&str> = group
            .variations
            .iter()
            .map(|v| v.variation.as_str())
            .collect();
        if names.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!(
                "variations not sorted in group {:?}: {names:?}",
                group.breakdown_value
            ));
        }
        for variation in &group.variations {
            let cell = Cell {
                breakdown_value: group.breakdown_value.clone(),
                variation: variation.variation.clone(),
            };
            if actual_cells.insert(cell.clone(), variation).is_some() {
                problems.push(format!("cell {cell:?} listed twice"));
            }
        }
    }
    if !asked_breakdown && actual.groups.len() > 1 {
        problems.push(format!(
            "{} groups without a breakdown",
            actual.groups.len()
        ));
    }

    let mut all_cells: BTreeSet<Cell> = actual_cells.keys().cloned().collect();
    all_cells.extend(expected.cells.keys().cloned());
    let zero = CellCounts::default();
    for cell in &all_cells {
        let want = expected.cells.get(cell).unwrap_or(&zero);
        let got = actual_cells.get(cell).copied();
        let here = format!("[{}, {}) {cell:?}", actual.from, actual.to);
        let sessions = got.map(|v| &v.sessions);
        check_int(
            &mut problems,
            &here,
            "visitors",
            got.map_or(0, |v| v.visitors),
            want.visitors,
        );
        check_int(
            &mut problems,
            &here,
            "conflicts",
            got.map_or(0, |v| v.conflicts),
            want.conflicts,
        );
        check_int(
            &mut problems,
            &here,
            "sessions",
            sessions.map_or(0, |s| s.sessions),
            want.sessions,
        );
        check_int(
            &mut problems,
            &here,
            "bounced_sessions",
            sessions.map_or(0, |s| s.bounced_sessions),
            want.bounced_sessions,
        );
        check_int(
            &mut problems,
            &here,
            "duration_ms_sum",
            sessions.map_or(0, |s| s.duration_ms_sum),
            want.duration_ms_sum,
        );
        check_int(
            &mut problems,
            &here,
            "pageviews_sum",
            sessions.map_or(0, |s| s.pageviews_sum),
            want.pageviews_sum,
        );
        for &key in keys {
            let want_key = want.keys.get(key).cloned().unwrap_or_default();
            let got_key = key_metrics(got, key);
            if got.is_some() && got_key.is_none() {
                problems.push(format!("{here}: key {key} missing from metrics"));
            }
            check_int(
                &mut problems,
                &here,
                &format!("{key}.unique_conversions"),
                got_key.map_or(0, |m| m.unique_conversions),
                want_key.unique_conversions,
            );
            check_int(
                &mut problems,
                &here,
                &format!("{key}.total_conversions"),
                got_key.map_or(0, |m| m.total_conversions),
                want_key.total_conversions,
            );
            check_int(
                &mut problems,
                &here,
                &format!("{key}.sessions_with_conversion"),
                got_key.map_or(0, |m| m.sessions_with_conversion),
                want_key.sessions_with_conversion,
            );
            let value_sum = want_key.value_sum_micro as f64 / 1e6;
            check_float(
                &mut problems,
                &here,
                key,
                "value_sum",
                got_key.map_or(0.0, |m| m.value_sum),
                value_sum,
            );
            check_float(
                &mut problems,
                &here,
                key,
                "value_sum_squares",
                got_key.map_or(0.0, |m| m.value_sum_squares),
                want_key.value_sum_squares_micro2 as f64 / 1e12,
            );
            if let Some(m) = got_key {
                let visitors = want.visitors as f64;
                check_float(
                    &mut problems,
                    &here,
                    key,
                    "conversion_rate",
                    m.conversion_rate,
                    ratio(want_key.unique_conversions as f64, visitors),
                );
                check_float(
                    &mut problems,
                    &here,
                    key,
                    "value_per_visitor",
                    m.value_per_visitor,
                    ratio(value_sum, visitors),
                );
            }
        }
        if let Some(s) = sessions {
            if want.sessions > 0 {
                let n = want.sessions as f64;
                for (name, got, want) in [
                    (
                        "bounce_rate",
                        s.bounce_rate,
                        want.bounced_sessions as f64 / n,
                    ),
                    (
                        "duration_ms_mean",
                        s.duration_ms_mean,
                        want.duration_ms_sum as f64 / n,
                    ),
                    (
                        "pageviews_per_session",
                        s.pageviews_per_session,
                        want.pageviews_sum as f64 / n,
                    ),
                ] {
                    if !close(got, want) {
                        problems.push(format!("{here}: {name} = {got}, oracle says {want}"));
                    }
                }
            }
        }
        if let Some(v) = got {
            let estimate = &v.active_visitors;
            let error = estimate.standard_error.max(1.0);
            let low = want.active_visitors_exact as f64 - 4.0 * error;
            let high =
                want.active_visitors_exact.max(want.active_visitors_upper) as f64 + 4.0 * error;
            if !(low..=high).contains(&estimate.value) {
                problems.push(format!(
                    "{here}: active_visitors {} ± {} outside [{low}, {high}] (exact {}, upper {})",
                    estimate.value,
                    estimate.standard_error,
                    want.active_visitors_exact,
                    want.active_visitors_upper
                ));
            }
        } else if want.active_visitors_exact > 0 {
            problems.push(format!(
                "{here}: cell missing but {} visitors were active",
                want.active_visitors_exact
            ));
        }
    }
    problems.extend(compare_comparisons(actual, keys));
    problems.extend(holm_problems(actual));
    problems
}

/// Holm's correction over the m comparisons of an answer lies between the
/// uncorrected p-value and Bonferroni's min(1, m·p), and keeps the order of
/// the uncorrected p-values (docs/statistics.md, "Several comparisons").
fn holm_problems(actual: &ResultsResponse) -> Vec<String> {
    let comparisons: Vec<&Comparison> = actual
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .flat_map(|variation| &variation.metrics)
        .flat_map(|metrics| [&metrics.rate_comparison, &metrics.value_comparison])
        .flatten()
        .collect();
    let count = comparisons.len() as f64;
    let mut problems = Vec::new();
    for comparison in &comparisons {
        let Some(holm) = comparison.p_value_holm else {
            problems.push(format!("a comparison without p_value_holm: {comparison:?}"));
            continue;
        };
        let bonferroni = (count * comparison.p_value).min(1.0);
        if !(comparison.p_value <= holm && holm <= bonferroni * (1.0 + 1e-12)) {
            problems.push(format!(
                "p_value_holm {holm} outside [p_value {}, Bonferroni {bonferroni}]",
                comparison.p_value
            ));
        }
    }
    for first in &comparisons {
        for second in &comparisons {
            if first.p_value < second.p_value && first.p_value_holm > second.p_value_holm {
                problems.push(format!(
                    "Holm reorders p-values: {} → {:?} but {} → {:?}",
                    first.p_value, first.p_value_holm, second.p_value, second.p_value_holm
                ));
            }
        }
    }
    problems
}

/// Checks the comparison fields against the counts in the same answer:
/// none for the baseline itself or when the baseline has no visitors or a
/// zero rate/mean, and the relative improvement when one is given.
fn compare_comparisons(actual: &ResultsResponse, keys: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(baseline) = actual.baseline.as_deref() else {
        return problems;
    };
    for group in &actual.groups {
        let base = group.variations.iter().find(|v| v.variation == baseline);
        for variation in &group.variations {
            for &key in keys {
                let Some(m) = key_metrics(Some(variation), key) else {
                    continue;
                };
                let here = format!(
                    "[{}, {}) group {:?} variation {} key {key}",
                    actual.from, actual.to, group.breakdown_value, variation.variation
                );
                if variation.variation == baseline {
                    if m.rate_comparison.is_some() || m.value_comparison.is_some() {
                        problems.push(format!("{here}: the baseline has a comparison"));
                    }
                    continue;
                }
                let base_metrics = key_metrics(base, key);
                let base_visitors = base.map_or(0, |b| b.visitors);
                let base_rate = base_metrics.map_or(0.0, |b| b.conversion_rate);
                let base_mean = base_metrics.map_or(0.0, |b| b.value_per_visitor);
                match (&m.rate_comparison, base_visitors == 0 || base_rate == 0.0) {
                    (Some(_), true) => problems.push(format!(
                        "{here}: rate comparison against a baseline without visitors or conversions"
                    )),
                    (Some(c), false) => {
                        problems.extend(always_valid_problems(&here, "rate", c));
                        let want = (m.conversion_rate - base_rate) / base_rate;
                        if !close(c.relative_improvement, want) {
                            problems.push(format!(
                                "{here}: rate relative_improvement {} but counts give {want}",
                                c.relative_improvement
                            ));
                        }
                    }
                    (None, _) => {}
                }
                match (&m.value_comparison, base_visitors == 0 || base_mean == 0.0) {
                    (Some(_), true) => problems.push(format!(
                        "{here}: value comparison against a baseline without visitors or value"
                    )),
                    (Some(c), false) => {
                        problems.extend(always_valid_problems(&here, "value", c));
                        let want = (m.value_per_visitor - base_mean) / base_mean;
                        if !close(c.relative_improvement, want) {
                            problems.push(format!(
                                "{here}: value relative_improvement {} but counts give {want}",
                                c.relative_improvement
                            ));
                        }
                    }
                    (None, _) => {}
                }
            }
        }
    }
    problems
}

/// Checks the always-valid fields of a comparison against each other
/// (docs/statistics.md): present together, the sequence around the
/// estimate, and "p < 5 %" exactly when the 95 % sequence excludes 0 (both
/// read the same likelihood ratio at 0).
fn always_valid_problems(here: &str, what: &str, comparison: &Comparison) -> Vec<String> {
    const ALPHA: f64 = 0.05;
    let (p_value, low, high) = match (
        comparison.always_valid_p_value,
        comparison.cs_low,
        comparison.cs_high,
    ) {
        (None, None, None) => return Vec::new(),
        (Some(p_value), Some(low), Some(high)) => (p_value, low, high),
        fields => {
            return vec![format!(
                "{here}: {what} always-valid fields half present: {fields:?}"
            )]
        }
    };
    let mut problems = Vec::new();
    if !(0.0..=1.0).contains(&p_value) {
        problems.push(format!(
            "{here}: {what} always_valid_p_value {p_value} outside [0, 1]"
        ));
    }
    if !(low <= comparison.relative_improvement && comparison.relative_improvement <= high) {
        problems.push(format!(
            "{here}: {what} confidence sequence [{low}, {high}] misses the estimate {}",
            comparison.relative_improvement
        ));
    }
    if (p_value < ALPHA) != (low > 0.0 || high < 0.0) {
        problems.push(format!(
            "{here}: {what} always-valid p-value {p_value} disagrees with the sequence [{low}, {high}]"
        ));
    }
    problems
}

/// Panics with the first disagreements, if any.
pub fn assert_matches(
    actual: &ResultsResponse,
    expected: &OracleResults,
    keys: &[&str],
    context: &str,
) {
    let problems = compare(actual, expected, keys);
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(25).collect();
        panic!(
            "{context}: engine disagrees with the oracle in {} places, first ones:\n{}",
            problems.len(),
            shown
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
