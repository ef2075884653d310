//! Query fan-out with real node processes on loopback (`docs/cluster.md`,
//! "Query fan-out and merge"): any member answers a results query with
//! every member's share; a member that does not answer makes the answer
//! partial and is named; the internal endpoint needs the cluster secret.
//!
//! After bootstrap node 1 owns every shard, so every event goes through
//! node 1 and its aggregates live there; nodes 2 and 3 answer by gathering
//! node 1's share. Every wait is bounded polling on a condition.

use crate::support::cluster::{
    create_project_everywhere, form_three_node_cluster, start_member, wait_for, CLUSTER_SECRET,
    START_MS,
};
use crate::support::node::TestNode;
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_protocol::ResultsResponse;
use sessiondb_test_support::oracle::{assert_matches, Oracle, OracleSettings};

const PROJECT: &str = "fanout";
const KEYS: &[&str] = &["add_to_cart", "purchase"];
const BUCKET_MS: i64 = HOUR_MS;
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
const DAYS: i64 = 2;

fn workload() -> Workload {
    let mut config = WorkloadConfig::new(31, PROJECT);
    config.visitors = 200;
    config.base_ms = START_MS;
    config.span_ms = DAYS * DAY_MS;
    config.max_delay_ms = HOUR_MS;
    generate(&config)
}

/// Creates the project through node 2 (placement replicates it to every
/// node), sends the workload through node 1 and leaves every node's clock
/// just after the last event.
async fn load(nodes: &[TestNode], workload: &Workload) {
    create_project_everywhere(
        &[&nodes[1], &nodes[0], &nodes[2]],
        PROJECT,
        serde_json::json!({"bucket_ms": BUCKET_MS, "allowed_lateness_ms": ALLOWED_LATENESS_MS}),
    )
    .await;
    let mut accepted = 0;
    for (clock_ms, events) in workload.batches(HOUR_MS, 5_000) {
        nodes[0].set_clock(clock_ms).await;
        let answer = nodes[0].send_batch(&events).await;
        assert!(answer.rejected.is_empty(), "{:?}", answer.rejected);
        accepted += answer.accepted;
    }
    assert_eq!(accepted, workload.distinct.len() as u64);
    for node in nodes {
        node.set_clock(workload.max_ts_ms() + MINUTE_MS).await;
    }
}

/// Results with the range left to the node (`from`: the experiment's first
/// bucket over the cluster; `to`: after the current bucket).
async fn default_range_results(node: &TestNode, experiment: &str) -> ResultsResponse {
    let path = format!(
        "/v1/projects/{PROJECT}/experiments/{experiment}/results?keys={}",
        KEYS.join(",")
    );
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "GET {path}: {}", raw.text);
    serde_json::from_value(raw.body).expect("a ResultsResponse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_member_answers_with_every_members_share_or_says_what_is_missing() {
    let mut nodes = form_three_node_cluster().await;
    let workload = workload();
    load(&nodes, &workload).await;
    let oracle = Oracle::new(OracleSettings::default(), &workload.distinct);
    let experiments: Vec<String> = oracle.experiments().into_iter().collect();
    assert!(!experiments.is_empty(), "the workload has experiments");
    let (from, to) = (START_MS, START_MS + (DAYS + 1) * DAY_MS);
    assert!(workload.max_ts_ms() < to);

    // (a) Every member answers what node 1, which holds the aggregates,
    // answers, and that is the oracle's answer.
    for experiment in &experiments {
        let expected = oracle.results(experiment, from, to, None, KEYS);
        let at_first = nodes[0]
            .results(PROJECT, experiment, from, to, None, KEYS)
            .await;
        assert_matches(
            &at_first,
            &expected,
            KEYS,
            &format!("{experiment} on node 1"),
        );
        assert!(!at_first.partial && at_first.missing_nodes.is_empty());
        for (index, node) in nodes.iter().enumerate().skip(1) {
            let answer = node
                .results(PROJECT, experiment, from, to, None, KEYS)
                .await;
            assert_eq!(answer, at_first, "{experiment} on node {}", index + 1);
        }
        // The default range starts at the experiment's first bucket over
        // the cluster, not over the asked node (which holds nothing).
        let by_default = default_range_results(&nodes[1], experiment).await;
        assert_eq!(
            by_default,
            default_range_results(&nodes[0], experiment).await
        );
        assert!(by_default.from <= workload.min_ts_ms(), "{by_default:?}");
    }
    // With a breakdown too.
    let breakdown_experiment = &experiments[0];
    let with_breakdown = nodes[2]
        .results(
            PROJECT,
            breakdown_experiment,
            from,
            to,
            Some("country"),
            KEYS,
        )
        .await;
    assert_matches(
        &with_breakdown,
        &oracle.results(breakdown_experiment, from, to, Some("country"), KEYS),
        KEYS,
        "breakdown on node 3",
    );
    // An experiment no member holds is unknown, on every member.
    let unknown = nodes[1]
        .get_raw(&format!(
            "/v1/projects/{PROJECT}/experiments/nowhere/results?from={from}&to={to}"
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.error_code(), Some("unknown_experiment"));

    // (b) Node 3 gone: node 2 still answers, says node 3's share is
    // missing, and (node 3 held nothing) the numbers are still right.
    nodes[2].kill_9().await;
    for experiment in &experiments {
        let answer = nodes[1]
            .results(PROJECT, experiment, from, to, None, KEYS)
            .await;
        assert!(answer.partial, "{answer:?}");
        assert_eq!(answer.missing_nodes, vec![3]);
        assert_matches(
            &answer,
            &oracle.results(experiment, from, to, None, KEYS),
            KEYS,
            &format!("{experiment} on node 2 without node 3"),
        );
    }
    // The flags are on the wire.
    let raw = nodes[0]
        .get_raw(&TestNode::results_path(
            PROJECT,
            &experiments[0],
            from,
            to,
            None,
            KEYS,
        ))
        .await;
    assert_eq!(raw.body["partial"], serde_json::json!(true), "{}", raw.text);
    assert_eq!(raw.body["missing_nodes"], serde_json::json!([3]));
}

#[tokio::test]
async fn the_partial_endpoint_needs_the_cluster_secret() {
    let first = start_member(1, None).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    first
        .create_project(PROJECT, serde_json::json!({"bucket_ms": BUCKET_MS}))
        .await;
    let path = "/v1/internal/partial";
    let body = serde_json::json!({
        "project": PROJECT,
        "experiment": "checkout",
        "from": START_MS,
        "to": START_MS + HOUR_MS,
    })
    .to_string();
    let wrong = first
        .post_with_headers(
            path,
            &[("authorization", "Bearer wrong-cluster-secret-0123456789")],
            body.clone(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_code(), Some("unauthorized"));
    let anonymous = first.post_anonymous(path, body.clone()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let right = format!("Bearer {CLUSTER_SECRET}");
    let malformed = first
        .post_with_headers(path, &[("authorization", right.as_str())], "{}")
        .await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.text
    );
    let share = first
        .post_with_headers(path, &[("authorization", right.as_str())], body)
        .await;
    assert_eq!(share.status, StatusCode::OK, "{}", share.text);
}
