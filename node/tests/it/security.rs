//! Credentials against the real binary (`docs/security.md`):
//!
//! - every credential class (none, unknown, admin token, a project's ingest
//!   key, another project's ingest key, the cluster secret, the read-only
//!   viewer token) against every endpoint class, from one table: 401
//!   without a valid credential, 403 with one of the wrong class, and
//!   neither body names the credential;
//! - rotating an ingest key and the admin token: old and new both work
//!   during the grace period, the old one stops after it, and the rotation
//!   survives a restart (the grace period runs on the manual clock);
//! - hashed at rest: no file in the data directory holds a key or token.

use crate::support::node::{NodeOptions, RawResponse, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Decision, Event, EventBatch, EventType, RotatedKey, Timestamp};
use std::path::Path;

/// 2025-11-26 10:00:00 UTC.
const START_MS: i64 = 1_764_151_200_000;
const HOUR_MS: i64 = 3_600_000;
/// A bearer credential that is none of the node's.
const UNKNOWN_CREDENTIAL: &str = "not-a-credential-0123456789abcdef";
/// The read-only token (`--viewer-token`).
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

/// What an endpoint must answer to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Past the credential check: neither 401 nor 403.
    Allowed,
    Unauthorized,
    Forbidden,
}
use Expect::{Allowed, Forbidden, Unauthorized};

/// The credentials of the table, in its column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Nothing,
    Unknown,
    Admin,
    /// The ingest key of `shop`, the project the requests are about.
    ShopKey,
    /// The ingest key of `blog`.
    BlogKey,
    ClusterSecret,
    Viewer,
}
const PRESENTED: [Presented; 7] = [
    Presented::Nothing,
    Presented::Unknown,
    Presented::Admin,
    Presented::ShopKey,
    Presented::BlogKey,
    Presented::ClusterSecret,
    Presented::Viewer,
];

/// One endpoint class: a request and what each credential gets, in the
/// order of `PRESENTED`.
struct Row {
    class: &'static str,
    method: &'static str,
    path: &'static str,
    body: Body,
    expect: [Expect; 7],
}

#[derive(Clone, Copy)]
enum Body {
    Empty,
    Json(&'static str),
    /// A JSON batch of events of `shop`.
    ShopEvents,
    /// The same batch in the binary encoding.
    ShopEventsBinary,
    /// A new project with a name unique to the call.
    NewProject,
}

/// Admin-only endpoints: only the admin token passes; the other valid
/// credentials are of the wrong class.
const ADMIN_ONLY: [Expect; 7] = [
    Unauthorized,
    Unauthorized,
    Allowed,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
];
/// Reads: the admin token or the read-only viewer token.
const READ: [Expect; 7] = [
    Unauthorized,
    Unauthorized,
    Allowed,
    Forbidden,
    Forbidden,
    Forbidden,
    Allowed,
];
const INGEST: [Expect; 7] = [
    Unauthorized,
    Unauthorized,
    Allowed,
    Allowed,
    Forbidden,
    Forbidden,
    Forbidden,
];
const CLUSTER_ONLY: [Expect; 7] = [
    Unauthorized,
    Unauthorized,
    Forbidden,
    Forbidden,
    Forbidden,
    Allowed,
    Forbidden,
];
/// Any project's ingest key or the admin token.
const ANY_KEY: [Expect; 7] = [
    Unauthorized,
    Unauthorized,
    Allowed,
    Allowed,
    Allowed,
    Forbidden,
    Forbidden,
];
const OPEN: [Expect; 7] = [Allowed; 7];

const TABLE: &[Row] = &[
    Row {
        class: "native ingest, JSON",
        method: "POST",
        path: "/v1/events",
        body: Body::ShopEvents,
        expect: INGEST,
    },
    Row {
        class: "native ingest, binary",
        method: "POST",
        path: "/v1/events",
        body: Body::ShopEventsBinary,
        expect: INGEST,
    },
    Row {
        class: "shard map",
        method: "GET",
        path: "/v1/shard-map",
        body: Body::Empty,
        expect: ANY_KEY,
    },
    Row {
        class: "project create",
        method: "POST",
        path: "/v1/projects",
        body: Body::NewProject,
        expect: ADMIN_ONLY,
    },
    Row {
        class: "project list",
        method: "GET",
        path: "/v1/projects",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "project get",
        method: "GET",
        path: "/v1/projects/shop",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "ingest key rotation",
        method: "POST",
        path: "/v1/projects/blog/ingest-key/rotate",
        body: Body::Json("{}"),
        expect: ADMIN_ONLY,
    },
    Row {
        class: "project configure",
        method: "PATCH",
        path: "/v1/projects/shop",
        body: Body::Json("{}"),
        expect: ADMIN_ONLY,
    },
    Row {
        class: "results",
        method: "GET",
        path: "/v1/projects/shop/experiments/checkout/results",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "time series",
        method: "GET",
        path: "/v1/projects/shop/experiments/checkout/timeseries",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "console data",
        method: "GET",
        path: "/console/api/projects",
        body: Body::Empty,
        expect: ADMIN_ONLY,
    },
    Row {
        class: "console status",
        method: "GET",
        path: "/console/api/status",
        body: Body::Empty,
        expect: ADMIN_ONLY,
    },
    Row {
        class: "admin token rotation",
        method: "POST",
        path: "/v1/admin/token/rotate",
        body: Body::Json("not json"),
        expect: ADMIN_ONLY,
    },
    Row {
        class: "shard move",
        method: "POST",
        path: "/v1/cluster/shards/0/move",
        body: Body::Json("not json"),
        expect: ADMIN_ONLY,
    },
    Row {
        class: "metrics",
        method: "GET",
        path: "/metrics",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "status",
        method: "GET",
        path: "/v1/status",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "admin",
        method: "POST",
        path: "/v1/admin/checkpoint",
        body: Body::Empty,
        expect: ADMIN_ONLY,
    },
    Row {
        class: "cluster status",
        method: "GET",
        path: "/v1/cluster",
        body: Body::Empty,
        expect: READ,
    },
    Row {
        class: "cluster mutation",
        method: "POST",
        path: "/v1/cluster/rebalance",
        body: Body::Empty,
        expect: ADMIN_ONLY,
    },
    Row {
        class: "node-to-node",
        method: "POST",
        path: "/v1/internal/partial",
        body: Body::Json("{}"),
        expect: CLUSTER_ONLY,
    },
    Row {
        class: "join",
        method: "POST",
        path: "/v1/cluster/join",
        body: Body::Json("{}"),
        expect: CLUSTER_ONLY,
    },
    Row {
        class: "health",
        method: "GET",
        path: "/v1/health",
        body: Body::Empty,
        expect: OPEN,
    },
    Row {
        class: "readiness",
        method: "GET",
        path: "/v1/ready",
        body: Body::Empty,
        expect: OPEN,
    },
];

fn shop_events(first_id: usize) -> Vec<Event> {
    (0..2)
        .map(|index| Event {
            id: format!("security-{}", first_id + index),
            project: "shop".into(),
            visitor: format!("visitor-{index}"),
            ts: Timestamp::Milliseconds(START_MS),
            event_type: EventType::Decision,
            key: None,
            value: None,
            attributes: Default::default(),
            decisions: vec![Decision {
                experiment: "checkout".into(),
                variation: "a".into(),
            }],
        })
        .collect()
}

/// The node's credentials, by class.
struct Credentials {
    admin: String,
    shop_key: String,
    blog_key: String,
    cluster_secret: String,
    viewer: String,
}

impl Credentials {
    fn bearer(&self, presented: Presented) -> Option<String> {
        let credential = match presented {
            Presented::Nothing => return None,
            Presented::Unknown => UNKNOWN_CREDENTIAL,
            Presented::Admin => &self.admin,
            Presented::ShopKey => &self.shop_key,
            Presented::BlogKey => &self.blog_key,
            Presented::ClusterSecret => &self.cluster_secret,
            Presented::Viewer => &self.viewer,
        };
        Some(format!("Bearer {credential}"))
    }
}

async fn send(
    node: &TestNode,
    method: &str,
    path: &str,
    body: Body,
    authorization: Option<&str>,
    call: usize,
) -> RawResponse {
    let client = reqwest::Client::new();
    let url = node.url(path);
    let mut request = match method {
        "POST" => client.post(&url),
        "PATCH" => client.patch(&url),
        _ => client.get(&url),
    };
    request = match body {
        Body::Empty => request,
        Body::Json(text) => request
            .header("content-type", "application/json")
            .body(text),
        Body::ShopEvents => request.header("content-type", "application/json").body(
            serde_json::to_vec(&EventBatch {
                events: shop_events(2 * call),
            })
            .unwrap(),
        ),
        Body::ShopEventsBinary => request
            .header("content-type", sessiondb_protocol::binary::CONTENT_TYPE)
            .body(sessiondb_protocol::binary::encode_batch(&shop_events(
                2 * call,
            ))),
        Body::NewProject => request
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": format!("created-{call}") }).to_string()),
    };
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the node answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    RawResponse {
        status,
        headers,
        body,
        text,
    }
}

fn created_key(raw: &RawResponse) -> String {
    assert_eq!(raw.status, StatusCode::CREATED, "{}", raw.text);
    raw.body["ingest_key"]
        .as_str()
        .expect("the creation answer carries the ingest key")
        .to_string()
}

async fn create_project(node: &TestNode, name: &str) -> String {
    let raw = node
        .post_raw(
            "/v1/projects",
            serde_json::json!({ "name": name }).to_string(),
        )
        .await;
    created_key(&raw)
}

/// Sends a small `shop` batch with `credential` as the bearer; answers the
/// status.
async fn ingest_with(node: &TestNode, credential: &str, call: usize) -> StatusCode {
    let authorization = format!("Bearer {credential}");
    send(
        node,
        "POST",
        "/v1/events",
        Body::ShopEvents,
        Some(&authorization),
        call,
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_against_every_endpoint_class() {
    let options = NodeOptions {
        start_ms: START_MS,
        shards: None,
    };
    let arguments = vec!["--viewer-token".to_string(), VIEWER_TOKEN.to_string()];
    let node = TestNode::start_with_args(options, arguments).await;
    let credentials = Credentials {
        admin: node.admin_token().to_string(),
        shop_key: create_project(&node, "shop").await,
        blog_key: create_project(&node, "blog").await,
        cluster_secret: std::fs::read_to_string(node.node_data_dir().join("cluster-secret"))
            .expect("the generated cluster secret")
            .trim_end()
            .to_string(),
        viewer: VIEWER_TOKEN.to_string(),
    };
    // An experiment to query.
    assert_eq!(
        ingest_with(&node, &credentials.admin, 1_000).await,
        StatusCode::OK
    );

    let mut call = 0;
    let mut failures = Vec::new();
    for row in TABLE {
        for (presented, expect) in PRESENTED.iter().zip(row.expect) {
            call += 1;
            let authorization = credentials.bearer(*presented);
            let raw = send(
                &node,
                row.method,
                row.path,
                row.body,
                authorization.as_deref(),
                call,
            )
            .await;
            let passed = match expect {
                // (Readiness may be 503 while the node elects itself.)
                Allowed => {
                    raw.status != StatusCode::UNAUTHORIZED
                        && raw.status != StatusCode::FORBIDDEN
                        && raw.status != StatusCode::INTERNAL_SERVER_ERROR
                }
                Unauthorized => {
                    raw.status == StatusCode::UNAUTHORIZED
                        && raw.error_code() == Some("unauthorized")
                }
                Forbidden => {
                    raw.status == StatusCode::FORBIDDEN && raw.error_code() == Some("forbidden")
                }
            };
            // A refusal names the class needed, never the credential given.
            let leaks = expect != Allowed
                && [
                    &credentials.admin,
                    &credentials.shop_key,
                    &credentials.blog_key,
                    &credentials.cluster_secret,
                    &credentials.viewer,
                ]
                .iter()
                .any(|secret| raw.text.contains(secret.as_str()));
            let names_class = expect == Allowed
                || ["admin token", "ingest key", "cluster secret"]
                    .iter()
                    .any(|class| raw.text.contains(class));
            if !passed || leaks || !names_class {
                failures.push(format!(
                    "{} ({} {}) with {presented:?}: expected {expect:?}, got {} {}",
                    row.class, row.method, row.path, raw.status, raw.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An ingest key may not smuggle events for another project into a
    // batch of its own project's: the whole batch is refused.
    let mut mixed = shop_events(5_000);
    mixed[1].project = "blog".into();
    let raw = node
        .post_with_headers(
            "/v1/events",
            &[("authorization", &format!("Bearer {}", credentials.shop_key))],
            serde_json::to_vec(&EventBatch { events: mixed }).unwrap(),
        )
        .await;
    assert_eq!(raw.status, StatusCode::FORBIDDEN, "{}", raw.text);
    // The refused batches applied nothing: only the admin's batch, the two
    // table rows' shop-key batches and the admin rows' batches were taken.
    let status = node.get_raw("/v1/status").await;
    let accepted = status.body["events_accepted"].as_u64().unwrap();
    assert_eq!(accepted, 2 * (1 + 4), "{}", status.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ingest_key_works_beside_the_old_one_until_the_grace_period_ends() {
    let mut node = TestNode::start(START_MS).await;
    let old_key = create_project(&node, "shop").await;
    let raw = node
        .post_raw(
            "/v1/projects/shop/ingest-key/rotate",
            serde_json::json!({ "grace_ms": HOUR_MS }).to_string(),
        )
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let rotated: RotatedKey = serde_json::from_value(raw.body).unwrap();
    assert_ne!(rotated.key, old_key);
    assert_eq!(rotated.previous_valid_until_ms, Some(START_MS + HOUR_MS));
    assert_eq!(ingest_with(&node, &old_key, 1).await, StatusCode::OK);
    assert_eq!(ingest_with(&node, &rotated.key, 2).await, StatusCode::OK);

    // The rotation is journaled: a killed and restarted node still knows
    // both keys, and the grace period still ends on time.
    node.kill_9().await;
    node.restart().await;
    assert_eq!(ingest_with(&node, &old_key, 3).await, StatusCode::OK);
    assert_eq!(ingest_with(&node, &rotated.key, 4).await, StatusCode::OK);
    node.set_clock(START_MS + HOUR_MS - 1).await;
    assert_eq!(ingest_with(&node, &old_key, 5).await, StatusCode::OK);
    node.set_clock(START_MS + HOUR_MS).await;
    assert_eq!(
        ingest_with(&node, &old_key, 6).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(ingest_with(&node, &rotated.key, 7).await, StatusCode::OK);

    // Grace 0 ends the old key at once; a bad grace period is refused.
    let raw = node
        .post_raw("/v1/projects/shop/ingest-key/rotate", r#"{"grace_ms": 0}"#)
        .await;
    let newest: RotatedKey = serde_json::from_value(raw.body).unwrap();
    assert_eq!(newest.previous_valid_until_ms, None);
    assert_eq!(
        ingest_with(&node, &rotated.key, 8).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(ingest_with(&node, &newest.key, 9).await, StatusCode::OK);
    for (body, code) in [
        (r#"{"grace_ms": -1}"#, "invalid_grace"),
        (r#"{"grace_ms": 9999999999999}"#, "invalid_grace"),
        (r#"{"grace_ms": "soon"}"#, "malformed_json"),
    ] {
        let raw = node
            .post_raw("/v1/projects/shop/ingest-key/rotate", body)
            .await;
        assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{body}: {}", raw.text);
        assert_eq!(raw.error_code(), Some(code), "{body}: {}", raw.text);
    }
    let raw = node
        .post_raw("/v1/projects/nowhere/ingest-key/rotate", "")
        .await;
    assert_eq!(raw.status, StatusCode::NOT_FOUND, "{}", raw.text);
    // An ingest key cannot rotate keys, not even its own.
    let raw = node
        .post_with_headers(
            "/v1/projects/shop/ingest-key/rotate",
            &[("authorization", &format!("Bearer {}", newest.key))],
            "",
        )
        .await;
    assert_eq!(raw.status, StatusCode::FORBIDDEN, "{}", raw.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_token_works_beside_the_old_one_until_the_grace_period_ends() {
    // The default grace period comes from the node's setting.
    let grace_ms = 5 * 60_000;
    let mut node = TestNode::start_with_generated_admin_token(NodeOptions {
        start_ms: START_MS,
        shards: None,
    })
    .await;
    node.kill_9().await;
    node.restart_with_args(vec![
        "--key-rotation-grace-ms".to_string(),
        grace_ms.to_string(),
    ])
    .await;
    let old_token = node.admin_token().to_string();
    let raw = node.post_admin("/v1/admin/token/rotate", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let rotated: RotatedKey = serde_json::from_value(raw.body).unwrap();
    assert_eq!(rotated.previous_valid_until_ms, Some(START_MS + grace_ms));
    assert!(!node.stderr_text().contains(&rotated.key));

    assert_eq!(checkpoint(&node, &old_token).await, StatusCode::OK);
    assert_eq!(checkpoint(&node, &rotated.key).await, StatusCode::OK);

    node.kill_9().await;
    node.restart().await;
    node.set_admin_token(&rotated.key);
    assert_eq!(checkpoint(&node, &old_token).await, StatusCode::OK);
    node.set_clock(START_MS + grace_ms).await;
    assert_eq!(
        checkpoint(&node, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(checkpoint(&node, &rotated.key).await, StatusCode::OK);

    // A configuration naming a retired token must not bring it back: the
    // node refuses to start and says why. (Rotate once more without grace:
    // a restart's manual clock starts inside the first grace period again.)
    let raw = node
        .post_admin("/v1/admin/token/rotate", r#"{"grace_ms": 0}"#)
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    node.kill_9().await;
    let failure = node
        .try_restart_with_args(vec!["--admin-token".to_string(), old_token])
        .await
        .expect_err("the retired token is refused");
    assert!(failure.stderr.contains("rotated"), "{}", failure.stderr);
}

/// The status of `POST /v1/admin/checkpoint` with `token`.
async fn checkpoint(node: &TestNode, token: &str) -> StatusCode {
    let authorization = format!("Bearer {token}");
    node.post_with_headers(
        "/v1/admin/checkpoint",
        &[("authorization", authorization.as_str())],
        "",
    )
    .await
    .status
}

/// Every file under `directory`, recursively.
fn files_under(directory: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read the data directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_token_is_stored_in_plaintext() {
    let mut node = TestNode::start_with_generated_admin_token(NodeOptions {
        start_ms: START_MS,
        shards: None,
    })
    .await;
    let admin_token = node.admin_token().to_string();
    let first_key = create_project(&node, "shop").await;
    let raw = node
        .post_raw("/v1/projects/shop/ingest-key/rotate", "")
        .await;
    let second_key: RotatedKey = serde_json::from_value(raw.body).unwrap();
    assert_eq!(ingest_with(&node, &first_key, 1).await, StatusCode::OK);
    let raw = node.post_admin("/v1/admin/token/rotate", "").await;
    let second_token: RotatedKey = serde_json::from_value(raw.body).unwrap();
    node.set_admin_token(&second_token.key);
    // A checkpoint writes every project; then a restart replays the log.
    let raw = node.post_admin("/v1/admin/checkpoint", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    node.kill_9().await;
    node.restart().await;
    assert_eq!(ingest_with(&node, &second_key.key, 2).await, StatusCode::OK);

    let secrets = [&admin_token, &second_token.key, &first_key, &second_key.key];
    let files = files_under(&node.node_data_dir());
    assert!(files.len() > 3, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).expect("read a data file");
        for secret in secrets {
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "{} holds a key in plaintext", file.display());
        }
    }
    // Nor does the node's log.
    let log = node.stderr_text();
    for secret in secrets {
        assert!(!log.contains(secret.as_str()));
    }
}
