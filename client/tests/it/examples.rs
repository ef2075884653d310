//! The examples the documentation shows, run against a real node on the
//! system clock: `examples/quick_start.rs` (the quick start of
//! `docs/client.md` and the crate's front page) and
//! `examples/page_views.rs` (`Sender`'s documentation). Each is built
//! with cargo and run as a program, the way a reader runs it.

use crate::support::{TestNode, TEST_ADMIN_TOKEN};
use sessiondb_client::protocol::CreateProject;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// The executables of the crate's examples, built once per test process.
fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "sessiondb-client",
                "--examples",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --examples");
        assert!(output.status.success(), "cargo build --examples failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["kind"][0] == "example")
            .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
            .collect()
    });
    built
        .iter()
        .find(|path| path.file_stem().is_some_and(|stem| stem == name))
        .unwrap_or_else(|| panic!("cargo built no example `{name}`: {built:?}"))
        .clone()
}

/// Runs an example with `env`; answers its stdout, failing on a non-zero
/// exit with its stderr.
async fn run_example(name: &str, env: &[(&str, &str)]) -> String {
    let binary = example_binary(name);
    let output = tokio::process::Command::new(&binary)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_quick_start_runs_against_a_node_and_again_on_the_same_project() {
    let node = TestNode::start_with_system_clock().await;
    let env = [
        ("SESSIONDB_URL", node.base_url()),
        ("SESSIONDB_ADMIN_TOKEN", TEST_ADMIN_TOKEN),
    ];
    let expected = "accepted 1100, duplicates 0\n\
                    a: 500 visitors, 100 bought\n\
                    b: 500 visitors, 0 bought\n";
    assert_eq!(run_example("quick_start", &env).await, expected);
    // A second run finds the project, issues a new ingest key and sends new
    // events (new ids) for the same visitors.
    assert_eq!(run_example("quick_start", &env).await, expected);
}

#[tokio::test]
async fn the_sender_example_runs_against_a_node() {
    let node = TestNode::start_with_system_clock().await;
    let project = node
        .client()
        .create_project(&CreateProject {
            name: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("create the project");
    let ingest_key = project.ingest_key.expect("a new project's key");
    let env = [
        ("SESSIONDB_URL", node.base_url()),
        ("SESSIONDB_INGEST_KEY", ingest_key.as_str()),
    ];
    assert_eq!(
        run_example("page_views", &env).await,
        "10000 accepted, 0 rejected, 0 failed\n"
    );
}

/// The guide shows the quick start's code; it must be the example's, so
/// that what the test runs is what the reader copies.
#[test]
fn the_guide_shows_the_quick_start_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("../docs/client.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/quick_start.rs")).unwrap();
    let code: String = example
        .lines()
        .skip_while(|line| line.starts_with("//!") || line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    let quick_start = guide
        .split("## Quick start")
        .nth(1)
        .expect("a quick start section");
    let block = quick_start
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("a rust block in the quick start");
    assert_eq!(
        block, code,
        "docs/client.md's quick start differs from examples/quick_start.rs"
    );
}
