//! Segment-compatible ingest (`/v1/batch`, `/v1/track`, `/v1/page`,
//! `/v1/identify`) against the real binary, with messages written from
//! Segment's published tracking API format (`tests/fixtures/segment/`):
//! write-key basic auth, `Experiment Viewed` as the decision, revenue,
//! userId over anonymousId, and identify acknowledged but not applied.

use crate::support::node::{RawResponse, TestNode};
use reqwest::StatusCode;
use serde_json::json;
use sessiondb_protocol::{IngestResponse, ResultsResponse, VariationResults};

/// 2025-11-26T12:00:00Z. Every fixture message lies between 09:59 and 11:00
/// that day, inside the default 24 h lateness and 5 min future skew.
const NOW_MS: i64 = 1_764_158_400_000;
/// 2025-11-26T00:00:00Z and the day after: a range holding every event.
const FROM_MS: i64 = 1_764_115_200_000;
const TO_MS: i64 = FROM_MS + 24 * 3_600_000;

const PROJECT: &str = "shop";
const EXPERIMENT: &str = "checkout-redesign";
/// "Order Completed", percent-encoded for the query string.
const ORDER_KEY: &str = "Order%20Completed";
const ORDER: &str = "Order Completed";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/segment/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `Authorization: Basic base64(<key>:)`, as Segment's libraries send it.
fn basic_auth(key: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    format!("Basic {encoded}")
}

async fn post(node: &TestNode, path: &str, key: &str, body: String) -> RawResponse {
    let authorization = basic_auth(key);
    node.post_with_headers(path, &[("Authorization", authorization.as_str())], body)
        .await
}

fn ingest_response(raw: &RawResponse) -> IngestResponse {
    assert_eq!(raw.status, StatusCode::OK, "ingest answer: {}", raw.text);
    serde_json::from_value(raw.body.clone()).expect("an IngestResponse body")
}

/// (index, reason) of every rejection.
fn reasons(response: &IngestResponse) -> Vec<(usize, &str)> {
    response
        .rejected
        .iter()
        .map(|rejection| (rejection.index, rejection.reason.as_str()))
        .collect()
}

fn variation<'a>(results: &'a ResultsResponse, name: &str) -> &'a VariationResults {
    assert_eq!(results.groups.len(), 1, "one group without breakdown");
    results.groups[0]
        .variations
        .iter()
        .find(|variation| variation.variation == name)
        .unwrap_or_else(|| panic!("variation {name} missing: {results:?}"))
}

/// Visitors of a variation in one breakdown group; 0 when absent.
fn group_visitors(results: &ResultsResponse, group: &str, name: &str) -> i64 {
    results
        .groups
        .iter()
        .filter(|candidate| candidate.breakdown_value.as_deref() == Some(group))
        .flat_map(|candidate| &candidate.variations)
        .filter(|variation| variation.variation == name)
        .map(|variation| variation.visitors)
        .sum()
}

/// (total, unique, value sum, sessions with conversion) of one key.
fn key_metrics(variation: &VariationResults, key: &str) -> (i64, i64, f64, i64) {
    let metrics = variation
        .metrics
        .iter()
        .find(|metrics| metrics.key == key)
        .unwrap_or_else(|| panic!("key {key} missing: {variation:?}"));
    (
        metrics.total_conversions,
        metrics.unique_conversions,
        metrics.value_sum,
        metrics.sessions_with_conversion,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_track_page_and_identify_reach_the_results() {
    let node = TestNode::start(NOW_MS).await;
    let key = node
        .create_project(PROJECT, json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");

    let batch = fixture("batch.json");
    let response = ingest_response(&post(&node, "/v1/batch", &key, batch.clone()).await);
    // 11 messages: 0 identify (acknowledged, not applied), 8 an unknown
    // `purchase` type, 9 a track with neither userId nor anonymousId; the
    // other 8 become events.
    assert_eq!((response.accepted, response.duplicates), (8, 0));
    assert_eq!(
        reasons(&response),
        [
            (0, "ignored_message_type"),
            (8, "unsupported_message_type"),
            (9, "empty_visitor"),
        ]
    );
    // A library retry: messageIds make every event a duplicate.
    let response = ingest_response(&post(&node, "/v1/batch", &key, batch).await);
    assert_eq!((response.accepted, response.duplicates), (0, 8));

    // Single-message endpoints.
    let response = ingest_response(&post(&node, "/v1/track", &key, fixture("track.json")).await);
    assert_eq!((response.accepted, response.rejected.len()), (1, 0));
    let response = ingest_response(&post(&node, "/v1/page", &key, fixture("page.json")).await);
    assert_eq!((response.accepted, response.rejected.len()), (1, 0));
    let raw = post(&node, "/v1/identify", &key, fixture("identify.json")).await;
    let response = ingest_response(&raw);
    assert_eq!(response.accepted, 0);
    assert_eq!(reasons(&response), [(0, "ignored_message_type")]);

    let results = node
        .results(PROJECT, EXPERIMENT, FROM_MS, TO_MS, None, &[ORDER_KEY])
        .await;

    // treatment: anon-1 (no userId), Experiment Viewed 10:00 by
    // experiment_id/variation_id; page Checkout 10:01; Order Completed 10:05
    // revenue 59.9; page Pricing 10:06 (/v1/page). One session
    // 10:00-10:06 = 360 000 ms with 2 pageviews.
    let treatment = variation(&results, "treatment");
    assert_eq!(treatment.visitors, 1);
    assert_eq!(treatment.conflicts, 0);
    let (total, unique, value_sum, sessions) = key_metrics(treatment, ORDER);
    assert_eq!((total, unique, sessions), (1, 1, 1));
    assert!((value_sum - 59.9).abs() < 1e-9, "value_sum {value_sum}");
    assert_eq!(treatment.sessions.sessions, 1);
    assert_eq!(treatment.sessions.duration_ms_sum, 360_000);
    assert_eq!(treatment.sessions.pageviews_sum, 2);

    // control: u-200 (userId wins over anonymousId anon-2), Experiment
    // Viewed 10:02 by experimentId/variationId with only originalTimestamp;
    // Order Completed 10:30 revenue 20 (value 99 loses), screen Home 10:40,
    // Order Completed 10:45 revenue 15.25 (/v1/track), page Thanks with no
    // time of its own: the batch's sentAt 11:00. anon-2's own order at 10:31
    // (revenue 5) belongs to visitor anon-2, never exposed: not counted.
    // One session 10:02-11:00 = 3 480 000 ms, 2 pageviews (screen + page).
    let control = variation(&results, "control");
    assert_eq!(control.visitors, 1);
    assert_eq!(key_metrics(control, ORDER), (2, 1, 35.25, 1));
    assert_eq!(control.sessions.sessions, 1);
    assert_eq!(control.sessions.bounced_sessions, 0);
    assert_eq!(control.sessions.duration_ms_sum, 3_480_000);
    assert_eq!(control.sessions.pageviews_sum, 2);

    // Context → attributes of the exposure event: context.campaign.name,
    // context.page.referrer (kept as its host), browser from
    // context.userAgent.
    for (breakdown, group, variation_name) in [
        ("campaign", "black-friday", "treatment"),
        ("campaign", "(none)", "control"),
        ("referrer", "news.example.com", "treatment"),
        ("browser", "firefox", "treatment"),
        ("browser", "chrome", "control"),
    ] {
        let results = node
            .results(
                PROJECT,
                EXPERIMENT,
                FROM_MS,
                TO_MS,
                Some(breakdown),
                &[ORDER_KEY],
            )
            .await;
        assert_eq!(
            group_visitors(&results, group, variation_name),
            1,
            "{breakdown} = {group}: {results:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_key_is_required_and_picks_the_project() {
    let node = TestNode::start(NOW_MS).await;
    let shop_key = node
        .create_project(PROJECT, json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");
    let blog_key = node
        .create_project("blog", json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");
    let track = fixture("track.json");

    // No credentials, an unknown key, an unreadable header: 401 for the
    // whole request, nothing applied.
    let raw = node.post_anonymous("/v1/track", track.clone()).await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED, "{}", raw.text);
    assert_eq!(raw.error_code(), Some("unauthorized"));
    let raw = post(&node, "/v1/batch", "not-a-key", fixture("batch.json")).await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED, "{}", raw.text);
    assert_eq!(raw.error_code(), Some("unauthorized"));
    let garbage = [("Authorization", "Basic %%%")];
    let raw = node
        .post_with_headers("/v1/track", &garbage, track.clone())
        .await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED, "{}", raw.text);

    // The key decides the project: the same message sent with each key is
    // new in each project. analytics.js puts the key in the body instead.
    let response = ingest_response(&post(&node, "/v1/track", &blog_key, track.clone()).await);
    assert_eq!(response.accepted, 1);
    let mut in_body: serde_json::Value = serde_json::from_str(&track).expect("fixture is JSON");
    in_body["writeKey"] = json!(shop_key);
    let raw = node.post_anonymous("/v1/track", in_body.to_string()).await;
    assert_eq!(ingest_response(&raw).accepted, 1);
    let status = node.get_raw("/v1/status").await;
    assert_eq!(status.body["events_accepted"], json!(2), "{}", status.text);

    // Whole-request format errors after authentication.
    let raw = post(&node, "/v1/batch", &shop_key, r#"{"batch": {}}"#.into()).await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);
    assert_eq!(raw.error_code(), Some("malformed_json"));
}
