//! Placement: the cluster's control plane (`docs/cluster.md`).
//!
//! A small Raft group (openraft 0.9, storage v2) replicates what every node
//! must agree on, and nothing else:
//!
//! - the **members**: node id → HTTP address and role (voter or learner).
//!   openraft's membership is the source of truth; `PlacementState` mirrors
//!   it each time a membership entry is applied;
//! - the **shard map**: a fixed number of shards (chosen once, by
//!   `PlacementCommand::Initialize`), each with one owner, an epoch that only
//!   grows, and the node it is moving to, if any;
//! - **project configurations** (`ProjectConfig` by name), whose versions
//!   only grow.
//!
//! Events, sessions and segment state never go through Raft: that is the
//! data plane, owned per shard by its owner. Session actors never await Raft.
//!
//! Layout:
//! - `state.rs`: `PlacementState`, `PlacementCommand`, `PlacementResponse`,
//!   `PlacementRejection` — the state machine as pure functions, no I/O.
//! - `store.rs`: `PlacementLogStore` and `PlacementStateMachine`, openraft's
//!   `RaftLogStorage` and `RaftStateMachine` on a sled database under
//!   `<data-dir>/placement/`. The only file here that imports sled.
//! - `network.rs`: `PlacementNetwork`, openraft's `RaftNetworkFactory` over
//!   the node's `PeerClient` (JSON bodies to `/v1/internal/raft/*`).
//! - `membership.rs`: `PlacementHandle`, what the rest of the node may do with
//!   the running Raft node: serve peers' Raft requests, bootstrap, admit
//!   joining nodes, report the cluster's status. No openraft type crosses it.
//! - this file: the Raft type configuration (`PlacementTypes`), the named
//!   timing settings (`RaftConfig`) and the `Placement` facade that opens the
//!   store and starts a Raft node.
//!
//! Words: a *snapshot* here is openraft's (the serialized `PlacementState` at
//! a log position, sent to lagging followers); the engine's saved state is a
//! *checkpoint* (`crate::checkpoint`). Not the same thing.
//!
//! Architecture invariant: only this module imports openraft. The rest of
//! the node sees `PlacementState` (through `PlacementView`) and
//! `PlacementHandle`, a narrow API for proposing commands.

mod membership;
mod network;
mod state;
mod store;
#[cfg(test)]
mod tests;

pub use membership::{ChangeError, ClusterReport, PlacementHandle, RaftRpcError, RaftServerState};
pub use network::PlacementNetwork;
pub use state::{
    DamagedState, Member, NodeId, PlacementCommand, PlacementRejection, PlacementResponse,
    PlacementState, Role, ShardAssignment, EPOCH_INITIAL,
};
pub use store::{
    PlacementLogStore, PlacementSnapshotBuilder, PlacementStateMachine, PlacementStoreError,
};

use std::fmt;
// `declare_raft_types!` names `Cursor` unqualified, so it must be in scope.
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// A member's address as openraft stores it in the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlacementNode {
    /// The node's HTTP address, `host:port` (an IP address inside images
    /// without a base; `cluster-config/README.md`).
    pub address: String,
}

impl fmt::Display for PlacementNode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.address)
    }
}

openraft::declare_raft_types!(
    /// The placement Raft group's types.
    pub PlacementTypes:
        D = PlacementCommand,
        R = PlacementResponse,
        NodeId = NodeId,
        Node = PlacementNode,
        Entry = openraft::Entry<PlacementTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running placement Raft node.
pub type PlacementRaft = openraft::Raft<PlacementTypes>;

/// Timing and log-compaction settings of the placement Raft group.
///
/// The placement group carries a few commands a minute (membership changes,
/// shard moves, project changes), never events, so its timings favour
/// stability over fast failover: a busy 2-core node must not lose its
/// leadership to a scheduling hiccup. Ingest does not wait for Raft, so a
/// leader election pauses only control-plane changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// How often the leader sends heartbeats to followers. Well below
    /// `election_timeout_min_ms`, so a few lost heartbeats do not start an
    /// election.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears nothing from a leader for a random time between
    /// these two bounds starts an election. The spread keeps two followers
    /// from standing at the same time.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Snapshot policy: build a snapshot once this many entries were applied
    /// since the last one. The state is small (a few KiB per thousand
    /// shards), so snapshots are cheap.
    pub snapshot_entries_since_last: u64,
    /// Entries kept in the log behind a snapshot, so that a follower that
    /// was briefly away catches up from the log instead of a snapshot.
    pub entries_kept_behind_snapshot: u64,
    /// Purge the log in steps of at least this many entries.
    pub purge_batch_entries: u64,
    /// How long a follower waits for the next piece of a snapshot.
    pub install_snapshot_timeout_ms: u64,
    /// Transport (`network.rs`): how long opening a connection to a peer may
    /// take before the peer counts as unreachable.
    pub rpc_connect_timeout_ms: u64,
    /// Transport: the longest any one append or vote request may take, on
    /// top of openraft's own per-request deadline (the shorter wins).
    pub rpc_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 200,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_entries_since_last: 1_000,
            entries_kept_behind_snapshot: 1_000,
            purge_batch_entries: 256,
            install_snapshot_timeout_ms: 5_000,
            rpc_connect_timeout_ms: 500,
            rpc_timeout_ms: 2_000,
        }
    }
}

impl RaftConfig {
    /// The default settings with a shorter election timeout (`min`, and
    /// twice that as the maximum) and a heartbeat a fifth of it: the hidden
    /// `--raft-election-timeout-ms` flag, so multi-node tests fail over fast.
    pub fn with_election_timeout_ms(election_timeout_min_ms: u64) -> RaftConfig {
        RaftConfig {
            heartbeat_interval_ms: (election_timeout_min_ms / 5).max(1),
            election_timeout_min_ms,
            election_timeout_max_ms: election_timeout_min_ms.saturating_mul(2),
            ..RaftConfig::default()
        }
    }

    /// The validated openraft configuration.
    pub fn to_openraft(&self) -> Result<Arc<openraft::Config>, PlacementError> {
        let config = openraft::Config {
            cluster_name: "sessiondb-placement".to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.snapshot_entries_since_last,
            ),
            max_in_snapshot_log_to_keep: self.entries_kept_behind_snapshot,
            purge_batch_size: self.purge_batch_entries,
            ..openraft::Config::default()
        };
        if self.heartbeat_interval_ms >= self.election_timeout_min_ms {
            return Err(PlacementError::Config(format!(
                "heartbeat_interval_ms ({}) must be below election_timeout_min_ms ({})",
                self.heartbeat_interval_ms, self.election_timeout_min_ms
            )));
        }
        let config = config
            .validate()
            .map_err(|error| PlacementError::Config(error.to_string()))?;
        Ok(Arc::new(config))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Store(#[from] PlacementStoreError),
    #[error("invalid placement Raft configuration: {0}")]
    Config(String),
    #[error("the placement Raft node could not start: {0}")]
    Start(String),
}

/// A read-only view of the latest applied `PlacementState`, updated after
/// every applied batch of entries. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PlacementView {
    receiver: watch::Receiver<Arc<PlacementState>>,
}

impl PlacementView {
    pub fn current(&self) -> Arc<PlacementState> {
        Arc::clone(&self.receiver.borrow())
    }

    /// Waits for the next applied change; false once the state machine is
    /// gone (the Raft node shut down).
    pub async fn changed(&mut self) -> bool {
        self.receiver.changed().await.is_ok()
    }
}

/// The placement store of one node, opened and ready to hand to
/// `openraft::Raft::new` (or to `Placement::start`).
#[derive(Debug)]
pub struct Placement {
    pub node_id: NodeId,
    pub log_store: PlacementLogStore,
    pub state_machine: PlacementStateMachine,
    pub view: PlacementView,
    pub raft_config: RaftConfig,
}

impl Placement {
    /// Opens (or creates) the placement database under
    /// `<data_dir>/placement/`. sled locks it, so a second process on the
    /// same data directory fails here.
    pub fn open(data_dir: &Path, node_id: NodeId) -> Result<Placement, PlacementError> {
        let (log_store, state_machine, receiver) = store::open(&data_dir.join("placement"))?;
        Ok(Placement {
            node_id,
            log_store,
            state_machine,
            view: PlacementView { receiver },
            raft_config: RaftConfig::default(),
        })
    }

    /// Starts the Raft node over the given transport.
    pub async fn start<N>(
        self,
        network: N,
    ) -> Result<(PlacementRaft, PlacementView), PlacementError>
    where
        N: openraft::RaftNetworkFactory<PlacementTypes>,
    {
        let config = self.raft_config.to_openraft()?;
        let raft = openraft::Raft::new(
            self.node_id,
            config,
            network,
            self.log_store,
            self.state_machine,
        )
        .await
        .map_err(|fatal| PlacementError::Start(fatal.to_string()))?;
        Ok((raft, self.view))
    }
}
