//! Compressed ingest bodies against the real binary: `Content-Encoding:
//! gzip` and `deflate` on every ingest path (native JSON and binary,
//! Optimizely, Segment) give the same answers as the plain bodies; the
//! body limit counts decompressed bytes, so a gzip bomb is a `413`, not an
//! out-of-memory node; an unknown coding is a `415`; each refusal is
//! counted by reason.

use crate::support::node::{RawResponse, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sessiondb_protocol::IngestResponse;
use std::io::Write;

/// 2025-11-26T12:00:00Z: the fixtures' messages lie inside its lateness.
const NOW_MS: i64 = 1_764_158_400_000;
/// 2025-11-26T00:00:00Z: the start of a results range holding every event.
const FROM_MS: i64 = 1_764_115_200_000;
/// Documented limit (docs/api.md).
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post(
    node: &TestNode,
    path: &str,
    authorization: &str,
    encoding: &str,
    body: Vec<u8>,
) -> RawResponse {
    node.post_with_headers(
        path,
        &[
            ("authorization", authorization),
            ("content-encoding", encoding),
        ],
        body,
    )
    .await
}

fn accepted(raw: &RawResponse) -> (u64, u64, usize) {
    assert_eq!(raw.status, StatusCode::OK, "ingest answer: {}", raw.text);
    let response: IngestResponse = serde_json::from_value(raw.body.clone()).unwrap();
    (
        response.accepted as u64,
        response.duplicates as u64,
        response.rejected.len(),
    )
}

fn refused(metrics: &str, limit: &str) -> u64 {
    let prefix = format!("sessiondb_requests_refused_total{{limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .parse()
        .unwrap()
}

fn native_batch(prefix: &str) -> Vec<u8> {
    let events: Vec<_> = (0..50)
        .map(|index| {
            json!({"id": format!("{prefix}-{index}"), "project": "shop",
                   "visitor": format!("{prefix}-visitor-{index}"), "ts": NOW_MS - 60_000,
                   "type": "decision",
                   "decisions": [{"experiment": "compressed", "variation": "a"}]})
        })
        .collect();
    json!({ "events": events }).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingest_path_reads_gzip_and_deflate() {
    let node = TestNode::start(NOW_MS).await;
    let shop_key = node
        .create_project("shop", json!({}))
        .await
        .ingest_key
        .expect("the creation answer carries the key");
    node.create_project("8231990343", json!({})).await;
    let admin = format!("Bearer {}", node.admin_token());
    let shop = format!("Bearer {shop_key}");

    // Native JSON in each coding: every event counted once.
    for (prefix, encoding, body) in [
        ("gzip", "gzip", gzip(&native_batch("gzip"))),
        ("zlib", "deflate", zlib(&native_batch("zlib"))),
        ("raw", "deflate", raw_deflate(&native_batch("raw"))),
        ("identity", "identity", native_batch("identity")),
    ] {
        let raw = post(&node, "/v1/events", &shop, encoding, body).await;
        assert_eq!(accepted(&raw), (50, 0, 0), "{prefix}");
    }
    let results = node
        .results(
            "shop",
            "compressed",
            FROM_MS,
            FROM_MS + 24 * 3_600_000,
            None,
            &[],
        )
        .await;
    assert_eq!(results.groups[0].variations[0].visitors, 200);

    // Native binary, gzipped.
    let event: sessiondb_protocol::Event = serde_json::from_value(json!({
        "id": "binary-1", "project": "shop", "visitor": "binary-visitor",
        "ts": NOW_MS - 60_000, "type": "pageview"}))
    .unwrap();
    let binary = sessiondb_protocol::binary::encode_batch(&[event]);
    let headers = [
        ("authorization", shop.as_str()),
        ("content-encoding", "gzip"),
        ("content-type", sessiondb_protocol::binary::CONTENT_TYPE),
    ];
    let raw = node
        .send_with_exact_headers(
            Method::POST,
            "/v1/events",
            &headers,
            Some(gzip(&binary).into()),
        )
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let response: IngestResponse = serde_json::from_value(raw.body).unwrap();
    let raw_counts = (
        response.accepted,
        response.duplicates,
        response.rejected.len(),
    );
    assert_eq!(raw_counts, (1, 0, 0));

    // Segment, as `segment-analytics-python` sends with gzip=True: the
    // same 8 events as the plain batch (tests/it/compat_segment.rs).
    let basic = format!("Basic {}", base64_of(&format!("{shop_key}:")));
    let batch = fixture("segment/batch.json");
    let raw = post(&node, "/v1/batch", &basic, "gzip", gzip(&batch)).await;
    assert_eq!(accepted(&raw).0, 8, "{}", raw.text);
    // The retry in another coding is all duplicates: same events.
    let raw = post(&node, "/v1/batch", &basic, "deflate", zlib(&batch)).await;
    assert_eq!(accepted(&raw).0, 0, "{}", raw.text);
    assert_eq!(accepted(&raw).1, 8, "{}", raw.text);

    // Optimizely: three impressions.
    let impressions = fixture("optimizely/impressions.json");
    let raw = post(
        &node,
        "/optimizely/v1/events",
        &admin,
        "gzip",
        gzip(&impressions),
    )
    .await;
    assert_eq!(accepted(&raw), (3, 0, 0));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_by_its_decompressed_size() {
    let node = TestNode::start(NOW_MS).await;
    node.create_project("shop", json!({})).await;
    let admin = format!("Bearer {}", node.admin_token());

    // 32 MiB of zeros is about 32 KiB of gzip: far under the limit as
    // sent, twice over it inflated.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..32 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < BODY_BYTES_MAX / 8, "{} bytes", bomb.len());
    for path in ["/v1/events", "/v1/batch", "/optimizely/v1/events"] {
        let raw = post(&node, path, &admin, "gzip", bomb.clone()).await;
        assert_eq!(
            raw.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            raw.text
        );
        assert_eq!(
            raw.error_code(),
            Some("decompressed_body_too_large"),
            "{path}"
        );
        assert!(raw.text.contains("BODY_BYTES_MAX"), "{}", raw.text);
    }

    // A body exactly at the limit once inflated is read whole (trailing
    // whitespace is valid JSON); one byte more is refused.
    let mut at_limit = br#"{"events": []}"#.to_vec();
    at_limit.resize(BODY_BYTES_MAX, b' ');
    let raw = post(&node, "/v1/events", &admin, "gzip", gzip(&at_limit)).await;
    assert_eq!(accepted(&raw), (0, 0, 0));
    at_limit.push(b' ');
    let raw = post(&node, "/v1/events", &admin, "gzip", gzip(&at_limit)).await;
    assert_eq!(
        raw.error_code(),
        Some("decompressed_body_too_large"),
        "{}",
        raw.text
    );

    let metrics = node.get_admin("/metrics").await.text;
    assert_eq!(refused(&metrics, "decompressed_body_bytes"), 4);
    // The node is still serving.
    let raw = post(
        &node,
        "/v1/events",
        &admin,
        "gzip",
        gzip(&native_batch("after")),
    )
    .await;
    assert_eq!(accepted(&raw), (50, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stacked_and_corrupt_codings_are_named() {
    let node = TestNode::start(NOW_MS).await;
    node.create_project("shop", json!({})).await;
    let admin = format!("Bearer {}", node.admin_token());
    let body = native_batch("x");
    for encoding in ["br", "zstd", "gzip, gzip"] {
        let raw = post(&node, "/v1/events", &admin, encoding, body.clone()).await;
        assert_eq!(
            raw.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{}",
            raw.text
        );
        assert_eq!(raw.error_code(), Some("unsupported_content_encoding"));
        assert!(raw.text.contains("gzip"), "names what works: {}", raw.text);
    }
    // Says gzip, is not.
    let raw = post(&node, "/v1/events", &admin, "gzip", body.clone()).await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{}", raw.text);
    assert_eq!(raw.error_code(), Some("malformed_compressed_body"));
    let mut truncated = gzip(&body);
    truncated.truncate(truncated.len() / 2);
    let raw = post(&node, "/v1/batch", &admin, "gzip", truncated).await;
    assert_eq!(
        raw.error_code(),
        Some("malformed_compressed_body"),
        "{}",
        raw.text
    );

    let metrics = node.get_admin("/metrics").await.text;
    assert_eq!(refused(&metrics, "content_encoding"), 3);
}
