//! The admin token against the real binary (`docs/console.md`): which
//! endpoints need it, how it is refused, and the generated token file.

use crate::support::node::{NodeOptions, TestNode, ADMIN_TOKEN_FILE_NAME, TEST_ADMIN_TOKEN};
use reqwest::StatusCode;

/// 2025-11-26 10:00:00 UTC.
const START_MS: i64 = 1_764_151_200_000;

/// `(method, path)` of every endpoint that needs the admin token.
const GUARDED: &[(&str, &str)] = &[
    ("POST", "/v1/admin/checkpoint"),
    ("POST", "/v1/admin/clock"),
    ("GET", "/console/api/status"),
    ("GET", "/console/api/projects"),
    ("GET", "/console/api/projects/shop"),
    ("GET", "/console/api/projects/shop/experiments/x/results"),
    ("GET", "/console/api/projects/shop/experiments/x/timeseries"),
];

async fn call(
    node: &TestNode,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut request = match method {
        "POST" => client
            .post(node.url(path))
            .header("content-type", "application/json")
            .body(format!("{{\"now_ms\": {START_MS}}}")),
        _ => client.get(node.url(path)),
    };
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the node answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn guarded_endpoints_refuse_a_missing_or_wrong_token() {
    let node = TestNode::start(START_MS).await;
    node.create_project("shop", serde_json::json!({})).await;
    let wrong_same_length = format!("{}X", &TEST_ADMIN_TOKEN[..TEST_ADMIN_TOKEN.len() - 1]);
    let refusals = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {wrong_same_length}")),
        Some(format!("Bearer {TEST_ADMIN_TOKEN}extra")),
        Some(format!("Basic {TEST_ADMIN_TOKEN}")),
        Some(TEST_ADMIN_TOKEN.to_string()),
    ];
    for (method, path) in GUARDED {
        for authorization in &refusals {
            let (status, body) = call(&node, method, path, authorization.as_deref()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {authorization:?}: {body}"
            );
            assert_eq!(body["error"], "unauthorized", "{method} {path}: {body}");
        }
        let right = format!("Bearer {TEST_ADMIN_TOKEN}");
        let (status, body) = call(&node, method, path, Some(&right)).await;
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with the right token: {body}"
        );
    }
    // Health, readiness and the console's static assets stay open (every
    // other endpoint class is in `security.rs`).
    for path in [
        "/v1/health",
        "/v1/ready",
        "/console/",
        "/console/app.js",
        "/console/charts.js",
        "/console/style.css",
    ] {
        let raw = node.get_anonymous(path).await;
        assert_eq!(raw.status, StatusCode::OK, "GET {path}: {}", raw.text);
    }
    // The console's page loads nothing from elsewhere.
    let page = reqwest::get(node.url("/console/")).await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
}

#[tokio::test]
async fn a_generated_token_is_shown_once_stored_hashed_and_reused() {
    let mut node = TestNode::start_with_generated_admin_token(NodeOptions {
        start_ms: START_MS,
        shards: None,
    })
    .await;
    let path = node.node_data_dir().join(ADMIN_TOKEN_FILE_NAME);
    let token = node.admin_token().to_string();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    // The file holds the token's hash, never the token; the log names the
    // file, never the token.
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(!stored.contains(&token), "{stored}");
    assert!(stored.contains("sha256:"), "{stored}");
    let log = node.stderr_text();
    assert!(log.contains(&path.display().to_string()), "{log}");
    assert!(!log.contains(&token));

    let (status, _) = call(
        &node,
        "POST",
        "/v1/admin/checkpoint",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &node,
        "POST",
        "/v1/admin/checkpoint",
        Some(&format!("Bearer {TEST_ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A restart on the same data directory keeps the token (by its hash)
    // and shows nothing new.
    node.restart().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), stored);
    let (status, _) = call(
        &node,
        "POST",
        "/v1/admin/checkpoint",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!node.stderr_text().contains(&token));
}

#[tokio::test]
async fn a_short_configured_token_is_refused_at_startup() {
    let mut node = TestNode::start_with_generated_admin_token(NodeOptions {
        start_ms: START_MS,
        shards: None,
    })
    .await;
    node.kill_9().await;
    let config = node.data_dir().join("short-token.toml");
    std::fs::write(&config, "admin_token = \"short\"\n").unwrap();
    let failure = node
        .try_restart_with_args(vec!["--config".to_string(), config.display().to_string()])
        .await
        .expect_err("a 5-byte token must be refused");
    assert!(failure.stderr.contains("16 to 256"), "{}", failure.stderr);
}

/// The viewer token must be a credential of its own: equal to the admin
/// token, every request would be classified as the admin's.
#[tokio::test]
async fn a_viewer_token_equal_to_the_admin_token_is_refused_at_startup() {
    let mut node = TestNode::start(START_MS).await;
    node.kill_9().await;
    let failure = node
        .try_restart_with_args(vec![
            "--viewer-token".to_string(),
            node.admin_token().to_string(),
        ])
        .await
        .expect_err("the admin token as the viewer token must be refused");
    assert!(
        failure.stderr.contains("--viewer-token is the admin token"),
        "{}",
        failure.stderr
    );
    assert!(
        !failure.stderr.contains(node.admin_token()),
        "{}",
        failure.stderr
    );
}
