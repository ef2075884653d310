//! The controller's HTTP calls to the nodes, with every answer classified
//! the way the history needs it: a definite answer, a definite failure
//! (nothing was applied), or unknown (the request may have been applied).

use crate::cluster::ADMIN_TOKEN;
use serde::Deserialize;
use sessiondb_protocol::{ErrorCode, ErrorResponse, Event, IngestResponse, ResultsResponse};
use std::fmt;
use std::time::Duration;

/// Most time one ingest request may take before its outcome is unknown.
pub const INGEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Most time a control call (status, clock, audit) may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Most time a shard move or a rebalance may take (they run synchronously).
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most time a results query (fan-out over every member) may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    Ok(T),
    /// The node answered an error, or could not be connected to: nothing
    /// of the request was applied.
    Fail {
        code: FailCode,
        message: String,
    },
    /// Sent, but no answer: it may or may not have been applied.
    Unknown {
        message: String,
    },
}

/// One shard as a node reports it in `GET /v1/cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ShardView {
    pub shard: u32,
    pub owner: u64,
    pub epoch: u64,
    pub moving_to: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberView {
    pub node_id: u64,
}

/// The part of `GET /v1/cluster` the harness reads (extra fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterView {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberView>,
    pub shards: Vec<ShardView>,
}

/// One event of `GET /v1/cluster/shards/{s}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct AuditedEvent {
    pub project: String,
    pub visitor: String,
    pub id: String,
}

/// `GET /v1/cluster/shards/{s}/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShardEvents {
    pub node_id: u64,
    pub shard: u32,
    pub role: String,
    pub owner: u64,
    pub epoch: u64,
    pub events: Vec<AuditedEvent>,
}

/// Why a request failed: the node's stable error code, or what kept it
/// from giving one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailCode {
    /// The node's `ErrorResponse` code (`docs/api.md`).
    Node(ErrorCode),
    /// No connection could be made.
    Connect,
    /// An error status without a SessionDB error body.
    Http(u16),
    /// A success answer that is not the expected JSON.
    UnreadableAnswer,
    /// The run knows no address for the node.
    UnknownNode,
}

impl fmt::Display for FailCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailCode::Node(code) => write!(formatter, "{code}"),
            FailCode::Connect => formatter.write_str("connect"),
            FailCode::Http(status) => write!(formatter, "http_{status}"),
            FailCode::UnreadableAnswer => formatter.write_str("unreadable_answer"),
            FailCode::UnknownNode => formatter.write_str("unknown_node"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    now_ms: i64,
}

/// Talks to the nodes; cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Api::new()
    }
}

impl Api {
    pub fn new() -> Api {
        let http = reqwest::Client::builder()
            // Connections to a killed or partitioned node must not be
            // reused silently; a short connect bound makes "down" quick.
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("a reqwest client");
        Api { http }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Answer<T> {
        let response = match request.timeout(timeout).send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                return Answer::Fail {
                    code: FailCode::Connect,
                    message: error.to_string(),
                }
            }
            Err(error) => {
                return Answer::Unknown {
                    message: format!("{error:#}"),
                }
            }
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Answer::Unknown {
                    message: format!("reading the body of a {status} answer: {error:#}"),
                }
            }
        };
        if status.is_success() {
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Answer::Ok(value),
                Err(error) => Answer::Fail {
                    code: FailCode::UnreadableAnswer,
                    message: format!("{error}: {}", String::from_utf8_lossy(&bytes)),
                },
            };
        }
        match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(body) => Answer::Fail {
                code: FailCode::Node(body.error),
                message: body.message,
            },
            Err(_) => Answer::Fail {
                code: FailCode::Http(status.as_u16()),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            },
        }
    }

    pub async fn ingest(&self, base_url: &str, events: &[Event]) -> Answer<IngestResponse> {
        let request = self
            .http
            .post(format!("{base_url}/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "events": events }));
        self.call(request, INGEST_TIMEOUT).await
    }

    pub async fn cluster(&self, base_url: &str) -> Answer<ClusterView> {
        let request = self
            .http
            .get(format!("{base_url}/v1/cluster"))
            .bearer_auth(ADMIN_TOKEN);
        self.call(request, CONTROL_TIMEOUT).await
    }

    pub async fn shard_events(&self, base_url: &str, shard: u32) -> Answer<ShardEvents> {
        let request = self
            .http
            .get(format!("{base_url}/v1/cluster/shards/{shard}/events"))
            .bearer_auth(ADMIN_TOKEN);
        self.call(request, QUERY_TIMEOUT).await
    }

    pub async fn healthy(&self, base_url: &str) -> bool {
        let request = self.http.get(format!("{base_url}/v1/health"));
        matches!(
            self.call::<serde_json::Value>(request, CONTROL_TIMEOUT)
                .await,
            Answer::Ok(_)
        )
    }

    /// The node's clock (`GET /v1/status`).
    pub async fn now_ms(&self, base_url: &str) -> Answer<i64> {
        let request = self
            .http
            .get(format!("{base_url}/v1/status"))
            .bearer_auth(ADMIN_TOKEN);
        match self.call::<StatusBody>(request, CONTROL_TIMEOUT).await {
            Answer::Ok(body) => Answer::Ok(body.now_ms),
            Answer::Fail { code, message } => Answer::Fail { code, message },
            Answer::Unknown { message } => Answer::Unknown { message },
        }
    }

    pub async fn set_clock(&self, base_url: &str, now_ms: i64) -> Answer<serde_json::Value> {
        let request = self
            .http
            .post(format!("{base_url}/v1/admin/clock"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "now_ms": now_ms }));
        self.call(request, CONTROL_TIMEOUT).await
    }

    pub async fn move_shard(
        &self,
        base_url: &str,
        shard: u32,
        to: u64,
    ) -> Answer<serde_json::Value> {
        let request = self
            .http
            .post(format!("{base_url}/v1/cluster/shards/{shard}/move"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "to": to }));
        self.call(request, MOVE_TIMEOUT).await
    }

    pub async fn rebalance(&self, base_url: &str) -> Answer<serde_json::Value> {
        let request = self
            .http
            .post(format!("{base_url}/v1/cluster/rebalance"))
            .bearer_auth(ADMIN_TOKEN);
        self.call(request, MOVE_TIMEOUT).await
    }

    pub async fn create_project(
        &self,
        base_url: &str,
        body: &serde_json::Value,
    ) -> Answer<serde_json::Value> {
        let request = self
            .http
            .post(format!("{base_url}/v1/projects"))
            .bearer_auth(ADMIN_TOKEN)
            .json(body);
        self.call(request, CONTROL_TIMEOUT).await
    }

    pub async fn project(&self, base_url: &str, name: &str) -> Answer<serde_json::Value> {
        let request = self
            .http
            .get(format!("{base_url}/v1/projects/{name}"))
            .bearer_auth(ADMIN_TOKEN);
        self.call(request, CONTROL_TIMEOUT).await
    }

    pub async fn results(
        &self,
        base_url: &str,
        project: &str,
        experiment: &str,
        query: &[(&str, String)],
    ) -> Answer<ResultsResponse> {
        let request = self
            .http
            .get(format!(
                "{base_url}/v1/projects/{project}/experiments/{experiment}/results"
            ))
            .bearer_auth(ADMIN_TOKEN)
            .query(query);
        self.call(request, QUERY_TIMEOUT).await
    }
}
