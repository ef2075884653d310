//! A cluster of real nodes on loopback for the multi-node tests: starting
//! members, reading `GET /v1/cluster`, and waiting (bounded polling) until
//! every node agrees on the members and a shard map.

use super::node::{NodeOptions, TestNode};
use reqwest::StatusCode;
use sessiondb_node::hashing::shard_of;
use sessiondb_protocol::{ClusterStatus, Event};
use sessiondb_test_support::eventually;
use std::collections::BTreeMap;
use std::time::Duration;

/// 2025-11-26 00:00:00 UTC: every member's manual clock.
pub const START_MS: i64 = 1_764_115_200_000;
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdef";
pub const SHARDS: u32 = 8;
/// Short election timeouts keep failover within a second or two.
const ELECTION_TIMEOUT_MS: &str = "500";
/// How long the nodes may take to agree before the test fails (debug builds
/// on a busy 2-core machine are slow; a bound, not a delay).
pub const AGREEMENT_WAIT_MAX: Duration = Duration::from_secs(90);

/// The options every member starts with.
pub fn member_options() -> NodeOptions {
    NodeOptions {
        start_ms: START_MS,
        shards: Some(SHARDS),
    }
}

/// The `serve` flags of member `node_id` with cluster secret `secret`,
/// joining through `join` when given.
pub fn cluster_args(node_id: u64, join: Option<&TestNode>, secret: &str) -> Vec<String> {
    let mut args = vec![
        "--node-id".to_string(),
        node_id.to_string(),
        "--cluster-secret".to_string(),
        secret.to_string(),
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
    let args = cluster_args(node_id, join, CLUSTER_SECRET);
    TestNode::start_with_args(member_options(), args).await
}

/// `GET /v1/cluster` on one node, `None` while it does not answer 200.
pub async fn cluster_status(node: &TestNode) -> Option<ClusterStatus> {
    let raw = node.get_admin("/v1/cluster").await;
    if raw.status != StatusCode::OK {
        return None;
    }
    Some(serde_json::from_value(raw.body).expect("a ClusterStatus body"))
}

/// Polls every node until `agreed` holds for their statuses together (all
/// of them answering); answers them in `nodes` order.
pub async fn wait_until(
    nodes: &[&TestNode],
    what: &str,
    agreed: impl Fn(&[ClusterStatus]) -> bool,
) -> Vec<ClusterStatus> {
    eventually(AGREEMENT_WAIT_MAX, what, async || {
        let mut statuses = Vec::new();
        for node in nodes {
            if let Some(status) = cluster_status(node).await {
                statuses.push(status);
            }
        }
        if statuses.len() == nodes.len() && agreed(&statuses) {
            Ok(statuses)
        } else {
            Err(format!("{statuses:#?}"))
        }
    })
    .await
}

/// Polls until every node reports a leader, the members `ids` and a shard
/// map for which `accept` holds; answers the first node's status.
pub async fn wait_for(
    nodes: &[&TestNode],
    ids: &[u64],
    what: &str,
    accept: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let mut statuses = wait_until(nodes, what, |statuses| {
        statuses.iter().all(|status| {
            status.leader.is_some()
                && status.shards.len() == SHARDS as usize
                && status
                    .members
                    .iter()
                    .map(|member| member.node_id)
                    .eq(ids.iter().copied())
                && accept(status)
        })
    })
    .await;
    statuses.swap_remove(0)
}

/// Creates a project through `nodes[0]` (placement replicates it) and
/// polls until every node knows it.
pub async fn create_project_everywhere(
    nodes: &[&TestNode],
    name: &str,
    settings: serde_json::Value,
) -> sessiondb_protocol::Project {
    let created = nodes[0].create_project(name, settings).await;
    for node in nodes {
        let project = node.project_eventually(name).await;
        // The key is shown only at creation; the settings agree.
        assert_eq!(project.ingest_key, None);
        assert_eq!(project.settings, created.settings);
    }
    created
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

pub fn shard(event: &Event) -> u32 {
    shard_of(&event.project, &event.visitor, SHARDS)
}

/// Shard → owner.
pub fn owners(status: &ClusterStatus) -> BTreeMap<u32, u64> {
    status
        .shards
        .iter()
        .map(|shard| (shard.shard, shard.owner))
        .collect()
}

/// Sets every node's manual clock.
pub async fn set_clocks(nodes: &[TestNode], now_ms: i64) {
    for node in nodes {
        node.set_clock(now_ms).await;
    }
}

/// Sends `events` to each one's owner per `owners` (node `n` is
/// `nodes[n - 1]`); events answered with a retryable `shard_moving` or
/// `not_owner` are sent again until accepted (a node's roles follow its
/// placement view a moment after the view changes; bounded by
/// `AGREEMENT_WAIT_MAX`). Any other rejection fails.
/// Answers (accepted, duplicates).
pub async fn send_routed(
    nodes: &[TestNode],
    owners: &BTreeMap<u32, u64>,
    events: &[Event],
) -> (u64, u64) {
    let mut by_owner: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_owner
            .entry(owners[&shard(event)])
            .or_default()
            .push(event.clone());
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for (owner, mut pending) in by_owner {
        let node = &nodes[usize::try_from(owner - 1).expect("a small id")];
        eventually(
            AGREEMENT_WAIT_MAX,
            &format!("node {owner} accepting the events it owns"),
            async || {
                let answer = node.send_batch(&pending).await;
                accepted += answer.accepted;
                duplicates += answer.duplicates;
                let mut retry = Vec::new();
                for rejection in &answer.rejected {
                    assert!(
                        rejection.reason == "shard_moving" || rejection.reason == "not_owner",
                        "node {owner}: {rejection:?}"
                    );
                    retry.push(pending[rejection.index].clone());
                }
                pending = retry;
                if pending.is_empty() {
                    Ok(())
                } else {
                    Err(format!("node {owner} kept refusing {pending:?}"))
                }
            },
        )
        .await;
    }
    (accepted, duplicates)
}
