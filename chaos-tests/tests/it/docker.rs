//! The `FROM scratch` container image and the compose cluster
//! (`cluster-config/README.md`):
//!
//! - a node started from the image on a private Docker network serves the
//!   API, ingests a batch sent with the Rust client library, answers the
//!   expected results, and keeps its data in /data across a restart;
//! - `cluster-config/compose.yaml` brings up 3 nodes that form one cluster
//!   (node 1 lists 3 members at their fixed IP addresses), and a batch
//!   ingested through node 1 reads back with the expected results.
//!
//! The image is built by `cluster-config/build-image` (scripts/test runs it
//! in `step_image` before `cargo test`); this test does not build it, and
//! fails with that hint when the image is missing. Without a reachable
//! Docker daemon it fails too: it never skips. `SESSIONDB_IMAGE` names
//! another image than `sessiondb:dev`.
//!
//! Every container, network and volume a test makes is removed when it
//! ends, failed or not (the [`Docker`] and [`Compose`] guards' `Drop`).

use sessiondb_client::{Client, ResultsRequest};
use sessiondb_protocol::{CreateProject, Decision, Event, EventType, ResultsResponse, Timestamp};
use sessiondb_test_support::eventually;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The image under test.
fn image() -> String {
    std::env::var("SESSIONDB_IMAGE").unwrap_or_else(|_| "sessiondb:dev".to_string())
}

/// The node's manual clock: 2025-11-26 09:40 UTC, so event times are fixed.
const START_MS: i64 = 1_764_150_000_000;
const ADMIN_TOKEN: &str = "docker-test-admin-token-0123456789";
const CLUSTER_SECRET: &str = "docker-test-cluster-secret-0123456789";
/// Bound on the 3 nodes forming one cluster after `up`.
const MEMBERSHIP_WAIT_MAX: Duration = Duration::from_secs(90);
/// Bound on a container becoming healthy (start or restart with recovery).
const HEALTH_WAIT_MAX: Duration = Duration::from_secs(60);
/// Health polls between two checks that the container still runs.
const CONTAINER_CHECK_ATTEMPTS: u32 = 20;
const VISITORS: usize = 300;

/// Runs `docker` with `args`; the output, whatever the exit status.
fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `docker` ({error}): this test needs Docker Engine and its CLI on PATH"
            )
        })
}

/// Runs `docker` with `args`, panicking with its stderr when it fails;
/// its trimmed stdout.
fn docker(args: &[&str]) -> String {
    let output = docker_output(args);
    assert!(
        output.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Fails (never skips) when the daemon or the image is missing.
fn require_docker_and_image() {
    let info = docker_output(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "Docker Engine is required for this test and is not reachable (`docker info` failed: {}); \
         start the daemon (e.g. `dockerd &` as root) and run scripts/test again",
        String::from_utf8_lossy(&info.stderr).trim()
    );
    let image = image();
    let inspect = docker_output(&["image", "inspect", "--format", "{{.Id}}", &image]);
    assert!(
        inspect.status.success(),
        "the image {image} does not exist: build it with cluster-config/build-image \
         (scripts/test does, in step_image, before cargo test)"
    );
}

/// A name no other run uses: `sessiondb-test-<label>-<pid>-<nanos>`.
fn unique_name(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    format!("sessiondb-test-{label}-{}-{nanos}", std::process::id())
}

/// The containers and network of one test; removed on drop, with the
/// containers' logs printed first when the test is failing.
#[derive(Debug, Default)]
struct Docker {
    network: Option<String>,
    containers: Vec<String>,
}

impl Docker {
    fn create_network(&mut self, name: &str) {
        docker(&["network", "create", "--driver", "bridge", name]);
        self.network = Some(name.to_string());
    }

    /// `docker run -d` on the guard's network, publishing 7070 on a free
    /// port of 127.0.0.1; `args` go to `sessiondb serve`.
    fn run(&mut self, name: &str, args: &[&str]) {
        let network = self.network.clone().expect("create the network first");
        let image = image();
        let mut command = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &network,
            "-p",
            "127.0.0.1::7070",
            "-e",
            "SESSIONDB_ADMIN_TOKEN",
            &image,
        ];
        command.extend_from_slice(args);
        // The token goes through the environment, not the command line.
        let output = Command::new("docker")
            .args(&command)
            .env("SESSIONDB_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run docker");
        // Registered even if `docker run` failed half-way (created, not started).
        self.containers.push(name.to_string());
        assert!(
            output.status.success(),
            "`docker {}` failed: {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    /// The node's URL on the host: the published port of 7070.
    fn base_url(&self, container: &str) -> String {
        let mapping = docker(&["port", container, "7070/tcp"]);
        let address = mapping
            .lines()
            .find(|line| line.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no 127.0.0.1 mapping of 7070 in `docker port`: {mapping}"));
        format!("http://{address}")
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for container in &self.containers {
            if std::thread::panicking() {
                let logs = docker_output(&["logs", "--tail", "60", container]);
                eprintln!(
                    "--- container {container} (tail) ---\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            let _ = docker_output(&["rm", "--force", "--volumes", container]);
        }
        if let Some(network) = &self.network {
            let _ = docker_output(&["network", "rm", network]);
        }
    }
}

/// Polls `/v1/health` until it answers, for at most [`HEALTH_WAIT_MAX`];
/// fails early when the container stops.
async fn wait_healthy(client: &Client, container: &str) {
    let mut attempts = 0u32;
    let what = format!("{container} answering /v1/health");
    eventually(HEALTH_WAIT_MAX, &what, async || {
        attempts += 1;
        let error = match client.health().await {
            Ok(()) => return Ok(()),
            Err(error) => error.to_string(),
        };
        if attempts.is_multiple_of(CONTAINER_CHECK_ATTEMPTS) {
            let running = docker(&["inspect", "--format", "{{.State.Running}}", container]);
            assert_eq!(
                running, "true",
                "container {container} stopped before serving"
            );
        }
        Err(error)
    })
    .await
}

/// (variation, visitors, unique purchasers, purchase value sum) per
/// variation.
type Counts = Vec<(String, i64, i64, f64)>;

/// Visitor n sees variation `a` (n even) or `b` (n odd) of `checkout` in
/// `browser` firefox, a minute before `now_ms`; every third visitor
/// purchases once, for 10 + n. The expected (variation, visitors,
/// purchasers, purchase value sum).
fn workload(project: &str, now_ms: i64) -> (Vec<Event>, Counts) {
    let mut events = Vec::new();
    let mut expected = vec![("a".to_string(), 0, 0, 0.0), ("b".to_string(), 0, 0, 0.0)];
    for n in 0..VISITORS {
        let visitor = format!("v-{n}");
        let ts = now_ms - 60_000 + n as i64;
        let side = n % 2;
        events.push(Event {
            id: format!("d-{n}"),
            project: project.into(),
            visitor: visitor.clone(),
            ts: Timestamp::Milliseconds(ts),
            event_type: EventType::Decision,
            key: None,
            value: None,
            attributes: [("browser".to_string(), "firefox".to_string())].into(),
            decisions: vec![Decision {
                experiment: "checkout".into(),
                variation: expected[side].0.clone(),
            }],
        });
        expected[side].1 += 1;
        if n % 3 == 0 {
            let value = 10.0 + n as f64;
            events.push(Event {
                id: format!("p-{n}"),
                project: project.into(),
                visitor,
                ts: Timestamp::Milliseconds(ts + 1_000),
                event_type: EventType::Custom,
                key: Some("purchase".into()),
                value: Some(value),
                attributes: Default::default(),
                decisions: Vec::new(),
            });
            expected[side].2 += 1;
            expected[side].3 += value;
        }
    }
    (events, expected)
}

/// (variation, visitors, unique purchasers, purchase value sum) per
/// variation, from the results' single group.
fn counts(results: &ResultsResponse) -> Counts {
    assert_eq!(results.groups.len(), 1, "one group without a breakdown");
    results.groups[0]
        .variations
        .iter()
        .map(|v| {
            let purchase = v.metrics.iter().find(|m| m.key == "purchase");
            (
                v.variation.clone(),
                v.visitors,
                purchase.map_or(0, |m| m.unique_conversions),
                purchase.map_or(0.0, |m| m.value_sum),
            )
        })
        .collect()
}

async fn results(client: &Client, project: &str) -> ResultsResponse {
    let mut request = ResultsRequest::new(project, "checkout");
    request.keys = vec!["purchase".into()];
    client.results(&request).await.expect("read the results")
}

#[tokio::test]
async fn scratch_image_serves_ingests_and_keeps_data_across_restart() {
    require_docker_and_image();
    let _turn = crate::DOCKER_TURN.lock().await;
    let mut guard = Docker::default();
    let network = unique_name("net");
    let container = unique_name("node");
    guard.create_network(&network);
    let start_ms = START_MS.to_string();
    guard.run(&container, &["--node-id", "1", "--manual-clock", &start_ms]);

    let client = Client::new(guard.base_url(&container)).with_token(ADMIN_TOKEN);
    wait_healthy(&client, &container).await;
    let status = client.status().await.expect("node status");
    assert_eq!(status.node_id, 1, "the node id given after the image name");

    let project = "shop";
    client
        .create_project(&CreateProject {
            name: project.into(),
            ..Default::default()
        })
        .await
        .expect("create the project");
    let (events, expected) = workload(project, START_MS);
    let answer = client.send(&events).await.expect("ingest the batch");
    assert_eq!(
        (answer.accepted, answer.duplicates, answer.rejected.len()),
        (events.len() as u64, 0, 0),
        "every event accepted: {:?}",
        answer.rejected.first()
    );
    assert_eq!(counts(&results(&client, project).await), expected);

    // The admin token from the environment guards /v1/admin/*: a checkpoint
    // is written to /data with it, refused without it.
    let http = reqwest::Client::new();
    let checkpoint_url = format!("{}/v1/admin/checkpoint", client.base_url());
    let refused = http
        .post(&checkpoint_url)
        .send()
        .await
        .expect("checkpoint request");
    assert_eq!(refused.status().as_u16(), 401, "no token, no checkpoint");
    let checkpoint = http
        .post(&checkpoint_url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("checkpoint request");
    assert!(
        checkpoint.status().is_success(),
        "checkpoint with the admin token: {}",
        checkpoint.status()
    );
    let checkpoint: serde_json::Value = checkpoint.json().await.expect("checkpoint JSON");
    assert_eq!(
        checkpoint["visitors"].as_u64(),
        Some(VISITORS as u64),
        "the checkpoint holds every visitor: {checkpoint}"
    );

    // A stop (SIGTERM) and start: the node recovers from /data, and the
    // same batch is now all duplicates.
    docker(&["restart", "--time", "20", &container]);
    let client = Client::new(guard.base_url(&container)).with_token(ADMIN_TOKEN);
    wait_healthy(&client, &container).await;
    assert_eq!(
        counts(&results(&client, project).await),
        expected,
        "results after the restart"
    );
    let again = client.send(&events).await.expect("ingest the batch again");
    assert_eq!(
        (again.accepted, again.duplicates),
        (0, events.len() as u64),
        "the resent batch is recognised as duplicates after recovery"
    );
}

/// The compose file, from the repository root.
const COMPOSE_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../cluster-config/compose.yaml"
);

/// One compose project of `cluster-config/compose.yaml` with this test's
/// settings; brought down with its volumes on drop (logs printed first
/// when the test is failing).
#[derive(Debug)]
struct Compose {
    project: String,
    subnet_prefix: String,
    up: bool,
}

impl Compose {
    fn new() -> Compose {
        // Lowercase letters and digits only: a valid project name for every
        // docker-compose version.
        let project = unique_name("c").replace('-', "");
        // A /24 that a parallel run (another process) does not pick.
        let subnet_prefix = format!("10.213.{}", std::process::id() % 250);
        Compose {
            project,
            subnet_prefix,
            up: false,
        }
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .args(["--no-ansi", "-p", &self.project, "-f", COMPOSE_FILE])
            .args(args)
            .env("SESSIONDB_IMAGE", image())
            .env("SESSIONDB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SESSIONDB_CLUSTER_SECRET", CLUSTER_SECRET)
            .env("SESSIONDB_SUBNET_PREFIX", &self.subnet_prefix)
            // Empty: Docker picks free host ports.
            .env("SESSIONDB_PORT_1", "")
            .env("SESSIONDB_PORT_2", "")
            .env("SESSIONDB_PORT_3", "")
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run docker-compose ({error}): the 3-node test needs it on PATH")
            })
    }

    /// Runs a compose command, panicking with its stderr when it fails.
    fn run(&mut self, args: &[&str]) -> String {
        if args.first() == Some(&"up") {
            self.up = true;
        }
        let output = self.output(args);
        assert!(
            output.status.success(),
            "`docker-compose {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The URL of `service` on the host, and its container id.
    fn node(&mut self, service: &str) -> (Client, String) {
        let port = self.run(&["port", service, "7070"]);
        let address = port
            .lines()
            .find(|line| line.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no 127.0.0.1 mapping of {service}:7070: {port}"));
        let container = self.run(&["ps", "-q", service]);
        (
            Client::new(format!("http://{address}")).with_token(ADMIN_TOKEN),
            container,
        )
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        if std::thread::panicking() {
            let logs = self.output(&["logs", "--no-color", "--tail", "40"]);
            eprintln!(
                "--- compose project {} logs (tail) ---\n{}",
                self.project,
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        let _ = self.output(&["down", "--volumes", "--timeout", "10"]);
    }
}

/// Polls node 1's `GET /v1/cluster` until it lists `expected` members, for
/// at most [`MEMBERSHIP_WAIT_MAX`]; the last answer.
async fn wait_members(client: &Client, expected: usize) -> serde_json::Value {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/cluster", client.base_url());
    let what = format!("node 1 listing {expected} members");
    eventually(MEMBERSHIP_WAIT_MAX, &what, async || {
        match http.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
            Ok(answer) if answer.status().is_success() => {
                let body: serde_json::Value = answer.json().await.expect("cluster status JSON");
                let members = body["members"].as_array().map_or(0, Vec::len);
                if members == expected {
                    Ok(body)
                } else {
                    Err(body.to_string())
                }
            }
            Ok(answer) => Err(format!("status {}", answer.status())),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn compose_cluster_of_three_nodes_forms_and_answers_through_node_1() {
    require_docker_and_image();
    let _turn = crate::DOCKER_TURN.lock().await;
    let mut compose = Compose::new();
    compose.run(&["up", "-d"]);
    let (node1, container1) = compose.node("node1");
    wait_healthy(&node1, &container1).await;

    let cluster = wait_members(&node1, 3).await;
    let mut members: Vec<(u64, String)> = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            (
                member["node_id"].as_u64().expect("a member's node_id"),
                member["address"]
                    .as_str()
                    .expect("a member's address")
                    .to_string(),
            )
        })
        .collect();
    members.sort();
    let prefix = &compose.subnet_prefix;
    assert_eq!(
        members,
        vec![
            (1, format!("{prefix}.11:7070")),
            (2, format!("{prefix}.12:7070")),
            (3, format!("{prefix}.13:7070")),
        ],
        "every node a member at its fixed IP address: {cluster}"
    );

    let project = "shop";
    node1
        .create_project(&CreateProject {
            name: project.into(),
            ..Default::default()
        })
        .await
        .expect("create the project through node 1");
    // The cluster runs on the system clock: events of the last minute.
    let now_ms = node1.status().await.expect("node 1 status").now_ms;
    let (events, expected) = workload(project, now_ms);
    let answer = node1.send(&events).await.expect("ingest through node 1");
    assert_eq!(
        (answer.accepted, answer.duplicates, answer.rejected.len()),
        (events.len() as u64, 0, 0),
        "every event accepted: {:?}",
        answer.rejected.first()
    );
    assert_eq!(counts(&results(&node1, project).await), expected);
}
