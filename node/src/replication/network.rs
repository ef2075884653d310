//! The shard groups' Raft transport: openraft's `RaftNetworkFactory` and
//! `RaftNetwork` over a [`GroupTransport`], which moves bytes to a replica
//! and back. The node's transport (a later step) is the peer HTTP client,
//! one route per [`GroupRpc`] carrying the group id; tests use an
//! in-process one. Nothing here is process-global.
//!
//! Wire format, as placement's: JSON both ways. A request body is
//! openraft's request type; the answer is the peer's `Result<response,
//! RaftError>` as serde writes it. [`serve`] is the receiving side: it
//! decodes a request, hands it to the group's Raft and encodes the answer,
//! so no openraft type has to cross into the HTTP layer.
//!
//! Errors are kept apart the way openraft wants them: an unreachable
//! replica is `RPCError::Unreachable` (openraft backs off), any other
//! failed exchange `RPCError::Network` (retried at the next tick), and the
//! peer Raft's own error `RPCError::RemoteError`, passed on unchanged.

use super::group::{GroupConfig, GroupRaft, ReplicaId, ReplicaNode, ReplicaTypes};
use super::GroupId;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// The three Raft exchanges between replicas of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum GroupRpc {
    Append,
    Vote,
    Snapshot,
}

/// Why an exchange with a replica failed before its Raft answered.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing reached the replica (connection refused, no route): openraft
    /// backs off before trying again.
    #[error("replica {target} is unreachable: {reason}")]
    Unreachable { target: ReplicaId, reason: String },
    /// The exchange started but failed (timeout, refused, unreadable).
    #[error("the exchange with replica {target} failed: {reason}")]
    Failed { target: ReplicaId, reason: String },
}

/// Moves one request's bytes to `target`'s replica of `group` and its
/// answer back. Implementations are cheap to clone (one per connection).
pub trait GroupTransport: Clone + Send + Sync + 'static {
    fn call(
        &self,
        target: ReplicaId,
        node: &ReplicaNode,
        group: GroupId,
        rpc: GroupRpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Why a received request could not be served.
#[derive(Debug, thiserror::Error)]
#[error("group Raft request body or answer: {0}")]
pub struct GroupRpcError(#[from] serde_json::Error);

/// The receiving side: decodes `body` as `rpc`'s request, asks `raft`, and
/// encodes its `Result` for the sender's [`GroupConnection`].
pub async fn serve(raft: &GroupRaft, rpc: GroupRpc, body: &[u8]) -> Result<Vec<u8>, GroupRpcError> {
    let answer = match rpc {
        GroupRpc::Append => {
            let request: AppendEntriesRequest<ReplicaTypes> = serde_json::from_slice(body)?;
            serde_json::to_vec(&raft.append_entries(request).await)?
        }
        GroupRpc::Vote => {
            let request: VoteRequest<ReplicaId> = serde_json::from_slice(body)?;
            serde_json::to_vec(&raft.vote(request).await)?
        }
        GroupRpc::Snapshot => {
            let request: InstallSnapshotRequest<ReplicaTypes> = serde_json::from_slice(body)?;
            serde_json::to_vec(&raft.install_snapshot(request).await)?
        }
    };
    Ok(answer)
}

/// Creates one [`GroupConnection`] per peer of one group.
#[derive(Debug, Clone)]
pub struct GroupNetwork<T: GroupTransport> {
    transport: T,
    group: GroupId,
    rpc_timeout: Duration,
    snapshot_timeout: Duration,
}

impl<T: GroupTransport> GroupNetwork<T> {
    pub fn new(transport: T, group: GroupId, config: &GroupConfig) -> GroupNetwork<T> {
        GroupNetwork {
            transport,
            group,
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            snapshot_timeout: Duration::from_millis(config.install_snapshot_timeout_ms),
        }
    }
}

impl<T: GroupTransport> openraft::RaftNetworkFactory<ReplicaTypes> for GroupNetwork<T> {
    type Network = GroupConnection<T>;

    async fn new_client(&mut self, target: ReplicaId, node: &ReplicaNode) -> GroupConnection<T> {
        GroupConnection {
            target,
            node: node.clone(),
            network: self.clone(),
        }
    }
}

/// openraft's connection to one replica of the group.
#[derive(Debug)]
pub struct GroupConnection<T: GroupTransport> {
    target: ReplicaId,
    node: ReplicaNode,
    network: GroupNetwork<T>,
}

type RpcResult<Response, E = openraft::error::Infallible> =
    Result<Response, RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId, E>>>;

impl<T: GroupTransport> GroupConnection<T> {
    async fn call<Request, Response, E>(
        &self,
        rpc: GroupRpc,
        request: &Request,
        timeout: Duration,
    ) -> RpcResult<Response, E>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let exchange = self.network.transport.call(
            self.target,
            &self.node,
            self.network.group,
            rpc,
            body,
            timeout,
        );
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error @ TransportError::Unreachable { .. })) => {
                return Err(RPCError::Unreachable(Unreachable::new(&error)));
            }
            Ok(Err(error)) => return Err(RPCError::Network(NetworkError::new(&error))),
            Err(elapsed) => return Err(RPCError::Network(NetworkError::new(&elapsed))),
        };
        let answer: Result<Response, RaftError<ReplicaId, E>> = serde_json::from_slice(&answer)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    fn deadline(option: &RPCOption, configured: Duration) -> Duration {
        option.hard_ttl().min(configured)
    }
}

impl<T: GroupTransport> openraft::RaftNetwork<ReplicaTypes> for GroupConnection<T> {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<ReplicaTypes>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<ReplicaId>> {
        let timeout = Self::deadline(&option, self.network.rpc_timeout);
        self.call(GroupRpc::Append, &request, timeout).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<ReplicaTypes>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<ReplicaId>, InstallSnapshotError> {
        let timeout = Self::deadline(&option, self.network.snapshot_timeout);
        self.call(GroupRpc::Snapshot, &request, timeout).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<ReplicaId>> {
        let timeout = Self::deadline(&option, self.network.rpc_timeout);
        self.call(GroupRpc::Vote, &request, timeout).await
    }
}
