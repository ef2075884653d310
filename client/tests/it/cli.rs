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
    // The operator's token; a test that wants another gives
    // `--admin-token`, which wins over the variable.
    ctl_with_admin_token(node, args, Some(crate::support::TEST_ADMIN_TOKEN)).await
}

/// Runs the CLI with `SESSIONDB_ADMIN_TOKEN` set to `admin_token`, or unset.
async fn ctl_with_admin_token(node: &str, args: &[&str], admin_token: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessiondb-ctl"));
    command
        .arg("--node")
        .arg(node)
        .args(args)
        .env_remove("SESSIONDB_NODE")
        .env_remove("SESSIONDB_INGEST_KEY")
        .env_remove("SESSIONDB_ADMIN_TOKEN")
        .env_remove("NO_COLOR");
    if let Some(token) = admin_token {
        command.env("SESSIONDB_ADMIN_TOKEN", token);
    }
    let output = command.output().await.expect("run sessiondb-ctl");
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
    // Some lines were rejected: exit 4, and the rest is imported. The
    // counts add up on screen, and the rejections are summed by reason.
    expect_code(&run, EXIT_INPUT);
    assert!(
        run.stdout
            .contains("sent 401 = 400 accepted + 0 duplicates + 1 rejected + 0 failed"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("lines not sent: 2 malformed, 1 blank"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("3 rejected lines (listed in "),
        "{run:#?}"
    );
    let reasons: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("REASON"))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        reasons,
        [
            vec!["REASON", "LINES"],
            vec!["malformed_line", "2"],
            vec!["unknown_project", "1"]
        ],
        "{run:#?}"
    );
    assert!(run.stdout.contains("events/s"), "{run:#?}");
    // stderr is not a terminal: plain progress lines with a percentage and
    // an ETA, and no control codes anywhere.
    assert!(
        run.stderr
            .lines()
            .any(|line| line.starts_with("importing: ")
                && line.contains("% (")
                && line.contains(", ETA ")),
        "{run:#?}"
    );
    assert!(
        !run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'),
        "{run:#?}"
    );
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
    assert_eq!(summary["rejected_by_node"], 1, "{summary}");
    assert_eq!(summary["malformed"], 2, "{summary}");
    assert_eq!(summary["blank"], 1, "{summary}");
    assert_eq!(summary["events_sent"], 401, "{summary}");
    assert_eq!(
        summary["rejections_by_reason"]["unknown_project"], 1,
        "{summary}"
    );
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
    assert!(
        run.stdout
            .contains("sent 40 = 40 accepted + 0 duplicates + 0 rejected + 0 failed"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("REASON"), "{run:#?}");
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
    assert!(
        refused
            .stderr
            .starts_with("error: the admin token from --admin-token was refused (401)\n  hint: "),
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
    assert!(
        run.stdout
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == ["NODE", "ADDRESS", "ROLE", "SHARDS", "EPOCHS", "MOVING", "IN"]),
        "one header style: {run:#?}"
    );
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
    assert!(
        run.stdout.starts_with("SHARD  OWNER  EPOCH  MOVING TO\n"),
        "{run:#?}"
    );

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
    assert!(run.stdout.starts_with("NODE  ADDRESS"), "{run:#?}");

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
            format!(
                "error: could not connect to {url}: connection refused — is a node running there?"
            ),
            "{run:#?}"
        );
        // One line and a hint; the cause chain only behind -v.
        assert_eq!(lines.len(), 2, "{run:#?}");
        assert!(lines[1].starts_with("  hint: "), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert!(
            !run.stderr.contains('\x1b'),
            "no colour off a terminal: {run:#?}"
        );

        let verbose: Vec<&str> = [&["-v"][..], args].concat();
        let run = ctl(&url, &verbose).await;
        expect_code(&run, EXIT_UNREACHABLE);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert!(lines[2].starts_with("  caused by: request to "), "{run:#?}");
        assert!(
            lines.iter().any(|line| line.contains("os error")),
            "{run:#?}"
        );
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
    assert!(!run.stderr.contains("caused by: "), "{run:#?}");
    let run = ctl(
        node.base_url(),
        &["import", missing.to_str().unwrap(), "--verbose"],
    )
    .await;
    expect_code(&run, EXIT_INPUT);
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
    // The key first and alone on stdout; what it is on stderr.
    let run = ctl(url, &["projects", "create", "shop"]).await;
    expect_code(&run, EXIT_OK);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert!(lines[0].len() >= 32 && !lines[0].contains(' '), "{run:#?}");
    assert!(run.stderr.contains("ingest key, shown once"), "{run:#?}");
    // -v: the settings follow the key.
    let run = ctl(url, &["projects", "create", "shop2", "-v"]).await;
    expect_code(&run, EXIT_OK);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(!lines[0].contains(' ') && lines[1].is_empty(), "{run:#?}");
    assert!(run.stdout.contains("session_gap_ms:"), "{run:#?}");
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
    assert!(
        run.stderr
            .starts_with("error: the admin token from --admin-token was refused (403)"),
        "{run:#?}"
    );

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
    assert!(
        run.stderr
            .starts_with("error: the admin token from SESSIONDB_ADMIN_TOKEN was refused (401)"),
        "{run:#?}"
    );
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

/// A project `shop` (1 h buckets, breakdown by browser) holding `workload`,
/// sent through the client library.
async fn shop_with(node: &TestNode, events: &[sessiondb_client::protocol::Event]) {
    let run = ctl(
        node.base_url(),
        &[
            "projects",
            "create",
            "shop",
            "--bucket-ms",
            "3600000",
            "--breakdown-attributes",
            "browser",
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    let answer = node.client().send(events).await.expect("send the events");
    assert_eq!(answer.accepted as usize, events.len(), "{answer:?}");
}

/// 2025-11-26 09:00 UTC, the start of the manual clock's hour.
const HOUR_START_MS: i64 = crate::support::START_MS - 40 * 60_000;
const HOUR_MS: i64 = 3_600_000;

#[tokio::test]
async fn time_input_is_human_and_aligned_to_the_projects_buckets() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let workload = Workload::new("shop", 40);
    shop_with(&node, &workload.events).await;
    let visitors = |run: &Run| -> (i64, i64, i64) {
        let results: ResultsResponse = serde_json::from_str(&run.stdout).expect("results");
        let total = results.groups[0]
            .variations
            .iter()
            .map(|v| v.visitors)
            .sum();
        (results.from, results.to, total)
    };
    let all = workload.visitors_a + workload.visitors_b;

    // 30 minutes before the node's clock (09:40): widened to 09:00.
    let run = ctl(
        url,
        &["--json", "results", "shop", "checkout", "--since", "30m"],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert_eq!(
        run.stderr, "range aligned to 1h buckets: from 2025-11-26 09:00Z\n",
        "{run:#?}"
    );
    assert_eq!(
        visitors(&run),
        (HOUR_START_MS, HOUR_START_MS + HOUR_MS, all)
    );

    // ISO 8601 without an offset is UTC; both ends widen outward.
    let run = ctl(
        url,
        &[
            "--json",
            "results",
            "shop",
            "checkout",
            "--from",
            "2025-11-26T09:10",
            "--to",
            "2025-11-26T09:50Z",
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert_eq!(
        run.stderr, "range aligned to 1h buckets: 2025-11-26 09:00Z to 2025-11-26 10:00Z\n",
        "{run:#?}"
    );
    assert_eq!(
        visitors(&run),
        (HOUR_START_MS, HOUR_START_MS + HOUR_MS, all)
    );

    // An offset, and epoch ms; an aligned range is used as given, silently.
    let to_ms = (HOUR_START_MS + HOUR_MS).to_string();
    let run = ctl(
        url,
        &[
            "results",
            "shop",
            "checkout",
            "--from",
            "2025-11-26T10:10+01:00",
            "--to",
            &to_ms,
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert!(
        run.stderr
            .starts_with("range aligned to 1h buckets: 2025-11-26 09:00Z to"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .starts_with("shop / checkout: 2025-11-26 09:00Z to 2025-11-26 10:00Z"),
        "{run:#?}"
    );
    let run = ctl(
        url,
        &[
            "results",
            "shop",
            "checkout",
            "--from",
            "2025-11-26",
            "--to",
            &to_ms,
        ],
    )
    .await;
    expect_code(&run, EXIT_OK);
    assert!(run.stderr.is_empty(), "{run:#?}");

    // Bad input is a usage error that says how to write it.
    for (args, says) in [
        (&["--since", "3y"][..], "unknown unit"),
        (&["--since", "24"], "no unit"),
        (&["--from", "yesterday"], "2026-12-04T10:00"),
        (&["--from", "2025-02-30"], "is not a time"),
        (
            &["--since", "1h", "--from", "2025-11-26"],
            "cannot be used with",
        ),
    ] {
        let run = ctl(url, &[&["results", "shop", "checkout"][..], args].concat()).await;
        expect_code(&run, EXIT_USAGE);
        assert!(run.stderr.contains(says), "{args:?}: {run:#?}");
    }
    // The node's own log went to a file: no colour codes there either.
    let log = node.stderr_text();
    assert!(!log.is_empty() && !log.contains('\x1b'), "{log:?}");
}

#[tokio::test]
async fn authentication_errors_name_the_credential_and_its_source() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let wrong = "wrong-token-0123456789";

    let run = ctl_with_admin_token(url, &["projects", "list"], Some(wrong)).await;
    expect_code(&run, EXIT_FAILED);
    assert!(
        run.stderr.starts_with(
            "error: the admin token from SESSIONDB_ADMIN_TOKEN was refused (401)\n  hint: "
        ),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 2, "{run:#?}");

    let run = ctl_with_admin_token(url, &["projects", "list", "--admin-token", wrong], None).await;
    expect_code(&run, EXIT_FAILED);
    assert!(
        run.stderr
            .starts_with("error: the admin token from --admin-token was refused (401)"),
        "{run:#?}"
    );

    // None given: said as missing, not as wrong.
    let run = ctl_with_admin_token(url, &["projects", "list"], None).await;
    expect_code(&run, EXIT_FAILED);
    assert!(
        run.stderr.starts_with(
            "error: no admin token given: pass --admin-token or set SESSIONDB_ADMIN_TOKEN\n"
        ),
        "{run:#?}"
    );
    let run = ctl_with_admin_token(url, &["--json", "status"], None).await;
    expect_code(&run, EXIT_FAILED);
    let error: serde_json::Value = serde_json::from_str(&run.stdout).expect("a JSON error");
    assert_eq!(error["error"]["code"], "missing_credential", "{run:#?}");
}

#[tokio::test]
async fn an_import_refused_for_its_credential_is_not_called_safe_to_retry() {
    let node = TestNode::start().await;
    let url = node.base_url();
    expect_code(&ctl(url, &["projects", "create", "shop"]).await, EXIT_OK);
    let dir = TempDir::new("refused");
    let input = dir.path().join("events.ndjson");
    let text: String = Workload::new("shop", 10)
        .events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    let input = input.to_str().unwrap();

    let run = ctl(
        url,
        &["import", input, "--ingest-key", "not-a-key-0123456789"],
    )
    .await;
    expect_code(&run, EXIT_FAILED);
    assert!(
        run.stderr
            .contains("error: the ingest key from --ingest-key was refused (401)"),
        "{run:#?}"
    );
    assert!(
        !run.stderr.contains("safe to import again") && !run.stdout.contains("safe to import"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("sent 14 = 0 accepted + 0 duplicates + 0 rejected + 14 failed"),
        "{run:#?}"
    );

    // No credential at all: said as missing.
    let run = ctl_with_admin_token(url, &["import", input], None).await;
    expect_code(&run, EXIT_FAILED);
    assert!(
        run.stderr.contains(
            "error: no ingest key or admin token given: pass --ingest-key or set SESSIONDB_INGEST_KEY"
        ),
        "{run:#?}"
    );

    // --json: one document, the summary with the error in it.
    let run = ctl(
        url,
        &[
            "--json",
            "import",
            input,
            "--ingest-key",
            "not-a-key-0123456789",
        ],
    )
    .await;
    expect_code(&run, EXIT_FAILED);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON summary");
    assert_eq!(summary["failed"], 14, "{summary}");
    assert_eq!(summary["error"]["code"], "unauthorized", "{summary}");
    assert!(
        run.stderr
            .lines()
            .all(|line| line.starts_with("importing: ")),
        "{run:#?}"
    );
}

#[tokio::test]
async fn json_errors_are_json_on_stdout_with_the_usual_exit_codes() {
    let node = TestNode::start().await;
    let url = node.base_url();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let dir = TempDir::new("json-errors");
    let missing = dir.path().join("missing.ndjson");
    let missing = missing.to_str().unwrap();
    for (node, args, code, exit) in [
        (
            url,
            &["projects", "show", "nope"][..],
            "unknown_project",
            EXIT_FAILED,
        ),
        (url, &["results", "shop"], "usage", EXIT_USAGE),
        (url, &["projects", "bogus"], "usage", EXIT_USAGE),
        (url, &["import", missing], "input", EXIT_INPUT),
        (&nobody, &["ping"], "unreachable", EXIT_UNREACHABLE),
    ] {
        let run = ctl(node, &[&["--json"][..], args].concat()).await;
        expect_code(&run, exit);
        let error: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {run:#?}"));
        assert_eq!(error["error"]["code"], code, "{args:?}: {run:#?}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{run:#?}"
        );
        assert!(error["error"]["hint"].is_string(), "{args:?}: {run:#?}");
        assert!(run.stderr.is_empty(), "{args:?}: {run:#?}");
    }
}

#[tokio::test]
async fn help_lists_global_options_apart_with_examples_in_every_command() {
    let url = "http://127.0.0.1:9";
    for path in [
        &["ping"][..],
        &["status"],
        &["projects"],
        &["projects", "create"],
        &["projects", "list"],
        &["projects", "show"],
        &["projects", "configure"],
        &["projects", "rotate-key"],
        &["import"],
        &["results"],
        &["cluster"],
        &["cluster", "status"],
        &["shards"],
        &["shards", "list"],
        &["shards", "move"],
        &["shards", "rebalance"],
        &["nodes"],
        &["nodes", "list"],
        &["nodes", "drain"],
        &["nodes", "remove"],
        &["admin-token"],
        &["admin-token", "rotate"],
    ] {
        let run = ctl(url, &[path, &["--help"]].concat()).await;
        expect_code(&run, EXIT_OK);
        let help = &run.stdout;
        let examples = help
            .split_once("\nExamples:\n")
            .map(|(_, examples)| examples)
            .unwrap_or_else(|| panic!("{path:?}: no examples: {help}"));
        assert!(examples.contains("sessiondb-ctl "), "{path:?}: {help}");
        let (own, global) = help
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{path:?}: no global options: {help}"));
        for flag in [
            "--node <NODE>",
            "--admin-token <TOKEN>",
            "--json",
            "-v, --verbose",
        ] {
            assert!(global.contains(flag), "{path:?} {flag}: {help}");
            assert!(!own.contains(flag), "{path:?} {flag}: {help}");
        }
        assert!(!global.contains("required"), "{path:?}: {help}");
    }
}

#[tokio::test]
async fn unknown_key_breakdown_or_baseline_is_a_usage_error_listing_the_known_ones() {
    let node = TestNode::start().await;
    let url = node.base_url();
    shop_with(&node, &Workload::new("shop", 30).events).await;
    for (args, message, hint) in [
        (
            &["--key", "nosuchkey"][..],
            "error: experiment checkout has no conversion key nosuchkey in this range",
            "  hint: known conversion keys: purchase",
        ),
        (
            &["--breakdown", "country"],
            "error: project shop has no breakdown attribute country",
            "  hint: known breakdown attributes: browser",
        ),
        (
            &["--baseline", "z"],
            "error: experiment checkout has no variation z",
            "  hint: known variations: a, b",
        ),
    ] {
        let run = ctl(url, &[&["results", "shop", "checkout"][..], args].concat()).await;
        expect_code(&run, EXIT_USAGE);
        assert_eq!(run.stderr, format!("{message}\n{hint}\n"), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
    let run = ctl(
        url,
        &[
            "--json", "results", "shop", "checkout", "--key", "purchase", "--key", "nope",
        ],
    )
    .await;
    expect_code(&run, EXIT_USAGE);
    let error: serde_json::Value = serde_json::from_str(&run.stdout).expect("a JSON error");
    assert_eq!(error["error"]["code"], "unknown_key", "{run:#?}");
    // A known key is fine.
    let run = ctl(url, &["results", "shop", "checkout", "--key", "purchase"]).await;
    expect_code(&run, EXIT_OK);
}

/// Visitors of `variation` on experiment `checkout`, the first `converted`
/// of whom purchase once.
fn exposed(
    variation: &str,
    visitors: usize,
    converted: usize,
) -> Vec<sessiondb_client::protocol::Event> {
    let mut events = Vec::new();
    for n in 0..visitors {
        let visitor = format!("{variation}-{n}");
        let ts = crate::support::START_MS - 60_000 + n as i64;
        events.push(crate::support::decision(
            &format!("d-{visitor}"),
            "shop",
            &visitor,
            ts,
            "checkout",
            variation,
        ));
        if n < converted {
            events.push(crate::support::custom(
                &format!("p-{visitor}"),
                "shop",
                &visitor,
                ts + 1_000,
                "purchase",
            ));
        }
    }
    events
}

#[tokio::test]
async fn results_show_verdicts_always_valid_p_values_and_the_srm_warning() {
    let node = TestNode::start().await;
    let url = node.base_url();
    // a is the baseline; b converts far better, d far worse; c has too few
    // visitors for a verdict, and breaks the equal split.
    let events: Vec<_> = [
        exposed("a", 200, 60),
        exposed("b", 200, 150),
        exposed("c", 20, 10),
        exposed("d", 200, 5),
    ]
    .concat();
    shop_with(&node, &events).await;
    let run = ctl(url, &["results", "shop", "checkout", "--key", "purchase"]).await;
    expect_code(&run, EXIT_OK);
    let table = &run.stdout;
    assert!(
        table.contains("WARNING: SAMPLE RATIO MISMATCH") && table.contains("(p <0.0001,"),
        "{table}"
    );
    let header = table
        .lines()
        .find(|line| line.starts_with("VARIATION  CONVERTED"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        header.ends_with("P-VALUE  ALWAYS-VALID P  VERDICT"),
        "{header}"
    );
    let verdict_column = header.find("VERDICT").unwrap();
    let p_value_end = header.find("P-VALUE").unwrap() + "P-VALUE".len();
    let key_rows: Vec<&str> = table
        .lines()
        .skip_while(|line| !line.starts_with("VARIATION  CONVERTED"))
        .skip(1)
        .collect();
    let row = |variation: &str| -> &str {
        key_rows
            .iter()
            .find(|line| line.split_whitespace().next() == Some(variation))
            .unwrap_or_else(|| panic!("no row {variation}: {table}"))
    };
    assert!(row("a").ends_with("baseline"), "{table}");
    for (variation, verdict) in [("b", "ahead"), ("d", "behind"), ("c", "not enough data")] {
        assert_eq!(&row(variation)[verdict_column..], verdict, "{table}");
    }
    // b's fixed-horizon p-value is far below 0.0001: printed as the console does.
    assert_eq!(
        row("b")[..p_value_end].split_whitespace().last(),
        Some("<0.0001"),
        "{table}"
    );
    // The always-valid p-value column shows the node's number.
    let results: ResultsResponse = serde_json::from_str(
        &ctl(
            url,
            &["--json", "results", "shop", "checkout", "--key", "purchase"],
        )
        .await
        .stdout,
    )
    .expect("results");
    let always_valid = results.groups[0]
        .variation("d")
        .and_then(|d| d.metrics[0].rate_comparison.as_ref())
        .and_then(|comparison| comparison.always_valid_p_value)
        .expect("an always-valid p-value for d");
    let printed = if always_valid < 0.0001 {
        "<0.0001".to_string()
    } else {
        format!("{always_valid:.4}")
    };
    assert!(
        row("d")[..verdict_column].trim_end().ends_with(&printed),
        "{printed}: {table}"
    );
}
