//! The statistics of a results answer through the real binary
//! (docs/statistics.md): always-valid p-values and confidence sequences,
//! Holm-corrected p-values, and the sample ratio mismatch check with equal
//! and given weights, and its bad input.

use crate::support::node::{NodeOptions, TestNode};
use crate::support::workload::{HOUR_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_protocol::{Decision, Event, EventType, ResultsResponse, Timestamp};
use std::collections::BTreeMap;

/// 2025-11-20 10:30 UTC: every event falls in the 10:00 bucket.
const NOW_MS: i64 = 1_763_634_600_000;
const BUCKET_START_MS: i64 = NOW_MS - 30 * MINUTE_MS;
const BATCH_EVENTS: usize = 500;

fn event(id: String, visitor: &str, ts: i64) -> Event {
    Event {
        id,
        project: "shop".to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(ts),
        event_type: EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    }
}

/// `visitors` exposures to `variation`, the first `converted` of them then
/// buying once for a value that varies by visitor.
fn visitors(variation: &str, visitors: usize, converted: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for index in 0..visitors {
        let visitor = format!("{variation}-{index}");
        let mut exposure = event(
            format!("{visitor}-exposure"),
            &visitor,
            NOW_MS - 20 * MINUTE_MS,
        );
        exposure.event_type = EventType::Decision;
        exposure.decisions.push(Decision {
            experiment: "checkout".to_string(),
            variation: variation.to_string(),
        });
        events.push(exposure);
        if index < converted {
            let mut purchase = event(format!("{visitor}-purchase"), &visitor, NOW_MS - MINUTE_MS);
            purchase.event_type = EventType::Custom;
            purchase.key = Some("purchase".to_string());
            purchase.value = Some(10.0 + (index % 7) as f64);
            events.push(purchase);
        }
    }
    events
}

async fn results(node: &TestNode, extra: &str) -> (StatusCode, serde_json::Value, String) {
    let path = TestNode::results_path(
        "shop",
        "checkout",
        BUCKET_START_MS,
        BUCKET_START_MS + HOUR_MS,
        None,
        &["purchase"],
    ) + extra;
    let raw = node.get_raw(&path).await;
    (raw.status, raw.body, raw.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_always_valid_inference_holm_and_sample_ratio_mismatch() {
    let node = TestNode::start_with(NodeOptions {
        start_ms: NOW_MS,
        shards: Some(4),
    })
    .await;
    node.create_project("shop", serde_json::json!({})).await;
    // The broken split: 1000 vs 800 on what should be 50/50, with a
    // clear lift in conversions (10 % → 15 %).
    let mut events = visitors("a", 1000, 100);
    events.extend(visitors("b", 800, 120));
    for batch in events.chunks(BATCH_EVENTS) {
        let answer = node.send_batch(batch).await;
        assert_eq!(answer.accepted as usize, batch.len(), "{answer:?}");
    }

    let (status, body, text) = results(&node, "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: ResultsResponse = serde_json::from_value(body.clone()).expect("a ResultsResponse");
    let group = &answer.groups[0];
    let b = group.variation("b").expect("variation b");
    assert_eq!(b.visitors, 800, "{text}");
    let rate = b.metrics[0]
        .rate_comparison
        .as_ref()
        .expect("a rate comparison");
    // p = 2Φ(−z) for the pooled z of 12/80 vs 1/10 ≈ 0.0014: fixed-horizon
    // significant, always-valid more cautious, and the sequence wider than
    // the interval.
    assert!(rate.p_value < 0.01, "{text}");
    let always_valid = rate.always_valid_p_value.expect("an always-valid p-value");
    assert!(always_valid > rate.p_value && always_valid <= 1.0, "{text}");
    let (low, high) = (rate.cs_low.expect("cs_low"), rate.cs_high.expect("cs_high"));
    assert!(low < rate.ci_low && rate.ci_high < high, "{text}");
    assert!((low..=high).contains(&rate.relative_improvement), "{text}");
    // Two comparisons (rate and value of one key): the smaller p-value is
    // doubled by Holm, the larger kept at least as large.
    let value = b.metrics[0]
        .value_comparison
        .as_ref()
        .expect("a value comparison");
    let (smaller, larger) = if rate.p_value <= value.p_value {
        (rate, value)
    } else {
        (value, rate)
    };
    let smaller_holm = smaller.p_value_holm.expect("p_value_holm");
    assert!(
        (smaller_holm - (2.0 * smaller.p_value).min(1.0)).abs() < 1e-12,
        "{text}"
    );
    assert!(
        larger.p_value_holm.expect("p_value_holm") >= smaller_holm,
        "{text}"
    );
    assert!(
        larger.p_value_holm.expect("p_value_holm") >= larger.p_value,
        "{text}"
    );

    // 1000 vs 800 on 50/50: χ² = 22.2, p ≈ 2.4e-6, flagged.
    let srm = group.srm.as_ref().expect("an srm check");
    assert!(srm.p_value < 1e-5 && srm.flagged, "{text}");
    assert_eq!(
        srm.expected_weights,
        BTreeMap::from([("a".to_string(), 0.5), ("b".to_string(), 0.5)]),
        "{text}"
    );
    // The wire field names the issue asks for.
    let srm_json = &body["groups"][0]["srm"];
    for field in ["p_value", "expected_weights", "flagged"] {
        assert!(srm_json.get(field).is_some(), "srm.{field}: {text}");
    }

    // Told the experiment allocates 5:4, the same split fits exactly.
    let (status, body, text) = results(&node, "&weights=a:5,b:4").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: ResultsResponse = serde_json::from_value(body).expect("a ResultsResponse");
    let srm = answer.groups[0].srm.as_ref().expect("an srm check");
    assert!(!srm.flagged && srm.p_value > 0.99, "{text}");
    assert!(
        (srm.expected_weights["a"] - 5.0 / 9.0).abs() < 1e-12,
        "{text}"
    );

    // Weights that cannot be used are a clear error, not a guess.
    for (weights, says) in [
        ("a:1", "`b` has none"),
        ("a:1,b:1,c:1", "`c`, which is not a variation"),
        ("a:1,b:0", "positive and finite"),
        ("a:1,b:x", "`x` is not a number"),
        ("a:1,a:2,b:1", "given twice"),
        ("a,b", "has no `:weight`"),
    ] {
        let (status, body, text) = results(&node, &format!("&weights={weights}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{weights}: {text}");
        assert_eq!(body["error"], "invalid_query", "{weights}: {text}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{weights}: {message}");
    }
}
