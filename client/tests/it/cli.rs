//! The `sessiondb-ctl` binary against the real node: import, results table
//! and JSON, projects, and the documented exit codes.

use crate::support::{TempDir, TestNode, Workload};
use sessiondb_client::cli::import::RejectedLine;
use sessiondb_client::cli::{EXIT_FAILED, EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use sessiondb_client::protocol::{
    ClusterStatus, MemberRole, Project, ProjectList, ResultsResponse, RotatedKey,
};
use sessiondb_test_support::eventually;
use std::path::Path;
use std::time::Duration;

/// Bound on a fresh node bootstrapping its single-node cluster (it does so
/// just after it starts listening).
const BOOTSTRAP_WAIT_MAX: Duration = Duration::from_secs(60);

/// What one run of the binary printed and how it ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn ctl(node: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessiondb-ctl"))
        .arg("--node")
        .arg(node)
        .args(args)
        .env_remove("SESSIONDB_NODE")
        .env_remove("SESSIONDB_INGEST_KEY")
        // The operator's token; a test that wants another gives
        // `--admin-token`, which wins over the variable.
        .env("SESSIONDB_ADMIN_TOKEN", crate::support::TEST_ADMIN_TOKEN)
        .output()
        .await
        .expect("run sessiondb-ctl");
    Run {
        code: output.status.code().expect("exited with a code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn expect_code(run: &Run, code: u8) {
    assert_eq!(run.code, i32::from(code), "{run:#?}");
}

/// Writes the workload as NDJSON with, after line 3, a blank line, a line
/// that is not JSON, an event without a visitor, and an event of an unknown
/// project. Answers the (line, id, reason) of each rejected line.
fn write_import_file(path: &Path, workload: &Workload) -> Vec<(u64, Option<String>, String)> {
    let mut lines: Vec<String> = workload
        .events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap())
        .collect();
    let mut unknown = workload.events[0].clone();
    unknown.id = "wrong-project".into();
    unknown.project = "nope".into();
    let bad = [
        String::new(),
        "this is not json".to_string(),
        r#"{"id":"no-visitor","project":"shop","ts":1,"type":"pageview"}"#.to_string(),
        serde_json::to_string(&unknown).unwrap(),
    ];
    for (offset, line) in bad.into_iter().enumerate() {
        lines.insert(3 + offset, line);
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    vec![
        (5, None, "malformed_line".to_string()),
        (6, Some("no-visitor".into()), "malformed_line".to_string()),
        (
            7,
            Some("wrong-project".into()),
            "unknown_project".to_string(),
        ),
    ]
}

fn read_rejections(path: &Path) -> Vec<(u64, Option<String>, String)> {
    let text = std::fs::read_to_string(path).expect("the rejections file exists");
    let mut rejected: Vec<(u64, Option<String>, String)> = text
        .lines()
        .map(|line| {
            let line: RejectedLine = serde_json::from_str(line).expect("an NDJSON rejection");
            assert!(!line.message.is_empty());
            (line.line, line.id, line.reason.to_string())
        })
        .collect();
    rejected.sort();
    rejected
}

async fn import_then_query(encoding: &str) {
    let node = TestNode::start().await;
    let url = node.base_url();
    expect_code(&ctl(url, &["projects", "create", "shop"]).await, EXIT_OK);
    let dir = TempDir::new("import");
    let input = dir.path().join("events.ndjson");
    let rejections = dir.path().join("rejected.ndjson");
    let workload = Workload::new("shop", 300); // 300 decisions + 100 purchases
    let expected_rejections = write_import_file(&input, &workload);

    let run = ctl(
        url,
        &[
            "import",
            input.to_str().unwrap(),
            "--batch-events",
            "64",
            "--encoding",
            encoding,
            "--rejections-file",
            rejections.to_str().unwrap(),
        ],
    )
    .await;
    // Some lines were rejected: exit 4, and the rest is imported.
    expect_code(&run, EXIT_INPUT);
    assert!(run.stdout.contains("accepted    400"), "{run:#?}");
    assert!(run.stdout.contains("rejected    3"), "{run:#?}");
    assert!(run.stdout.contains("events/s"), "{run:#?}");
    assert_eq!(read_rejections(&rejections), expected_rejections);

    // The same file again: everything is a duplicate, counted once.
    let run = ctl(
        url,
        &[
            "--json",
            "import",
            input.to_str().unwrap(),
            "--encoding",
            encoding,
            "--rejections-file",
            rejections.to_str().unwrap(),
        ],
    )
    .await;
    expect_code(&run, EXIT_INPUT);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON summary");
    assert_eq!(summary["accepted"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 400, "{summary}");
    assert_eq!(summary["rejected"], 3, "{summary}");
    assert_eq!(summary["lines"], 404, "{summary}");

    // The results table names the variations and their numbers.
    let run = ctl(url, &["results", "shop", "checkout", "--key", "purchase"]).await;
    expect_code(&run, EXIT_OK);
    let table = &run.stdout;
    assert!(table.contains("VARIATION  VISITORS"), "{table}");
    assert!(table.contains("key purchase"), "{table}");
    for (variation, visitors, purchases) in [
        ("a", workload.visitors_a, workload.purchases_a),
        ("b", workload.visitors_b, workload.purchases_b),
    ] {
        let row_prefix = |line: &str| {
            line.split_whitespace().next() == Some(variation)
                && line.split_whitespace().nth(1) == Some(&visitors.to_string())
        };
        assert!(table.lines().any(row_prefix), "{variation}: {table}");
        let purchase_row = |line: &str| {
            line.split_whitespace().next() == Some(variation)
                && line.split_whitespace().nth(1) == Some(&purchases.to_string())
                && line.contains('%')
        };
        assert!(table.lines().any(purchase_row), "{variation}: {table}");
    }

    // --json is the node's ResultsResponse.
    let run = ctl(
        url,
        &["--json", "results", "shop", "checkout", "--key", "purchase"],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let results: ResultsResponse = serde_json::from_str(&run.stdout).expect("ResultsResponse");
    let variations = &results.groups[0].variations;
    let got: Vec<(&str, i64, i64)> = variations
        .iter()
        .map(|v| {
            (
                v.variation.as_str(),
                v.visitors,
                v.metrics[0].unique_conversions,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a", workload.visitors_a, workload.purchases_a),
            ("b", workload.visitors_b, workload.purchases_b)
        ]
    );
}

#[tokio::test]
async fn import_then_query_json() {
    import_then_query("json").await;
}

#[tokio::test]
async fn import_then_query_binary() {
    import_then_query("binary").await;
}

#[tokio::test]
async fn clean_import_exits_0_and_writes_no_rejections_file() {
    let node = TestNode::start().await;
    let url = node.base_url();
    expect_code(&ctl(url, &["projects", "create", "shop"]).await, EXIT_OK);
    let dir = TempDir::new("clean");
    let input = dir.path().join("events.ndjson");
    let workload = Workload::new("shop", 30);
    let text: String = workload
        .events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    let run = ctl(
        url,
        &["import", input.to_str().unwrap(), "--encoding", "json"],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("accepted    40"), "{run:#?}");
    assert!(!dir.path().join("events.ndjson.rejections.ndjson").exists());
}

#[tokio::test]
async fn projects_create_list_show_configure() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let run = ctl(
        url,
        &[
            "--json",
            "projects",
            "create",
            "shop",
            "--session-gap-ms",
            "600000",
            "--breakdown-attributes",
            "browser,country",
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let project: Project = serde_json::from_str(&run.stdout).expect("a Project");
    assert_eq!(project.settings.session_gap_ms, 600_000);
    assert_eq!(
        project.settings.breakdown_attributes,
        ["browser", "country"]
    );

    let run = ctl(url, &["--json", "projects", "list"]).await;
    expect_code(&run, EXIT_OK);
    let list: ProjectList = serde_json::from_str(&run.stdout).expect("a ProjectList");
    let names: Vec<&str> = list.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["shop"]);

    let run = ctl(url, &["projects", "list"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.starts_with("NAME"), "{run:#?}");
    assert!(
        run.stdout.contains("shop") && run.stdout.contains("10m"),
        "{run:#?}"
    );

    let run = ctl(
        url,
        &[
            "projects",
            "configure",
            "shop",
            "--session-gap-ms",
            "900000",
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("15m (900000 ms)"), "{run:#?}");

    let run = ctl(url, &["projects", "show", "shop"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("15m (900000 ms)"), "{run:#?}");

    // Creating it again: the node says no (exit 1) with a hint.
    let run = ctl(url, &["projects", "create", "shop"]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("project_exists"), "{run:#?}");
    assert!(run.stderr.contains("  hint: "), "{run:#?}");
}

#[tokio::test]
async fn cluster_status_shows_the_single_node_cluster() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let token = crate::support::TEST_ADMIN_TOKEN;

    let refused = ctl(
        url,
        &[
            "cluster",
            "status",
            "--admin-token",
            "wrong-token-0123456789",
        ],
    )
    .await;
    expect_code(&refused, EXIT_FAILED);
    assert!(refused.stderr.contains("(unauthorized)"), "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("  hint: give the node's admin token"),
        "{refused:#?}"
    );

    // The node bootstraps its cluster just after it starts listening: poll
    // (bounded) until it leads.
    let status = eventually(BOOTSTRAP_WAIT_MAX, "a leader", async || {
        let run = ctl(
            url,
            &["--json", "cluster", "status", "--admin-token", token],
        )
        .await;
        expect_code(&run, EXIT_OK);
        let status: ClusterStatus = serde_json::from_str(&run.stdout).expect("a ClusterStatus");
        if status.leader.is_some() && !status.shards.is_empty() {
            Ok(status)
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;
    assert_eq!(status.node_id, 1);
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].role, MemberRole::Voter);
    assert!(status
        .shards
        .iter()
        .all(|shard| shard.owner == 1 && shard.epoch == 1));

    let run = ctl(url, &["cluster", "status", "--admin-token", token]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("state:"), "{run:#?}");
    let shards = status.shards.len().to_string();
    let member_row = run
        .stdout
        .lines()
        .find(|line| line.contains("voter (leader)"))
        .unwrap_or_else(|| panic!("no leader row: {run:#?}"));
    assert!(
        member_row.split_whitespace().any(|cell| cell == shards),
        "the leader owns all {shards} shards: {member_row}"
    );
}

#[tokio::test]
async fn shards_list_move_and_rebalance_on_a_single_node_cluster() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let token = crate::support::TEST_ADMIN_TOKEN;
    // Bounded polling until the node bootstrapped its shard map.
    let shards = eventually(BOOTSTRAP_WAIT_MAX, "a shard map", async || {
        let run = ctl(url, &["--json", "shards", "list", "--admin-token", token]).await;
        expect_code(&run, EXIT_OK);
        let shards: Vec<sessiondb_client::protocol::ShardOwnership> =
            serde_json::from_str(&run.stdout).expect("a shard list");
        if shards.is_empty() {
            Err(run.stdout)
        } else {
            Ok(shards)
        }
    })
    .await;
    assert!(shards
        .iter()
        .all(|shard| shard.owner == 1 && shard.epoch == 1 && shard.moving_to.is_none()));
    let run = ctl(url, &["shards", "list", "--admin-token", token]).await;
    expect_code(&run, EXIT_OK);
    assert_eq!(run.stdout.lines().count(), shards.len() + 1, "{run:#?}");

    // One member: balanced already.
    let run = ctl(
        url,
        &["--json", "shards", "rebalance", "--admin-token", token],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let report: sessiondb_client::protocol::RebalanceReport =
        serde_json::from_str(&run.stdout).expect("a RebalanceReport");
    assert!(
        report.plan.is_empty() && report.moved.is_empty(),
        "{report:?}"
    );
    let run = ctl(url, &["shards", "rebalance", "--admin-token", token]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stderr.contains("already balanced"), "{run:#?}");

    // A move to the owner itself, or to a stranger, is refused (exit 1).
    let run = ctl(
        url,
        &["shards", "move", "0", "--to", "1", "--admin-token", token],
    )
    .await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(move_refused)"), "{run:#?}");
    let run = ctl(
        url,
        &["shards", "move", "0", "--to", "9", "--admin-token", token],
    )
    .await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("not a member"), "{run:#?}");
    let run = ctl(
        url,
        &[
            "shards",
            "move",
            "zero",
            "--to",
            "2",
            "--admin-token",
            token,
        ],
    )
    .await;
    expect_code(&run, EXIT_USAGE);
}

#[tokio::test]
async fn nodes_list_drain_undrain_and_remove_on_a_single_node_cluster() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let token = crate::support::TEST_ADMIN_TOKEN;
    // Bounded polling until the node bootstrapped its cluster.
    let members = eventually(BOOTSTRAP_WAIT_MAX, "a member", async || {
        let run = ctl(url, &["--json", "nodes", "list", "--admin-token", token]).await;
        expect_code(&run, EXIT_OK);
        let members: Vec<sessiondb_client::protocol::ClusterMember> =
            serde_json::from_str(&run.stdout).expect("a member list");
        if members.is_empty() {
            Err(run.stdout)
        } else {
            Ok(members)
        }
    })
    .await;
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members[0].node_id == 1 && !members[0].draining);
    let run = ctl(url, &["nodes", "list", "--admin-token", token]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("voter (leader)"), "{run:#?}");

    // The only member cannot be drained (nobody takes its shards) nor
    // removed (it owns them); a stranger is not a member. Each exits 1
    // with the code and a hint.
    let run = ctl(url, &["nodes", "drain", "1", "--admin-token", token]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(no_other_member)"), "{run:#?}");
    let run = ctl(url, &["nodes", "remove", "1", "--admin-token", token]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(still_owns_shards)"), "{run:#?}");
    assert!(run.stderr.contains("nodes drain 1"), "{run:#?}");
    let run = ctl(url, &["nodes", "remove", "9", "--admin-token", token]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(not_a_member)"), "{run:#?}");
    let run = ctl(url, &["nodes", "drain", "one", "--admin-token", token]).await;
    expect_code(&run, EXIT_USAGE);

    // Undrain: a member that is not draining stays as it is (exit 0); a
    // stranger is not a member.
    let run = ctl(
        url,
        &["--json", "nodes", "undrain", "1", "--admin-token", token],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let undone: sessiondb_client::protocol::UndrainReport =
        serde_json::from_str(&run.stdout).expect("an undrain report");
    assert_eq!((undone.node_id, undone.was_draining), (1, false));
    let run = ctl(url, &["nodes", "undrain", "9", "--admin-token", token]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(not_a_member)"), "{run:#?}");
}

#[tokio::test]
async fn ping_and_status() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let run = ctl(url, &["ping"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.starts_with("ok: "), "{run:#?}");
    let run = ctl(url, &["--json", "status"]).await;
    expect_code(&run, EXIT_OK);
    let status: sessiondb_client::protocol::NodeStatus =
        serde_json::from_str(&run.stdout).expect("a NodeStatus");
    assert_eq!(status.now_ms, crate::support::START_MS);
    let run = ctl(url, &["status"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("shards:"), "{run:#?}");
}

#[tokio::test]
async fn unreachable_node_exits_3_with_a_hint_and_the_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for args in [
        &["ping"][..],
        &["projects", "list"],
        &["results", "shop", "x"],
    ] {
        let run = ctl(&url, args).await;
        expect_code(&run, EXIT_UNREACHABLE);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(
            lines[0],
            format!("error: cannot reach the node at {url}"),
            "{run:#?}"
        );
        assert!(lines[1].starts_with("  hint: "), "{run:#?}");
        assert!(lines[2].starts_with("  caused by: request to "), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
}

#[tokio::test]
async fn unknown_project_exits_1() {
    let node = TestNode::start().await;
    let url = node.base_url();
    for args in [
        &["projects", "show", "nope"][..],
        &["results", "nope", "checkout"],
    ] {
        let run = ctl(url, args).await;
        expect_code(&run, EXIT_FAILED);
        assert!(run.stderr.starts_with("error: "), "{run:#?}");
        assert!(run.stderr.contains("(unknown_project)"), "{run:#?}");
        assert!(
            run.stderr.contains("  hint: `sessiondb-ctl projects list`"),
            "{run:#?}"
        );
    }
}

#[tokio::test]
async fn bad_usage_exits_2() {
    // No node needed: nothing is sent.
    let url = "http://127.0.0.1:9";
    for args in [
        &["projects", "bogus"][..],
        &["import"],
        &["import", "f.ndjson", "--batch-events", "0"],
        &["results", "shop"],
        &["--no-such-flag", "ping"],
        &["projects", "configure", "shop"],
    ] {
        let run = ctl(url, args).await;
        expect_code(&run, EXIT_USAGE);
        assert!(!run.stderr.is_empty(), "{args:?}: {run:#?}");
    }
    let run = ctl(url, &["--help"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("Exit codes:"), "{run:#?}");
}

#[tokio::test]
async fn missing_import_file_exits_4() {
    let node = TestNode::start().await;
    let dir = TempDir::new("missing");
    let missing = dir.path().join("nothing-here.ndjson");
    let run = ctl(node.base_url(), &["import", missing.to_str().unwrap()]).await;
    expect_code(&run, EXIT_INPUT);
    assert!(run.stderr.starts_with("error: cannot read "), "{run:#?}");
    assert!(run.stderr.contains("caused by: "), "{run:#?}");
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`:
/// (ca, cert, key).
fn tls_files(dir: &Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&node_key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("node.pem", node.pem()),
        write("node.key", node_key.serialize_pem()),
    )
}

#[tokio::test]
async fn ctl_talks_https_to_a_tls_node_with_the_ca_file() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = tls_files(dir.path());
    let flags: Vec<String> = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]
        .iter()
        .map(|flag| flag.to_string())
        .collect();
    let node = TestNode::start_with_args(&flags).await;
    assert!(
        node.base_url().starts_with("https://"),
        "{}",
        node.base_url()
    );

    let run = ctl(node.base_url(), &["--ca-file", &ca, "--json", "status"]).await;
    expect_code(&run, EXIT_OK);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON status");
    assert!(status["shards"].as_u64().is_some(), "{run:#?}");

    // Without the CA the node's certificate is not trusted: unreachable.
    let run = ctl(node.base_url(), &["status"]).await;
    expect_code(&run, EXIT_UNREACHABLE);

    // A CA file that is not PEM is a usage error that names the file.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let bad = bad.display().to_string();
    let run = ctl(node.base_url(), &["--ca-file", &bad, "status"]).await;
    expect_code(&run, EXIT_USAGE);
    assert!(run.stderr.contains("--ca-file"), "{run:#?}");
}

#[tokio::test]
async fn keys_and_tokens_are_shown_once_and_rotate() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let run = ctl(url, &["projects", "create", "shop"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stdout.contains("ingest key (shown once"), "{run:#?}");
    let run = ctl(url, &["--json", "projects", "create", "blog"]).await;
    expect_code(&run, EXIT_OK);
    let blog: Project = serde_json::from_str(&run.stdout).expect("a Project");
    let old_key = blog
        .ingest_key
        .expect("the creation answer carries the key");
    // Shown once: reading the project back does not show it.
    let run = ctl(url, &["--json", "projects", "show", "blog"]).await;
    expect_code(&run, EXIT_OK);
    assert!(!run.stdout.contains(&old_key), "{run:#?}");

    // The ingest key imports into its project, and may do nothing else.
    let dir = TempDir::new("rotate");
    let file = dir.path().join("events.ndjson");
    let event = crate::support::decision("r-1", "blog", "v-1", crate::support::START_MS, "x", "a");
    std::fs::write(&file, serde_json::to_string(&event).unwrap() + "\n").unwrap();
    let run = ctl(
        url,
        &["import", file.to_str().unwrap(), "--ingest-key", &old_key],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let run = ctl(url, &["projects", "list", "--admin-token", &old_key]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(forbidden)"), "{run:#?}");

    let run = ctl(
        url,
        &[
            "--json",
            "projects",
            "rotate-key",
            "blog",
            "--grace-ms",
            "60000",
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let rotated: RotatedKey = serde_json::from_str(&run.stdout).expect("a RotatedKey");
    assert_ne!(rotated.key, old_key);
    assert_eq!(
        rotated.previous_valid_until_ms,
        Some(crate::support::START_MS + 60_000)
    );
    for key in [&old_key, &rotated.key] {
        let run = ctl(
            url,
            &["import", file.to_str().unwrap(), "--ingest-key", key],
        )
        .await;
        expect_code(&run, EXIT_OK);
    }
    let run = ctl(url, &["projects", "rotate-key", "blog", "--grace-ms", "0"]).await;
    expect_code(&run, EXIT_OK);
    assert!(run.stderr.contains("no longer works"), "{run:#?}");
    let run = ctl(url, &["projects", "rotate-key", "blog", "--grace-ms=-5"]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(invalid_grace)"), "{run:#?}");

    // The admin token: the new one works at once, the old one (no grace)
    // stops.
    let run = ctl(url, &["admin-token", "rotate", "--grace-ms", "0"]).await;
    expect_code(&run, EXIT_OK);
    let new_token = run
        .stdout
        .lines()
        .nth(1)
        .expect("the token line")
        .trim()
        .to_string();
    assert_eq!(new_token.len(), 64, "{run:#?}");
    let run = ctl(url, &["status"]).await;
    expect_code(&run, EXIT_FAILED);
    assert!(run.stderr.contains("(unauthorized)"), "{run:#?}");
    let run = ctl(url, &["status", "--admin-token", &new_token]).await;
    expect_code(&run, EXIT_OK);
}

/// `--node host:port` is the node at `http://host:port`; a URL with
/// another scheme is a usage error that says how to write it.
#[tokio::test]
async fn node_given_as_host_and_port_is_reached() {
    let node = TestNode::start().await;
    let run = ctl(node.address(), &["ping"]).await;
    expect_code(&run, EXIT_OK);
    assert!(
        run.stdout.contains(&format!("http://{}", node.address())),
        "{run:#?}"
    );
    let run = ctl("ftp://127.0.0.1:9", &["ping"]).await;
    expect_code(&run, EXIT_USAGE);
    assert!(run.stderr.contains("use http:// or https://"), "{run:#?}");
}
