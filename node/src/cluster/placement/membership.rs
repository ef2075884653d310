//! `PlacementHandle`: what the rest of the node may do with its running
//! placement Raft node, in terms that carry no openraft type.
//!
//! - serve the Raft requests of peers (`serve_append`, `serve_vote`,
//!   `serve_snapshot`): bytes in, bytes out, in the format `network.rs`
//!   sends;
//! - create a single-node cluster (`bootstrap`);
//! - admit a joining node (`admit`): learner first, then voter while the
//!   cluster has fewer than `voters_max` voters;
//! - take a node out (`remove_member`);
//! - report the cluster's state (`report`).
//!
//! Membership changes are serialized by one lock: openraft refuses a change
//! while another is in progress, and joins are rare.

use super::{
    Member, NodeId, PlacementCommand, PlacementNode, PlacementRaft, PlacementResponse,
    PlacementView, Role, ShardAssignment,
};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{ChangeMembers, Membership, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long the leader waits for a joining node to catch up as a learner
/// before answering the join with an error (the joiner then retries).
const LEARNER_CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a bootstrapping node waits to become the leader of its own
/// single-node cluster.
const BOOTSTRAP_LEADERSHIP_WAIT_MAX: Duration = Duration::from_secs(30);

/// A peer's Raft request could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed Raft request: {0}")]
pub struct RaftRpcError(#[from] serde_json::Error);

/// Why a change only the leader makes — admitting or removing a member,
/// proposing a command — was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Only the leader changes placement; this names it when known.
    #[error("this node is not the leader")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    },
    /// Raft could not make the change now (no quorum, a change in progress,
    /// the learner did not catch up in time): worth a retry.
    #[error("placement could not make the change now: {detail}")]
    Unavailable { detail: String },
}

/// The node's part in the Raft group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftServerState {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// The cluster as this node sees it (`GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterReport {
    pub node_id: NodeId,
    pub state: RaftServerState,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub applied_index: Option<u64>,
    /// Index of the last entry in this node's placement log.
    pub last_log_index: Option<u64>,
    /// Every member, voters and learners, by id.
    pub members: BTreeMap<NodeId, Member>,
    pub shards: Vec<ShardAssignment>,
    /// Members being drained.
    pub draining: BTreeSet<NodeId>,
    /// Departed nodes' stores and their keepers.
    pub retired: BTreeMap<NodeId, NodeId>,
}

/// A running placement Raft node. Cheap to clone.
#[derive(Clone)]
pub struct PlacementHandle {
    inner: Arc<Inner>,
}

struct Inner {
    raft: PlacementRaft,
    view: PlacementView,
    node_id: NodeId,
    /// Joining nodes become voters while there are fewer voters than this;
    /// the rest stay learners.
    voters_max: usize,
    membership_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for PlacementHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PlacementHandle")
            .field("node_id", &self.inner.node_id)
            .field("voters_max", &self.inner.voters_max)
            .finish_non_exhaustive()
    }
}

impl PlacementHandle {
    pub fn new(
        raft: PlacementRaft,
        view: PlacementView,
        node_id: NodeId,
        voters_max: usize,
    ) -> PlacementHandle {
        assert!(voters_max >= 1, "a cluster needs at least one voter");
        PlacementHandle {
            inner: Arc::new(Inner {
                raft,
                view,
                node_id,
                voters_max,
                membership_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub fn view(&self) -> &PlacementView {
        &self.inner.view
    }

    pub async fn serve_append(&self, body: &[u8]) -> Result<Vec<u8>, RaftRpcError> {
        let request: AppendEntriesRequest<super::PlacementTypes> = serde_json::from_slice(body)?;
        let answer = self.inner.raft.append_entries(request).await;
        Ok(serde_json::to_vec(&answer)?)
    }

    pub async fn serve_vote(&self, body: &[u8]) -> Result<Vec<u8>, RaftRpcError> {
        let request: VoteRequest<NodeId> = serde_json::from_slice(body)?;
        let answer = self.inner.raft.vote(request).await;
        Ok(serde_json::to_vec(&answer)?)
    }

    pub async fn serve_snapshot(&self, body: &[u8]) -> Result<Vec<u8>, RaftRpcError> {
        let request: InstallSnapshotRequest<super::PlacementTypes> = serde_json::from_slice(body)?;
        let answer = self.inner.raft.install_snapshot(request).await;
        Ok(serde_json::to_vec(&answer)?)
    }

    /// Whether the Raft group was ever initialized on this node's store
    /// (by `bootstrap` or by a leader that added this node).
    pub async fn is_initialized(&self) -> Result<bool, String> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|fatal| fatal.to_string())
    }

    /// The voters of the membership this node knows.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// The address the membership records for `node`.
    pub fn member_address(&self, node: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.get_node(&node).map(|node| node.address.clone())
    }

    /// The addresses of every other member, to re-announce this node to.
    pub fn other_member_addresses(&self) -> Vec<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership
            .nodes()
            .filter(|(id, _)| **id != self.inner.node_id)
            .map(|(_, node)| node.address.clone())
            .collect()
    }

    /// Creates a single-node cluster with this node as its only voter and
    /// `shards` shards all owned by it. On a store that is already
    /// initialized with this node as its only voter, only finishes what a
    /// crash may have interrupted (the shard map); a no-op otherwise.
    pub async fn bootstrap(&self, address: &str, shards: u32) -> Result<(), String> {
        let raft = &self.inner.raft;
        let node_id = self.inner.node_id;
        if !self.is_initialized().await? {
            let members = BTreeMap::from([(
                node_id,
                PlacementNode {
                    address: address.to_string(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|error| format!("cannot initialize the Raft group: {error}"))?;
        } else if self.voters() != BTreeSet::from([node_id]) {
            return Ok(());
        }
        self.wait_for_leadership().await?;
        if self.inner.view.current().is_initialized() {
            return Ok(());
        }
        let written = raft
            .client_write(PlacementCommand::Initialize {
                shards,
                owner: node_id,
            })
            .await
            .map_err(|error| format!("cannot create the shard map: {error}"))?;
        match written.data {
            PlacementResponse::Initialized { .. }
            | PlacementResponse::Rejected {
                reason: super::PlacementRejection::AlreadyInitialized { .. },
            } => Ok(()),
            other => Err(format!("cannot create the shard map: {other:?}")),
        }
    }

    /// Waits (at most `within`) until this node knows a leader; answers
    /// whether it does.
    pub async fn wait_for_leader(&self, within: Duration) -> bool {
        self.inner
            .raft
            .wait(Some(within))
            .metrics(|metrics| metrics.current_leader.is_some(), "a known leader")
            .await
            .is_ok()
    }

    /// Waits until this node leads (a single-voter cluster elects itself
    /// within an election timeout).
    pub async fn wait_for_leadership(&self) -> Result<(), String> {
        self.inner
            .raft
            .wait(Some(BOOTSTRAP_LEADERSHIP_WAIT_MAX))
            .state(ServerState::Leader, "leadership")
            .await
            .map(|_| ())
            .map_err(|error| format!("did not become the leader of its cluster: {error}"))
    }

    /// Admits `node_id` at `address` (leader only): adds it as a learner and
    /// waits until it caught up, then promotes it to voter if there are fewer
    /// than `voters_max` voters. A member that joins again keeps its role;
    /// its address is updated if it changed. Answers the node's role and
    /// this (the leader's) id.
    pub async fn admit(
        &self,
        node_id: NodeId,
        address: &str,
    ) -> Result<(Role, NodeId), ChangeError> {
        let _serialized = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let membership = self.leader_membership()?;
        let node = PlacementNode {
            address: address.to_string(),
        };
        let mut membership = match membership.get_node(&node_id) {
            None => {
                let added = tokio::time::timeout(
                    LEARNER_CATCH_UP_WAIT_MAX,
                    raft.add_learner(node_id, node, true),
                )
                .await
                .map_err(|_| ChangeError::Unavailable {
                    detail: format!(
                        "node {node_id} did not catch up within {LEARNER_CATCH_UP_WAIT_MAX:?}"
                    ),
                })?
                .map_err(|error| self.join_error(error))?;
                added.membership
            }
            Some(known) if known.address != address => {
                let changes = ChangeMembers::SetNodes(BTreeMap::from([(node_id, node)]));
                let changed = raft
                    .change_membership(changes, true)
                    .await
                    .map_err(|error| self.join_error(error))?;
                changed.membership
            }
            Some(_) => None,
        }
        .unwrap_or(membership);
        let voters = membership.voter_ids().collect::<BTreeSet<_>>();
        if !voters.contains(&node_id) && voters.len() < self.inner.voters_max {
            let changes = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
            let changed = raft
                .change_membership(changes, false)
                .await
                .map_err(|error| self.join_error(error))?;
            membership = changed.membership.unwrap_or(membership);
        }
        let role = if membership.voter_ids().any(|id| id == node_id) {
            Role::Voter
        } else {
            Role::Learner
        };
        Ok((role, self.inner.node_id))
    }

    /// Takes `node_id` out of the membership (leader only): out of the
    /// voters first, then out of the nodes. When it was a voter and a
    /// learner is left, the lowest learner becomes a voter so the cluster
    /// keeps its fault tolerance. Removing a node that is not a member is a
    /// no-op. The caller makes sure the node owns nothing first
    /// (`shard_moves::ShardMover::remove`). Answers whether it was a
    /// member.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<bool, ChangeError> {
        let _serialized = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let membership = self.leader_membership()?;
        if membership.get_node(&node_id).is_none() {
            return Ok(false);
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(ChangeError::Unavailable {
                    detail: format!(
                        "node {node_id} is the only voter; a cluster cannot remove its last voter"
                    ),
                });
            }
            let learner = membership.learner_ids().find(|learner| *learner != node_id);
            if let Some(learner) = learner {
                let changes = ChangeMembers::AddVoterIds(BTreeSet::from([learner]));
                raft.change_membership(changes, false)
                    .await
                    .map_err(|error| self.join_error(error))?;
            }
            let changes = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
            raft.change_membership(changes, true)
                .await
                .map_err(|error| self.join_error(error))?;
        }
        let changes = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
        raft.change_membership(changes, false)
            .await
            .map_err(|error| self.join_error(error))?;
        Ok(true)
    }

    /// Proposes `command` through Raft (leader only) and answers the state
    /// machine's response once it is committed and applied here. A rejected
    /// command is an `Ok(PlacementResponse::Rejected { .. })`.
    pub async fn propose(
        &self,
        command: PlacementCommand,
    ) -> Result<PlacementResponse, ChangeError> {
        self.leader_membership()?;
        let written = self
            .inner
            .raft
            .client_write(command)
            .await
            .map_err(|error| self.join_error(error))?;
        Ok(written.data)
    }

    /// `Ok` when this node is the leader; the leader otherwise.
    pub fn require_leader(&self) -> Result<(), ChangeError> {
        self.leader_membership().map(|_| ())
    }

    /// The current membership if this node is the leader.
    fn leader_membership(&self) -> Result<Membership<NodeId, PlacementNode>, ChangeError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        if metrics.current_leader == Some(self.inner.node_id) {
            return Ok(metrics.membership_config.membership().clone());
        }
        let leader_address = metrics.current_leader.and_then(|leader| {
            let membership = metrics.membership_config.membership();
            membership
                .get_node(&leader)
                .map(|node| node.address.clone())
        });
        Err(ChangeError::NotLeader {
            leader_id: metrics.current_leader,
            leader_address,
        })
    }

    fn join_error(
        &self,
        error: RaftError<NodeId, ClientWriteError<NodeId, PlacementNode>>,
    ) -> ChangeError {
        match error.forward_to_leader() {
            Some(forward) => ChangeError::NotLeader {
                leader_id: forward.leader_id,
                leader_address: forward
                    .leader_node
                    .as_ref()
                    .map(|node| node.address.clone()),
            },
            None => ChangeError::Unavailable {
                detail: error.to_string(),
            },
        }
    }

    pub fn report(&self) -> ClusterReport {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let placement = self.inner.view.current();
        let members = super::store::members_of(metrics.membership_config.membership());
        let state = match metrics.state {
            ServerState::Leader => RaftServerState::Leader,
            ServerState::Follower => RaftServerState::Follower,
            ServerState::Candidate => RaftServerState::Candidate,
            ServerState::Learner => RaftServerState::Learner,
            ServerState::Shutdown => RaftServerState::Shutdown,
        };
        ClusterReport {
            node_id: self.inner.node_id,
            state,
            leader: metrics.current_leader,
            term: metrics.current_term,
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            last_log_index: metrics.last_log_index,
            members,
            shards: placement.shards().to_vec(),
            draining: placement.draining().clone(),
            retired: placement.retired().clone(),
        }
    }

    /// Stops the Raft node (its tasks; the store stays on disk).
    pub async fn shutdown(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "placement Raft node did not shut down cleanly");
        }
    }
}
