//! `TestNode`: the real `sessiondb` binary on a loopback port, with a manual
//! clock, driven over HTTP.

use reqwest::StatusCode;
use sessiondb_protocol::{Event, EventBatch, IngestResponse, Project, ResultsResponse};
use sessiondb_test_support::eventually;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a node may take to print its listening line (a debug build on a
/// busy machine can be slow to start; this is a bound, not a delay).
const STARTUP_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long a project created on one member may take to reach another.
const PROJECT_WAIT_MAX: Duration = Duration::from_secs(90);
/// Bound on any single HTTP exchange with the node.
const REQUEST_WAIT_MAX: Duration = Duration::from_secs(300);
/// What the node prints once it accepts connections.
const LISTENING_PREFIX: &str = "sessiondb listening on ";
/// How much of the node's stderr to show when a test fails.
const STDERR_TAIL_BYTES: usize = 8_000;
/// The admin token test nodes are started with (`--admin-token`), sent as
/// `Authorization: Bearer` by the admin helpers (`set_clock`, `post_admin`).
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The file a node keeps its admin token's hashes in.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin-token";
/// What a node without `--admin-token` prints, once, before its token.
const GENERATED_TOKEN_PREFIX: &str =
    "sessiondb generated admin token (shown once, only its hash is stored): ";

pub use sessiondb_test_support::TempDir;

/// Options for starting a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The manual clock's initial value.
    pub start_ms: i64,
    pub shards: Option<u32>,
}

/// A running `sessiondb serve`, killed on drop.
#[derive(Debug)]
pub struct TestNode {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    stderr_path: PathBuf,
    /// How it was started, to restart it the same way.
    options: NodeOptions,
    extra_args: Vec<String>,
    /// The token that opens `/v1/admin/*` and the console's data calls.
    admin_token: String,
    /// Whether the node gets `--admin-token` (else it uses its token file).
    admin_token_flag: bool,
    /// Processes started on this data directory so far.
    starts: u32,
    /// Whether the node runs on the manual clock (`--manual-clock`); see
    /// `start_with_system_clock`.
    manual_clock: bool,
    /// A program (and its arguments) that runs the node binary, e.g.
    /// strace; empty to run it directly. Kept for restarts.
    wrapper: Vec<String>,
    // Declared last so it is removed after the child was told to die.
    data_dir: TempDir,
}

/// Why a node did not come up: it exited before printing its listening line.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<std::process::ExitStatus>,
    /// Everything the process wrote to stderr.
    pub stderr: String,
}

/// A raw HTTP answer: status and body (parsed as JSON when it is JSON).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl RawResponse {
    /// The `error` code of an error body.
    pub fn error_code(&self) -> Option<&str> {
        self.body.get("error").and_then(|e| e.as_str())
    }
}

impl TestNode {
    pub async fn start(start_ms: i64) -> TestNode {
        TestNode::start_with(NodeOptions {
            start_ms,
            shards: None,
        })
        .await
    }

    pub async fn start_with(options: NodeOptions) -> TestNode {
        TestNode::start_with_args(options, Vec::new()).await
    }

    /// Starts a node with extra `serve` flags (e.g. test-only fault hooks).
    pub async fn start_with_args(options: NodeOptions, extra_args: Vec<String>) -> TestNode {
        TestNode::start_full(options, extra_args, true).await
    }

    /// Like `start_with_args`, but a node that exits before listening (it
    /// refused to start) is an answer, not a panic.
    pub async fn try_start_with_args(
        options: NodeOptions,
        extra_args: Vec<String>,
    ) -> Result<TestNode, StartFailure> {
        TestNode::try_start_launched(options, extra_args, true, true, Vec::new(), |_| {}).await
    }

    /// Starts a node without `--admin-token`, so it generates its token;
    /// the admin helpers then use the token it printed on stdout.
    pub async fn start_with_generated_admin_token(options: NodeOptions) -> TestNode {
        TestNode::start_full(options, Vec::new(), false).await
    }

    /// Starts a node on the system clock (no `--manual-clock`, so
    /// `set_clock` answers `404 clock_not_manual`; `options.start_ms` is
    /// unused), with extra `serve` flags such as `--demo`.
    pub async fn start_with_system_clock(
        options: NodeOptions,
        extra_args: Vec<String>,
    ) -> TestNode {
        TestNode::start_full_with_clock(options, extra_args, true, false).await
    }

    async fn start_full(
        options: NodeOptions,
        extra_args: Vec<String>,
        admin_token_flag: bool,
    ) -> TestNode {
        TestNode::start_full_with_clock(options, extra_args, admin_token_flag, true).await
    }

    async fn start_full_with_clock(
        options: NodeOptions,
        extra_args: Vec<String>,
        admin_token_flag: bool,
        manual_clock: bool,
    ) -> TestNode {
        TestNode::start_launched(
            options,
            extra_args,
            admin_token_flag,
            manual_clock,
            Vec::new(),
            |_| {},
        )
        .await
    }

    /// Starts a node whose data directory `prepare` is given first (created,
    /// empty; e.g. to mount a file system there), run through `wrapper`
    /// (a program and its arguments before the node's command line, e.g.
    /// strace; empty for none). Restarts use the same wrapper.
    pub async fn start_prepared(
        options: NodeOptions,
        extra_args: Vec<String>,
        wrapper: Vec<String>,
        prepare: impl FnOnce(&Path),
    ) -> TestNode {
        TestNode::start_launched(options, extra_args, true, true, wrapper, prepare).await
    }

    async fn start_launched(
        options: NodeOptions,
        extra_args: Vec<String>,
        admin_token_flag: bool,
        manual_clock: bool,
        wrapper: Vec<String>,
        prepare: impl FnOnce(&Path),
    ) -> TestNode {
        TestNode::try_start_launched(
            options,
            extra_args,
            admin_token_flag,
            manual_clock,
            wrapper,
            prepare,
        )
        .await
        .unwrap_or_else(|failure| {
            panic!(
                "node exited before listening ({:?}); stderr:\n{}",
                failure.status, failure.stderr
            )
        })
    }

    async fn try_start_launched(
        options: NodeOptions,
        extra_args: Vec<String>,
        admin_token_flag: bool,
        manual_clock: bool,
        wrapper: Vec<String>,
        prepare: impl FnOnce(&Path),
    ) -> Result<TestNode, StartFailure> {
        let data_dir = TempDir::new("node");
        let stderr_path = data_dir.path().join("node.stderr");
        let node_data = data_dir.path().join("data");
        std::fs::create_dir_all(&node_data)
            .unwrap_or_else(|e| panic!("create {}: {e}", node_data.display()));
        prepare(&node_data);
        let flag_token = admin_token_flag.then_some(TEST_ADMIN_TOKEN);
        let (child, base_url, generated) = spawn_node(
            &node_data,
            &stderr_path,
            &options,
            &extra_args,
            flag_token,
            manual_clock,
            &wrapper,
        )
        .await?;
        let http = http_client_for(&extra_args);
        let admin_token = match (flag_token, generated) {
            (Some(token), _) => token.to_string(),
            (None, Some(token)) => token,
            (None, None) => panic!("a node without --admin-token printed no generated token"),
        };
        Ok(TestNode {
            child,
            base_url,
            http,
            stderr_path,
            options,
            extra_args,
            admin_token,
            admin_token_flag,
            starts: 1,
            manual_clock,
            wrapper,
            data_dir,
        })
    }

    /// The token that opens `/v1/admin/*` and `/console/api/*`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Makes the helpers send `token` as the admin token from now on (after
    /// a rotation).
    pub fn set_admin_token(&mut self, token: &str) {
        self.admin_token = token.to_string();
    }

    fn admin_authorization(&self) -> String {
        format!("Bearer {}", self.admin_token)
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits
    /// for it to be gone. The data directory stays.
    pub async fn kill_9(&mut self) {
        self.child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("SIGKILL the node {}: {e}", self.base_url));
    }

    /// Waits (at most `within`) for the process to exit on its own; its
    /// exit status, or `None` if it is still running.
    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Some(status.expect("wait for the node process")),
            Err(_) => None,
        }
    }

    /// The node's `host:port` (its base URL without the scheme).
    pub fn address(&self) -> &str {
        self.base_url
            .strip_prefix("http://")
            .unwrap_or(&self.base_url)
    }

    /// GETs `path` with extra headers (authorization).
    pub async fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut request = self.http.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}; node stderr:\n{}", self.stderr_tail()));
        TestNode::into_raw(response).await
    }

    /// GETs an admin-guarded endpoint with the node's admin token.
    pub async fn get_admin(&self, path: &str) -> RawResponse {
        self.get_raw(path).await
    }

    /// Starts the node again on the same data directory with the same
    /// options and flags (the manual clock starts at `options.start_ms`
    /// again). Kill it first; a still running process is killed here.
    pub async fn restart(&mut self) {
        let extra_args = self.extra_args.clone();
        self.restart_with_args(extra_args).await;
    }

    /// Like `restart`, with other extra `serve` flags.
    pub async fn restart_with_args(&mut self, extra_args: Vec<String>) {
        if let Err(failure) = self.try_restart_with_args(extra_args).await {
            panic!(
                "node did not restart ({:?}); stderr:\n{}",
                failure.status, failure.stderr
            );
        }
    }

    /// Like `restart_with_args`, but a node that exits before listening is
    /// an answer, not a panic.
    pub async fn try_restart_with_args(
        &mut self,
        extra_args: Vec<String>,
    ) -> Result<(), StartFailure> {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_9().await;
        }
        self.starts += 1;
        self.stderr_path = self
            .data_dir
            .path()
            .join(format!("node-{}.stderr", self.starts));
        let node_data = self.node_data_dir();
        let flag_token = self.admin_token_flag.then_some(TEST_ADMIN_TOKEN);
        let (child, base_url, _) = spawn_node(
            &node_data,
            &self.stderr_path,
            &self.options,
            &extra_args,
            flag_token,
            self.manual_clock,
            &self.wrapper,
        )
        .await?;
        self.child = child;
        self.base_url = base_url;
        self.extra_args = extra_args;
        Ok(())
    }

    /// The process id of what was started (the wrapper's, when there is
    /// one), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The directory given to `--data-dir`.
    pub fn node_data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// Everything the current process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The last part of the node's stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        stderr_tail(&self.stderr_path)
    }

    async fn into_raw(response: reqwest::Response) -> RawResponse {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the response body");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        RawResponse {
            status,
            headers,
            body,
            text,
        }
    }

    /// Sends `body` as is, with a JSON content type and the admin token
    /// (the tests' operator may do everything; `post_anonymous` sends no
    /// credential).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        let authorization = self.admin_authorization();
        self.post_with_headers(path, &[("authorization", authorization.as_str())], body)
            .await
    }

    /// Sends `body` as is, with a JSON content type and no credential.
    pub async fn post_anonymous(&self, path: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        let response = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}; node stderr:\n{}", self.stderr_tail()));
        TestNode::into_raw(response).await
    }

    /// Sends `body` as is, with a JSON content type and extra headers
    /// (authorization, ingest keys).
    pub async fn post_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> RawResponse {
        let mut request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response =
            request.body(body).send().await.unwrap_or_else(|e| {
                panic!("POST {path}: {e}; node stderr:\n{}", self.stderr_tail())
            });
        TestNode::into_raw(response).await
    }

    /// Sends a request with exactly `headers` (no default content type or
    /// credential): preflights, binary bodies, compressed bodies.
    pub async fn send_with_exact_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<reqwest::Body>,
    ) -> RawResponse {
        let mut request = self.http.request(method.clone(), self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!("{method} {path}: {e}; node stderr:\n{}", self.stderr_tail())
        });
        TestNode::into_raw(response).await
    }

    /// POSTs `body` to an admin endpoint with the node's admin token.
    pub async fn post_admin(&self, path: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        self.post_raw(path, body).await
    }

    /// GETs with the admin token (`get_anonymous` sends no credential).
    pub async fn get_raw(&self, path_and_query: &str) -> RawResponse {
        let authorization = self.admin_authorization();
        self.get_with_headers(path_and_query, &[("authorization", authorization.as_str())])
            .await
    }

    /// GETs with no credential.
    pub async fn get_anonymous(&self, path_and_query: &str) -> RawResponse {
        let response = self
            .http
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "GET {path_and_query}: {e}; node stderr:\n{}",
                    self.stderr_tail()
                )
            });
        TestNode::into_raw(response).await
    }

    /// Sends `body` as is with PATCH, a JSON content type and the admin
    /// token.
    pub async fn patch_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        let response = self
            .http
            .patch(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::AUTHORIZATION, self.admin_authorization())
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PATCH {path}: {e}; node stderr:\n{}", self.stderr_tail()));
        TestNode::into_raw(response).await
    }

    /// Sends `body` with `method`, a JSON content type and the admin token.
    pub async fn send_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> RawResponse {
        let response = self
            .http
            .request(method.clone(), self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::AUTHORIZATION, self.admin_authorization())
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("{method} {path}: {e}; node stderr:\n{}", self.stderr_tail())
            });
        TestNode::into_raw(response).await
    }

    fn expect_status(&self, what: &str, raw: &RawResponse, status: StatusCode) {
        assert_eq!(
            raw.status,
            status,
            "{what}: unexpected status, body: {}; node stderr:\n{}",
            raw.text,
            self.stderr_tail()
        );
    }

    /// Creates a project; `settings` is a JSON object of settings to set.
    pub async fn create_project(&self, name: &str, settings: serde_json::Value) -> Project {
        let body = serde_json::json!({"name": name, "settings": settings});
        let raw = self.post_raw("/v1/projects", body.to_string()).await;
        self.expect_status(&format!("create project {name}"), &raw, StatusCode::CREATED);
        serde_json::from_value(raw.body).expect("a Project body")
    }

    /// The project `name` once this node knows it (placement replicates a
    /// project to every member a moment after it is created).
    pub async fn project_eventually(&self, name: &str) -> Project {
        let what = format!("project {name} known to {}", self.base_url);
        eventually(PROJECT_WAIT_MAX, &what, async || {
            let raw = self.get_raw(&format!("/v1/projects/{name}")).await;
            if raw.status == StatusCode::OK {
                Ok(serde_json::from_value(raw.body).expect("a Project body"))
            } else {
                Err(raw.text)
            }
        })
        .await
    }

    pub async fn project(&self, name: &str) -> Project {
        let raw = self.get_raw(&format!("/v1/projects/{name}")).await;
        self.expect_status(&format!("get project {name}"), &raw, StatusCode::OK);
        serde_json::from_value(raw.body).expect("a Project body")
    }

    /// Sets the node's manual clock.
    pub async fn set_clock(&self, now_ms: i64) {
        let body = serde_json::json!({ "now_ms": now_ms });
        let raw = self.post_admin("/v1/admin/clock", body.to_string()).await;
        assert!(
            raw.status.is_success(),
            "set clock to {now_ms}: {} {}",
            raw.status,
            raw.text
        );
    }

    /// Sends one batch; the node must answer 200 with an `IngestResponse`.
    pub async fn send_batch(&self, events: &[Event]) -> IngestResponse {
        let batch = EventBatch {
            events: events.to_vec(),
        };
        let body = serde_json::to_vec(&batch).expect("a batch serializes");
        let raw = self.post_raw("/v1/events", body).await;
        self.expect_status("ingest", &raw, StatusCode::OK);
        serde_json::from_value(raw.body).expect("an IngestResponse body")
    }

    /// The results path with its query string.
    pub fn results_path(
        project: &str,
        experiment: &str,
        from: i64,
        to: i64,
        breakdown: Option<&str>,
        keys: &[&str],
    ) -> String {
        let mut path =
            format!("/v1/projects/{project}/experiments/{experiment}/results?from={from}&to={to}");
        if let Some(attribute) = breakdown {
            path.push_str(&format!("&breakdown={attribute}"));
        }
        if !keys.is_empty() {
            path.push_str(&format!("&keys={}", keys.join(",")));
        }
        path
    }

    /// Results of an experiment; the node must answer 200.
    pub async fn results(
        &self,
        project: &str,
        experiment: &str,
        from: i64,
        to: i64,
        breakdown: Option<&str>,
        keys: &[&str],
    ) -> ResultsResponse {
        let path = TestNode::results_path(project, experiment, from, to, breakdown, keys);
        let raw = self.get_raw(&path).await;
        self.expect_status(&format!("GET {path}"), &raw, StatusCode::OK);
        serde_json::from_value(raw.body)
            .unwrap_or_else(|e| panic!("GET {path}: not a ResultsResponse ({e}): {}", raw.text))
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
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

/// Spawns `sessiondb serve` on `node_data` (with `--manual-clock
/// <options.start_ms>` when `manual_clock`) and waits for its listening
/// line; returns the process, its base URL and the admin token it
/// generated, if it did.
async fn spawn_node(
    node_data: &Path,
    stderr_path: &Path,
    options: &NodeOptions,
    extra_args: &[String],
    admin_token: Option<&str>,
    manual_clock: bool,
    wrapper: &[String],
) -> Result<(Child, String, Option<String>), StartFailure> {
    let stderr = std::fs::File::create(stderr_path).expect("create the stderr file");
    let binary = env!("CARGO_BIN_EXE_sessiondb");
    let mut command = match wrapper.split_first() {
        None => Command::new(binary),
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(binary);
            command
        }
    };
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(node_data);
    if manual_clock {
        command
            .arg("--manual-clock")
            .arg(options.start_ms.to_string());
    }
    if let Some(shards) = options.shards {
        command.arg("--shards").arg(shards.to_string());
    }
    // Only the flag decides the token: a variable from the caller's shell
    // must not change what the tests expect.
    command.env_remove("SESSIONDB_ADMIN_TOKEN");
    if let Some(token) = admin_token {
        command.arg("--admin-token").arg(token);
    }
    command
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn the sessiondb binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();

    let listening = tokio::time::timeout(STARTUP_WAIT_MAX, async {
        let mut generated = None;
        while let Some(line) = lines.next_line().await.expect("read the node's stdout") {
            if let Some(token) = line.strip_prefix(GENERATED_TOKEN_PREFIX) {
                generated = Some(token.trim().to_string());
            }
            if let Some(rest) = line.split(LISTENING_PREFIX).nth(1) {
                return Some((rest.trim().trim_end_matches('/').to_string(), generated));
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "node printed no `{LISTENING_PREFIX}` line within {STARTUP_WAIT_MAX:?}; stderr:\n{}",
            stderr_tail(stderr_path)
        )
    });
    let Some((base_url, generated)) = listening else {
        // Its stdout closed before the line: the process exited.
        let status = child.wait().await.ok();
        let stderr = std::fs::read(stderr_path).unwrap_or_default();
        return Err(StartFailure {
            status,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, base_url, generated))
}

/// The test's HTTP client for a node started with `extra_args`: one that
/// trusts the node's CA when it runs with TLS (`--tls-ca <file>`).
pub fn http_client_for(extra_args: &[String]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(REQUEST_WAIT_MAX);
    if let Some(position) = extra_args.iter().position(|arg| arg == "--tls-ca") {
        let path = &extra_args[position + 1];
        let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read the CA file {path}: {e}"));
        let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM CA certificate");
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
    }
    builder.build().expect("build an HTTP client")
}

fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&text[start..]).into_owned()
}
