//! Shard moves and rebalance with real node processes on loopback
//! (`docs/cluster.md`, "The move protocol" and "Rebalance").
//!
//! A 3-node cluster starts with node 1 owning every shard. The first half
//! of a workload goes through node 1; a rebalance (run by the leader) hands
//! shards to nodes 2 and 3; the second half goes to each event's owner per
//! the shard map. Then: first-half events of moved shards sent again to
//! their new owners are duplicates (deduplication state moved), the old
//! owner refuses them with `not_owner`, and every node answers what the
//! oracle answers over every distinct event, not partial. Every wait is
//! bounded polling on a condition.

use crate::support::cluster::{
    create_project_everywhere, form_three_node_cluster, owners, send_routed, set_clocks, shard,
    start_member, wait_for, CLUSTER_SECRET, SHARDS, START_MS,
};
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_protocol::{Event, RebalanceReport, ShardMoveReport};
use sessiondb_test_support::oracle::{assert_matches, Oracle, OracleSettings};
use std::collections::{BTreeMap, BTreeSet};

const PROJECT: &str = "moves";
const KEYS: &[&str] = &["add_to_cart", "purchase"];
const BUCKET_MS: i64 = HOUR_MS;
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
const DAYS: i64 = 2;

fn workload() -> Workload {
    let mut config = WorkloadConfig::new(47, PROJECT);
    config.visitors = 200;
    config.base_ms = START_MS;
    config.span_ms = DAYS * DAY_MS;
    config.max_delay_ms = HOUR_MS;
    generate(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_moves_shards_with_their_dedup_state_and_results_stay_exact() {
    let nodes = form_three_node_cluster().await;
    create_project_everywhere(
        &[&nodes[0], &nodes[1], &nodes[2]],
        PROJECT,
        serde_json::json!({"bucket_ms": BUCKET_MS, "allowed_lateness_ms": ALLOWED_LATENESS_MS}),
    )
    .await;
    let workload = workload();
    let batches = workload.batches(HOUR_MS, 5_000);
    let (first_half, second_half) = batches.split_at(batches.len() / 2);
    assert!(!first_half.is_empty() && !second_half.is_empty());

    // First half: node 1 owns every shard.
    let before = wait_for(&[&nodes[0]], &[1, 2, 3], "the initial map", |_| true).await;
    assert!(before.shards.iter().all(|s| s.owner == 1 && s.epoch == 1));
    let (mut accepted, mut duplicates) = (0, 0);
    for (clock_ms, events) in first_half {
        set_clocks(&nodes, *clock_ms).await;
        let (a, d) = send_routed(&nodes, &owners(&before), events).await;
        accepted += a;
        duplicates += d;
    }

    // The leader moves shards; a follower hands the operator's request to
    // it (the internal endpoint needs the cluster secret) and answers the
    // leader's answer.
    let leader = before.leader.expect("a leader");
    let leader_node = &nodes[usize::try_from(leader - 1).expect("a small id")];
    let follower = nodes
        .iter()
        .find(|node| node.base_url() != leader_node.base_url())
        .expect("a follower");
    let anonymous = follower
        .post_anonymous("/v1/internal/leader", r#"{"operation": "rebalance"}"#)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // A move to a node that is not a member is refused and changes nothing.
    let stranger = leader_node
        .post_admin("/v1/cluster/shards/0/move", r#"{"to": 9}"#)
        .await;
    assert_eq!(stranger.status, StatusCode::CONFLICT, "{}", stranger.text);
    assert_eq!(stranger.error_code(), Some("move_refused"));
    // The internal endpoints need the cluster secret (and do not fence
    // without it: the rebalance below exports every moved shard).
    let anonymous = nodes[0]
        .post_anonymous("/v1/internal/shards/0/export", "")
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Rebalance, asked of a follower: 8 shards over 3 members → 3, 3, 2;
    // node 1 keeps 3.
    let raw = follower.post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert_eq!(report.plan.len(), 5, "{report:?}");
    assert!(
        report.failed.is_none() && report.skipped.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.moved.len(), 5);
    let moved: BTreeMap<u32, &ShardMoveReport> =
        report.moved.iter().map(|m| (m.shard, m)).collect();
    for (planned, done) in report.plan.iter().zip(&report.moved) {
        assert_eq!(
            (planned.shard, planned.from, planned.to),
            (done.shard, done.from, done.to)
        );
        assert_eq!(done.from, 1);
        assert_eq!(done.epoch, 2);
    }
    // Every node sees the new owners at epoch 2, and nothing in flight.
    let expected_owners: BTreeMap<u32, u64> = (0..SHARDS)
        .map(|shard| (shard, moved.get(&shard).map_or(1, |m| m.to)))
        .collect();
    let after = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "the rebalanced map",
        |status| {
            owners(status) == expected_owners
                && status.shards.iter().all(|s| {
                    s.moving_to.is_none()
                        && s.epoch == if moved.contains_key(&s.shard) { 2 } else { 1 }
                })
        },
    )
    .await;
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for owner in owners(&after).values() {
        *counts.entry(*owner).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3])
    );
    assert_eq!(counts.len(), 3, "{counts:?}");
    // Balanced now: another rebalance has nothing to do.
    let again = leader_node.post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let again: RebalanceReport = serde_json::from_value(again.body).expect("a RebalanceReport");
    assert!(again.plan.is_empty() && again.moved.is_empty(), "{again:?}");

    // Second half: each event to its shard's owner.
    for (clock_ms, events) in second_half {
        set_clocks(&nodes, *clock_ms).await;
        let (a, d) = send_routed(&nodes, &owners(&after), events).await;
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted, workload.distinct.len() as u64);
    assert_eq!(accepted + duplicates, workload.arrival.len() as u64);
    set_clocks(&nodes, workload.max_ts_ms() + MINUTE_MS).await;

    // First-half events of moved shards, sent again to their new owners:
    // every one a duplicate.
    let resent: Vec<Event> = first_half
        .iter()
        .flat_map(|(_, events)| events)
        .filter(|event| moved.contains_key(&shard(event)))
        .step_by(3)
        .cloned()
        .collect();
    assert!(!resent.is_empty());
    let (again_accepted, again_duplicates) = send_routed(&nodes, &owners(&after), &resent).await;
    assert_eq!(again_accepted, 0);
    assert_eq!(again_duplicates, resent.len() as u64);
    // The old owner refuses them: it no longer owns the shard.
    let refused = nodes[0].send_batch(&resent[..1]).await;
    assert_eq!(refused.accepted, 0);
    assert_eq!(refused.rejected.len(), 1, "{refused:?}");
    assert_eq!(refused.rejected[0].reason, "not_owner");

    // Every node answers the oracle over every distinct event, in full.
    let oracle = Oracle::new(OracleSettings::default(), &workload.distinct);
    let experiments: Vec<String> = oracle.experiments().into_iter().collect();
    assert!(!experiments.is_empty());
    let (from, to) = (START_MS, START_MS + (DAYS + 1) * DAY_MS);
    assert!(workload.max_ts_ms() < to);
    for experiment in &experiments {
        let expected = oracle.results(experiment, from, to, None, KEYS);
        for (index, node) in nodes.iter().enumerate() {
            let answer = node
                .results(PROJECT, experiment, from, to, None, KEYS)
                .await;
            assert!(
                !answer.partial && answer.missing_nodes.is_empty(),
                "{answer:?}"
            );
            assert_matches(
                &answer,
                &expected,
                KEYS,
                &format!("{experiment} on node {}", index + 1),
            );
        }
    }
}

#[tokio::test]
async fn internal_shard_endpoints_check_the_secret_and_their_input() {
    let node = start_member(1, None).await;
    wait_for(&[&node], &[1], "node 1 alone", |_| true).await;
    let secret = format!("Bearer {CLUSTER_SECRET}");
    let auth = [("authorization", secret.as_str())];
    let unknown = node
        .post_with_headers(&format!("/v1/internal/shards/{SHARDS}/export"), &auth, "")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.error_code(), Some("unknown_shard"));
    let garbage = node
        .post_with_headers(
            "/v1/internal/shards/1/import?epoch=2",
            &auth,
            "not a shard state",
        )
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.text);
    assert_eq!(garbage.error_code(), Some("malformed_shard_state"));
    let no_epoch = node
        .post_with_headers("/v1/internal/shards/1/import", &auth, "")
        .await;
    assert_eq!(
        no_epoch.status,
        StatusCode::BAD_REQUEST,
        "{}",
        no_epoch.text
    );
    // A move to the owner itself is refused by placement.
    let to_self = node
        .post_admin("/v1/cluster/shards/1/move", r#"{"to": 1}"#)
        .await;
    assert_eq!(to_self.status, StatusCode::CONFLICT, "{}", to_self.text);
    assert_eq!(to_self.error_code(), Some("move_refused"));
    let out_of_range = node
        .post_admin(&format!("/v1/cluster/shards/{SHARDS}/move"), r#"{"to": 1}"#)
        .await;
    assert_eq!(
        out_of_range.status,
        StatusCode::NOT_FOUND,
        "{}",
        out_of_range.text
    );
    // An export with no move begun is refused (after a bounded wait for
    // the `BeginMove`).
    let exported = node
        .post_with_headers("/v1/internal/shards/1/export", &auth, "")
        .await;
    assert_eq!(exported.status, StatusCode::CONFLICT, "{}", exported.text);
    assert_eq!(exported.error_code(), Some("move_not_begun"));
    // A single-node cluster is balanced: the rebalance plans nothing.
    let raw = node.post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert!(report.plan.is_empty(), "{report:?}");
}
