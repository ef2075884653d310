//! Supervision against the real binary (`docs/operations.md`, "Actor
//! failures"): a shard actor made to panic (the hidden
//! `--fault-actor-panic` route) is seen in `/v1/ready` (`503
//! actor_failed`), in `/metrics` (`sessiondb_actor_failures_total`) and in
//! the log; the node refuses ingest, stops with exit code 3, and a restart
//! on its data recovers every acknowledged event from the log.

use crate::support::node::{NodeOptions, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Event, EventType, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// 2025-11-20 10:30 UTC.
const NOW_MS: i64 = 1_763_634_600_000;
const SHARDS: u32 = 4;
/// The documented exit code after an actor failure (`cli::EXIT_ACTOR_FAILED`).
const EXIT_ACTOR_FAILED: i32 = 3;
/// Bound on the node stopping after the failure (it waits
/// `ACTOR_FAILURE_STOP_DELAY_MS`, 5 s, then drains its requests).
const EXIT_WAIT_MAX: Duration = Duration::from_secs(60);

fn pageview(id: &str, visitor: &str) -> Event {
    Event {
        id: id.to_string(),
        project: "shop".to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(NOW_MS - 60_000),
        event_type: EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    }
}

fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_shard_actor_is_reported_and_stops_the_node_which_recovers_on_restart() {
    let options = NodeOptions {
        start_ms: NOW_MS,
        shards: Some(SHARDS),
    };
    let mut node =
        TestNode::start_with_args(options, vec!["--fault-actor-panic".to_string()]).await;
    node.create_project("shop", serde_json::json!({})).await;
    let events: Vec<Event> = (0..20)
        .map(|index| pageview(&format!("e-{index}"), &format!("v-{index}")))
        .collect();
    let answer = node.send_batch(&events).await;
    assert_eq!(answer.accepted, 20, "{answer:?}");

    let before = node.get_admin("/metrics").await;
    let failures = "sessiondb_actor_failures_total{actor=\"session\"}";
    assert_eq!(sample(&before.text, failures), Some(0.0), "{}", before.text);

    let panicked = node.post_admin("/v1/admin/fault/shard-panic/1", "").await;
    assert_eq!(panicked.status, StatusCode::OK, "{}", panicked.text);

    // Ready says why, until the node stops.
    let ready = node.get_raw("/v1/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    assert_eq!(ready.body["reason"], "actor_failed", "{}", ready.text);
    let detail = ready.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("shard actor 1"), "{}", ready.text);
    let after = node.get_admin("/metrics").await;
    assert_eq!(sample(&after.text, failures), Some(1.0), "{}", after.text);
    // Nothing more is taken.
    let late = serde_json::json!({"events": [pageview("late", "v-late")]});
    let refused = node
        .post_raw("/v1/events", serde_json::to_vec(&late).expect("json"))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );

    let status = node
        .wait_for_exit(EXIT_WAIT_MAX)
        .await
        .unwrap_or_else(|| panic!("the node did not stop: {}", node.stderr_tail()));
    assert_eq!(
        status.code(),
        Some(EXIT_ACTOR_FAILED),
        "{}",
        node.stderr_tail()
    );
    let log = node.stderr_text();
    assert!(log.contains("actor failed"), "{log}");
    assert!(log.contains("shard actor 1"), "{log}");
    assert!(
        log.contains("the node stopped because an actor failed"),
        "{log}"
    );

    // Restarted on its data, the node has every acknowledged event back.
    node.restart().await;
    let ready = node.get_raw("/v1/ready").await;
    assert_ne!(ready.body["reason"], "actor_failed", "{}", ready.text);
    let status = node.get_admin("/v1/status").await;
    assert_eq!(status.body["live_visitors"], 20, "{}", status.text);
}
