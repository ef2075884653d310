//! `Browser`: headless Chromium driven over the Chrome DevTools Protocol
//! (CDP) on one websocket, for the console's browser tests.
//!
//! Chromium is started with `--remote-debugging-port=0`; it prints
//! `DevTools listening on ws://…` on stderr, and every command goes over
//! that browser-level socket. Pages are attached in "flat" mode, so a
//! command for a page carries the page's `sessionId`. Each `Page` lives in
//! its own browser context, so its storage (the console keeps its token in
//! `sessionStorage`) is not shared with other pages.
//!
//! Waiting is always a bounded poll of a condition evaluated in the page
//! (`Page::wait_for`), never a fixed sleep.

use super::node::TempDir;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sessiondb_test_support::poll_until;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound on Chromium printing its DevTools address.
const LAUNCH_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on one CDP command's answer.
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on a page condition becoming true. The console polls every 1–2 s;
/// a debug node on a busy machine can be slow, so this is generous.
pub const CONDITION_WAIT_MAX: Duration = Duration::from_secs(60);
/// The viewport screenshots are taken at.
const VIEWPORT_WIDTH: u32 = 1280;
const VIEWPORT_HEIGHT: u32 = 900;
/// Widths up to this are laid out as a phone's (`set_width`).
const MOBILE_WIDTH_MAX: u32 = 600;
/// Tallest full-page screenshot.
const SCREENSHOT_HEIGHT_MAX: f64 = 2_400.0;
/// What Chromium prints once its DevTools endpoint listens.
const DEVTOOLS_PREFIX: &str = "DevTools listening on ";
/// Executables tried in order when `SESSIONDB_CHROMIUM` is not set.
const CHROMIUM_NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The CDP connection: one websocket, commands answered in order of ids.
#[derive(Debug)]
struct Connection {
    socket: Socket,
    next_id: u64,
}

impl Connection {
    /// Sends one command and waits for its answer, skipping the events
    /// (messages without an `id`) that arrive in between.
    async fn call(
        &mut self,
        session_id: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session_id) = session_id {
            message["sessionId"] = json!(session_id);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|e| format!("send {method}: {e}"))?;
        let answer = tokio::time::timeout(COMMAND_WAIT_MAX, async {
            loop {
                let frame = self
                    .socket
                    .next()
                    .await
                    .ok_or_else(|| format!("{method}: the browser closed the connection"))?
                    .map_err(|e| format!("{method}: {e}"))?;
                let Message::Text(text) = frame else { continue };
                let answer: Value =
                    serde_json::from_str(&text).map_err(|e| format!("{method}: bad JSON {e}"))?;
                if answer.get("id").and_then(Value::as_u64) == Some(id) {
                    return Ok::<Value, String>(answer);
                }
            }
        })
        .await
        .map_err(|_| format!("{method}: no answer within {COMMAND_WAIT_MAX:?}"))??;
        if let Some(error) = answer.get("error") {
            return Err(format!("{method}: {error}"));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// A headless Chromium process, killed on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    connection: Arc<Mutex<Connection>>,
    screenshot_dir: PathBuf,
    // Declared last: removed after the process is gone.
    _profile: TempDir,
}

/// One tab in its own browser context.
#[derive(Debug, Clone)]
pub struct Page {
    connection: Arc<Mutex<Connection>>,
    session_id: String,
    screenshot_dir: PathBuf,
}

/// Where screenshots go: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("console-screenshots")
}

/// The Chromium executable: `SESSIONDB_CHROMIUM`, else the first of
/// `CHROMIUM_NAMES` on `PATH`. Panics with instructions when there is none:
/// the console tests must fail, not skip, without a browser.
fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SESSIONDB_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path_variable = std::env::var_os("PATH").unwrap_or_default();
    for name in CHROMIUM_NAMES {
        for directory in std::env::split_paths(&path_variable) {
            let candidate = directory.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the console's browser tests need headless Chromium, and none was found \
         (looked for {CHROMIUM_NAMES:?} on PATH, and SESSIONDB_CHROMIUM is not set). \
         Install Debian's package: `apt-get update && apt-get install -y chromium` \
         (scripts/test does this), or set SESSIONDB_CHROMIUM to a Chromium executable."
    )
}

impl Browser {
    /// Starts headless Chromium and connects to its DevTools endpoint.
    pub async fn launch() -> Browser {
        let executable = find_chromium();
        let profile = TempDir::new("chromium");
        let mut command = Command::new(&executable);
        command
            .arg("--headless=new")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg("--no-first-run")
            .arg("--no-default-browser-check")
            .arg("--disable-extensions")
            .arg("--disable-background-networking")
            .arg("--disable-component-update")
            .arg("--disable-sync")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={VIEWPORT_WIDTH},{VIEWPORT_HEIGHT}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} for the console tests: {e}; install Chromium \
                 (`apt-get install -y chromium`) or set SESSIONDB_CHROMIUM",
                executable.display()
            )
        });
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let launched = tokio::time::timeout(LAUNCH_WAIT_MAX, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split(DEVTOOLS_PREFIX).nth(1) {
                    return Some(rest.trim().to_string());
                }
                seen.push(line);
            }
            None
        })
        .await;
        let address = match launched {
            Ok(Some(address)) => address,
            Ok(None) => panic!(
                "{} exited before printing its DevTools address; stderr:\n{}",
                executable.display(),
                seen.join("\n")
            ),
            Err(_) => panic!(
                "{} printed no DevTools address within {LAUNCH_WAIT_MAX:?}; stderr:\n{}",
                executable.display(),
                seen.join("\n")
            ),
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(address.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to Chromium's DevTools at {address}: {e}"));
        let screenshot_dir = screenshot_dir();
        std::fs::create_dir_all(&screenshot_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", screenshot_dir.display()));
        Browser {
            child,
            connection: Arc::new(Mutex::new(Connection { socket, next_id: 0 })),
            screenshot_dir,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.connection
            .lock()
            .await
            .call(None, method, params)
            .await
            .unwrap_or_else(|e| panic!("CDP {e}"))
    }

    /// A new tab in a fresh browser context (no storage shared with other
    /// pages), sized to the screenshot viewport.
    pub async fn new_page(&self) -> Page {
        let context = self.call("Target.createBrowserContext", json!({})).await;
        let context_id = context["browserContextId"].clone();
        let target = self
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context_id}),
            )
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session_id = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("attachToTarget gave no sessionId: {attached}"))
            .to_string();
        let page = Page {
            connection: Arc::clone(&self.connection),
            session_id,
            screenshot_dir: self.screenshot_dir.clone(),
        };
        page.call("Page.enable", json!({})).await;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT,
                   "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Only the browser process, by its handle: its helper processes
        // (zygote, renderers) exit when it is gone. Never signal a process
        // group through `kill` here — procps-ng's `kill -KILL -<pgid>`
        // misreads the group id and can signal every process (-1).
        let _ = self.child.start_kill();
    }
}

/// Whether a JSON value counts as true in a `wait_for` condition.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("CDP {e}"))
    }

    async fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.connection
            .lock()
            .await
            .call(Some(&self.session_id), method, params)
            .await
    }

    /// Lays the page out `width` CSS pixels wide (a phone: 400; a laptop:
    /// 1400), as a mobile viewport below `MOBILE_WIDTH_MAX`.
    pub async fn set_width(&self, width: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": VIEWPORT_HEIGHT,
                   "deviceScaleFactor": 1, "mobile": width <= MOBILE_WIDTH_MAX}),
        )
        .await;
    }

    /// Navigates and waits for the document to finish loading.
    pub async fn navigate(&self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer.get("errorText") {
            panic!("navigate to {url}: {error}");
        }
        self.wait_for(
            &format!("{url} loaded"),
            &format!(
                "document.readyState === 'complete' && location.href === {}",
                json!(url)
            ),
        )
        .await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON; a thrown exception is an `Err` with its text.
    pub async fn try_evaluate(&self, expression: &str) -> Result<Value, String> {
        let answer = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(format!("`{expression}` threw: {details}"));
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Like `try_evaluate`; an exception fails the test.
    pub async fn evaluate(&self, expression: &str) -> Value {
        self.try_evaluate(expression)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls `condition` (a JS expression) until it is truthy, at most
    /// `CONDITION_WAIT_MAX`; returns its value. On timeout the test fails
    /// with the last value, the page's text and a screenshot.
    pub async fn wait_for(&self, what: &str, condition: &str) -> Value {
        let waited = poll_until(CONDITION_WAIT_MAX, async || {
            match self.try_evaluate(condition).await {
                Ok(value) if truthy(&value) => Ok(value),
                other => Err(other),
            }
        })
        .await;
        let last = match waited {
            Ok(value) => return value,
            Err(timed_out) => timed_out.last,
        };
        let text = self
            .try_evaluate("document.body ? document.body.innerText.slice(0, 3000) : ''")
            .await
            .unwrap_or_default();
        let name = format!(
            "failed-{}",
            what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        let shot = self.screenshot(&name).await;
        panic!(
            "waited {CONDITION_WAIT_MAX:?} for {what} (`{condition}`); last value: {last:?}; \
             screenshot {}; page text:\n{text}",
            shot.display()
        );
    }

    /// Saves a PNG of the viewport as `<screenshot_dir>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.capture(name, json!({"format": "png"})).await
    }

    /// Saves a PNG of the whole page (up to `SCREENSHOT_HEIGHT_MAX` tall).
    pub async fn screenshot_full(&self, name: &str) -> PathBuf {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let width = size["width"].as_f64().unwrap_or(f64::from(VIEWPORT_WIDTH));
        let height = size["height"]
            .as_f64()
            .unwrap_or(f64::from(VIEWPORT_HEIGHT))
            .min(SCREENSHOT_HEIGHT_MAX);
        self.capture(
            name,
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
        )
        .await
    }

    async fn capture(&self, name: &str, params: Value) -> PathBuf {
        let answer = self.call("Page.captureScreenshot", params).await;
        let data = answer["data"]
            .as_str()
            .unwrap_or_else(|| panic!("captureScreenshot gave no data: {answer}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot data is base64");
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let path = self.screenshot_dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}
