//! `GET /metrics` and `GET /v1/ready` against the real binary:
//!
//! - `/metrics` needs the admin token (401 without it);
//! - its body is valid Prometheus text exposition (0.0.4): HELP and TYPE
//!   before each family's samples, every sample `name{labels} value`,
//!   histogram buckets cumulative and ending at `+Inf` equal to `_count`;
//! - the ingest counters report exactly the accepted, duplicate and rejected
//!   events sent, rejections by reason; a results query shows in the query
//!   histogram; a checkpoint in the checkpoint gauges;
//! - a bootstrapped single node is ready.

use crate::support::node::{NodeOptions, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Event, EventType, Timestamp};
use sessiondb_test_support::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
/// 2025-11-20 10:30 UTC.
const NOW_MS: i64 = 1_763_634_600_000;

/// A parsed exposition: sample values by name and sorted labels, and the
/// type of each family.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.samples))
    }

    /// Samples of a family whose name is `name`, with their labels.
    fn with_name(&self, name: &str) -> Vec<(&Vec<(String, String)>, f64)> {
        self.samples
            .iter()
            .filter(|((sample, _), _)| sample == name)
            .map(|((_, labels), value)| (labels, *value))
            .collect()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `k="v",k2="v2"` (values with `\"`, `\\`, `\n` escapes).
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\": {line}"));
        assert!(is_metric_name(name), "bad label name {name:?}: {line}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape: {line}"),
                },
                Some((index, '"')) => break index,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels.sort();
    labels
}

/// The family a sample belongs to (histogram samples carry a suffix).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|kind| kind == "histogram") {
                return base;
            }
        }
    }
    name
}

/// Parses an exposition body, asserting the format rules on the way.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut helped = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    assert!(text.ends_with('\n'), "the body ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            assert!(is_metric_name(name), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                scrape
                    .types
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "TYPE twice: {line}"
            );
            if let Some(previous) = current.replace(name.to_string()) {
                finished.insert(previous);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        assert!(!line.is_empty(), "empty line in the body");
        let (series, value) = line.rsplit_once(' ').expect("sample: name value");
        let value = parse_value(value).unwrap_or_else(|| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, parse_labels(labels, line))
            }
            None => (series, Vec::new()),
        };
        assert!(is_metric_name(name), "bad metric name: {line}");
        let family = family_of(name, &scrape.types);
        assert!(
            scrape.types.contains_key(family),
            "sample before its TYPE: {line}"
        );
        assert_eq!(
            current.as_deref(),
            Some(family),
            "sample outside its family's block: {line}"
        );
        assert!(!finished.contains(family), "{line}");
        let key = (name.to_string(), labels);
        assert!(
            scrape.samples.insert(key, value).is_none(),
            "duplicate sample: {line}"
        );
    }
    check_histograms(&scrape);
    scrape
}

/// Buckets ascend in `le`, counts never decrease, and the last bucket is
/// `+Inf` with the family's `_count`.
fn check_histograms(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = scrape
            .with_name(&format!("{family}_bucket"))
            .into_iter()
            .map(|(labels, count)| {
                assert_eq!(labels.len(), 1, "{family}: buckets carry only `le`");
                assert_eq!(labels[0].0, "le", "{family}");
                let le = parse_value(&labels[0].1).expect("a numeric le");
                (le, count)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() >= 2, "{family}: {buckets:?}");
        for pair in buckets.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "{family}: not cumulative {buckets:?}"
            );
        }
        let (last_le, last_count) = *buckets.last().expect("buckets");
        assert_eq!(last_le, f64::INFINITY, "{family}: ends with +Inf");
        assert_eq!(
            last_count,
            scrape.get(&format!("{family}_count"), &[]),
            "{family}: +Inf bucket equals _count"
        );
        assert!(scrape.get(&format!("{family}_sum"), &[]) >= 0.0, "{family}");
    }
}

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

/// Bound on a fresh node becoming ready: it listens before its placement
/// bootstrap finishes, so the first answers may be 503.
const READY_WAIT_MAX: Duration = Duration::from_secs(60);

/// Polls `/v1/ready` until it answers 200 (bounded); every earlier answer
/// must be a well-formed 503 with a documented reason.
async fn wait_until_ready(node: &TestNode) -> serde_json::Value {
    eventually(READY_WAIT_MAX, "ready", async || {
        let ready = node.get_raw("/v1/ready").await;
        if ready.status == StatusCode::OK {
            return Ok(ready.body);
        }
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            ready.text
        );
        assert_eq!(ready.body["ready"], false, "{}", ready.text);
        let reason = ready.body["reason"].as_str().unwrap_or_default();
        assert!(
            ["not_a_member", "no_leader", "shards_not_owned"].contains(&reason),
            "{}",
            ready.text
        );
        Err(ready.text)
    })
    .await
}

async fn scrape(node: &TestNode) -> Scrape {
    let raw = node.get_admin("/metrics").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    parse(&raw.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_and_count_what_was_sent() {
    let node = TestNode::start_with(NodeOptions {
        start_ms: NOW_MS,
        shards: Some(4),
    })
    .await;

    let anonymous = node.get_anonymous("/metrics").await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text
    );
    assert_eq!(
        anonymous.error_code(),
        Some("unauthorized"),
        "{}",
        anonymous.text
    );
    let wrong = node
        .get_with_headers("/metrics", &[("authorization", "Bearer not-the-token")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text);

    let before = scrape(&node).await;
    for outcome in ["accepted", "duplicate", "rejected"] {
        assert_eq!(
            before.get("sessiondb_ingest_events_total", &[("outcome", outcome)]),
            0.0,
            "{outcome}"
        );
    }
    assert!(before
        .with_name("sessiondb_ingest_rejections_total")
        .is_empty());
    assert_eq!(
        before.get("sessiondb_query_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(before.get("sessiondb_live_visitors", &[]), 0.0);
    assert_eq!(
        before.get("sessiondb_memory_bytes_per_visitor_estimate", &[]),
        0.0
    );
    for (family, kind) in [
        ("sessiondb_ingest_events_total", "counter"),
        ("sessiondb_ingest_rejections_total", "counter"),
        ("sessiondb_ingest_batches_total", "counter"),
        ("sessiondb_log_fsyncs_total", "counter"),
        ("sessiondb_log_records_total", "counter"),
        ("sessiondb_log_fsync_seconds", "histogram"),
        ("sessiondb_log_group_records_max", "gauge"),
        ("sessiondb_actor_queue_depth", "gauge"),
        ("sessiondb_live_visitors", "gauge"),
        ("sessiondb_retained_events", "gauge"),
        ("sessiondb_segment_cells", "gauge"),
        ("sessiondb_checkpoint_duration_seconds", "gauge"),
        ("sessiondb_checkpoint_bytes", "gauge"),
        ("sessiondb_checkpoint_position", "gauge"),
        ("sessiondb_storage_failed", "gauge"),
        ("sessiondb_recovery_checkpoints_skipped", "gauge"),
        ("sessiondb_recovery_log_bytes_cut", "gauge"),
        ("sessiondb_query_duration_seconds", "histogram"),
        ("sessiondb_raft_term", "gauge"),
        ("sessiondb_raft_leader", "gauge"),
        ("sessiondb_raft_applied_index", "gauge"),
        ("sessiondb_memory_bytes_per_visitor_estimate", "gauge"),
        ("sessiondb_actor_queue_depth_max", "gauge"),
        ("sessiondb_log_queued_records", "gauge"),
        ("sessiondb_requests_refused_total", "counter"),
        ("sessiondb_raft_last_log_index", "gauge"),
        ("sessiondb_shard_moves_total", "counter"),
        ("sessiondb_shard_move_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    for actor in ["session", "segment"] {
        assert!(before
            .value("sessiondb_actor_queue_depth", &[("actor", actor)])
            .is_some());
        assert!(before
            .value("sessiondb_actor_queue_depth_max", &[("actor", actor)])
            .is_some());
    }
    // Nothing refused and no shard moved yet; every limit has its series.
    for limit in [
        "in_flight",
        "rate",
        "overloaded",
        "query_cost",
        "body_bytes",
        "decompressed_body_bytes",
        "content_encoding",
    ] {
        assert_eq!(
            before.get("sessiondb_requests_refused_total", &[("limit", limit)]),
            0.0,
            "{limit}"
        );
    }
    for outcome in ["committed", "failed"] {
        assert_eq!(
            before.get("sessiondb_shard_moves_total", &[("outcome", outcome)]),
            0.0
        );
    }
    assert_eq!(
        before.get("sessiondb_shard_move_duration_seconds_count", &[]),
        0.0
    );
    // Once ready, the bootstrapped node leads its own cluster.
    wait_until_ready(&node).await;
    // Ready means a leader is known; the leader's first entry may be
    // applied a moment later (bounded polling).
    let raft = eventually(READY_WAIT_MAX, "an applied entry", async || {
        let raft = scrape(&node).await;
        let applied = raft.get("sessiondb_raft_applied_index", &[]);
        if applied >= 1.0 {
            Ok(raft)
        } else {
            Err(format!("sessiondb_raft_applied_index {applied}"))
        }
    })
    .await;
    assert_eq!(raft.get("sessiondb_raft_leader", &[]), 1.0);
    assert!(raft.get("sessiondb_raft_term", &[]) >= 1.0);
    assert!(
        raft.get("sessiondb_raft_last_log_index", &[])
            >= raft.get("sessiondb_raft_applied_index", &[])
    );

    node.create_project("shop", serde_json::json!({})).await;
    let batches_before = before.get("sessiondb_ingest_batches_total", &[]);

    // First batch: 3 accepted (two visitors), 1 duplicate, 2 unknown_project.
    let first = vec![
        event("e-1", "shop", "v-1", NOW_MS - 5 * MINUTE_MS),
        event("e-2", "shop", "v-1", NOW_MS - MINUTE_MS),
        event("e-3", "shop", "v-2", NOW_MS - 2 * MINUTE_MS),
        event("e-1", "shop", "v-1", NOW_MS - 5 * MINUTE_MS),
        event("e-4", "no-such-project", "v-3", NOW_MS),
        event("e-5", "no-such-project", "v-3", NOW_MS),
    ];
    let answer = node.send_batch(&first).await;
    assert_eq!((answer.accepted, answer.duplicates), (3, 1), "{answer:?}");
    assert_eq!(answer.rejected.len(), 2, "{answer:?}");
    // Second batch: a re-sent copy (duplicate), one new event, an empty id.
    let second = vec![
        event("e-2", "shop", "v-1", NOW_MS - MINUTE_MS),
        event("e-6", "shop", "v-2", NOW_MS),
        event("", "shop", "v-4", NOW_MS),
    ];
    let answer = node.send_batch(&second).await;
    assert_eq!((answer.accepted, answer.duplicates), (1, 1), "{answer:?}");
    assert_eq!(answer.rejected.len(), 1, "{answer:?}");
    assert_eq!(answer.rejected[0].reason, "empty_id", "{answer:?}");

    let after = scrape(&node).await;
    let events = |outcome| after.get("sessiondb_ingest_events_total", &[("outcome", outcome)]);
    assert_eq!(
        (events("accepted"), events("duplicate"), events("rejected")),
        (4.0, 2.0, 3.0)
    );
    let rejections: BTreeMap<String, f64> = after
        .with_name("sessiondb_ingest_rejections_total")
        .into_iter()
        .map(|(labels, value)| {
            assert_eq!(labels.len(), 1);
            assert_eq!(labels[0].0, "reason");
            (labels[0].1.clone(), value)
        })
        .collect();
    assert_eq!(
        rejections,
        BTreeMap::from([
            ("empty_id".to_string(), 1.0),
            ("unknown_project".to_string(), 2.0)
        ])
    );
    assert_eq!(
        after.get("sessiondb_ingest_batches_total", &[]) - batches_before,
        2.0
    );
    assert_eq!(after.get("sessiondb_live_visitors", &[]), 2.0);
    assert_eq!(after.get("sessiondb_retained_events", &[]), 4.0);
    assert!(after.get("sessiondb_memory_bytes_per_visitor_estimate", &[]) > 0.0);
    // Every batch with an accepted event went through the log and a sync.
    assert!(after.get("sessiondb_log_records_total", &[]) >= 2.0);
    let fsyncs = after.get("sessiondb_log_fsyncs_total", &[]);
    assert!(fsyncs >= 2.0);
    assert_eq!(after.get("sessiondb_log_fsync_seconds_count", &[]), fsyncs);
    assert!(after.get("sessiondb_log_group_records_max", &[]) >= 1.0);

    // A results query lands in the query histogram.
    let bucket = NOW_MS.div_euclid(HOUR_MS) * HOUR_MS;
    let path = TestNode::results_path("shop", "checkout", bucket, bucket + HOUR_MS, None, &[]);
    let raw = node.get_raw(&path).await;
    assert!(
        raw.status == StatusCode::OK || raw.status == StatusCode::NOT_FOUND,
        "{}",
        raw.text
    );
    let queried = scrape(&node).await;
    assert!(queried.get("sessiondb_query_duration_seconds_count", &[]) >= 1.0);

    // A checkpoint sets the checkpoint gauges.
    let checkpoint = node.post_admin("/v1/admin/checkpoint", "").await;
    assert_eq!(checkpoint.status, StatusCode::OK, "{}", checkpoint.text);
    let checkpointed = scrape(&node).await;
    assert!(checkpointed.get("sessiondb_checkpoint_duration_seconds", &[]) > 0.0);
    assert_eq!(
        checkpointed.get("sessiondb_checkpoint_bytes", &[]),
        checkpoint.body["bytes"].as_f64().expect("bytes")
    );
    assert!(checkpointed.get("sessiondb_checkpoint_bytes", &[]) > 0.0);
    assert_eq!(
        checkpointed.get("sessiondb_checkpoint_position", &[]),
        checkpoint.body["position"].as_f64().expect("position")
    );
    assert!(checkpointed.get("sessiondb_checkpoint_position", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_single_node_is_ready_and_live() {
    let node = TestNode::start(NOW_MS).await;
    let ready = wait_until_ready(&node).await;
    assert_eq!(ready, serde_json::json!({"ready": true}));
    // Readiness does not flap once the node leads its own cluster.
    let again = node.get_raw("/v1/ready").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let health = node.get_raw("/v1/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
}

#[test]
fn the_parser_rejects_a_broken_histogram() {
    let text = "# HELP h_seconds x\n# TYPE h_seconds histogram\n\
                h_seconds_bucket{le=\"1\"} 2\nh_seconds_bucket{le=\"+Inf\"} 1\n\
                h_seconds_sum 0.5\nh_seconds_count 1\n";
    let outcome = std::panic::catch_unwind(|| parse(text));
    assert!(outcome.is_err(), "a non-cumulative histogram must fail");
    let good = "# HELP h_seconds x\n# TYPE h_seconds histogram\n\
                h_seconds_bucket{le=\"1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
                h_seconds_sum 0.5\nh_seconds_count 2\n";
    assert_eq!(parse(good).get("h_seconds_count", &[]), 2.0);
}
