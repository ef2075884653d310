//! Rust client library for SessionDB.
//!
//! [`Client`] speaks the node's JSON HTTP API (`docs/api.md`) over plain
//! HTTP. Every request and answer body is a wire type from
//! [`sessiondb_protocol`], re-exported here as [`protocol`], so the client and
//! the node cannot disagree about field names.
//!
//! The quick start (`examples/quick_start.rs`, run by the crate's tests
//! against a real node): create a project, stream events with a [`Sender`]
//! under the project's ingest key, read the results with the admin token.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/quick_start.rs"), "```")]
//!
//! Every request carries the client's one credential
//! ([`Client::with_token`]) as `Authorization: Bearer <token>`: the admin
//! token, or a project's ingest key, which may only send events to that
//! project. Cluster calls use it too, and so do routers: they build their
//! per-node clients from a client ([`Client::for_node`]), so the
//! credential, timeout and TLS settings are set once.
//!
//! Errors keep three failures apart (see [`ClientError`]): the request never
//! got an answer (`Transport`), the node answered with an API error (`Api`,
//! carrying its stable code), or the answer could not be decoded (`Decode`).
//!
//! # Sending many events
//!
//! [`Client::send`] sends one batch and waits for its answer. For a stream
//! of events use a [`Sender`] (`client.sender(SenderConfig::default())`):
//! it batches by size and time, bounds what it holds with the backpressure
//! you choose, retries with backoff (keeping event ids, so the node counts
//! a retried event once), and [`Sender::flush`] reports the outcome of every
//! event. It encodes batches in the compact binary format
//! ([`protocol::binary`]) unless told otherwise ([`Encoding`]), and asks a
//! [`Router`] where each batch goes. See `docs/client.md` for a guide.
//!
//! The crate also holds the `sessiondb-ctl` ops CLI (module `cli`, behind the
//! default `cli` feature; `docs/cli.md`).

#![deny(missing_docs)]

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

// The `sessiondb-ctl` binary's commands: public for the binary, not a
// library API, so its items are documented for its readers (`docs/cli.md`)
// rather than held to `missing_docs`.
#[cfg(feature = "cli")]
#[allow(missing_docs)]
pub mod cli;
pub mod router;
pub mod sender;
pub mod shard_map;

pub use router::{Feedback, Partition, RoundRobin, Router, SingleNode};
pub use sender::{
    Backpressure, Compression, Encoding, FailedEvent, FlushReport, RejectedEvent, Sender,
    SenderConfig, SenderStats,
};
pub use sessiondb_protocol as protocol;
pub use shard_map::{CachedAssignment, RouterStats, ShardMapRouter};

/// Compiles the examples of `docs/client.md` as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/client.md")]
pub struct ClientGuide;

use protocol::{
    ClusterStatus, CreateProject, DrainReport, ErrorCode, ErrorResponse, Event, ExperimentWeights,
    IngestResponse, MoveShardRequest, NodeRemoveReport, NodeStatus, Project, ProjectList,
    ProjectSettingsPatch, RebalanceReport, ResultsResponse, RotateKeyRequest, RotatedKey,
    SetExperimentWeights, ShardMap, ShardMoveReport, TimeSeriesResponse, UndrainReport,
};
use std::collections::BTreeMap;

/// How long one request may take, connect to last byte, unless changed with
/// [`Client::with_timeout`].
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The least time [`Client::move_shard`] waits: a move transfers the
/// shard's whole state between two nodes.
pub const SHARD_MOVE_TIMEOUT: Duration = Duration::from_secs(300);
/// The least time [`Client::rebalance`] waits: it runs its moves one by one.
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(3600);

/// At most this many bytes of an unrecognized error body are kept in
/// [`ClientError::UnexpectedErrorBody`].
pub const ERROR_BODY_SNIPPET_BYTES_MAX: usize = 512;

/// Everything that can go wrong in a [`Client`] call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No (complete) answer arrived: connection refused or reset, timeout.
    /// The node may or may not have applied the request. The message says
    /// the cause (e.g. `connection refused`); `source` has the whole chain.
    #[error("request to {url} failed: {cause}")]
    Transport {
        /// The URL asked.
        url: String,
        /// The cause in a few words, from the innermost error.
        cause: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The node's URL cannot be used, e.g. `127.0.0.1:7070` without
    /// `http://`. Nothing was sent.
    #[error("invalid node URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node answered with a 4xx/5xx status and its error body. `code`
    /// is the stable code from `docs/api.md` (e.g.
    /// [`ErrorCode::UnknownProject`], [`ErrorCode::Overloaded`]).
    #[error("server answered {status} {code}: {message}")]
    Api {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The stable error code of the body.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
        /// The answer's `Retry-After` in seconds (429 and `503 overloaded`
        /// carry one): how long to wait before sending again.
        retry_after_seconds: Option<u64>,
    },
    /// A 4xx/5xx answer whose body is not SessionDB's `{"error",
    /// "message"}` JSON: something in front of the node answered (e.g. a
    /// proxy's HTML error page). `body` is its start, at most
    /// [`ERROR_BODY_SNIPPET_BYTES_MAX`] bytes.
    #[error("answered {status} without a SessionDB error body: {body}")]
    UnexpectedErrorBody {
        /// The HTTP status.
        status: u16,
        /// The body's start, as text.
        body: String,
        /// The answer's `Retry-After` in seconds, if it had one.
        retry_after_seconds: Option<u64>,
    },
    /// The node answered with a success status, but the body was not the
    /// expected JSON type (usually a client/server version mismatch).
    #[error("could not decode the {status} answer from {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// The HTTP status (a success).
        status: u16,
        /// The JSON decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The batch could not be written as JSON (nothing was sent).
    #[error("could not encode the batch as JSON")]
    Encode {
        /// The JSON writer's error.
        #[source]
        source: serde_json::Error,
    },
    /// [`Sender::track`] with [`Backpressure::Error`] found the sender
    /// already holding `buffer_events_max` events. The event was not taken;
    /// try again after a flush, or use [`Backpressure::Wait`].
    #[error("the sender already holds {buffer_events_max} events (buffer_events_max); flush or slow down")]
    BufferFull {
        /// The sender's bound ([`SenderConfig::buffer_events_max`]).
        buffer_events_max: usize,
    },
    /// The sender was closed ([`Sender::close`]), or its worker is gone
    /// (the runtime is shutting down).
    #[error("the sender is closed")]
    SenderClosed,
    /// An event was not resolved within [`SenderConfig::delivery_timeout`]
    /// of its `track`, or by the end of [`Sender::close`]'s timeout. The
    /// node may or may not have applied it; sending it again is safe.
    #[error("the event was not delivered in time (delivery_timeout, or close's timeout)")]
    DeliveryTimeout,
    /// [`Sender::flush_timeout`] ran out of time; the events go on.
    #[error("flush did not finish within {timeout:?}; the events are still being sent")]
    FlushTimeout {
        /// The time the flush was given.
        timeout: Duration,
    },
    /// A sender or router was made outside a Tokio runtime: it needs one
    /// to run its tasks.
    #[error("no Tokio runtime: create senders and routers inside one (e.g. under #[tokio::main])")]
    NoRuntime,
    /// A sender bound to a project ([`Client::sender_for`]) was given an
    /// event of another project; the node would refuse its whole batch.
    #[error("the sender sends events of project `{expected}`, not `{found}`")]
    WrongProject {
        /// The sender's project.
        expected: String,
        /// The event's.
        found: String,
    },
    /// A [`SenderConfig`] (or a router's setup) is inconsistent.
    #[error("invalid sender configuration: {message}")]
    InvalidConfig {
        /// Which setting is wrong, and why.
        message: String,
    },
    /// A CA file for [`Client::with_ca_pem`] / [`http_client_trusting`]
    /// holds no usable PEM certificate.
    #[error("invalid CA certificate: {message}")]
    InvalidCa {
        /// What is wrong with it.
        message: String,
    },
    /// A node answered a shard map this client cannot route with (an
    /// unknown shard function, or entries that do not match the shard
    /// count).
    #[error("unusable shard map: {message}")]
    InvalidShardMap {
        /// What is wrong with it.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status, if the node answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::UnexpectedErrorBody { status, .. }
            | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Transport { .. }
            | ClientError::InvalidUrl { .. }
            | ClientError::Encode { .. }
            | ClientError::BufferFull { .. }
            | ClientError::SenderClosed
            | ClientError::DeliveryTimeout
            | ClientError::FlushTimeout { .. }
            | ClientError::NoRuntime
            | ClientError::WrongProject { .. }
            | ClientError::InvalidConfig { .. }
            | ClientError::InvalidCa { .. }
            | ClientError::InvalidShardMap { .. } => None,
        }
    }

    /// The `Retry-After` of an error answer, if it had one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api {
                retry_after_seconds: Some(seconds),
                ..
            }
            | ClientError::UnexpectedErrorBody {
                retry_after_seconds: Some(seconds),
                ..
            } => Some(Duration::from_secs(*seconds)),
            _ => None,
        }
    }

    /// The stable API error code, for [`ClientError::Api`] only.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What [`Client::results`] and [`Client::timeseries`] do with a range
/// whose ends are not on the project's bucket boundaries (the node answers
/// only whole buckets, `docs/api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeAlignment {
    /// Widen the range to whole buckets: `from` down and `to` up to
    /// multiples of the project's `bucket_ms`, so the answer covers at
    /// least the range asked. The client reads `bucket_ms` from the
    /// project's settings (`GET /v1/projects/{name}`, admin token, like the
    /// query itself) on the first such query of a project and keeps it: a
    /// project's bucket size never changes. The default.
    #[default]
    Outward,
    /// Send the range as given: an end off a bucket boundary fails with
    /// [`ErrorCode::UnalignedRange`].
    Exact,
}

/// A query for `GET /v1/projects/{project}/experiments/{experiment}/results`.
///
/// `None` and an empty `keys` leave the choice to the node (see
/// `docs/api.md`: the whole range with data, no breakdown, every key seen,
/// the lexicographically first variation as baseline).
///
/// ```
/// use sessiondb_client::ResultsRequest;
/// use std::time::Duration;
///
/// // The last 24 hours (widened to whole buckets), by browser.
/// let request = ResultsRequest::new("shop", "checkout")
///     .since(Duration::from_secs(24 * 3600))
///     .breakdown("browser")
///     .keys(["purchase"]);
/// assert!(request.from.is_some() && request.to.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsRequest {
    /// The project's name.
    pub project: String,
    /// The experiment's name.
    pub experiment: String,
    /// Range start, ms since the epoch; moved down to a bucket boundary
    /// unless `alignment` is [`RangeAlignment::Exact`].
    pub from: Option<i64>,
    /// Range end (exclusive), ms since the epoch; moved up to a bucket
    /// boundary unless `alignment` is [`RangeAlignment::Exact`]. `None`:
    /// the end of the current bucket.
    pub to: Option<i64>,
    /// What to do with ends off the project's bucket boundaries. Default
    /// [`RangeAlignment::Outward`].
    pub alignment: RangeAlignment,
    /// One of the project's `breakdown_attributes`.
    pub breakdown: Option<String>,
    /// Conversion keys. Sent comma-separated, so a key must not contain `,`.
    pub keys: Vec<String>,
    /// The variation the others are compared against.
    pub baseline: Option<String>,
    /// Expected allocation for the sample ratio mismatch check,
    /// `variation:weight,…` naming every variation (node default: equal).
    pub weights: Option<String>,
}

impl ResultsRequest {
    /// A query with every optional parameter left to the node's defaults.
    pub fn new(project: impl Into<String>, experiment: impl Into<String>) -> Self {
        ResultsRequest {
            project: project.into(),
            experiment: experiment.into(),
            from: None,
            to: None,
            alignment: RangeAlignment::Outward,
            breakdown: None,
            keys: Vec::new(),
            baseline: None,
            weights: None,
        }
    }

    /// Splits the results by one of the project's `breakdown_attributes`.
    pub fn breakdown(mut self, attribute: impl Into<String>) -> Self {
        self.breakdown = Some(attribute.into());
        self
    }

    /// Restricts the results to these conversion keys (replacing any set before).
    pub fn keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Compares the other variations against this one.
    pub fn baseline(mut self, variation: impl Into<String>) -> Self {
        self.baseline = Some(variation.into());
        self
    }

    /// Sets the expected allocation for the sample ratio mismatch check,
    /// `variation:weight,…` naming every variation.
    pub fn weights(mut self, weights: impl Into<String>) -> Self {
        self.weights = Some(weights.into());
        self
    }

    /// Restricts the results to `[from_ms, to_ms)`, ms since the epoch,
    /// widened to whole buckets ([`RangeAlignment::Outward`]).
    pub fn range(mut self, from_ms: i64, to_ms: i64) -> Self {
        self.from = Some(from_ms);
        self.to = Some(to_ms);
        self
    }

    /// Restricts the results to the last `duration` before this call (by
    /// this machine's clock) up to the end of the current bucket; the start
    /// is moved down to a bucket boundary ([`RangeAlignment::Outward`]).
    pub fn since(mut self, duration: Duration) -> Self {
        self.from = Some(ms_before_now(duration));
        self.to = None;
        self
    }

    /// Sets what to do with ends off the bucket boundaries (default
    /// [`RangeAlignment::Outward`]).
    pub fn alignment(mut self, alignment: RangeAlignment) -> Self {
        self.alignment = alignment;
        self
    }

    fn query(&self, (from, to): (Option<i64>, Option<i64>)) -> Vec<(&'static str, String)> {
        let mut query = range_query(from, to);
        if let Some(breakdown) = &self.breakdown {
            query.push(("breakdown", breakdown.clone()));
        }
        push_keys(&mut query, &self.keys);
        if let Some(baseline) = &self.baseline {
            query.push(("baseline", baseline.clone()));
        }
        if let Some(weights) = &self.weights {
            query.push(("weights", weights.clone()));
        }
        query
    }
}

/// A query for `GET /v1/projects/{project}/experiments/{experiment}/timeseries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSeriesRequest {
    /// The project's name.
    pub project: String,
    /// The experiment's name.
    pub experiment: String,
    /// Range start, ms since the epoch; moved down to a bucket boundary
    /// unless `alignment` is [`RangeAlignment::Exact`].
    pub from: Option<i64>,
    /// Range end (exclusive), ms since the epoch; moved up to a bucket
    /// boundary unless `alignment` is [`RangeAlignment::Exact`].
    pub to: Option<i64>,
    /// What to do with ends off the project's bucket boundaries. Default
    /// [`RangeAlignment::Outward`].
    pub alignment: RangeAlignment,
    /// Conversion keys. Sent comma-separated, so a key must not contain `,`.
    pub keys: Vec<String>,
    /// Width of one point; a multiple of `bucket_ms` (node default: `bucket_ms`).
    pub interval_ms: Option<i64>,
    /// A breakdown attribute: the answer's `groups` hold one series per
    /// value instead of `variations`.
    pub breakdown: Option<String>,
    /// The variation the points' cumulative comparisons are against (node
    /// default: the first by name).
    pub baseline: Option<String>,
}

impl TimeSeriesRequest {
    /// A query with every optional parameter left to the node's defaults.
    pub fn new(project: impl Into<String>, experiment: impl Into<String>) -> Self {
        TimeSeriesRequest {
            project: project.into(),
            experiment: experiment.into(),
            from: None,
            to: None,
            alignment: RangeAlignment::Outward,
            keys: Vec::new(),
            interval_ms: None,
            breakdown: None,
            baseline: None,
        }
    }

    /// Restricts the series to these conversion keys.
    pub fn keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// One point per `interval_ms` (a multiple of the project's `bucket_ms`).
    pub fn interval_ms(mut self, interval_ms: i64) -> Self {
        self.interval_ms = Some(interval_ms);
        self
    }

    /// Restricts the series to `[from_ms, to_ms)`, widened to whole buckets.
    pub fn range(mut self, from_ms: i64, to_ms: i64) -> Self {
        self.from = Some(from_ms);
        self.to = Some(to_ms);
        self
    }

    /// Restricts the series to the last `duration` before this call, the
    /// start moved down to a bucket boundary.
    pub fn since(mut self, duration: Duration) -> Self {
        self.from = Some(ms_before_now(duration));
        self.to = None;
        self
    }

    /// Sets what to do with ends off the bucket boundaries.
    pub fn alignment(mut self, alignment: RangeAlignment) -> Self {
        self.alignment = alignment;
        self
    }

    fn query(&self, (from, to): (Option<i64>, Option<i64>)) -> Vec<(&'static str, String)> {
        let mut query = range_query(from, to);
        push_keys(&mut query, &self.keys);
        if let Some(interval_ms) = self.interval_ms {
            query.push(("interval_ms", interval_ms.to_string()));
        }
        if let Some(breakdown) = &self.breakdown {
            query.push(("breakdown", breakdown.clone()));
        }
        if let Some(baseline) = &self.baseline {
            query.push(("baseline", baseline.clone()));
        }
        query
    }
}

/// This machine's time minus `duration`, in ms since the epoch.
fn ms_before_now(duration: Duration) -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    ms(since_epoch).saturating_sub(ms(duration))
}

/// `[from, to)` widened to multiples of `bucket_ms` (which is positive).
fn align_outward(
    (from, to): (Option<i64>, Option<i64>),
    bucket_ms: i64,
) -> (Option<i64>, Option<i64>) {
    let down = |ms: i64| ms - ms.rem_euclid(bucket_ms);
    let up = |ms: i64| match ms.rem_euclid(bucket_ms) {
        0 => ms,
        rest => ms.saturating_add(bucket_ms - rest),
    };
    (from.map(down), to.map(up))
}

fn range_query(from: Option<i64>, to: Option<i64>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(from) = from {
        query.push(("from", from.to_string()));
    }
    if let Some(to) = to {
        query.push(("to", to.to_string()));
    }
    query
}

fn push_keys(query: &mut Vec<(&'static str, String)>, keys: &[String]) {
    if !keys.is_empty() {
        query.push(("keys", keys.join(",")));
    }
}

/// The body of `POST /v1/events`, borrowing the events so that sending does
/// not copy them. Serializes exactly like [`protocol::EventBatch`].
#[derive(Serialize)]
struct EventBatchRef<'a> {
    events: &'a [Event],
}

/// An async client for one SessionDB node.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    /// Without a trailing `/`.
    base_url: String,
    http: reqwest::Client,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` on every request (`with_token`).
    token: Option<Token>,
    /// Each project's `bucket_ms`, learned for [`RangeAlignment::Outward`]
    /// (it never changes); shared by clones.
    bucket_ms: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

/// A credential whose `Debug` never shows it (clients end up in logs).
#[derive(Clone)]
struct Token(std::sync::Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token(<redacted>)")
    }
}

impl Client {
    /// A client for the node at `base_url`, e.g. `http://127.0.0.1:7070`.
    ///
    /// The URL is not checked here; a malformed one makes every call fail
    /// with [`ClientError::Transport`].
    pub fn new(base_url: impl Into<String>) -> Client {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        Client {
            base_url,
            http: reqwest::Client::new(),
            timeout: REQUEST_TIMEOUT_DEFAULT,
            token: None,
            bucket_ms: Default::default(),
        }
    }

    /// Send `token` on every request as `Authorization: Bearer <token>`: the
    /// admin token, or a project's ingest key (which may only send events
    /// to its project; `docs/security.md`). This is the client's one
    /// credential: every call uses it (the cluster calls too), and so do
    /// the senders and routers built from the client ([`Client::sender`],
    /// [`Client::for_node`], [`RoundRobin::from_urls`],
    /// [`ShardMapRouter::new`]).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(Token(std::sync::Arc::from(token.into())));
        self
    }

    /// A request builder carrying the client's credential, if any.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(&token.0),
            None => request,
        }
    }

    /// Replace the per-request timeout (default [`REQUEST_TIMEOUT_DEFAULT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Talk HTTPS to a node whose certificate is signed by the CA in
    /// `ca_pem` (PEM; the node's `--tls-ca`). Only that CA is trusted.
    pub fn with_ca_pem(self, ca_pem: &[u8]) -> Result<Client, ClientError> {
        Ok(self.with_http_client(http_client_trusting(ca_pem)?))
    }

    /// Use a preconfigured `reqwest` client (proxies, pool sizes, …).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Client {
        self.http = http;
        self
    }

    /// A client for another node with this client's settings: its
    /// credential, timeout, TLS trust, compression and connection pool.
    /// Routers ([`RoundRobin::from_urls`], [`ShardMapRouter::new`]) make
    /// their per-node clients this way, so one credential set with
    /// [`Client::with_token`] goes with every request.
    pub fn for_node(&self, base_url: impl Into<String>) -> Client {
        Client {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            ..self.clone()
        }
    }

    /// The node's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /v1/health`: succeeds while the node serves.
    pub async fn health(&self) -> Result<(), ClientError> {
        let url = self.url(&["v1", "health"], &[]);
        self.execute(self.request(reqwest::Method::GET, &url), &url)
            .await
            .map(drop)
    }

    /// `GET /v1/status`: the node's id, shard count and counters.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.get(&["v1", "status"], &[]).await
    }

    /// `GET /v1/cluster` (admin token): members, leader, term and shard map
    /// as this node sees them.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.get(&["v1", "cluster"], &[]).await
    }

    /// `POST /v1/cluster/shards/{shard}/move` (admin token, leader only):
    /// hands `shard` to member `to` and answers once the move is done.
    /// Another node answers 307 `not_leader` naming the leader (an
    /// [`ClientError::Api`] with that code). Waits up to
    /// [`SHARD_MOVE_TIMEOUT`] at least.
    pub async fn move_shard(&self, shard: u32, to: u64) -> Result<ShardMoveReport, ClientError> {
        let url = self.url(
            &["v1", "cluster", "shards", &shard.to_string(), "move"],
            &[],
        );
        let request = self
            .request(reqwest::Method::POST, &url)
            .timeout(self.timeout.max(SHARD_MOVE_TIMEOUT))
            .json(&MoveShardRequest { to });
        let body = self.execute_with_own_timeout(request, &url).await?;
        decode(&url, body)
    }

    /// `POST /v1/cluster/rebalance` (admin token, leader only): plans a
    /// balanced shard map and carries out (a bounded number of) its moves.
    /// Waits up to [`REBALANCE_TIMEOUT`] at least.
    pub async fn rebalance(&self) -> Result<RebalanceReport, ClientError> {
        self.cluster_operation(&["v1", "cluster", "rebalance"])
            .await
    }

    /// `GET /v1/shard-map`: the owner, its address and the epoch of every
    /// shard, as this node knows them (what [`ShardMapRouter`] routes by).
    pub async fn shard_map(&self) -> Result<ShardMap, ClientError> {
        self.get(&["v1", "shard-map"], &[]).await
    }

    /// `POST /v1/cluster/nodes/{node}/drain` (admin token): marks the
    /// member as draining and moves (a bounded number of) its shards to the
    /// others; call again while `remaining_shards` is not 0. Any member
    /// forwards it to the leader. Waits up to [`REBALANCE_TIMEOUT`] at
    /// least.
    pub async fn drain_node(&self, node_id: u64) -> Result<DrainReport, ClientError> {
        self.cluster_operation(&["v1", "cluster", "nodes", &node_id.to_string(), "drain"])
            .await
    }

    /// `POST /v1/cluster/nodes/{node}/undrain` (admin token): clears the
    /// member's draining mark, so a rebalance gives it shards again.
    pub async fn undrain_node(&self, node_id: u64) -> Result<UndrainReport, ClientError> {
        self.cluster_operation(&["v1", "cluster", "nodes", &node_id.to_string(), "undrain"])
            .await
    }

    /// `POST /v1/cluster/nodes/{node}/remove` (admin token): takes a
    /// drained member out of the cluster; its aggregates go to a remaining
    /// member.
    pub async fn remove_node(&self, node_id: u64) -> Result<NodeRemoveReport, ClientError> {
        self.cluster_operation(&["v1", "cluster", "nodes", &node_id.to_string(), "remove"])
            .await
    }

    /// A long-running operator call: POST with the client's credential,
    /// waiting up to [`REBALANCE_TIMEOUT`] at least.
    async fn cluster_operation<T: DeserializeOwned>(
        &self,
        path: &[&str],
    ) -> Result<T, ClientError> {
        let url = self.url(path, &[]);
        let request = self
            .request(reqwest::Method::POST, &url)
            .timeout(self.timeout.max(REBALANCE_TIMEOUT));
        let body = self.execute_with_own_timeout(request, &url).await?;
        decode(&url, body)
    }

    /// `POST /v1/projects`. Fails with code `project_exists` if it does.
    pub async fn create_project(&self, request: &CreateProject) -> Result<Project, ClientError> {
        let url = self.url(&["v1", "projects"], &[]);
        let body = self
            .execute(
                self.request(reqwest::Method::POST, &url).json(request),
                &url,
            )
            .await?;
        decode(&url, body)
    }

    /// `GET /v1/projects/{name}`.
    pub async fn project(&self, name: &str) -> Result<Project, ClientError> {
        self.get(&["v1", "projects", name], &[]).await
    }

    /// `GET /v1/projects`: every project.
    pub async fn projects(&self) -> Result<Vec<Project>, ClientError> {
        let list: ProjectList = self.get(&["v1", "projects"], &[]).await?;
        Ok(list.projects)
    }

    /// `PATCH /v1/projects/{name}`: change the settings that are `Some`.
    pub async fn configure_project(
        &self,
        name: &str,
        patch: &ProjectSettingsPatch,
    ) -> Result<Project, ClientError> {
        let url = self.url(&["v1", "projects", name], &[]);
        let body = self
            .execute(self.request(reqwest::Method::PATCH, &url).json(patch), &url)
            .await?;
        decode(&url, body)
    }

    /// `POST /v1/projects/{name}/ingest-key/rotate` (admin token): a new
    /// ingest key for the project, shown this once; the old key keeps
    /// working for `grace_ms` (the node's default when `None`).
    pub async fn rotate_ingest_key(
        &self,
        name: &str,
        grace_ms: Option<i64>,
    ) -> Result<RotatedKey, ClientError> {
        let url = self.url(&["v1", "projects", name, "ingest-key", "rotate"], &[]);
        let request = self
            .request(reqwest::Method::POST, &url)
            .json(&RotateKeyRequest { grace_ms });
        let body = self.execute(request, &url).await?;
        decode(&url, body)
    }

    /// `POST /v1/admin/token/rotate` (admin token): a new admin token for
    /// this node, shown this once; the old token keeps working for
    /// `grace_ms` (the node's default when `None`).
    pub async fn rotate_admin_token(
        &self,
        grace_ms: Option<i64>,
    ) -> Result<RotatedKey, ClientError> {
        let url = self.url(&["v1", "admin", "token", "rotate"], &[]);
        let request = self
            .request(reqwest::Method::POST, &url)
            .json(&RotateKeyRequest { grace_ms });
        let body = self.execute(request, &url).await?;
        decode(&url, body)
    }

    /// `POST /v1/events`: send one batch.
    ///
    /// A batch may be partly accepted, so `Ok` does not mean every event was
    /// applied: check [`IngestResponse::rejected`], which names each rejected
    /// event by its index in `events`.
    pub async fn send(&self, events: &[Event]) -> Result<IngestResponse, ClientError> {
        self.send_with(events, Encoding::Json).await
    }

    /// `POST /v1/events`: send one batch in the given encoding.
    ///
    /// [`Encoding::Binary`] sends `Content-Type:`
    /// [`protocol::binary::CONTENT_TYPE`] with the body of
    /// [`protocol::binary::encode_batch`]. The answer is the same JSON
    /// [`IngestResponse`] either way.
    pub async fn send_with(
        &self,
        events: &[Event],
        encoding: Encoding,
    ) -> Result<IngestResponse, ClientError> {
        self.send_compressed(events, encoding, Compression::None)
            .await
    }

    /// `POST /v1/events`: send one batch in the given encoding, its body
    /// compressed as `compression` says (`Content-Encoding: gzip` for
    /// [`Compression::Gzip`]; `docs/client.md`, "Compression", says when it
    /// pays).
    pub async fn send_compressed(
        &self,
        events: &[Event],
        encoding: Encoding,
        compression: Compression,
    ) -> Result<IngestResponse, ClientError> {
        let url = self.url(&["v1", "events"], &[]);
        let (content_type, body) = match encoding {
            Encoding::Json => (
                "application/json",
                serde_json::to_vec(&EventBatchRef { events })
                    .map_err(|source| ClientError::Encode { source })?,
            ),
            Encoding::Binary => (
                protocol::binary::CONTENT_TYPE,
                protocol::binary::encode_batch(events),
            ),
        };
        let mut request = self
            .request(reqwest::Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        let body = match compression {
            Compression::None => body,
            Compression::Gzip => {
                request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
                gzip(&body)
            }
        };
        let body = self.execute(request.body(body), &url).await?;
        decode(&url, body)
    }

    /// Results of one experiment, per variation (and breakdown value).
    ///
    /// A range off the project's bucket boundaries is widened to whole
    /// buckets first ([`RangeAlignment::Outward`], the default).
    pub async fn results(&self, request: &ResultsRequest) -> Result<ResultsResponse, ClientError> {
        let range = self
            .aligned(
                &request.project,
                request.alignment,
                (request.from, request.to),
            )
            .await?;
        let path = experiment_path(&request.project, &request.experiment, "results");
        self.get(&path, &request.query(range)).await
    }

    /// `GET /v1/projects/{project}/experiments/{experiment}/weights`: the
    /// experiment's stored allocation weights (`weights` is `None` when
    /// none are stored).
    pub async fn experiment_weights(
        &self,
        project: &str,
        experiment: &str,
    ) -> Result<ExperimentWeights, ClientError> {
        self.get(&experiment_path(project, experiment, "weights"), &[])
            .await
    }

    /// `PUT …/weights` with `Some` (store them) or `DELETE …/weights` with
    /// `None` (the sample ratio mismatch check assumes equal shares again).
    pub async fn set_experiment_weights(
        &self,
        project: &str,
        experiment: &str,
        weights: Option<BTreeMap<String, f64>>,
    ) -> Result<ExperimentWeights, ClientError> {
        let url = self.url(&experiment_path(project, experiment, "weights"), &[]);
        let request = match weights {
            Some(weights) => self
                .request(reqwest::Method::PUT, &url)
                .json(&SetExperimentWeights { weights }),
            None => self.request(reqwest::Method::DELETE, &url),
        };
        let body = self.execute(request, &url).await?;
        decode(&url, body)
    }

    /// One experiment's counters over time, per variation; the range is
    /// aligned like [`Client::results`]'.
    pub async fn timeseries(
        &self,
        request: &TimeSeriesRequest,
    ) -> Result<TimeSeriesResponse, ClientError> {
        let range = self
            .aligned(
                &request.project,
                request.alignment,
                (request.from, request.to),
            )
            .await?;
        let path = experiment_path(&request.project, &request.experiment, "timeseries");
        self.get(&path, &request.query(range)).await
    }

    /// The range to send: as given, or widened to the project's buckets.
    async fn aligned(
        &self,
        project: &str,
        alignment: RangeAlignment,
        range: (Option<i64>, Option<i64>),
    ) -> Result<(Option<i64>, Option<i64>), ClientError> {
        if alignment == RangeAlignment::Exact || range == (None, None) {
            return Ok(range);
        }
        let bucket_ms = self.bucket_ms_of(project).await?;
        if bucket_ms <= 0 {
            return Ok(range); // A node bug; let the node judge the range.
        }
        Ok(align_outward(range, bucket_ms))
    }

    /// The project's `bucket_ms`, asked once per project and kept.
    async fn bucket_ms_of(&self, project: &str) -> Result<i64, ClientError> {
        let known = self
            .bucket_ms
            .lock()
            .expect("bucket cache lock")
            .get(project)
            .copied();
        if let Some(bucket_ms) = known {
            return Ok(bucket_ms);
        }
        let bucket_ms = self.project(project).await?.settings.bucket_ms;
        self.bucket_ms
            .lock()
            .expect("bucket cache lock")
            .insert(project.to_string(), bucket_ms);
        Ok(bucket_ms)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query);
        let body = self
            .execute(self.request(reqwest::Method::GET, &url), &url)
            .await?;
        decode(&url, body)
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> String {
        build_url(&self.base_url, segments, query)
    }

    /// Send the request; answer the body of a 2xx response, or the error.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        self.execute_with_own_timeout(request.timeout(self.timeout), url)
            .await
    }

    /// `execute` for a request that already carries its timeout.
    async fn execute_with_own_timeout(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        check_url(&self.base_url)?;
        let transport = |source: reqwest::Error| ClientError::Transport {
            url: url.to_string(),
            cause: transport_cause(&source),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after_seconds(response.headers());
        let body = response.bytes().await.map_err(transport)?.to_vec();
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(api_error(status, &body, retry_after))
        }
    }
}

/// Refuses a base URL reqwest would fail on with an obscure "builder
/// error": no scheme, another scheme, or not a URL at all.
fn check_url(base_url: &str) -> Result<(), ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: base_url.to_string(),
        reason,
    };
    if !base_url.contains("://") {
        return Err(invalid(format!(
            "no scheme; write http://{base_url} (or https://)"
        )));
    }
    let parsed = reqwest::Url::parse(base_url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme is `{}`; use http:// or https://",
            parsed.scheme()
        )));
    }
    Ok(())
}

/// A transport error's cause in a few words: the kind of the innermost I/O
/// error when there is one (`connection refused`), else the innermost
/// error's own message.
fn transport_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                std::io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
                _ => io.to_string(),
            };
        }
        innermost = source;
    }
    innermost.to_string()
}

fn experiment_path<'a>(project: &'a str, experiment: &'a str, leaf: &'a str) -> [&'a str; 6] {
    ["v1", "projects", project, "experiments", experiment, leaf]
}

fn decode<T: DeserializeOwned>(
    url: &str,
    (status, body): (u16, Vec<u8>),
) -> Result<T, ClientError> {
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
        url: url.to_string(),
        status,
        source,
    })
}

/// `body` gzipped at level 1: the fastest level, since the point is to
/// spend little CPU for the bytes it saves on a slow link.
fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    encoder.write_all(body).expect("write to a Vec");
    encoder.finish().expect("finish into a Vec")
}

/// A `reqwest` client that trusts only the CA certificate(s) in `ca_pem`
/// (for nodes running with TLS; share it between [`Client`]s).
pub fn http_client_trusting(ca_pem: &[u8]) -> Result<reqwest::Client, ClientError> {
    let invalid = |message: String| ClientError::InvalidCa { message };
    let certificates = reqwest::Certificate::from_pem_bundle(ca_pem)
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no PEM certificate in it".to_string()));
    }
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|error| invalid(error.to_string()))
}

/// `Retry-After` as delay-seconds (the node never sends the HTTP-date
/// form; a date from a proxy is ignored and the sender's own backoff
/// applies).
fn retry_after_seconds(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn api_error(status: u16, body: &[u8], retry_after_seconds: Option<u64>) -> ClientError {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(error) => ClientError::Api {
            status,
            code: error.error,
            message: error.message,
            retry_after_seconds,
        },
        Err(_) => ClientError::UnexpectedErrorBody {
            status,
            body: body_snippet(body),
            retry_after_seconds,
        },
    }
}

/// The start of `body` as text, cut at a character boundary.
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(ERROR_BODY_SNIPPET_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// `base` + `/segment`… + `?name=value&…`, percent-encoding every segment and
/// query value, so experiment names may hold any character.
fn build_url(base: &str, segments: &[&str], query: &[(&str, String)]) -> String {
    let mut url = base.to_string();
    for segment in segments {
        url.push('/');
        percent_encode_into(&mut url, segment);
    }
    for (index, (name, value)) in query.iter().enumerate() {
        url.push(if index == 0 { '?' } else { '&' });
        percent_encode_into(&mut url, name);
        url.push('=');
        percent_encode_into(&mut url, value);
    }
    url
}

/// Percent-encode all but RFC 3986's unreserved characters, and `,` (the
/// `keys` separator, which the node splits on after decoding either way).
fn percent_encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Decision, EventBatch, EventType, RejectCode, Timestamp};

    const BASE: &str = "http://127.0.0.1:7070";

    fn results_url(request: &ResultsRequest) -> String {
        let path = experiment_path(&request.project, &request.experiment, "results");
        build_url(BASE, &path, &request.query((request.from, request.to)))
    }

    #[test]
    fn results_without_parameters_has_no_query_string() {
        let request = ResultsRequest::new("shop", "checkout");
        assert_eq!(
            results_url(&request),
            "http://127.0.0.1:7070/v1/projects/shop/experiments/checkout/results"
        );
    }

    #[test]
    fn results_builder_sets_the_same_fields_as_the_struct() {
        let built = ResultsRequest::new("shop", "checkout")
            .range(1_764_144_000_000, 1_764_147_600_000)
            .breakdown("browser")
            .keys(["purchase", "add_to_cart"])
            .baseline("a");
        let literal = ResultsRequest {
            from: Some(1_764_144_000_000),
            to: Some(1_764_147_600_000),
            breakdown: Some("browser".into()),
            keys: vec!["purchase".into(), "add_to_cart".into()],
            baseline: Some("a".into()),
            ..ResultsRequest::new("shop", "checkout")
        };
        assert_eq!(built, literal);
        let before = ms_before_now(Duration::from_secs(3_600));
        let since = ResultsRequest::new("shop", "checkout").since(Duration::from_secs(3_600));
        let after = ms_before_now(Duration::from_secs(3_600));
        assert!((before..=after).contains(&since.from.unwrap()), "{since:?}");
        assert_eq!(since.to, None);
    }

    #[test]
    fn ranges_are_widened_to_whole_buckets() {
        const HOUR_MS: i64 = 3_600_000;
        let aligned = 1_764_144_000_000; // a multiple of an hour
        assert_eq!(
            align_outward((Some(aligned + 1), Some(aligned + HOUR_MS + 1)), HOUR_MS),
            (Some(aligned), Some(aligned + 2 * HOUR_MS))
        );
        assert_eq!(
            align_outward((Some(aligned), Some(aligned + HOUR_MS)), HOUR_MS),
            (Some(aligned), Some(aligned + HOUR_MS)),
            "aligned ends stay"
        );
        assert_eq!(
            align_outward((Some(-1), None), HOUR_MS),
            (Some(-HOUR_MS), None),
            "before the epoch, down is still down"
        );
        assert_eq!(
            align_outward((None, Some(i64::MAX)), HOUR_MS).1,
            Some(i64::MAX)
        );
    }

    #[test]
    fn results_maps_every_parameter() {
        let request = ResultsRequest {
            from: Some(1_764_144_000_000),
            to: Some(1_764_147_600_000),
            breakdown: Some("browser".into()),
            keys: vec!["purchase".into(), "add_to_cart".into()],
            baseline: Some("a".into()),
            weights: Some("a:1,b:2".into()),
            ..ResultsRequest::new("shop", "checkout")
        };
        assert_eq!(
            results_url(&request),
            "http://127.0.0.1:7070/v1/projects/shop/experiments/checkout/results\
             ?from=1764144000000&to=1764147600000&breakdown=browser\
             &keys=purchase,add_to_cart&baseline=a&weights=a%3A1,b%3A2"
        );
    }

    #[test]
    fn path_segments_and_values_are_percent_encoded() {
        let request = ResultsRequest {
            keys: vec!["sign up".into()],
            baseline: Some("a&b=c".into()),
            ..ResultsRequest::new("shop", "new checkout/v2?")
        };
        assert_eq!(
            results_url(&request),
            "http://127.0.0.1:7070/v1/projects/shop/experiments/new%20checkout%2Fv2%3F/results\
             ?keys=sign%20up&baseline=a%26b%3Dc"
        );
    }

    #[test]
    fn the_token_is_sent_as_a_bearer_and_never_shown() {
        let client = Client::new("http://127.0.0.1:7070").with_token("secret-token-123456");
        assert!(!format!("{client:?}").contains("secret-token"));
        let request = client
            .request(reqwest::Method::GET, "http://127.0.0.1:7070/v1/status")
            .build()
            .unwrap();
        assert_eq!(
            request.headers()[reqwest::header::AUTHORIZATION],
            "Bearer secret-token-123456"
        );
        let anonymous = Client::new("http://127.0.0.1:7070")
            .request(reqwest::Method::GET, "http://127.0.0.1:7070/v1/health")
            .build()
            .unwrap();
        assert!(anonymous
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .is_none());
    }

    #[test]
    fn non_ascii_is_encoded_as_utf8_bytes() {
        let mut url = String::new();
        percent_encode_into(&mut url, "é");
        assert_eq!(url, "%C3%A9");
    }

    #[test]
    fn timeseries_maps_every_parameter() {
        let request = TimeSeriesRequest {
            from: Some(0),
            to: Some(86_400_000),
            keys: vec!["purchase".into()],
            interval_ms: Some(3_600_000),
            breakdown: Some("browser".into()),
            baseline: Some("control".into()),
            ..TimeSeriesRequest::new("demo", "homepage")
        };
        let path = experiment_path(&request.project, &request.experiment, "timeseries");
        assert_eq!(
            build_url(BASE, &path, &request.query((request.from, request.to))),
            "http://127.0.0.1:7070/v1/projects/demo/experiments/homepage/timeseries\
             ?from=0&to=86400000&keys=purchase&interval_ms=3600000&breakdown=browser&baseline=control"
        );
    }

    #[test]
    fn trailing_slash_of_base_url_is_dropped() {
        let client = Client::new("http://localhost:7070//");
        assert_eq!(client.base_url(), "http://localhost:7070");
        assert_eq!(
            client.url(&["v1", "health"], &[]),
            "http://localhost:7070/v1/health"
        );
    }

    #[test]
    fn borrowed_batch_serializes_like_event_batch() {
        let events = vec![Event {
            id: "e-1".into(),
            project: "shop".into(),
            visitor: "v-42".into(),
            ts: Timestamp::Milliseconds(1_764_150_000_000),
            event_type: EventType::Decision,
            key: None,
            value: None,
            attributes: [("browser".to_string(), "firefox".to_string())].into(),
            decisions: vec![Decision {
                experiment: "checkout".into(),
                variation: "b".into(),
            }],
        }];
        let borrowed = serde_json::to_value(EventBatchRef { events: &events }).unwrap();
        let owned = serde_json::to_value(EventBatch { events }).unwrap();
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn api_error_body_is_decoded() {
        let body = br#"{"error":"unknown_project","message":"no project named shop"}"#;
        let error = api_error(404, body, None);
        assert_eq!(error.status(), Some(404));
        assert_eq!(error.code(), Some(&ErrorCode::UnknownProject));
        assert_eq!(
            error.to_string(),
            "server answered 404 unknown_project: no project named shop"
        );
    }

    #[test]
    fn unrecognized_error_body_keeps_status_and_a_bounded_snippet() {
        let body = "é".repeat(ERROR_BODY_SNIPPET_BYTES_MAX); // 2 bytes per char
        let error = api_error(502, body.as_bytes(), None);
        let ClientError::UnexpectedErrorBody { status, body, .. } = error else {
            panic!("expected an UnexpectedErrorBody error, got {error:?}");
        };
        assert_eq!(status, 502);
        assert_eq!(body.len(), ERROR_BODY_SNIPPET_BYTES_MAX);
        assert!(body.chars().all(|c| c == 'é'));
    }

    #[test]
    fn success_body_of_the_wrong_shape_is_a_decode_error() {
        let url = "http://127.0.0.1:7070/v1/status";
        let result: Result<NodeStatus, _> = decode(url, (200, b"{\"status\":\"ok\"}".to_vec()));
        let error = result.unwrap_err();
        assert!(matches!(error, ClientError::Decode { status: 200, .. }));
        assert_eq!(error.code(), None);
    }

    /// Serve one canned HTTP answer on a local port; answer the base URL.
    async fn serve_once(status_line: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).await.unwrap();
                assert!(read > 0, "connection closed before the request ended");
                request.extend_from_slice(&buffer[..read]);
            }
            let response = format!(
                "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn error_answer_from_a_server_becomes_an_api_error() {
        let base = serve_once(
            "404 Not Found",
            r#"{"error":"unknown_project","message":"no project named shop"}"#,
        )
        .await;
        let error = Client::new(base).project("shop").await.unwrap_err();
        assert_eq!(error.status(), Some(404));
        assert_eq!(error.code(), Some(&ErrorCode::UnknownProject));
    }

    #[tokio::test]
    async fn success_answer_from_a_server_is_decoded() {
        let base = serve_once(
            "200 OK",
            r#"{"accepted":1,"duplicates":0,"rejected":[{"index":1,"reason":"too_late","message":"m"}]}"#,
        )
        .await;
        let answer = Client::new(base).send(&[]).await.unwrap();
        assert_eq!(answer.accepted, 1);
        assert_eq!(answer.rejected[0].reason, RejectCode::TooLate);
    }

    #[tokio::test]
    async fn refused_connection_is_a_transport_error() {
        // Bind to learn a free port, then close it so nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = Client::new(format!("http://{address}"))
            .health()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Transport { url, .. } if url.ends_with("/v1/health")),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with("/v1/health failed: connection refused"),
            "{error}"
        );
        assert_eq!(error.status(), None);
    }

    #[tokio::test]
    async fn a_url_without_scheme_is_refused_with_the_fix() {
        let error = Client::new("127.0.0.1:7070").health().await.unwrap_err();
        assert!(matches!(error, ClientError::InvalidUrl { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "invalid node URL `127.0.0.1:7070`: no scheme; write http://127.0.0.1:7070 (or https://)"
        );
        let error = Client::new("ftp://n:1").health().await.unwrap_err();
        assert!(
            error.to_string().contains("use http:// or https://"),
            "{error}"
        );
    }
}
