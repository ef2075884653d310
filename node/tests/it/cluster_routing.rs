//! Client-side routing against a real 3-node cluster on loopback
//! (`docs/client.md`, "Routing in a cluster"; `docs/cluster.md`, "Routing").
//!
//! 1. After a rebalance, a `Sender` with a `ShardMapRouter` sends a whole
//!    workload: every batch reaches the owner of its events (nothing is
//!    refused, each node applied exactly the events of the shards it owns),
//!    and every node answers what the oracle answers.
//! 2. Rebalance under continuous ingest: the sender streams while the
//!    leader rebalances and moves single shards; afterwards every event was
//!    applied exactly once, every node answers the oracle, and the shard
//!    maps seen along the way had one owner per shard and epochs that only
//!    grew.
//!
//! Every wait is bounded polling on a condition.

use crate::support::cluster::{
    create_project_everywhere, form_three_node_cluster, wait_for, SHARDS, START_MS,
};
use crate::support::node::{TestNode, TEST_ADMIN_TOKEN};
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_client::{Client, FlushReport, Sender, SenderConfig, ShardMapRouter};
use sessiondb_protocol::hashing::shard_of;
use sessiondb_protocol::{Event, NodeStatus, RebalanceReport, ShardMap, ShardMoveReport};
use sessiondb_test_support::oracle::{assert_matches, Oracle, OracleSettings};
use sessiondb_test_support::{eventually, POLL_INTERVAL};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PROJECT: &str = "routing";
const KEYS: &[&str] = &["add_to_cart", "purchase"];
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
const DAYS: i64 = 2;
/// Bound on waiting for the ingest to make progress.
const PROGRESS_WAIT_MAX: Duration = Duration::from_secs(120);

fn workload(seed: u64) -> Workload {
    let mut config = WorkloadConfig::new(seed, PROJECT);
    config.visitors = 300;
    config.base_ms = START_MS;
    config.span_ms = DAYS * DAY_MS;
    config.max_delay_ms = HOUR_MS;
    generate(&config)
}

/// A client of `node` carrying the admin token, the one credential of
/// every request a router built from it makes.
fn admin_client(node: &TestNode) -> Client {
    Client::new(node.base_url()).with_token(TEST_ADMIN_TOKEN)
}

/// A sender that outlasts shard moves: many attempts, short backoffs.
fn sender_config() -> SenderConfig {
    SenderConfig {
        batch_events_max: 200,
        buffer_events_max: 2_000,
        retry_attempts_max: 60,
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(250),
        ..SenderConfig::default()
    }
}

/// Creates the project (placement replicates it to every node) and sets
/// every clock past the workload (the lateness horizon covers it all).
async fn prepare(nodes: &[TestNode], workload: &Workload) {
    let members: Vec<&TestNode> = nodes.iter().collect();
    create_project_everywhere(
        &members,
        PROJECT,
        serde_json::json!({"bucket_ms": HOUR_MS, "allowed_lateness_ms": ALLOWED_LATENESS_MS}),
    )
    .await;
    for node in nodes {
        node.set_clock(workload.max_ts_ms() + MINUTE_MS).await;
    }
}

fn leader_of(nodes: &[TestNode], leader: u64) -> &TestNode {
    &nodes[usize::try_from(leader - 1).expect("a small id")]
}

async fn rebalance(leader: &TestNode) -> RebalanceReport {
    let raw = leader.post_admin("/v1/cluster/rebalance", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let report: RebalanceReport = serde_json::from_value(raw.body).expect("a RebalanceReport");
    assert!(
        report.failed.is_none() && report.skipped.is_empty(),
        "{report:?}"
    );
    report
}

async fn shard_map(node: &TestNode) -> Option<ShardMap> {
    let raw = node.get_raw("/v1/shard-map").await;
    (raw.status == StatusCode::OK)
        .then(|| serde_json::from_value(raw.body).expect("a ShardMap body"))
}

async fn status(node: &TestNode) -> NodeStatus {
    let raw = node.get_raw("/v1/status").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    serde_json::from_value(raw.body).expect("a NodeStatus body")
}

async fn assert_results_match_oracle(nodes: &[TestNode], workload: &Workload) {
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

fn assert_every_event_once(report: &FlushReport, workload: &Workload, tracked: u64) {
    assert!(
        report.is_success(),
        "{} rejected (first {:?}), {} failed (first {:?})",
        report.rejected.len(),
        report.rejected.first(),
        report.failed.len(),
        report.failed.first()
    );
    assert_eq!(report.accepted, workload.distinct.len() as u64);
    assert_eq!(report.accepted + report.duplicates, tracked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebalance_every_batch_goes_to_its_owner() {
    let nodes = form_three_node_cluster().await;
    let workload = workload(61);
    prepare(&nodes, &workload).await;
    let before = wait_for(&[&nodes[0]], &[1, 2, 3], "the initial map", |_| true).await;
    let report = rebalance(leader_of(&nodes, before.leader.expect("a leader"))).await;
    let moved: BTreeMap<u32, &ShardMoveReport> =
        report.moved.iter().map(|m| (m.shard, m)).collect();
    assert_eq!(moved.len(), 5, "{report:?}");
    let owners: BTreeMap<u32, u64> = (0..SHARDS)
        .map(|shard| (shard, moved.get(&shard).map_or(1, |m| m.to)))
        .collect();
    wait_for(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &[1, 2, 3],
        "the rebalanced map",
        |status| {
            status
                .shards
                .iter()
                .all(|s| s.moving_to.is_none() && owners[&s.shard] == s.owner)
        },
    )
    .await;

    // The router learns the map from one seed; it finds the others in it.
    let router = Arc::new(
        ShardMapRouter::connect(&admin_client(&nodes[1]), [nodes[1].base_url()])
            .await
            .expect("a shard map"),
    );
    let cached: BTreeMap<u32, u64> = router
        .assignments()
        .iter()
        .map(|a| (a.shard, a.owner))
        .collect();
    assert_eq!(cached, owners);
    let sender = Sender::new(router.clone(), sender_config()).expect("a sender");
    for event in &workload.arrival {
        sender.track(event.clone()).await.expect("tracked");
    }
    let report = sender.flush().await.expect("flushed");
    assert_every_event_once(&report, &workload, workload.arrival.len() as u64);
    let stats = sender.stats();
    assert_eq!(stats.reroutes, 0, "no batch went to a non-owner: {stats:?}");

    // Each node applied exactly the distinct events of the shards it owns,
    // and refused none.
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for event in &workload.distinct {
        *expected
            .entry(owners[&shard_of(&event.project, &event.visitor, SHARDS)])
            .or_default() += 1;
    }
    for (index, node) in nodes.iter().enumerate() {
        let id = index as u64 + 1;
        let status = status(node).await;
        assert_eq!(status.events_rejected, 0, "node {id}: {status:?}");
        assert_eq!(
            status.events_accepted,
            expected.get(&id).copied().unwrap_or(0),
            "node {id}: {status:?}"
        );
        assert!(status.events_accepted > 0, "node {id} owns shards");
    }
    assert_results_match_oracle(&nodes, &workload).await;
}

/// One observation of a node's shard map: (node, version, (owner, epoch)
/// per shard).
type Observation = (u64, u64, Vec<(u64, u64)>);

/// Polls every node's `GET /v1/shard-map` until `stop`, recording each map
/// that differs from the node's previous one.
async fn watch_maps(urls: Vec<(u64, String)>, stop: Arc<AtomicBool>) -> Vec<Observation> {
    let http = reqwest::Client::new();
    let mut seen: Vec<Observation> = Vec::new();
    let mut last: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for (id, url) in &urls {
            let Ok(response) = http
                .get(format!("{url}/v1/shard-map"))
                .bearer_auth(TEST_ADMIN_TOKEN)
                .send()
                .await
            else {
                continue;
            };
            let Ok(map) = response.json::<ShardMap>().await else {
                continue;
            };
            let shards: Vec<(u64, u64)> = map
                .assignments
                .iter()
                .map(|entry| (entry.owner, entry.epoch))
                .collect();
            if last.get(id) != Some(&shards) {
                last.insert(*id, shards.clone());
                seen.push((*id, map.version, shards));
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_under_continuous_ingest_loses_and_doubles_nothing() {
    let nodes = form_three_node_cluster().await;
    let workload = workload(67);
    prepare(&nodes, &workload).await;
    let status = wait_for(&[&nodes[0]], &[1, 2, 3], "the initial map", |_| true).await;
    let leader = leader_of(&nodes, status.leader.expect("a leader"));
    let urls: Vec<(u64, String)> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (index as u64 + 1, node.base_url().to_string()))
        .collect();

    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_maps(urls.clone(), Arc::clone(&stop_watching)));

    // The ingest task: the first half of the workload, then the second,
    // then, until the moves are over, the whole workload again (every copy
    // a duplicate), so that events stream during every move.
    let router = Arc::new(
        ShardMapRouter::connect(
            &admin_client(&nodes[0]),
            urls.iter().map(|(_, url)| url.clone()),
        )
        .await
        .expect("a shard map"),
    );
    let sender = Sender::new(router.clone(), sender_config()).expect("a sender");
    let moves_done = Arc::new(AtomicBool::new(false));
    let ingest = tokio::spawn({
        let sender = sender.clone();
        let moves_done = Arc::clone(&moves_done);
        let arrival = workload.arrival.clone();
        async move {
            let mut tracked = 0u64;
            for event in &arrival {
                sender.track(event.clone()).await.expect("tracked");
                tracked += 1;
            }
            let mut again = arrival.iter().cycle();
            while !moves_done.load(Ordering::Relaxed) {
                let event: &Event = again.next().expect("a non-empty workload");
                sender.track(event.clone()).await.expect("tracked");
                tracked += 1;
            }
            (sender.flush().await.expect("flushed"), tracked)
        }
    });

    // Start moving once a quarter of the workload is acknowledged.
    let quarter = workload.arrival.len() as u64 / 4;
    eventually(
        PROGRESS_WAIT_MAX,
        "a quarter of the workload acknowledged",
        async || {
            let resolved = sender.stats().events_resolved;
            if resolved >= quarter {
                Ok(())
            } else {
                Err(format!("{resolved} events resolved"))
            }
        },
    )
    .await;
    let resolved_before_moves = sender.stats().events_resolved;
    // Under load the plan also weighs shard loads, so its length varies.
    let report = rebalance(leader).await;
    assert!(!report.moved.is_empty(), "{report:?}");
    // A few single moves on top: shard 0 around the ring, and shard 5.
    let mut single_moves = Vec::new();
    for shard in [0, 5, 0] {
        let map = shard_map(leader).await.expect("the leader's map");
        let owner = map.assignments[shard].owner;
        let to = owner % 3 + 1;
        let raw = leader
            .post_admin(
                &format!("/v1/cluster/shards/{shard}/move"),
                serde_json::json!({ "to": to }).to_string(),
            )
            .await;
        assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
        let moved: ShardMoveReport = serde_json::from_value(raw.body).expect("a ShardMoveReport");
        assert_eq!((moved.from, moved.to), (owner, to));
        single_moves.push(moved);
    }
    let resolved_during_moves = sender.stats().events_resolved - resolved_before_moves;
    moves_done.store(true, Ordering::Relaxed);
    let (report, tracked) = ingest.await.expect("the ingest task");
    stop_watching.store(true, Ordering::Relaxed);
    let observations = watcher.await.expect("the map watcher");

    assert!(
        resolved_during_moves > 0,
        "events must have streamed while the shards moved"
    );
    assert_every_event_once(&report, &workload, tracked);
    let stats = sender.stats();
    assert!(
        stats.reroutes > 0,
        "moves should have refused some events: {stats:?}"
    );
    eprintln!(
        "sender: {stats:?}; router: {:?}; {} maps seen:",
        router.stats(),
        observations.len()
    );
    for (node, version, shards) in &observations {
        eprintln!("  node {node} version {version}: (owner, epoch) by shard {shards:?}");
    }

    // The maps: per node, versions and epochs never went back; at the end
    // all nodes agree, with one owner per shard among the members.
    let mut last: BTreeMap<u64, (u64, Vec<(u64, u64)>)> = BTreeMap::new();
    for (node, version, shards) in &observations {
        assert_eq!(shards.len(), SHARDS as usize);
        if let Some((last_version, last_shards)) = last.get(node) {
            assert!(version >= last_version, "node {node}: {observations:?}");
            for (before, after) in last_shards.iter().zip(shards) {
                assert!(after.1 >= before.1, "node {node}: {observations:?}");
                if after.1 == before.1 {
                    assert_eq!(after.0, before.0, "one owner per epoch: {observations:?}");
                }
            }
        }
        last.insert(*node, (*version, shards.clone()));
    }
    let finals = final_maps(&nodes).await;
    assert!(
        finals.windows(2).all(|pair| pair[0] == pair[1]),
        "{finals:?}"
    );
    let final_map = &finals[0];
    assert!(final_map.iter().all(|(owner, _)| (1..=3).contains(owner)));
    // Shard 0 moved at least twice (the two single moves), shard 5 at
    // least once: the epochs say so.
    assert!(final_map[0].1 >= 3, "{final_map:?}");
    assert!(final_map[5].1 >= 2, "{final_map:?}");
    for moved in &single_moves {
        assert!(final_map[moved.shard as usize].1 >= moved.epoch);
    }

    assert_results_match_oracle(&nodes, &workload).await;
}

/// The final (owner, epoch) per shard on every node, once no shard is
/// moving anywhere.
async fn final_maps(nodes: &[TestNode]) -> Vec<Vec<(u64, u64)>> {
    eventually(
        PROGRESS_WAIT_MAX,
        "every node's map settled and agreed",
        async || {
            let mut maps = Vec::new();
            for node in nodes {
                if let Some(map) = shard_map(node).await {
                    if map.assignments.iter().all(|entry| !entry.moving) {
                        maps.push(
                            map.assignments
                                .iter()
                                .map(|entry| (entry.owner, entry.epoch))
                                .collect::<Vec<_>>(),
                        );
                    }
                }
            }
            if maps.len() == nodes.len() && maps.windows(2).all(|pair| pair[0] == pair[1]) {
                Ok(maps)
            } else {
                Err(format!("{maps:?}"))
            }
        },
    )
    .await
}
