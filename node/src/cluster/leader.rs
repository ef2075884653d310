//! One way to reach the placement leader, for every change only the leader
//! makes (`docs/cluster.md`, "Leader changes").
//!
//! Operators never need to know the leader: a project change (a placement
//! `PutProject`) or a cluster operation (move, rebalance, drain, removal)
//! may be sent to any member. `LeaderPath::find` says where the leader is —
//! here, or at a member's address — waiting at most `LEADER_WAIT_MS` while
//! an election is on; the change then runs here or is handed to the leader
//! over its internal route (`PeerClient::propose`,
//! `PeerClient::leader_operation`). The internal routes never forward again:
//! a node that lost the leadership meanwhile answers `307 not_leader`, which
//! comes back as a retryable error.

use super::moves::{MoveError, OperationReport, ShardMover};
use super::peer::{ForwardedAnswer, Peer, PeerClient, PeerError};
use super::placement::{ChangeError, PlacementCommand, PlacementHandle, PlacementResponse};
use sessiondb_protocol as wire;
use std::time::Duration;

/// How long a change waits for an election to end before it is refused as
/// unavailable (retryable).
pub const LEADER_WAIT_MS: u64 = 10_000;

/// Where the leader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    Here,
    At(Peer),
}

/// Why a change did not reach the leader or the leader could not make it.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("no leader is known (an election is in progress); retry")]
    Unknown,
    /// This node leads but placement could not make the change now.
    #[error("placement could not make the change now: {detail}")]
    Unavailable { detail: String },
    /// The leader could not be reached, or answered with an error.
    #[error("the change could not be handed to the leader: {0}")]
    Forward(#[source] PeerError),
}

/// An operation's answer: run here, or the leader's answer as it came.
#[derive(Debug)]
pub enum OperationAnswer {
    Here(Result<OperationReport, MoveError>),
    Forwarded(ForwardedAnswer),
}

/// Finds the leader and runs changes there. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaderPath {
    placement: PlacementHandle,
    peers: PeerClient,
}

impl LeaderPath {
    pub fn new(placement: PlacementHandle, peers: PeerClient) -> LeaderPath {
        LeaderPath { placement, peers }
    }

    /// Where the leader is; during an election, waits (bounded) for its
    /// outcome.
    pub async fn find(&self) -> Result<Leader, LeaderError> {
        if self.placement.require_leader().is_err() {
            self.placement
                .wait_for_leader(Duration::from_millis(LEADER_WAIT_MS))
                .await;
        }
        match self.placement.require_leader() {
            Ok(()) => Ok(Leader::Here),
            Err(ChangeError::NotLeader {
                leader_id,
                leader_address: Some(address),
            }) => Ok(Leader::At(Peer {
                node: leader_id,
                address,
            })),
            Err(_) => Err(LeaderError::Unknown),
        }
    }

    /// Has the cluster agree on `command`: proposed here when this node
    /// leads, else by the leader.
    pub async fn propose(
        &self,
        command: PlacementCommand,
    ) -> Result<PlacementResponse, LeaderError> {
        match self.find().await? {
            Leader::Here => {
                self.placement
                    .propose(command)
                    .await
                    .map_err(|error| LeaderError::Unavailable {
                        detail: error.to_string(),
                    })
            }
            Leader::At(leader) => self
                .peers
                .propose(&leader, &command)
                .await
                .map_err(LeaderError::Forward),
        }
    }

    /// Runs an operator's cluster operation here when this node leads, else
    /// hands it to the leader.
    pub async fn operate(
        &self,
        mover: &ShardMover,
        operation: wire::LeaderOperation,
    ) -> Result<OperationAnswer, LeaderError> {
        match self.find().await? {
            Leader::Here => Ok(OperationAnswer::Here(mover.run(operation).await)),
            Leader::At(leader) => self
                .peers
                .leader_operation(&leader, &operation)
                .await
                .map(OperationAnswer::Forwarded)
                .map_err(LeaderError::Forward),
        }
    }
}
