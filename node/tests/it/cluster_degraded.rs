//! Drains and rebalances with a member down, with real node processes on
//! loopback (`docs/cluster.md`, "Draining and removing a node",
//! "Rebalance"): a drain that cannot move a node's shards answers an
//! error and can be undone; a rebalance leaves a member that does not
//! answer out of its plan. Every wait is bounded polling on a condition.

use crate::support::cluster::{form_three_node_cluster, wait_for, SHARDS};
use reqwest::StatusCode;
use sessiondb_protocol::{
    ClusterStatus, DrainFailure, DrainReport, ErrorCode, RebalanceReport, UndrainReport,
};

fn owned_by(status: &ClusterStatus, node: u64) -> usize {
    status
        .shards
        .iter()
        .filter(|shard| shard.owner == node)
        .count()
}

fn draining(status: &ClusterStatus, node: u64) -> bool {
    status
        .members
        .iter()
        .any(|member| member.node_id == node && member.draining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_left_out_and_a_failed_drain_is_undone() {
    let mut nodes = form_three_node_cluster().await;
    let raw = nodes[0].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    let live = [&nodes[0], &nodes[1], &nodes[2]];
    let balanced = wait_for(&live, &[1, 2, 3], "balanced", |status| {
        (1..=3).all(|node| owned_by(status, node) >= (SHARDS / 3) as usize)
    })
    .await;
    let third_owns = owned_by(&balanced, 3);
    assert!(third_owns > 0);

    nodes[2].kill_9().await;
    let live = [&nodes[0], &nodes[1]];

    // Draining the dead node cannot move its shards: an error, not 200.
    let raw = nodes[0].post_admin("/v1/cluster/nodes/3/drain", "").await;
    assert_eq!(raw.status, StatusCode::BAD_GATEWAY, "{:?}", raw.body);
    let failure: DrainFailure = serde_json::from_value(raw.body).expect("a DrainFailure");
    assert_eq!(failure.error, ErrorCode::NodeUnreachable);
    assert_eq!(failure.report.remaining_shards as usize, third_owns);
    assert_eq!(failure.report.moves.unreachable, vec![3]);
    assert!(failure.message.contains("undrain"), "{}", failure.message);
    wait_for(&live, &[1, 2, 3], "node 3 draining", |status| {
        draining(status, 3)
    })
    .await;

    // Undrain takes the mark back (through a follower: it forwards).
    let raw = nodes[1].post_admin("/v1/cluster/nodes/3/undrain", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    let undone: UndrainReport = serde_json::from_value(raw.body).expect("an UndrainReport");
    assert!(undone.was_draining);
    wait_for(&live, &[1, 2, 3], "node 3 not draining", |status| {
        !draining(status, 3)
    })
    .await;

    // Draining node 2 moves its shards to node 1 only: the dead node 3
    // receives none.
    let raw = nodes[0].post_admin("/v1/cluster/nodes/2/drain", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    let drained: DrainReport = serde_json::from_value(raw.body).expect("a DrainReport");
    assert_eq!(drained.remaining_shards, 0, "{drained:?}");
    assert_eq!(drained.moves.unreachable, vec![3]);
    assert!(drained.moves.failures.is_empty(), "{drained:?}");
    assert!(
        !drained.moves.moved.is_empty() && drained.moves.moved.iter().all(|m| m.to == 1),
        "{drained:?}"
    );

    // Undrained, node 2 gets its share back from node 1; nothing moves
    // from or to node 3, which keeps its shards.
    let raw = nodes[0].post_admin("/v1/cluster/nodes/2/undrain", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    wait_for(&live, &[1, 2, 3], "node 2 not draining", |status| {
        !draining(status, 2)
    })
    .await;
    let raw = nodes[0].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.body);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert_eq!(report.unreachable, vec![3]);
    assert!(
        report.failures.is_empty() && report.failed.is_none(),
        "{report:?}"
    );
    assert!(
        report
            .plan
            .iter()
            .all(|step| step.from != 3 && step.to != 3),
        "{report:?}"
    );
    let movable = SHARDS as usize - third_owns;
    let after = wait_for(&live, &[1, 2, 3], "nodes 1 and 2 even", |status| {
        owned_by(status, 1).abs_diff(owned_by(status, 2)) <= 1
    })
    .await;
    assert_eq!(owned_by(&after, 3), third_owns);
    assert_eq!(owned_by(&after, 1) + owned_by(&after, 2), movable);
}
