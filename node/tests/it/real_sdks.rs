//! The trackers people already run, as they are: the Optimizely Python SDK
//! (through a custom event dispatcher posting the SDK's own payload) and
//! Segment's Python library (`segment-analytics-python`), both from PyPI,
//! drive a real node on the system clock; the node's results must equal
//! the tally the scripts kept of what the libraries sent.
//!
//! The scripts are in `node/tests/sdk/`. They need a Python with both
//! libraries installed: `SESSIONDB_SDK_PYTHON`, else
//! `<workspace>/target/sdk-venv/bin/python`, which `scripts/test` creates.
//! Without it these tests fail with the command that makes it (they do not
//! skip).

use crate::support::node::{NodeOptions, TestNode};
use serde::Deserialize;
use sessiondb_protocol::{ResultsResponse, VariationResults};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const HOUR_MS: i64 = 3_600_000;
const VISITORS: usize = 120;

#[derive(Debug, Deserialize)]
struct Counts {
    visitors: i64,
    converters: i64,
    revenue: f64,
}

#[derive(Debug, Deserialize)]
struct OptimizelyRun {
    tally: BTreeMap<String, Counts>,
    statuses: Vec<u16>,
}

#[derive(Debug, Deserialize)]
struct SegmentRun {
    tally: BTreeMap<String, Counts>,
    errors: Vec<String>,
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SESSIONDB_SDK_PYTHON") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate sits in the workspace")
        .to_path_buf();
    let venv = workspace.join("target/sdk-venv/bin/python");
    assert!(
        venv.is_file(),
        "the real-SDK tests need a Python with optimizely-sdk and segment-analytics-python, \
         and {} does not exist and SESSIONDB_SDK_PYTHON is not set. Make it with \
         `python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install -r \
         node/tests/sdk/requirements.txt` (scripts/test does this)",
        venv.display()
    );
    venv
}

/// Runs `script` with `arguments`; its stdout is one JSON object.
async fn run_script<T: serde::de::DeserializeOwned>(script: &str, arguments: &[String]) -> T {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(python())
        .arg(&path)
        .args(arguments)
        .output()
        .await
        .unwrap_or_else(|error| panic!("run {path}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{script} printed no JSON tally ({error}): {stdout}"))
}

/// A range of whole hours around now, holding every event the scripts send.
fn range_around_now() -> (i64, i64) {
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let bucket_ms = now_ms - now_ms % HOUR_MS;
    (bucket_ms - 2 * HOUR_MS, bucket_ms + 2 * HOUR_MS)
}

async fn start_node_with_project(project: &str) -> (TestNode, String) {
    // The libraries stamp events with the real time.
    let options = NodeOptions {
        start_ms: 0,
        shards: None,
    };
    let node = TestNode::start_with_system_clock(options, Vec::new()).await;
    let created = node.create_project(project, serde_json::json!({})).await;
    let key = created
        .ingest_key
        .expect("a new project's key is shown once");
    (node, key)
}

fn variation<'a>(results: &'a ResultsResponse, name: &str) -> &'a VariationResults {
    results
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .find(|variation| variation.variation == name)
        .unwrap_or_else(|| panic!("variation {name} missing from {results:#?}"))
}

/// Visitors, unique conversions and the value sum of `key` per variation
/// equal the script's tally, and no variation is there that it did not send.
fn assert_results_match(results: &ResultsResponse, tally: &BTreeMap<String, Counts>, key: &str) {
    let listed: Vec<&str> = results
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .map(|variation| variation.variation.as_str())
        .collect();
    let sent: Vec<&str> = tally.keys().map(String::as_str).collect();
    assert_eq!(listed, sent, "variations");
    for (name, counts) in tally {
        let found = variation(results, name);
        assert_eq!(found.visitors, counts.visitors, "{name}: visitors");
        let metrics = found
            .metric(key)
            .unwrap_or_else(|| panic!("{name}: key {key} missing: {found:#?}"));
        assert_eq!(
            metrics.unique_conversions, counts.converters,
            "{name}: converters"
        );
        assert_eq!(
            metrics.total_conversions, counts.converters,
            "{name}: conversions"
        );
        assert!(
            (metrics.value_sum - counts.revenue).abs() < 1e-6,
            "{name}: revenue {} against the SDK's {}",
            metrics.value_sum,
            counts.revenue
        );
    }
}

#[tokio::test]
async fn the_optimizely_sdk_counts_what_it_bucketed() {
    let (node, key) = start_node_with_project("shop").await;
    let run: OptimizelyRun = run_script(
        "optimizely_run.py",
        &[node.base_url().to_string(), key, VISITORS.to_string()],
    )
    .await;
    assert!(
        run.statuses.iter().all(|status| *status == 200),
        "every dispatch answered 200: {:?}",
        run.statuses
    );
    let sent: i64 = run.tally.values().map(|counts| counts.visitors).sum();
    assert_eq!(sent, VISITORS as i64);
    // One impression per visitor and one conversion per converter.
    let converters: i64 = run.tally.values().map(|counts| counts.converters).sum();
    assert_eq!(run.statuses.len() as i64, sent + converters);

    let (from_ms, to_ms) = range_around_now();
    // Experiments and variations are named by the keys of the SDK's
    // decision metadata, with the ids it tallied by beside them.
    let results = node
        .results("shop", "checkout_flow", from_ms, to_ms, None, &["purchase"])
        .await;
    assert_eq!(results.experiment, "checkout_flow");
    assert_eq!(results.experiment_id.as_deref(), Some("70001"));
    let keys_by_id = BTreeMap::from([("70011", "control"), ("70012", "treatment")]);
    let mut tally_by_key = BTreeMap::new();
    for (id, counts) in run.tally {
        let key = keys_by_id[id.as_str()];
        assert_eq!(
            variation(&results, key).variation_id.as_deref(),
            Some(id.as_str())
        );
        tally_by_key.insert(key.to_string(), counts);
    }
    assert_results_match(&results, &tally_by_key, "purchase");
    // The id names the same experiment.
    let by_id = node
        .results("shop", "70001", from_ms, to_ms, None, &["purchase"])
        .await;
    assert_eq!(by_id, results);
}

async fn segment_run_matches(gzip: bool) {
    let (node, key) = start_node_with_project("shop").await;
    let run: SegmentRun = run_script(
        "segment_run.py",
        &[
            node.base_url().to_string(),
            key,
            VISITORS.to_string(),
            if gzip { "1" } else { "0" }.to_string(),
        ],
    )
    .await;
    assert_eq!(run.errors, Vec::<String>::new(), "the library's errors");
    let (from_ms, to_ms) = range_around_now();
    let results = node
        .results(
            "shop",
            "checkout-redesign",
            from_ms,
            to_ms,
            None,
            &["Order%20Completed"],
        )
        .await;
    assert_results_match(&results, &run.tally, "Order Completed");
}

#[tokio::test]
async fn the_segment_library_counts_what_it_sent() {
    segment_run_matches(false).await;
}

/// What the library sends with `gzip=True` (mobile and several server
/// libraries compress by default).
#[tokio::test]
async fn the_segment_library_with_gzip_counts_what_it_sent() {
    segment_run_matches(true).await;
}
