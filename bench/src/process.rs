//! Child processes (the node, redis-server) and what /proc says about them.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The admin token the node is started with (`/v1/admin/*` needs it).
pub const ADMIN_TOKEN: &str = "sessiondb-bench-admin-token";
/// How long a child may take to start listening.
pub const START_WAIT_MS_MAX: u64 = 60_000;

/// A child process killed (SIGKILL) and reaped when dropped, also when the
/// harness fails or panics.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bound then released; a race is possible but the
/// child's start fails loudly then).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running `sessiondb serve`.
#[derive(Debug)]
pub struct Node {
    pub guard: ChildGuard,
    pub base_url: String,
    /// From spawn to the `listening` line.
    pub listening_ms: f64,
}

/// Starts the node and waits for its `sessiondb listening on <url>` line.
pub fn start_node(binary: &Path, data_dir: &Path, manual_clock_ms: i64) -> Result<Node> {
    start_node_with_args(binary, data_dir, manual_clock_ms, &[])
}

/// [`start_node`] with more `serve` flags (cluster membership).
pub fn start_node_with_args(
    binary: &Path,
    data_dir: &Path,
    manual_clock_ms: i64,
    extra_args: &[String],
) -> Result<Node> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--manual-clock", &manual_clock_ms.to_string()])
        .args(extra_args)
        .env("SESSIONDB_LOG", "warn")
        .env("SESSIONDB_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let guard = ChildGuard::new(child);
    let (sender, receiver) = mpsc::channel();
    // Keeps reading so the node never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(url) = line.strip_prefix("sessiondb listening on ") {
                let _ = sender.send(url.trim().to_string());
            }
        }
    });
    let base_url = receiver
        .recv_timeout(Duration::from_millis(START_WAIT_MS_MAX))
        .context("the node did not print its listening line")?;
    Ok(Node {
        guard,
        base_url,
        listening_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Starts `redis-server` on a free loopback port without persistence.
pub fn start_redis(binary: &str) -> Result<(ChildGuard, u16)> {
    let port = free_port()?;
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {binary}"))?;
    let guard = ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS_MAX);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, port))
}

/// Clock ticks per second of /proc's CPU times.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process (`self` or a pid).
pub fn cpu_seconds(pid: &str, ticks_per_second: f64) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')').context("stat has a command name")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    Ok((utime + stime) / ticks_per_second)
}

/// Resident set size of a process in bytes.
pub fn rss_bytes(pid: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("VmRSS in status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}

pub use tempfile::TempDir;

/// A scratch directory (`<label>-…` under the system temp dir), removed
/// when dropped.
pub fn temp_dir(label: &str) -> Result<TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir()?)
}
