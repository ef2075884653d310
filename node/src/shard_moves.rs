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
//! applies it) and reports the step that failed. Moves are serialised: the
//! leader runs one at a time (`ShardMover::serial`, a tokio mutex), so a
//! rebalance is a sequence of single moves.
//!
//! `plan_rebalance` is the pure planner: which shards go where so that
//! every member owns ⌊shards/members⌋ or ⌈shards/members⌉ shards, with as
//! few moves as possible.

use crate::admin_token::ClusterSecret;
use crate::placement::{
    JoinError, NodeId, PlacementCommand, PlacementHandle, PlacementRejection, PlacementResponse,
    ShardAssignment,
};
use sessiondb_protocol as wire;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most moves one `POST /v1/cluster/rebalance` carries out; the rest of
/// the plan is answered as skipped, for the next call.
pub const REBALANCE_MOVES_MAX: usize = 64;
/// How long one export or import call may take (the shard state travels in
/// one body).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
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
}

fn leader_text(leader_id: Option<NodeId>, address: Option<&str>) -> String {
    match (leader_id, address) {
        (Some(id), Some(address)) => format!("node {id} at {address}"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown (election in progress)".to_string(),
    }
}

impl MoveError {
    fn from_join(step: &'static str, error: JoinError) -> MoveError {
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
    /// Held for the whole of a move (and of a rebalance): one at a time.
    serial: Arc<tokio::sync::Mutex<()>>,
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
            serial: Arc::new(tokio::sync::Mutex::new(())),
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
        let _serial = self.serial.lock().await;
        self.move_locked(shard, to).await
    }

    /// Plans a balanced shard map and carries out up to
    /// `REBALANCE_MOVES_MAX` of its moves, one at a time; the first failure
    /// stops the rest.
    pub async fn rebalance(&self) -> Result<wire::RebalanceReport, MoveError> {
        self.not_leader()?;
        let _serial = self.serial.lock().await;
        let state = self.placement.view().current();
        let members: BTreeSet<NodeId> = state.members().keys().copied().collect();
        let plan = plan_rebalance(&members, state.shards());
        let mut report = wire::RebalanceReport {
            plan: plan.clone(),
            moved: Vec::new(),
            failed: None,
            skipped: Vec::new(),
        };
        let mut planned = plan.into_iter();
        for step in planned.by_ref().take(REBALANCE_MOVES_MAX) {
            match self.move_locked(step.shard, step.to).await {
                Ok(moved) => report.moved.push(moved),
                Err(error) => {
                    tracing::warn!(shard = step.shard, to = step.to, %error, "rebalance move failed");
                    report.failed = Some(wire::FailedMove {
                        shard: step.shard,
                        from: step.from,
                        to: step.to,
                        error: error_code(&error).to_string(),
                        message: error.to_string(),
                    });
                    break;
                }
            }
        }
        report.skipped = planned.collect();
        Ok(report)
    }

    /// One move; the caller holds `serial`.
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
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.secret.expose())
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body.to_vec())
    }
}

/// The stable code of a move error (`docs/api.md`).
pub fn error_code(error: &MoveError) -> &'static str {
    match error {
        MoveError::NotLeader { .. } => "not_leader",
        MoveError::UnknownShard { .. } => "unknown_shard",
        MoveError::Refused(_) => "move_refused",
        MoveError::Unavailable { .. } => "placement_unavailable",
        MoveError::StepFailed { .. } => "move_failed",
        MoveError::DropFailed { .. } => "drop_failed",
    }
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
    fn random_maps_end_balanced_with_exactly_the_surplus_moved() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
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
