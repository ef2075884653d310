//! The cluster: everything a node does with the other members
//! (`docs/cluster.md`). It sits between the HTTP edge and the engine:
//! `http` calls it, it drives the `engine`, and it never imports `http`.
//!
//! - `placement/`: the control plane — the openraft group that replicates
//!   members, the shard map and project configurations; with
//!   `crate::replication`, the only module that imports openraft.
//! - `peer`: `PeerClient`, the one client for node-to-node calls, and the
//!   bodies of the internal routes.
//! - `coordinator`: `QueryCoordinator`, which answers every results and
//!   time-series query from every member's share.
//! - `leader`: `LeaderPath`, the one way to reach the placement leader for
//!   a project change or a cluster operation.
//! - `moves`: `ShardMover`, the leader's side of shard moves, rebalances,
//!   drains and removals; `planner`: the pure rebalance planner.
//! - `replicas`: the shard groups' Raft traffic — the table of group
//!   replicas on this node (`GroupReplicas`, empty until groups run) and
//!   `PeerGroupTransport` (`docs/cluster.md`, "Replicated shards").
//! - `startup`: bootstrap, join or re-announce at start, and
//!   `follow_placement`, which keeps the engine's shard roles and projects
//!   equal to the placement state.
//!
//! `Cluster` bundles what the HTTP layer needs of it.

pub mod coordinator;
pub mod group_ingest;
pub mod group_keeper;
pub mod identity;
pub mod leader;
pub mod moves;
pub mod peer;
pub mod placement;
pub mod planner;
pub mod replica_planner;
pub mod replicas;
pub mod startup;

use crate::engine::handoff::HandoffError;
use crate::engine::Engine;
use coordinator::QueryCoordinator;
use leader::LeaderPath;
use moves::ShardMover;
use peer::{NodeId, PeerClient};
use placement::PlacementHandle;
use std::time::Duration;

/// This node's cluster services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub node_id: NodeId,
    engine: Engine,
    /// The node's placement Raft node (`docs/cluster.md`).
    pub placement: PlacementHandle,
    pub peers: PeerClient,
    pub coordinator: QueryCoordinator,
    pub leader: LeaderPath,
    /// Runs shard moves when this node leads.
    pub mover: ShardMover,
    /// The shard group replicas on this node, served to peers.
    pub replicas: replicas::GroupReplicas,
    /// This node's incarnation (`identity`): a Raft request that names
    /// another one was meant for the data directory placement knows under
    /// this id, and is refused. `None`: requests are not checked.
    pub incarnation: Option<String>,
}

impl Cluster {
    pub fn new(
        node_id: NodeId,
        engine: Engine,
        placement: PlacementHandle,
        peers: PeerClient,
    ) -> Cluster {
        let coordinator = QueryCoordinator::new(
            node_id,
            engine.clone(),
            placement.view().clone(),
            peers.clone(),
        );
        Cluster {
            node_id,
            engine,
            leader: LeaderPath::new(placement.clone(), peers.clone()),
            mover: ShardMover::new(placement.clone(), peers.clone()),
            coordinator,
            placement,
            peers,
            replicas: replicas::GroupReplicas::default(),
            incarnation: None,
        }
    }
}

/// How long an export waits for this node to apply the move's `BeginMove`.
pub const MOVE_VISIBLE_WAIT_MS: u64 = 3_000;

/// The first wait after a failed join attempt or identity check of a
/// joining node; it doubles up to `JOIN_RETRY_WAIT_MAX`.
const JOIN_RETRY_WAIT_INITIAL: Duration = Duration::from_millis(100);
const JOIN_RETRY_WAIT_MAX: Duration = Duration::from_secs(2);

/// The waits between a joining node's failed calls (identity check, join):
/// doubling from `JOIN_RETRY_WAIT_INITIAL` to `JOIN_RETRY_WAIT_MAX`, with
/// jitter so that nodes started together do not knock together. Drawn by
/// hand rather than by backon's `Retryable`: a leader redirect is followed
/// at once, without a wait.
fn join_retry_waits() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(JOIN_RETRY_WAIT_INITIAL)
        .with_max_delay(JOIN_RETRY_WAIT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why this node did not export a shard.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Engine(#[from] HandoffError),
    /// The leader asked before this node applied the move's `BeginMove`.
    #[error(
        "this node's placement shows no move of shard {shard} after {MOVE_VISIBLE_WAIT_MS} ms"
    )]
    MoveNotBegun { shard: u32 },
}

impl Cluster {
    /// Placement's and the shard mover's metrics (`docs/operations.md`,
    /// "Metrics reference").
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        use crate::metrics::gauge;
        let raft = self.placement.report();
        let level = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let gauges = [
            (
                "sessiondb_raft_term",
                "Current term of the placement Raft group as this node sees it.",
                raft.term,
            ),
            (
                "sessiondb_raft_leader",
                "Node id of the placement leader this node knows (0 if none).",
                raft.leader.unwrap_or(0),
            ),
            (
                "sessiondb_raft_applied_index",
                "Last placement log index applied on this node (0 if none).",
                raft.applied_index.unwrap_or(0),
            ),
            (
                "sessiondb_raft_last_log_index",
                "Last placement log index stored on this node (0 if none).",
                raft.last_log_index.unwrap_or(0),
            ),
        ];
        for (name, help, value) in gauges {
            gauge(registry, name, help, level(value));
        }
        self.mover.register_metrics(registry);
    }

    /// Step 2 of a move, on the owner: fences `shard` and answers its
    /// state — only once this node has applied the `BeginMove`. Roles
    /// follow the map, and a map that does not show the move yet would
    /// unfence the shard on the next applied change, letting a write in
    /// after the copy.
    pub async fn export_shard(&self, shard: u32) -> Result<Vec<u8>, ExportError> {
        let shards = self.placement.view().current().shard_count();
        if shard >= shards {
            return Err(HandoffError::UnknownShard { shard, shards }.into());
        }
        if !self.move_visible(shard).await {
            return Err(ExportError::MoveNotBegun { shard });
        }
        Ok(self.engine.export_shard(shard).await?)
    }

    /// Step 3, on the target: installs the shard's state. The role follows
    /// the map, not the import: until `CommitMove` is applied here the old
    /// owner still owns the shard, and an import the leader gave up on (and
    /// aborted) must never make this node an owner.
    pub async fn import_shard(
        &self,
        shard: u32,
        state: &[u8],
        epoch: u64,
    ) -> Result<(), HandoffError> {
        self.engine.import_shard(shard, state, epoch).await?;
        startup::apply_roles(&self.engine, &self.placement.view().current(), self.node_id);
        Ok(())
    }

    /// Waits (at most `MOVE_VISIBLE_WAIT_MS`) until this node's placement
    /// view shows `shard` moving.
    async fn move_visible(&self, shard: u32) -> bool {
        let mut view = self.placement.view().clone();
        let visible = |view: &placement::PlacementView| {
            view.current()
                .shard(shard)
                .is_some_and(|assignment| assignment.moving_to.is_some())
        };
        let wait = async {
            while !visible(&view) {
                if !view.changed().await {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(Duration::from_millis(MOVE_VISIBLE_WAIT_MS), wait)
            .await
            .unwrap_or(false)
    }
}
