//! Draining and removing nodes, and losing the leader, with real node
//! processes on loopback (`docs/cluster.md`, "Draining and removing a
//! node", "Leader changes"). Each test streams a workload in thirds around
//! the cluster changes and then checks every serving node against the
//! oracle (no loss, no double count, not partial) and the shard map (one
//! owner per shard that every node agrees on, epochs never going back).
//! Every wait is bounded polling on a condition.

use crate::support::cluster::{
    create_project_everywhere, form_three_node_cluster, owners, send_routed, set_clocks,
    start_member, wait_for, START_MS,
};
use crate::support::node::TestNode;
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_protocol::{ClusterStatus, DrainReport, Event, NodeRemoveReport, RebalanceReport};
use sessiondb_test_support::oracle::{assert_matches, Oracle, OracleSettings};
use std::collections::BTreeMap;

const PROJECT: &str = "members";
const KEYS: &[&str] = &["add_to_cart", "purchase"];
const DAYS: i64 = 2;

fn workload(seed: u64) -> Workload {
    let mut config = WorkloadConfig::new(seed, PROJECT);
    config.visitors = 200;
    config.base_ms = START_MS;
    config.span_ms = DAYS * DAY_MS;
    config.max_delay_ms = HOUR_MS;
    generate(&config)
}

fn settings() -> serde_json::Value {
    serde_json::json!({"bucket_ms": HOUR_MS, "allowed_lateness_ms": 7 * DAY_MS})
}

type Batches = Vec<(i64, Vec<Event>)>;

/// The workload's batches in three consecutive parts.
fn thirds(workload: &Workload) -> [Batches; 3] {
    let batches = workload.batches(HOUR_MS, 5_000);
    let third = batches.len().div_ceil(3);
    let mut parts = batches.chunks(third).map(<[_]>::to_vec);
    let parts = [
        parts.next().expect("a first third"),
        parts.next().expect("a second third"),
        parts.next().expect("a last third"),
    ];
    assert!(parts.iter().all(|part| !part.is_empty()));
    parts
}

/// Sends `batches` routed by the current map (read from the first live
/// node), setting the live nodes' clocks to each batch's time.
async fn send_part(
    nodes: &[TestNode],
    live: &[usize],
    batches: &[(i64, Vec<Event>)],
) -> (u64, u64) {
    let map = crate::support::cluster::cluster_status(&nodes[live[0]])
        .await
        .expect("a cluster status");
    let (mut accepted, mut duplicates) = (0, 0);
    for (clock_ms, events) in batches {
        for index in live {
            nodes[*index].set_clock(*clock_ms).await;
        }
        let (a, d) = send_routed(nodes, &owners(&map), events).await;
        accepted += a;
        duplicates += d;
    }
    (accepted, duplicates)
}

/// Every node in `serving` answers the oracle over `events`, in full.
async fn assert_oracle(nodes: &[TestNode], serving: &[usize], events: &[Event], what: &str) {
    let oracle = Oracle::new(OracleSettings::default(), events);
    let experiments: Vec<String> = oracle.experiments().into_iter().collect();
    assert!(!experiments.is_empty());
    let (from, to) = (START_MS, START_MS + (DAYS + 1) * DAY_MS);
    for experiment in &experiments {
        let expected = oracle.results(experiment, from, to, None, KEYS);
        for index in serving {
            let answer = nodes[*index]
                .results(PROJECT, experiment, from, to, None, KEYS)
                .await;
            assert!(
                !answer.partial && answer.missing_nodes.is_empty(),
                "{what}: node {} answered partial: {answer:?}",
                index + 1
            );
            assert_matches(
                &answer,
                &expected,
                KEYS,
                &format!("{what}: {experiment} on node {}", index + 1),
            );
        }
    }
}

/// Polls until the nodes at `serving` agree on the members (exactly
/// those) and every member's address is the one it listens on now (a
/// restarted node comes back on a new port and announces it).
async fn wait_for_addresses(nodes: &[TestNode], serving: &[usize], what: &str) -> ClusterStatus {
    let ids: Vec<u64> = serving.iter().map(|index| *index as u64 + 1).collect();
    let serving_nodes: Vec<&TestNode> = serving.iter().map(|index| &nodes[*index]).collect();
    wait_for(&serving_nodes, &ids, what, |status| {
        status.members.iter().all(|member| {
            let index = usize::try_from(member.node_id - 1).expect("a small id");
            member.address == nodes[index].address()
        })
    })
    .await
}

/// Every shard's epoch in `after` is at least its epoch in `before`.
fn assert_epochs_grew(before: &ClusterStatus, after: &ClusterStatus) {
    for (old, new) in before.shards.iter().zip(&after.shards) {
        assert_eq!(old.shard, new.shard);
        assert!(
            new.epoch >= old.epoch,
            "shard {} went from epoch {} to {}",
            old.shard,
            old.epoch,
            new.epoch
        );
        assert!(
            new.epoch > old.epoch || new.owner == old.owner,
            "{old:?} → {new:?}"
        );
    }
}

/// The distinct events among `batches`.
fn distinct_of(parts: &[&Batches], workload: &Workload) -> Vec<Event> {
    let sent: std::collections::HashSet<&str> = parts
        .iter()
        .flat_map(|part| part.iter())
        .flat_map(|(_, events)| events)
        .map(|event| event.id.as_str())
        .collect();
    workload
        .distinct
        .iter()
        .filter(|event| sent.contains(event.id.as_str()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_and_removed_node_leaves_its_counts_behind() {
    let mut nodes = form_three_node_cluster().await;
    // Created through node 3: placement gives it to every member.
    create_project_everywhere(&[&nodes[2], &nodes[0], &nodes[1]], PROJECT, settings()).await;
    let workload = workload(61);
    let [first, second, last] = thirds(&workload);

    // Rebalance (asked of node 2, which forwards it unless it leads), then
    // the first third by owner.
    let raw = nodes[1].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert!(
        report.failed.is_none() && !report.moved.is_empty(),
        "{report:?}"
    );
    let balanced = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "balanced",
        |s| {
            s.shards.iter().all(|shard| shard.moving_to.is_none())
                && owners(s).values().any(|owner| *owner == 3)
        },
    )
    .await;
    let (mut accepted, mut duplicates) = send_part(&nodes, &[0, 1, 2], &first).await;

    // Drain node 3 through node 1: it owns nothing afterwards, is marked
    // draining, and its counts still answer through it.
    let raw = nodes[0].post_admin("/v1/cluster/nodes/3/drain", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let drained: DrainReport = serde_json::from_value(raw.body).expect("a DrainReport");
    assert_eq!(drained.remaining_shards, 0, "{drained:?}");
    assert!(drained.moves.failed.is_none(), "{drained:?}");
    assert!(
        drained.moves.moved.iter().all(|m| m.from == 3 && m.to != 3),
        "{drained:?}"
    );
    let after_drain = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "drained",
        |s| {
            !owners(s).values().any(|owner| *owner == 3)
                && s.members.iter().any(|m| m.node_id == 3 && m.draining)
        },
    )
    .await;
    assert_epochs_grew(&balanced, &after_drain);
    // A drained node receives no shard from a rebalance.
    let raw = nodes[2].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert!(report.plan.iter().all(|step| step.to != 3), "{report:?}");
    // A move to it is refused.
    let refused = nodes[0]
        .post_admin("/v1/cluster/shards/0/move", r#"{"to": 3}"#)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_oracle(
        &nodes,
        &[0, 1, 2],
        &distinct_of(&[&first], &workload),
        "after the drain",
    )
    .await;

    // The second third goes to the remaining owners.
    let (a, d) = send_part(&nodes, &[0, 1, 2], &second).await;
    accepted += a;
    duplicates += d;

    // An owner cannot be removed; the drained node can.
    let owner_of_0 = owners(&after_drain)[&0];
    let refused = nodes[0]
        .post_admin(&format!("/v1/cluster/nodes/{owner_of_0}/remove"), "")
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.error_code(), Some("still_owns_shards"));
    let raw = nodes[1].post_admin("/v1/cluster/nodes/3/remove", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let removed: NodeRemoveReport = serde_json::from_value(raw.body).expect("a NodeRemoveReport");
    assert_eq!(removed.node_id, 3);
    assert_eq!(
        removed.stores_kept_by, 1,
        "the lowest remaining id keeps them"
    );
    assert!(removed.bytes > 0, "{removed:?}");
    let after_remove = wait_for(&[&nodes[0], &nodes[1]], &[1, 2], "node 3 removed", |s| {
        s.retired.len() == 1 && s.retired[0].node_id == 3 && s.retired[0].kept_by == 1
    })
    .await;
    assert_epochs_grew(&after_drain, &after_remove);
    // Its process can go: nodes 1 and 2 answer every count it held.
    nodes[2].kill_9().await;
    let sent_so_far = distinct_of(&[&first, &second], &workload);
    assert_oracle(&nodes, &[0, 1], &sent_so_far, "after the removal").await;
    // Removing it again: it is not a member.
    let again = nodes[0].post_admin("/v1/cluster/nodes/3/remove", "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
    assert_eq!(again.error_code(), Some("not_a_member"));

    // The last third, then the keeper restarts twice: once replaying the
    // absorbed stores from its log, once from a checkpoint.
    let (a, d) = send_part(&nodes, &[0, 1], &last).await;
    accepted += a;
    duplicates += d;
    assert_eq!(accepted, workload.distinct.len() as u64);
    assert_eq!(accepted + duplicates, workload.arrival.len() as u64);
    let end_ms = workload.max_ts_ms() + MINUTE_MS;
    set_clocks(&nodes[..2], end_ms).await;
    assert_oracle(&nodes, &[0, 1], &workload.distinct, "all events").await;
    nodes[0].kill_9().await;
    nodes[0].restart().await;
    wait_for_addresses(&nodes, &[0, 1], "the keeper back").await;
    set_clocks(&nodes[..2], end_ms).await;
    assert_oracle(
        &nodes,
        &[0, 1],
        &workload.distinct,
        "keeper replayed its log",
    )
    .await;
    let checkpoint = nodes[0].post_admin("/v1/admin/checkpoint", "").await;
    assert_eq!(checkpoint.status, StatusCode::OK, "{}", checkpoint.text);
    nodes[0].kill_9().await;
    nodes[0].restart().await;
    wait_for_addresses(&nodes, &[0, 1], "the keeper back again").await;
    set_clocks(&nodes[..2], end_ms).await;
    assert_oracle(
        &nodes,
        &[0, 1],
        &workload.distinct,
        "keeper from its checkpoint",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_and_takes_its_share_of_shards() {
    let mut nodes = form_three_node_cluster().await;
    create_project_everywhere(&[&nodes[0], &nodes[1], &nodes[2]], PROJECT, settings()).await;
    let workload = workload(63);
    let [first, second, last] = thirds(&workload);
    let raw = nodes[2].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let three = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "balanced",
        |s| (1..=3).all(|node| owners(s).values().any(|owner| *owner == node)),
    )
    .await;
    let (mut accepted, mut duplicates) = send_part(&nodes, &[0, 1, 2], &first).await;

    // Node 4 joins (a learner: three voters already), learns the project
    // from placement, and a rebalance gives it a share.
    let fourth = start_member(4, Some(&nodes[1])).await;
    nodes.push(fourth);
    let joined = wait_for_addresses(&nodes, &[0, 1, 2, 3], "four members").await;
    assert_eq!(joined.members.len(), 4);
    nodes[3].project_eventually(PROJECT).await;
    let (a, d) = send_part(&nodes, &[0, 1, 2, 3], &second).await;
    accepted += a;
    duplicates += d;
    let raw = nodes[3].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert!(report.failed.is_none(), "{report:?}");
    assert!(report.moved.iter().any(|m| m.to == 4), "{report:?}");
    let four = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2], &nodes[3]],
        &[1, 2, 3, 4],
        "four owners",
        |s| {
            owners(s).values().any(|owner| *owner == 4)
                && s.shards.iter().all(|shard| shard.moving_to.is_none())
        },
    )
    .await;
    assert_epochs_grew(&three, &four);
    let (a, d) = send_part(&nodes, &[0, 1, 2, 3], &last).await;
    accepted += a;
    duplicates += d;
    assert_eq!(accepted, workload.distinct.len() as u64);
    assert_eq!(accepted + duplicates, workload.arrival.len() as u64);
    set_clocks(&nodes, workload.max_ts_ms() + MINUTE_MS).await;
    assert_oracle(
        &nodes,
        &[0, 1, 2, 3],
        &workload.distinct,
        "with a fourth node",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_loses_no_acknowledged_event() {
    let mut nodes = form_three_node_cluster().await;
    create_project_everywhere(&[&nodes[0], &nodes[1], &nodes[2]], PROJECT, settings()).await;
    let workload = workload(62);
    let [first, second, last] = thirds(&workload);
    let raw = nodes[0].post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let balanced = wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "balanced",
        |s| {
            let owners = owners(s);
            (1..=3).all(|node| owners.values().any(|owner| *owner == node))
                && s.shards.iter().all(|shard| shard.moving_to.is_none())
        },
    )
    .await;
    let (mut accepted, mut duplicates) = send_part(&nodes, &[0, 1, 2], &first).await;

    // SIGKILL the leader; the two others elect a new one.
    let old_leader = balanced.leader.expect("a leader");
    let dead = usize::try_from(old_leader - 1).expect("a small id");
    let live: Vec<usize> = (0..3).filter(|index| *index != dead).collect();
    nodes[dead].kill_9().await;
    let survivors: Vec<&TestNode> = live.iter().map(|index| &nodes[*index]).collect();
    let elected = wait_for(&survivors, &[1, 2, 3], "a new leader", |s| {
        s.leader.is_some_and(|leader| leader != old_leader)
    })
    .await;
    assert!(
        elected.term > balanced.term,
        "{} → {}",
        balanced.term,
        elected.term
    );

    // Operations keep working through either survivor: a move between
    // them, asked of the one that does not lead.
    let new_leader = elected.leader.expect("a leader");
    let asker = live
        .iter()
        .copied()
        .find(|index| *index as u64 + 1 != new_leader)
        .expect("a follower survivor");
    let (moved_shard, _) = owners(&elected)
        .into_iter()
        .find(|(_, owner)| *owner == new_leader)
        .expect("the new leader owns a shard");
    let target = asker as u64 + 1;
    let raw = nodes[asker]
        .post_admin(
            &format!("/v1/cluster/shards/{moved_shard}/move"),
            format!(r#"{{"to": {target}}}"#),
        )
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);

    // The second third: the dead node's shards wait for it.
    let map = wait_for(&survivors, &[1, 2, 3], "the move", |s| {
        owners(s)[&moved_shard] == target
    })
    .await;
    let map_owners = owners(&map);
    let (now, later): (Vec<_>, Vec<_>) = second
        .iter()
        .flat_map(|(clock_ms, events)| events.iter().map(move |event| (*clock_ms, event.clone())))
        .partition(|(_, event)| map_owners[&crate::support::cluster::shard(event)] != old_leader);
    let mut by_clock: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for (clock_ms, event) in now {
        by_clock.entry(clock_ms).or_default().push(event);
    }
    let now: Batches = by_clock.into_iter().collect();
    let (a, d) = send_part(&nodes, &live, &now).await;
    accepted += a;
    duplicates += d;

    // The old leader comes back on its data and takes its shards again.
    nodes[dead].restart().await;
    let back = wait_for_addresses(&nodes, &[0, 1, 2], "all three").await;
    assert_epochs_grew(&balanced, &back);
    // At the second third's last clock: clocks never go back.
    let second_end_ms = second.last().expect("a batch").0;
    let later: Batches = vec![(
        second_end_ms,
        later.into_iter().map(|(_, event)| event).collect(),
    )];
    let (a, d) = send_part(&nodes, &[0, 1, 2], &later).await;
    accepted += a;
    duplicates += d;
    let (a, d) = send_part(&nodes, &[0, 1, 2], &last).await;
    accepted += a;
    duplicates += d;
    assert_eq!(accepted, workload.distinct.len() as u64);
    assert_eq!(accepted + duplicates, workload.arrival.len() as u64);
    set_clocks(&nodes, workload.max_ts_ms() + MINUTE_MS).await;
    assert_oracle(
        &nodes,
        &[0, 1, 2],
        &workload.distinct,
        "after the leader's loss",
    )
    .await;
    // Every node agrees on one owner per shard.
    let maps: Vec<BTreeMap<u32, u64>> = {
        let mut maps = Vec::new();
        for node in &nodes {
            let status = crate::support::cluster::cluster_status(node)
                .await
                .expect("a status");
            maps.push(owners(&status));
        }
        maps
    };
    assert!(maps.windows(2).all(|pair| pair[0] == pair[1]), "{maps:?}");
    // Time series gather every member's share too: each node's series is
    // whole and each point equals the results over its interval.
    let experiment = Oracle::new(OracleSettings::default(), &workload.distinct)
        .experiments()
        .into_iter()
        .next()
        .expect("an experiment");
    let mut seen = Vec::new();
    for node in &nodes {
        seen.push(assert_series_matches_results(node, &experiment).await);
    }
    assert!(seen.windows(2).all(|pair| pair[0] == pair[1]));
}

/// Checks one node's 12-hour series of `experiment` against its results
/// per interval; answers the series.
async fn assert_series_matches_results(
    node: &TestNode,
    experiment: &str,
) -> sessiondb_protocol::TimeSeriesResponse {
    let interval_ms = 12 * HOUR_MS;
    let (from, to) = (START_MS, START_MS + (DAYS + 1) * DAY_MS);
    let path = format!(
        "/v1/projects/{PROJECT}/experiments/{experiment}/timeseries?from={from}&to={to}&interval_ms={interval_ms}&keys=purchase"
    );
    let raw = node.get_raw(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let series: sessiondb_protocol::TimeSeriesResponse =
        serde_json::from_value(raw.body).expect("a TimeSeriesResponse");
    assert!(
        !series.partial && series.missing_nodes.is_empty(),
        "{series:?}"
    );
    assert!(!series.variations.is_empty());
    for variation in &series.variations {
        assert_eq!(variation.points.len(), 6, "{variation:?}");
        for point in &variation.points {
            let results = node
                .results(
                    PROJECT,
                    experiment,
                    point.ts,
                    point.ts + interval_ms,
                    None,
                    &["purchase"],
                )
                .await;
            let expected = results.groups[0]
                .variations
                .iter()
                .find(|v| v.variation == variation.variation);
            let (visitors, sessions, conversions) = expected.map_or((0, 0, 0), |v| {
                (
                    v.visitors,
                    v.sessions.sessions,
                    v.metrics[0].total_conversions,
                )
            });
            assert_eq!(
                (point.visitors, point.sessions, point.total_conversions[0]),
                (visitors, sessions, conversions),
                "{} at {}",
                variation.variation,
                point.ts
            );
        }
    }
    series
}
