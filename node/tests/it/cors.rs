//! Cross-origin ingest (`docs/security.md`, "Browsers on other origins")
//! against the real binary: preflights and actual requests over real HTTP
//! for listed and unlisted origins, on the ingest paths and on the routes
//! that must stay same-origin; and headless Chromium posting events from a
//! page of another origin.

use crate::support::browser::Browser;
use crate::support::node::{NodeOptions, RawResponse, TestNode};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 2025-11-26 10:00:00 UTC.
const START_MS: i64 = 1_764_151_200_000;
const ALLOWED: &str = "https://shop.example";
const UNLISTED: &str = "https://evil.example";
const INGEST_PATHS: [&str; 3] = ["/v1/events", "/optimizely/v1/events", "/v1/batch"];

async fn start_node(allowed_origins: &str) -> TestNode {
    let options = NodeOptions {
        start_ms: START_MS,
        shards: None,
    };
    let arguments = vec![
        "--cors-allowed-origins".to_string(),
        allowed_origins.to_string(),
    ];
    TestNode::start_with_args(options, arguments).await
}

/// An `OPTIONS` preflight from `origin` for a POST with a credential and a
/// compressed body.
async fn preflight(node: &TestNode, path: &str, origin: &str) -> RawResponse {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization,content-type,content-encoding",
        ),
    ];
    node.send_with_exact_headers(Method::OPTIONS, path, &headers, None)
        .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Whether any `Access-Control-*` header is in the answer.
fn has_cors_headers(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with("access-control-"))
}

fn events_body(id: &str) -> String {
    json!({"events": [{
        "id": id, "project": "shop", "visitor": "v1", "ts": START_MS,
        "type": "decision", "decisions": [{"experiment": "checkout", "variation": "a"}]
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_may_post_events_and_nothing_else_answers_cors() {
    let node = start_node(&format!("{ALLOWED},http://localhost:9999")).await;
    let key = node
        .create_project("shop", json!({}))
        .await
        .ingest_key
        .expect("a new project's key");

    for path in INGEST_PATHS {
        let answer = preflight(&node, path, ALLOWED).await;
        assert_eq!(
            answer.status,
            StatusCode::NO_CONTENT,
            "{path}: {}",
            answer.text
        );
        let headers = &answer.headers;
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            Some(ALLOWED)
        );
        assert!(header(headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
        let allowed_headers = header(headers, "access-control-allow-headers").unwrap_or_default();
        for needed in [
            "Authorization",
            "Content-Type",
            "Content-Encoding",
            "X-SessionDB-Key",
        ] {
            assert!(
                allowed_headers.contains(needed),
                "{path}: {allowed_headers}"
            );
        }
        assert_eq!(header(headers, "access-control-max-age"), Some("3600"));
        assert_eq!(header(headers, "vary"), Some("Origin"));
    }

    // The actual request: accepted, and the page may read the answer.
    let bearer = format!("Bearer {key}");
    let origin_headers = [("origin", ALLOWED), ("authorization", bearer.as_str())];
    let answer = node
        .post_with_headers("/v1/events", &origin_headers, events_body("cors-1"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["accepted"], 1);
    assert_eq!(
        header(&answer.headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    // A refusal is readable by the page too.
    let answer = node
        .post_with_headers("/v1/events", &[("origin", ALLOWED)], events_body("cors-2"))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&answer.headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );

    // An unlisted origin: no CORS headers, the preflight refused.
    for path in INGEST_PATHS {
        let answer = preflight(&node, path, UNLISTED).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), Some("forbidden"));
        assert!(
            answer.text.contains("--cors-allowed-origins"),
            "{}",
            answer.text
        );
        assert!(
            !has_cors_headers(&answer.headers),
            "{path}: {:?}",
            answer.headers
        );
    }
    let unlisted_headers = [("origin", UNLISTED), ("authorization", bearer.as_str())];
    let answer = node
        .post_with_headers("/v1/events", &unlisted_headers, events_body("cors-3"))
        .await;
    assert!(!has_cors_headers(&answer.headers), "{:?}", answer.headers);

    // The console, queries and administration stay same-origin, even for a
    // listed origin.
    for path in [
        "/v1/projects",
        "/v1/status",
        "/console/",
        "/console/api/projects",
    ] {
        let answer = preflight(&node, path, ALLOWED).await;
        assert!(
            !has_cors_headers(&answer.headers),
            "OPTIONS {path}: {:?}",
            answer.headers
        );
        let admin = format!("Bearer {}", node.admin_token());
        let answer = node
            .get_with_headers(
                path,
                &[("origin", ALLOWED), ("authorization", admin.as_str())],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "GET {path}: {}", answer.text);
        assert!(
            !has_cors_headers(&answer.headers),
            "GET {path}: {:?}",
            answer.headers
        );
    }

    // Three refused preflights and one refused request, counted.
    let metrics = node.get_raw("/metrics").await;
    assert!(
        metrics
            .text
            .contains("sessiondb_cors_origins_refused_total 4"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_listed_origins_no_origin_is_allowed() {
    let node = TestNode::start(START_MS).await;
    let answer = preflight(&node, "/v1/events", ALLOWED).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert!(!has_cors_headers(&answer.headers), "{:?}", answer.headers);
}

/// Serves `page` to every request on a port of its own: a second origin on
/// the loopback interface.
async fn serve_page(page: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let origin = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    origin
}

/// What the page's `send()` answers: the status, or `blocked` when the
/// browser refused the request (CORS).
const SEND_SCRIPT: &str = r#"
async function send(url, key, id) {
  const body = JSON.stringify({events: [{id, project: "shop", visitor: "browser-" + id,
    ts: 1764151200000, type: "decision", decisions: [{experiment: "checkout", variation: "a"}]}]});
  try {
    const answer = await fetch(url, {method: "POST", body,
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"}});
    const json = await answer.json();
    return answer.status + ":" + json.accepted;
  } catch (error) {
    return "blocked";
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_a_listed_origin_posts_events_from_chromium() {
    let page_html = format!("<!doctype html><title>shop</title><script>{SEND_SCRIPT}</script>");
    let listed = serve_page(page_html.clone()).await;
    let unlisted = serve_page(page_html).await;
    let node = start_node(&listed).await;
    let key = node
        .create_project("shop", json!({}))
        .await
        .ingest_key
        .expect("a new project's key");
    let browser = Browser::launch().await;
    let events_url = node.url("/v1/events");

    let page = browser.new_page().await;
    page.navigate(&format!("{listed}/")).await;
    let sent = page
        .evaluate(&format!(
            "send({}, {}, 'browser-1')",
            json!(events_url),
            json!(key)
        ))
        .await;
    assert_eq!(sent, json!("200:1"), "a listed origin's page sends events");

    let other = browser.new_page().await;
    other.navigate(&format!("{unlisted}/")).await;
    let sent = other
        .evaluate(&format!(
            "send({}, {}, 'browser-2')",
            json!(events_url),
            json!(key)
        ))
        .await;
    assert_eq!(
        sent,
        json!("blocked"),
        "an unlisted origin's page is blocked"
    );

    // Only the listed page's event arrived.
    let status = node.get_raw("/v1/status").await;
    assert_eq!(status.body["events_accepted"], 1, "{}", status.text);
}
