//! Shard moves, engine side: a shard's state handed from one engine to
//! another (fence, export, import, drop) loses and double-counts nothing.
//!
//! Two engines ("A" and "B", each with its own data directory) play a
//! two-node cluster; a third ("reference") receives every event with no
//! move. The cluster's answer — the sum of A's and B's partial aggregates —
//! must equal the reference's exactly, before and after both cluster
//! engines restart from their logs. Network and placement are not involved:
//! this pins the state handover itself (docs/cluster.md).

use crate::support::workload::{self, WorkloadConfig};
use sessiondb_node::clock::{ManualClock, SharedClock};
use sessiondb_node::engine::durability;
use sessiondb_node::engine::handoff::{HandoffError, ShardRole};
use sessiondb_node::engine::journal;
use sessiondb_node::engine::query::{self, Partial, ResultsQuery};
use sessiondb_node::engine::shard::Outcome;
use sessiondb_node::engine::stores::StoresHandover;
use sessiondb_node::engine::{Engine, EngineConfig, ShareRequest};
use sessiondb_node::hashing;
use sessiondb_node::log::LogConfig;
use sessiondb_node::project::SettingsPatch;
use sessiondb_protocol::Event;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

const SHARDS: u32 = 16;
const PROJECT: &str = "moves";
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

struct Cluster {
    clock: Arc<ManualClock>,
    directories: Vec<PathBuf>,
}

impl Cluster {
    fn new(label: &str) -> Cluster {
        let directories = ["a", "b", "reference"]
            .iter()
            .map(|name| {
                let path = std::env::temp_dir().join(format!(
                    "sessiondb-handoff-{label}-{name}-{}",
                    std::process::id()
                ));
                let _ = std::fs::remove_dir_all(&path);
                path
            })
            .collect();
        Cluster {
            clock: Arc::new(ManualClock::new(0)),
            directories,
        }
    }

    async fn open(&self, index: usize) -> Engine {
        let config = EngineConfig {
            shards: SHARDS,
            aggregate_actors: 2,
            checkpoint_interval_ms: 24 * 3_600_000,
            ..EngineConfig::default()
        };
        let clock: SharedClock = Arc::clone(&self.clock) as SharedClock;
        let (engine, _) = durability::open(
            config,
            clock,
            &self.directories[index],
            LogConfig::default(),
        )
        .await
        .expect("engine opens");
        engine
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for directory in &self.directories {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

fn shard_of(event: &Event) -> u32 {
    hashing::shard_of(&event.project, &event.visitor, SHARDS)
}

async fn send(engine: &Engine, events: &[Event]) -> Vec<Outcome> {
    let validated = events
        .iter()
        .map(|event| engine.validate(event.clone()))
        .collect();
    engine
        .ingest(validated)
        .await
        .expect("the log accepts writes")
}

async fn partial(engine: &Engine, experiment: &str, query: &ResultsQuery) -> Option<Partial> {
    let request = ShareRequest {
        project: PROJECT.to_string(),
        experiment: experiment.to_string(),
        from_ms: Some(query.from_ms),
        to_ms: query.to_ms,
        breakdown: query.breakdown.as_deref().map(String::from),
        keys: query.keys.iter().map(|key| key.to_string()).collect(),
        interval_ms: None,
    };
    engine.share(&request).await.expect("valid query").partial
}

/// The cluster's answer (A + B) must equal the reference's, exactly.
async fn assert_cluster_matches(
    a: &Engine,
    b: &Engine,
    reference: &Engine,
    experiments: &[String],
    ranges: &[(i64, i64)],
    context: &str,
) {
    for experiment in experiments {
        for &(from_ms, to_ms) in ranges {
            for breakdown in [None, Some("browser")] {
                let query = ResultsQuery {
                    from_ms,
                    to_ms,
                    breakdown: breakdown.map(Arc::from),
                    keys: Vec::new(),
                    baseline: None,
                    weights: None,
                };
                let mut merged = Partial::default();
                for share in [
                    partial(a, experiment, &query).await,
                    partial(b, experiment, &query).await,
                ]
                .into_iter()
                .flatten()
                {
                    merged.merge(share);
                }
                let expected = partial(reference, experiment, &query)
                    .await
                    .expect("reference has the experiment");
                let cluster_results = query::finish(merged, &query).expect("cluster results");
                let reference_results = query::finish(expected, &query).expect("reference results");
                let visitors: i64 = reference_results
                    .groups
                    .iter()
                    .flat_map(|group| &group.variations)
                    .map(|variation| variation.counters.visitors)
                    .sum();
                assert!(
                    visitors > 0,
                    "{context}: the comparison covers exposed visitors"
                );
                assert_eq!(
                    cluster_results, reference_results,
                    "{context}: experiment {experiment}, [{from_ms}, {to_ms}), breakdown {breakdown:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_shards_lose_nothing_and_count_nothing_twice() {
    let cluster = Cluster::new("move");
    let mut config = WorkloadConfig::new(0x4a4d, PROJECT);
    config.visitors = 400;
    config.span_ms = 2 * DAY_MS;
    config.max_delay_ms = DAY_MS;
    let workload = workload::generate(&config);
    let batches = workload.batches(HOUR_MS, 200);
    let experiments = config.experiment_names();

    let (a, b, reference) = (
        cluster.open(0).await,
        cluster.open(1).await,
        cluster.open(2).await,
    );
    let patch = SettingsPatch {
        allowed_lateness_ms: Some(7 * DAY_MS),
        breakdown_attributes: Some(vec!["browser".into(), "device".into()]),
        ..SettingsPatch::default()
    };
    for engine in [&a, &b, &reference] {
        engine
            .create_project(PROJECT, &patch)
            .await
            .expect("project");
    }
    for shard in 0..SHARDS {
        b.set_shard_role(shard, ShardRole::Elsewhere { owner: 1, epoch: 1 })
            .expect("valid shard");
    }

    // First half: everything to A, and to the reference.
    let half = batches.len() / 2;
    for (now_ms, events) in &batches[..half] {
        cluster.clock.set_ms(*now_ms);
        send(&a, events).await;
        send(&reference, events).await;
    }

    // Move the even shards to B: fence and export on A, import on B,
    // drop on A.
    let moved: Vec<u32> = (0..SHARDS).filter(|shard| shard % 2 == 0).collect();
    for &shard in &moved {
        let state = a.export_shard(shard).await.expect("A owns the shard");
        assert_eq!(a.shard_role(shard), ShardRole::Fenced { epoch: 1 });
        b.import_shard(shard, &state, 2)
            .await
            .expect("B installs the shard");
        a.drop_shard(shard, 2, 2)
            .await
            .expect("A forgets the shard");
        assert_eq!(b.shard_role(shard), ShardRole::Owner { epoch: 2 });
        assert_eq!(
            a.shard_role(shard),
            ShardRole::Elsewhere { owner: 2, epoch: 2 }
        );
    }

    // A refuses events of a moved shard, naming the owner.
    let moved_event = batches[half..]
        .iter()
        .flat_map(|(_, events)| events)
        .find(|event| moved.contains(&shard_of(event)))
        .expect("some later event belongs to a moved shard")
        .clone();
    cluster.clock.set_ms(batches[half].0);
    let refused = send(&a, std::slice::from_ref(&moved_event)).await;
    assert!(
        matches!(&refused[0], Outcome::Rejected(reason) if reason.code() == "not_owner"),
        "{refused:?}"
    );

    // Second half: each event to its shard's owner.
    for (now_ms, events) in &batches[half..] {
        cluster.clock.set_ms(*now_ms);
        let (to_b, to_a): (Vec<Event>, Vec<Event>) = events
            .iter()
            .cloned()
            .partition(|event| moved.contains(&shard_of(event)));
        let answers_a = send(&a, &to_a).await;
        let answers_b = send(&b, &to_b).await;
        for outcome in answers_a.iter().chain(&answers_b) {
            assert!(!matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        }
        send(&reference, events).await;
    }

    // Deduplication moved with the shards: the first half's events of moved
    // shards, sent again to B, are all duplicates.
    let first_half_moved: Vec<Event> = batches[..half]
        .iter()
        .flat_map(|(_, events)| events)
        .filter(|event| moved.contains(&shard_of(event)))
        .cloned()
        .collect();
    assert!(!first_half_moved.is_empty());
    let resent = send(&b, &first_half_moved).await;
    assert!(
        resent.iter().all(|outcome| *outcome == Outcome::Duplicate),
        "every resent event is a duplicate"
    );

    let start_ms = workload.min_ts_ms().div_euclid(HOUR_MS) * HOUR_MS;
    let end_ms = (workload.max_ts_ms().div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let ranges = [
        (start_ms, end_ms),
        (start_ms + 6 * HOUR_MS, start_ms + 30 * HOUR_MS),
    ];
    assert_cluster_matches(&a, &b, &reference, &experiments, &ranges, "after the moves").await;

    // Both cluster engines recover the moves from their logs.
    for engine in [&a, &b] {
        engine.shutdown();
    }
    drop((a, b));
    let (a, mut b) = (cluster.open(0).await, cluster.open(1).await);
    assert_cluster_matches(
        &a,
        &b,
        &reference,
        &experiments,
        &ranges,
        "after restarting A and B",
    )
    .await;
    let resent = send(&b, &first_half_moved).await;
    assert!(
        resent.iter().all(|outcome| *outcome == Outcome::Duplicate),
        "deduplication survives the restart"
    );

    // A leaves (`engine::stores`): its other shards go to B, then its
    // aggregates. A is node 1, B node 2. (A restarted owning every shard,
    // as a node does before placement tells it otherwise: tell it.)
    for &shard in &moved {
        a.set_shard_role(shard, ShardRole::Elsewhere { owner: 2, epoch: 2 })
            .expect("valid shard");
    }
    for shard in (0..SHARDS).filter(|shard| !moved.contains(shard)) {
        let state = a.export_shard(shard).await.expect("A owns the shard");
        b.import_shard(shard, &state, 2)
            .await
            .expect("B installs it");
        a.drop_shard(shard, 2, 2).await.expect("A forgets it");
    }
    let handover = a.hand_over_stores(1).await.expect("A owns no shard now");
    assert_eq!(
        a.store_coverage().stores(1),
        BTreeSet::new(),
        "A counts nothing now"
    );
    assert_eq!(
        a.hand_over_stores(1).await.expect("asked again"),
        handover,
        "a retried handover answers the same stores"
    );
    let held = b.absorb_stores(2, &handover).await.expect("B absorbs");
    assert_eq!(held, BTreeSet::from([1, 2]));
    // Again: a no-op. Overlapping in part: refused.
    assert_eq!(b.absorb_stores(2, &handover).await.expect("a no-op"), held);
    let overlapping = journal::encode(&StoresHandover {
        stores: BTreeSet::from([1, 3]),
        experiments: Vec::new(),
    });
    assert!(matches!(
        b.absorb_stores(2, &overlapping).await,
        Err(HandoffError::StoresOverlap { .. })
    ));
    // B alone (A's share is empty now) answers what the reference answers,
    // also after a restart from its log and from a checkpoint.
    assert_cluster_matches(
        &a,
        &b,
        &reference,
        &experiments,
        &ranges,
        "after the handover",
    )
    .await;
    for round in ["log", "checkpoint"] {
        if round == "checkpoint" {
            b.checkpoint().await.expect("checkpoint");
        }
        b.shutdown();
        drop(b);
        b = cluster.open(1).await;
        assert_eq!(b.store_coverage().stores(2), held, "{round}");
        assert_cluster_matches(&a, &b, &reference, &experiments, &ranges, round).await;
    }
    for engine in [&a, &b, &reference] {
        engine.shutdown();
    }
}
