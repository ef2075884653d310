//! Node-to-node transport of the placement Raft group: openraft's
//! `RaftNetworkFactory` and `RaftNetwork` over plain HTTP (TLS: issue 9),
//! and the joining node's side of `POST /v1/cluster/join`.
//!
//! Every request carries `Authorization: Bearer <cluster secret>`; the peer
//! answers 401 without it (`http::auth::require_cluster_secret`).
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
//! - the peer could not be reached (connect failure, refused connection):
//!   `RPCError::Unreachable`, after which openraft backs off;
//! - the exchange failed otherwise (timeout, a non-200 status such as 401,
//!   an unreadable body): `RPCError::Network`, retried at the next tick;
//! - the peer's Raft answered with an error: `RPCError::RemoteError`, the
//!   protocol's own answer, passed on unchanged.

use super::{NodeId, PlacementNode, PlacementTypes, RaftConfig};
use crate::admin_token::ClusterSecret;
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
use sessiondb_protocol as wire;
use std::time::Duration;

/// Paths of the Raft endpoints a peer serves (`http::cluster`).
pub const RAFT_APPEND_PATH: &str = "/v1/internal/raft/append";
pub const RAFT_VOTE_PATH: &str = "/v1/internal/raft/vote";
pub const RAFT_SNAPSHOT_PATH: &str = "/v1/internal/raft/snapshot";
/// Path of the join endpoint.
pub const JOIN_PATH: &str = "/v1/cluster/join";

/// How long one join request may take: the leader answers only once the
/// new node has caught up as a learner (and, maybe, became a voter).
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an exchange with a peer failed below the Raft protocol.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("{address}: {source}")]
    Http {
        address: String,
        source: reqwest::Error,
    },
    #[error("{address} answered {status}: {body}")]
    Status {
        address: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{address} sent an unreadable answer: {source}")]
    Decode {
        address: String,
        source: serde_json::Error,
    },
}

/// Creates one `PeerConnection` per peer for openraft. Cheap to clone: all
/// connections share one HTTP client (and its connection pool).
#[derive(Debug, Clone)]
pub struct PlacementNetwork {
    http: reqwest::Client,
    secret: ClusterSecret,
    rpc_timeout: Duration,
    snapshot_timeout: Duration,
}

impl PlacementNetwork {
    pub fn new(secret: ClusterSecret, config: &RaftConfig) -> Result<PlacementNetwork, String> {
        // Peers talk directly, never through a proxy from the environment
        // (`peer_client_builder`), over TLS when the node runs with it.
        let http = crate::tls::peer_client_builder()
            .connect_timeout(Duration::from_millis(config.rpc_connect_timeout_ms))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(PlacementNetwork {
            http,
            secret,
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            snapshot_timeout: Duration::from_millis(config.install_snapshot_timeout_ms),
        })
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
    /// POSTs `request` to `path` and reads the peer's `Result`.
    async fn call<Request, Response, E>(
        &self,
        path: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, RPCError<NodeId, PlacementNode, RaftError<NodeId, E>>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let address = &self.address;
        let sent = self
            .network
            .http
            .post(format!("{}{path}", crate::tls::peer_url(address)))
            .bearer_auth(self.network.secret.expose())
            .timeout(timeout)
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(source) => {
                let unreachable = source.is_connect();
                let error = TransportError::Http {
                    address: address.clone(),
                    source,
                };
                return Err(if unreachable {
                    RPCError::Unreachable(Unreachable::new(&error))
                } else {
                    RPCError::Network(NetworkError::new(&error))
                });
            }
        };
        let status = response.status();
        let body = response.bytes().await.map_err(|source| {
            RPCError::Network(NetworkError::new(&TransportError::Http {
                address: address.clone(),
                source,
            }))
        })?;
        if status != reqwest::StatusCode::OK {
            let error = TransportError::Status {
                address: address.clone(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let answer: Result<Response, RaftError<NodeId, E>> = serde_json::from_slice(&body)
            .map_err(|source| {
                RPCError::Network(NetworkError::new(&TransportError::Decode {
                    address: address.clone(),
                    source,
                }))
            })?;
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
        self.call(RAFT_APPEND_PATH, &request, timeout).await
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
        self.call(RAFT_SNAPSHOT_PATH, &request, timeout).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PlacementNode, RaftError<NodeId>>> {
        let timeout = self.deadline(&option, self.network.rpc_timeout);
        self.call(RAFT_VOTE_PATH, &request, timeout).await
    }
}

/// Why one join attempt did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JoinAttemptError {
    /// The node refused the cluster secret (401): retrying cannot help.
    #[error("{url} refused this node's cluster secret (check --cluster-secret)")]
    SecretRefused { url: String },
    /// The node is not the leader; ask the one it names.
    #[error("{url} is not the leader (leader: {leader_address:?})")]
    NotLeader {
        url: String,
        leader_address: Option<String>,
    },
    /// Anything else (unreachable, no leader yet, a timeout): worth a retry.
    #[error("{url}: {detail}")]
    Failed { url: String, detail: String },
}

/// One `POST <base_url>/v1/cluster/join`. The joining node calls it until it
/// succeeds, following `NotLeader` to the leader.
pub async fn request_join(
    http: &reqwest::Client,
    base_url: &str,
    secret: &ClusterSecret,
    request: &wire::JoinRequest,
) -> Result<wire::JoinResponse, JoinAttemptError> {
    let url = format!("{}{JOIN_PATH}", base_url.trim_end_matches('/'));
    let failed = |detail: String| JoinAttemptError::Failed {
        url: url.clone(),
        detail,
    };
    let response = http
        .post(&url)
        .bearer_auth(secret.expose())
        .timeout(JOIN_REQUEST_TIMEOUT)
        .json(request)
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| failed(error.to_string()))?;
    match status {
        reqwest::StatusCode::OK => {
            serde_json::from_slice(&body).map_err(|error| failed(error.to_string()))
        }
        reqwest::StatusCode::UNAUTHORIZED => Err(JoinAttemptError::SecretRefused { url }),
        reqwest::StatusCode::TEMPORARY_REDIRECT => {
            let not_leader: wire::NotLeader =
                serde_json::from_slice(&body).map_err(|error| failed(error.to_string()))?;
            Err(JoinAttemptError::NotLeader {
                url,
                leader_address: not_leader.leader_address,
            })
        }
        other => Err(failed(format!(
            "answered {other}: {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}
