//! A cluster of real nodes on loopback for the multi-node tests: starting
//! members, reading `GET /v1/cluster`, and waiting (bounded polling) until
//! every node agrees on the members and a shard map.

use super::node::{NodeOptions, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::ClusterStatus;
use std::time::{Duration, Instant};

/// 2025-11-26 00:00:00 UTC: every member's manual clock.
pub const START_MS: i64 = 1_764_115_200_000;
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdef";
pub const SHARDS: u32 = 8;
/// Short election timeouts keep failover within a second or two.
const ELECTION_TIMEOUT_MS: &str = "500";
/// How long the nodes may take to agree before the test fails (a bound,
/// not a delay).
const AGREEMENT_WAIT_MAX: Duration = Duration::from_secs(90);
/// Pause between two polls of the nodes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn cluster_args(node_id: u64, join: Option<&TestNode>) -> Vec<String> {
    let mut args = vec![
        "--node-id".to_string(),
        node_id.to_string(),
        "--cluster-secret".to_string(),
        CLUSTER_SECRET.to_string(),
        "--raft-election-timeout-ms".to_string(),
        ELECTION_TIMEOUT_MS.to_string(),
    ];
    if let Some(member) = join {
        args.push("--join".to_string());
        args.push(member.base_url().to_string());
    }
    args
}

/// Starts node `node_id`, joining through `join` when given.
pub async fn start_member(node_id: u64, join: Option<&TestNode>) -> TestNode {
    let options = NodeOptions {
        start_ms: START_MS,
        shards: Some(SHARDS),
    };
    TestNode::start_with_args(options, cluster_args(node_id, join)).await
}

/// `GET /v1/cluster` on one node, `None` while it does not answer 200.
pub async fn cluster_status(node: &TestNode) -> Option<ClusterStatus> {
    let raw = node.get_admin("/v1/cluster").await;
    if raw.status != StatusCode::OK {
        return None;
    }
    Some(serde_json::from_value(raw.body).expect("a ClusterStatus body"))
}

/// Polls until every node reports a leader, the members `ids` and a shard
/// map for which `accept` holds; answers the first node's status.
pub async fn wait_for(
    nodes: &[&TestNode],
    ids: &[u64],
    what: &str,
    accept: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + AGREEMENT_WAIT_MAX;
    loop {
        let mut statuses = Vec::new();
        for node in nodes {
            if let Some(status) = cluster_status(node).await {
                statuses.push(status);
            }
        }
        let agreed = statuses.len() == nodes.len()
            && statuses.iter().all(|status| {
                status.leader.is_some()
                    && status.shards.len() == SHARDS as usize
                    && status
                        .members
                        .iter()
                        .map(|member| member.node_id)
                        .eq(ids.iter().copied())
                    && accept(status)
            });
        if agreed {
            return statuses.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "no agreement on {what} within {AGREEMENT_WAIT_MAX:?}: {statuses:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Node 1 bootstraps, nodes 2 and 3 join it; returns once all agree.
pub async fn form_three_node_cluster() -> Vec<TestNode> {
    let first = start_member(1, None).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    let second = start_member(2, Some(&first)).await;
    let third = start_member(3, Some(&first)).await;
    wait_for(&[&first, &second, &third], &[1, 2, 3], "members", |_| true).await;
    vec![first, second, third]
}
