//! What a node brings to a cluster besides its id, with real node
//! processes on loopback (`docs/cluster.md`, "Node identity"): a joiner
//! takes the cluster's shard count (or is refused when its `--shards`
//! disagrees); a wiped data directory under an id the cluster knows, and a
//! data directory of another cluster, are refused. Every wait is bounded
//! polling on a condition.

use crate::support::cluster::{
    cluster_args, cluster_status, create_project_everywhere, owners, send_routed, start_member,
    wait_for, CLUSTER_SECRET, SHARDS, START_MS,
};
use crate::support::node::{NodeOptions, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Event, EventType, NodeStatus, ShardMap, Timestamp};
use sessiondb_test_support::eventually;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a node's identity file may take to name the cluster (it is
/// written when the node applies the cluster's id; a bound, not a delay).
const IDENTITY_WAIT_MAX: Duration = Duration::from_secs(90);

fn options(shards: Option<u32>) -> NodeOptions {
    NodeOptions {
        start_ms: START_MS,
        shards,
    }
}

/// `<data-dir>/node-identity` as JSON, `None` while it does not exist.
fn identity_file(node: &TestNode) -> Option<serde_json::Value> {
    let bytes = std::fs::read(node.node_data_dir().join("node-identity")).ok()?;
    Some(serde_json::from_slice(&bytes).expect("the identity file is JSON"))
}

/// Polls until the node's identity file names a cluster; answers the file.
async fn named_identity(node: &TestNode) -> serde_json::Value {
    eventually(
        IDENTITY_WAIT_MAX,
        "the identity file names the cluster",
        async || match identity_file(node) {
            Some(identity) if identity["cluster_id"].is_string() => Ok(identity),
            other => Err(format!("{other:?}")),
        },
    )
    .await
}

fn page_view(id: usize, visitor: &str) -> Event {
    Event {
        id: format!("identity-{id}"),
        project: "identity".to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(START_MS),
        event_type: EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_takes_the_clusters_shard_count_or_is_refused() {
    let first = start_member(1, None).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    // No --shards: the joiner takes the cluster's count (not the default
    // 256, which would route events to shards the map does not have).
    let second =
        TestNode::start_with_args(options(None), cluster_args(2, Some(&first), CLUSTER_SECRET))
            .await;
    wait_for(&[&first, &second], &[1, 2], "two members", |_| true).await;
    let status: NodeStatus =
        serde_json::from_value(second.get_raw("/v1/status").await.body).expect("a NodeStatus");
    assert_eq!(status.shards, SHARDS);
    let map: ShardMap =
        serde_json::from_value(second.get_raw("/v1/shard-map").await.body).expect("a ShardMap");
    assert_eq!(map.shards, SHARDS);

    // Once it owns shards, it accepts their events.
    let raw = first.post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    let balanced = wait_for(&[&first, &second], &[1, 2], "shards on node 2", |status| {
        status
            .shards
            .iter()
            .filter(|shard| shard.owner == 2)
            .count()
            == (SHARDS / 2) as usize
    })
    .await;
    create_project_everywhere(&[&first, &second], "identity", serde_json::json!({})).await;
    let events: Vec<Event> = (0..40)
        .map(|index| page_view(index, &format!("visitor-{index}")))
        .collect();
    let owner_of = owners(&balanced);
    assert!(
        events
            .iter()
            .any(|event| owner_of[&crate::support::cluster::shard(event)] == 2),
        "some events belong to node 2"
    );
    let nodes = vec![first, second];
    let (accepted, _) = send_routed(&nodes, &owner_of, &events).await;
    assert_eq!(accepted, 40);

    // An explicit --shards that disagrees stops the joiner, naming both.
    let refused = TestNode::try_start_with_args(
        options(Some(256)),
        cluster_args(3, Some(&nodes[0]), CLUSTER_SECRET),
    )
    .await
    .expect_err("a joiner with --shards 256 must not start in a cluster of 8 shards");
    assert!(
        refused.stderr.contains("--shards 256") && refused.stderr.contains("8 shards"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.status.and_then(|status| status.code()), Some(1));

    // A member restarted with a disagreeing --shards is refused too.
    let mut second = nodes.into_iter().nth(1).expect("node 2");
    second.kill_9().await;
    let mut args = cluster_args(2, None, CLUSTER_SECRET);
    args.extend(["--shards".to_string(), "16".to_string()]);
    let failure = second
        .try_restart_with_args(args)
        .await
        .expect_err("a member restarted with --shards 16 must not start");
    assert!(
        failure.stderr.contains("--shards 16") && failure.stderr.contains("8 shards"),
        "{}",
        failure.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_or_foreign_data_directory_is_refused() {
    let first = start_member(1, None).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    let mut second = start_member(2, Some(&first)).await;
    wait_for(&[&first, &second], &[1, 2], "two members", |_| true).await;
    let first_identity = named_identity(&first).await;
    let second_identity = named_identity(&second).await;
    assert_eq!(first_identity["cluster_id"], second_identity["cluster_id"]);
    assert_ne!(
        first_identity["incarnation"],
        second_identity["incarnation"]
    );

    // A Raft request meant for another data directory under node 1's id
    // (the incarnation its sender recorded) is refused; one naming node
    // 1's own incarnation reaches Raft (and its empty body is malformed).
    let secret = format!("Bearer {CLUSTER_SECRET}");
    let own = first_identity["incarnation"]
        .as_str()
        .expect("an incarnation");
    for (named, expected) in [
        ("0123456789abcdef", StatusCode::CONFLICT),
        (own, StatusCode::BAD_REQUEST),
    ] {
        let answer = first
            .post_with_headers(
                "/v1/internal/raft/vote",
                &[
                    ("authorization", secret.as_str()),
                    ("x-sessiondb-incarnation", named),
                ],
                "{}",
            )
            .await;
        assert_eq!(answer.status, expected, "{:?}", answer.body);
    }
    let refused = first
        .post_with_headers(
            "/v1/internal/raft/append",
            &[
                ("authorization", secret.as_str()),
                ("x-sessiondb-incarnation", "0123456789abcdef"),
            ],
            "{}",
        )
        .await;
    assert_eq!(refused.error_code(), Some("incarnation_mismatch"));

    // A restart on the same directory is the node the cluster knows.
    second.kill_9().await;
    second.restart().await;
    wait_for(&[&first, &second], &[1, 2], "node 2 back", |_| true).await;
    assert_eq!(identity_file(&second), Some(second_identity.clone()));

    // A wiped data directory under id 2: refused before it serves.
    second.kill_9().await;
    let data = second.node_data_dir();
    std::fs::remove_dir_all(&data).expect("wipe the data directory");
    std::fs::create_dir_all(&data).expect("recreate it empty");
    let failure = second
        .try_restart_with_args(cluster_args(2, Some(&first), CLUSTER_SECRET))
        .await
        .expect_err("a wiped node 2 must not join");
    assert!(
        failure
            .stderr
            .contains("node 2 is known to the cluster with another data directory"),
        "{}",
        failure.stderr
    );
    assert!(
        failure.stderr.contains("start this one under a new id"),
        "{}",
        failure.stderr
    );
    // The cluster still counts node 2 as the member it knew.
    let status = cluster_status(&first).await.expect("node 1 answers");
    assert!(status.members.iter().any(|member| member.node_id == 2));

    // The data directory of another cluster: refused, naming both ids.
    let mut stranger = start_member(7, None).await;
    wait_for(&[&stranger], &[7], "node 7 alone", |_| true).await;
    let stranger_identity = named_identity(&stranger).await;
    assert_ne!(
        stranger_identity["cluster_id"],
        first_identity["cluster_id"]
    );
    stranger.kill_9().await;
    let failure = stranger
        .try_restart_with_args(cluster_args(7, Some(&first), CLUSTER_SECRET))
        .await
        .expect_err("a data directory of another cluster must not join");
    let own = stranger_identity["cluster_id"].as_str().expect("an id");
    assert!(
        failure.stderr.contains("belongs to cluster") && failure.stderr.contains(own),
        "{}",
        failure.stderr
    );
}
