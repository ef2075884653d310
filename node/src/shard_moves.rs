//! Shard moves driven by the placement leader, and rebalance planning
//! (`docs/cluster.md`, "The move protocol" and "Rebalance").
//!
//! The leader sequences one move as Raft-committed steps around three
//! node-to-node calls (cluster secret, `http::shards`):
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
//! `plan_rebalance` is the pure planner: which shards go where so that
//! every member that may hold shards (not draining) owns ⌊shards/members⌋
//! or ⌈shards/members⌉ shards, with as few moves as possible. A drain is a
//! rebalance without the drained node.
//!
//! Removing a node (`ShardMover::remove`, `docs/cluster.md`, "Removing a
//! node") takes a drained node out: it hands its aggregate stores over
//! (`POST /v1/internal/stores/handover`), a remaining member absorbs them
//! (`POST /v1/internal/stores/absorb`), `RetireStores` records who keeps
//! them, and the node leaves the Raft membership.

use crate::admin_token::ClusterSecret;
use crate::placement::{
    JoinError, NodeId, PlacementCommand, PlacementHandle, PlacementRejection, PlacementResponse,
    ShardAssignment,
};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most moves one `POST /v1/cluster/rebalance` (or drain) carries out;
/// the rest of the plan is answered as skipped, for the next call.
pub const REBALANCE_MOVES_MAX: usize = 64;
/// The most moves of one rebalance or drain in flight at once. Each fences
/// one shard and sends its state in one body, so this bounds both the
/// shards refusing writes at any moment and the memory in transit.
pub const MOVES_CONCURRENT_MAX: usize = 4;
/// How long one export or import call may take (the shard state travels in
/// one body).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the leader looks for moves a previous leader left
/// unfinished (`ShardMover::abort_stale_moves`). A stale move keeps its
/// shard refusing writes (retryably) until then.
pub const STALE_MOVE_CHECK_MS: u64 = 5_000;
/// How long a drop call may take.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The internal paths a member serves (`http::shards`).
pub fn export_path(shard: u32) -> String {
    format!("/v1/internal/shards/{shard}/export")
}
pub fn import_path(shard: u32, epoch: u64) -> String {
    format!("/v1/internal/shards/{shard}/import?epoch={epoch}")
}
pub fn drop_path(shard: u32, owner: NodeId, epoch: u64) -> String {
    format!("/v1/internal/shards/{shard}/drop?owner={owner}&epoch={epoch}")
}
pub const HANDOVER_PATH: &str = "/v1/internal/stores/handover";
pub const LEADER_PATH: &str = "/v1/internal/leader";
pub const LOADS_PATH: &str = "/v1/internal/shards/loads";
/// The most load-evening swaps one plan adds after the count balance (each
/// is two moves).
pub const LOAD_SWAPS_MAX: usize = 16;
/// How long the leader waits for one member's shard loads.
const LOADS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded operation may run on the leader: a rebalance or a
/// drain carries out up to `REBALANCE_MOVES_MAX` moves.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(600);
pub const ABSORB_PATH: &str = "/v1/internal/stores/absorb";

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
    pub fn from_join(step: &'static str, error: JoinError) -> MoveError {
        match error {
            JoinError::NotLeader {
                leader_id,
                leader_address,
            } => MoveError::NotLeader {
                leader_id,
                leader_address,
            },
            JoinError::Unavailable(detail) => MoveError::Unavailable { step, detail },
        }
    }
}

/// Runs shard moves on the leader, one at a time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardMover {
    placement: PlacementHandle,
    secret: ClusterSecret,
    http: reqwest::Client,
    /// Held for the whole of an operation (a move, a rebalance, a drain, a
    /// removal): one at a time.
    operations: Arc<tokio::sync::Mutex<()>>,
    /// Moves this node ran as leader, for `/metrics`.
    pub counters: Arc<MoveCounters>,
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
    pub fn new(placement: PlacementHandle, secret: ClusterSecret) -> ShardMover {
        let http = crate::tls::peer_client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ShardMover {
            placement,
            secret,
            http,
            operations: Arc::new(tokio::sync::Mutex::new(())),
            counters: Arc::new(MoveCounters::default()),
        }
    }

    fn not_leader(&self) -> Result<(), MoveError> {
        self.placement
            .require_leader()
            .map_err(|error| MoveError::from_join("leadership", error))
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
    /// and carries out up to `REBALANCE_MOVES_MAX` of its moves.
    pub async fn rebalance(&self) -> Result<wire::RebalanceReport, MoveError> {
        self.not_leader()?;
        let _operation = self.operations.lock().await;
        let state = self.placement.view().current();
        let loads = self.gather_loads(&state).await;
        let plan = plan_rebalance_by_load(&state.shard_holders(), state.shards(), &loads);
        Ok(self.run_plan(plan).await)
    }

    /// Every shard's load as its owner reports it (`LOADS_PATH`); a member
    /// that does not answer counts its shards as 0 (the count balance still
    /// holds, only the load evening is blind to them).
    async fn gather_loads(&self, state: &crate::placement::PlacementState) -> Vec<u64> {
        let mut loads = vec![0_u64; state.shards().len()];
        for (node, member) in state.members() {
            let url = format!("{}{LOADS_PATH}", crate::tls::peer_url(&member.address));
            let answer = async {
                let response = self
                    .http
                    .get(&url)
                    .bearer_auth(self.secret.expose())
                    .timeout(LOADS_TIMEOUT)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let body: serde_json::Value =
                    response.json().await.map_err(|error| error.to_string())?;
                serde_json::from_value::<Vec<u64>>(body["loads"].clone())
                    .map_err(|error| error.to_string())
            }
            .await;
            match answer {
                Ok(reported) => {
                    for (shard, assignment) in state.shards().iter().enumerate() {
                        if assignment.owner == *node {
                            loads[shard] = reported.get(shard).copied().unwrap_or(0);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(node, %error, "shard loads unknown; balancing counts only")
                }
            }
        }
        loads
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
        let plan = plan_rebalance(&state.shard_holders(), state.shards());
        let moves = self.run_plan(plan).await;
        Ok(wire::DrainReport {
            node_id: node,
            moves,
            remaining_shards: self.placement.view().current().shards_owned(node),
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
        let address = |member: NodeId| {
            self.placement
                .view()
                .current()
                .members()
                .get(&member)
                .map(|member| member.address.clone())
                .ok_or(MoveError::RemoveFailed {
                    step: "address",
                    detail: format!("node {member} has no address"),
                })
        };
        let failed =
            |step: &'static str| move |detail: String| MoveError::RemoveFailed { step, detail };
        let stores = self
            .call(&address(node)?, HANDOVER_PATH, Vec::new(), TRANSFER_TIMEOUT)
            .await
            .map_err(failed("handover"))?;
        let bytes = stores.len() as u64;
        self.call(&address(keeper)?, ABSORB_PATH, stores, TRANSFER_TIMEOUT)
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
            .map_err(|error| MoveError::from_join("membership", error))?;
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
    /// `MOVES_CONCURRENT_MAX` at a time; after a failure no new move
    /// starts. The caller holds `operations`.
    async fn run_plan(&self, plan: Vec<wire::PlannedMove>) -> wire::RebalanceReport {
        use futures::StreamExt;
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let attempts = plan.iter().take(REBALANCE_MOVES_MAX).map(|step| {
            let stopped = &stopped;
            async move {
                if stopped.load(std::sync::atomic::Ordering::Acquire) {
                    return (*step, None);
                }
                let result = self.move_locked(step.shard, step.to).await;
                if result.is_err() {
                    stopped.store(true, std::sync::atomic::Ordering::Release);
                }
                (*step, Some(result))
            }
        });
        let outcomes: Vec<_> = futures::stream::iter(attempts)
            .buffered(MOVES_CONCURRENT_MAX)
            .collect()
            .await;
        let mut report = wire::RebalanceReport {
            plan: plan.clone(),
            moved: Vec::new(),
            failed: None,
            skipped: plan.iter().skip(REBALANCE_MOVES_MAX).copied().collect(),
        };
        for (step, outcome) in outcomes {
            match outcome {
                Some(Ok(moved)) => report.moved.push(moved),
                Some(Err(error)) if report.failed.is_none() => {
                    tracing::warn!(shard = step.shard, to = step.to, %error, "planned move failed");
                    report.failed = Some(wire::FailedMove {
                        shard: step.shard,
                        from: step.from,
                        to: step.to,
                        error: error_code(&error),
                        message: error.to_string(),
                    });
                }
                // A second failure among the moves already in flight, or a
                // move not started after the first failure.
                Some(Err(error)) => {
                    tracing::warn!(shard = step.shard, to = step.to, %error, "planned move failed");
                    report.skipped.push(step);
                }
                None => report.skipped.push(step),
            }
        }
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
        let address = |node: NodeId| {
            state
                .members()
                .get(&node)
                .map(|member| member.address.clone())
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
            let from_address =
                address(from).ok_or(("export", format!("node {from} has no address")))?;
            let to_address = address(to).ok_or(("import", format!("node {to} has no address")))?;
            let bytes = self
                .call(
                    &from_address,
                    &export_path(shard),
                    Vec::new(),
                    TRANSFER_TIMEOUT,
                )
                .await
                .map_err(|detail| ("export", detail))?;
            let size = bytes.len() as u64;
            self.call(
                &to_address,
                &import_path(shard, epoch + 1),
                bytes,
                TRANSFER_TIMEOUT,
            )
            .await
            .map_err(|detail| ("import", detail))?;
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
        let dropped = match address(from) {
            Some(from_address) => self
                .call(
                    &from_address,
                    &drop_path(shard, to, epoch + 1),
                    Vec::new(),
                    DROP_TIMEOUT,
                )
                .await
                .map(|_| ()),
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
            .map_err(|error| MoveError::from_join(step, error))?;
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

    /// Hands `operation` to the leader at `address`
    /// (`POST /v1/internal/leader`) and answers its status and body as they
    /// are, so the operator sees the leader's own answer.
    pub async fn forward(
        &self,
        address: &str,
        operation: &wire::LeaderOperation,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{LEADER_PATH}", crate::tls::peer_url(address));
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.secret.expose())
            .json(operation)
            .timeout(FORWARD_TIMEOUT)
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        Ok((status, body.to_vec()))
    }

    /// One node-to-node call: POST `body` to `path` on `address` with the
    /// cluster secret; answers the body of a 200.
    async fn call(
        &self,
        address: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", crate::tls::peer_url(address));
        let request = self
            .http
            .post(&url)
            .bearer_auth(self.secret.expose())
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(body);
        crate::tls::peer_ok_body(request, &url).await
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
pub fn removal_keeper(node: NodeId, state: &crate::placement::PlacementState) -> Option<NodeId> {
    state
        .shard_holders()
        .into_iter()
        .find(|member| *member != node && !state.retired().contains_key(member))
}

/// `plan_rebalance`, then up to `LOAD_SWAPS_MAX` trades that even out load
/// (`loads[shard]`, e.g. retained events) without changing counts: while
/// a shard of the most loaded member and one of the least loaded can swap
/// owners and leave both below the heavier one's load, the pair that leaves
/// them closest swaps. The plan is then each shard's move from its owner
/// now to its final owner, so a shard moves at most once, and a second call
/// with the same loads plans nothing (no improving trade is left). With
/// equal loads, or no loads, it is the count plan as is. Shards with a move
/// in progress stay where they are.
pub fn plan_rebalance_by_load(
    members: &BTreeSet<NodeId>,
    shards: &[ShardAssignment],
    loads: &[u64],
) -> Vec<wire::PlannedMove> {
    let counted = plan_rebalance(members, shards);
    if members.len() < 2 || loads.len() != shards.len() {
        return counted;
    }
    let initial: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
    let mut owner = initial.clone();
    for step in &counted {
        owner[step.shard as usize] = step.to;
    }
    let pinned: Vec<bool> = shards.iter().map(|a| a.moving_to.is_some()).collect();
    let mut traded = false;
    for _ in 0..LOAD_SWAPS_MAX {
        let Some((heavy_shard, light_shard)) = best_trade(members, &owner, loads, &pinned) else {
            break;
        };
        owner.swap(heavy_shard, light_shard);
        traded = true;
    }
    if !traded {
        return counted;
    }
    (0..owner.len())
        .filter(|shard| owner[*shard] != initial[*shard])
        .map(|shard| wire::PlannedMove {
            shard: u32::try_from(shard).expect("at most SHARDS_MAX shards"),
            from: initial[shard],
            to: owner[shard],
        })
        .collect()
}

/// The trade between the most and the least loaded member that leaves them
/// closest, if one leaves both below the heavier one's load: (the heavy
/// member's shard, the light member's shard).
fn best_trade(
    members: &BTreeSet<NodeId>,
    owner: &[NodeId],
    loads: &[u64],
    pinned: &[bool],
) -> Option<(usize, usize)> {
    let load_of = |node: NodeId| -> u64 {
        owner
            .iter()
            .zip(loads)
            .filter(|(o, _)| **o == node)
            .map(|(_, load)| *load)
            .sum()
    };
    let mut by_load: Vec<(u64, NodeId)> = members.iter().map(|m| (load_of(*m), *m)).collect();
    by_load.sort_unstable();
    let (light_load, light) = *by_load.first()?;
    let (heavy_load, heavy) = *by_load.last()?;
    let movable = |node: NodeId| (0..owner.len()).filter(move |s| owner[*s] == node && !pinned[*s]);
    let mut best: Option<(u64, usize, usize)> = None;
    for h in movable(heavy) {
        for l in movable(light) {
            let (h_load, l_load) = (loads[h], loads[l]);
            if h_load <= l_load {
                continue;
            }
            let new_heavy = heavy_load - h_load + l_load;
            let new_light = light_load - l_load + h_load;
            if new_heavy.max(new_light) >= heavy_load {
                continue;
            }
            let gap = new_heavy.abs_diff(new_light);
            if best.is_none_or(|(best_gap, _, _)| gap < best_gap) {
                best = Some((gap, h, l));
            }
        }
    }
    best.map(|(_, h, l)| (h, l))
}

/// The moves that even out shard counts over `members`: afterwards every
/// member owns ⌊shards/members⌋ or ⌈shards/members⌉ shards. Shards owned by
/// a node that is not a member all move. Minimal: only surplus shards move,
/// and the members that keep the larger share are those that already own
/// the most. Deterministic: ties go to the lower node id; donors give their
/// highest-numbered shards first; receivers are filled in node id order.
/// A shard with a move in progress is left where it is.
pub fn plan_rebalance(
    members: &BTreeSet<NodeId>,
    shards: &[ShardAssignment],
) -> Vec<wire::PlannedMove> {
    if members.is_empty() || shards.is_empty() {
        return Vec::new();
    }
    let mut owned: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    for (index, assignment) in shards.iter().enumerate() {
        let shard = u32::try_from(index).expect("at most SHARDS_MAX shards");
        owned.entry(assignment.owner).or_default().push(shard);
    }
    let count = |node: &NodeId| owned.get(node).map_or(0, Vec::len);
    let base = shards.len() / members.len();
    let larger = shards.len() % members.len();
    // The members that keep ⌈…⌉: those owning the most, lower ids first.
    let mut by_count: Vec<NodeId> = members.iter().copied().collect();
    by_count.sort_by(|a, b| count(b).cmp(&count(a)).then(a.cmp(b)));
    let target: BTreeMap<NodeId, usize> = by_count
        .iter()
        .enumerate()
        .map(|(rank, node)| (*node, base + usize::from(rank < larger)))
        .collect();
    // Surplus shards, in donor id order, each donor's highest shards first.
    let mut surplus: Vec<(u32, NodeId)> = Vec::new();
    for (owner, owned_shards) in &owned {
        let keep = target.get(owner).copied().unwrap_or(0);
        let movable: Vec<u32> = owned_shards
            .iter()
            .rev()
            .copied()
            .filter(|shard| shards[*shard as usize].moving_to.is_none())
            .collect();
        let extra = owned_shards.len().saturating_sub(keep);
        surplus.extend(movable.into_iter().take(extra).map(|shard| (shard, *owner)));
    }
    let mut receivers = target
        .iter()
        .flat_map(|(node, want)| std::iter::repeat_n(*node, want.saturating_sub(count(node))));
    surplus
        .into_iter()
        .map_while(|(shard, from)| {
            receivers
                .next()
                .map(|to| wire::PlannedMove { shard, from, to })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(owners: &[NodeId]) -> Vec<ShardAssignment> {
        owners
            .iter()
            .map(|owner| ShardAssignment {
                owner: *owner,
                epoch: 1,
                moving_to: None,
            })
            .collect()
    }

    fn apply(shards: &[ShardAssignment], plan: &[wire::PlannedMove]) -> BTreeMap<NodeId, usize> {
        let mut owners: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
        for step in plan {
            assert_eq!(owners[step.shard as usize], step.from, "{step:?}");
            owners[step.shard as usize] = step.to;
        }
        let mut counts = BTreeMap::new();
        for owner in owners {
            *counts.entry(owner).or_insert(0) += 1;
        }
        counts
    }

    /// A seeded generator of numbers below a bound (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |bound| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        }
    }

    fn members(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn assert_balanced(
        members: &BTreeSet<NodeId>,
        shards: usize,
        counts: &BTreeMap<NodeId, usize>,
    ) {
        let low = shards / members.len();
        let high = shards.div_ceil(members.len());
        for node in members {
            let count = counts.get(node).copied().unwrap_or(0);
            assert!(
                (low..=high).contains(&count),
                "node {node}: {count} in {counts:?}"
            );
        }
        assert!(
            counts.keys().all(|node| members.contains(node)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_fresh_cluster_is_evened_out_with_the_fewest_moves() {
        let shards = map(&[1; 8]);
        let nodes = members(&[1, 2, 3]);
        let plan = plan_rebalance(&nodes, &shards);
        // Node 1 keeps 3 (it owns the most), 2 and 3 get 3 and 2: 5 moves.
        assert_eq!(plan.len(), 5);
        let counts = apply(&shards, &plan);
        assert_balanced(&nodes, 8, &counts);
        assert_eq!(counts[&1], 3);
        assert_eq!(
            plan,
            vec![
                wire::PlannedMove {
                    shard: 7,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 6,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 5,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 4,
                    from: 1,
                    to: 3
                },
                wire::PlannedMove {
                    shard: 3,
                    from: 1,
                    to: 3
                },
            ]
        );
        // Deterministic, and a balanced map needs nothing more.
        assert_eq!(plan_rebalance(&nodes, &shards), plan);
        let mut after = shards.clone();
        for step in &plan {
            after[step.shard as usize].owner = step.to;
        }
        assert!(plan_rebalance(&nodes, &after).is_empty());
    }

    #[test]
    fn the_number_of_moves_is_the_surplus() {
        // Counts 5, 1, 0 over 6 shards and 3 members: 2 each; node 1 gives
        // 3, node 3 takes 2, node 2 takes 1.
        let shards = map(&[1, 1, 2, 1, 1, 1]);
        let nodes = members(&[1, 2, 3]);
        let plan = plan_rebalance(&nodes, &shards);
        assert_eq!(plan.len(), 3);
        assert_balanced(&nodes, 6, &apply(&shards, &plan));
        // With a remainder the larger share stays with the largest owners:
        // counts 4, 3 over 7 shards and 2 members need no move.
        let shards = map(&[1, 2, 1, 2, 1, 2, 1]);
        assert!(plan_rebalance(&members(&[1, 2]), &shards).is_empty());
        // 6, 1 over 7 shards: one node keeps 4, so 2 moves.
        let shards = map(&[1, 1, 1, 1, 1, 1, 2]);
        let plan = plan_rebalance(&members(&[1, 2]), &shards);
        assert_eq!(plan.len(), 2);
        assert_balanced(&members(&[1, 2]), 7, &apply(&shards, &plan));
    }

    #[test]
    fn shards_of_departed_nodes_all_move_and_moving_shards_stay() {
        let shards = map(&[9, 9, 1, 2]);
        let nodes = members(&[1, 2]);
        let plan = plan_rebalance(&nodes, &shards);
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|step| step.from == 9));
        assert_balanced(&nodes, 4, &apply(&shards, &plan));

        let mut shards = map(&[1, 1, 1, 1]);
        shards[3].moving_to = Some(2);
        let plan = plan_rebalance(&nodes, &shards);
        assert!(plan.iter().all(|step| step.shard != 3), "{plan:?}");
        assert_eq!(plan.len(), 2);
        // Nothing to do without members or shards.
        assert!(plan_rebalance(&BTreeSet::new(), &shards).is_empty());
        assert!(plan_rebalance(&nodes, &[]).is_empty());
    }

    #[test]
    fn load_swaps_even_out_skewed_shards_and_keep_counts() {
        // Node 1 holds the two heavy shards, node 2 the two light ones:
        // counts are even, loads are not; one trade evens them.
        let shards = map(&[1, 1, 2, 2]);
        let loads = [100, 90, 1, 2];
        let nodes = members(&[1, 2]);
        let plan = plan_rebalance_by_load(&nodes, &shards, &loads);
        assert_eq!(plan.len(), 2, "{plan:?}");
        let counts = apply(&shards, &plan);
        assert_balanced(&nodes, 4, &counts);
        let mut owners: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
        for step in &plan {
            owners[step.shard as usize] = step.to;
        }
        let load = |node| -> u64 {
            owners
                .iter()
                .zip(loads)
                .filter(|(o, _)| **o == node)
                .map(|(_, l)| l)
                .sum()
        };
        assert!(load(1).abs_diff(load(2)) < 190 - 3, "{plan:?}");
        assert_eq!(load(1) + load(2), 193);
        // Equal loads, or no loads: the count plan alone.
        let fresh = map(&[1; 8]);
        let three = members(&[1, 2, 3]);
        assert_eq!(
            plan_rebalance_by_load(&three, &fresh, &[5; 8]),
            plan_rebalance(&three, &fresh)
        );
        assert_eq!(
            plan_rebalance_by_load(&three, &fresh, &[]),
            plan_rebalance(&three, &fresh)
        );
    }

    #[test]
    fn random_loads_never_worsen_the_spread_and_move_each_shard_once() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..300 {
            let member_count = 2 + next(4) as usize;
            let nodes: BTreeSet<NodeId> = (1..=member_count as u64).collect();
            let shard_count = member_count + next(30) as usize;
            let owners: Vec<NodeId> = (0..shard_count)
                .map(|_| 1 + next(member_count as u64))
                .collect();
            let loads: Vec<u64> = (0..shard_count).map(|_| next(1_000)).collect();
            let shards = map(&owners);
            let counted = plan_rebalance(&nodes, &shards);
            let plan = plan_rebalance_by_load(&nodes, &shards, &loads);
            assert_balanced(&nodes, shard_count, &apply(&shards, &plan));
            // A fixed point: from the planned map, nothing more to do.
            let mut after = shards.clone();
            for step in &plan {
                after[step.shard as usize].owner = step.to;
            }
            if plan.len() < counted.len() + 2 * LOAD_SWAPS_MAX {
                assert!(plan_rebalance_by_load(&nodes, &after, &loads).is_empty());
            }
            let moved: BTreeSet<u32> = plan.iter().map(|step| step.shard).collect();
            assert_eq!(moved.len(), plan.len(), "a shard moves at most once");
            let spread = |plan: &[wire::PlannedMove]| {
                let mut owner = owners.clone();
                for step in plan {
                    owner[step.shard as usize] = step.to;
                }
                let per: Vec<u64> = nodes
                    .iter()
                    .map(|node| {
                        owner
                            .iter()
                            .zip(&loads)
                            .filter(|(o, _)| *o == node)
                            .map(|(_, l)| *l)
                            .sum()
                    })
                    .collect();
                per.iter().max().copied().unwrap_or(0) - per.iter().min().copied().unwrap_or(0)
            };
            assert!(spread(&plan) <= spread(&counted), "{owners:?} {loads:?}");
        }
    }

    #[test]
    fn random_maps_end_balanced_with_exactly_the_surplus_moved() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..500 {
            let member_count = 1 + next(6) as usize;
            let nodes: BTreeSet<NodeId> = (1..=member_count as u64).collect();
            let shard_count = 1 + next(40) as usize;
            // Owners among the members and one departed node (99).
            let owners: Vec<NodeId> = (0..shard_count)
                .map(|_| {
                    let pick = next(member_count as u64 + 1);
                    if pick == member_count as u64 {
                        99
                    } else {
                        pick + 1
                    }
                })
                .collect();
            let shards = map(&owners);
            let plan = plan_rebalance(&nodes, &shards);
            let counts = apply(&shards, &plan);
            assert_balanced(&nodes, shard_count, &counts);
            // Lower bound on moves: every shard of a departed node, plus
            // what members hold above ⌈…⌉, plus what the larger-share slots
            // force beyond that. The plan moves each shard at most once.
            let moved: BTreeSet<u32> = plan.iter().map(|step| step.shard).collect();
            assert_eq!(moved.len(), plan.len());
            let mut before: BTreeMap<NodeId, usize> = BTreeMap::new();
            for owner in &owners {
                *before.entry(*owner).or_insert(0) += 1;
            }
            let minimal: usize = before
                .iter()
                .map(|(node, count)| count.saturating_sub(counts.get(node).copied().unwrap_or(0)))
                .sum();
            assert_eq!(plan.len(), minimal, "{owners:?} → {plan:?}");
            // And no balanced map is closer: over every choice of the
            // members that get the larger share, the fewest moves (shards
            // not kept by their owner) is the plan's length.
            let (base, larger) = (shard_count / member_count, shard_count % member_count);
            let best = (0u32..(1 << member_count))
                .filter(|mask| mask.count_ones() as usize == larger)
                .map(|mask| {
                    let kept: usize = nodes
                        .iter()
                        .enumerate()
                        .map(|(rank, node)| {
                            let target = base + usize::from(mask & (1 << rank) != 0);
                            before.get(node).copied().unwrap_or(0).min(target)
                        })
                        .sum();
                    shard_count - kept
                })
                .min()
                .expect("some choice");
            assert_eq!(plan.len(), best, "{owners:?} → {plan:?}");
        }
    }
}
