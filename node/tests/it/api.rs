//! The HTTP API beyond ingest-and-results, against the real binary:
//!
//! - the time series agrees, point by point, with results queries over the
//!   same intervals, and its points add up to the whole range;
//! - reconfiguring a live project re-evaluates every retained visitor under
//!   the new settings (docs/semantics.md, "Configuration changes"), checked
//!   against the oracle with the new settings (a breakdown attribute added
//!   later has only `(none)` for them: unused attributes are not kept);
//! - `serve --demo` feeds a live experiment;
//! - `/v1/status` counts what was sent, and errors are JSON with stable codes.

use crate::support::node::{NodeOptions, RawResponse, TestNode};
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use chrono::{TimeZone, Utc};
use reqwest::StatusCode;
use sessiondb_protocol::{
    Decision, Event, EventType, ResultsResponse, TimeSeriesResponse, Timestamp, VariationResults,
};
use sessiondb_test_support::eventually;
use sessiondb_test_support::oracle::{
    assert_matches, close, Oracle, OracleResults, OracleSettings,
};
use std::collections::BTreeMap;
use std::time::Duration;

const KEYS: &[&str] = &["add_to_cart", "purchase", "signup"];
/// The two keys the time series is asked for.
const SERIES_KEYS: &[&str] = &["add_to_cart", "purchase"];
const BUCKET_MS: i64 = HOUR_MS;
/// Every test workload fits in this, so nothing freezes and every event
/// stays retained (and is re-evaluated by a configuration change).
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
const BATCH_WINDOW_MS: i64 = HOUR_MS;
const BATCH_EVENTS_MAX: usize = 5_000;
/// `limits::TIMESERIES_POINTS_MAX` (docs/api.md does not name it; the node
/// answers `too_many_points` above it).
const TIMESERIES_POINTS_MAX: i64 = 2_000;
/// Bound on `serve --demo` making its experiment live (a bound, not a
/// delay).
const DEMO_WAIT_MAX: Duration = Duration::from_secs(120);

fn utc_ms(y: i32, m: u32, d: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("a valid date")
        .timestamp_millis()
}

/// A workload of `visitors` visitors over `span_days` days from `base_ms`,
/// arriving at most a day late.
fn workload(seed: u64, project: &str, visitors: usize, base_ms: i64, span_days: i64) -> Workload {
    let mut config = WorkloadConfig::new(seed, project);
    config.visitors = visitors;
    config.base_ms = base_ms;
    config.span_ms = span_days * DAY_MS;
    config.max_delay_ms = DAY_MS;
    generate(&config)
}

// Events arrive at most a day late (`workload`), well inside the horizon.
const _: () = assert!(BATCH_WINDOW_MS + DAY_MS <= ALLOWED_LATENESS_MS);

/// Sends a workload in arrival order, the manual clock following arrival
/// time; every distinct event must be accepted once and every re-sent copy
/// reported as a duplicate. Leaves the clock just after the last event.
async fn ingest(node: &TestNode, workload: &Workload) {
    let (mut accepted, mut duplicates) = (0, 0);
    let mut rejected = Vec::new();
    for (clock_ms, events) in workload.batches(BATCH_WINDOW_MS, BATCH_EVENTS_MAX) {
        node.set_clock(clock_ms).await;
        let answer = node.send_batch(&events).await;
        accepted += answer.accepted;
        duplicates += answer.duplicates;
        rejected.extend(answer.rejected.into_iter().take(5));
    }
    assert!(rejected.is_empty(), "events rejected: {rejected:?}");
    assert_eq!(accepted, workload.distinct.len() as u64, "accepted");
    assert_eq!(duplicates, workload.resent_copies as u64, "duplicates");
    node.set_clock(workload.max_ts_ms() + MINUTE_MS).await;
}

fn floor_bucket(t: i64) -> i64 {
    t.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// The variations of a results answer without a breakdown, by name.
fn variations_by_name(results: &ResultsResponse) -> BTreeMap<&str, &VariationResults> {
    assert!(
        results.groups.len() <= 1,
        "a query without breakdown has at most one group: {results:?}"
    );
    results
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .map(|v| (v.variation.as_str(), v))
        .collect()
}

fn series_path(
    project: &str,
    experiment: &str,
    from: i64,
    to: i64,
    interval_ms: i64,
    keys: &[&str],
) -> String {
    format!(
        "/v1/projects/{project}/experiments/{experiment}/timeseries?from={from}&to={to}&interval_ms={interval_ms}&keys={}",
        keys.join(",")
    )
}

async fn series(
    node: &TestNode,
    project: &str,
    experiment: &str,
    from: i64,
    to: i64,
    interval_ms: i64,
    keys: &[&str],
) -> TimeSeriesResponse {
    let path = series_path(project, experiment, from, to, interval_ms, keys);
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "GET {path}: {}", raw.text);
    serde_json::from_value(raw.body)
        .unwrap_or_else(|e| panic!("GET {path}: not a TimeSeriesResponse ({e}): {}", raw.text))
}

/// Asserts an error answer: status, code, and a non-empty message.
fn assert_error(raw: &RawResponse, status: StatusCode, code: &str, what: &str) {
    assert_eq!(raw.status, status, "{what}: status, body {}", raw.text);
    assert_eq!(
        raw.error_code(),
        Some(code),
        "{what}: error code, body {}",
        raw.text
    );
    let message = raw.body.get("message").and_then(|m| m.as_str());
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{what}: an error carries a message: {}",
        raw.text
    );
}

fn error_message(raw: &RawResponse) -> &str {
    raw.body
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
}

/// Per-variation running sums of a series' points.
/// A time series with a breakdown has one group per breakdown value, each
/// adding up to the results' group; every point of a variation but the
/// baseline compares it cumulatively, and the last point's comparison is the
/// results' over the same range (docs/api.md, "Time series").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_follow_a_breakdown_and_compare_cumulatively() {
    let project = "series";
    let base_ms = utc_ms(2025, 11, 20);
    let workload = workload(11, project, 300, base_ms, 2);
    let node = TestNode::start(base_ms).await;
    node.create_project(
        project,
        serde_json::json!({"bucket_ms": BUCKET_MS, "allowed_lateness_ms": ALLOWED_LATENESS_MS}),
    )
    .await;
    ingest(&node, &workload).await;
    let (from, to) = (base_ms, base_ms + 2 * DAY_MS);
    let oracle = Oracle::new(OracleSettings::default(), &workload.distinct);
    let experiment = oracle
        .experiments()
        .into_iter()
        .next()
        .expect("an experiment");
    let path = series_path(project, &experiment, from, to, 6 * BUCKET_MS, SERIES_KEYS)
        + "&breakdown=browser";
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "GET {path}: {}", raw.text);
    let series: TimeSeriesResponse =
        serde_json::from_value(raw.body).expect("a TimeSeriesResponse");
    let results = node
        .results(project, &experiment, from, to, Some("browser"), SERIES_KEYS)
        .await;
    assert_eq!(series.breakdown.as_deref(), Some("browser"));
    assert!(series.variations.is_empty(), "{}", raw.text);
    let series_values: Vec<&Option<String>> =
        series.groups.iter().map(|g| &g.breakdown_value).collect();
    let results_values: Vec<&Option<String>> =
        results.groups.iter().map(|g| &g.breakdown_value).collect();
    assert_eq!(series_values, results_values);
    assert!(series.groups.len() > 1, "several browsers: {}", raw.text);
    let baseline = series.baseline.clone().expect("a baseline");
    assert_eq!(Some(&baseline), results.baseline.as_ref());
    let mut compared = 0;
    for (group, expected) in series.groups.iter().zip(&results.groups) {
        for variation in &group.variations {
            let want = expected
                .variation(&variation.variation)
                .expect("the variation");
            let visitors: i64 = variation.points.iter().map(|p| p.visitors).sum();
            assert_eq!(
                visitors, want.visitors,
                "{:?} {}",
                group.breakdown_value, variation.variation
            );
            let last = variation.points.last().expect("points");
            if variation.variation == baseline {
                assert!(variation.points.iter().all(|p| p.cumulative.is_empty()));
                continue;
            }
            assert!(variation
                .points
                .iter()
                .all(|p| p.cumulative.len() == SERIES_KEYS.len()));
            for (index, metrics) in want.metrics.iter().enumerate() {
                let cumulative = &last.cumulative[index];
                if let (Some(shown), Some(wanted)) =
                    (&cumulative.rate_comparison, &metrics.rate_comparison)
                {
                    assert!(
                        (shown.relative_improvement - wanted.relative_improvement).abs() < 1e-9
                    );
                    assert_eq!(shown.cs_low, wanted.cs_low);
                    assert_eq!(shown.cs_high, wanted.cs_high);
                    assert_eq!(shown.p_value_holm, None);
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 0, "some comparison to check: {}", raw.text);

    // An unknown breakdown or baseline is refused as for results.
    let raw = node
        .get_raw(
            &(series_path(project, &experiment, from, to, BUCKET_MS, SERIES_KEYS)
                + "&breakdown=nope"),
        )
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "unknown_breakdown",
        "breakdown",
    );
    let raw = node
        .get_raw(
            &(series_path(project, &experiment, from, to, BUCKET_MS, SERIES_KEYS)
                + "&baseline=nope"),
        )
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "unknown_baseline",
        "baseline",
    );
}

#[derive(Debug, Default, Clone, PartialEq)]
struct SeriesSums {
    visitors: i64,
    sessions: i64,
    total_conversions: Vec<i64>,
    unique_conversions: Vec<i64>,
    value_sum: Vec<f64>,
}

/// Checks one experiment's series over [from, to) at `interval_ms` against
/// results queries: each point against `results?from=ts&to=min(ts+interval,
/// to)`, and the sum of the points against the whole range.
async fn check_series_against_results(
    node: &TestNode,
    project: &str,
    experiment: &str,
    from: i64,
    to: i64,
    interval_ms: i64,
) {
    let context = format!("{experiment} [{from}, {to}) every {interval_ms} ms");
    let answer = series(
        node,
        project,
        experiment,
        from,
        to,
        interval_ms,
        SERIES_KEYS,
    )
    .await;
    assert_eq!(
        (answer.from, answer.to, answer.interval_ms),
        (from, to, interval_ms),
        "{context}: range echoed"
    );
    assert_eq!(answer.keys, SERIES_KEYS, "{context}: keys echoed");

    let whole = node
        .results(project, experiment, from, to, None, SERIES_KEYS)
        .await;
    let whole_variations = variations_by_name(&whole);
    let names: Vec<&str> = answer
        .variations
        .iter()
        .map(|v| v.variation.as_str())
        .collect();
    assert_eq!(
        names,
        whole_variations.keys().copied().collect::<Vec<_>>(),
        "{context}: the series has the variations of the results, sorted"
    );

    let expected_starts: Vec<i64> = (from..to)
        .step_by(usize::try_from(interval_ms).expect("positive"))
        .collect();
    let mut sums: BTreeMap<&str, SeriesSums> = BTreeMap::new();
    for variation in &answer.variations {
        let starts: Vec<i64> = variation.points.iter().map(|p| p.ts).collect();
        assert_eq!(
            starts, expected_starts,
            "{context}: {} has one point per interval",
            variation.variation
        );
    }
    for (index, &start) in expected_starts.iter().enumerate() {
        let end = (start + interval_ms).min(to);
        let point_results = node
            .results(project, experiment, start, end, None, SERIES_KEYS)
            .await;
        let by_name = variations_by_name(&point_results);
        for variation in &answer.variations {
            let name = variation.variation.as_str();
            let point = &variation.points[index];
            let here = format!("{context}: {name} point [{start}, {end})");
            let want = by_name.get(name).copied();
            assert_eq!(
                point.visitors,
                want.map_or(0, |v| v.visitors),
                "{here}: visitors"
            );
            assert_eq!(
                point.sessions,
                want.map_or(0, |v| v.sessions.sessions),
                "{here}: sessions"
            );
            for (k, key) in SERIES_KEYS.iter().enumerate() {
                let metrics = want.and_then(|v| v.metrics.iter().find(|m| m.key == *key));
                assert_eq!(
                    point.total_conversions.get(k).copied(),
                    Some(metrics.map_or(0, |m| m.total_conversions)),
                    "{here}: {key} total conversions"
                );
                assert_eq!(
                    point.unique_conversions.get(k).copied(),
                    Some(metrics.map_or(0, |m| m.unique_conversions)),
                    "{here}: {key} unique conversions"
                );
                assert_eq!(
                    point.value_sum.get(k).copied(),
                    Some(metrics.map_or(0.0, |m| m.value_sum)),
                    "{here}: {key} value sum"
                );
            }
            let sum = sums.entry(name).or_insert_with(|| SeriesSums {
                total_conversions: vec![0; SERIES_KEYS.len()],
                unique_conversions: vec![0; SERIES_KEYS.len()],
                value_sum: vec![0.0; SERIES_KEYS.len()],
                ..SeriesSums::default()
            });
            sum.visitors += point.visitors;
            sum.sessions += point.sessions;
            for k in 0..SERIES_KEYS.len() {
                sum.total_conversions[k] += point.total_conversions[k];
                sum.unique_conversions[k] += point.unique_conversions[k];
                sum.value_sum[k] += point.value_sum[k];
            }
        }
    }

    for (name, whole_variation) in &whole_variations {
        let sum = sums.get(name).cloned().unwrap_or_default();
        let here = format!("{context}: {name} summed over the points");
        assert_eq!(sum.visitors, whole_variation.visitors, "{here}: visitors");
        assert_eq!(
            sum.sessions, whole_variation.sessions.sessions,
            "{here}: sessions"
        );
        for (k, key) in SERIES_KEYS.iter().enumerate() {
            let metrics = whole_variation
                .metrics
                .iter()
                .find(|m| m.key == *key)
                .unwrap_or_else(|| panic!("{here}: key {key} missing from the results"));
            assert_eq!(
                sum.total_conversions[k], metrics.total_conversions,
                "{here}: {key} total conversions"
            );
            assert_eq!(
                sum.unique_conversions[k], metrics.unique_conversions,
                "{here}: {key} unique conversions"
            );
            assert!(
                close(sum.value_sum[k], metrics.value_sum),
                "{here}: {key} value sum {} vs {}",
                sum.value_sum[k],
                metrics.value_sum
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_agrees_with_results_over_each_interval() {
    let project = "series";
    let base_ms = utc_ms(2025, 11, 20);
    let days = 3;
    let workload = workload(11, project, 300, base_ms, days);
    let node = TestNode::start(base_ms).await;
    node.create_project(
        project,
        serde_json::json!({"bucket_ms": BUCKET_MS, "allowed_lateness_ms": ALLOWED_LATENESS_MS}),
    )
    .await;
    ingest(&node, &workload).await;

    // The whole workload, in whole days (so whole 6-hour intervals).
    let (from, to) = (base_ms, base_ms + days * DAY_MS);
    assert!(from <= workload.min_ts_ms() && workload.max_ts_ms() < to);
    let oracle = Oracle::new(OracleSettings::default(), &workload.distinct);
    let experiments: Vec<String> = oracle.experiments().into_iter().collect();
    assert!(!experiments.is_empty(), "the workload has experiments");

    for experiment in &experiments {
        // The results the series is checked against are themselves right,
        // and not trivially empty.
        let whole = node
            .results(project, experiment, from, to, None, SERIES_KEYS)
            .await;
        let expected = oracle.results(experiment, from, to, None, SERIES_KEYS);
        assert_matches(
            &whole,
            &expected,
            SERIES_KEYS,
            &format!("{experiment} whole range"),
        );
        let visitors: i64 = variations_by_name(&whole)
            .values()
            .map(|v| v.visitors)
            .sum();
        assert!(visitors > 50, "{experiment}: {visitors} visitors");

        for interval_ms in [BUCKET_MS, 6 * BUCKET_MS] {
            check_series_against_results(&node, project, experiment, from, to, interval_ms).await;
        }
        // A range that is not a whole number of intervals: the last point
        // stops at `to`.
        check_series_against_results(
            &node,
            project,
            experiment,
            base_ms + 5 * HOUR_MS,
            base_ms + 2 * DAY_MS + 9 * HOUR_MS,
            6 * BUCKET_MS,
        )
        .await;
    }

    // More than one point carries data, so the per-point checks mean
    // something.
    let hourly = series(
        &node,
        project,
        &experiments[0],
        from,
        to,
        BUCKET_MS,
        SERIES_KEYS,
    )
    .await;
    let busy_points = hourly
        .variations
        .iter()
        .flat_map(|v| &v.points)
        .filter(|p| p.visitors > 0 && p.total_conversions.iter().sum::<i64>() > 0)
        .count();
    assert!(busy_points > 5, "only {busy_points} points with data");

    // Intervals that are not a positive multiple of the bucket.
    let experiment = experiments[0].as_str();
    for interval_ms in [BUCKET_MS + 30 * MINUTE_MS, BUCKET_MS / 2, 0, -BUCKET_MS] {
        let raw = node
            .get_raw(&series_path(
                project,
                experiment,
                from,
                to,
                interval_ms,
                SERIES_KEYS,
            ))
            .await;
        assert_error(
            &raw,
            StatusCode::BAD_REQUEST,
            "invalid_interval",
            &format!("interval_ms {interval_ms}"),
        );
    }
    // One point too many at the bucket; the same range at two buckets is
    // fine.
    let long_to = from + (TIMESERIES_POINTS_MAX + 1) * BUCKET_MS;
    let raw = node
        .get_raw(&series_path(
            project,
            experiment,
            from,
            long_to,
            BUCKET_MS,
            SERIES_KEYS,
        ))
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "too_many_points",
        "2001 points",
    );
    let wide = series(
        &node,
        project,
        experiment,
        from,
        long_to,
        2 * BUCKET_MS,
        SERIES_KEYS,
    )
    .await;
    for variation in &wide.variations {
        assert_eq!(
            variation.points.len() as i64,
            TIMESERIES_POINTS_MAX / 2 + 1,
            "{}: points at two buckets",
            variation.variation
        );
    }
    let exactly_max_to = from + TIMESERIES_POINTS_MAX * BUCKET_MS;
    series(
        &node,
        project,
        experiment,
        from,
        exactly_max_to,
        BUCKET_MS,
        SERIES_KEYS,
    )
    .await;
}

/// Compares every experiment with the oracle over a few ranges, without a
/// breakdown and by each of `breakdowns`.
async fn assert_project_matches(
    node: &TestNode,
    project: &str,
    oracle: &Oracle,
    ranges: &[(i64, i64)],
    breakdowns: &[&str],
    stage: &str,
) {
    for experiment in oracle.experiments() {
        for &(from, to) in ranges {
            let mut asked: Vec<Option<&str>> = vec![None];
            asked.extend(breakdowns.iter().map(|b| Some(*b)));
            for breakdown in asked {
                let actual = node
                    .results(project, &experiment, from, to, breakdown, KEYS)
                    .await;
                let expected = oracle.results(&experiment, from, to, breakdown, KEYS);
                assert_matches(
                    &actual,
                    &expected,
                    KEYS,
                    &format!("{stage}: {experiment} [{from}, {to}) by {breakdown:?}"),
                );
            }
        }
    }
}

/// Sessions per cell over [from, to) for every experiment: what a settings
/// change must move for the comparison to mean something.
fn session_counts(oracle: &Oracle, from: i64, to: i64, breakdown: Option<&str>) -> Vec<i64> {
    oracle
        .experiments()
        .iter()
        .flat_map(|x| {
            let results: OracleResults = oracle.results(x, from, to, breakdown, KEYS);
            results
                .cells
                .values()
                .map(|c| c.sessions)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn patch_project(node: &TestNode, project: &str, patch: serde_json::Value) -> RawResponse {
    node.patch_raw(&format!("/v1/projects/{project}"), patch.to_string())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguring_a_live_project_re_evaluates_retained_visitors() {
    let project = "reconf";
    let base_ms = utc_ms(2025, 11, 20);
    let time_zone = chrono_tz::America::New_York;
    let mut config = WorkloadConfig::new(12, project);
    config.visitors = 400;
    config.base_ms = base_ms;
    config.span_ms = 3 * DAY_MS;
    config.max_delay_ms = DAY_MS;
    // Sessions straddle New York midnights, so turning the split on there
    // changes them.
    config.time_zone = time_zone;
    let workload = generate(&config);

    let node = TestNode::start(base_ms).await;
    let created = node
        .create_project(
            project,
            serde_json::json!({
                "session_gap_ms": 30 * MINUTE_MS,
                "bucket_ms": BUCKET_MS,
                "allowed_lateness_ms": ALLOWED_LATENESS_MS,
                "breakdown_attributes": ["browser", "device"],
            }),
        )
        .await;
    assert_eq!(created.settings.session_gap_ms, 30 * MINUTE_MS);
    ingest(&node, &workload).await;

    let (min_ts, max_ts) = (workload.min_ts_ms(), workload.max_ts_ms());
    let ranges = [
        (floor_bucket(min_ts), floor_bucket(max_ts) + BUCKET_MS),
        (base_ms + DAY_MS, base_ms + 2 * DAY_MS),
        (base_ms + 5 * HOUR_MS, base_ms + DAY_MS + 17 * HOUR_MS),
    ];
    let whole = ranges[0];
    let experiment = "exp-0";

    let settings_30 = OracleSettings::default();
    let oracle_30 = Oracle::new(settings_30.clone(), &workload.distinct);
    assert_project_matches(
        &node,
        project,
        &oracle_30,
        &ranges,
        &["browser"],
        "gap 30 min",
    )
    .await;

    // `country` is carried by the events but not (yet) a breakdown.
    let raw = node
        .get_raw(&TestNode::results_path(
            project,
            experiment,
            whole.0,
            whole.1,
            Some("country"),
            KEYS,
        ))
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "unknown_breakdown",
        "country before the patch",
    );

    // Refused patches change nothing.
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"bucket_ms": 30 * MINUTE_MS}),
    )
    .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "immutable_setting",
        "PATCH bucket_ms",
    );
    assert!(
        error_message(&raw).contains("bucket_ms"),
        "the message names the field: {}",
        raw.text
    );
    let raw = patch_project(&node, project, serde_json::json!({"hll_precision": 12})).await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "immutable_setting",
        "PATCH hll_precision",
    );
    let raw = patch_project(
        &node,
        "no-such-project",
        serde_json::json!({"session_gap_ms": 600_000}),
    )
    .await;
    assert_error(
        &raw,
        StatusCode::NOT_FOUND,
        "unknown_project",
        "PATCH unknown project",
    );
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"session_gap_ms": 10 * MINUTE_MS, "time_zone": "Mars/Olympus"}),
    )
    .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "invalid_settings",
        "PATCH time zone",
    );
    assert!(
        error_message(&raw).contains("time_zone"),
        "the message names the field: {}",
        raw.text
    );
    let unchanged = node.project(project).await.settings;
    assert_eq!(
        (
            unchanged.session_gap_ms,
            unchanged.bucket_ms,
            unchanged.time_zone.as_str()
        ),
        (30 * MINUTE_MS, BUCKET_MS, "UTC"),
        "refused patches change nothing"
    );
    assert_project_matches(
        &node,
        project,
        &oracle_30,
        &ranges[..1],
        &[],
        "after refused patches",
    )
    .await;

    // A shorter session gap.
    let settings_10 = OracleSettings {
        session_gap_ms: 10 * MINUTE_MS,
        ..settings_30.clone()
    };
    let oracle_10 = Oracle::new(settings_10.clone(), &workload.distinct);
    assert_ne!(
        session_counts(&oracle_30, whole.0, whole.1, None),
        session_counts(&oracle_10, whole.0, whole.1, None),
        "the workload has sessions a 10-minute gap splits"
    );
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"session_gap_ms": 10 * MINUTE_MS}),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "PATCH gap: {}", raw.text);
    assert_eq!(raw.body["settings"]["session_gap_ms"], 10 * MINUTE_MS);
    assert_eq!(
        node.project(project).await.settings.session_gap_ms,
        10 * MINUTE_MS
    );
    assert_project_matches(
        &node,
        project,
        &oracle_10,
        &ranges,
        &["browser"],
        "gap 10 min",
    )
    .await;

    // Midnight split in New York.
    let settings_split = OracleSettings {
        midnight_split: true,
        time_zone,
        ..settings_10.clone()
    };
    let oracle_split = Oracle::new(settings_split.clone(), &workload.distinct);
    assert_ne!(
        session_counts(&oracle_10, whole.0, whole.1, None),
        session_counts(&oracle_split, whole.0, whole.1, None),
        "the workload has sessions a New York midnight splits"
    );
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"midnight_split": true, "time_zone": "America/New_York"}),
    )
    .await;
    assert_eq!(
        raw.status,
        StatusCode::OK,
        "PATCH midnight split: {}",
        raw.text
    );
    let settings = node.project(project).await.settings;
    assert_eq!(
        (
            settings.midnight_split,
            settings.time_zone.as_str(),
            settings.session_gap_ms
        ),
        (true, "America/New_York", 10 * MINUTE_MS)
    );
    assert_project_matches(
        &node,
        project,
        &oracle_split,
        &ranges,
        &["device"],
        "gap 10 min, split at New York midnight",
    )
    .await;

    // A new breakdown attribute has values only from events sent after it:
    // attributes no breakdown uses are not kept (docs/ingest-formats.md,
    // "Attributes"), so every visitor so far is `(none)` for it.
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"breakdown_attributes": ["browser", "device", "country"]}),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "PATCH breakdowns: {}", raw.text);
    assert_eq!(
        raw.body["settings"]["breakdown_attributes"],
        serde_json::json!(["browser", "device", "country"])
    );
    assert_project_matches(
        &node,
        project,
        &oracle_split,
        &ranges,
        &["browser"],
        "country added",
    )
    .await;
    let visitors = |results: &ResultsResponse| -> Vec<(Option<String>, String, i64)> {
        results
            .groups
            .iter()
            .flat_map(|group| {
                group.variations.iter().map(|variation| {
                    (
                        group.breakdown_value.clone(),
                        variation.variation.clone(),
                        variation.visitors,
                    )
                })
            })
            .collect()
    };
    let total = node
        .results(project, experiment, whole.0, whole.1, None, KEYS)
        .await;
    let by_country = node
        .results(project, experiment, whole.0, whole.1, Some("country"), KEYS)
        .await;
    let expected: Vec<_> = visitors(&total)
        .into_iter()
        .map(|(_, variation, count)| (Some("(none)".to_string()), variation, count))
        .collect();
    assert!(!expected.is_empty(), "the experiment has visitors");
    assert_eq!(visitors(&by_country), expected, "country added");

    // And back to the settings the project was created with.
    let raw = patch_project(
        &node,
        project,
        serde_json::json!({"session_gap_ms": 30 * MINUTE_MS, "midnight_split": false, "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "PATCH back: {}", raw.text);
    assert_project_matches(
        &node,
        project,
        &oracle_30,
        &ranges,
        &["device"],
        "back to gap 30 min",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_feeds_a_live_experiment() {
    let node = TestNode::start_with_system_clock(
        NodeOptions {
            start_ms: 0,
            shards: None,
        },
        vec!["--demo".to_string()],
    )
    .await;
    // Really on the system clock: the test clock hook is off.
    let raw = node
        .post_admin(
            "/v1/admin/clock",
            serde_json::json!({"now_ms": 0}).to_string(),
        )
        .await;
    assert_error(
        &raw,
        StatusCode::NOT_FOUND,
        "clock_not_manual",
        "set the clock",
    );

    // The demo ticks every 250 ms: poll until both variations have visitors
    // and both keys have been seen.
    let path = "/v1/projects/demo/experiments/homepage/results";
    let results = eventually(DEMO_WAIT_MAX, "the demo experiment live", async || {
        let raw = node.get_raw(path).await;
        if raw.status != StatusCode::OK {
            // Before the first decision the experiment does not exist yet.
            assert!(
                matches!(
                    raw.error_code(),
                    Some("unknown_project" | "unknown_experiment")
                ),
                "unexpected answer while waiting: {} {}",
                raw.status,
                raw.text
            );
            return Err(raw.text);
        }
        let results: ResultsResponse = serde_json::from_value(raw.body.clone())
            .unwrap_or_else(|e| panic!("not a ResultsResponse ({e}): {}", raw.text));
        let variations = variations_by_name(&results);
        let live = ["control", "treatment"]
            .iter()
            .all(|name| variations.get(name).is_some_and(|v| v.visitors > 0));
        let keys_seen = ["signup", "purchase"]
            .iter()
            .all(|key| results.keys.iter().any(|k| k == key));
        // Enough visitors that the smallest breakdown value (6 % of them)
        // holds both variations beyond doubt (the chance that one is
        // missing is below 2^-100).
        let visitors: i64 = variations.values().map(|v| v.visitors).sum();
        if live && keys_seen && visitors >= DEMO_VISITORS_MIN {
            Ok(results)
        } else {
            Err(raw.text)
        }
    })
    .await;
    let variations = variations_by_name(&results);
    assert_eq!(
        variations.keys().copied().collect::<Vec<_>>(),
        ["control", "treatment"],
        "{results:?}"
    );
    assert!(variations.values().all(|v| v.visitors > 0), "{results:?}");
    for key in ["signup", "purchase"] {
        assert!(
            results.keys.iter().any(|k| k == key),
            "key {key}: {results:?}"
        );
    }
    assert_eq!(results.baseline.as_deref(), Some("control"));

    let demo = node.project("demo").await;
    assert!(demo.experiments.iter().any(|x| x == "homepage"), "{demo:?}");
    let status = node.get_raw("/v1/status").await;
    assert!(
        status.body["events_accepted"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        status.text
    );

    // The demo goes through the ingest path: its project's counter counts
    // its events, and agrees with the node's own count of accepted events
    // (the only events here) up to the one demo batch that may be between
    // the engine and the counter when they are read.
    let members = node.get_admin("/console/api/members").await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.text);
    let report = &members.body["members"][0]["report"];
    let accepted = report["status"]["events_accepted"]
        .as_u64()
        .expect("events_accepted");
    let demo_events = report["project_events"]
        .as_array()
        .expect("project_events")
        .iter()
        .find(|entry| entry["project"] == "demo")
        .and_then(|entry| entry["events"].as_u64())
        .unwrap_or_else(|| panic!("no counter for the demo project: {}", members.text));
    assert!(demo_events > 0, "{}", members.text);
    assert!(
        accepted.abs_diff(demo_events) <= DEMO_BATCH_EVENTS_MAX,
        "accepted {accepted}, counted for demo {demo_events}"
    );

    // Every offered breakdown is filled, independently of the variation:
    // each value holds visitors of both variations.
    assert_eq!(
        demo.settings.breakdown_attributes,
        ["browser", "device", "country", "campaign", "referrer"]
    );
    for attribute in &demo.settings.breakdown_attributes {
        let raw = node.get_raw(&format!("{path}?breakdown={attribute}")).await;
        assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
        let results: ResultsResponse = serde_json::from_value(raw.body.clone()).expect("results");
        let values: Vec<&str> = results
            .groups
            .iter()
            .filter_map(|group| group.breakdown_value.as_deref())
            .collect();
        assert!(
            values.len() >= 3 && !values.contains(&"(none)"),
            "{attribute}: {values:?}"
        );
        for group in &results.groups {
            let with_visitors = group.variations.iter().filter(|v| v.visitors > 0).count();
            assert!(
                with_visitors == 2,
                "{attribute} = {:?}: only one variation: {:?}",
                group.breakdown_value,
                group.variations
            );
        }
    }
}

/// Visitors the demo test waits for (the demo sends 160 a second).
const DEMO_VISITORS_MIN: i64 = 2_000;
/// Most events of one demo batch: 40 visitors of at most 7 events.
const DEMO_BATCH_EVENTS_MAX: u64 = 40 * 7;

fn event(id: &str, project: &str, visitor: &str, ts: i64) -> Event {
    Event {
        id: id.to_string(),
        project: project.to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(ts),
        event_type: EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_what_was_sent_and_errors_are_json() {
    // Half past ten: every event below falls in the 10:00 bucket.
    let now_ms = utc_ms(2025, 11, 20) + 10 * HOUR_MS + 30 * MINUTE_MS;
    let node = TestNode::start_with(NodeOptions {
        start_ms: now_ms,
        shards: Some(4),
    })
    .await;

    let status = node.get_raw("/v1/status").await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    let body = &status.body;
    assert_eq!(body["shards"], 4, "{}", status.text);
    assert_eq!(body["projects"], 0, "{}", status.text);
    assert_eq!(body["now_ms"], now_ms, "{}", status.text);
    for counter in [
        "events_accepted",
        "events_duplicate",
        "events_rejected",
        "retained_events",
    ] {
        assert_eq!(body[counter], 0, "{counter}: {}", status.text);
    }

    node.create_project("shop", serde_json::json!({})).await;
    node.create_project(
        "narrow",
        serde_json::json!({"breakdown_attributes": ["browser", "device"]}),
    )
    .await;

    // Three accepted (two visitors), a re-sent copy, and one for a project
    // that does not exist.
    let mut exposure = event("e-1", "shop", "v-1", now_ms - 5 * MINUTE_MS);
    exposure.event_type = EventType::Decision;
    exposure.decisions.push(Decision {
        experiment: "checkout".to_string(),
        variation: "b".to_string(),
    });
    exposure
        .attributes
        .insert("browser".to_string(), "firefox".to_string());
    let mut purchase = event("e-2", "shop", "v-1", now_ms - MINUTE_MS);
    purchase.event_type = EventType::Custom;
    purchase.key = Some("purchase".to_string());
    purchase.value = Some(12.5);
    let other = event("e-3", "shop", "v-2", now_ms - 2 * MINUTE_MS);
    let batch = vec![
        exposure.clone(),
        purchase,
        other,
        exposure,
        event("e-4", "no-such-project", "v-3", now_ms),
    ];
    let answer = node.send_batch(&batch).await;
    assert_eq!((answer.accepted, answer.duplicates), (3, 1), "{answer:?}");
    assert_eq!(answer.rejected.len(), 1, "{answer:?}");
    assert_eq!(
        (answer.rejected[0].index, answer.rejected[0].reason.as_str()),
        (4, "unknown_project"),
        "{answer:?}"
    );

    let status = node.get_raw("/v1/status").await;
    let body = &status.body;
    assert_eq!(body["projects"], 2, "{}", status.text);
    assert_eq!(
        (
            body["events_accepted"].as_u64(),
            body["events_duplicate"].as_u64(),
            body["events_rejected"].as_u64()
        ),
        (Some(3), Some(1), Some(1)),
        "{}",
        status.text
    );
    assert_eq!(body["retained_events"], 3, "{}", status.text);
    assert_eq!(body["live_visitors"], 2, "{}", status.text);

    // The events are visible to queries.
    let results = node
        .results(
            "shop",
            "checkout",
            floor_bucket(now_ms),
            floor_bucket(now_ms) + BUCKET_MS,
            None,
            &["purchase"],
        )
        .await;
    let variations = variations_by_name(&results);
    let b = variations.get("b").expect("variation b");
    assert_eq!(b.visitors, 1);
    assert_eq!(b.metrics[0].total_conversions, 1);
    assert_eq!(b.metrics[0].value_sum, 12.5);

    // Unknown endpoints, whatever the method.
    for raw in [
        node.get_raw("/v1/no-such-endpoint").await,
        node.get_raw("/v2/status").await,
        node.post_raw("/v1/projects/shop/nothing", "{}").await,
    ] {
        assert_error(&raw, StatusCode::NOT_FOUND, "not_found", "unknown endpoint");
    }

    // A breakdown the project does not offer: the message lists what it does.
    let from = floor_bucket(now_ms);
    let raw = node
        .get_raw(&TestNode::results_path(
            "shop",
            "checkout",
            from,
            from + BUCKET_MS,
            Some("plan"),
            &[],
        ))
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "unknown_breakdown",
        "breakdown plan",
    );
    let message = error_message(&raw);
    for attribute in ["browser", "device", "country", "campaign", "referrer"] {
        assert!(
            message.contains(attribute),
            "the message lists {attribute}: {message}"
        );
    }
    let mut narrow_exposure = event("n-1", "narrow", "v-9", now_ms - MINUTE_MS);
    narrow_exposure.decisions.push(Decision {
        experiment: "checkout".to_string(),
        variation: "a".to_string(),
    });
    let answer = node.send_batch(&[narrow_exposure]).await;
    assert_eq!(answer.accepted, 1, "{answer:?}");
    let raw = node
        .get_raw(&TestNode::results_path(
            "narrow",
            "checkout",
            from,
            from + BUCKET_MS,
            Some("country"),
            &[],
        ))
        .await;
    assert_error(
        &raw,
        StatusCode::BAD_REQUEST,
        "unknown_breakdown",
        "narrow by country",
    );
    let message = error_message(&raw);
    assert!(
        message.contains("browser") && message.contains("device") && !message.contains("campaign"),
        "the message lists exactly the project's attributes: {message}"
    );
}
