//! The placement state machine, as pure data and pure functions.
//!
//! `PlacementState::apply` is what every replica runs for each committed
//! `PlacementCommand`, in log order; it must give the same answer on every
//! node, so it reads nothing but the state and the command (no clock, no
//! randomness, no I/O). This file knows nothing of openraft or sled: the
//! store (`store.rs`) feeds it commands and mirrors openraft's membership into
//! it with `set_members`.
//!
//! A command whose preconditions fail is answered with
//! `PlacementResponse::Rejected` and changes nothing. Bad input never panics;
//! only a broken invariant (a bug here) does.

use crate::experiment_aliases::{Alias, ProjectAliases};
use crate::limits;
use crate::project::{self, ProjectConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node's id in the cluster (openraft's `NodeId`). Stable for the life of
/// the node's data directory.
pub type NodeId = u64;

/// The first epoch of every shard.
pub const EPOCH_INITIAL: u64 = 1;

/// Whether a member votes in Raft elections. Decided by openraft's
/// membership, mirrored here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Voter,
    Learner,
}

/// A member of the cluster, as the last applied membership entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's HTTP address (`host:port`).
    pub address: String,
    pub role: Role,
}

/// Who owns one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    /// The one node that accepts writes for the shard at this epoch.
    pub owner: NodeId,
    /// Grows by one each time ownership changes; never decreases.
    pub epoch: u64,
    /// The node the shard is being handed to, between `BeginMove` and
    /// `CommitMove`/`AbortMove`.
    pub moving_to: Option<NodeId>,
}

/// A change to the placement state, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlacementCommand {
    /// Creates the shard map: `shards` shards, all owned by `owner`, at
    /// epoch 1. Once per cluster.
    Initialize { shards: u32, owner: NodeId },
    /// Creates or replaces a project's configuration.
    PutProject { config: ProjectConfig },
    /// Starts handing `shard` from its owner `from` to `to`.
    BeginMove {
        shard: u32,
        from: NodeId,
        to: NodeId,
        expected_epoch: u64,
    },
    /// Finishes a move: `to` becomes the owner at the next epoch.
    CommitMove {
        shard: u32,
        to: NodeId,
        expected_epoch: u64,
    },
    /// Gives up a move; the owner and the epoch stay.
    AbortMove { shard: u32, expected_epoch: u64 },
    /// Marks a member as draining (rebalance and drain move its shards away
    /// and give it none) or clears the mark.
    SetDraining { node: NodeId, draining: bool },
    /// Records that `node`'s aggregate stores now live in `into`'s store
    /// (`docs/cluster.md`, "Removing a node"): queries expect them there.
    /// `node` must own no shard and no shard may be moving to it.
    RetireStores { node: NodeId, into: NodeId },
    /// Stores (`Some`) or clears (`None`) an experiment's expected
    /// allocation weights, kept with its project's configuration.
    SetExperimentWeights {
        project: String,
        experiment: String,
        weights: Option<project::ExperimentWeights>,
    },
    /// Names the cluster (`docs/cluster.md`, "Node identity"): once; the
    /// first node proposes it at bootstrap, a leader of an older cluster
    /// when it finds none.
    SetClusterId { cluster_id: String },
    /// Records the incarnation (data directory id) member `node` runs
    /// with. Refused when another one is recorded for it.
    RecordIncarnation { node: NodeId, incarnation: String },
    /// Adds a compatible format's ids → keys to `project`'s experiment
    /// aliases (`experiment_aliases`); ids past the table's bound are left
    /// out.
    PutAliases {
        project: String,
        aliases: Vec<Alias>,
    },
}

impl PlacementCommand {
    /// The shard the command is about, if any.
    pub fn shard(&self) -> Option<u32> {
        match self {
            PlacementCommand::BeginMove { shard, .. }
            | PlacementCommand::CommitMove { shard, .. }
            | PlacementCommand::AbortMove { shard, .. } => Some(*shard),
            PlacementCommand::Initialize { .. }
            | PlacementCommand::PutProject { .. }
            | PlacementCommand::SetDraining { .. }
            | PlacementCommand::RetireStores { .. }
            | PlacementCommand::SetExperimentWeights { .. }
            | PlacementCommand::SetClusterId { .. }
            | PlacementCommand::RecordIncarnation { .. }
            | PlacementCommand::PutAliases { .. } => None,
        }
    }
}

/// The answer to one applied Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementResponse {
    /// The entry carried no command (a leader's blank entry or a membership
    /// change).
    NoCommand,
    Initialized {
        shards: u32,
        owner: NodeId,
    },
    ProjectStored {
        name: String,
        version: u64,
    },
    MoveBegun {
        shard: u32,
        to: NodeId,
        epoch: u64,
    },
    MoveCommitted {
        shard: u32,
        owner: NodeId,
        epoch: u64,
    },
    DrainingSet {
        node: NodeId,
        draining: bool,
    },
    StoresRetired {
        node: NodeId,
        into: NodeId,
    },
    MoveAborted {
        shard: u32,
        epoch: u64,
    },
    ClusterIdSet {
        cluster_id: String,
    },
    IncarnationRecorded {
        node: NodeId,
        incarnation: String,
    },
    /// A precondition failed; nothing changed.
    Rejected {
        reason: PlacementRejection,
    },
    ExperimentWeightsSet {
        project: String,
        experiment: String,
        stored: bool,
    },
    /// How many of the proposed aliases changed the project's table.
    AliasesStored {
        project: String,
        changed: usize,
    },
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PlacementRejection {
    #[error("the shard map is already initialized with {shards} shards")]
    AlreadyInitialized { shards: u32 },
    #[error("the shard map is not initialized yet")]
    NotInitialized,
    #[error("a cluster has 1-{max} shards, not {shards}")]
    ShardCountOutOfRange { shards: u32, max: u32 },
    #[error("shard {shard} does not exist: the cluster has {shards} shards")]
    ShardOutOfRange { shard: u32, shards: u32 },
    #[error("node {node} is not a member of the cluster")]
    NotAMember { node: NodeId },
    #[error("shard {shard} is at epoch {actual}, not {expected}")]
    EpochMismatch {
        shard: u32,
        expected: u64,
        actual: u64,
    },
    #[error("shard {shard} is owned by node {owner}, not node {node}")]
    NotOwner {
        shard: u32,
        node: NodeId,
        owner: NodeId,
    },
    #[error("shard {shard} cannot move to node {node}, which owns it")]
    MoveToOwner { shard: u32, node: NodeId },
    #[error("shard {shard} is already moving to node {moving_to}")]
    MoveInProgress { shard: u32, moving_to: NodeId },
    #[error("shard {shard} has no move in progress")]
    NoMoveInProgress { shard: u32 },
    #[error("shard {shard} is moving to node {moving_to}, not node {to}")]
    MoveTargetMismatch {
        shard: u32,
        to: NodeId,
        moving_to: NodeId,
    },
    #[error("invalid project name `{name}`")]
    InvalidProjectName { name: String },
    #[error("project `{name}` is at version {stored}; version {proposed} is not newer")]
    StaleProjectVersion {
        name: String,
        stored: u64,
        proposed: u64,
    },
    #[error("project `{name}`: `{field}` is fixed when the project is created")]
    ImmutableProjectField { name: String, field: String },
    #[error("the ingest key is already used by project `{owner}`")]
    IngestKeyTaken { owner: String },
    #[error("too many projects: the limit is {max}")]
    TooManyProjects { max: usize },
    #[error("node {node} still owns {shards} shards; drain it first")]
    StillOwnsShards { node: NodeId, shards: u32 },
    #[error("shard {shard} is moving to node {node}; wait for the move to end")]
    MoveTowardsNode { shard: u32, node: NodeId },
    #[error("node {node}'s stores are already kept by node {into}")]
    AlreadyRetired { node: NodeId, into: NodeId },
    #[error("node {node} cannot keep its own stores")]
    RetireIntoItself { node: NodeId },
    #[error("node {node} is draining and cannot receive shards")]
    TargetDraining { node: NodeId },
    #[error("project `{name}` does not exist")]
    UnknownProject { name: String },
    #[error("invalid experiment weights: {detail}")]
    InvalidExperimentWeights { detail: String },
    #[error("the cluster is already named `{cluster_id}`")]
    ClusterIdAlreadySet { cluster_id: String },
    #[error(
        "node {node} is known to the cluster with another data directory (incarnation {recorded})"
    )]
    IncarnationMismatch { node: NodeId, recorded: String },
    #[error("`{value}` is not a valid id: 1-{max} ASCII letters, digits or `-`")]
    InvalidIdentity { value: String, max: usize },
}

/// Longest cluster id or incarnation the state machine accepts (ours are
/// 32 hexadecimal digits).
pub const IDENTITY_BYTES_MAX: usize = 64;

/// Everything the placement Raft group agrees on: members (mirrored from
/// openraft's membership), the shard map and project configurations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementState {
    members: BTreeMap<NodeId, Member>,
    /// Empty until `Initialize`; then its length never changes.
    shards: Vec<ShardAssignment>,
    projects: BTreeMap<String, ProjectConfig>,
    /// Members whose shards are being moved away (`SetDraining`).
    draining: BTreeSet<NodeId>,
    /// Departed (or departing) nodes whose aggregate stores another node
    /// keeps: node → keeper (`RetireStores`). A query must find each of
    /// these stores, and each member's own, exactly once.
    retired: BTreeMap<NodeId, NodeId>,
    /// Per project, per experiment, its expected allocation weights
    /// (`SetExperimentWeights`).
    experiment_weights: BTreeMap<String, BTreeMap<String, project::ExperimentWeights>>,
    /// The cluster's id (`SetClusterId`); `None` in a cluster older than
    /// ids until its leader names it.
    cluster_id: Option<String>,
    /// Each member's incarnation: the id of the data directory it runs on
    /// (`RecordIncarnation`). Forgotten when the node leaves.
    incarnations: BTreeMap<NodeId, String>,
    /// Experiment aliases per project (`PutAliases`). Last, so a state of
    /// the layout before it decodes as a prefix (`store::decode_state`).
    aliases: BTreeMap<String, ProjectAliases>,
}

/// `PlacementState` as format version 3 stored it, before experiment
/// aliases: read once from an older store, then written in the current
/// layout.
#[derive(Debug, Deserialize)]
pub struct PlacementStateV3 {
    members: BTreeMap<NodeId, Member>,
    shards: Vec<ShardAssignment>,
    projects: BTreeMap<String, ProjectConfig>,
    draining: BTreeSet<NodeId>,
    retired: BTreeMap<NodeId, NodeId>,
    experiment_weights: BTreeMap<String, BTreeMap<String, project::ExperimentWeights>>,
    cluster_id: Option<String>,
    incarnations: BTreeMap<NodeId, String>,
}

impl From<PlacementStateV3> for PlacementState {
    fn from(old: PlacementStateV3) -> PlacementState {
        PlacementState {
            members: old.members,
            shards: old.shards,
            projects: old.projects,
            draining: old.draining,
            retired: old.retired,
            experiment_weights: old.experiment_weights,
            cluster_id: old.cluster_id,
            incarnations: old.incarnations,
            aliases: BTreeMap::new(),
        }
    }
}

/// `PlacementState` as format version 2 stored it, before experiment
/// weights, cluster ids and incarnations: read once from an older store,
/// then written in the current layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementStateV2 {
    members: BTreeMap<NodeId, Member>,
    shards: Vec<ShardAssignment>,
    projects: BTreeMap<String, ProjectConfig>,
    draining: BTreeSet<NodeId>,
    retired: BTreeMap<NodeId, NodeId>,
}

impl PlacementStateV2 {
    /// The old layout of `state` (tests of the migration).
    #[cfg(test)]
    pub fn of(state: &PlacementState) -> PlacementStateV2 {
        PlacementStateV2 {
            members: state.members.clone(),
            shards: state.shards.clone(),
            projects: state.projects.clone(),
            draining: state.draining.clone(),
            retired: state.retired.clone(),
        }
    }
}

impl From<PlacementStateV2> for PlacementState {
    fn from(old: PlacementStateV2) -> PlacementState {
        PlacementState {
            members: old.members,
            shards: old.shards,
            projects: old.projects,
            draining: old.draining,
            retired: old.retired,
            experiment_weights: BTreeMap::new(),
            cluster_id: None,
            incarnations: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }
}

/// A state read from disk or from a snapshot breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placement state is damaged: {detail}")]
pub struct DamagedState {
    pub detail: String,
}

impl PlacementState {
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    pub fn is_member(&self, node: NodeId) -> bool {
        self.members.contains_key(&node)
    }

    /// The shard map; empty before `Initialize`.
    pub fn shards(&self) -> &[ShardAssignment] {
        &self.shards
    }

    pub fn shard(&self, shard: u32) -> Option<&ShardAssignment> {
        self.shards.get(shard as usize)
    }

    pub fn is_initialized(&self) -> bool {
        !self.shards.is_empty()
    }

    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.shards.len()).expect("at most SHARDS_MAX shards")
    }

    pub fn projects(&self) -> &BTreeMap<String, ProjectConfig> {
        &self.projects
    }

    /// Project `name`'s experiment aliases, if it has any.
    pub fn aliases(&self, name: &str) -> Option<&ProjectAliases> {
        self.aliases.get(name)
    }

    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.get(name)
    }

    /// The stored allocation weights of an experiment, if any.
    pub fn experiment_weights(
        &self,
        project: &str,
        experiment: &str,
    ) -> Option<&project::ExperimentWeights> {
        self.experiment_weights.get(project)?.get(experiment)
    }

    /// Every experiment of a project with stored allocation weights.
    pub fn project_experiment_weights(
        &self,
        project: &str,
    ) -> Option<&BTreeMap<String, project::ExperimentWeights>> {
        self.experiment_weights.get(project)
    }

    /// Members marked as draining.
    pub fn draining(&self) -> &BTreeSet<NodeId> {
        &self.draining
    }

    pub fn is_draining(&self, node: NodeId) -> bool {
        self.draining.contains(&node)
    }

    /// The cluster's id, once named.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The incarnation recorded for member `node`.
    pub fn incarnation(&self, node: NodeId) -> Option<&str> {
        self.incarnations.get(&node).map(String::as_str)
    }

    /// Retired stores: node → the node that keeps them.
    pub fn retired(&self) -> &BTreeMap<NodeId, NodeId> {
        &self.retired
    }

    /// The aggregate stores a complete query must find: every member's own
    /// and every retired node's.
    pub fn expected_stores(&self) -> BTreeSet<NodeId> {
        self.members
            .keys()
            .chain(self.retired.keys())
            .copied()
            .collect()
    }

    /// Members that may receive shards: not draining.
    pub fn shard_holders(&self) -> BTreeSet<NodeId> {
        self.members
            .keys()
            .copied()
            .filter(|node| !self.draining.contains(node))
            .collect()
    }

    /// How many shards `node` owns.
    pub fn shards_owned(&self, node: NodeId) -> u32 {
        let owned = self.shards.iter().filter(|a| a.owner == node).count();
        u32::try_from(owned).expect("at most SHARDS_MAX shards")
    }

    /// Replaces the mirror of the cluster membership. Called when a
    /// membership entry is applied or a snapshot installed; openraft's
    /// membership is the source of truth. A node that leaves keeps the shards
    /// it owns until they are moved (draining first is the caller's job).
    pub fn set_members(&mut self, members: BTreeMap<NodeId, Member>) {
        self.draining.retain(|node| members.contains_key(node));
        // A node that left may come back under its id with a new data
        // directory (after `nodes remove`).
        self.incarnations
            .retain(|node, _| members.contains_key(node));
        self.members = members;
    }

    /// Applies one committed command. Checks every precondition first and
    /// answers `Rejected` (changing nothing) when one fails.
    pub fn apply(&mut self, command: PlacementCommand) -> PlacementResponse {
        let shard_count_before = self.shards.len();
        let watched = command
            .shard()
            .and_then(|shard| Some((shard, self.shard(shard)?.epoch)));
        let response = match self.try_apply(command) {
            Ok(response) => response,
            Err(reason) => PlacementResponse::Rejected { reason },
        };
        // The shard count is fixed once set.
        assert!(
            shard_count_before == 0 || self.shards.len() == shard_count_before,
            "the shard count changed from {shard_count_before} to {}",
            self.shards.len()
        );
        // Epochs only grow.
        if let Some((shard, epoch_before)) = watched {
            let epoch = self.shards[shard as usize].epoch;
            assert!(
                epoch >= epoch_before,
                "shard {shard}'s epoch went from {epoch_before} to {epoch}"
            );
        }
        if let Err(damage) = self.check() {
            panic!("apply broke an invariant: {damage}");
        }
        response
    }

    fn try_apply(
        &mut self,
        command: PlacementCommand,
    ) -> Result<PlacementResponse, PlacementRejection> {
        match command {
            PlacementCommand::Initialize { shards, owner } => self.initialize(shards, owner),
            PlacementCommand::PutProject { config } => self.put_project(config),
            PlacementCommand::BeginMove {
                shard,
                from,
                to,
                expected_epoch,
            } => self.begin_move(shard, from, to, expected_epoch),
            PlacementCommand::CommitMove {
                shard,
                to,
                expected_epoch,
            } => self.commit_move(shard, to, expected_epoch),
            PlacementCommand::AbortMove {
                shard,
                expected_epoch,
            } => self.abort_move(shard, expected_epoch),
            PlacementCommand::SetDraining { node, draining } => self.set_draining(node, draining),
            PlacementCommand::RetireStores { node, into } => self.retire_stores(node, into),
            PlacementCommand::SetExperimentWeights {
                project,
                experiment,
                weights,
            } => self.set_experiment_weights(project, experiment, weights),
            PlacementCommand::SetClusterId { cluster_id } => self.set_cluster_id(cluster_id),
            PlacementCommand::RecordIncarnation { node, incarnation } => {
                self.record_incarnation(node, incarnation)
            }
            PlacementCommand::PutAliases { project, aliases } => {
                self.put_aliases(project, &aliases)
            }
        }
    }

    fn put_aliases(
        &mut self,
        project: String,
        aliases: &[Alias],
    ) -> Result<PlacementResponse, PlacementRejection> {
        if !self.projects.contains_key(&project) {
            return Err(PlacementRejection::UnknownProject { name: project });
        }
        let table = self.aliases.entry(project.clone()).or_default();
        let changed = aliases.iter().filter(|alias| table.insert(alias)).count();
        Ok(PlacementResponse::AliasesStored { project, changed })
    }

    fn set_cluster_id(
        &mut self,
        cluster_id: String,
    ) -> Result<PlacementResponse, PlacementRejection> {
        check_identity(&cluster_id)?;
        if let Some(existing) = &self.cluster_id {
            return Err(PlacementRejection::ClusterIdAlreadySet {
                cluster_id: existing.clone(),
            });
        }
        self.cluster_id = Some(cluster_id.clone());
        Ok(PlacementResponse::ClusterIdSet { cluster_id })
    }

    fn record_incarnation(
        &mut self,
        node: NodeId,
        incarnation: String,
    ) -> Result<PlacementResponse, PlacementRejection> {
        check_identity(&incarnation)?;
        self.require_member(node)?;
        match self.incarnations.get(&node) {
            Some(recorded) if *recorded != incarnation => {
                return Err(PlacementRejection::IncarnationMismatch {
                    node,
                    recorded: recorded.clone(),
                })
            }
            _ => {}
        }
        self.incarnations.insert(node, incarnation.clone());
        Ok(PlacementResponse::IncarnationRecorded { node, incarnation })
    }

    fn set_experiment_weights(
        &mut self,
        project: String,
        experiment: String,
        weights: Option<project::ExperimentWeights>,
    ) -> Result<PlacementResponse, PlacementRejection> {
        if !self.projects.contains_key(&project) {
            return Err(PlacementRejection::UnknownProject { name: project });
        }
        let invalid = |error: project::WeightsError| PlacementRejection::InvalidExperimentWeights {
            detail: error.to_string(),
        };
        let stored = weights.is_some();
        match weights {
            Some(weights) => {
                project::check_experiment_weights(&experiment, &weights).map_err(invalid)?;
                let experiments = self.experiment_weights.entry(project.clone()).or_default();
                if !experiments.contains_key(&experiment)
                    && experiments.len() >= limits::WEIGHTED_EXPERIMENTS_PER_PROJECT_MAX
                {
                    let error = project::WeightsError::TooManyExperiments {
                        project: project.clone(),
                    };
                    return Err(invalid(error));
                }
                experiments.insert(experiment.clone(), weights);
            }
            None => {
                if let Some(experiments) = self.experiment_weights.get_mut(&project) {
                    experiments.remove(&experiment);
                    if experiments.is_empty() {
                        self.experiment_weights.remove(&project);
                    }
                }
            }
        }
        Ok(PlacementResponse::ExperimentWeightsSet {
            project,
            experiment,
            stored,
        })
    }

    fn set_draining(
        &mut self,
        node: NodeId,
        draining: bool,
    ) -> Result<PlacementResponse, PlacementRejection> {
        self.require_member(node)?;
        if draining {
            self.draining.insert(node);
        } else {
            self.draining.remove(&node);
        }
        Ok(PlacementResponse::DrainingSet { node, draining })
    }

    fn retire_stores(
        &mut self,
        node: NodeId,
        into: NodeId,
    ) -> Result<PlacementResponse, PlacementRejection> {
        if node == into {
            return Err(PlacementRejection::RetireIntoItself { node });
        }
        if let Some(keeper) = self.retired.get(&node) {
            return Err(PlacementRejection::AlreadyRetired {
                node,
                into: *keeper,
            });
        }
        self.require_member(into)?;
        if let Some(keeper) = self.retired.get(&into) {
            return Err(PlacementRejection::AlreadyRetired {
                node: into,
                into: *keeper,
            });
        }
        let shards = self.shards_owned(node);
        if shards > 0 {
            return Err(PlacementRejection::StillOwnsShards { node, shards });
        }
        if let Some(shard) = self.shards.iter().position(|a| a.moving_to == Some(node)) {
            return Err(PlacementRejection::MoveTowardsNode {
                shard: u32::try_from(shard).expect("at most SHARDS_MAX shards"),
                node,
            });
        }
        // Stores `node` kept for others now live in `into` too.
        for keeper in self.retired.values_mut() {
            if *keeper == node {
                *keeper = into;
            }
        }
        self.retired.insert(node, into);
        Ok(PlacementResponse::StoresRetired { node, into })
    }

    fn initialize(
        &mut self,
        shards: u32,
        owner: NodeId,
    ) -> Result<PlacementResponse, PlacementRejection> {
        if self.is_initialized() {
            return Err(PlacementRejection::AlreadyInitialized {
                shards: self.shard_count(),
            });
        }
        if shards == 0 || shards > limits::SHARDS_MAX {
            return Err(PlacementRejection::ShardCountOutOfRange {
                shards,
                max: limits::SHARDS_MAX,
            });
        }
        self.require_member(owner)?;
        if let Some(keeper) = self.retired.get(&owner) {
            return Err(PlacementRejection::AlreadyRetired {
                node: owner,
                into: *keeper,
            });
        }
        let assignment = ShardAssignment {
            owner,
            epoch: EPOCH_INITIAL,
            moving_to: None,
        };
        self.shards = vec![assignment; shards as usize];
        Ok(PlacementResponse::Initialized { shards, owner })
    }

    fn put_project(
        &mut self,
        config: ProjectConfig,
    ) -> Result<PlacementResponse, PlacementRejection> {
        let name = config.name.to_string();
        if project::validate_name(&name).is_err() {
            return Err(PlacementRejection::InvalidProjectName { name });
        }
        match self.projects.get(&name) {
            Some(stored) => {
                if config.version <= stored.version {
                    return Err(PlacementRejection::StaleProjectVersion {
                        name,
                        stored: stored.version,
                        proposed: config.version,
                    });
                }
                // The ingest key may change (a rotation); bucket and
                // precision decide how aggregates are laid out, so never.
                let immutable = if config.settings.bucket_ms != stored.settings.bucket_ms {
                    Some("bucket_ms")
                } else if config.settings.hll_precision != stored.settings.hll_precision {
                    Some("hll_precision")
                } else {
                    None
                };
                if let Some(field) = immutable {
                    return Err(PlacementRejection::ImmutableProjectField {
                        name,
                        field: field.to_string(),
                    });
                }
            }
            None => {
                if self.projects.len() >= limits::PROJECTS_MAX {
                    return Err(PlacementRejection::TooManyProjects {
                        max: limits::PROJECTS_MAX,
                    });
                }
            }
        }
        // A key (current or retired) belongs to one project only: a request
        // must never be able to authenticate as two.
        if let Some(owner) = self.projects.values().find(|other| {
            other.name != config.name && other.ingest_keys.holds(&config.ingest_keys.current)
        }) {
            return Err(PlacementRejection::IngestKeyTaken {
                owner: owner.name.to_string(),
            });
        }
        let version = config.version;
        self.projects.insert(name.clone(), config);
        Ok(PlacementResponse::ProjectStored { name, version })
    }

    fn begin_move(
        &mut self,
        shard: u32,
        from: NodeId,
        to: NodeId,
        expected_epoch: u64,
    ) -> Result<PlacementResponse, PlacementRejection> {
        let assignment = self.shard_at_epoch(shard, expected_epoch)?;
        if assignment.owner != from {
            return Err(PlacementRejection::NotOwner {
                shard,
                node: from,
                owner: assignment.owner,
            });
        }
        if let Some(moving_to) = assignment.moving_to {
            return Err(PlacementRejection::MoveInProgress { shard, moving_to });
        }
        if to == from {
            return Err(PlacementRejection::MoveToOwner { shard, node: to });
        }
        self.require_member(to)?;
        if self.draining.contains(&to) {
            return Err(PlacementRejection::TargetDraining { node: to });
        }
        if self.retired.contains_key(&to) {
            return Err(PlacementRejection::AlreadyRetired {
                node: to,
                into: self.retired[&to],
            });
        }
        let assignment = &mut self.shards[shard as usize];
        assignment.moving_to = Some(to);
        Ok(PlacementResponse::MoveBegun {
            shard,
            to,
            epoch: assignment.epoch,
        })
    }

    fn commit_move(
        &mut self,
        shard: u32,
        to: NodeId,
        expected_epoch: u64,
    ) -> Result<PlacementResponse, PlacementRejection> {
        let assignment = self.shard_at_epoch(shard, expected_epoch)?;
        match assignment.moving_to {
            None => return Err(PlacementRejection::NoMoveInProgress { shard }),
            Some(moving_to) if moving_to != to => {
                return Err(PlacementRejection::MoveTargetMismatch {
                    shard,
                    to,
                    moving_to,
                })
            }
            Some(_) => {}
        }
        self.require_member(to)?;
        let assignment = &mut self.shards[shard as usize];
        assignment.owner = to;
        assignment.epoch += 1;
        assignment.moving_to = None;
        Ok(PlacementResponse::MoveCommitted {
            shard,
            owner: to,
            epoch: assignment.epoch,
        })
    }

    fn abort_move(
        &mut self,
        shard: u32,
        expected_epoch: u64,
    ) -> Result<PlacementResponse, PlacementRejection> {
        let assignment = self.shard_at_epoch(shard, expected_epoch)?;
        if assignment.moving_to.is_none() {
            return Err(PlacementRejection::NoMoveInProgress { shard });
        }
        let assignment = &mut self.shards[shard as usize];
        assignment.moving_to = None;
        Ok(PlacementResponse::MoveAborted {
            shard,
            epoch: assignment.epoch,
        })
    }

    /// The shard, if the map is initialized, the shard exists and its epoch
    /// is `expected_epoch`.
    fn shard_at_epoch(
        &self,
        shard: u32,
        expected_epoch: u64,
    ) -> Result<ShardAssignment, PlacementRejection> {
        if !self.is_initialized() {
            return Err(PlacementRejection::NotInitialized);
        }
        let assignment = *self
            .shard(shard)
            .ok_or(PlacementRejection::ShardOutOfRange {
                shard,
                shards: self.shard_count(),
            })?;
        if assignment.epoch != expected_epoch {
            return Err(PlacementRejection::EpochMismatch {
                shard,
                expected: expected_epoch,
                actual: assignment.epoch,
            });
        }
        Ok(assignment)
    }

    fn require_member(&self, node: NodeId) -> Result<(), PlacementRejection> {
        if self.is_member(node) {
            Ok(())
        } else {
            Err(PlacementRejection::NotAMember { node })
        }
    }

    /// Checks the invariants that hold in every reachable state: a bounded
    /// shard count, epochs from 1, a move never targets the owner, projects
    /// stored under their own valid names. Used after every apply (a failure
    /// there is a bug) and on every state read from disk or a snapshot (a
    /// failure there is damage).
    pub fn check(&self) -> Result<(), DamagedState> {
        let damaged = |detail: String| Err(DamagedState { detail });
        if self.shards.len() > limits::SHARDS_MAX as usize {
            return damaged(format!("{} shards", self.shards.len()));
        }
        for (shard, assignment) in self.shards.iter().enumerate() {
            if assignment.epoch < EPOCH_INITIAL {
                return damaged(format!("shard {shard} has epoch {}", assignment.epoch));
            }
            if assignment.moving_to == Some(assignment.owner) {
                return damaged(format!("shard {shard} is moving to its own owner"));
            }
        }
        for (name, config) in &self.projects {
            if *config.name != **name || project::validate_name(name).is_err() {
                return damaged(format!("project stored as `{name}` is `{}`", config.name));
            }
        }
        for (name, table) in &self.aliases {
            if !self.projects.contains_key(name)
                || table.len() > crate::experiment_aliases::ALIASES_PER_PROJECT_MAX
            {
                return damaged(format!(
                    "{} experiment aliases of project `{name}`",
                    table.len()
                ));
            }
        }
        for (node, keeper) in &self.retired {
            if node == keeper || self.retired.contains_key(keeper) {
                return damaged(format!(
                    "node {node}'s stores are kept by retired node {keeper}"
                ));
            }
            if let Some(shard) = self
                .shards
                .iter()
                .position(|a| a.owner == *node || a.moving_to == Some(*node))
            {
                return damaged(format!("retired node {node} holds shard {shard}"));
            }
        }
        Ok(())
    }
}

/// A cluster id or incarnation: short, plain ASCII (it is written into
/// files and error messages).
fn check_identity(value: &str) -> Result<(), PlacementRejection> {
    let valid = !value.is_empty()
        && value.len() <= IDENTITY_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(PlacementRejection::InvalidIdentity {
            value: value.chars().take(IDENTITY_BYTES_MAX).collect(),
            max: IDENTITY_BYTES_MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyHash, RotatingKey};
    use crate::project::Settings;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn member(address: &str, role: Role) -> Member {
        Member {
            address: address.to_string(),
            role,
        }
    }

    /// Nodes 1 and 2 are voters, 3 is a learner.
    fn three_members() -> BTreeMap<NodeId, Member> {
        BTreeMap::from([
            (1, member("127.0.0.1:7001", Role::Voter)),
            (2, member("127.0.0.1:7002", Role::Voter)),
            (3, member("127.0.0.1:7003", Role::Learner)),
        ])
    }

    fn initialized(shards: u32) -> PlacementState {
        let mut state = PlacementState::default();
        state.set_members(three_members());
        let response = state.apply(PlacementCommand::Initialize { shards, owner: 1 });
        assert_eq!(
            response,
            PlacementResponse::Initialized { shards, owner: 1 }
        );
        state
    }

    #[test]
    fn the_cluster_is_named_once_and_incarnations_do_not_change() {
        let mut state = initialized(4);
        let named = state.apply(PlacementCommand::SetClusterId {
            cluster_id: "c1".to_string(),
        });
        assert!(matches!(named, PlacementResponse::ClusterIdSet { .. }));
        let again = state.apply(PlacementCommand::SetClusterId {
            cluster_id: "c2".to_string(),
        });
        assert!(matches!(
            again,
            PlacementResponse::Rejected {
                reason: PlacementRejection::ClusterIdAlreadySet { .. }
            }
        ));
        assert_eq!(state.cluster_id(), Some("c1"));
        let record = |node: NodeId, incarnation: &str| PlacementCommand::RecordIncarnation {
            node,
            incarnation: incarnation.to_string(),
        };
        assert!(matches!(
            state.apply(record(3, "aa")),
            PlacementResponse::IncarnationRecorded { .. }
        ));
        // The same one again is fine (a restart); another is refused.
        assert!(matches!(
            state.apply(record(3, "aa")),
            PlacementResponse::IncarnationRecorded { .. }
        ));
        assert_eq!(
            state.apply(record(3, "bb")),
            PlacementResponse::Rejected {
                reason: PlacementRejection::IncarnationMismatch {
                    node: 3,
                    recorded: "aa".to_string()
                }
            }
        );
        assert!(matches!(
            state.apply(record(9, "aa")),
            PlacementResponse::Rejected {
                reason: PlacementRejection::NotAMember { node: 9 }
            }
        ));
        assert!(matches!(
            state.apply(record(2, "no spaces")),
            PlacementResponse::Rejected {
                reason: PlacementRejection::InvalidIdentity { .. }
            }
        ));
        // A node that left is forgotten: its id may come back with a new
        // data directory.
        let mut members = three_members();
        members.remove(&3);
        state.set_members(members);
        assert_eq!(state.incarnation(3), None);
    }

    fn project(name: &str, version: u64, key: &str) -> ProjectConfig {
        ProjectConfig {
            name: Arc::from(name),
            settings: Settings::default(),
            version,
            ingest_keys: RotatingKey::new(KeyHash::of(key.as_bytes())),
        }
    }

    fn rejection(response: PlacementResponse) -> PlacementRejection {
        match response {
            PlacementResponse::Rejected { reason } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn experiment_weights_are_stored_checked_and_cleared() {
        let mut state = initialized(4);
        let weights: project::ExperimentWeights =
            [("a".to_string(), 2.0), ("b".to_string(), 1.0)].into();
        let set =
            |weights: Option<project::ExperimentWeights>| PlacementCommand::SetExperimentWeights {
                project: "shop".into(),
                experiment: "checkout".into(),
                weights,
            };
        assert_eq!(
            rejection(state.apply(set(Some(weights.clone())))),
            PlacementRejection::UnknownProject {
                name: "shop".into()
            }
        );
        state.apply(PlacementCommand::PutProject {
            config: project("shop", 1, "k1"),
        });
        assert_eq!(
            state.apply(set(Some(weights.clone()))),
            PlacementResponse::ExperimentWeightsSet {
                project: "shop".into(),
                experiment: "checkout".into(),
                stored: true
            }
        );
        assert_eq!(state.experiment_weights("shop", "checkout"), Some(&weights));
        let zero: project::ExperimentWeights = [("a".to_string(), 0.0)].into();
        assert!(matches!(
            rejection(state.apply(set(Some(zero)))),
            PlacementRejection::InvalidExperimentWeights { detail } if detail.contains("`a`")
        ));
        assert!(matches!(
            rejection(state.apply(set(Some(Default::default())))),
            PlacementRejection::InvalidExperimentWeights { .. }
        ));
        // A refused change keeps what was stored.
        assert_eq!(state.experiment_weights("shop", "checkout"), Some(&weights));
        state.apply(set(None));
        assert_eq!(state.experiment_weights("shop", "checkout"), None);
        assert!(state.project_experiment_weights("shop").is_none());
    }

    #[test]
    fn a_project_stores_weights_for_a_bounded_number_of_experiments() {
        let mut state = initialized(4);
        state.apply(PlacementCommand::PutProject {
            config: project("shop", 1, "k1"),
        });
        let set = |experiment: String| PlacementCommand::SetExperimentWeights {
            project: "shop".into(),
            experiment,
            weights: Some([("a".to_string(), 1.0)].into()),
        };
        for index in 0..limits::WEIGHTED_EXPERIMENTS_PER_PROJECT_MAX {
            assert!(matches!(
                state.apply(set(format!("e{index}"))),
                PlacementResponse::ExperimentWeightsSet { .. }
            ));
        }
        assert!(matches!(
            rejection(state.apply(set("one-more".into()))),
            PlacementRejection::InvalidExperimentWeights { detail } if detail.contains("1000")
        ));
        // Changing a stored experiment's weights is no new experiment.
        assert!(matches!(
            state.apply(set("e0".into())),
            PlacementResponse::ExperimentWeightsSet { .. }
        ));
    }

    #[test]
    fn initialize_gives_every_shard_to_the_first_node_at_epoch_one() {
        let state = initialized(8);
        assert_eq!(state.shard_count(), 8);
        assert!(state.shards().iter().all(|assignment| *assignment
            == ShardAssignment {
                owner: 1,
                epoch: EPOCH_INITIAL,
                moving_to: None
            }));
    }

    #[test]
    fn initialize_is_rejected_twice_out_of_range_or_for_a_stranger() {
        let mut state = initialized(4);
        let before = state.clone();
        assert_eq!(
            rejection(state.apply(PlacementCommand::Initialize {
                shards: 8,
                owner: 2
            })),
            PlacementRejection::AlreadyInitialized { shards: 4 }
        );
        assert_eq!(state, before);

        let mut fresh = PlacementState::default();
        fresh.set_members(three_members());
        assert_eq!(
            rejection(fresh.apply(PlacementCommand::Initialize {
                shards: 0,
                owner: 1
            })),
            PlacementRejection::ShardCountOutOfRange {
                shards: 0,
                max: limits::SHARDS_MAX
            }
        );
        assert!(matches!(
            rejection(fresh.apply(PlacementCommand::Initialize {
                shards: limits::SHARDS_MAX + 1,
                owner: 1
            })),
            PlacementRejection::ShardCountOutOfRange { .. }
        ));
        assert_eq!(
            rejection(fresh.apply(PlacementCommand::Initialize {
                shards: 4,
                owner: 9
            })),
            PlacementRejection::NotAMember { node: 9 }
        );
        assert!(!fresh.is_initialized());
    }

    #[test]
    fn a_move_flips_the_owner_and_bumps_the_epoch_once() {
        let mut state = initialized(4);
        assert_eq!(
            state.apply(PlacementCommand::BeginMove {
                shard: 2,
                from: 1,
                to: 3,
                expected_epoch: 1
            }),
            PlacementResponse::MoveBegun {
                shard: 2,
                to: 3,
                epoch: 1
            }
        );
        assert_eq!(state.shard(2).unwrap().moving_to, Some(3));
        assert_eq!(
            state.apply(PlacementCommand::CommitMove {
                shard: 2,
                to: 3,
                expected_epoch: 1
            }),
            PlacementResponse::MoveCommitted {
                shard: 2,
                owner: 3,
                epoch: 2
            }
        );
        assert_eq!(
            *state.shard(2).unwrap(),
            ShardAssignment {
                owner: 3,
                epoch: 2,
                moving_to: None
            }
        );
        // Replaying the commit (a retry with the old epoch) is fenced.
        assert_eq!(
            rejection(state.apply(PlacementCommand::CommitMove {
                shard: 2,
                to: 3,
                expected_epoch: 1
            })),
            PlacementRejection::EpochMismatch {
                shard: 2,
                expected: 1,
                actual: 2
            }
        );
        // The other shards did not move.
        assert_eq!(state.shard(1).unwrap().owner, 1);
    }

    #[test]
    fn move_preconditions_are_checked() {
        let mut state = initialized(4);
        let before = state.clone();
        let cases = [
            (
                PlacementCommand::BeginMove {
                    shard: 4,
                    from: 1,
                    to: 2,
                    expected_epoch: 1,
                },
                PlacementRejection::ShardOutOfRange {
                    shard: 4,
                    shards: 4,
                },
            ),
            (
                PlacementCommand::BeginMove {
                    shard: 0,
                    from: 1,
                    to: 2,
                    expected_epoch: 7,
                },
                PlacementRejection::EpochMismatch {
                    shard: 0,
                    expected: 7,
                    actual: 1,
                },
            ),
            (
                PlacementCommand::BeginMove {
                    shard: 0,
                    from: 2,
                    to: 3,
                    expected_epoch: 1,
                },
                PlacementRejection::NotOwner {
                    shard: 0,
                    node: 2,
                    owner: 1,
                },
            ),
            (
                PlacementCommand::BeginMove {
                    shard: 0,
                    from: 1,
                    to: 1,
                    expected_epoch: 1,
                },
                PlacementRejection::MoveToOwner { shard: 0, node: 1 },
            ),
            (
                PlacementCommand::BeginMove {
                    shard: 0,
                    from: 1,
                    to: 9,
                    expected_epoch: 1,
                },
                PlacementRejection::NotAMember { node: 9 },
            ),
            (
                PlacementCommand::CommitMove {
                    shard: 0,
                    to: 2,
                    expected_epoch: 1,
                },
                PlacementRejection::NoMoveInProgress { shard: 0 },
            ),
            (
                PlacementCommand::AbortMove {
                    shard: 0,
                    expected_epoch: 1,
                },
                PlacementRejection::NoMoveInProgress { shard: 0 },
            ),
        ];
        for (command, expected) in cases {
            assert_eq!(
                rejection(state.apply(command.clone())),
                expected,
                "{command:?}"
            );
            assert_eq!(state, before, "a rejected {command:?} changed the state");
        }

        let mut fresh = PlacementState::default();
        assert_eq!(
            rejection(fresh.apply(PlacementCommand::AbortMove {
                shard: 0,
                expected_epoch: 1
            })),
            PlacementRejection::NotInitialized
        );
    }

    #[test]
    fn a_move_in_progress_blocks_others_and_can_be_aborted() {
        let mut state = initialized(2);
        state.apply(PlacementCommand::BeginMove {
            shard: 0,
            from: 1,
            to: 2,
            expected_epoch: 1,
        });
        assert_eq!(
            rejection(state.apply(PlacementCommand::BeginMove {
                shard: 0,
                from: 1,
                to: 3,
                expected_epoch: 1
            })),
            PlacementRejection::MoveInProgress {
                shard: 0,
                moving_to: 2
            }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::CommitMove {
                shard: 0,
                to: 3,
                expected_epoch: 1
            })),
            PlacementRejection::MoveTargetMismatch {
                shard: 0,
                to: 3,
                moving_to: 2
            }
        );
        // The target leaves the cluster: the commit is refused, the abort is not.
        let mut members = three_members();
        members.remove(&2);
        state.set_members(members);
        assert_eq!(
            rejection(state.apply(PlacementCommand::CommitMove {
                shard: 0,
                to: 2,
                expected_epoch: 1
            })),
            PlacementRejection::NotAMember { node: 2 }
        );
        assert_eq!(
            state.apply(PlacementCommand::AbortMove {
                shard: 0,
                expected_epoch: 1
            }),
            PlacementResponse::MoveAborted { shard: 0, epoch: 1 }
        );
        assert_eq!(
            *state.shard(0).unwrap(),
            ShardAssignment {
                owner: 1,
                epoch: 1,
                moving_to: None
            }
        );
    }

    #[test]
    fn project_versions_only_grow_and_fixed_fields_stay() {
        let mut state = PlacementState::default();
        assert_eq!(
            state.apply(PlacementCommand::PutProject {
                config: project("shop", 1, "k1")
            }),
            PlacementResponse::ProjectStored {
                name: "shop".into(),
                version: 1
            }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::PutProject {
                config: project("shop", 1, "k1")
            })),
            PlacementRejection::StaleProjectVersion {
                name: "shop".into(),
                stored: 1,
                proposed: 1
            }
        );
        // A rotated key is a change like any other, and the old key's
        // owner keeps it until the next one.
        let mut rotated = project("shop", 2, "k1");
        rotated.ingest_keys = rotated
            .ingest_keys
            .rotated(KeyHash::of(b"k1-rotated"), 0, 1_000);
        assert!(matches!(
            state.apply(PlacementCommand::PutProject { config: rotated }),
            PlacementResponse::ProjectStored { version: 2, .. }
        ));
        let mut coarser = project("shop", 3, "k1");
        coarser.settings.bucket_ms *= 2;
        assert!(matches!(
            rejection(state.apply(PlacementCommand::PutProject { config: coarser })),
            PlacementRejection::ImmutableProjectField { field, .. } if field == "bucket_ms"
        ));
        let mut changed = project("shop", 5, "k1");
        changed.settings.session_gap_ms = 60_000;
        assert!(matches!(
            state.apply(PlacementCommand::PutProject { config: changed }),
            PlacementResponse::ProjectStored { version: 5, .. }
        ));
        assert_eq!(
            state.project("shop").unwrap().settings.session_gap_ms,
            60_000
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::PutProject {
                config: project("blog", 1, "k1")
            })),
            PlacementRejection::IngestKeyTaken {
                owner: "shop".into()
            }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::PutProject {
                config: project("Not Valid", 1, "k2")
            })),
            PlacementRejection::InvalidProjectName {
                name: "Not Valid".into()
            }
        );
        assert_eq!(state.projects().len(), 1);
    }

    #[test]
    fn check_finds_damage() {
        let mut state = initialized(2);
        assert_eq!(state.check(), Ok(()));
        state.shards[1].epoch = 0;
        assert!(state.check().is_err());
        let mut state = initialized(2);
        state.shards[0].moving_to = Some(1);
        assert!(state.check().is_err());
    }

    /// One step of a random history: a command, or a membership change.
    #[test]
    fn draining_and_retiring_follow_their_preconditions() {
        let mut state = initialized(4);
        // A draining member receives no shard.
        assert_eq!(
            state.apply(PlacementCommand::SetDraining {
                node: 2,
                draining: true
            }),
            PlacementResponse::DrainingSet {
                node: 2,
                draining: true
            }
        );
        assert_eq!(state.shard_holders(), BTreeSet::from([1, 3]));
        let refused = state.apply(PlacementCommand::BeginMove {
            shard: 0,
            from: 1,
            to: 2,
            expected_epoch: 1,
        });
        assert_eq!(
            rejection(refused),
            PlacementRejection::TargetDraining { node: 2 }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::SetDraining {
                node: 9,
                draining: true
            })),
            PlacementRejection::NotAMember { node: 9 }
        );
        // An owner cannot retire; a node without shards can, once.
        assert_eq!(
            rejection(state.apply(PlacementCommand::RetireStores { node: 1, into: 2 })),
            PlacementRejection::StillOwnsShards { node: 1, shards: 4 }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::RetireStores { node: 2, into: 2 })),
            PlacementRejection::RetireIntoItself { node: 2 }
        );
        assert_eq!(
            state.apply(PlacementCommand::RetireStores { node: 2, into: 3 }),
            PlacementResponse::StoresRetired { node: 2, into: 3 }
        );
        assert_eq!(
            rejection(state.apply(PlacementCommand::RetireStores { node: 2, into: 1 })),
            PlacementRejection::AlreadyRetired { node: 2, into: 3 }
        );
        // Node 3 leaves later into node 1: node 2's stores follow.
        state.apply(PlacementCommand::RetireStores { node: 3, into: 1 });
        assert_eq!(state.retired(), &BTreeMap::from([(2, 1), (3, 1)]));
        // Stores expected by a query: members' own and retired ones.
        let mut members = three_members();
        members.remove(&2);
        members.remove(&3);
        state.set_members(members);
        assert_eq!(state.expected_stores(), BTreeSet::from([1, 2, 3]));
        assert!(
            state.draining().is_empty(),
            "departed members stop draining"
        );
        assert_eq!(state.check(), Ok(()));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Command(PlacementCommand),
        Members(Vec<NodeId>),
    }

    fn step() -> impl Strategy<Value = Step> {
        let node = 0..5u64;
        let shard = 0..6u32;
        let epoch = 0..6u64;
        prop_oneof![
            (0..6u32, node.clone())
                .prop_map(|(shards, owner)| PlacementCommand::Initialize { shards, owner }),
            (shard.clone(), node.clone(), node.clone(), epoch.clone()).prop_map(
                |(shard, from, to, expected_epoch)| PlacementCommand::BeginMove {
                    shard,
                    from,
                    to,
                    expected_epoch
                }
            ),
            (shard.clone(), node.clone(), epoch.clone()).prop_map(|(shard, to, expected_epoch)| {
                PlacementCommand::CommitMove {
                    shard,
                    to,
                    expected_epoch,
                }
            }),
            (shard, epoch).prop_map(|(shard, expected_epoch)| PlacementCommand::AbortMove {
                shard,
                expected_epoch
            }),
            (1..4u64).prop_map(|version| PlacementCommand::PutProject {
                config: project("p", version, "key")
            }),
            (node.clone(), any::<bool>())
                .prop_map(|(node, draining)| PlacementCommand::SetDraining { node, draining }),
            (node.clone(), node)
                .prop_map(|(node, into)| PlacementCommand::RetireStores { node, into }),
        ]
        .prop_map(Step::Command)
        .boxed()
        .prop_union(
            proptest::collection::vec(0..5u64, 1..4)
                .prop_map(Step::Members)
                .boxed(),
        )
    }

    proptest! {
        /// Whatever the commands, epochs never decrease, the shard count is
        /// fixed once set, each (shard, epoch) names exactly one owner over
        /// the whole history, and a rejected command changes nothing.
        #[test]
        fn random_histories_keep_the_invariants(steps in proptest::collection::vec(step(), 1..200)) {
            let mut state = PlacementState::default();
            state.set_members(three_members());
            let mut owner_at_epoch: HashMap<(u32, u64), NodeId> = HashMap::new();
            let mut epochs_before: Vec<u64> = Vec::new();
            for step in steps {
                match step {
                    Step::Members(nodes) => {
                        let members = nodes
                            .into_iter()
                            .map(|node| (node, member("127.0.0.1:1", Role::Voter)))
                            .collect();
                        state.set_members(members);
                    }
                    Step::Command(command) => {
                        let before = state.clone();
                        let response = state.apply(command);
                        if matches!(response, PlacementResponse::Rejected { .. }) {
                            prop_assert_eq!(&state, &before);
                        }
                    }
                }
                let epochs: Vec<u64> = state.shards().iter().map(|shard| shard.epoch).collect();
                if !epochs_before.is_empty() {
                    prop_assert_eq!(epochs.len(), epochs_before.len());
                    for (after, before) in epochs.iter().zip(&epochs_before) {
                        prop_assert!(after >= before);
                    }
                }
                epochs_before = epochs;
                for (shard, assignment) in state.shards().iter().enumerate() {
                    let owner = *owner_at_epoch
                        .entry((shard as u32, assignment.epoch))
                        .or_insert(assignment.owner);
                    prop_assert_eq!(owner, assignment.owner);
                    prop_assert_ne!(assignment.moving_to, Some(assignment.owner));
                    // A retired node never owns or receives a shard.
                    prop_assert!(!state.retired().contains_key(&assignment.owner));
                    prop_assert!(assignment
                        .moving_to
                        .is_none_or(|to| !state.retired().contains_key(&to)));
                }
                prop_assert!(state.draining().iter().all(|node| state.is_member(*node)));
                prop_assert_eq!(state.check(), Ok(()));
            }
        }
    }
}
