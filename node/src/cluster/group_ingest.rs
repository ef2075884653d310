//! Ingest through replicated shard groups (`docs/cluster.md`, "Replicated
//! shards (design)", "Acknowledgement"): a batch of validated events is
//! split by group, each part written as one `GroupCommand::Events` entry
//! to the group's replica on this node, all parts at once; an event is
//! acknowledged once its part's entry is committed — on disk on a
//! majority of the group's replicas — and applied here.
//!
//! Only a group's leader writes. A part for a group this node does not
//! lead is refused per event with `NotOwner` naming the leader this
//! node's replica knows (fresher than placement's hint), so a router sends
//! it there; a part for a group with no replica here names no leader.
//! Before the first events of a project reach a group, the project's
//! configuration is written to that group's log, so every replica applies
//! them under the same settings.

use crate::engine::group::{group_of, GroupCommand, GroupReader};
use crate::engine::journal::JournalEvent;
use crate::event::VisitorEvent;
use crate::project::ProjectConfig;
use crate::replication::{GroupHandle, GroupId, GroupWriteError, ReplicaId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Committed on a majority of its group and applied on the leader.
    Accepted,
    /// This node does not lead the event's group: send it to `leader`.
    NotLeader {
        group: GroupId,
        leader: Option<ReplicaId>,
        leader_address: Option<String>,
    },
    /// The group's replica here failed; nothing of the part is known to be
    /// committed, and sending it again is safe (events are deduplicated by
    /// id).
    Unavailable { group: GroupId, reason: String },
}

/// The replicas and readers of the groups on this node, as ingest needs
/// them.
pub trait LocalGroups {
    fn replica(&self, group: GroupId) -> Option<GroupHandle>;
    fn reader(&self, group: GroupId) -> Option<GroupReader>;
}

/// Splits batches by group and writes them at this node's leaders.
#[derive(Debug, Clone, Copy)]
pub struct GroupIngest {
    pub shards_total: u32,
    pub shard_groups: u32,
}

impl GroupIngest {
    /// Writes `events` (validated at `now_ms`) and answers one outcome per
    /// event, in order.
    pub async fn ingest(
        &self,
        groups: &impl LocalGroups,
        now_ms: i64,
        events: Vec<VisitorEvent>,
    ) -> Vec<GroupOutcome> {
        let count = events.len();
        let parts = self.split(events);
        let writes = parts
            .into_iter()
            .map(|(group, (indexes, events))| async move {
                let outcome = write_part(groups, group, now_ms, events).await;
                (indexes, outcome)
            });
        let mut outcomes = vec![GroupOutcome::Accepted; count];
        for (indexes, outcome) in futures::future::join_all(writes).await {
            for index in indexes {
                outcomes[index] = outcome.clone();
            }
        }
        outcomes
    }

    /// Per group: the events' indexes in the batch, and the events, in
    /// arrival order.
    fn split(
        &self,
        events: Vec<VisitorEvent>,
    ) -> BTreeMap<GroupId, (Vec<usize>, Vec<VisitorEvent>)> {
        let mut parts: BTreeMap<GroupId, (Vec<usize>, Vec<VisitorEvent>)> = BTreeMap::new();
        for (index, event) in events.into_iter().enumerate() {
            let shard =
                crate::hashing::shard_of(&event.project.name, &event.visitor, self.shards_total);
            let part = parts.entry(group_of(shard, self.shard_groups)).or_default();
            part.0.push(index);
            part.1.push(event);
        }
        parts
    }
}

async fn write_part(
    groups: &impl LocalGroups,
    group: GroupId,
    now_ms: i64,
    events: Vec<VisitorEvent>,
) -> GroupOutcome {
    let (Some(replica), Some(reader)) = (groups.replica(group), groups.reader(group)) else {
        return GroupOutcome::NotLeader {
            group,
            leader: None,
            leader_address: None,
        };
    };
    for config in configurations_behind(&reader, &events) {
        let command = GroupCommand::Project { config };
        if let Err(error) = replica.write(command.encode()).await {
            return outcome_of(group, error);
        }
    }
    let command = GroupCommand::Events {
        now_ms,
        events: events.into_iter().map(JournalEvent::from).collect(),
    };
    match replica.write(command.encode()).await {
        Ok(_) => GroupOutcome::Accepted,
        Err(error) => outcome_of(group, error),
    }
}

/// The configurations of the part's projects that are newer than what the
/// group applied (each once, the newest the events carry).
fn configurations_behind(reader: &GroupReader, events: &[VisitorEvent]) -> Vec<ProjectConfig> {
    let mut newest: BTreeMap<&str, &Arc<ProjectConfig>> = BTreeMap::new();
    for event in events {
        let config = &event.project;
        let slot = newest.entry(&config.name).or_insert(config);
        if slot.version < config.version {
            *slot = config;
        }
    }
    newest
        .into_values()
        .filter(|config| {
            reader
                .project_version(&config.name)
                .is_none_or(|applied| applied < config.version)
        })
        .map(|config| ProjectConfig::clone(config))
        .collect()
}

fn outcome_of(group: GroupId, error: GroupWriteError) -> GroupOutcome {
    match error {
        GroupWriteError::NotLeader {
            leader,
            leader_address,
            ..
        } => GroupOutcome::NotLeader {
            group,
            leader,
            leader_address,
        },
        GroupWriteError::Stopped { reason, .. } => GroupOutcome::Unavailable { group, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::group_keeper::test_cluster::{test_config, TestCluster, TestNode, WAIT};
    use crate::engine::aggregates::ExperimentAggregates;
    use crate::engine::group::GroupState;
    use crate::engine::oracle_tests::{check_with, history, EXPERIMENT, NOW_MS, PROJECT};
    use crate::engine::query;
    use crate::event;
    use crate::project::{ProjectRegistry, SettingsPatch};
    use proptest::strategy::{Strategy, ValueTree};
    use sessiondb_protocol as wire;
    use sessiondb_test_support::oracle::{Oracle, OracleSettings};
    use std::sync::PoisonError;

    const SHARDS: u32 = 8;
    const GROUPS: u32 = 3;
    const INGEST: GroupIngest = GroupIngest {
        shards_total: SHARDS,
        shard_groups: GROUPS,
    };

    struct NodeGroups<'a>(&'a TestNode<GroupState>);

    impl LocalGroups for NodeGroups<'_> {
        fn replica(&self, group: GroupId) -> Option<GroupHandle> {
            self.0.keeper.replica(group)
        }

        fn reader(&self, group: GroupId) -> Option<GroupReader> {
            let states = self.0.states.lock().unwrap_or_else(PoisonError::into_inner);
            states.get(&group).map(GroupState::reader)
        }
    }

    fn merged(node: &TestNode<GroupState>) -> Option<ExperimentAggregates> {
        let groups = NodeGroups(node);
        let mut merged: Option<ExperimentAggregates> = None;
        for group in 0..GROUPS {
            let share = groups.reader(group)?.experiment(PROJECT, EXPERIMENT);
            match (&mut merged, share) {
                (Some(merged), Some(share)) => merged.merge(&share),
                (None, share) => merged = share,
                (Some(_), None) => {}
            }
        }
        merged
    }

    /// Events sent to a node that does not lead every group are taken
    /// where it leads and refused naming the leader elsewhere; sent on to
    /// the leaders named, all are taken, and every node's groups answer
    /// what the oracle computes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_go_to_their_groups_leaders_and_every_replica_counts_them_once() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (events, order, _) = history()
            .new_tree(&mut runner)
            .expect("a generated history")
            .current();
        let oracle = Oracle::new(OracleSettings::default(), &events);
        let registry = ProjectRegistry::default();
        let patch = SettingsPatch {
            breakdown_attributes: Some(vec!["browser".to_string()]),
            ..SettingsPatch::default()
        };
        registry.create(PROJECT, &patch).expect("the project");

        let mut cluster = TestCluster::new((0..GROUPS).collect(), test_config(), |group| {
            GroupState::new(group, SHARDS, GROUPS)
        });
        for id in [1, 2, 3] {
            cluster.start(id).await;
        }
        cluster
            .follow_until_in_sync(&cluster.wanted(&[1, 2, 3], true))
            .await;
        let group_0_leader = cluster.leader(0).await.status().replica;
        let entry = [1, 2, 3]
            .into_iter()
            .find(|id| *id != group_0_leader)
            .expect("a node not leading group 0");

        let mut refused_at_entry = 0;
        for batch in order.chunks(4) {
            let mut pending: Vec<wire::Event> =
                batch.iter().map(|index| events[*index].clone()).collect();
            let mut target = entry;
            sessiondb_test_support::eventually(WAIT, "every event is taken", async || {
                let validated: Vec<VisitorEvent> = pending
                    .iter()
                    .map(|event| event::validate(event.clone(), &registry, NOW_MS).expect("valid"))
                    .collect();
                let node = &cluster.nodes[&target];
                let outcomes = INGEST.ingest(&NodeGroups(node), NOW_MS, validated).await;
                let mut refused = Vec::new();
                let mut leader_named = None;
                for (event, outcome) in pending.iter().zip(outcomes) {
                    match outcome {
                        GroupOutcome::Accepted => {}
                        GroupOutcome::NotLeader { leader, .. } => {
                            if target == entry {
                                refused_at_entry += 1;
                            }
                            leader_named = leader_named.or(leader);
                            refused.push(event.clone());
                        }
                        GroupOutcome::Unavailable { reason, .. } => {
                            return Err(format!("unavailable: {reason}"));
                        }
                    }
                }
                pending = refused;
                match (pending.is_empty(), leader_named) {
                    (true, _) => Ok(()),
                    (false, Some(leader)) => {
                        target = leader;
                        Err(format!("{} events sent on to node {leader}", pending.len()))
                    }
                    (false, None) => Err("no leader named yet".to_string()),
                }
            })
            .await;
        }
        assert!(
            refused_at_entry > 0,
            "node {entry} does not lead group 0 and refused its events"
        );

        for group in 0..GROUPS {
            cluster.applied_everywhere(group).await;
        }
        for (id, node) in &cluster.nodes {
            let aggregates = merged(node);
            let results = |request: &query::ResultsQuery| {
                let aggregates = aggregates.as_ref()?;
                Some(query::results(aggregates, request).expect("a valid query"))
            };
            check_with(results, &oracle, &format!("node {id}"));
        }
        for id in [1, 2, 3] {
            cluster.lose(id).await;
        }
    }
}
