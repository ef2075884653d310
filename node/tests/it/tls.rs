//! TLS against the real binary (`docs/operations.md`, "TLS"), with a CA
//! and node certificate generated here:
//!
//! - a node with `--tls-cert/--tls-key/--tls-ca` serves HTTPS: the client
//!   library with the CA gets answers; without the CA it refuses the
//!   certificate; plain HTTP to the same port gets no answer;
//! - bad TLS settings stop the node at start with a clear message;
//! - a 2-node cluster with TLS forms (join and Raft over HTTPS) and answers
//!   a results query fanned out to both members over HTTPS.
//!
//! TLS off is every other test of the suite.

use crate::support::cluster::{wait_for, CLUSTER_SECRET, SHARDS, START_MS};
use crate::support::node::{NodeOptions, TempDir, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Decision, Event, EventBatch, EventType, IngestResponse, Timestamp};
use sessiondb_test_support::eventually;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
/// Bound on a member serving the shards its map gives it.
const READY_WAIT_MAX: Duration = Duration::from_secs(60);
const EXPERIMENT: &str = "checkout";

/// A CA and one certificate it signed for `127.0.0.1` and `localhost`,
/// written as PEM files.
struct Certificates {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_pem: String,
}

fn certificates() -> Certificates {
    let dir = TempDir::new("tls");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sessiondb test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node = node_params.signed_by(&node_key, &ca, &ca_key).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Certificates {
        ca: write("ca.pem", &ca.pem()),
        cert: write("node.pem", &node.pem()),
        key: write("node.key", &node_key.serialize_pem()),
        ca_pem: ca.pem(),
        _dir: dir,
    }
}

fn tls_args(certificates: &Certificates) -> Vec<String> {
    vec![
        "--tls-cert".to_string(),
        certificates.cert.display().to_string(),
        "--tls-key".to_string(),
        certificates.key.display().to_string(),
        "--tls-ca".to_string(),
        certificates.ca.display().to_string(),
    ]
}

#[tokio::test]
async fn a_tls_node_serves_https_to_clients_with_the_ca_only() {
    let certificates = certificates();
    let options = NodeOptions {
        start_ms: START_MS,
        shards: Some(4),
    };
    let node = TestNode::start_with_args(options, tls_args(&certificates)).await;
    assert!(
        node.base_url().starts_with("https://"),
        "{}",
        node.base_url()
    );

    // The client library with the CA.
    let client = sessiondb_client::Client::new(node.base_url())
        .with_token(node.admin_token())
        .with_ca_pem(certificates.ca_pem.as_bytes())
        .expect("a valid CA");
    client.health().await.expect("health over HTTPS");
    let status = client.status().await.expect("status over HTTPS");
    assert_eq!(status.shards, 4);

    // Without the CA the node's certificate is not trusted.
    let untrusting = sessiondb_client::Client::new(node.base_url());
    let error = untrusting.health().await.unwrap_err();
    assert!(
        matches!(error, sessiondb_client::ClientError::Transport { .. }),
        "{error:?}"
    );

    // Plain HTTP on the same port gets no HTTP answer.
    let plain_url = node.base_url().replacen("https://", "http://", 1);
    let plain = sessiondb_client::Client::new(plain_url.as_str());
    let error = plain.health().await.unwrap_err();
    assert!(
        matches!(error, sessiondb_client::ClientError::Transport { .. }),
        "{error:?}"
    );

    // An invalid CA is refused by the client library.
    let invalid = sessiondb_client::Client::new(node.base_url()).with_ca_pem(b"not a certificate");
    assert!(invalid.is_err());
}

#[tokio::test]
async fn incomplete_or_unreadable_tls_settings_stop_the_node() {
    let certificates = certificates();
    let binary = env!("CARGO_BIN_EXE_sessiondb");
    let data = TempDir::new("tls-bad");
    let cert = certificates.cert.display().to_string();
    let missing = data.path().join("missing.pem").display().to_string();
    let cases: [(Vec<&str>, &str); 2] = [
        (
            vec!["--tls-cert", &cert],
            "needs all of --tls-cert, --tls-key and --tls-ca",
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &missing,
                "--tls-ca",
                &cert,
            ],
            "missing.pem",
        ),
    ];
    for (flags, expected) in cases {
        let output = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args(&flags)
            .output()
            .await
            .expect("run the binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} started");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

fn member_args(certificates: &Certificates, node_id: u64, join: Option<&TestNode>) -> Vec<String> {
    let mut args = tls_args(certificates);
    args.extend([
        "--node-id".to_string(),
        node_id.to_string(),
        "--cluster-secret".to_string(),
        CLUSTER_SECRET.to_string(),
        "--raft-election-timeout-ms".to_string(),
        "500".to_string(),
    ]);
    if let Some(member) = join {
        args.extend(["--join".to_string(), member.base_url().to_string()]);
    }
    args
}

fn decision(id: &str, visitor: &str, variation: &str) -> Event {
    Event {
        id: id.to_string(),
        project: "shop".to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(START_MS - 60_000),
        event_type: EventType::Decision,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: vec![Decision {
            experiment: EXPERIMENT.to_string(),
            variation: variation.to_string(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_forms_and_fans_queries_out_over_https() {
    let certificates = certificates();
    let options = NodeOptions {
        start_ms: START_MS,
        shards: Some(SHARDS),
    };
    let first =
        TestNode::start_with_args(options.clone(), member_args(&certificates, 1, None)).await;
    wait_for(&[&first], &[1], "node 1 alone", |_| true).await;
    let second =
        TestNode::start_with_args(options, member_args(&certificates, 2, Some(&first))).await;
    // Joining and Raft replication ran over HTTPS.
    wait_for(&[&first, &second], &[1, 2], "two members", |_| true).await;

    // Give node 2 shards, so that a query needs both members' shares.
    let rebalance = first.post_admin("/v1/cluster/rebalance", "{}").await;
    assert_eq!(rebalance.status, StatusCode::OK, "{}", rebalance.text);
    let status = wait_for(&[&first, &second], &[1, 2], "shards on both", |status| {
        status.shards.iter().any(|shard| shard.owner == 2)
            && status.shards.iter().any(|shard| shard.owner == 1)
            && status.shards.iter().all(|shard| shard.moving_to.is_none())
    })
    .await;
    assert!(status.shards.iter().any(|shard| shard.owner == 2));
    // Both members serve exactly the shards the map gives them: ready (the
    // engine roles follow the map a moment after it changes; poll).
    for node in [&first, &second] {
        eventually(READY_WAIT_MAX, "ready", async || {
            let ready = node.get_raw("/v1/ready").await;
            (ready.status == StatusCode::OK)
                .then_some(())
                .ok_or(ready.text)
        })
        .await;
    }
    // The moves show in the metrics of the node that ran them (the
    // leader), on the shard move counter.
    let report: sessiondb_protocol::RebalanceReport =
        serde_json::from_value(rebalance.body.clone()).expect("a RebalanceReport");
    assert!(!report.moved.is_empty(), "{}", rebalance.text);
    let mut committed = 0.0;
    for node in [&first, &second] {
        let metrics = node.get_admin("/metrics").await.text;
        committed += metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("sessiondb_shard_moves_total{outcome=\"committed\"} ")
            })
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no shard move counter in {metrics}"));
    }
    assert_eq!(committed, report.moved.len() as f64);

    // Projects are replicated through placement: created once.
    let key = first
        .create_project("shop", serde_json::json!({}))
        .await
        .ingest_key
        .expect("creation shows the key");
    // (Node 2 learns the project, and its key, a moment later.)
    second.project_eventually("shop").await;
    let events: Vec<Event> = (0..40)
        .map(|index| {
            let variation = if index % 2 == 0 { "a" } else { "b" };
            decision(&format!("e{index}"), &format!("v{index}"), variation)
        })
        .collect();
    let body = serde_json::to_vec(&EventBatch {
        events: events.clone(),
    })
    .unwrap();
    // Each node accepts the events of its shards and refuses the others
    // (`not_owner`); sent to both, every event lands on its owner once.
    let mut accepted = 0;
    for node in [&first, &second] {
        let authorization = format!("Bearer {key}");
        let raw = node
            .post_with_headers(
                "/v1/events",
                &[("authorization", authorization.as_str())],
                body.clone(),
            )
            .await;
        assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
        let answer: IngestResponse = serde_json::from_value(raw.body).unwrap();
        accepted += answer.accepted;
    }
    assert_eq!(accepted, 40, "every event accepted by its owner");

    let path = TestNode::results_path(
        "shop",
        EXPERIMENT,
        START_MS - HOUR_MS,
        START_MS + HOUR_MS,
        None,
        &[],
    );
    let raw = first.get_admin(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let results: sessiondb_protocol::ResultsResponse = serde_json::from_value(raw.body).unwrap();
    assert!(
        !results.partial,
        "node 2's share missing: {:?}",
        results.missing_nodes
    );
    let visitors: i64 = results
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .map(|variation| variation.visitors)
        .sum();
    assert_eq!(visitors, 40);
}
