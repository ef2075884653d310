//! `PeerClient`: the one HTTP client for node-to-node calls
//! (`docs/cluster.md`, "Peer calls").
//!
//! Every call from this node to another member goes through one
//! `PeerClient`, built once at start from the TLS settings
//! (`PeerTransport`) and handed to whoever needs it — placement's Raft
//! transport, the query coordinator, the shard mover, leader forwarding,
//! the console's member check, the join at start. Nothing is global, so
//! several nodes can run in one process (tests do).
//!
//! What every call shares:
//! - the cluster secret as a bearer token, the peer's scheme (`https` with
//!   the cluster's CA when the node runs with TLS), no proxy from the
//!   environment, no redirect followed (a `307 not_leader` is an answer);
//! - one timeout policy: opening a connection may take the connect timeout
//!   (`RaftConfig::rpc_connect_timeout_ms`), and the whole call — connect,
//!   send, answer — the budget of its route (`Route::budget`; Raft calls
//!   take openraft's deadline instead);
//! - one error type, `PeerError`, that names the route and the peer and
//!   keeps transport failures (`Unreachable`, `TimedOut`, `Transport`) apart
//!   from protocol answers (`NotLeader`, `SecretRefused`, `Refused`,
//!   `Malformed`).
//!
//! The internal routes' bodies are defined here too (`QueryShare`,
//! `MemberReport`, …): the server side in `http` and the client side here
//! agree on them by construction.

use crate::admin_token::ClusterSecret;
use crate::engine::journal;
use crate::engine::query::Partial;
use crate::tls::TlsError;
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A member's id in the cluster.
pub type NodeId = u64;

/// Paths of the internal routes (the server side is in `http`).
pub const QUERY_SHARE_PATH: &str = "/v1/internal/partial";
pub const MEMBER_REPORT_PATH: &str = "/v1/internal/console/node";
pub const PROPOSE_PATH: &str = "/v1/internal/propose";
pub const LEADER_PATH: &str = "/v1/internal/leader";
pub const SHARD_LOADS_PATH: &str = "/v1/internal/shards/loads";
pub const STORES_HANDOVER_PATH: &str = "/v1/internal/stores/handover";
pub const STORES_ABSORB_PATH: &str = "/v1/internal/stores/absorb";
pub const JOIN_PATH: &str = "/v1/cluster/join";
pub const CLUSTER_IDENTITY_PATH: &str = "/v1/internal/cluster/identity";
/// The header of a Raft request that names the incarnation placement
/// recorded for its target (`docs/cluster.md`, "Node identity"): a node
/// running on another data directory refuses the request.
pub const INCARNATION_HEADER: &str = "x-sessiondb-incarnation";
pub const RAFT_APPEND_PATH: &str = "/v1/internal/raft/append";
pub const RAFT_VOTE_PATH: &str = "/v1/internal/raft/vote";
pub const RAFT_SNAPSHOT_PATH: &str = "/v1/internal/raft/snapshot";

pub fn shard_export_path(shard: u32) -> String {
    format!("/v1/internal/shards/{shard}/export")
}
pub fn shard_import_path(shard: u32, epoch: u64) -> String {
    format!("/v1/internal/shards/{shard}/import?epoch={epoch}")
}
pub fn shard_drop_path(shard: u32, owner: NodeId, epoch: u64) -> String {
    format!("/v1/internal/shards/{shard}/drop?owner={owner}&epoch={epoch}")
}

/// How long the coordinator waits for one member's query share before it
/// counts the member as missing.
pub const QUERY_SHARE_WAIT_MS: u64 = 2_000;
/// How long the console waits for one member's report before it calls the
/// member unreachable. Short: the page polls every second.
pub const MEMBER_REPORT_WAIT_MS: u64 = 1_000;
/// How long a forwarded proposal may take to commit.
pub const PROPOSE_WAIT_MS: u64 = 10_000;
/// How long a forwarded operation may run on the leader: a rebalance or a
/// drain carries out up to `REBALANCE_MOVES_MAX` moves.
pub const LEADER_OPERATION_WAIT_MS: u64 = 600_000;
/// How long one export, import, handover or absorb may take: a shard's
/// state or a node's stores travel in one body.
pub const TRANSFER_WAIT_MS: u64 = 120_000;
/// How long a drop call may take.
pub const DROP_WAIT_MS: u64 = 30_000;
/// How long the leader waits for one member's shard loads.
pub const LOADS_WAIT_MS: u64 = 5_000;
/// How long one join request may take: the leader answers only once the
/// new node has caught up as a learner (and, maybe, became a voter).
pub const JOIN_WAIT_MS: u64 = 60_000;
/// A joining node's identity check: one read of the member's applied
/// placement state.
pub const CLUSTER_IDENTITY_WAIT_MS: u64 = 5_000;

/// The internal routes, for the timeout policy and for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    QueryShare,
    MemberReport,
    Propose,
    LeaderOperation,
    ShardExport,
    ShardImport,
    ShardDrop,
    ShardLoads,
    StoresHandover,
    StoresAbsorb,
    Join,
    ClusterIdentity,
    Raft(RaftRoute),
    /// A shard group's Raft request (`crate::cluster::replicas`).
    GroupRaft(RaftRoute),
}

/// The three Raft requests openraft sends (`cluster::placement::network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRoute {
    Append,
    Vote,
    Snapshot,
}

impl RaftRoute {
    fn path(self) -> &'static str {
        match self {
            RaftRoute::Append => RAFT_APPEND_PATH,
            RaftRoute::Vote => RAFT_VOTE_PATH,
            RaftRoute::Snapshot => RAFT_SNAPSHOT_PATH,
        }
    }

    /// The last part of the route's path: `append`, `vote`, `snapshot`.
    pub fn name(self) -> &'static str {
        match self {
            RaftRoute::Append => "append",
            RaftRoute::Vote => "vote",
            RaftRoute::Snapshot => "snapshot",
        }
    }
}

/// The path of `group`'s Raft request `route`.
pub fn group_raft_path(group: u32, route: RaftRoute) -> String {
    format!("/v1/internal/groups/{group}/raft/{}", route.name())
}

impl Route {
    /// The most one call of the route may take, connection included. Raft
    /// calls have none here: openraft gives each its deadline.
    pub fn budget(self) -> Option<Duration> {
        let milliseconds = match self {
            Route::QueryShare => QUERY_SHARE_WAIT_MS,
            Route::MemberReport => MEMBER_REPORT_WAIT_MS,
            Route::Propose => PROPOSE_WAIT_MS,
            Route::LeaderOperation => LEADER_OPERATION_WAIT_MS,
            Route::ShardExport | Route::ShardImport => TRANSFER_WAIT_MS,
            Route::StoresHandover | Route::StoresAbsorb => TRANSFER_WAIT_MS,
            Route::ShardDrop => DROP_WAIT_MS,
            Route::ShardLoads => LOADS_WAIT_MS,
            Route::Join => JOIN_WAIT_MS,
            Route::ClusterIdentity => CLUSTER_IDENTITY_WAIT_MS,
            Route::Raft(_) | Route::GroupRaft(_) => return None,
        };
        Some(Duration::from_millis(milliseconds))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Route::QueryShare => "query share",
            Route::MemberReport => "member report",
            Route::Propose => "forwarded proposal",
            Route::LeaderOperation => "forwarded operation",
            Route::ShardExport => "shard export",
            Route::ShardImport => "shard import",
            Route::ShardDrop => "shard drop",
            Route::ShardLoads => "shard loads",
            Route::StoresHandover => "stores handover",
            Route::StoresAbsorb => "stores absorb",
            Route::Join => "join",
            Route::ClusterIdentity => "cluster identity",
            Route::Raft(RaftRoute::Append) => "raft append",
            Route::Raft(RaftRoute::Vote) => "raft vote",
            Route::Raft(RaftRoute::Snapshot) => "raft snapshot",
            Route::GroupRaft(RaftRoute::Append) => "group raft append",
            Route::GroupRaft(RaftRoute::Vote) => "group raft vote",
            Route::GroupRaft(RaftRoute::Snapshot) => "group raft snapshot",
        };
        formatter.write_str(name)
    }
}

/// A member to call: its id when known, and its address (`host:port`, or
/// a base URL such as `--join`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: Option<NodeId>,
    pub address: String,
}

impl Peer {
    pub fn member(node: NodeId, address: impl Into<String>) -> Peer {
        Peer {
            node: Some(node),
            address: address.into(),
        }
    }

    /// A peer known by its address only (`--join`, a leader not named).
    pub fn at(address: impl Into<String>) -> Peer {
        Peer {
            node: None,
            address: address.into(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(formatter, "node {node} at {}", self.address),
            None => formatter.write_str(&self.address),
        }
    }
}

/// Why a call to a peer failed: the exchange itself (transport) or the
/// peer's answer (protocol).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be opened (refused, unreachable, or not within
    /// the connect timeout).
    #[error("{route} to {peer}: cannot connect: {source}")]
    Unreachable {
        route: Route,
        peer: Peer,
        source: reqwest::Error,
    },
    #[error("{route} to {peer}: no answer within {waited_ms} ms")]
    TimedOut {
        route: Route,
        peer: Peer,
        waited_ms: u64,
    },
    /// The connection broke while sending or reading.
    #[error("{route} to {peer}: the exchange failed: {source}")]
    Transport {
        route: Route,
        peer: Peer,
        source: reqwest::Error,
    },
    /// The peer is not the leader; it names the leader when it knows it.
    #[error("{route} to {peer}: the peer is not the leader (leader: {})", leader_address.as_deref().unwrap_or("unknown"))]
    NotLeader {
        route: Route,
        peer: Peer,
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    },
    /// `401`: the peer does not share this node's cluster secret; no retry
    /// can fix it.
    #[error("{peer} refused this node's cluster secret (check --cluster-secret)")]
    SecretRefused { route: Route, peer: Peer },
    /// Any other answer than the route's success, with the peer's error
    /// code (`None` when the body was not an `ErrorResponse`) and message.
    #[error(
        "{route} to {peer}: answered {status} {}: {message}",
        code.as_ref().map_or("", ErrorCode::as_str)
    )]
    Refused {
        route: Route,
        peer: Peer,
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    /// The answer could not be read as the route's body.
    #[error("{route} to {peer}: unreadable answer: {detail}")]
    Malformed {
        route: Route,
        peer: Peer,
        detail: String,
    },
}

impl PeerError {
    /// The peer the call went to.
    pub fn peer(&self) -> &Peer {
        match self {
            PeerError::Unreachable { peer, .. }
            | PeerError::TimedOut { peer, .. }
            | PeerError::Transport { peer, .. }
            | PeerError::NotLeader { peer, .. }
            | PeerError::SecretRefused { peer, .. }
            | PeerError::Refused { peer, .. }
            | PeerError::Malformed { peer, .. } => peer,
        }
    }

    /// Whether the exchange failed below the protocol (the peer may not
    /// have seen the request at all).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            PeerError::Unreachable { .. }
                | PeerError::TimedOut { .. }
                | PeerError::Transport { .. }
        )
    }
}

/// The client could not be built from the TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum PeerClientError {
    #[error("invalid --tls-ca")]
    Tls(#[from] TlsError),
    #[error("cannot build the HTTP client for peer calls: {0}")]
    Build(#[source] reqwest::Error),
}

/// How this node reaches the other members: every member of a cluster runs
/// with TLS or none does (`docs/operations.md`, "TLS").
#[derive(Debug, Clone)]
pub enum PeerTransport {
    Http,
    /// HTTPS, trusting only the cluster's CA.
    Https {
        ca: reqwest::Certificate,
    },
}

impl PeerTransport {
    /// HTTPS, trusting the CA certificate(s) in `ca_path`.
    pub fn https(ca_path: &Path) -> Result<PeerTransport, TlsError> {
        // Checked with rustls first for a clear error on an empty file.
        crate::tls::certificates("CA file", ca_path)?;
        let read_error = |detail: String| TlsError::Read {
            what: "CA file",
            path: ca_path.to_path_buf(),
            detail,
        };
        let pem = std::fs::read(ca_path).map_err(|error| read_error(error.to_string()))?;
        let ca =
            reqwest::Certificate::from_pem(&pem).map_err(|error| read_error(error.to_string()))?;
        Ok(PeerTransport::Https { ca })
    }

    fn scheme(&self) -> &'static str {
        match self {
            PeerTransport::Http => "http",
            PeerTransport::Https { .. } => "https",
        }
    }
}

/// A member's query share: the answer of `POST /v1/internal/partial`,
/// postcard-encoded with `journal::encode` (`cluster::coordinator`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryShare {
    /// The member's first bucket of the experiment, if it holds any of it.
    pub first_ms: Option<i64>,
    /// The member's share over the asked range; `None` when `from` was not
    /// given, the request is a time series, or the member holds nothing of
    /// the experiment.
    pub partial: Option<Partial>,
    /// The nodes whose aggregates the share counts: the member's own and
    /// those it absorbed from departed nodes (`engine::stores`); empty once
    /// it handed its stores over.
    pub stores: BTreeSet<NodeId>,
    /// For a time series request: one share per interval.
    pub series: Option<Vec<Partial>>,
}

/// One member's numbers, as `GET /v1/internal/console/node` answers them
/// (the console's member check, `docs/console.md`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberReport {
    pub status: wire::NodeStatus,
    /// Accepted events per project on that node since it started.
    pub project_events: Vec<ProjectEvents>,
    /// Accepted events of projects beyond the counters' bound.
    pub project_events_overflow: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProjectEvents {
    pub project: String,
    pub events: u64,
}

/// `GET /v1/internal/shards/loads`: events retained per shard (0 for shards
/// owned elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardLoads {
    pub loads: Vec<u64>,
}

/// `POST /v1/internal/stores/absorb`: the store ids the keeper now holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbsorbedStores {
    pub stores: BTreeSet<NodeId>,
}

/// The leader's answer to a forwarded operation, status and body as they
/// came, so the operator sees the leader's own answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One member's answer in `PeerClient::ask_every`.
#[derive(Debug)]
pub struct MemberAnswer<T> {
    pub node: NodeId,
    pub address: String,
    /// How long the member took to answer (or to fail).
    pub elapsed: Duration,
    pub answer: Result<T, PeerError>,
}

/// The body of a request, and how it is encoded.
enum Body<'a> {
    Empty,
    Json(&'a (dyn erased::Json + Sync)),
    Bytes(Vec<u8>),
}

/// Object-safe JSON serialization, so `Body` holds any serializable value.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

/// The one client for node-to-node calls. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    scheme: &'static str,
    secret: ClusterSecret,
}

impl PeerClient {
    /// Builds the client: trusts only the cluster's CA with TLS, never goes
    /// through a proxy from the environment (members talk directly), never
    /// follows a redirect.
    pub fn new(
        transport: PeerTransport,
        secret: ClusterSecret,
        connect_timeout: Duration,
    ) -> Result<PeerClient, PeerClientError> {
        let scheme = transport.scheme();
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        let builder = match transport {
            PeerTransport::Http => builder,
            PeerTransport::Https { ca } => builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .https_only(true),
        };
        let http = builder.build().map_err(PeerClientError::Build)?;
        Ok(PeerClient {
            inner: Arc::new(Inner {
                http,
                scheme,
                secret,
            }),
        })
    }

    /// `<scheme>://<address>` for a member at `host:port`; a base URL (with
    /// its scheme) is kept as it is, without a trailing slash.
    pub fn base_url(&self, address: &str) -> String {
        let address = address.trim_end_matches('/');
        if address.contains("://") {
            address.to_string()
        } else {
            format!("{}://{address}", self.inner.scheme)
        }
    }

    /// This member's share of a results or time-series query.
    pub async fn query_share(
        &self,
        peer: &Peer,
        request: &wire::PartialRequest,
    ) -> Result<QueryShare, PeerError> {
        let route = Route::QueryShare;
        let body = self
            .expect_ok(peer, route, QUERY_SHARE_PATH, Body::Json(request), None)
            .await?;
        decode_postcard(peer, route, &body, "a member's query share")
    }

    /// The member's status and per-project counters.
    pub async fn member_report(&self, peer: &Peer) -> Result<MemberReport, PeerError> {
        let route = Route::MemberReport;
        let body = self.get_ok(peer, route, MEMBER_REPORT_PATH).await?;
        decode_json(peer, route, &body)
    }

    /// Has the leader at `peer` propose a placement command; answers the
    /// state machine's response (postcard both ways).
    pub async fn propose<Command, Response>(
        &self,
        peer: &Peer,
        command: &Command,
    ) -> Result<Response, PeerError>
    where
        Command: serde::Serialize + serde::de::DeserializeOwned,
        Response: serde::de::DeserializeOwned,
    {
        let route = Route::Propose;
        let body = Body::Bytes(journal::encode(command));
        let answer = self
            .expect_ok(peer, route, PROPOSE_PATH, body, None)
            .await?;
        decode_postcard(peer, route, &answer, "placement response")
    }

    /// Hands an operator's cluster operation to the leader at `peer`;
    /// answers the leader's answer as it came, whatever its status.
    pub async fn leader_operation(
        &self,
        peer: &Peer,
        operation: &wire::LeaderOperation,
    ) -> Result<ForwardedAnswer, PeerError> {
        let route = Route::LeaderOperation;
        let (status, body) = self
            .exchange(peer, route, LEADER_PATH, Body::Json(operation), None)
            .await?;
        Ok(ForwardedAnswer {
            status: status.as_u16(),
            body,
        })
    }

    /// Fences `shard` on its owner and answers its state, encoded.
    pub async fn export_shard(&self, peer: &Peer, shard: u32) -> Result<Vec<u8>, PeerError> {
        let path = shard_export_path(shard);
        self.expect_ok(peer, Route::ShardExport, &path, Body::Empty, None)
            .await
    }

    /// Installs a shard's state on the move's target, owning it at `epoch`.
    pub async fn import_shard(
        &self,
        peer: &Peer,
        shard: u32,
        epoch: u64,
        state: Vec<u8>,
    ) -> Result<(), PeerError> {
        let path = shard_import_path(shard, epoch);
        self.expect_ok(peer, Route::ShardImport, &path, Body::Bytes(state), None)
            .await
            .map(|_| ())
    }

    /// Has the old owner forget `shard`, now owned by `owner` at `epoch`.
    pub async fn drop_shard(
        &self,
        peer: &Peer,
        shard: u32,
        owner: NodeId,
        epoch: u64,
    ) -> Result<(), PeerError> {
        let path = shard_drop_path(shard, owner, epoch);
        self.expect_ok(peer, Route::ShardDrop, &path, Body::Empty, None)
            .await
            .map(|_| ())
    }

    /// Events retained per shard on `peer`.
    pub async fn shard_loads(&self, peer: &Peer) -> Result<Vec<u64>, PeerError> {
        let route = Route::ShardLoads;
        let body = self.get_ok(peer, route, SHARD_LOADS_PATH).await?;
        decode_json::<ShardLoads>(peer, route, &body).map(|loads| loads.loads)
    }

    /// Step 1 of a removal: the leaving node's stores, encoded.
    pub async fn hand_over_stores(&self, peer: &Peer) -> Result<Vec<u8>, PeerError> {
        let path = STORES_HANDOVER_PATH;
        self.expect_ok(peer, Route::StoresHandover, path, Body::Empty, None)
            .await
    }

    /// Step 2: the keeper absorbs them; answers the store ids it now holds.
    pub async fn absorb_stores(
        &self,
        peer: &Peer,
        stores: Vec<u8>,
    ) -> Result<BTreeSet<NodeId>, PeerError> {
        let route = Route::StoresAbsorb;
        let body = self
            .expect_ok(peer, route, STORES_ABSORB_PATH, Body::Bytes(stores), None)
            .await?;
        decode_json::<AbsorbedStores>(peer, route, &body).map(|absorbed| absorbed.stores)
    }

    /// Asks `peer` to admit this node (`docs/cluster.md`, "Joining").
    pub async fn join(
        &self,
        peer: &Peer,
        request: &wire::JoinRequest,
    ) -> Result<wire::JoinResponse, PeerError> {
        let route = Route::Join;
        let body = self
            .expect_ok(peer, route, JOIN_PATH, Body::Json(request), None)
            .await?;
        decode_json(peer, route, &body)
    }

    /// What the member at `peer` knows of the cluster and of node
    /// `node_id` (`GET /v1/internal/cluster/identity`), asked by a node
    /// before it joins.
    pub async fn cluster_identity(
        &self,
        peer: &Peer,
        node_id: NodeId,
    ) -> Result<wire::ClusterIdentity, PeerError> {
        let route = Route::ClusterIdentity;
        let path = format!("{CLUSTER_IDENTITY_PATH}?node_id={node_id}");
        let body = self.get_ok(peer, route, &path).await?;
        decode_json(peer, route, &body)
    }

    /// One Raft request (JSON, openraft's types) within `deadline`;
    /// answers the peer's body (its Raft's `Result`). `incarnation`: the
    /// one placement recorded for the peer, sent so that a process on
    /// another data directory under its id refuses the request.
    pub async fn raft(
        &self,
        peer: &Peer,
        route: RaftRoute,
        request: Vec<u8>,
        deadline: Duration,
        incarnation: Option<&str>,
    ) -> Result<Vec<u8>, PeerError> {
        let url = format!("{}{}", self.base_url(&peer.address), route.path());
        let mut http = self
            .inner
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(request);
        if let Some(incarnation) = incarnation {
            http = http.header(INCARNATION_HEADER, incarnation);
        }
        let (status, body) = self
            .send(peer, Route::Raft(route), http, Some(deadline))
            .await?;
        check_ok(peer, Route::Raft(route), status, body)
    }

    /// A shard group's Raft request to the peer's replica of `group`
    /// (`crate::cluster::replicas`), within openraft's `deadline`.
    pub async fn group_raft(
        &self,
        peer: &Peer,
        group: u32,
        route: RaftRoute,
        request: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let body = Body::Bytes(request);
        let path = group_raft_path(group, route);
        self.expect_ok(peer, Route::GroupRaft(route), &path, body, Some(deadline))
            .await
    }

    /// Asks every member in `members` at once with `ask` and answers in
    /// the same order, each answer timed. Each call keeps its route's
    /// budget, so the whole takes about the slowest member's time.
    pub async fn ask_every<T, F, Fut>(
        &self,
        members: &[(NodeId, String)],
        ask: F,
    ) -> Vec<MemberAnswer<T>>
    where
        F: Fn(PeerClient, Peer) -> Fut,
        Fut: Future<Output = Result<T, PeerError>>,
    {
        let calls = members.iter().map(|(node, address)| {
            let call = ask(self.clone(), Peer::member(*node, address.clone()));
            async move {
                let started = Instant::now();
                let answer = call.await;
                MemberAnswer {
                    node: *node,
                    address: address.clone(),
                    elapsed: started.elapsed(),
                    answer,
                }
            }
        });
        futures::future::join_all(calls).await
    }

    /// Asks `candidates` (replicas able to give the same answer, best
    /// first) for one answer, hedging: the first at once, the next as soon
    /// as the previous one failed or has not answered within `hedge_delay`
    /// (a paused or overloaded member then costs that delay, not the
    /// route's whole budget). The first success wins and the calls still
    /// out are dropped; when every candidate fails, their answers in the
    /// order asked.
    pub async fn ask_hedged<T, F, Fut>(
        &self,
        candidates: &[(NodeId, String)],
        hedge_delay: Duration,
        ask: F,
    ) -> Result<MemberAnswer<T>, Vec<MemberAnswer<T>>>
    where
        F: Fn(PeerClient, Peer) -> Fut,
        Fut: Future<Output = Result<T, PeerError>>,
    {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut out = FuturesUnordered::new();
        let mut failed: Vec<(usize, MemberAnswer<T>)> = Vec::new();
        let mut asked = 0;
        loop {
            if out.is_empty() && asked == candidates.len() {
                failed.sort_by_key(|(order, _)| *order);
                return Err(failed.into_iter().map(|(_, answer)| answer).collect());
            }
            if out.is_empty() {
                out.push(self.timed_ask(asked, &candidates[asked], &ask));
                asked += 1;
            }
            let hedge = tokio::time::sleep(hedge_delay);
            tokio::select! {
                Some((order, answer)) = out.next() => {
                    if answer.answer.is_ok() {
                        return Ok(answer);
                    }
                    failed.push((order, answer));
                    if asked < candidates.len() {
                        out.push(self.timed_ask(asked, &candidates[asked], &ask));
                        asked += 1;
                    }
                }
                () = hedge, if asked < candidates.len() => {
                    out.push(self.timed_ask(asked, &candidates[asked], &ask));
                    asked += 1;
                }
            }
        }
    }

    fn timed_ask<T, F, Fut>(
        &self,
        order: usize,
        (node, address): &(NodeId, String),
        ask: &F,
    ) -> impl Future<Output = (usize, MemberAnswer<T>)>
    where
        F: Fn(PeerClient, Peer) -> Fut,
        Fut: Future<Output = Result<T, PeerError>>,
    {
        let call = ask(self.clone(), Peer::member(*node, address.clone()));
        let (node, address) = (*node, address.clone());
        async move {
            let started = Instant::now();
            let answer = call.await;
            let answer = MemberAnswer {
                node,
                address,
                elapsed: started.elapsed(),
                answer,
            };
            (order, answer)
        }
    }

    /// `GET path`; the body of a `200`.
    async fn get_ok(&self, peer: &Peer, route: Route, path: &str) -> Result<Vec<u8>, PeerError> {
        let url = format!("{}{path}", self.base_url(&peer.address));
        let request = self.inner.http.get(&url);
        let (status, body) = self.send(peer, route, request, None).await?;
        check_ok(peer, route, status, body)
    }

    /// `POST path`; the body of a `200`, any other answer is an error.
    async fn expect_ok(
        &self,
        peer: &Peer,
        route: Route,
        path: &str,
        body: Body<'_>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, PeerError> {
        let (status, body) = self.exchange(peer, route, path, body, deadline).await?;
        check_ok(peer, route, status, body)
    }

    /// `POST path` with `body`; the status and body, whatever they are.
    async fn exchange(
        &self,
        peer: &Peer,
        route: Route,
        path: &str,
        body: Body<'_>,
        deadline: Option<Duration>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), PeerError> {
        let url = format!("{}{path}", self.base_url(&peer.address));
        let request = self.inner.http.post(&url);
        let request = match body {
            Body::Empty => request,
            Body::Json(value) => {
                let json = value.to_json().map_err(|error| PeerError::Malformed {
                    route,
                    peer: peer.clone(),
                    detail: format!("cannot encode the request: {error}"),
                })?;
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json)
            }
            Body::Bytes(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        };
        self.send(peer, route, request, deadline).await
    }

    /// Sends with the cluster secret within the route's budget (or
    /// `deadline`), and reads the whole answer.
    async fn send(
        &self,
        peer: &Peer,
        route: Route,
        request: reqwest::RequestBuilder,
        deadline: Option<Duration>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), PeerError> {
        let budget = deadline
            .or(route.budget())
            .expect("every route has a budget or is given a deadline");
        let request = request.bearer_auth(self.inner.secret.expose());
        let call = async {
            let response = request.send().await.map_err(|source| {
                if source.is_connect() {
                    PeerError::Unreachable {
                        route,
                        peer: peer.clone(),
                        source,
                    }
                } else {
                    PeerError::Transport {
                        route,
                        peer: peer.clone(),
                        source,
                    }
                }
            })?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|source| PeerError::Transport {
                    route,
                    peer: peer.clone(),
                    source,
                })?;
            Ok((status, body.to_vec()))
        };
        tokio::time::timeout(budget, call)
            .await
            .map_err(|_| PeerError::TimedOut {
                route,
                peer: peer.clone(),
                waited_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            })?
    }
}

/// The body of a `200`; a `307` is `NotLeader`, a `401` `SecretRefused`,
/// anything else `Refused` with the peer's error code and message.
fn check_ok(
    peer: &Peer,
    route: Route,
    status: reqwest::StatusCode,
    body: Vec<u8>,
) -> Result<Vec<u8>, PeerError> {
    let peer = peer.clone();
    match status {
        reqwest::StatusCode::OK => Ok(body),
        reqwest::StatusCode::UNAUTHORIZED => Err(PeerError::SecretRefused { route, peer }),
        reqwest::StatusCode::TEMPORARY_REDIRECT => {
            let named = serde_json::from_slice::<wire::NotLeader>(&body).ok();
            Err(PeerError::NotLeader {
                route,
                peer,
                leader_id: named.as_ref().and_then(|named| named.leader_id),
                leader_address: named.and_then(|named| named.leader_address),
            })
        }
        status => {
            let (code, message) = match serde_json::from_slice::<wire::ErrorResponse>(&body) {
                Ok(error) => (Some(error.error), error.message),
                Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
            };
            Err(PeerError::Refused {
                route,
                peer,
                status: status.as_u16(),
                code,
                message,
            })
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(
    peer: &Peer,
    route: Route,
    body: &[u8],
) -> Result<T, PeerError> {
    serde_json::from_slice(body).map_err(|error| PeerError::Malformed {
        route,
        peer: peer.clone(),
        detail: error.to_string(),
    })
}

fn decode_postcard<T: serde::de::DeserializeOwned>(
    peer: &Peer,
    route: Route,
    body: &[u8],
    what: &'static str,
) -> Result<T, PeerError> {
    journal::decode(body, what).map_err(|error| PeerError::Malformed {
        route,
        peer: peer.clone(),
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(transport: PeerTransport) -> PeerClient {
        let secret = ClusterSecret::generate();
        PeerClient::new(transport, secret, Duration::from_millis(100)).expect("client builds")
    }

    #[test]
    fn urls_follow_the_transport_and_keep_given_schemes() {
        let plain = client(PeerTransport::Http);
        assert_eq!(plain.base_url("10.0.0.1:7070"), "http://10.0.0.1:7070");
        assert_eq!(
            plain.base_url("https://node-1:7070/"),
            "https://node-1:7070"
        );
    }

    #[test]
    fn every_route_but_raft_has_a_budget() {
        for route in [
            Route::QueryShare,
            Route::MemberReport,
            Route::Propose,
            Route::LeaderOperation,
            Route::ShardExport,
            Route::ShardImport,
            Route::ShardDrop,
            Route::ShardLoads,
            Route::StoresHandover,
            Route::StoresAbsorb,
            Route::Join,
            Route::ClusterIdentity,
        ] {
            assert!(
                route.budget().is_some_and(|budget| budget > Duration::ZERO),
                "{route}"
            );
        }
        assert_eq!(Route::Raft(RaftRoute::Vote).budget(), None);
    }

    #[test]
    fn answers_map_to_protocol_errors() {
        let peer = Peer::member(2, "127.0.0.1:1");
        let not_leader = serde_json::to_vec(&wire::NotLeader {
            error: ErrorCode::NotLeader,
            message: "ask the leader".into(),
            leader_id: Some(3),
            leader_address: Some("127.0.0.1:3".into()),
        })
        .unwrap();
        let error = check_ok(
            &peer,
            Route::Join,
            reqwest::StatusCode::TEMPORARY_REDIRECT,
            not_leader,
        )
        .unwrap_err();
        assert!(
            matches!(&error, PeerError::NotLeader { leader_id: Some(3), leader_address: Some(address), .. } if address == "127.0.0.1:3"),
            "{error}"
        );
        assert!(!error.is_transport());
        let refused = serde_json::to_vec(&wire::ErrorResponse {
            error: "unknown_shard".into(),
            message: "no such shard".into(),
        })
        .unwrap();
        let error = check_ok(
            &peer,
            Route::ShardExport,
            reqwest::StatusCode::NOT_FOUND,
            refused,
        )
        .unwrap_err();
        assert!(
            matches!(
                &error,
                PeerError::Refused {
                    status: 404,
                    code: Some(ErrorCode::UnknownShard),
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "shard export to node 2 at 127.0.0.1:1: answered 404 unknown_shard: no such shard"
        );
        let error = check_ok(
            &peer,
            Route::Join,
            reqwest::StatusCode::UNAUTHORIZED,
            Vec::new(),
        )
        .unwrap_err();
        assert!(error
            .to_string()
            .contains("refused this node's cluster secret"));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_protocol_error() {
        // Bind then drop: the port is very likely closed right after.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let peers = client(PeerTransport::Http);
        let peer = Peer::member(7, address.to_string());
        let error = peers.shard_loads(&peer).await.unwrap_err();
        assert!(error.is_transport(), "{error}");
        assert_eq!(error.peer(), &peer);
        let answers = peers
            .ask_every(&[(7, address.to_string())], |peers, peer| async move {
                peers.shard_loads(&peer).await
            })
            .await;
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].node, 7);
        assert!(answers[0].answer.is_err());
    }

    fn failure(node: NodeId) -> PeerError {
        PeerError::Malformed {
            route: Route::QueryShare,
            peer: Peer::member(node, format!("127.0.0.1:{node}")),
            detail: "a garbled answer".into(),
        }
    }

    fn members(nodes: &[NodeId]) -> Vec<(NodeId, String)> {
        nodes
            .iter()
            .map(|node| (*node, format!("127.0.0.1:{node}")))
            .collect()
    }

    /// A paused member (its call never ends) costs the hedge delay: the
    /// next replica is asked and its answer wins.
    #[tokio::test]
    async fn a_paused_replica_is_hedged_past() {
        let peers = client(PeerTransport::Http);
        let answer = peers
            .ask_hedged(
                &members(&[1, 2]),
                Duration::from_millis(200),
                |_, peer| async move {
                    if peer.node == Some(1) {
                        std::future::pending::<()>().await;
                    }
                    Ok(peer.node)
                },
            )
            .await
            .expect("the second replica answers");
        assert_eq!(answer.node, 2);
        assert_eq!(answer.answer.unwrap(), Some(2));
    }

    /// A failed member hands over at once, without waiting for the delay
    /// (an hour here).
    #[tokio::test]
    async fn a_failed_replica_hands_over_at_once_and_all_failing_are_listed() {
        let peers = client(PeerTransport::Http);
        let candidates = members(&[1, 2]);
        let hedged = peers.ask_hedged(
            &candidates,
            Duration::from_secs(3_600),
            |_, peer| async move {
                match peer.node {
                    Some(1) => Err(failure(1)),
                    node => Ok(node),
                }
            },
        );
        // The failure point of a wait for the hour: far below it.
        let answer = tokio::time::timeout(Duration::from_secs(60), hedged)
            .await
            .expect("handed over without waiting for the delay")
            .expect("the second replica answers");
        assert_eq!(answer.node, 2);

        let failures = peers
            .ask_hedged(
                &members(&[3, 1, 2]),
                Duration::from_millis(10),
                |_, peer| async move {
                    let node = peer.node.unwrap();
                    Err::<(), _>(failure(node))
                },
            )
            .await
            .expect_err("nobody answers");
        let asked: Vec<NodeId> = failures.iter().map(|failure| failure.node).collect();
        assert_eq!(asked, [3, 1, 2], "every candidate, in the order asked");
    }

    /// The first candidate that answers wins even when an earlier one is
    /// still out.
    #[tokio::test]
    async fn the_first_answer_wins() {
        let peers = client(PeerTransport::Http);
        let answer = peers
            .ask_hedged(
                &members(&[1, 2, 3]),
                Duration::from_millis(100),
                |_, peer| async move {
                    let node = peer.node.unwrap();
                    // Node 1 answers late, node 2 never, node 3 at once.
                    match node {
                        1 => tokio::time::sleep(Duration::from_secs(10)).await,
                        2 => std::future::pending::<()>().await,
                        _ => {}
                    }
                    Ok(node)
                },
            )
            .await
            .expect("an answer");
        assert_eq!(answer.node, 3);
    }
}
