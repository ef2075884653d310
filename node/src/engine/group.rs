//! The engine's state of one replicated shard group (`docs/cluster.md`,
//! "Replicated shards (design)"): every replica of a group applies the
//! group's committed log entries, [`GroupCommand`]s, to its own
//! [`GroupState`] — the group's shards' visitors and the group's one
//! aggregate store — through `replication::GroupApply`. So each replica
//! holds everything a query of the group needs, and losing any one of them
//! loses nothing.
//!
//! Determinism is the contract: applying never reads a clock (every "now"
//! is the one the leader stamped into the entry), never depends on the
//! order of a hash map, never asks another actor. Two replicas that
//! applied the same entries hold equal states, which is what lets a
//! follower take over, a learner start from a snapshot, and a query read
//! any in-sync replica.
//!
//! The state is applied synchronously, in log order, by the group's state
//! machine task; there are no actors here. Readers ([`GroupReader`]) share
//! it behind a mutex held for one entry's apply or one query's read.

use super::aggregates::{AggregateStore, ExperimentAggregates};
use super::journal::{self, JournalEvent};
use super::shard::{DeltaSink, ShardState};
use crate::event::VisitorEvent;
use crate::project::ProjectConfig;
use crate::replication::{GroupApply, GroupApplyError, GroupId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One entry of a group's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Validated events of the group's shards, with the "now" the leader
    /// accepted them at (every replica applies them at that time).
    Events {
        now_ms: i64,
        events: Vec<JournalEvent>,
    },
    /// A project's configuration from this position of the log on.
    Project { config: ProjectConfig },
    /// Freeze closed sessions, forget expired visitors and buckets, at the
    /// leader's "now".
    Maintain { now_ms: i64 },
}

impl GroupCommand {
    /// The entry's bytes: the journal's versioned encoding (one format
    /// byte, then postcard), checked by a round trip in debug builds.
    pub fn encode(&self) -> Vec<u8> {
        journal::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupCommand, journal::CodecError> {
        journal::decode(bytes, "group command")
    }
}

/// What a group's snapshot holds: everything its replicas applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupSnapshot {
    group: GroupId,
    shards_total: u32,
    shard_groups: u32,
    applied_index: Option<u64>,
    projects: BTreeMap<String, ProjectConfig>,
    shards: BTreeMap<u32, ShardState>,
    aggregates: AggregateStore,
}

/// The applied state of one group on one replica.
#[derive(Debug)]
struct GroupCore {
    group: GroupId,
    shards_total: u32,
    shard_groups: u32,
    applied_index: Option<u64>,
    /// Project configurations as the log installed them.
    projects: BTreeMap<Arc<str>, Arc<ProjectConfig>>,
    /// The group's shards that have visitors.
    shards: BTreeMap<u32, ShardState>,
    /// The aggregates of every event of the group: they belong to the
    /// group, so they move and are replicated with it.
    aggregates: AggregateStore,
}

/// A group's state, applied by its replica's state machine. Cheap to
/// clone: clones share the state (the `GroupApply` and the readers).
#[derive(Debug, Clone)]
pub struct GroupState {
    core: Arc<Mutex<GroupCore>>,
}

/// What a group holds, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub group: GroupId,
    pub applied_index: Option<u64>,
    pub visitors: usize,
    pub projects: usize,
}

impl GroupState {
    /// The empty state of `group` among `shard_groups` groups of a cluster
    /// of `shards_total` shards.
    pub fn new(group: GroupId, shards_total: u32, shard_groups: u32) -> GroupState {
        assert!(shard_groups > 0 && shard_groups <= shards_total);
        assert!(group < shard_groups, "group {group} of {shard_groups}");
        GroupState {
            core: Arc::new(Mutex::new(GroupCore {
                group,
                shards_total,
                shard_groups,
                applied_index: None,
                projects: BTreeMap::new(),
                shards: BTreeMap::new(),
                aggregates: AggregateStore::default(),
            })),
        }
    }

    /// A reader sharing this state.
    pub fn reader(&self) -> GroupReader {
        GroupReader {
            core: Arc::clone(&self.core),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupCore> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads a group's state: what queries and reports need.
#[derive(Debug, Clone)]
pub struct GroupReader {
    core: Arc<Mutex<GroupCore>>,
}

impl GroupReader {
    /// A copy of one experiment's aggregates in this group, if it has any.
    pub fn experiment(&self, project: &str, experiment: &str) -> Option<ExperimentAggregates> {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        core.aggregates.experiment(project, experiment).cloned()
    }

    /// This group's share of a query: what a node answers for its stores
    /// (`Engine::share`), over the group's one store; nothing for a project
    /// the group has not applied.
    pub fn share(
        &self,
        request: &super::ShareRequest,
        query_cost_max: u64,
    ) -> Result<super::LocalShare, super::query::QueryError> {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(config) = core.projects.get(request.project.as_str()) else {
            return Ok(super::LocalShare::default());
        };
        let aggregates = core
            .aggregates
            .experiment(&request.project, &request.experiment);
        super::share::share_of_store(aggregates, config, request, query_cost_max)
    }

    /// The version of `project`'s configuration this group applied, if any.
    pub fn project_version(&self, project: &str) -> Option<u64> {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        core.projects.get(project).map(|config| config.version)
    }

    pub fn report(&self) -> GroupReport {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        GroupReport {
            group: core.group,
            applied_index: core.applied_index,
            visitors: core.shards.values().map(ShardState::visitor_count).sum(),
            projects: core.projects.len(),
        }
    }
}

impl GroupApply for GroupState {
    fn apply(&mut self, index: u64, payload: &[u8]) -> Result<(), GroupApplyError> {
        let command = GroupCommand::decode(payload).map_err(|error| GroupApplyError {
            step: "apply",
            reason: format!("entry {index}: {error}"),
        })?;
        let mut core = self.lock();
        assert!(
            core.applied_index.is_none_or(|applied| applied < index),
            "entries apply in log order"
        );
        core.apply(command).map_err(|reason| GroupApplyError {
            step: "apply",
            reason: format!("entry {index}: {reason}"),
        })?;
        core.applied_index = Some(index);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, GroupApplyError> {
        Ok(journal::encode(&self.lock().snapshot()))
    }

    fn install(&mut self, snapshot: &[u8]) -> Result<(), GroupApplyError> {
        let snapshot: GroupSnapshot =
            journal::decode(snapshot, "group snapshot").map_err(|error| GroupApplyError {
                step: "install",
                reason: error.to_string(),
            })?;
        let mut core = self.lock();
        core.install(snapshot).map_err(|reason| GroupApplyError {
            step: "install",
            reason,
        })
    }
}

impl GroupCore {
    fn apply(&mut self, command: GroupCommand) -> Result<(), String> {
        match command {
            GroupCommand::Events { now_ms, events } => self.apply_events(now_ms, events),
            GroupCommand::Project { config } => {
                self.apply_project(config);
                Ok(())
            }
            GroupCommand::Maintain { now_ms } => {
                self.maintain(now_ms);
                Ok(())
            }
        }
    }

    /// Routes each event to its shard (all of this group's, or the entry is
    /// damage), keeping arrival order per shard.
    fn apply_events(&mut self, now_ms: i64, events: Vec<JournalEvent>) -> Result<(), String> {
        let mut by_shard: BTreeMap<u32, Vec<VisitorEvent>> = BTreeMap::new();
        for event in events {
            let shard = crate::hashing::shard_of(&event.project, &event.visitor, self.shards_total);
            let group = group_of(shard, self.shard_groups);
            if group != self.group {
                return Err(format!(
                    "an event of shard {shard} (group {group}) in group {}'s log",
                    self.group
                ));
            }
            let project = self.projects.get(&*event.project).ok_or_else(|| {
                format!(
                    "an event of project {} before its configuration",
                    event.project
                )
            })?;
            by_shard.entry(shard).or_default().push(VisitorEvent {
                project: Arc::clone(project),
                visitor: event.visitor,
                event: event.event,
            });
        }
        let mut sink = DeltaSink::new(1);
        for (shard, events) in by_shard {
            // Outcomes (duplicates, late rejections) are the same on every
            // replica; the leader reported them when it accepted the batch.
            let _outcomes = self
                .shards
                .entry(shard)
                .or_default()
                .apply(now_ms, events, &mut sink);
        }
        self.absorb(&mut sink);
        Ok(())
    }

    fn apply_project(&mut self, config: ProjectConfig) {
        let newer = self
            .projects
            .get(&config.name)
            .is_none_or(|stored| stored.version < config.version);
        if !newer {
            return;
        }
        let config = Arc::new(config);
        self.projects
            .insert(Arc::clone(&config.name), Arc::clone(&config));
        let mut sink = DeltaSink::new(1);
        for shard in self.shards.values_mut() {
            shard.reconfigure(&config, &mut sink);
        }
        self.absorb(&mut sink);
    }

    fn maintain(&mut self, now_ms: i64) {
        for shard in self.shards.values_mut() {
            shard.maintain(now_ms);
        }
        self.shards.retain(|_, shard| shard.visitor_count() > 0);
        for config in self.projects.values() {
            let before_ms = now_ms - config.settings.retention_ms;
            self.aggregates.expire(&config.name, before_ms);
        }
    }

    fn absorb(&mut self, sink: &mut DeltaSink) {
        for (segment, batch) in sink.drain() {
            debug_assert_eq!(segment, 0, "one aggregate store per group");
            self.aggregates.apply(&batch);
        }
    }

    fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            group: self.group,
            shards_total: self.shards_total,
            shard_groups: self.shard_groups,
            applied_index: self.applied_index,
            projects: self
                .projects
                .iter()
                .map(|(name, config)| (name.to_string(), ProjectConfig::clone(config)))
                .collect(),
            shards: self.shards.clone(),
            aggregates: self.aggregates.clone(),
        }
    }

    /// Replaces everything with `snapshot`'s, which must be this group's of
    /// the same cluster shape.
    fn install(&mut self, snapshot: GroupSnapshot) -> Result<(), String> {
        let shape = (snapshot.group, snapshot.shards_total, snapshot.shard_groups);
        if shape != (self.group, self.shards_total, self.shard_groups) {
            return Err(format!(
                "a snapshot of group {} ({} shards in {} groups) offered to group {} ({} shards in {} groups)",
                shape.0, shape.1, shape.2, self.group, self.shards_total, self.shard_groups
            ));
        }
        self.applied_index = snapshot.applied_index;
        self.projects = snapshot
            .projects
            .into_values()
            .map(|config| (Arc::clone(&config.name), Arc::new(config)))
            .collect();
        self.shards = snapshot.shards;
        for shard in self.shards.values_mut() {
            shard.share_names();
        }
        self.aggregates = snapshot.aggregates;
        self.aggregates.reindex();
        Ok(())
    }
}

/// The group of `shard`; equal to `sessiondb_protocol::hashing::group_of`
/// once the shard map names groups (node and client must agree on it).
pub fn group_of(shard: u32, shard_groups: u32) -> GroupId {
    assert!(shard_groups > 0);
    shard % shard_groups
}
