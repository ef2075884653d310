//! The engine, run as the real binary over HTTP, against the oracle.
//!
//! Each case generates a few thousand visitors' events, sends them to two
//! projects (midnight split off and on) in a shuffled arrival order with
//! re-sent duplicates and late decisions, advancing the manual clock as
//! arrival time passes, and then compares every exact metric with the
//! oracle over several bucket-aligned ranges, with and without a breakdown.
//! Then it moves the clock far enough for every session to freeze and checks
//! that nothing changed.

use crate::support::node::{NodeOptions, TestNode};
use crate::support::workload::{
    generate, with_project, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS,
};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use sessiondb_protocol::{Event, EventType, Timestamp};
use sessiondb_test_support::oracle::{assert_matches, Oracle, OracleSettings};

const KEYS: &[&str] = &["add_to_cart", "purchase", "signup"];
const BREAKDOWNS: &[&str] = &["browser", "device", "country", "campaign"];
const BUCKET_MS: i64 = HOUR_MS;
const SESSION_GAP_MS: i64 = 30 * MINUTE_MS;
/// Batches cover at most this much arrival time, so that with the clock set
/// to a batch's last arrival no event is older than
/// `BATCH_WINDOW_MS + max_delay_ms`.
const BATCH_WINDOW_MS: i64 = HOUR_MS;
const BATCH_EVENTS_MAX: usize = 5_000;

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    visitors: usize,
    time_zone: Tz,
    /// First event time (UTC midnight).
    base_ms: i64,
    allowed_lateness_ms: i64,
    /// Bound on how late an event arrives; below the lateness so nothing is
    /// rejected.
    max_delay_ms: i64,
    shards: Option<u32>,
}

/// A project under test: its name, the settings sent at creation, and the
/// same settings for the oracle.
struct ProjectUnderTest {
    name: &'static str,
    settings: serde_json::Value,
    oracle_settings: OracleSettings,
}

fn projects(case: &Case) -> Vec<ProjectUnderTest> {
    let tz_name = case.time_zone.name();
    let common = |max_ms: i64, midnight: bool| {
        serde_json::json!({
            "session_gap_ms": SESSION_GAP_MS,
            "session_max_ms": max_ms,
            "midnight_split": midnight,
            "time_zone": tz_name,
            "allowed_lateness_ms": case.allowed_lateness_ms,
            "bucket_ms": BUCKET_MS,
        })
    };
    vec![
        ProjectUnderTest {
            name: "split-off",
            settings: common(2 * HOUR_MS, false),
            oracle_settings: OracleSettings {
                session_gap_ms: SESSION_GAP_MS,
                session_max_ms: 2 * HOUR_MS,
                midnight_split: false,
                time_zone: case.time_zone,
            },
        },
        ProjectUnderTest {
            name: "split-on",
            settings: common(4 * HOUR_MS, true),
            oracle_settings: OracleSettings {
                session_gap_ms: SESSION_GAP_MS,
                session_max_ms: 4 * HOUR_MS,
                midnight_split: true,
                time_zone: case.time_zone,
            },
        },
    ]
}

fn utc_ms(y: i32, m: u32, d: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("a valid date")
        .timestamp_millis()
}

/// Bucket-aligned ranges: everything, the cumulative view up to day 2, a
/// stretch starting mid-day, a single bucket, and one UTC day.
fn ranges(base_ms: i64, min_ts: i64, max_ts: i64) -> Vec<(i64, i64)> {
    let floor = |t: i64| t.div_euclid(BUCKET_MS) * BUCKET_MS;
    vec![
        (floor(min_ts), floor(max_ts) + BUCKET_MS),
        (floor(min_ts), base_ms + 2 * DAY_MS),
        (
            base_ms + DAY_MS + 5 * HOUR_MS,
            base_ms + 3 * DAY_MS + 7 * HOUR_MS,
        ),
        (
            base_ms + 2 * DAY_MS + 13 * HOUR_MS,
            base_ms + 2 * DAY_MS + 14 * HOUR_MS,
        ),
        (base_ms + 4 * DAY_MS, base_ms + 5 * DAY_MS),
    ]
}

/// Compares every experiment of every project with the oracle: all ranges
/// without a breakdown, and the first and third range by each attribute.
async fn assert_all_results_match(
    node: &TestNode,
    oracles: &[(&str, Oracle)],
    ranges: &[(i64, i64)],
    experiments: &[String],
    stage: &str,
) {
    for (project, oracle) in oracles {
        for experiment in experiments {
            for (index, &(from, to)) in ranges.iter().enumerate() {
                let mut breakdowns: Vec<Option<&str>> = vec![None];
                if index == 0 || index == 2 {
                    breakdowns.extend(BREAKDOWNS.iter().map(|b| Some(*b)));
                }
                for breakdown in breakdowns {
                    let actual = node
                        .results(project, experiment, from, to, breakdown, KEYS)
                        .await;
                    let expected = oracle.results(experiment, from, to, breakdown, KEYS);
                    let context = format!(
                        "{stage}: project {project}, experiment {experiment}, [{from}, {to}), breakdown {breakdown:?}"
                    );
                    assert_matches(&actual, &expected, KEYS, &context);
                    let baseline = expected.variations.iter().next().cloned();
                    assert_eq!(actual.baseline, baseline, "{context}: default baseline");
                }
            }
        }
    }
}

async fn engine_agrees_with_oracle(case: Case) {
    let mut config = WorkloadConfig::new(case.seed, "placeholder");
    config.visitors = case.visitors;
    config.base_ms = case.base_ms;
    config.span_ms = 6 * DAY_MS;
    config.session_gap_ms = SESSION_GAP_MS;
    config.time_zone = case.time_zone;
    config.max_delay_ms = case.max_delay_ms;
    let workload = generate(&config);
    assert!(
        BATCH_WINDOW_MS + case.max_delay_ms <= case.allowed_lateness_ms,
        "the case must keep every event inside the horizon"
    );

    let node = TestNode::start_with(NodeOptions {
        start_ms: case.base_ms,
        shards: case.shards,
    })
    .await;
    let projects = projects(&case);
    for project in &projects {
        node.create_project(project.name, project.settings.clone())
            .await;
    }

    // Ingest in arrival order, the clock following arrival time.
    let mut accepted = vec![0u64; projects.len()];
    let mut duplicates = vec![0u64; projects.len()];
    let mut rejected = Vec::new();
    for (clock_ms, events) in workload.batches(BATCH_WINDOW_MS, BATCH_EVENTS_MAX) {
        node.set_clock(clock_ms).await;
        for (p, project) in projects.iter().enumerate() {
            let answer = node.send_batch(&with_project(&events, project.name)).await;
            accepted[p] += answer.accepted;
            duplicates[p] += answer.duplicates;
            rejected.extend(
                answer
                    .rejected
                    .into_iter()
                    .take(5)
                    .map(|r| (project.name, r)),
            );
        }
    }
    assert!(rejected.is_empty(), "events rejected: {rejected:?}");
    for (p, project) in projects.iter().enumerate() {
        assert_eq!(
            accepted[p],
            workload.distinct.len() as u64,
            "{}: every distinct event is accepted once",
            project.name
        );
        assert_eq!(
            duplicates[p], workload.resent_copies as u64,
            "{}: every re-sent copy is reported as a duplicate",
            project.name
        );
    }

    let max_ts = workload.max_ts_ms();
    node.set_clock(max_ts + MINUTE_MS).await;

    let oracles: Vec<(&str, Oracle)> = projects
        .iter()
        .map(|p| {
            (
                p.name,
                Oracle::new(p.oracle_settings.clone(), &workload.distinct),
            )
        })
        .collect();
    let experiments: Vec<String> = oracles[0].1.experiments().into_iter().collect();
    assert_eq!(
        experiments,
        config.experiment_names(),
        "the workload exposes visitors to every experiment"
    );
    for project in &projects {
        let mut listed = node.project(project.name).await.experiments;
        listed.sort();
        assert_eq!(listed, experiments, "{}: experiments listed", project.name);
    }

    let ranges = ranges(case.base_ms, workload.min_ts_ms(), max_ts);
    assert_all_results_match(&node, &oracles, &ranges, &experiments, "after ingest").await;

    // Freeze everything: move past lateness + gap and touch the node with a
    // harmless event of a visitor the workload never used.
    let frozen_clock = max_ts + case.allowed_lateness_ms + SESSION_GAP_MS + DAY_MS;
    node.set_clock(frozen_clock).await;
    for project in &projects {
        let nudge = Event {
            id: "freeze-nudge".to_string(),
            project: project.name.to_string(),
            visitor: "freeze-nudge-visitor".to_string(),
            ts: Timestamp::Milliseconds(frozen_clock),
            event_type: EventType::Pageview,
            key: None,
            value: None,
            attributes: Default::default(),
            decisions: Vec::new(),
        };
        let answer = node.send_batch(&[nudge]).await;
        assert_eq!(
            (answer.accepted, answer.rejected.len()),
            (1, 0),
            "{answer:?}"
        );
    }
    // Setting the clock runs maintenance before answering, so by now every
    // workload session is frozen: only the two nudge events stay retained.
    let status = node.get_raw("/v1/status").await.body;
    assert_eq!(
        status["retained_events"],
        serde_json::json!(projects.len()),
        "every workload session froze: {status}"
    );
    assert_all_results_match(&node, &oracles, &ranges, &experiments, "after freezing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_matches_oracle_in_utc_with_a_week_of_lateness() {
    engine_agrees_with_oracle(Case {
        seed: 1,
        visitors: 3_000,
        time_zone: chrono_tz::UTC,
        base_ms: utc_ms(2025, 11, 20),
        allowed_lateness_ms: 7 * DAY_MS,
        max_delay_ms: 6 * DAY_MS,
        shards: None,
    })
    .await;
}

/// Berlin changes to summer time on 2025-03-30: a 23-hour local day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_matches_oracle_across_a_dst_change_in_berlin_on_four_shards() {
    engine_agrees_with_oracle(Case {
        seed: 2,
        visitors: 3_000,
        time_zone: chrono_tz::Europe::Berlin,
        base_ms: utc_ms(2025, 3, 27),
        allowed_lateness_ms: 7 * DAY_MS,
        max_delay_ms: 6 * DAY_MS,
        shards: Some(4),
    })
    .await;
}

/// Kolkata is UTC+05:30: local midnights fall in the middle of UTC buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_matches_oracle_with_half_hour_offset_midnights() {
    engine_agrees_with_oracle(Case {
        seed: 3,
        visitors: 3_000,
        time_zone: chrono_tz::Asia::Kolkata,
        base_ms: utc_ms(2025, 6, 10),
        allowed_lateness_ms: 7 * DAY_MS,
        max_delay_ms: 6 * DAY_MS,
        shards: None,
    })
    .await;
}

/// A one-day horizon over six days of events: sessions freeze while later
/// events and late decisions are still arriving. New York leaves summer time
/// on 2025-11-02 (a 25-hour local day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_matches_oracle_while_sessions_freeze_during_ingest() {
    engine_agrees_with_oracle(Case {
        seed: 4,
        visitors: 3_000,
        time_zone: chrono_tz::America::New_York,
        base_ms: utc_ms(2025, 10, 30),
        allowed_lateness_ms: DAY_MS,
        max_delay_ms: 20 * HOUR_MS,
        shards: None,
    })
    .await;
}
