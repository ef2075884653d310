//! Tests of the replicated groups' engine state (`engine::group`): the
//! commands a leader writes, applied by replicas, against the oracle.
//!
//! In process first (no Raft: the applies a replica's state machine
//! makes, in order), then three replicas of a group over real sockets,
//! with a leader lost mid-stream and a new member brought up from a
//! snapshot and the log.

use super::aggregates::ExperimentAggregates;
use super::group::{group_of, GroupCommand, GroupState};
use super::journal::JournalEvent;
use super::oracle_tests::{check_with, history, EXPERIMENT, NOW_MS, PROJECT};
use super::query;
use crate::event;
use crate::project::{ProjectRegistry, SettingsPatch};
use crate::replication::{GroupApply, GroupId};
use proptest::prelude::*;
use sessiondb_protocol as wire;
use sessiondb_test_support::oracle::{Oracle, OracleSettings};
use std::collections::BTreeMap;

const SHARDS: u32 = 8;
const GROUPS: u32 = 3;

/// What a group leader does with an ingest batch: validates each event and
/// splits the batch into one `Events` command per group.
struct Leader {
    registry: ProjectRegistry,
}

impl Leader {
    fn new() -> Leader {
        let registry = ProjectRegistry::default();
        let patch = SettingsPatch {
            breakdown_attributes: Some(vec!["browser".to_string()]),
            ..SettingsPatch::default()
        };
        registry.create(PROJECT, &patch).expect("the project");
        Leader { registry }
    }

    fn project_command(&self) -> GroupCommand {
        let config = self.registry.get(PROJECT).expect("created");
        GroupCommand::Project {
            config: (*config).clone(),
        }
    }

    fn commands(&self, batch: &[wire::Event]) -> BTreeMap<GroupId, GroupCommand> {
        let mut events: BTreeMap<GroupId, Vec<JournalEvent>> = BTreeMap::new();
        for event in batch {
            let validated =
                event::validate(event.clone(), &self.registry, NOW_MS).expect("a valid event");
            let shard = crate::hashing::shard_of(PROJECT, &validated.visitor, SHARDS);
            events
                .entry(group_of(shard, GROUPS))
                .or_default()
                .push(JournalEvent::from(validated));
        }
        events
            .into_iter()
            .map(|(group, events)| {
                let command = GroupCommand::Events {
                    now_ms: NOW_MS,
                    events,
                };
                (group, command)
            })
            .collect()
    }
}

/// One replica of every group, applying entries as their state machines
/// would: each group's own log indexes, in order.
struct Replicas {
    states: Vec<GroupState>,
    next_index: Vec<u64>,
}

impl Replicas {
    fn new() -> Replicas {
        Replicas {
            states: (0..GROUPS)
                .map(|group| GroupState::new(group, SHARDS, GROUPS))
                .collect(),
            next_index: vec![1; GROUPS as usize],
        }
    }

    fn apply(&mut self, group: GroupId, command: &GroupCommand) {
        let index = &mut self.next_index[group as usize];
        self.states[group as usize]
            .apply(*index, &command.encode())
            .expect("applies");
        *index += 1;
    }

    /// Every group's state handed to a new replica through its snapshot.
    fn restart_from_snapshots(&mut self) {
        for (group, state) in self.states.iter_mut().enumerate() {
            let bytes = state.snapshot().expect("a snapshot");
            let mut fresh = GroupState::new(group as GroupId, SHARDS, GROUPS);
            fresh.install(&bytes).expect("installs");
            let again = fresh.snapshot().expect("a snapshot of the copy");
            assert_eq!(again.len(), bytes.len(), "the copy holds what was sent");
            *state = fresh;
        }
    }

    /// A coordinator's answer: each group's share (`GroupReader::share`)
    /// merged and finished.
    fn finish_shares(&self, query: &query::ResultsQuery) -> Option<query::Results> {
        let request = super::ShareRequest {
            project: PROJECT.to_string(),
            experiment: EXPERIMENT.to_string(),
            from_ms: Some(query.from_ms),
            to_ms: query.to_ms,
            breakdown: query.breakdown.as_deref().map(str::to_string),
            keys: query.keys.iter().map(|key| key.to_string()).collect(),
            interval_ms: None,
        };
        let mut merged: Option<query::Partial> = None;
        for state in &self.states {
            let share = state
                .reader()
                .share(&request, crate::limits::QUERY_COST_MAX_DEFAULT)
                .expect("a valid share");
            match (&mut merged, share.partial) {
                (Some(merged), Some(partial)) => merged.merge(partial),
                (None, partial) => merged = partial,
                (Some(_), None) => {}
            }
        }
        Some(query::finish(merged?, query).expect("finishes"))
    }

    /// The experiment across groups: each group's share counted once.
    fn experiment(&self) -> Option<ExperimentAggregates> {
        let mut merged: Option<ExperimentAggregates> = None;
        for state in &self.states {
            let Some(share) = state.reader().experiment(PROJECT, EXPERIMENT) else {
                continue;
            };
            match &mut merged {
                Some(merged) => merged.merge(&share),
                None => merged = Some(share),
            }
        }
        merged
    }
}

fn run(events: &[wire::Event], order: &[usize], batches: &[usize]) {
    let oracle = Oracle::new(OracleSettings::default(), events);
    let leader = Leader::new();
    let mut replicas = Replicas::new();
    for group in 0..GROUPS {
        replicas.apply(group, &leader.project_command());
    }
    let arrivals: Vec<wire::Event> = order.iter().map(|index| events[*index].clone()).collect();
    let halfway = arrivals.len() / 2;
    let mut sizes = batches.iter().cycle();
    let mut applied = 0;
    let mut rest = arrivals.as_slice();
    while !rest.is_empty() {
        let size = (*sizes.next().expect("cycled")).min(rest.len());
        let (batch, later) = rest.split_at(size);
        for (group, command) in leader.commands(batch) {
            replicas.apply(group, &command);
        }
        if applied < halfway && applied + size >= halfway {
            replicas.restart_from_snapshots();
        }
        applied += size;
        rest = later;
    }
    let merged = replicas.experiment();
    let results = |request: &query::ResultsQuery| {
        let aggregates = merged.as_ref()?;
        Some(query::results(aggregates, request).expect("a valid query"))
    };
    check_with(results, &oracle, "groups");
    check_with(
        |request| replicas.finish_shares(request),
        &oracle,
        "group shares",
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    /// Groups that applied the leader's commands (and restarted from their
    /// snapshots halfway) answer, merged, what the oracle computes.
    #[test]
    fn groups_applying_the_leaders_commands_count_what_the_oracle_counts(
        (events, order, batches) in history()
    ) {
        run(&events, &order, &batches);
    }
}

fn pageview(visitor: &str) -> wire::Event {
    wire::Event {
        id: format!("{visitor}-page"),
        project: PROJECT.to_string(),
        visitor: visitor.to_string(),
        ts: wire::Timestamp::Milliseconds(NOW_MS - 60_000),
        event_type: wire::EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    }
}

#[test]
fn damaged_or_foreign_entries_fail_the_apply_and_never_panic() {
    let mut state = GroupState::new(0, SHARDS, GROUPS);
    let unknown_version = [99u8, 1, 2, 3];
    let error = state.apply(1, &unknown_version).unwrap_err();
    assert!(error.reason.contains("format version 99"), "{error}");
    let error = state.apply(2, b"").unwrap_err();
    assert!(error.reason.contains("empty"), "{error}");
    let mut garbage = vec![1u8];
    garbage.extend([0xff; 40]);
    assert!(state.apply(3, &garbage).is_err());

    // An event of another group's shard is damage, not something to count.
    let leader = Leader::new();
    state.apply(4, &leader.project_command().encode()).unwrap();
    let foreign = (0..50)
        .map(|visitor| pageview(&format!("v{visitor}")))
        .flat_map(|event| leader.commands(&[event]))
        .find(|(group, _)| *group != 0)
        .map(|(_, command)| command)
        .expect("some visitor hashes to another group");
    let error = state.apply(5, &foreign.encode()).unwrap_err();
    assert!(error.reason.contains("in group 0's log"), "{error}");

    let error = state.install(b"not a snapshot").unwrap_err();
    assert_eq!(error.step, "install");
    let other = GroupState::new(1, SHARDS, GROUPS).snapshot().unwrap();
    let error = state.install(&other).unwrap_err();
    assert!(error.reason.contains("snapshot of group 1"), "{error}");
    assert_eq!(state.reader().report().applied_index, Some(4));
}

/// Three nodes hold every group; the leaders take the workload's commands;
/// halfway the node leading group 0 is lost for good; the rest goes to the
/// new leaders; then node 4 replaces the lost one, brought up from a
/// snapshot (the log behind it is purged) and the log. Every remaining
/// node's groups, merged, answer what the oracle computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_groups_lose_nothing_when_a_leader_is_lost_and_a_replacement_catches_up() {
    use crate::cluster::group_keeper::test_cluster::{test_config, TestCluster};
    use crate::replication::GroupConfig;
    use proptest::strategy::{Strategy, ValueTree};

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (events, order, batches) = history()
        .new_tree(&mut runner)
        .expect("a generated history")
        .current();
    let oracle = Oracle::new(OracleSettings::default(), &events);
    let groups: Vec<GroupId> = (0..GROUPS).collect();
    let config = GroupConfig {
        // Snapshots often and no entry kept behind them: a new member
        // cannot be brought up from the log alone.
        snapshot_entries_since_last: 3,
        entries_kept_behind_snapshot: 0,
        purge_batch_entries: 1,
        ..test_config()
    };
    let mut cluster = TestCluster::new(groups.clone(), config, |group| {
        GroupState::new(group, SHARDS, GROUPS)
    });
    for id in [1, 2, 3, 4] {
        cluster.start(id).await;
    }
    cluster
        .follow_until_in_sync(&cluster.wanted(&[1, 2, 3], true))
        .await;

    let leader = Leader::new();
    for group in 0..GROUPS {
        cluster
            .write(group, &leader.project_command().encode())
            .await;
    }
    let arrivals: Vec<wire::Event> = order.iter().map(|index| events[*index].clone()).collect();
    let halfway = arrivals.len() / 2;
    let mut sizes = batches.iter().cycle();
    let mut applied = 0;
    let mut rest = arrivals.as_slice();
    let mut lost = None;
    while !rest.is_empty() {
        let size = (*sizes.next().expect("cycled")).min(rest.len());
        let (batch, later) = rest.split_at(size);
        for (group, command) in leader.commands(batch) {
            cluster.write(group, &command.encode()).await;
        }
        if lost.is_none() && applied + size >= halfway {
            let leading = cluster.leader(0).await.status().replica;
            cluster.lose(leading).await;
            lost = Some(leading);
        }
        applied += size;
        rest = later;
    }
    let lost = lost.expect("a node was lost");
    let survivors: Vec<_> = [1, 2, 3].into_iter().filter(|id| *id != lost).collect();
    let replaced: Vec<_> = survivors.iter().copied().chain([4]).collect();
    for group in 0..GROUPS {
        let purged = cluster.leader(group).await.raft().metrics().borrow().purged;
        assert!(
            purged.is_some(),
            "group {group}'s log is purged: node 4 can only start from a snapshot"
        );
    }
    cluster
        .follow_until_in_sync(&cluster.wanted(&replaced, false))
        .await;

    for group in 0..GROUPS {
        cluster.applied_everywhere(group).await;
    }
    for id in replaced {
        let node = &cluster.nodes[&id];
        let states: Vec<GroupState> = node
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let replicas = Replicas {
            states,
            next_index: Vec::new(),
        };
        let merged = replicas.experiment();
        let results = |request: &query::ResultsQuery| {
            let aggregates = merged.as_ref()?;
            Some(query::results(aggregates, request).expect("a valid query"))
        };
        check_with(
            results,
            &oracle,
            &format!("node {id} after losing node {lost}"),
        );
    }
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.lose(id).await;
    }
}

#[test]
fn a_group_share_checks_the_request_as_a_node_share_does() {
    let leader = Leader::new();
    let mut replicas = Replicas::new();
    for group in 0..GROUPS {
        replicas.apply(group, &leader.project_command());
    }
    let exposures: Vec<wire::Event> = (0..30)
        .map(|visitor| {
            let mut event = pageview(&format!("v{visitor}"));
            event.event_type = wire::EventType::Decision;
            event.decisions = vec![wire::Decision {
                experiment: EXPERIMENT.to_string(),
                variation: "a".to_string(),
            }];
            event
        })
        .collect();
    for (group, command) in leader.commands(&exposures) {
        replicas.apply(group, &command);
    }
    let hour_ms = 3_600_000;
    let request = super::ShareRequest {
        project: PROJECT.to_string(),
        experiment: EXPERIMENT.to_string(),
        from_ms: Some(NOW_MS - NOW_MS % hour_ms - hour_ms),
        to_ms: NOW_MS - NOW_MS % hour_ms + hour_ms,
        breakdown: None,
        keys: Vec::new(),
        interval_ms: None,
    };
    let reader = replicas.states[0].reader();
    let share = reader.share(&request, u64::MAX).expect("a share");
    assert!(
        share.first_ms.is_some() && share.partial.is_some(),
        "{share:?}"
    );
    let too_expensive = reader.share(&request, 0).unwrap_err();
    assert!(
        matches!(too_expensive, query::QueryError::TooExpensive { .. }),
        "{too_expensive:?}"
    );
    let unknown_breakdown = super::ShareRequest {
        breakdown: Some("country".to_string()),
        ..request.clone()
    };
    assert!(reader.share(&unknown_breakdown, u64::MAX).is_err());
    let series = super::ShareRequest {
        interval_ms: Some(hour_ms),
        ..request.clone()
    };
    let series = reader.share(&series, u64::MAX).expect("a series share");
    assert_eq!(series.series.map(|points| points.len()), Some(2));
    let unknown = super::ShareRequest {
        project: "elsewhere".to_string(),
        ..request
    };
    let nothing = reader.share(&unknown, u64::MAX).expect("no error");
    assert!(nothing.first_ms.is_none() && nothing.partial.is_none());
}
