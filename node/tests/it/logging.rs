//! Structured logs (`docs/operations.md`, "Logs"): `--log-format json`
//! writes one JSON object per line with level and target, `--log-level`
//! filters, and an invalid filter stops the node with the usage exit code.

use crate::support::node::{NodeOptions, TempDir, TestNode};
use sessiondb_test_support::eventually;
use std::time::Duration;

const NOW_MS: i64 = 1_763_632_800_000;
/// Bound on the node logging its start once it listens.
const START_LINE_WAIT_MAX: Duration = Duration::from_secs(60);

#[tokio::test]
async fn json_logs_are_one_object_per_line_at_the_chosen_level() {
    let options = NodeOptions {
        start_ms: NOW_MS,
        shards: Some(2),
    };
    let args = ["--log-format", "json", "--log-level", "debug"]
        .map(String::from)
        .to_vec();
    let node = TestNode::start_with_args(options, args).await;
    let health = node.get_raw("/v1/health").await;
    assert!(health.status.is_success());
    let stderr = stderr_once_started(&node).await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "node started" && line["level"] == "INFO"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|line| line["level"] == "DEBUG"),
        "--log-level debug shows debug events: {stderr}"
    );
    assert!(
        lines.iter().all(|line| line["target"].is_string()),
        "{stderr}"
    );
}

/// Text logs written to a file (not a terminal) carry no ANSI colour
/// codes.
#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let options = NodeOptions {
        start_ms: NOW_MS,
        shards: Some(2),
    };
    let args = ["--log-format", "text", "--log-level", "info"]
        .map(String::from)
        .to_vec();
    let node = TestNode::start_with_args(options, args).await;
    let stderr = stderr_once_started(&node).await;
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a file: {stderr:?}"
    );
}

#[tokio::test]
async fn an_invalid_log_level_is_a_usage_error() {
    let data = TempDir::new("log-level");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessiondb"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "loud=["])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env_remove("SESSIONDB_LOG")
        .output()
        .await
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --log-level"), "{stderr}");
}

#[tokio::test]
async fn the_default_filter_keeps_dependency_info_out() {
    let options = NodeOptions {
        start_ms: NOW_MS,
        shards: Some(2),
    };
    let args = ["--log-format", "json"].map(String::from).to_vec();
    let node = TestNode::start_with_args(options, args).await;
    // A project change goes through Raft, whose INFO lines the default
    // filter must keep out.
    node.create_project("quiet", serde_json::json!({})).await;
    let stderr = stderr_once_started(&node).await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        lines.iter().any(|line| line["level"] == "INFO"
            && line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("sessiondb"))),
        "the node's own INFO lines stay: {stderr}"
    );
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        if !target.starts_with("sessiondb") {
            assert!(
                line["level"] == "WARN" || line["level"] == "ERROR",
                "dependency INFO line under the default filter: {line}"
            );
        }
    }
}

/// The node's stderr once it logged "node started" (just after the
/// listening line), whole lines only: the last may still be being written.
async fn stderr_once_started(node: &TestNode) -> String {
    eventually(START_LINE_WAIT_MAX, "the start line", async || {
        let text = node.stderr_text();
        let whole = text[..text.rfind('\n').map_or(0, |end| end + 1)].to_string();
        if whole.contains("node started") {
            Ok(whole)
        } else {
            Err(text)
        }
    })
    .await
}
