//! Test support for the client crate: the real `sessiondb` node binary on a
//! loopback port ([`TestNode`]), a TCP proxy that can lose answers or hold
//! requests ([`Proxy`]), and event builders.
//!
//! The node crate's tests have their own `TestNode`; a test crate cannot
//! import another package's test code, and `CARGO_BIN_EXE_*` only exists for
//! the package's own binaries, so this one builds the node with cargo once
//! per test process and reads the executable's path from cargo's JSON
//! messages.

use sessiondb_client::protocol::{Decision, Event, EventType, Timestamp};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The manual clock's start: 2025-11-26 09:40 UTC.
pub const START_MS: i64 = 1_764_150_000_000;
/// Bound on the node's startup (a debug build on a busy machine is slow).
const STARTUP_WAIT_MAX: Duration = Duration::from_secs(60);
const LISTENING_PREFIX: &str = "sessiondb listening on ";
const STDERR_TAIL_BYTES: usize = 8_000;

/// The `sessiondb` executable, built once per test process.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "sessiondb-node",
                "--bin",
                "sessiondb",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the node");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let messages: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        assert!(
            output.status.success(),
            "cargo build -p sessiondb-node failed:\n{}",
            messages
                .iter()
                .filter_map(|message| message["message"]["rendered"].as_str())
                .collect::<String>()
        );
        messages
            .iter()
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "sessiondb"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the sessiondb executable")
    })
}

pub use sessiondb_test_support::TempDir;

/// The admin token test nodes run with; clients send it (`with_token`).
pub const TEST_ADMIN_TOKEN: &str = "client-test-admin-token-0123456789";

/// A running `sessiondb serve` with a manual clock, killed on drop.
#[derive(Debug)]
pub struct TestNode {
    child: Child,
    base_url: String,
    stderr_path: PathBuf,
    /// The node's data directory and stderr, removed on drop (declared
    /// last: after the process was told to die).
    _dir: TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_with_args(&[]).await
    }

    /// Starts a node with extra `serve` flags (e.g. TLS files), on the
    /// manual clock at [`START_MS`].
    pub async fn start_with_args(extra_args: &[String]) -> TestNode {
        let mut args = vec!["--manual-clock".to_string(), START_MS.to_string()];
        args.extend_from_slice(extra_args);
        TestNode::spawn(&args).await
    }

    /// Starts a node on the system clock, for code that sends events
    /// happening now (the examples).
    pub async fn start_with_system_clock() -> TestNode {
        TestNode::spawn(&[]).await
    }

    async fn spawn(args: &[String]) -> TestNode {
        let dir = TempDir::new("node");
        let stderr_path = dir.path().join("node.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let mut child = Command::new(node_binary())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .arg("--admin-token")
            .arg(TEST_ADMIN_TOKEN)
            .env_remove("SESSIONDB_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the sessiondb binary");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let base_url = tokio::time::timeout(STARTUP_WAIT_MAX, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split(LISTENING_PREFIX).nth(1) {
                    return Some(rest.trim().trim_end_matches('/').to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "the node printed no `{LISTENING_PREFIX}` line; stderr:\n{}",
                stderr_tail(&stderr_path)
            )
        });
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        TestNode {
            child,
            base_url,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A client for this node carrying the admin token.
    pub fn client(&self) -> sessiondb_client::Client {
        sessiondb_client::Client::new(self.base_url()).with_token(TEST_ADMIN_TOKEN)
    }

    /// What the node wrote on stderr (its log) so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// "host:port" of the node.
    pub fn address(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "--- node {} stderr (tail) ---\n{}",
                self.base_url,
                stderr_tail(&self.stderr_path)
            );
        }
    }
}

fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// What the proxy does with a connection.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    /// The first `n` connections: forward one whole request, read the
    /// node's whole answer, then close the client's connection without
    /// answering (the node applied the batch; the client never hears it).
    /// Later connections are forwarded as they are.
    LoseFirstAnswers(usize),
    /// Hold every connection until the gate opens, then forward it.
    Gated(watch::Receiver<bool>),
}

/// A loopback TCP proxy in front of a node.
#[derive(Debug)]
pub struct Proxy {
    pub base_url: String,
    /// Answers lost so far.
    pub answers_lost: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: &str, mode: ProxyMode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let answers_lost = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let lost = Arc::clone(&answers_lost);
        tokio::spawn(async move {
            let mut connections = 0usize;
            while let Ok((client, _)) = listener.accept().await {
                connections += 1;
                let upstream = upstream.clone();
                let mode = mode.clone();
                let lost = Arc::clone(&lost);
                tokio::spawn(async move {
                    match mode {
                        ProxyMode::LoseFirstAnswers(n) if connections <= n => {
                            lose_answer(client, &upstream).await;
                            lost.fetch_add(1, Ordering::SeqCst);
                        }
                        ProxyMode::LoseFirstAnswers(_) => forward(client, &upstream).await,
                        ProxyMode::Gated(mut gate) => {
                            let _ = gate.wait_for(|open| *open).await;
                            forward(client, &upstream).await;
                        }
                    }
                });
            }
        });
        Proxy {
            base_url,
            answers_lost,
        }
    }
}

async fn forward(mut client: TcpStream, upstream: &str) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn lose_answer(mut client: TcpStream, upstream: &str) {
    let request = read_http_message(&mut client).await;
    let mut server = TcpStream::connect(upstream)
        .await
        .expect("connect the node");
    server
        .write_all(&request)
        .await
        .expect("forward the request");
    // Wait for the whole answer: the node has applied the batch.
    let _answer = read_http_message(&mut server).await;
    drop(client);
}

/// Reads one HTTP/1.1 message with a `content-length` body.
async fn read_http_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut message = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&message[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("a content length"));
            if message.len() >= end + 4 + length {
                return message;
            }
        }
        let read = stream.read(&mut chunk).await.expect("read from a socket");
        assert!(read > 0, "the connection closed in the middle of a message");
        message.extend_from_slice(&chunk[..read]);
    }
}

/// A decision event exposing `visitor` to `experiment`/`variation`.
pub fn decision(
    id: &str,
    project: &str,
    visitor: &str,
    ts: i64,
    experiment: &str,
    variation: &str,
) -> Event {
    Event {
        id: id.into(),
        project: project.into(),
        visitor: visitor.into(),
        ts: Timestamp::Milliseconds(ts),
        event_type: EventType::Decision,
        key: None,
        value: None,
        attributes: [("browser".to_string(), "firefox".to_string())].into(),
        decisions: vec![Decision {
            experiment: experiment.into(),
            variation: variation.into(),
        }],
    }
}

/// A custom (conversion) event.
pub fn custom(id: &str, project: &str, visitor: &str, ts: i64, key: &str) -> Event {
    Event {
        id: id.into(),
        project: project.into(),
        visitor: visitor.into(),
        ts: Timestamp::Milliseconds(ts),
        event_type: EventType::Custom,
        key: Some(key.into()),
        value: Some(10.0),
        attributes: Default::default(),
        decisions: Vec::new(),
    }
}

/// A workload of `visitors` visitors on experiment `checkout`: visitor n
/// sees variation `a` (n even) or `b` (n odd), and every third visitor
/// purchases once. Two events per decision visitor plus the purchases.
#[derive(Debug, Clone)]
pub struct Workload {
    pub events: Vec<Event>,
    pub visitors_a: i64,
    pub visitors_b: i64,
    pub purchases_a: i64,
    pub purchases_b: i64,
}

impl Workload {
    pub fn new(project: &str, visitors: usize) -> Workload {
        let mut workload = Workload {
            events: Vec::new(),
            visitors_a: 0,
            visitors_b: 0,
            purchases_a: 0,
            purchases_b: 0,
        };
        for n in 0..visitors {
            let visitor = format!("v-{n}");
            let variation = if n % 2 == 0 { "a" } else { "b" };
            let ts = START_MS - 60_000 + n as i64;
            workload.events.push(decision(
                &format!("d-{n}"),
                project,
                &visitor,
                ts,
                "checkout",
                variation,
            ));
            let purchases = n % 3 == 0;
            if purchases {
                workload.events.push(custom(
                    &format!("p-{n}"),
                    project,
                    &visitor,
                    ts + 1_000,
                    "purchase",
                ));
            }
            match (variation, purchases) {
                ("a", p) => {
                    workload.visitors_a += 1;
                    workload.purchases_a += i64::from(p);
                }
                (_, p) => {
                    workload.visitors_b += 1;
                    workload.purchases_b += i64::from(p);
                }
            }
        }
        workload
    }
}
