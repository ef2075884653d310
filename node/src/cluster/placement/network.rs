//! Node-to-node transport of the placement Raft group: openraft's
//! `RaftNetworkFactory` and `RaftNetwork` over the node's one
//! `PeerClient` (`cluster::peer`), with the cluster secret, over TLS when
//! the node runs with it.
//!
//! Wire format: JSON both ways. A request body is openraft's request type
//! (`AppendEntriesRequest`, `VoteRequest`, `InstallSnapshotRequest`); the
//! answer is the peer's `Result<response, RaftError>` as serde writes it
//! (`{"Ok": …}` or `{"Err": …}`). JSON rather than postcard because
//! openraft's types skip absent fields when serialized, which a
//! non-self-describing format cannot read back; placement traffic is a few
//! small messages a second, so the size does not matter.
//!
//! Errors are kept apart the way openraft wants them:
//! - the peer could not be reached (`PeerError::Unreachable`):
//!   `RPCError::Unreachable`, after which openraft backs off;
//! - the exchange failed otherwise (timeout, a non-200 status such as 401,
//!   an unreadable body): `RPCError::Network`, retried at the next tick;
//! - the peer's Raft answered with an error: `RPCError::RemoteError`, the
//!   protocol's own answer, passed on unchanged.

use super::{NodeId, PlacementNode, PlacementTypes, PlacementView, RaftConfig};
use crate::cluster::peer::{Peer, PeerClient, PeerError, RaftRoute};
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
use std::time::Duration;

/// Creates one `PeerConnection` per peer for openraft. Cheap to clone: all
/// connections share one HTTP client (and its connection pool).
#[derive(Debug, Clone)]
pub struct PlacementNetwork {
    peers: PeerClient,
    rpc_timeout: Duration,
    snapshot_timeout: Duration,
    /// The applied state, for the incarnation each request names
    /// (`with_view`); `None`: requests name none.
    view: Option<PlacementView>,
}

impl PlacementNetwork {
    /// The connect timeout is the `PeerClient`'s
    /// (`RaftConfig::rpc_connect_timeout_ms`, given when it was built).
    pub fn new(peers: PeerClient, config: &RaftConfig) -> PlacementNetwork {
        PlacementNetwork {
            peers,
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            snapshot_timeout: Duration::from_millis(config.install_snapshot_timeout_ms),
            view: None,
        }
    }

    /// Names, in each request, the incarnation `view` records for its
    /// target, so a process on another data directory under the target's
    /// id refuses it (`cluster::identity`).
    pub fn with_view(self, view: PlacementView) -> PlacementNetwork {
        PlacementNetwork {
            view: Some(view),
            ..self
        }
    }
}

impl openraft::RaftNetworkFactory<PlacementTypes> for PlacementNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PlacementNode) -> PeerConnection {
        PeerConnection {
            target,
            address: node.address.clone(),
            network: self.clone(),
        }
    }
}

/// openraft's connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    target: NodeId,
    address: String,
    network: PlacementNetwork,
}

impl PeerConnection {
    /// Sends `request` as `route` and reads the peer's `Result`.
    async fn call<Request, Response, E>(
        &self,
        route: RaftRoute,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, RPCError<NodeId, PlacementNode, RaftError<NodeId, E>>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let peer = Peer::member(self.target, self.address.clone());
        let incarnation = self
            .network
            .view
            .as_ref()
            .and_then(|view| view.current().incarnation(self.target).map(str::to_string));
        let answer = self
            .network
            .peers
            .raft(&peer, route, body, timeout, incarnation.as_deref())
            .await
            .map_err(|error| match error {
                error @ PeerError::Unreachable { .. } => {
                    RPCError::Unreachable(Unreachable::new(&error))
                }
                error => RPCError::Network(NetworkError::new(&error)),
            })?;
        let answer: Result<Response, RaftError<NodeId, E>> = serde_json::from_slice(&answer)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    fn deadline(&self, option: &RPCOption, configured: Duration) -> Duration {
        option.hard_ttl().min(configured)
    }
}

impl openraft::RaftNetwork<PlacementTypes> for PeerConnection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<PlacementTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PlacementNode, RaftError<NodeId>>>
    {
        let timeout = self.deadline(&option, self.network.rpc_timeout);
        self.call(RaftRoute::Append, &request, timeout).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<PlacementTypes>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PlacementNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let timeout = self.deadline(&option, self.network.snapshot_timeout);
        self.call(RaftRoute::Snapshot, &request, timeout).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PlacementNode, RaftError<NodeId>>> {
        let timeout = self.deadline(&option, self.network.rpc_timeout);
        self.call(RaftRoute::Vote, &request, timeout).await
    }
}
