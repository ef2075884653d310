//! `Client` calls against the real node: ranges widened to whole buckets,
//! gzip-compressed batches, the one credential of every call.

use crate::support::{TestNode, Workload, START_MS, TEST_ADMIN_TOKEN};
use sessiondb_client::protocol::{CreateProject, ErrorCode};
use sessiondb_client::{
    Client, ClientError, Compression, Encoding, RangeAlignment, ResultsRequest, SenderConfig,
    TimeSeriesRequest,
};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;

async fn node_with_workload(workload: &Workload) -> (TestNode, Client) {
    let node = TestNode::start().await;
    let client = node.client();
    client
        .create_project(&CreateProject {
            name: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("create the project");
    let answer = client.send(&workload.events).await.expect("send");
    assert_eq!(answer.accepted, workload.events.len() as u64);
    (node, client)
}

/// The workload's events lie in the hour before `START_MS` and the hour
/// holding it (1 h is the default bucket).
#[tokio::test]
async fn a_range_off_the_buckets_is_widened_to_whole_buckets() {
    let workload = Workload::new("shop", 200);
    let (_node, client) = node_with_workload(&workload).await;
    let bucket_start = START_MS - START_MS.rem_euclid(HOUR_MS);
    let aligned = ResultsRequest::new("shop", "checkout")
        .range(bucket_start - HOUR_MS, bucket_start + HOUR_MS)
        .alignment(RangeAlignment::Exact);
    let expected = client.results(&aligned).await.expect("aligned results");

    // Both ends off a boundary: widened to the same two buckets.
    let unaligned = ResultsRequest::new("shop", "checkout").range(
        bucket_start - HOUR_MS + 1_234,
        bucket_start + HOUR_MS - 5_678,
    );
    let widened = client.results(&unaligned).await.expect("widened results");
    assert_eq!((widened.from, widened.to), (expected.from, expected.to));
    assert_eq!(widened.groups, expected.groups);
    assert_eq!(
        widened.groups[0]
            .variations
            .iter()
            .map(|v| v.visitors)
            .sum::<i64>(),
        200
    );

    // Exact alignment sends the range as given and the node refuses it.
    let error = client
        .results(&unaligned.clone().alignment(RangeAlignment::Exact))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::UnalignedRange), "{error}");

    // The time series too.
    let series = client
        .timeseries(
            &TimeSeriesRequest::new("shop", "checkout")
                .range(bucket_start - HOUR_MS + 1, bucket_start + 1),
        )
        .await
        .expect("widened time series");
    assert_eq!(
        (series.from, series.to),
        (bucket_start - HOUR_MS, bucket_start + HOUR_MS)
    );
}

/// `since` is measured by this machine's clock, the node runs on its
/// manual clock in 2025: a long `since` reaches back before its data.
#[tokio::test]
async fn since_a_duration_is_widened_to_whole_buckets() {
    let workload = Workload::new("shop", 50);
    let (_node, client) = node_with_workload(&workload).await;
    let now_ms = sessiondb_client::protocol::Timestamp::now();
    let sessiondb_client::protocol::Timestamp::Milliseconds(now_ms) = now_ms else {
        panic!("now is in ms");
    };
    let back = Duration::from_millis(u64::try_from(now_ms - START_MS).unwrap())
        + Duration::from_secs(2 * 3_600)
        + Duration::from_millis(1);
    let request = ResultsRequest::new("shop", "checkout").since(back);
    assert_ne!(
        request.from.unwrap().rem_euclid(HOUR_MS),
        0,
        "off a boundary"
    );
    let results = client.results(&request).await.expect("results since");
    assert_eq!(results.from.rem_euclid(HOUR_MS), 0);
    assert!(results.from <= request.from.unwrap());
    assert_eq!(
        results.groups[0]
            .variations
            .iter()
            .map(|v| v.visitors)
            .sum::<i64>(),
        50
    );
}

async fn gzip_batches_are_counted_once(encoding: Encoding) {
    let node = TestNode::start().await;
    let client = node.client();
    client
        .create_project(&CreateProject {
            name: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let workload = Workload::new("shop", 300);
    let sender = client
        .sender(SenderConfig {
            batch_events_max: 100,
            encoding,
            compression: Compression::Gzip,
            ..SenderConfig::default()
        })
        .unwrap();
    for event in workload.events.clone() {
        sender.track(event).await.unwrap();
    }
    let report = sender.close(Duration::from_secs(60)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.accepted, workload.events.len() as u64);
    // The same events again, gzipped: every one a duplicate.
    let answer = client
        .send_compressed(&workload.events, encoding, Compression::Gzip)
        .await
        .unwrap();
    assert_eq!(answer.accepted, 0);
    assert_eq!(answer.duplicates, workload.events.len() as u64);
    let results = client
        .results(&ResultsRequest::new("shop", "checkout").keys(["purchase"]))
        .await
        .unwrap();
    let visitors: Vec<i64> = results.groups[0]
        .variations
        .iter()
        .map(|v| v.visitors)
        .collect();
    assert_eq!(visitors, [workload.visitors_a, workload.visitors_b]);
}

#[tokio::test]
async fn gzip_batches_are_counted_once_binary() {
    gzip_batches_are_counted_once(Encoding::Binary).await;
}

#[tokio::test]
async fn gzip_batches_are_counted_once_json() {
    gzip_batches_are_counted_once(Encoding::Json).await;
}

/// Cluster calls use the client's credential, like every other call.
#[tokio::test]
async fn cluster_calls_carry_the_client_credential() {
    let node = TestNode::start().await;
    let status = node.client().cluster_status().await.expect("admin token");
    let node_id = node.client().status().await.expect("status").node_id;
    assert_eq!(status.node_id, node_id, "{status:?}");
    let error = Client::new(node.base_url())
        .cluster_status()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
    let error = Client::new(node.base_url())
        .with_token(format!("{TEST_ADMIN_TOKEN}-wrong"))
        .rebalance()
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Api { status: 401, .. }),
        "{error}"
    );
    // A router's clients carry it too: `for_node` keeps the credential.
    let other = Client::new("http://127.0.0.1:1")
        .with_token(TEST_ADMIN_TOKEN)
        .for_node(node.base_url());
    assert!(other.cluster_status().await.is_ok());
}

/// Outside a Tokio runtime a sender is an error, not a panic.
#[test]
fn a_sender_outside_a_runtime_is_an_error() {
    let client = Client::new("http://127.0.0.1:7070").with_token(TEST_ADMIN_TOKEN);
    let error = client.sender(SenderConfig::default()).unwrap_err();
    assert!(matches!(error, ClientError::NoRuntime), "{error:?}");
    let error = client
        .sender_for("shop", SenderConfig::default())
        .unwrap_err();
    assert!(matches!(error, ClientError::NoRuntime), "{error:?}");
}
