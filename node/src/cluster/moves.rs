//! Shard moves driven by the placement leader (`docs/cluster.md`, "The
//! move protocol", "Rebalance" and "Removing a node").
//!
//! The leader sequences one move as Raft-committed steps around three
//! node-to-node calls (`PeerClient`; served by `http::shards`):
//!
//! 1. `BeginMove { shard, from, to, expected_epoch: e }` through Raft;
//! 2. `POST /v1/internal/shards/{shard}/export` on the owner: it fences the
//!    shard (events get `shard_moving`) and answers the shard's state;
//! 3. `POST /v1/internal/shards/{shard}/import?epoch=e+1` on the target;
//! 4. `CommitMove { shard, to, expected_epoch: e }` through Raft;
//! 5. `POST /v1/internal/shards/{shard}/drop?owner=to&epoch=e+1` on the old
//!    owner.
//!
//! A failure before step 4 proposes `AbortMove` (the owner unfences when it
//! applies it) and reports the step that failed. One operation (a move, a
//! rebalance, a drain, a removal) runs at a time (`ShardMover::operations`,
//! a tokio mutex); within a rebalance or a drain up to
//! `MOVES_CONCURRENT_MAX` moves of different shards run at once.
//!
//! Which shards go where in a rebalance or a drain is `cluster::planner`'s
//! pure decision; this module carries the plan out.
//!
//! Removing a node (`ShardMover::remove`, `docs/cluster.md`, "Removing a
//! node") takes a drained node out: it hands its aggregate stores over
//! (`POST /v1/internal/stores/handover`), a remaining member absorbs them
//! (`POST /v1/internal/stores/absorb`), `RetireStores` records who keeps
//! them, and the node leaves the Raft membership.

use super::peer::{Peer, PeerClient, PeerError};
use super::placement::{
    ChangeError, NodeId, PlacementCommand, PlacementHandle, PlacementRejection, PlacementResponse,
    PlacementState,
};
use super::planner::plan_rebalance_reachable;
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most moves one `POST /v1/cluster/rebalance` (or drain) carries out;
/// the rest of the plan is answered as skipped, for the next call.
pub const REBALANCE_MOVES_MAX: usize = 64;
/// The most moves of one rebalance or drain in flight at once. Each fences
/// one shard and sends its state in one body, so this bounds both the
/// shards refusing writes at any moment and the memory in transit.
pub const MOVES_CONCURRENT_MAX: usize = 4;
/// How often the leader looks for moves a previous leader left
/// unfinished (`ShardMover::abort_stale_moves`). A stale move keeps its
/// shard refusing writes (retryably) until then.
pub const STALE_MOVE_CHECK_MS: u64 = 5_000;

/// Why a move did not happen (or did not finish cleanly).
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Only the leader moves shards.
    #[error("only the leader moves shards; the leader is {}", leader_text(*leader_id, leader_address.as_deref()))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    },
    #[error("shard {shard} does not exist: the cluster has {shards} shards")]
    UnknownShard { shard: u32, shards: u32 },
    /// The placement state machine refused the move (target not a member,
    /// target already the owner, a move in progress, a stale epoch).
    #[error("the move was refused: {0}")]
    Refused(PlacementRejection),
    /// Raft could not commit a step now (no quorum, leadership lost).
    #[error("placement is unavailable at step {step}: {detail}")]
    Unavailable { step: &'static str, detail: String },
    /// A step failed before the commit; the move was aborted (or, if
    /// `aborted` is false, the abort itself failed and the shard stays
    /// fenced until a leader aborts it).
    #[error("the move failed at step {step}: {detail} ({})", if *aborted { "aborted; the old owner keeps the shard" } else { "the abort failed too; the shard stays fenced" })]
    StepFailed {
        step: &'static str,
        detail: String,
        aborted: bool,
    },
    /// The move is committed (the new owner owns the shard) but the old
    /// owner did not drop its copy; it refuses the shard's events anyway.
    #[error("the move is committed but the old owner did not drop its copy: {detail}")]
    DropFailed { detail: String },
    #[error("node {node} is not a member of the cluster")]
    NotAMember { node: NodeId },
    #[error("node {node} is the only member that may hold shards; join another node first")]
    NoOtherMember { node: NodeId },
    #[error(
        "node {node} still owns {shards} shards; drain it first (sessiondb-ctl nodes drain {node})"
    )]
    StillOwnsShards { node: NodeId, shards: u32 },
    /// A step of a removal failed; the node is still a member, and the
    /// removal can be run again.
    #[error("removing the node failed at step {step}: {detail}; run the removal again")]
    RemoveFailed { step: &'static str, detail: String },
}

fn leader_text(leader_id: Option<NodeId>, address: Option<&str>) -> String {
    match (leader_id, address) {
        (Some(id), Some(address)) => format!("node {id} at {address}"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown (election in progress)".to_string(),
    }
}

impl MoveError {
    pub fn from_change(step: &'static str, error: ChangeError) -> MoveError {
        match error {
            ChangeError::NotLeader {
                leader_id,
                leader_address,
            } => MoveError::NotLeader {
                leader_id,
                leader_address,
            },
            ChangeError::Unavailable { detail } => MoveError::Unavailable { step, detail },
        }
    }
}

/// Runs shard moves on the leader, one at a time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardMover {
    placement: PlacementHandle,
    peers: PeerClient,
    /// Held for the whole of an operation (a move, a rebalance, a drain, a
    /// removal): one at a time.
    operations: Arc<tokio::sync::Mutex<()>>,
    /// Moves this node ran as leader, for `/metrics`.
    pub counters: Arc<MoveCounters>,
}

/// The report of an operation run here, as the operator receives it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum OperationReport {
    Move(wire::ShardMoveReport),
    Rebalance(wire::RebalanceReport),
    Drain(wire::DrainReport),
    Undrain(wire::UndrainReport),
    Remove(wire::NodeRemoveReport),
}

/// What a plan evens out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Balance {
    Counts,
    CountsThenLoad,
}

/// Shard moves this node ran (as leader) since it started.
#[derive(Debug, Default)]
pub struct MoveCounters {
    pub committed: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    /// Duration of every move, committed or failed.
    pub seconds: crate::metrics::Histogram,
}

impl ShardMover {
    pub fn new(placement: PlacementHandle, peers: PeerClient) -> ShardMover {
        ShardMover {
            placement,
            peers,
            operations: Arc::new(tokio::sync::Mutex::new(())),
            counters: Arc::new(MoveCounters::default()),
        }
    }

    /// `sessiondb_shard_moves_total{outcome}` and the move durations.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        use std::sync::atomic::Ordering;
        let counters = &self.counters;
        crate::metrics::labeled_counter(
            registry,
            "sessiondb_shard_moves_total",
            "Shard moves this node ran as placement leader, by outcome.",
            "outcome",
            [
                (
                    "committed".to_string(),
                    counters.committed.load(Ordering::Relaxed),
                ),
                (
                    "failed".to_string(),
                    counters.failed.load(Ordering::Relaxed),
                ),
            ],
        );
        crate::metrics::histogram(
            registry,
            "sessiondb_shard_move_duration_seconds",
            "Duration of each shard move this node ran as leader, failed ones included.",
            &counters.seconds,
        );
    }

    /// Runs an operator's operation on this node, which must lead.
    pub async fn run(
        &self,
        operation: wire::LeaderOperation,
    ) -> Result<OperationReport, MoveError> {
        match operation {
            wire::LeaderOperation::MoveShard { shard, to } => {
                self.move_shard(shard, to).await.map(OperationReport::Move)
            }
            wire::LeaderOperation::Rebalance => {
                self.rebalance().await.map(OperationReport::Rebalance)
            }
            wire::LeaderOperation::Drain { node_id } => {
                self.drain(node_id).await.map(OperationReport::Drain)
            }
            wire::LeaderOperation::Undrain { node_id } => {
                self.undrain(node_id).await.map(OperationReport::Undrain)
            }
            wire::LeaderOperation::Remove { node_id } => {
                self.remove(node_id).await.map(OperationReport::Remove)
            }
        }
    }

    fn not_leader(&self) -> Result<(), MoveError> {
        self.placement
            .require_leader()
            .map_err(|error| MoveError::from_change("leadership", error))
    }

    /// Moves `shard` to member `to` (leader only).
    pub async fn move_shard(
        &self,
        shard: u32,
        to: NodeId,
    ) -> Result<wire::ShardMoveReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        self.move_locked(shard, to).await
    }

    /// Plans a balanced shard map over the members that may hold shards
    /// and answer, and carries out up to `REBALANCE_MOVES_MAX` of its moves.
    pub async fn rebalance(&self) -> Result<wire::RebalanceReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        let state = self.placement.view().current();
        Ok(self.plan_and_run(&state, Balance::CountsThenLoad).await)
    }

    /// A plan over the reachable members that may hold shards (a member
    /// that does not answer neither gives nor receives), carried out.
    async fn plan_and_run(
        &self,
        state: &PlacementState,
        balance: Balance,
    ) -> wire::RebalanceReport {
        let (loads, unreachable) = self.gather_loads(state).await;
        let loads = match balance {
            Balance::CountsThenLoad => loads,
            // No loads: the planner balances counts only.
            Balance::Counts => Vec::new(),
        };
        let plan =
            plan_rebalance_reachable(&state.shard_holders(), state.shards(), &loads, &unreachable);
        let mut report = self.run_plan(plan).await;
        report.unreachable = unreachable.into_iter().collect();
        report
    }

    /// Every shard's load as its owner reports it (`PeerClient::shard_loads`,
    /// every member at once), and the members that did not answer: the
    /// plan leaves them out, since a move from or to them would fail.
    async fn gather_loads(&self, state: &PlacementState) -> (Vec<u64>, BTreeSet<NodeId>) {
        let members: Vec<(NodeId, String)> = state
            .members()
            .iter()
            .map(|(node, member)| (*node, member.address.clone()))
            .collect();
        let answers = self
            .peers
            .ask_every(&members, |peers, peer| async move {
                peers.shard_loads(&peer).await
            })
            .await;
        let mut loads = vec![0_u64; state.shards().len()];
        let mut unreachable = BTreeSet::new();
        for answer in answers {
            match answer.answer {
                Ok(reported) => {
                    for (shard, assignment) in state.shards().iter().enumerate() {
                        if assignment.owner == answer.node {
                            loads[shard] = reported.get(shard).copied().unwrap_or(0);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(node = answer.node, %error, "member unreachable; the plan leaves it out");
                    unreachable.insert(answer.node);
                }
            }
        }
        (loads, unreachable)
    }

    /// Marks `node` as draining and moves its shards to the other members
    /// (a rebalance without it), up to `REBALANCE_MOVES_MAX` moves per
    /// call; `remaining_shards` says whether to call again.
    pub async fn drain(&self, node: NodeId) -> Result<wire::DrainReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        let state = self.placement.view().current();
        if !state.is_member(node) {
            return Err(MoveError::NotAMember { node });
        }
        let mut holders = state.shard_holders();
        holders.remove(&node);
        if holders.is_empty() {
            return Err(MoveError::NoOtherMember { node });
        }
        if !state.is_draining(node) {
            self.commit(
                "drain",
                PlacementCommand::SetDraining {
                    node,
                    draining: true,
                },
            )
            .await?;
            tracing::info!(node, "node draining");
        }
        let state = self.placement.view().current();
        // Counts only: every shard of the drained node moves anyway.
        let moves = self.plan_and_run(&state, Balance::Counts).await;
        Ok(wire::DrainReport {
            node_id: node,
            moves,
            remaining_shards: self.placement.view().current().shards_owned(node),
        })
    }

    /// Clears `node`'s draining mark (a drain that failed or was a
    /// mistake): it may receive shards again, from the next rebalance.
    pub async fn undrain(&self, node: NodeId) -> Result<wire::UndrainReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        let state = self.placement.view().current();
        if !state.is_member(node) {
            return Err(MoveError::NotAMember { node });
        }
        let was_draining = state.is_draining(node);
        if was_draining {
            self.commit(
                "undrain",
                PlacementCommand::SetDraining {
                    node,
                    draining: false,
                },
            )
            .await?;
            tracing::info!(node, "node no longer draining");
        }
        Ok(wire::UndrainReport {
            node_id: node,
            was_draining,
        })
    }

    /// Takes a drained `node` out of the cluster: its aggregates go to a
    /// remaining member, then it leaves the Raft membership. Every step can
    /// be run again after a failure.
    pub async fn remove(&self, node: NodeId) -> Result<wire::NodeRemoveReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        let started = Instant::now();
        let state = self.placement.view().current();
        if !state.is_member(node) {
            return Err(MoveError::NotAMember { node });
        }
        let shards = state.shards_owned(node);
        if shards > 0 || state.shards().iter().any(|a| a.moving_to == Some(node)) {
            return Err(MoveError::StillOwnsShards { node, shards });
        }
        if !state.is_draining(node) {
            self.commit(
                "drain",
                PlacementCommand::SetDraining {
                    node,
                    draining: true,
                },
            )
            .await?;
        }
        // A retried removal keeps the keeper it already recorded.
        let retired = state.retired().get(&node).copied();
        let keeper = match retired {
            Some(keeper) => keeper,
            None => removal_keeper(node, &self.placement.view().current())
                .ok_or(MoveError::NoOtherMember { node })?,
        };
        let peer = |member: NodeId| {
            self.placement
                .view()
                .current()
                .members()
                .get(&member)
                .map(|known| Peer::member(member, known.address.clone()))
                .ok_or(MoveError::RemoveFailed {
                    step: "address",
                    detail: format!("node {member} has no address"),
                })
        };
        let failed = |step: &'static str| {
            move |error: PeerError| MoveError::RemoveFailed {
                step,
                detail: error.to_string(),
            }
        };
        let stores = self
            .peers
            .hand_over_stores(&peer(node)?)
            .await
            .map_err(failed("handover"))?;
        let bytes = stores.len() as u64;
        self.peers
            .absorb_stores(&peer(keeper)?, stores)
            .await
            .map_err(failed("absorb"))?;
        if retired.is_none() {
            self.commit(
                "retire",
                PlacementCommand::RetireStores { node, into: keeper },
            )
            .await?;
        }
        tracing::info!(node, keeper, bytes, "node's stores handed over");
        self.placement
            .remove_member(node)
            .await
            .map_err(|error| MoveError::from_change("membership", error))?;
        tracing::info!(node, "node removed");
        Ok(wire::NodeRemoveReport {
            node_id: node,
            stores_kept_by: keeper,
            bytes,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Aborts every move the map shows in progress when no operation runs
    /// here — a move a previous leader began and never finished (it died
    /// or lost leadership between `BeginMove` and `CommitMove`), which
    /// would otherwise keep its shard fenced. Safe: the epoch check makes a
    /// late commit of the old leader fail, and the target's copy, if it
    /// imported one, is never served while placement names the old owner.
    /// Answers the shards unfenced.
    pub async fn abort_stale_moves(&self) -> Vec<u32> {
        if self.placement.require_leader().is_err() {
            return Vec::new();
        }
        let Ok(_operation) = self.operations.try_lock() else {
            return Vec::new();
        };
        let state = self.placement.view().current();
        let mut unfenced = Vec::new();
        for (shard, assignment) in state.shards().iter().enumerate() {
            if assignment.moving_to.is_none() {
                continue;
            }
            let shard = u32::try_from(shard).expect("at most SHARDS_MAX shards");
            let command = PlacementCommand::AbortMove {
                shard,
                expected_epoch: assignment.epoch,
            };
            match self.commit("abort", command).await {
                Ok(_) => {
                    tracing::warn!(
                        shard,
                        epoch = assignment.epoch,
                        "aborted a move a previous leader left unfinished"
                    );
                    unfenced.push(shard);
                }
                Err(error) => tracing::warn!(shard, %error, "could not abort an unfinished move"),
            }
        }
        unfenced
    }

    /// Every `STALE_MOVE_CHECK_MS`, `abort_stale_moves` (it does nothing
    /// unless this node leads). Runs for the life of the node.
    pub fn spawn_stale_move_recovery(&self) {
        let mover = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(STALE_MOVE_CHECK_MS));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                mover.abort_stale_moves().await;
            }
        });
    }

    /// Carries out up to `REBALANCE_MOVES_MAX` moves of `plan`,
    /// `MOVES_CONCURRENT_MAX` at a time. A move that fails is reported and
    /// the others go on: one shard that cannot move must not keep the rest
    /// where they are. The caller holds `operations`.
    async fn run_plan(&self, plan: Vec<wire::PlannedMove>) -> wire::RebalanceReport {
        use futures::StreamExt;
        let attempts = plan
            .iter()
            .take(REBALANCE_MOVES_MAX)
            .map(|step| async move { (*step, self.move_locked(step.shard, step.to).await) });
        let outcomes: Vec<_> = futures::stream::iter(attempts)
            .buffered(MOVES_CONCURRENT_MAX)
            .collect()
            .await;
        let mut report = wire::RebalanceReport {
            plan: plan.clone(),
            moved: Vec::new(),
            failed: None,
            failures: Vec::new(),
            skipped: plan.iter().skip(REBALANCE_MOVES_MAX).copied().collect(),
            unreachable: Vec::new(),
        };
        for (step, outcome) in outcomes {
            match outcome {
                Ok(moved) => report.moved.push(moved),
                Err(error) => {
                    tracing::warn!(shard = step.shard, to = step.to, %error, "planned move failed");
                    report.failures.push(wire::FailedMove {
                        shard: step.shard,
                        from: step.from,
                        to: step.to,
                        error: error_code(&error),
                        message: error.to_string(),
                    });
                }
            }
        }
        report.failed = report.failures.first().cloned();
        report
    }

    /// One move; the caller holds `operations`.
    async fn move_locked(
        &self,
        shard: u32,
        to: NodeId,
    ) -> Result<wire::ShardMoveReport, MoveError> {
        let started = Instant::now();
        let result = self.move_steps(shard, to).await;
        let counters = &self.counters;
        counters.seconds.observe(started.elapsed());
        let outcome = if result.is_ok() {
            &counters.committed
        } else {
            &counters.failed
        };
        outcome.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn move_steps(&self, shard: u32, to: NodeId) -> Result<wire::ShardMoveReport, MoveError> {
        let started = Instant::now();
        let state = self.placement.view().current();
        let shards = state.shard_count();
        let assignment = *state
            .shard(shard)
            .ok_or(MoveError::UnknownShard { shard, shards })?;
        let from = assignment.owner;
        let epoch = assignment.epoch;
        let peer = |node: NodeId| {
            state
                .members()
                .get(&node)
                .map(|member| Peer::member(node, member.address.clone()))
        };
        // 1. BeginMove (the state machine checks membership, owner, epoch
        // and that no other move of the shard is in progress).
        self.commit(
            "begin",
            PlacementCommand::BeginMove {
                shard,
                from,
                to,
                expected_epoch: epoch,
            },
        )
        .await?;
        tracing::info!(shard, from, to, epoch, "shard move begun");
        // 2-3. Export from the owner, import on the target.
        let transferred = async {
            let from_peer = peer(from).ok_or(("export", format!("node {from} has no address")))?;
            let to_peer = peer(to).ok_or(("import", format!("node {to} has no address")))?;
            let bytes = self
                .peers
                .export_shard(&from_peer, shard)
                .await
                .map_err(|error| ("export", error.to_string()))?;
            let size = bytes.len() as u64;
            self.peers
                .import_shard(&to_peer, shard, epoch + 1, bytes)
                .await
                .map_err(|error| ("import", error.to_string()))?;
            Ok::<u64, (&'static str, String)>(size)
        }
        .await;
        let size = match transferred {
            Ok(size) => size,
            Err((step, detail)) => return Err(self.abort(shard, epoch, step, detail).await),
        };
        // 4. CommitMove.
        if let Err(error) = self
            .commit(
                "commit",
                PlacementCommand::CommitMove {
                    shard,
                    to,
                    expected_epoch: epoch,
                },
            )
            .await
        {
            let detail = error.to_string();
            return Err(self.abort(shard, epoch, "commit", detail).await);
        }
        tracing::info!(
            shard,
            from,
            to,
            epoch = epoch + 1,
            bytes = size,
            "shard move committed"
        );
        // 5. The old owner drops its copy.
        let dropped = match peer(from) {
            Some(from_peer) => self
                .peers
                .drop_shard(&from_peer, shard, to, epoch + 1)
                .await
                .map_err(|error| error.to_string()),
            None => Err(format!("node {from} has no address")),
        };
        if let Err(detail) = dropped {
            return Err(MoveError::DropFailed { detail });
        }
        Ok(wire::ShardMoveReport {
            shard,
            from,
            to,
            epoch: epoch + 1,
            bytes: size,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Proposes `command`; a rejection or a Raft failure is an error.
    async fn commit(
        &self,
        step: &'static str,
        command: PlacementCommand,
    ) -> Result<PlacementResponse, MoveError> {
        let response = self
            .placement
            .propose(command)
            .await
            .map_err(|error| MoveError::from_change(step, error))?;
        match response {
            PlacementResponse::Rejected { reason } => Err(MoveError::Refused(reason)),
            other => Ok(other),
        }
    }

    /// Aborts the move after a failure at `step`.
    async fn abort(&self, shard: u32, epoch: u64, step: &'static str, detail: String) -> MoveError {
        let aborted = self
            .commit(
                "abort",
                PlacementCommand::AbortMove {
                    shard,
                    expected_epoch: epoch,
                },
            )
            .await;
        if let Err(error) = &aborted {
            tracing::error!(shard, %error, "shard move could not be aborted");
        }
        tracing::warn!(shard, step, %detail, "shard move failed");
        MoveError::StepFailed {
            step,
            detail,
            aborted: aborted.is_ok(),
        }
    }
}

/// The stable code of a move error (`docs/api.md`).
pub fn error_code(error: &MoveError) -> ErrorCode {
    match error {
        MoveError::NotLeader { .. } => ErrorCode::NotLeader,
        MoveError::UnknownShard { .. } => ErrorCode::UnknownShard,
        MoveError::Refused(_) => ErrorCode::MoveRefused,
        MoveError::Unavailable { .. } => ErrorCode::PlacementUnavailable,
        MoveError::StepFailed { .. } => ErrorCode::MoveFailed,
        MoveError::DropFailed { .. } => ErrorCode::DropFailed,
        MoveError::NotAMember { .. } => ErrorCode::NotAMember,
        MoveError::NoOtherMember { .. } => ErrorCode::NoOtherMember,
        MoveError::StillOwnsShards { .. } => ErrorCode::StillOwnsShards,
        MoveError::RemoveFailed { .. } => ErrorCode::RemoveFailed,
    }
}

/// The member that keeps a removed node's aggregates: the one with the
/// lowest id among those that may hold shards (not draining, not retired).
pub fn removal_keeper(node: NodeId, state: &PlacementState) -> Option<NodeId> {
    state
        .shard_holders()
        .into_iter()
        .find(|member| *member != node && !state.retired().contains_key(member))
}
