//! The exact results every system must agree on, in one shape: SessionDB's
//! answers are converted into it, `bench/peers.py` prints it.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use sessiondb_client::protocol::ResultsResponse;
use std::collections::BTreeMap;

/// Exact metrics of one variation over the whole range, on `purchase`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactCell {
    pub visitors: i64,
    pub conflicts: i64,
    pub total_conversions: i64,
    pub unique_conversions: i64,
    /// Minor units (the workload's values are integers).
    pub value_sum: i64,
    /// Σ per visitor (their purchase value sum)²; may exceed 2⁵³, so it is
    /// compared with a relative tolerance of 1e-12 (SessionDB answers f64).
    pub value_sum_squares: f64,
    pub sessions: i64,
    pub bounced_sessions: i64,
    pub duration_ms_sum: i64,
    pub pageviews_sum: i64,
    pub sessions_with_conversion: i64,
    /// Visitors per browser value (`(none)` included).
    pub browsers: BTreeMap<String, i64>,
}

/// Per variation.
pub type ExactResults = BTreeMap<String, ExactCell>;

/// SessionDB's answer without breakdown and by browser, as `ExactResults`.
pub fn from_results(whole: &ResultsResponse, by_browser: &ResultsResponse) -> Result<ExactResults> {
    let mut out = ExactResults::new();
    ensure!(whole.groups.len() == 1, "one group without breakdown");
    for variation in &whole.groups[0].variations {
        let key = variation.metrics.first();
        let value_sum = key.map(|k| k.value_sum).unwrap_or(0.0);
        ensure!(value_sum.fract() == 0.0, "integer value sums");
        out.insert(
            variation.variation.clone(),
            ExactCell {
                visitors: variation.visitors,
                conflicts: variation.conflicts,
                total_conversions: key.map(|k| k.total_conversions).unwrap_or(0),
                unique_conversions: key.map(|k| k.unique_conversions).unwrap_or(0),
                value_sum: value_sum as i64,
                value_sum_squares: key.map(|k| k.value_sum_squares).unwrap_or(0.0),
                sessions: variation.sessions.sessions,
                bounced_sessions: variation.sessions.bounced_sessions,
                duration_ms_sum: variation.sessions.duration_ms_sum,
                pageviews_sum: variation.sessions.pageviews_sum,
                sessions_with_conversion: key.map(|k| k.sessions_with_conversion).unwrap_or(0),
                browsers: BTreeMap::new(),
            },
        );
    }
    for group in &by_browser.groups {
        let browser = group.breakdown_value.clone().unwrap_or_default();
        for variation in &group.variations {
            if variation.visitors == 0 {
                continue;
            }
            out.entry(variation.variation.clone())
                .or_default()
                .browsers
                .insert(browser.clone(), variation.visitors);
        }
    }
    Ok(out)
}

/// Every difference between two answers, as readable lines; empty when
/// they agree.
pub fn differences(
    left_name: &str,
    left: &ExactResults,
    right_name: &str,
    right: &ExactResults,
) -> Vec<String> {
    let mut out = Vec::new();
    let variations: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let empty = ExactCell::default();
    for variation in variations {
        let a = left.get(variation).unwrap_or(&empty);
        let b = right.get(variation).unwrap_or(&empty);
        let mut check = |metric: &str, x: i64, y: i64| {
            if x != y {
                out.push(format!(
                    "{variation} {metric}: {left_name} {x}, {right_name} {y}"
                ));
            }
        };
        check("visitors", a.visitors, b.visitors);
        check("conflicts", a.conflicts, b.conflicts);
        check(
            "total_conversions",
            a.total_conversions,
            b.total_conversions,
        );
        check(
            "unique_conversions",
            a.unique_conversions,
            b.unique_conversions,
        );
        check("value_sum", a.value_sum, b.value_sum);
        check("sessions", a.sessions, b.sessions);
        check("bounced_sessions", a.bounced_sessions, b.bounced_sessions);
        check("duration_ms_sum", a.duration_ms_sum, b.duration_ms_sum);
        check("pageviews_sum", a.pageviews_sum, b.pageviews_sum);
        check(
            "sessions_with_conversion",
            a.sessions_with_conversion,
            b.sessions_with_conversion,
        );
        let browsers: std::collections::BTreeSet<&String> =
            a.browsers.keys().chain(b.browsers.keys()).collect();
        for browser in browsers {
            let x = a.browsers.get(browser).copied().unwrap_or(0);
            let y = b.browsers.get(browser).copied().unwrap_or(0);
            check(&format!("visitors[browser={browser}]"), x, y);
        }
        let scale = a
            .value_sum_squares
            .abs()
            .max(b.value_sum_squares.abs())
            .max(1.0);
        if (a.value_sum_squares - b.value_sum_squares).abs() / scale > 1e-12 {
            out.push(format!(
                "{variation} value_sum_squares: {left_name} {}, {right_name} {}",
                a.value_sum_squares, b.value_sum_squares
            ));
        }
    }
    out
}
