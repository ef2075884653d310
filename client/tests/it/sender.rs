//! The `Sender` against the real node binary: batching, linger, flush
//! semantics, retries without double counting, backpressure, per-event
//! rejections. Every scenario runs with both encodings.

use crate::support::{custom, decision, Proxy, ProxyMode, TestNode, Workload, START_MS};
use futures::FutureExt;
use sessiondb_client::protocol::{CreateProject, ResultsResponse};
use sessiondb_client::{Backpressure, Client, ClientError, Encoding, ResultsRequest, SenderConfig};
use std::time::Duration;
use tokio::sync::watch;

/// The counts and the first rejection and failure of a report, for
/// failure messages (a whole report can be thousands of lines).
fn brief(report: &sessiondb_client::FlushReport) -> String {
    format!(
        "accepted {}, duplicates {}, rejected {} (first: {:?}), failed {} (first: {:?})",
        report.accepted,
        report.duplicates,
        report.rejected.len(),
        report.rejected.first(),
        report.failed.len(),
        report.failed.first().map(|f| f.error.to_string()),
    )
}

/// A bound on waiting for lingering batches (not a delay).
const RESOLVE_WAIT_MAX: Duration = Duration::from_secs(60);

async fn node_with_project(project: &str) -> (TestNode, Client) {
    let node = TestNode::start().await;
    let client = node.client();
    client
        .create_project(&CreateProject {
            name: project.into(),
            ..Default::default()
        })
        .await
        .expect("create the project");
    (node, client)
}

async fn results(client: &Client, project: &str) -> ResultsResponse {
    let mut request = ResultsRequest::new(project, "checkout");
    request.keys = vec!["purchase".into()];
    client.results(&request).await.expect("results")
}

/// (visitors, unique purchases, total purchases) of variations a and b.
fn counts(results: &ResultsResponse) -> Vec<(String, i64, i64, i64)> {
    results.groups[0]
        .variations
        .iter()
        .map(|v| {
            let purchase = v.metrics.iter().find(|m| m.key == "purchase");
            (
                v.variation.clone(),
                v.visitors,
                purchase.map_or(0, |m| m.unique_conversions),
                purchase.map_or(0, |m| m.total_conversions),
            )
        })
        .collect()
}

fn expected_counts(workload: &Workload) -> Vec<(String, i64, i64, i64)> {
    vec![
        (
            "a".into(),
            workload.visitors_a,
            workload.purchases_a,
            workload.purchases_a,
        ),
        (
            "b".into(),
            workload.visitors_b,
            workload.purchases_b,
            workload.purchases_b,
        ),
    ]
}

async fn batching_and_flush(encoding: Encoding) {
    let (_node, client) = node_with_project("shop").await;
    let workload = Workload::new("shop", 600); // 600 decisions + 200 purchases
    assert_eq!(workload.events.len(), 800);
    let sender = client
        .sender(SenderConfig {
            batch_events_max: 100,
            // Long enough that only the size bound and the flush cut batches.
            linger: Duration::from_millis(600_000),
            encoding,
            ..SenderConfig::default()
        })
        .unwrap();
    for event in workload.events.clone() {
        sender.track(event).await.unwrap();
    }
    let report = sender.flush().await.unwrap();
    assert!(report.is_success(), "{}", brief(&report));
    assert_eq!(report.accepted, 800);
    assert_eq!(report.duplicates, 0);
    let stats = sender.stats();
    assert_eq!(stats.batches, 8, "{stats:?}");
    assert_eq!(stats.requests_sent, 8, "{stats:?}");
    assert_eq!(stats.events_resolved, 800);
    assert_eq!(stats.events_held, 0);
    // flush returned after the acknowledgement: a query sees every event.
    assert_eq!(
        counts(&results(&client, "shop").await),
        expected_counts(&workload)
    );

    // A second flush with nothing new reports nothing and sends nothing.
    let empty = sender.flush().await.unwrap();
    assert_eq!(empty.events(), 0);
    assert_eq!(sender.stats().requests_sent, 8);
}

#[tokio::test]
async fn batching_and_flush_json() {
    batching_and_flush(Encoding::Json).await;
}

#[tokio::test]
async fn batching_and_flush_binary() {
    batching_and_flush(Encoding::Binary).await;
}

async fn linger_sends_partial_batches(encoding: Encoding) {
    let (_node, client) = node_with_project("shop").await;
    let sender = client
        .sender(SenderConfig {
            batch_events_max: 1_000,
            linger: Duration::from_millis(20),
            encoding,
            ..SenderConfig::default()
        })
        .unwrap();
    let mut resolved = sender.resolved_events();
    for n in 0..3 {
        let event = decision(
            &format!("d-{n}"),
            "shop",
            &format!("v-{n}"),
            START_MS,
            "checkout",
            "a",
        );
        sender.track(event).await.unwrap();
    }
    // No flush: the linger timer alone must send the partial batch.
    tokio::time::timeout(RESOLVE_WAIT_MAX, resolved.wait_for(|n| *n >= 3))
        .await
        .expect("the lingering batch was sent")
        .unwrap();
    let stats = sender.stats();
    assert_eq!(stats.requests_sent, 1, "{stats:?}");
    let report = sender.flush().await.unwrap();
    assert_eq!(report.accepted, 3, "{}", brief(&report));
}

#[tokio::test]
async fn linger_sends_partial_batches_json() {
    linger_sends_partial_batches(Encoding::Json).await;
}

#[tokio::test]
async fn linger_sends_partial_batches_binary() {
    linger_sends_partial_batches(Encoding::Binary).await;
}

async fn lost_answer_is_retried_and_counted_once(encoding: Encoding) {
    let (node, client) = node_with_project("shop").await;
    let proxy = Proxy::start(node.address(), ProxyMode::LoseFirstAnswers(1)).await;
    let workload = Workload::new("shop", 60); // 60 decisions + 20 purchases
    let sender = Client::new(&proxy.base_url)
        .with_token(crate::support::TEST_ADMIN_TOKEN)
        .sender(SenderConfig {
            batch_events_max: 1_000,
            linger: Duration::from_millis(600_000),
            encoding,
            retry_backoff_initial: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(10),
            ..SenderConfig::default()
        })
        .unwrap();
    for event in workload.events.clone() {
        sender.track(event).await.unwrap();
    }
    let report = sender.flush().await.unwrap();
    assert_eq!(
        proxy.answers_lost.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The node applied the first attempt; the retry's events are duplicates.
    assert!(report.is_success(), "{}", brief(&report));
    assert_eq!(
        report.accepted + report.duplicates,
        80,
        "{}",
        brief(&report)
    );
    assert_eq!(report.duplicates, 80, "{}", brief(&report));
    let stats = sender.stats();
    assert_eq!((stats.requests_sent, stats.retries), (2, 1), "{stats:?}");

    let status = client.status().await.unwrap();
    assert_eq!(status.events_accepted, 80, "{status:?}");
    assert_eq!(status.events_duplicate, 80, "{status:?}");
    assert_eq!(
        counts(&results(&client, "shop").await),
        expected_counts(&workload)
    );
}

#[tokio::test]
async fn lost_answer_is_retried_and_counted_once_json() {
    lost_answer_is_retried_and_counted_once(Encoding::Json).await;
}

#[tokio::test]
async fn lost_answer_is_retried_and_counted_once_binary() {
    lost_answer_is_retried_and_counted_once(Encoding::Binary).await;
}

fn event(n: usize) -> sessiondb_client::protocol::Event {
    decision(
        &format!("d-{n}"),
        "shop",
        &format!("v-{n}"),
        START_MS,
        "checkout",
        "a",
    )
}

async fn backpressure_error_mode(encoding: Encoding) {
    let (node, _client) = node_with_project("shop").await;
    let (gate, gate_receiver) = watch::channel(false);
    let proxy = Proxy::start(node.address(), ProxyMode::Gated(gate_receiver)).await;
    let sender = Client::new(&proxy.base_url)
        .with_token(crate::support::TEST_ADMIN_TOKEN)
        .sender(SenderConfig {
            batch_events_max: 5,
            buffer_events_max: 10,
            backpressure: Backpressure::Error,
            encoding,
            ..SenderConfig::default()
        })
        .unwrap();
    for n in 0..10 {
        sender.track(event(n)).await.unwrap();
    }
    // The gate holds every request, so nothing can resolve: the buffer is full.
    let error = sender.track(event(10)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::BufferFull {
                buffer_events_max: 10
            }
        ),
        "{error:?}"
    );
    assert_eq!(sender.stats().events_held, 10);
    assert_eq!(sender.stats().events_tracked, 10);

    gate.send(true).unwrap();
    let report = sender.flush().await.unwrap();
    assert_eq!(report.accepted, 10, "{}", brief(&report));
    // Room again.
    sender.track(event(10)).await.unwrap();
    assert_eq!(sender.flush().await.unwrap().accepted, 1);
    assert_eq!(sender.stats().events_held_max, 10);
}

#[tokio::test]
async fn backpressure_error_mode_json() {
    backpressure_error_mode(Encoding::Json).await;
}

#[tokio::test]
async fn backpressure_error_mode_binary() {
    backpressure_error_mode(Encoding::Binary).await;
}

async fn backpressure_wait_mode(encoding: Encoding) {
    let (node, _client) = node_with_project("shop").await;
    let (gate, gate_receiver) = watch::channel(false);
    let proxy = Proxy::start(node.address(), ProxyMode::Gated(gate_receiver)).await;
    let sender = Client::new(&proxy.base_url)
        .with_token(crate::support::TEST_ADMIN_TOKEN)
        .sender(SenderConfig {
            batch_events_max: 5,
            buffer_events_max: 10,
            backpressure: Backpressure::Wait,
            encoding,
            ..SenderConfig::default()
        })
        .unwrap();
    for n in 0..10 {
        sender.track(event(n)).await.unwrap();
    }
    // The eleventh waits for room: polling it does not complete it.
    let mut eleventh = Box::pin(sender.track(event(10)));
    assert!((&mut eleventh).now_or_never().is_none());
    assert_eq!(sender.stats().events_held, 10);

    gate.send(true).unwrap();
    eleventh.await.unwrap();
    for n in 11..100 {
        sender.track(event(n)).await.unwrap();
    }
    let report = sender.flush().await.unwrap();
    assert_eq!(report.accepted, 100, "{}", brief(&report));
    let stats = sender.stats();
    assert_eq!(stats.events_held_max, 10, "{stats:?}");
    assert_eq!(stats.events_held, 0, "{stats:?}");
}

#[tokio::test]
async fn backpressure_wait_mode_json() {
    backpressure_wait_mode(Encoding::Json).await;
}

#[tokio::test]
async fn backpressure_wait_mode_binary() {
    backpressure_wait_mode(Encoding::Binary).await;
}

async fn rejections_are_reported_per_event(encoding: Encoding) {
    let (_node, client) = node_with_project("shop").await;
    let sender = client
        .sender(SenderConfig {
            encoding,
            ..SenderConfig::default()
        })
        .unwrap();
    let mut keyless = custom("bad-key", "shop", "v-1", START_MS, "purchase");
    keyless.key = None;
    let events = [
        decision("good-1", "shop", "v-1", START_MS, "checkout", "a"),
        decision("bad-project", "nope", "v-1", START_MS, "checkout", "a"),
        keyless,
        decision(
            "too-late",
            "shop",
            "v-2",
            START_MS - 7 * 86_400_000,
            "checkout",
            "a",
        ),
        custom("good-2", "shop", "v-1", START_MS + 1, "purchase"),
    ];
    let mut seqs = Vec::new();
    for event in events {
        seqs.push(sender.track(event).await.unwrap());
    }
    let report = sender.flush().await.unwrap();
    assert_eq!(report.accepted, 2, "{}", brief(&report));
    let mut rejected: Vec<(u64, &str, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.seq, r.id.as_str(), r.reason.as_str()))
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            (seqs[1], "bad-project", "unknown_project"),
            (seqs[2], "bad-key", "missing_key"),
            (seqs[3], "too-late", "too_late"),
        ]
    );
    assert!(report.rejected.iter().all(|r| !r.message.is_empty()));
    assert!(report.failed.is_empty());
}

#[tokio::test]
async fn rejections_are_reported_per_event_json() {
    rejections_are_reported_per_event(Encoding::Json).await;
}

#[tokio::test]
async fn rejections_are_reported_per_event_binary() {
    rejections_are_reported_per_event(Encoding::Binary).await;
}

#[tokio::test]
async fn unreachable_node_fails_every_event_after_bounded_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let sender = Client::new(format!("http://{address}"))
        .sender(SenderConfig {
            retry_attempts_max: 3,
            retry_backoff_initial: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(2),
            ..SenderConfig::default()
        })
        .unwrap();
    let first = sender.track(event(0)).await.unwrap();
    let second = sender.track(event(1)).await.unwrap();
    let report = sender.flush().await.unwrap();
    let failed: Vec<(u64, &str)> = report
        .failed
        .iter()
        .map(|f| (f.seq, f.event.id.as_str()))
        .collect();
    assert_eq!(failed, [(first, "d-0"), (second, "d-1")]);
    // Each failed event is handed back whole, to be sent again later.
    assert_eq!(report.failed[0].event, event(0));
    assert_eq!(report.failed[1].event, event(1));
    let error = &*report.failed[0].error;
    assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    // The message says why without walking `source()`.
    assert!(
        error
            .to_string()
            .ends_with("/v1/events failed: connection refused"),
        "{error}"
    );
    assert_eq!(sender.stats().requests_sent, 3);
    assert_eq!(sender.stats().events_held, 0);
}

#[tokio::test]
async fn a_url_without_scheme_fails_every_event_at_once_saying_so() {
    let sender = Client::new("127.0.0.1:7070")
        .sender(SenderConfig::default())
        .unwrap();
    sender.track(event(0)).await.unwrap();
    let report = sender.flush().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{}", brief(&report));
    assert_eq!(report.failed[0].event, event(0));
    assert_eq!(
        report.failed[0].error.to_string(),
        "invalid node URL `127.0.0.1:7070`: no scheme; write http://127.0.0.1:7070 (or https://)"
    );
    // Not worth retrying: one attempt.
    assert_eq!(sender.stats().requests_sent, 1);
}

/// A node that lets one request in flight per caller and syncs slowly:
/// the sender's concurrent batches meet `429 too_many_requests` with
/// `Retry-After`, wait as told and retry until every event is in, each
/// counted once.
#[tokio::test]
async fn refused_batches_wait_for_retry_after_and_count_once() {
    let node = TestNode::start_with_args(&[
        "--requests-in-flight-per-credential-max".to_string(),
        "1".to_string(),
        "--fault-log-sync-delay-ms".to_string(),
        "100".to_string(),
    ])
    .await;
    let client = node.client();
    client
        .create_project(&CreateProject {
            name: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("create the project");
    let workload = Workload::new("shop", 300); // 300 decisions + 100 purchases
    let sender = client
        .sender(SenderConfig {
            batch_events_max: 50,
            linger: Duration::from_millis(600_000),
            in_flight_batches_max: 4,
            // Enough attempts for 8 batches through one slot.
            retry_attempts_max: 40,
            ..SenderConfig::default()
        })
        .unwrap();
    for event in workload.events.clone() {
        sender.track(event).await.unwrap();
    }
    let report = sender.flush().await.unwrap();
    assert!(report.is_success(), "{}", brief(&report));
    assert_eq!(report.accepted, 400);
    assert_eq!(report.duplicates, 0);
    let stats = sender.stats();
    assert!(
        stats.retries > 0,
        "4 batches in flight against 1: {stats:?}"
    );
    assert_eq!(
        counts(&results(&client, "shop").await),
        expected_counts(&workload)
    );
}

/// `close` sends everything held (no flush needed), reports every event,
/// and afterwards the sender takes nothing more. Events built with the
/// builder get their project from `sender_for` and an id each.
#[tokio::test]
async fn close_delivers_every_held_event_and_then_refuses_new_ones() {
    let (_node, client) = node_with_project("shop").await;
    let sender = client
        .sender_for(
            "shop",
            SenderConfig {
                batch_events_max: 500,
                linger: Duration::from_secs(600),
                ..SenderConfig::default()
            },
        )
        .unwrap();
    for n in 0..5_000 {
        let variation = if n % 2 == 0 { "a" } else { "b" };
        let event =
            sessiondb_client::protocol::Event::decision(format!("v-{n}"), "checkout", variation)
                .at(START_MS)
                .attribute("browser", "firefox");
        sender.track(event).await.unwrap();
    }
    let clone = sender.clone();
    let report = sender.close(RESOLVE_WAIT_MAX).await;
    assert!(report.is_success(), "{}", brief(&report));
    assert_eq!(report.accepted, 5_000, "{}", brief(&report));
    let refused = clone
        .track(sessiondb_client::protocol::Event::pageview("v-late").at(START_MS))
        .await
        .unwrap_err();
    assert!(matches!(refused, ClientError::SenderClosed), "{refused:?}");
    assert_eq!(sender.close(RESOLVE_WAIT_MAX).await.events(), 0);
    let results = results(&client, "shop").await;
    let visitors: Vec<i64> = results.groups[0]
        .variations
        .iter()
        .map(|v| v.visitors)
        .collect();
    assert_eq!(visitors, [2_500, 2_500]);
}

/// A listener that accepts connections and never answers; answers its
/// base URL. The connections are held open until the test ends.
async fn silent_node() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{address}")
}

/// A node that accepts connections and never answers holds events no
/// longer than the delivery timeout: flush then hands them back as failed.
/// Time is Tokio's paused clock, so the bound is checked exactly.
#[tokio::test(start_paused = true)]
async fn a_silent_node_is_bounded_by_the_delivery_timeout() {
    let delivery_timeout = Duration::from_secs(5);
    let sender = Client::new(silent_node().await)
        .sender_for(
            "shop",
            SenderConfig {
                delivery_timeout,
                ..SenderConfig::default()
            },
        )
        .unwrap();
    let started = tokio::time::Instant::now();
    let first = sender
        .track(sessiondb_client::protocol::Event::pageview("v-1").id("pv-1"))
        .await
        .unwrap();
    let second = sender
        .track(sessiondb_client::protocol::Event::custom("v-1", "purchase").value(12.99))
        .await
        .unwrap();
    let report = sender.flush().await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= delivery_timeout && waited <= delivery_timeout + Duration::from_secs(1),
        "{waited:?}"
    );
    let failed: Vec<(u64, &str)> = report
        .failed
        .iter()
        .map(|f| (f.seq, f.event.project.as_str()))
        .collect();
    assert_eq!(failed, [(first, "shop"), (second, "shop")]);
    assert!(report
        .failed
        .iter()
        .all(|f| matches!(*f.error, ClientError::DeliveryTimeout)));
    // The events are handed back whole, with the ids they were sent with.
    assert_eq!(report.failed[0].event.id, "pv-1");
    assert_eq!(report.failed[1].event.id.len(), 32);
    assert_eq!(report.failed[1].event.value, Some(12.99));
}

/// `close` on a silent node answers at its timeout, every event failed and
/// handed back: nothing is lost unreported.
#[tokio::test(start_paused = true)]
async fn close_answers_at_its_timeout_with_every_event_handed_back() {
    let sender = Client::new(silent_node().await)
        .sender_for("shop", SenderConfig::default())
        .unwrap();
    for n in 0..10 {
        sender
            .track(sessiondb_client::protocol::Event::pageview(format!(
                "v-{n}"
            )))
            .await
            .unwrap();
    }
    let started = tokio::time::Instant::now();
    let report = sender.close(Duration::from_secs(2)).await;
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.failed.len(), 10, "{}", brief(&report));
    assert_eq!(report.events(), 10);
    assert!(report
        .failed
        .iter()
        .all(|f| matches!(*f.error, ClientError::DeliveryTimeout)));
}
