//! An experiment's stored allocation weights through the real binary
//! (docs/api.md, "Experiment weights"; docs/statistics.md, "Sample ratio
//! mismatch"): set, read and cleared over the API, refused when invalid,
//! kept across a restart, the same on every member of a cluster, and used
//! by the sample ratio mismatch check when a results query gives none.

use crate::support::cluster::{
    create_project_everywhere, owners, send_routed, start_member, wait_for, wait_until,
};
use crate::support::node::{NodeOptions, RawResponse, TestNode};
use crate::support::workload::MINUTE_MS;
use reqwest::{Method, StatusCode};
use sessiondb_protocol::{
    Decision, Event, EventType, ExperimentWeights, ResultsResponse, SampleRatioMismatch, Timestamp,
    WeightsSource,
};
use sessiondb_test_support::eventually;
use std::collections::BTreeMap;
use std::time::Duration;

/// 2025-11-20 10:30 UTC.
const NOW_MS: i64 = 1_763_634_600_000;
const BATCH_EVENTS: usize = 500;

/// `count` exposures of `experiment` to `variation`, `minutes_before` `now_ms`.
fn exposures(experiment: &str, variation: &str, count: usize, now_ms: i64) -> Vec<Event> {
    (0..count)
        .map(|index| {
            let visitor = format!("{experiment}-{variation}-{index}");
            Event {
                id: format!("{visitor}-exposure"),
                project: "shop".to_string(),
                visitor,
                ts: Timestamp::Milliseconds(now_ms - 20 * MINUTE_MS),
                event_type: EventType::Decision,
                key: None,
                value: None,
                attributes: BTreeMap::new(),
                decisions: vec![Decision {
                    experiment: experiment.to_string(),
                    variation: variation.to_string(),
                }],
            }
        })
        .collect()
}

fn weights_path(experiment: &str) -> String {
    format!("/v1/projects/shop/experiments/{experiment}/weights")
}

async fn put_weights(node: &TestNode, experiment: &str, body: &str) -> RawResponse {
    node.send_admin(Method::PUT, &weights_path(experiment), body.to_string())
        .await
}

async fn stored_weights(node: &TestNode, experiment: &str) -> Option<BTreeMap<String, f64>> {
    let raw = node.get_raw(&weights_path(experiment)).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let answer: ExperimentWeights = serde_json::from_value(raw.body).expect("ExperimentWeights");
    assert_eq!(
        (answer.project.as_str(), answer.experiment.as_str()),
        ("shop", experiment)
    );
    answer.weights
}

/// The sample ratio mismatch check of the experiment's results over all of
/// its data, with `extra` appended to the query.
async fn srm(node: &TestNode, experiment: &str, extra: &str) -> SampleRatioMismatch {
    let path = format!("/v1/projects/shop/experiments/{experiment}/results?{extra}");
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let answer: ResultsResponse = serde_json::from_value(raw.body).expect("a ResultsResponse");
    answer.groups[0].srm.clone().expect("an srm check")
}

fn two_to_one() -> BTreeMap<String, f64> {
    BTreeMap::from([("a".to_string(), 2.0), ("b".to_string(), 1.0)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_weights_round_trip_survive_a_restart_and_drive_the_sample_ratio_check() {
    let mut node = TestNode::start_with(NodeOptions {
        start_ms: NOW_MS,
        shards: Some(4),
    })
    .await;
    node.create_project("shop", serde_json::json!({})).await;
    // "checkout" allocates 2:1 and gets 2:1; "banner" allocates 2:1 but
    // gets 1:1.
    let mut events = exposures("checkout", "a", 1000, NOW_MS);
    events.extend(exposures("checkout", "b", 500, NOW_MS));
    events.extend(exposures("banner", "a", 750, NOW_MS));
    events.extend(exposures("banner", "b", 750, NOW_MS));
    for batch in events.chunks(BATCH_EVENTS) {
        let answer = node.send_batch(batch).await;
        assert_eq!(answer.accepted as usize, batch.len(), "{answer:?}");
    }

    assert_eq!(stored_weights(&node, "checkout").await, None);
    let equal = srm(&node, "checkout", "").await;
    assert!(
        equal.flagged,
        "2:1 traffic on assumed equal shares: {equal:?}"
    );
    assert_eq!(equal.weights_source, WeightsSource::Equal);

    for experiment in ["checkout", "banner"] {
        let raw = put_weights(&node, experiment, r#"{"weights": {"a": 2, "b": 1}}"#).await;
        assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
        let answer: ExperimentWeights = serde_json::from_value(raw.body).expect("weights");
        assert_eq!(answer.weights, Some(two_to_one()));
        assert_eq!(stored_weights(&node, experiment).await, Some(two_to_one()));
    }
    let stored = srm(&node, "checkout", "").await;
    assert!(!stored.flagged && stored.p_value > 0.99, "{stored:?}");
    assert_eq!(stored.weights_source, WeightsSource::Stored);
    assert!(
        (stored.expected_weights["a"] - 2.0 / 3.0).abs() < 1e-12,
        "{stored:?}"
    );
    let broken = srm(&node, "banner", "").await;
    assert!(
        broken.flagged,
        "1:1 traffic on a 2:1 allocation: {broken:?}"
    );
    // The query's weights win over the stored ones.
    let asked = srm(&node, "checkout", "weights=a:1,b:1").await;
    assert!(asked.flagged, "{asked:?}");
    assert_eq!(asked.weights_source, WeightsSource::Query);

    // Bad input: a clear error naming the problem, nothing changed.
    for (body, status, code, says) in [
        (
            r#"{"weights": {"a": 0, "b": 1}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
            "`a`",
        ),
        (
            r#"{"weights": {}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
            "no variation",
        ),
        (
            r#"{"weights": {"a": 1e9}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
            "1000000",
        ),
        (
            r#"{"weights": {"a": "x"}}"#,
            StatusCode::BAD_REQUEST,
            "",
            "",
        ),
        (r#"{"wieghts": {"a": 1}}"#, StatusCode::BAD_REQUEST, "", ""),
    ] {
        let raw = put_weights(&node, "checkout", body).await;
        assert_eq!(raw.status, status, "{body}: {}", raw.text);
        if !code.is_empty() {
            assert_eq!(raw.error_code(), Some(code), "{body}: {}", raw.text);
            assert!(raw.text.contains(says), "{body}: {}", raw.text);
        }
    }
    let too_many: BTreeMap<String, f64> = (0
        ..=sessiondb_node::limits::EXPERIMENT_WEIGHTS_VARIATIONS_MAX)
        .map(|index| (format!("v{index}"), 1.0))
        .collect();
    let raw = put_weights(
        &node,
        "checkout",
        &serde_json::json!({ "weights": too_many }).to_string(),
    )
    .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{}", raw.text);
    assert_eq!(stored_weights(&node, "checkout").await, Some(two_to_one()));
    let unknown = node
        .send_admin(
            Method::PUT,
            "/v1/projects/nope/experiments/x/weights",
            r#"{"weights": {"a": 1}}"#,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.error_code(), Some("unknown_project"));

    // Weights that miss a variation with data are not used.
    let raw = put_weights(&node, "checkout", r#"{"weights": {"a": 2}}"#).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let partial = srm(&node, "checkout", "").await;
    assert_eq!(partial.weights_source, WeightsSource::Equal);
    assert!(partial.flagged, "{partial:?}");
    let raw = put_weights(&node, "checkout", r#"{"weights": {"a": 2, "b": 1}}"#).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);

    // Cleared, the check assumes equal shares again.
    let raw = node
        .send_admin(Method::DELETE, &weights_path("banner"), "")
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    assert_eq!(stored_weights(&node, "banner").await, None);
    let cleared = srm(&node, "banner", "").await;
    assert!(
        !cleared.flagged && cleared.weights_source == WeightsSource::Equal,
        "{cleared:?}"
    );

    node.restart().await;
    eventually(
        Duration::from_secs(30),
        "weights after the restart",
        async || match node.get_raw(&weights_path("checkout")).await {
            raw if raw.status == StatusCode::OK => Ok(()),
            raw => Err(raw.text),
        },
    )
    .await;
    assert_eq!(stored_weights(&node, "checkout").await, Some(two_to_one()));
    assert_eq!(stored_weights(&node, "banner").await, None);
    let after = srm(&node, "checkout", "").await;
    assert!(
        !after.flagged && after.weights_source == WeightsSource::Stored,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_members_of_a_cluster_use_the_same_stored_weights() {
    let first = start_member(1, None).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    let second = start_member(2, Some(&first)).await;
    let status = wait_for(&[&first, &second], &[1, 2], "two members", |_| true).await;
    create_project_everywhere(&[&first, &second], "shop", serde_json::json!({})).await;
    let now_ms = crate::support::cluster::START_MS;
    let mut events = exposures("checkout", "a", 400, now_ms);
    events.extend(exposures("checkout", "b", 200, now_ms));
    let nodes = [first, second];
    let (accepted, _) = send_routed(&nodes, &owners(&status), &events).await;
    assert_eq!(accepted as usize, events.len());

    // Set through the second member (the leader is whichever won).
    let raw = put_weights(&nodes[1], "checkout", r#"{"weights": {"a": 2, "b": 1}}"#).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    wait_until(&[&nodes[0], &nodes[1]], "both members answering", |_| true).await;
    for node in &nodes {
        eventually(
            Duration::from_secs(30),
            "the weights on every member",
            async || {
                let raw = node.get_raw(&weights_path("checkout")).await;
                let answer: ExperimentWeights =
                    serde_json::from_value(raw.body).map_err(|e| e.to_string())?;
                if answer.weights == Some(two_to_one()) {
                    Ok(())
                } else {
                    Err(raw.text)
                }
            },
        )
        .await;
        let check = srm(node, "checkout", "").await;
        assert_eq!(check.weights_source, WeightsSource::Stored, "{check:?}");
        assert!(!check.flagged, "{check:?}");
        assert!((check.expected_weights["b"] - 1.0 / 3.0).abs() < 1e-12);
    }
}
