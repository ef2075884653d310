//! DuckDB and chDB through `bench/peers.py` on the workload's CSV.

use crate::exact::ExactResults;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One SQL peer's answer, or why it could not run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Peer {
    Ran(SqlPeer),
    Failed { error: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqlPeer {
    pub version: String,
    /// CSV → table, deduplicated.
    pub load_s: f64,
    /// Every exact query (visitors, breakdown, conflicts, conversions,
    /// sessions).
    pub exact_s: f64,
    pub approx_s: f64,
    pub exact: ExactResults,
    /// Function name → per variation estimate.
    pub approx: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    pub duckdb: Peer,
    pub chdb: Peer,
}

pub fn run(
    python: &str,
    script: &Path,
    csv: &Path,
    experiment: &str,
    key: &str,
    gap_ms: i64,
) -> Result<Peers> {
    let output = Command::new(python)
        .arg(script)
        .arg(csv)
        .args([experiment, key, &gap_ms.to_string()])
        .output()
        .with_context(|| format!("cannot run {python} {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "peers.py printed no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
