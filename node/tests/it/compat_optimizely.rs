//! Optimizely-compatible ingest (`POST /optimizely/v1/events`) against the
//! real binary, with event batches written from Optimizely's published
//! event API format (`tests/fixtures/optimizely/`): impressions become
//! decisions, conversions become custom events with revenue, value and tags,
//! and the results API shows exactly the hand-computed numbers. Decisions
//! are named by the keys of their `metadata`, with the ids beside them.

use crate::support::node::{RawResponse, TestNode};
use reqwest::StatusCode;
use serde_json::json;
use sessiondb_protocol::{IngestResponse, ResultsResponse, VariationResults};

/// 2025-11-26T12:00:00Z. Every fixture event lies between 10:00 and 11:00
/// that day, inside the default 24 h lateness and 5 min future skew.
const NOW_MS: i64 = 1_764_158_400_000;
/// 2025-11-26T00:00:00Z and the day after: a range holding every event.
const FROM_MS: i64 = 1_764_115_200_000;
const TO_MS: i64 = FROM_MS + 24 * 3_600_000;

/// Fixtures name Optimizely project 8231990343; a SessionDB project of that
/// name receives batches that name no `?project=`.
const OPTIMIZELY_PROJECT: &str = "8231990343";
/// The experiment's id and the key (`rule_key`) its impressions carry.
const EXPERIMENT: &str = "20020001";
const EXPERIMENT_KEY: &str = "checkout_test";
const CONTROL: &str = "control";
const CONTROL_ID: &str = "20030001";
const TREATMENT: &str = "one_page";
const TREATMENT_ID: &str = "20030002";

const PATH: &str = "/optimizely/v1/events";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/optimizely/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
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

/// The variation of the only group (no breakdown).
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
async fn impressions_and_conversions_reach_the_results() {
    let node = TestNode::start(NOW_MS).await;
    node.create_project(
        OPTIMIZELY_PROJECT,
        json!({"breakdown_attributes": ["browser", "plan"]}),
    )
    .await;

    // Three campaign_activated events, one per visitor; routed by the
    // batch's project_id.
    let impressions = fixture("impressions.json");
    let response = ingest_response(&node.post_raw(PATH, impressions.clone()).await);
    assert_eq!((response.accepted, response.duplicates), (3, 0));
    assert!(response.rejected.is_empty(), "{response:?}");
    // Four visitors, six conversion events.
    let response = ingest_response(&node.post_raw(PATH, fixture("conversions.json")).await);
    assert_eq!((response.accepted, response.duplicates), (6, 0));
    assert!(response.rejected.is_empty(), "{response:?}");
    // An SDK retry: the uuids make every event a duplicate.
    let response = ingest_response(&node.post_raw(PATH, impressions).await);
    assert_eq!((response.accepted, response.duplicates), (0, 3));

    let results = node
        .results(
            OPTIMIZELY_PROJECT,
            EXPERIMENT,
            FROM_MS,
            TO_MS,
            None,
            &["purchase", "add_to_cart"],
        )
        .await;

    // Control: user-1, exposed 10:00, add_to_cart 10:05 (value 2, no
    // revenue), purchase 10:10 with revenue 4200 and value 42: revenue wins,
    // so the value is 4200. One session 10:00-10:10 = 600 000 ms.
    // Asked by id, answered by key, the ids beside the keys.
    assert_eq!(results.experiment, EXPERIMENT_KEY);
    assert_eq!(results.experiment_id.as_deref(), Some(EXPERIMENT));
    let control = variation(&results, CONTROL);
    assert_eq!(control.variation_id.as_deref(), Some(CONTROL_ID));
    assert_eq!(
        variation(&results, TREATMENT).variation_id.as_deref(),
        Some(TREATMENT_ID)
    );
    assert_eq!(control.visitors, 1);
    assert_eq!(key_metrics(control, "purchase"), (1, 1, 4200.0, 1));
    assert_eq!(key_metrics(control, "add_to_cart"), (1, 1, 2.0, 1));
    assert_eq!(control.sessions.sessions, 1);
    assert_eq!(control.sessions.bounced_sessions, 0);
    assert_eq!(control.sessions.duration_ms_sum, 600_000);

    // Treatment: user-2 (exposed 10:01; purchases 10:20 revenue 1999 and
    // 11:00 revenue 1000, 40 min later so a second, bounced session) and
    // user-3 (exposed 10:02 with two decisions; add_to_cart 10:03 value 5).
    // user-4's purchase has no decision and counts nowhere.
    // Sessions: user-2 [10:01, 10:20] 1 140 000 ms + [11:00] 0 ms,
    // user-3 [10:02, 10:03] 60 000 ms.
    let treatment = variation(&results, TREATMENT);
    assert_eq!(treatment.visitors, 2);
    assert_eq!(key_metrics(treatment, "purchase"), (2, 1, 2999.0, 2));
    assert_eq!(key_metrics(treatment, "add_to_cart"), (1, 1, 5.0, 1));
    assert_eq!(treatment.sessions.sessions, 3);
    assert_eq!(treatment.sessions.bounced_sessions, 1);
    assert_eq!(treatment.sessions.duration_ms_sum, 1_200_000);
    assert_eq!(treatment.sessions.pageviews_sum, 0);

    // user-3's snapshot held a second decision: experiment 20020002, rule
    // `ranking_test`, asked here by its key.
    let second = node
        .results(
            OPTIMIZELY_PROJECT,
            "ranking_test",
            FROM_MS,
            TO_MS,
            None,
            &["add_to_cart"],
        )
        .await;
    assert_eq!(second.experiment_id.as_deref(), Some("20020002"));
    let semantic = variation(&second, "semantic");
    assert_eq!(semantic.variation_id.as_deref(), Some("20030011"));
    assert_eq!(semantic.visitors, 1);
    assert_eq!(key_metrics(semantic, "add_to_cart"), (1, 1, 5.0, 1));

    // Visitor attributes: `plan` as sent, `$opt_user_agent` as `browser`.
    let by_plan = node
        .results(
            OPTIMIZELY_PROJECT,
            EXPERIMENT_KEY,
            FROM_MS,
            TO_MS,
            Some("plan"),
            &["purchase"],
        )
        .await;
    assert_eq!(group_visitors(&by_plan, "pro", CONTROL), 1);
    assert_eq!(group_visitors(&by_plan, "free", TREATMENT), 1);
    assert_eq!(group_visitors(&by_plan, "(none)", TREATMENT), 1);
    let by_browser = node
        .results(
            OPTIMIZELY_PROJECT,
            EXPERIMENT,
            FROM_MS,
            TO_MS,
            Some("browser"),
            &["purchase"],
        )
        .await;
    assert_eq!(group_visitors(&by_browser, "chrome", CONTROL), 1);
    assert_eq!(group_visitors(&by_browser, "safari", TREATMENT), 1);
    assert_eq!(group_visitors(&by_browser, "(none)", TREATMENT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_rejected_at_their_flattened_index() {
    let node = TestNode::start(NOW_MS).await;
    node.create_project(OPTIMIZELY_PROJECT, json!({})).await;
    let raw = node.post_raw(PATH, fixture("rejections.json")).await;
    let response = ingest_response(&raw);
    // Flattened: visitor by visitor, snapshot by snapshot, event by event.
    // 0 user-5 impression (ok), 1 purchase with 33 tags (ok: tags beyond
    // ATTRIBUTES_MAX are dropped, not the event), 2 purchase without uuid,
    // 3 event of an empty visitor_id, 4 impression of a snapshot without
    // decisions, 5 purchase without timestamp, 6 add_to_cart (ok).
    assert_eq!(response.accepted, 3);
    assert_eq!(
        reasons(&response),
        [
            (2, "empty_id"),
            (3, "empty_visitor"),
            (4, "missing_decision"),
            (5, "malformed_event"),
        ]
    );
    let results = node
        .results(
            OPTIMIZELY_PROJECT,
            EXPERIMENT,
            FROM_MS,
            TO_MS,
            None,
            &["purchase"],
        )
        .await;
    // These decisions carry no `metadata`, and the project has no aliases:
    // they are named by their ids.
    assert_eq!(results.experiment, EXPERIMENT);
    assert_eq!(results.experiment_id, None);
    let control = variation(&results, CONTROL_ID);
    assert_eq!(control.visitors, 1, "only user-5's impression counted");
    assert_eq!(
        key_metrics(control, "purchase"),
        (1, 1, 700.0, 1),
        "user-5's purchase with 33 tags counted, the one without uuid not"
    );

    // Not an event batch at all: the whole request fails.
    let raw = node.post_raw(PATH, r#"{"visitors": 3}"#).await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);
    assert_eq!(raw.error_code(), Some("malformed_json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_comes_from_the_key_the_query_or_project_id() {
    let node = TestNode::start(NOW_MS).await;
    let shop_key = node
        .create_project("shop", json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");
    let blog_key = node
        .create_project("blog", json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");
    assert_eq!(shop_key.len(), 32);
    assert_ne!(shop_key, blog_key);
    let impressions = fixture("impressions.json");

    // project_id 8231990343 names no project: every event is rejected.
    let response = ingest_response(&node.post_raw(PATH, impressions.clone()).await);
    assert_eq!(response.accepted, 0);
    assert_eq!(
        reasons(&response),
        [
            (0, "unknown_project"),
            (1, "unknown_project"),
            (2, "unknown_project")
        ]
    );

    // `?project=` overrides project_id.
    let query_path = format!("{PATH}?project=shop");
    let response = ingest_response(&node.post_raw(&query_path, impressions.clone()).await);
    assert_eq!(response.accepted, 3);
    let results = node
        .results("shop", EXPERIMENT, FROM_MS, TO_MS, None, &[])
        .await;
    assert_eq!(variation(&results, TREATMENT).visitors, 2);

    // The ingest key picks its project.
    let key = [("X-SessionDB-Key", blog_key.as_str())];
    let raw = node
        .post_with_headers(PATH, &key, impressions.clone())
        .await;
    assert_eq!(ingest_response(&raw).accepted, 3);
    let results = node
        .results("blog", EXPERIMENT, FROM_MS, TO_MS, None, &[])
        .await;
    assert_eq!(variation(&results, CONTROL).visitors, 1);

    // A wrong key, or no credential at all: 401. A key of another project
    // than `?project=`: 403.
    let wrong = [("X-SessionDB-Key", "00000000000000000000000000000000")];
    let raw = node
        .post_with_headers(PATH, &wrong, impressions.clone())
        .await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED, "{}", raw.text);
    assert_eq!(raw.error_code(), Some("unauthorized"));
    let raw = node.post_anonymous(&query_path, impressions.clone()).await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED, "{}", raw.text);
    let raw = node
        .post_with_headers(&query_path, &key, impressions.clone())
        .await;
    assert_eq!(raw.status, StatusCode::FORBIDDEN, "{}", raw.text);
    assert_eq!(raw.error_code(), Some("forbidden"));
    // The key as a bearer works like the header.
    let bearer = format!("Bearer {blog_key}");
    let raw = node
        .post_with_headers(
            &query_path,
            &[("authorization", bearer.as_str())],
            impressions.clone(),
        )
        .await;
    assert_eq!(raw.status, StatusCode::FORBIDDEN, "{}", raw.text);
    let raw = node
        .post_with_headers(PATH, &[("authorization", bearer.as_str())], impressions)
        .await;
    // The same impressions went to blog with the header above: duplicates
    // there, so the bearer key picked blog too.
    assert_eq!(ingest_response(&raw).duplicates, 3);
}

/// The aliases are agreed through placement: they survive a restart, and a
/// batch whose decisions carry ids only (an older SDK) is named by the keys
/// the aliases know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_survive_a_restart_and_name_decisions_sent_by_id() {
    let mut node = TestNode::start(NOW_MS).await;
    node.create_project(OPTIMIZELY_PROJECT, json!({})).await;
    let response = ingest_response(&node.post_raw(PATH, fixture("impressions.json")).await);
    assert_eq!(response.accepted, 3);
    node.kill_9().await;
    node.restart().await;

    // user-9's impression names the experiment and variation by id only.
    let by_id_only = json!({
        "project_id": OPTIMIZELY_PROJECT,
        "visitors": [{"visitor_id": "user-9", "snapshots": [{
            "decisions": [{"experiment_id": EXPERIMENT, "variation_id": CONTROL_ID}],
            "events": [{"key": "campaign_activated", "timestamp": NOW_MS - 3_600_000, "uuid": "by-id-1"}]
        }]}]
    });
    let response = ingest_response(&node.post_raw(PATH, by_id_only.to_string()).await);
    assert_eq!(response.accepted, 1);
    let by_key = node
        .results(
            OPTIMIZELY_PROJECT,
            EXPERIMENT_KEY,
            FROM_MS,
            TO_MS,
            None,
            &[],
        )
        .await;
    let by_id = node
        .results(OPTIMIZELY_PROJECT, EXPERIMENT, FROM_MS, TO_MS, None, &[])
        .await;
    assert_eq!(by_key, by_id, "a key and its id name the same experiment");
    assert_eq!(by_key.experiment_id.as_deref(), Some(EXPERIMENT));
    let control = variation(&by_key, CONTROL);
    assert_eq!(control.visitors, 2, "user-1 and user-9");
    assert_eq!(control.variation_id.as_deref(), Some(CONTROL_ID));
    let listed: Vec<&str> = by_key.groups[0]
        .variations
        .iter()
        .map(|variation| variation.variation.as_str())
        .collect();
    assert_eq!(listed, [CONTROL, TREATMENT], "no variation named by an id");

    // The time series names the ids too.
    let path = format!(
        "/v1/projects/{OPTIMIZELY_PROJECT}/experiments/{EXPERIMENT}/timeseries?from={FROM_MS}&to={TO_MS}"
    );
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let series: sessiondb_protocol::TimeSeriesResponse =
        serde_json::from_value(raw.body).expect("a TimeSeriesResponse");
    assert_eq!(series.experiment, EXPERIMENT_KEY);
    assert_eq!(series.experiment_id.as_deref(), Some(EXPERIMENT));
    let ids: Vec<Option<&str>> = series
        .variations
        .iter()
        .map(|variation| variation.variation_id.as_deref())
        .collect();
    assert_eq!(ids, [Some(CONTROL_ID), Some(TREATMENT_ID)]);
}

/// In a cluster the aliases a batch carries are agreed through placement:
/// every member answers a query by id with the keys, though only one of
/// them received the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_cluster_knows_the_aliases() {
    use crate::support::cluster::{
        create_project_everywhere, form_three_node_cluster, AGREEMENT_WAIT_MAX, START_MS,
    };
    let nodes = form_three_node_cluster().await;
    let members: Vec<&TestNode> = nodes.iter().collect();
    create_project_everywhere(&members, "shop", json!({})).await;
    let batch = json!({"visitors": [{"visitor_id": "u1", "snapshots": [{
        "decisions": [{"experiment_id": EXPERIMENT, "variation_id": CONTROL_ID,
            "metadata": {"rule_key": EXPERIMENT_KEY, "variation_key": CONTROL}}],
        "events": [{"key": "campaign_activated", "timestamp": START_MS, "uuid": "cluster-1"}]
    }]}]});
    // Node 1 owns every shard after the bootstrap.
    let answer = nodes[0]
        .post_raw(&format!("{PATH}?project=shop"), batch.to_string())
        .await;
    assert_eq!(ingest_response(&answer).accepted, 1);
    let path = TestNode::results_path(
        "shop",
        EXPERIMENT,
        START_MS,
        START_MS + 3_600_000,
        None,
        &[],
    );
    for node in &nodes {
        let results: ResultsResponse =
            sessiondb_test_support::eventually(AGREEMENT_WAIT_MAX, "the aliases", async || {
                let raw = node.get_raw(&path).await;
                let results: Option<ResultsResponse> = serde_json::from_value(raw.body).ok();
                match results {
                    Some(results) if results.experiment_id.is_some() => Ok(results),
                    _ => Err(raw.text),
                }
            })
            .await;
        assert_eq!(results.experiment, EXPERIMENT_KEY);
        assert_eq!(results.experiment_id.as_deref(), Some(EXPERIMENT));
        let control = variation(&results, CONTROL);
        assert_eq!(control.visitors, 1);
        assert_eq!(control.variation_id.as_deref(), Some(CONTROL_ID));
    }
}
