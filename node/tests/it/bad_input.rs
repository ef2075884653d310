//! Bad input against the real binary: every whole-batch error and every
//! per-event rejection reason answers with its documented code, the good
//! events of a partly bad batch are applied, limits accept exactly the limit
//! and reject one more, and the node keeps serving and counting afterwards.

use crate::support::node::{RawResponse, TestNode};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// 2025-11-26T00:00:00Z, the manual clock of every node here.
const NOW_MS: i64 = 1_764_115_200_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Documented defaults and limits (docs/api.md).
const ALLOWED_LATENESS_MS: i64 = DAY_MS;
const FUTURE_SKEW_MS: i64 = 300_000;
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
const BATCH_EVENTS_MAX: usize = 10_000;
const ATTRIBUTES_MAX: usize = 32;
const ATTRIBUTE_BYTES_MAX: usize = 256;
const ID_BYTES_MAX: usize = 128;
const VISITOR_BYTES_MAX: usize = 256;
const VALUE_ABS_MAX: f64 = 1e12;

const PROJECT: &str = "shop";
/// A range that holds every event these tests send.
const FROM_MS: i64 = NOW_MS - 2 * DAY_MS;
const TO_MS: i64 = NOW_MS + HOUR_MS;

async fn node_with_project() -> TestNode {
    let node = TestNode::start(NOW_MS).await;
    node.create_project(PROJECT, json!({})).await;
    node
}

/// A valid pageview as JSON, for tests to spoil one field at a time.
fn pageview(id: &str, visitor: &str) -> Value {
    json!({"id": id, "project": PROJECT, "visitor": visitor,
           "ts": NOW_MS - 60_000, "type": "pageview"})
}

fn decision(id: &str, visitor: &str, experiment: &str) -> Value {
    json!({"id": id, "project": PROJECT, "visitor": visitor, "ts": NOW_MS - 120_000,
           "type": "decision", "decisions": [{"experiment": experiment, "variation": "a"}]})
}

fn purchase(id: &str, visitor: &str, value: f64) -> Value {
    json!({"id": id, "project": PROJECT, "visitor": visitor, "ts": NOW_MS - 60_000,
           "type": "custom", "key": "purchase", "value": value})
}

fn with(mut event: Value, field: &str, value: Value) -> Value {
    event[field] = value;
    event
}

fn without(mut event: Value, field: &str) -> Value {
    event.as_object_mut().expect("an object").remove(field);
    event
}

async fn post_events(node: &TestNode, events: Vec<Value>) -> RawResponse {
    node.post_raw("/v1/events", json!({ "events": events }).to_string())
        .await
}

/// Sends a batch that must be read (200) and returns (accepted, duplicates,
/// index → reason).
async fn ingest(node: &TestNode, events: Vec<Value>) -> (u64, u64, Vec<(u64, String, String)>) {
    let raw = post_events(node, events).await;
    assert_eq!(raw.status, StatusCode::OK, "ingest answer: {}", raw.text);
    let rejected = raw.body["rejected"]
        .as_array()
        .expect("rejected is an array")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["reason"].as_str().expect("reason").to_string(),
                r["message"].as_str().expect("message").to_string(),
            )
        })
        .collect();
    (
        raw.body["accepted"].as_u64().expect("accepted"),
        raw.body["duplicates"].as_u64().expect("duplicates"),
        rejected,
    )
}

/// Sends a batch of events that must all be rejected for `reason`.
async fn assert_each_rejected(node: &TestNode, events: Vec<Value>, reason: &str) {
    let count = events.len() as u64;
    let (accepted, duplicates, rejected) = ingest(node, events).await;
    assert_eq!((accepted, duplicates), (0, 0), "{reason}: {rejected:?}");
    let got: Vec<(u64, &str)> = rejected.iter().map(|(i, r, _)| (*i, r.as_str())).collect();
    let want: Vec<(u64, &str)> = (0..count).map(|i| (i, reason)).collect();
    assert_eq!(got, want, "rejections: {rejected:?}");
    for (_, _, message) in &rejected {
        assert!(!message.is_empty(), "{reason}: a rejection explains itself");
    }
}

/// Sends a batch of events that must all be accepted.
async fn assert_all_accepted(node: &TestNode, events: Vec<Value>, what: &str) {
    let count = events.len() as u64;
    let (accepted, duplicates, rejected) = ingest(node, events).await;
    assert_eq!(
        (accepted, duplicates, rejected.len()),
        (count, 0, 0),
        "{what}: {rejected:?}"
    );
}

fn assert_error(raw: &RawResponse, status: StatusCode, code: &str) {
    assert_eq!(raw.status, status, "body: {}", raw.text);
    assert_eq!(raw.error_code(), Some(code), "body: {}", raw.text);
    assert!(
        raw.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error has a message: {}",
        raw.text
    );
}

/// (visitors, purchase total conversions, purchase value sum) of an
/// experiment's single variation `a`, over the whole test range.
async fn experiment_counts(node: &TestNode, experiment: &str) -> (i64, i64, f64) {
    let results = node
        .results(PROJECT, experiment, FROM_MS, TO_MS, None, &["purchase"])
        .await;
    let variation = &results.groups[0].variations[0];
    assert_eq!(variation.variation, "a");
    let purchase = &variation.metrics[0];
    (
        variation.visitors,
        purchase.total_conversions,
        purchase.value_sum,
    )
}

async fn whole_batch_errors(node: &TestNode) {
    for body in [
        "{\"events\": [",
        "not json at all",
        "",
        // JSON has no NaN or infinity.
        r#"{"events": [{"id": "n", "project": "shop", "visitor": "v", "ts": 1, "type": "custom", "key": "k", "value": NaN}]}"#,
        r#"{"events": [{"id": "n", "project": "shop", "visitor": "v", "ts": 1, "type": "custom", "key": "k", "value": Infinity}]}"#,
    ] {
        let raw = node.post_raw("/v1/events", body).await;
        assert_error(&raw, StatusCode::BAD_REQUEST, "malformed_json");
    }
    for body in [
        json!({}),
        json!({"evts": []}),
        json!({"events": 5}),
        json!({"events": {"id": "x"}}),
        json!({"events": null}),
        json!([pageview("array-1", "array-visitor")]),
        json!("events"),
    ] {
        let raw = node.post_raw("/v1/events", body.to_string()).await;
        assert_error(&raw, StatusCode::BAD_REQUEST, "malformed_json");
    }
}

async fn oversize_body(node: &TestNode) {
    // Valid JSON, so only its size can be the problem.
    let padding = "x".repeat(BODY_BYTES_MAX + 1024);
    let body = format!(r#"{{"events": [], "padding": "{padding}"}}"#);
    let raw = node.post_raw("/v1/events", body).await;
    assert_error(&raw, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

async fn oversize_batch(node: &TestNode) {
    let events = |count: usize, prefix: &str| -> Vec<Value> {
        (0..count)
            .map(|i| pageview(&format!("{prefix}-{i}"), &format!("{prefix}-visitor-{i}")))
            .collect()
    };
    let raw = post_events(node, events(BATCH_EVENTS_MAX + 1, "over")).await;
    assert_error(&raw, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    // Exactly the limit is fine.
    assert_all_accepted(node, events(BATCH_EVENTS_MAX, "limit"), "a full batch").await;
}

/// Wrong-typed and missing fields are rejected by index; the batch's other
/// events are applied, which a results query shows.
async fn malformed_events_among_good_ones(node: &TestNode) {
    let experiment = "exp-malformed";
    let visitor = "malformed-visitor";
    let events = vec![
        decision("m-0", visitor, experiment),
        with(pageview("m-1", visitor), "ts", json!(true)),
        with(pageview("m-2", visitor), "visitor", json!(42)),
        purchase("m-3", visitor, 12.5),
        with(purchase("m-4", visitor, 1.0), "value", json!("12")),
        with(pageview("m-5", visitor), "attributes", json!(["browser"])),
        with(pageview("m-6", visitor), "type", json!("purchase")),
        without(pageview("m-7", visitor), "id"),
        without(pageview("m-8", visitor), "visitor"),
        without(pageview("m-9", visitor), "ts"),
        without(pageview("m-10", visitor), "type"),
        without(pageview("m-11", visitor), "project"),
        json!(17),
        with(
            decision("m-13", visitor, experiment),
            "decisions",
            json!([{"experiment": experiment}]),
        ),
        purchase("m-14", visitor, 0.5),
    ];
    let (accepted, duplicates, rejected) = ingest(node, events).await;
    assert_eq!((accepted, duplicates), (3, 0), "{rejected:?}");
    let indices: Vec<u64> = rejected.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(indices, (1..=13).filter(|i| *i != 3).collect::<Vec<_>>());
    for (index, reason, _) in &rejected {
        assert_eq!(reason, "malformed_event", "event {index}: {rejected:?}");
    }
    assert_eq!(experiment_counts(node, experiment).await, (1, 2, 13.0));

    let message_of = |index: u64| {
        rejected
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, _, m)| m.clone())
            .unwrap_or_default()
    };
    // The message names the offending field.
    assert!(message_of(1).contains("ts"), "{}", message_of(1));
    assert!(message_of(4).contains("value"), "{}", message_of(4));
    assert!(message_of(7).contains("id"), "{}", message_of(7));
}

async fn limits_accept_the_limit_and_reject_one_more(node: &TestNode) {
    let attributes = |count: usize| -> Value {
        let map: serde_json::Map<String, Value> = (0..count)
            .map(|i| (format!("attr{i}"), json!("x")))
            .collect();
        Value::Object(map)
    };
    assert_all_accepted(
        node,
        vec![
            with(
                pageview("lim-attrs", "lim-v1"),
                "attributes",
                attributes(ATTRIBUTES_MAX),
            ),
            with(
                pageview("lim-attr-len", "lim-v2"),
                "attributes",
                json!({"browser": "b".repeat(ATTRIBUTE_BYTES_MAX)}),
            ),
            pageview(&"i".repeat(ID_BYTES_MAX), "lim-v3"),
            pageview("lim-visitor-len", &"v".repeat(VISITOR_BYTES_MAX)),
            purchase("lim-value-max", "lim-v4", VALUE_ABS_MAX),
            purchase("lim-value-min", "lim-v5", -VALUE_ABS_MAX),
        ],
        "events exactly at the limits",
    )
    .await;

    // Attribute limits never cost an event: extras are dropped and long
    // values cut (docs/ingest-formats.md, "Attributes").
    assert_all_accepted(
        node,
        vec![
            with(
                pageview("over-attrs", "over-v1"),
                "attributes",
                attributes(ATTRIBUTES_MAX + 1),
            ),
            with(
                pageview("over-attr-len", "over-v2"),
                "attributes",
                json!({"browser": "b".repeat(ATTRIBUTE_BYTES_MAX + 1)}),
            ),
        ],
        "events over the attribute limits",
    )
    .await;
    assert_each_rejected(
        node,
        vec![pageview(&"i".repeat(ID_BYTES_MAX + 1), "over-v3")],
        "id_too_long",
    )
    .await;
    assert_each_rejected(
        node,
        vec![pageview(
            "over-visitor-len",
            &"v".repeat(VISITOR_BYTES_MAX + 1),
        )],
        "visitor_too_long",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            purchase("over-value-1", "over-v4", 1e13),
            purchase("over-value-2", "over-v4", -1e13),
            purchase("over-value-3", "over-v4", 1.7e308),
        ],
        "invalid_value",
    )
    .await;
    assert_each_rejected(node, vec![pageview("", "empty-id-visitor")], "empty_id").await;
    assert_each_rejected(node, vec![pageview("empty-visitor", "")], "empty_visitor").await;
    assert_each_rejected(
        node,
        vec![with(
            purchase("long-key", "over-v5", 1.0),
            "key",
            json!("k".repeat(10_000)),
        )],
        "key_too_long",
    )
    .await;
    let many_decisions: Vec<Value> = (0..1_000)
        .map(|i| json!({"experiment": format!("x{i}"), "variation": "a"}))
        .collect();
    assert_each_rejected(
        node,
        vec![with(
            decision("many-decisions", "over-v6", "x"),
            "decisions",
            Value::Array(many_decisions),
        )],
        "too_many_decisions",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            with(
                decision("empty-experiment", "over-v7", "x"),
                "decisions",
                json!([{"experiment": "", "variation": "a"}]),
            ),
            with(
                decision("empty-variation", "over-v7", "x"),
                "decisions",
                json!([{"experiment": "x", "variation": ""}]),
            ),
        ],
        "invalid_decision",
    )
    .await;
}

async fn horizon_and_project_checks(node: &TestNode) {
    let at = |id: &str, ts: i64| with(pageview(id, "horizon-visitor"), "ts", json!(ts));
    // The edges of [now − lateness, now + skew] are inside.
    assert_all_accepted(
        node,
        vec![
            at("edge-late", NOW_MS - ALLOWED_LATENESS_MS),
            at("edge-early", NOW_MS + FUTURE_SKEW_MS),
        ],
        "events at the edges of the horizon",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            at("too-late-1", NOW_MS - ALLOWED_LATENESS_MS - 1),
            at("too-late-2", NOW_MS - 30 * DAY_MS),
        ],
        "too_late",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            at("too-early-1", NOW_MS + FUTURE_SKEW_MS + 1),
            at("too-early-2", NOW_MS + DAY_MS),
        ],
        "too_early",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            with(
                pageview("unknown-1", "unknown-v"),
                "project",
                json!("no-such-project"),
            ),
            with(pageview("unknown-2", "unknown-v"), "project", json!("")),
        ],
        "unknown_project",
    )
    .await;
    assert_each_rejected(
        node,
        vec![with(pageview("bad-ts", "ts-v"), "ts", json!("yesterday"))],
        "invalid_timestamp",
    )
    .await;
}

async fn missing_key_and_missing_decision(node: &TestNode) {
    assert_each_rejected(
        node,
        vec![
            without(purchase("no-key", "mk-v", 3.0), "key"),
            without(
                without(purchase("no-key-no-value", "mk-v", 3.0), "value"),
                "key",
            ),
        ],
        "missing_key",
    )
    .await;
    assert_each_rejected(
        node,
        vec![
            without(decision("no-decisions", "md-v", "x"), "decisions"),
            with(
                decision("empty-decisions", "md-v", "x"),
                "decisions",
                json!([]),
            ),
        ],
        "missing_decision",
    )
    .await;
}

async fn bad_results_queries(node: &TestNode, experiment: &str) {
    let path = |project: &str, experiment: &str, from: i64, to: i64, breakdown: Option<&str>| {
        TestNode::results_path(project, experiment, from, to, breakdown, &[])
    };
    let cases = [
        (
            path(PROJECT, experiment, FROM_MS + 1, TO_MS, None),
            StatusCode::BAD_REQUEST,
            "unaligned_range",
        ),
        (
            path(PROJECT, experiment, FROM_MS, TO_MS - 1_000, None),
            StatusCode::BAD_REQUEST,
            "unaligned_range",
        ),
        (
            path(PROJECT, experiment, TO_MS, FROM_MS, None),
            StatusCode::BAD_REQUEST,
            "invalid_range",
        ),
        (
            path(PROJECT, experiment, FROM_MS, FROM_MS, None),
            StatusCode::BAD_REQUEST,
            "invalid_range",
        ),
        (
            path(PROJECT, experiment, FROM_MS, TO_MS, Some("shoe_size")),
            StatusCode::BAD_REQUEST,
            "unknown_breakdown",
        ),
        (
            path("no-such-project", experiment, FROM_MS, TO_MS, None),
            StatusCode::NOT_FOUND,
            "unknown_project",
        ),
        (
            path(PROJECT, "no-such-experiment", FROM_MS, TO_MS, None),
            StatusCode::NOT_FOUND,
            "unknown_experiment",
        ),
    ];
    for (path, status, code) in cases {
        let raw = node.get_raw(&path).await;
        assert_eq!(raw.status, status, "GET {path}: {}", raw.text);
        assert_eq!(raw.error_code(), Some(code), "GET {path}: {}", raw.text);
    }
}

/// Puts one decision and one purchase into `experiment`.
async fn good_events(node: &TestNode, experiment: &str) {
    assert_all_accepted(
        node,
        vec![
            decision("good-0", "good-visitor", experiment),
            purchase("good-1", "good-visitor", 7.25),
        ],
        "good events",
    )
    .await;
    assert_eq!(experiment_counts(node, experiment).await, (1, 1, 7.25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_batches_are_refused_as_malformed_json() {
    let node = node_with_project().await;
    whole_batch_errors(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_and_batches_are_refused_with_413() {
    let node = node_with_project().await;
    oversize_body(&node).await;
    oversize_batch(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_rejected_by_index_and_the_rest_of_the_batch_counts() {
    let node = node_with_project().await;
    malformed_events_among_good_ones(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_accept_exactly_the_limit_and_reject_beyond_it() {
    let node = node_with_project().await;
    limits_accept_the_limit_and_reject_one_more(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_the_horizon_or_for_unknown_projects_are_rejected() {
    let node = node_with_project().await;
    horizon_and_project_checks(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_events_need_a_key_and_decision_events_need_decisions() {
    let node = node_with_project().await;
    missing_key_and_missing_decision(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_queries_with_bad_ranges_or_unknown_names_are_refused() {
    let node = node_with_project().await;
    good_events(&node, "exp-good").await;
    bad_results_queries(&node, "exp-good").await;
}

/// All of the above on one node: it keeps serving, and what it accepted
/// before is still counted, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_keeps_serving_and_counting_after_every_kind_of_bad_input() {
    let node = node_with_project().await;
    good_events(&node, "exp-good").await;
    let before = node
        .results(PROJECT, "exp-good", FROM_MS, TO_MS, None, &["purchase"])
        .await;

    whole_batch_errors(&node).await;
    oversize_body(&node).await;
    oversize_batch(&node).await;
    malformed_events_among_good_ones(&node).await;
    limits_accept_the_limit_and_reject_one_more(&node).await;
    horizon_and_project_checks(&node).await;
    missing_key_and_missing_decision(&node).await;
    bad_results_queries(&node, "exp-good").await;

    let health = node.get_raw("/v1/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["status"], "ok");
    let after = node
        .results(PROJECT, "exp-good", FROM_MS, TO_MS, None, &["purchase"])
        .await;
    assert_eq!(after, before, "earlier accepted events are still counted");
    assert_eq!(experiment_counts(&node, "exp-good").await, (1, 1, 7.25));
    assert_eq!(
        experiment_counts(&node, "exp-malformed").await,
        (1, 2, 13.0)
    );
}
