//! Every limit of `docs/operations.md` ("Limits") against the real binary,
//! each configured small: hit it, check the status, the code, the message
//! and `Retry-After` where the answer means "later", and that the node
//! keeps serving afterwards (health, a query):
//!
//! - requests in flight per credential → `429 too_many_requests`;
//! - events per second per project → `429 rate_limited`;
//! - query cost → `422 query_too_expensive`;
//! - ingest overload (slow disk, full shard queue) → `503 overloaded`;
//! - open connections → the next connection waits until one closes.
//!
//! The overload test (`overloaded_node_sheds_load_and_loses_no_acknowledged_event`)
//! runs more concurrent clients than the node can serve and checks that
//! every acknowledged event is counted exactly once.

use crate::support::node::{NodeOptions, RawResponse, TestNode};
use reqwest::StatusCode;
use sessiondb_protocol::{Decision, Event, EventBatch, EventType, IngestResponse, Timestamp};
use sessiondb_test_support::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOUR_MS: i64 = 3_600_000;
/// 2025-11-20 10:00 UTC, on an hour boundary.
const NOW_MS: i64 = 1_763_632_800_000;
const EXPERIMENT: &str = "checkout";
/// Bound on any wait for a condition in these tests (not a delay).
const WAIT_MAX: Duration = Duration::from_secs(60);

fn args(flags: &[(&str, &str)]) -> Vec<String> {
    flags
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

async fn start(shards: u32, flags: &[(&str, &str)]) -> TestNode {
    let options = NodeOptions {
        start_ms: NOW_MS,
        shards: Some(shards),
    };
    TestNode::start_with_args(options, args(flags)).await
}

/// A decision of visitor `visitor` for variation `a` or `b`.
fn decision(id: &str, project: &str, visitor: &str, variation: &str) -> Event {
    Event {
        id: id.to_string(),
        project: project.to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(NOW_MS - 60_000),
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

fn batch_body(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&EventBatch {
        events: events.to_vec(),
    })
    .expect("a batch serializes")
}

/// Posts a batch with the project's ingest key as the bearer credential.
async fn post_batch(node: &TestNode, key: &str, events: &[Event]) -> RawResponse {
    let authorization = format!("Bearer {key}");
    node.post_with_headers(
        "/v1/events",
        &[("authorization", authorization.as_str())],
        batch_body(events),
    )
    .await
}

fn retry_after(raw: &RawResponse) -> Option<u64> {
    raw.headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Visitors counted by the experiment's results over the hour of `NOW_MS`.
async fn visitors_counted(node: &TestNode, project: &str) -> i64 {
    let path = TestNode::results_path(
        project,
        EXPERIMENT,
        NOW_MS - HOUR_MS,
        NOW_MS + HOUR_MS,
        None,
        &[],
    );
    let raw = node.get_admin(&path).await;
    assert_eq!(raw.status, StatusCode::OK, "{path}: {}", raw.text);
    let results: sessiondb_protocol::ResultsResponse =
        serde_json::from_value(raw.body).expect("a ResultsResponse");
    results
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .map(|variation| variation.visitors)
        .sum()
}

/// The node still serves: health, and a results query.
async fn assert_serving(node: &TestNode, project: &str) {
    let health = node.get_raw("/v1/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    visitors_counted(node, project).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_per_credential_are_limited() {
    // A slow disk keeps each ingest request in flight for a while.
    let node = start(
        1,
        &[
            ("--requests-in-flight-per-credential-max", "2"),
            ("--fault-log-sync-delay-ms", "300"),
        ],
    )
    .await;
    let project = node.create_project("shop", serde_json::json!({})).await;
    let node = Arc::new(node);
    let key = Arc::new(project.ingest_key.clone().expect("creation shows the key"));
    let mut tasks = Vec::new();
    for index in 0..12 {
        let (node, key) = (Arc::clone(&node), Arc::clone(&key));
        tasks.push(tokio::spawn(async move {
            let event = decision(&format!("e{index}"), "shop", &format!("v{index}"), "a");
            post_batch(&node, &key, &[event]).await
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for task in tasks {
        let raw = task.await.expect("the task ran");
        match raw.status {
            StatusCode::OK => {
                let answer: IngestResponse = serde_json::from_value(raw.body).unwrap();
                accepted += answer.accepted;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(raw.error_code(), Some("too_many_requests"), "{}", raw.text);
                assert!(
                    raw.text.contains("--requests-in-flight-per-credential-max"),
                    "{}",
                    raw.text
                );
                assert_eq!(retry_after(&raw), Some(1), "{:?}", raw.headers);
            }
            other => panic!("unexpected {other}: {}", raw.text),
        }
    }
    assert!(refused > 0, "12 concurrent requests against a limit of 2");
    assert!(accepted > 0);
    // The refused events were not applied: exactly the accepted ones count
    // (the query carries the admin token, another credential, so the
    // clients' load does not limit it).
    assert_eq!(visitors_counted(&node, "shop").await, accepted as i64);
    assert_serving(&node, "shop").await;
    let metrics = node.get_admin("/metrics").await.text;
    assert!(
        metrics.lines().any(|line| line
            .starts_with("sessiondb_requests_refused_total{limit=\"in_flight\"}")
            && line.split(' ').nth(1) == Some(&refused.to_string())),
        "{metrics}"
    );
}

#[tokio::test]
async fn project_event_rate_is_limited_by_a_token_bucket() {
    let node = start(4, &[("--project-events-per-second-max", "10")]).await;
    let project = node.create_project("shop", serde_json::json!({})).await;
    let key = project.ingest_key.clone().expect("creation shows the key");
    let events: Vec<Event> = (0..10)
        .map(|index| decision(&format!("e{index}"), "shop", &format!("v{index}"), "a"))
        .collect();
    // A burst of one second's worth passes.
    let first = post_batch(&node, &key, &events).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    // One more event in the same instant (the manual clock stands still).
    let extra = [decision("e10", "shop", "v10", "b")];
    let refused = post_batch(&node, &key, &extra).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_code(), Some("rate_limited"));
    assert!(
        refused.text.contains("10 events per second"),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("--project-events-per-second-max"));
    assert_eq!(retry_after(&refused), Some(1), "{:?}", refused.headers);
    // Other projects have their own bucket.
    let other = node.create_project("blog", serde_json::json!({})).await;
    let blog = [decision("b0", "blog", "w0", "a")];
    let raw = post_batch(
        &node,
        other.ingest_key.as_deref().expect("creation shows the key"),
        &blog,
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    // A second later the bucket has refilled.
    node.set_clock(NOW_MS + 1_000).await;
    let again = post_batch(&node, &key, &extra).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(visitors_counted(&node, "shop").await, 11);
    assert_serving(&node, "shop").await;
}

#[tokio::test]
async fn expensive_queries_are_refused_with_their_cost() {
    let node = start(4, &[("--query-cost-max", "10")]).await;
    let project = node.create_project("shop", serde_json::json!({})).await;
    let events = [
        decision("e0", "shop", "v0", "a"),
        decision("e1", "shop", "v1", "b"),
    ];
    let raw = post_batch(
        &node,
        project
            .ingest_key
            .as_deref()
            .expect("creation shows the key"),
        &events,
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    // 2 variation cells × 24 hourly buckets = 48 > 10.
    let day = TestNode::results_path("shop", EXPERIMENT, NOW_MS - 24 * HOUR_MS, NOW_MS, None, &[]);
    let refused = node.get_admin(&day).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_code(), Some("query_too_expensive"));
    for part in ["48 cell-buckets", "2 cells × 24 buckets", "the limit is 10"] {
        assert!(refused.text.contains(part), "{part}: {}", refused.text);
    }
    let series = format!(
        "/v1/projects/shop/experiments/{EXPERIMENT}/timeseries?from={}&to={NOW_MS}",
        NOW_MS - 24 * HOUR_MS
    );
    let refused = node.get_admin(&series).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_code(), Some("query_too_expensive"));
    // 2 cells × 2 buckets = 4: answered.
    assert_eq!(visitors_counted(&node, "shop").await, 2);
    assert_serving(&node, "shop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_ingest_queues_answer_503_overloaded_with_retry_after() {
    // One shard, a disk that takes 400 ms per sync and a 20 ms wait for
    // room: 150 concurrent batches overflow the shard's queue of 64. The
    // in-flight limit is set high so that it is not what refuses.
    let node = start(
        1,
        &[
            ("--fault-log-sync-delay-ms", "400"),
            ("--ingest-queue-wait-ms", "20"),
            ("--requests-in-flight-per-credential-max", "1000"),
        ],
    )
    .await;
    let project = node.create_project("shop", serde_json::json!({})).await;
    let node = Arc::new(node);
    let key = Arc::new(project.ingest_key.clone().expect("creation shows the key"));
    let mut tasks = Vec::new();
    for index in 0..150 {
        let (node, key) = (Arc::clone(&node), Arc::clone(&key));
        tasks.push(tokio::spawn(async move {
            let event = decision(&format!("e{index}"), "shop", &format!("v{index}"), "a");
            post_batch(&node, &key, &[event]).await
        }));
    }
    let mut accepted = 0;
    let mut overloaded = 0;
    for task in tasks {
        let raw = task.await.expect("the task ran");
        match raw.status {
            StatusCode::OK => {
                let answer: IngestResponse = serde_json::from_value(raw.body).unwrap();
                accepted += answer.accepted;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                overloaded += 1;
                assert_eq!(raw.error_code(), Some("overloaded"), "{}", raw.text);
                assert!(raw.text.contains("within 20 ms"), "{}", raw.text);
                assert_eq!(retry_after(&raw), Some(1), "{:?}", raw.headers);
            }
            other => panic!("unexpected {other}: {}", raw.text),
        }
    }
    assert!(overloaded > 0, "150 batches against a queue of 64");
    assert!(accepted > 0);
    // A 503 applied nothing: exactly the acknowledged events count.
    assert_eq!(visitors_counted(&node, "shop").await, accepted as i64);
    assert_serving(&node, "shop").await;
}

/// Sends a keep-alive `GET /v1/health` on `stream` and reads until the
/// answer's status line has arrived.
async fn health_on(stream: &mut tokio::net::TcpStream) -> String {
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write a request");
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let read = stream.read(&mut buffer).await.expect("read an answer");
        assert!(read > 0, "the node closed the connection");
        answer.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let node = start(1, &[("--http-workers", "1"), ("--connections-max", "2")]).await;
    let address = node.address().to_string();
    let mut first = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(health_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(health_on(&mut second).await.starts_with("HTTP/1.1 200"));
    // A third connection is not served while two are open: its request
    // stays unanswered (well within the 5 s keep-alive of the others).
    let mut third = tokio::net::TcpStream::connect(&address).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_millis(500), health_on(&mut third)).await;
    assert!(
        pending.is_err(),
        "served beyond --connections-max: {pending:?}"
    );
    // Closing one lets it in.
    drop(first);
    let answer = tokio::time::timeout(WAIT_MAX, health_on(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
    drop(third);
    let health = node.get_raw("/v1/health").await;
    assert_eq!(health.status, StatusCode::OK);
}

/// One client of the overload test: sends its batches one after the other,
/// retrying a refused batch (429/503) after the node's `Retry-After`;
/// answers the ids the node acknowledged and the refusals it saw.
async fn overload_client(
    node: Arc<TestNode>,
    key: Arc<String>,
    client: usize,
    batches: usize,
    batch_events: usize,
) -> (BTreeSet<String>, usize) {
    let mut acknowledged = BTreeSet::new();
    let mut refusals = 0;
    for batch in 0..batches {
        let events: Vec<Event> = (0..batch_events)
            .map(|index| {
                let id = format!("c{client}-b{batch}-e{index}");
                let variation = if index % 2 == 0 { "a" } else { "b" };
                decision(&id, "shop", &id, variation)
            })
            .collect();
        // Not a poll: the client follows the node's Retry-After.
        let sent = tokio::time::timeout(WAIT_MAX, async {
            loop {
                let raw = post_batch(&node, &key, &events).await;
                match raw.status {
                    StatusCode::OK => {
                        let answer: IngestResponse = serde_json::from_value(raw.body).unwrap();
                        assert!(answer.rejected.is_empty(), "{}", raw.text);
                        assert_eq!(answer.accepted + answer.duplicates, batch_events as u64);
                        return;
                    }
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                        refusals += 1;
                        let wait = retry_after(&raw).unwrap_or_else(|| {
                            panic!("{} without Retry-After: {}", raw.status, raw.text)
                        });
                        assert!(
                            ["too_many_requests", "overloaded"]
                                .contains(&raw.error_code().unwrap()),
                            "{}",
                            raw.text
                        );
                        // Retry-After is in seconds; a tenth of it keeps the
                        // test short while still backing off.
                        tokio::time::sleep(Duration::from_millis(wait * 100)).await;
                    }
                    other => panic!("unexpected {other}: {}", raw.text),
                }
            }
        })
        .await;
        assert!(
            sent.is_ok(),
            "client {client} batch {batch} refused for {WAIT_MAX:?}"
        );
        acknowledged.extend(events.iter().map(|event| event.id.clone()));
    }
    (acknowledged, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overloaded_node_sheds_load_and_loses_no_acknowledged_event() {
    const CLIENTS: usize = 40;
    const BATCHES: usize = 8;
    const BATCH_EVENTS: usize = 5;
    // Small limits: every client shares one ingest key allowed 8 requests
    // in flight, one slow-syncing shard with a 10 ms wait for room.
    let node = start(
        2,
        &[
            ("--requests-in-flight-per-credential-max", "8"),
            ("--fault-log-sync-delay-ms", "150"),
            ("--ingest-queue-wait-ms", "10"),
        ],
    )
    .await;
    let project = node.create_project("shop", serde_json::json!({})).await;
    // One visitor before the load, so the experiment exists for the
    // queries sent during it.
    let seed = post_batch(
        &node,
        project
            .ingest_key
            .as_deref()
            .expect("creation shows the key"),
        &[decision("seed", "shop", "seed", "a")],
    )
    .await;
    assert_eq!(seed.status, StatusCode::OK, "{}", seed.text);
    let node = Arc::new(node);
    let key = Arc::new(project.ingest_key.clone().expect("creation shows the key"));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(overload_client(
                Arc::clone(&node),
                Arc::clone(&key),
                client,
                BATCHES,
                BATCH_EVENTS,
            ))
        })
        .collect();
    // While the clients push, the node answers probes and queries (the
    // admin token is another credential than the clients' key).
    let mut probes = 0;
    eventually(WAIT_MAX * 4, "the clients finishing", async || {
        let running = clients
            .iter()
            .filter(|client| !client.is_finished())
            .count();
        if running == 0 {
            return Ok(());
        }
        assert_serving(&node, "shop").await;
        probes += 1;
        Err(format!("{running} clients still running"))
    })
    .await;
    let mut acknowledged = BTreeSet::new();
    let mut refusals = 0;
    for client in clients {
        let (ids, refused) = client.await.expect("the client ran");
        acknowledged.extend(ids);
        refusals += refused;
    }
    assert!(probes > 0);
    assert!(
        refusals > 0,
        "{CLIENTS} clients against 8 in flight: some must be refused"
    );
    assert_eq!(acknowledged.len(), CLIENTS * BATCHES * BATCH_EVENTS);
    // Every acknowledged event counted exactly once (one visitor each,
    // plus the seed).
    assert_eq!(
        visitors_counted(&node, "shop").await,
        acknowledged.len() as i64 + 1
    );
    let status = node.get_raw("/v1/status").await;
    assert_eq!(
        status.body["events_accepted"].as_u64(),
        Some(acknowledged.len() as u64 + 1),
        "{}",
        status.text
    );
    assert_serving(&node, "shop").await;
    eprintln!(
        "overload: {CLIENTS} clients, {} events acknowledged, {refusals} refusals (429/503), {probes} probes served during the load",
        acknowledged.len()
    );
}
