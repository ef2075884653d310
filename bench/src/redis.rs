//! Redis as a peer: `PFADD` per (experiment, variation, hour bucket) with a
//! 64-deep pipeline over a minimal RESP client, then `PFCOUNT` of the union
//! of a variation's buckets against the exact visitor count.

use crate::process::start_redis;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use sessiondb_workload::{ScaleWorkload, HOUR_MS};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Commands written before their replies are read.
pub const PIPELINE_DEPTH: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct RedisFigures {
    pub version: String,
    pub pfadd_ops: usize,
    pub seconds: f64,
    pub ops_per_second: f64,
    /// Per variation: (exact visitors, PFCOUNT).
    pub estimates: Vec<(i64, f64)>,
}

fn command(out: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    write!(out, "*{}\r\n", parts.len())?;
    for part in parts {
        write!(out, "${}\r\n", part.len())?;
        out.write_all(part)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

fn reply(input: &mut impl BufRead, line: &mut String) -> Result<()> {
    line.clear();
    input.read_line(line)?;
    ensure!(line.starts_with(':'), "unexpected Redis reply {line:?}");
    Ok(())
}

/// Every event of an exposed visitor at or after its exposure is one
/// `PFADD <experiment>:<variation>:<bucket> <visitor>` — the stream already
/// joined with the sticky variation, which Redis cannot work out itself.
pub fn run(binary: &str, workload: &ScaleWorkload, exact_visitors: &[i64]) -> Result<RedisFigures> {
    let config = &workload.config;
    let (mut guard, port) = start_redis(binary)?;
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let stream = TcpStream::connect(("127.0.0.1", port)).context("connect to redis")?;
    stream.set_nodelay(true)?;
    let mut input = BufReader::new(stream.try_clone()?);
    let mut output = BufWriter::with_capacity(1 << 16, stream);
    let exposures = workload.exposures();
    let mut line = String::new();
    let mut pending = 0usize;
    let mut ops = 0usize;
    let started = Instant::now();
    for event in &workload.arrival {
        let Some((variation, t0)) = exposures[event.visitor as usize] else {
            continue;
        };
        if event.ts_ms < t0 {
            continue;
        }
        let bucket = event.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let key = format!("{}:v{variation}:{bucket}", config.experiment);
        let visitor = config.visitor_name(event.visitor);
        command(&mut output, &[b"PFADD", key.as_bytes(), visitor.as_bytes()])?;
        pending += 1;
        ops += 1;
        if pending == PIPELINE_DEPTH {
            output.flush()?;
            for _ in 0..pending {
                reply(&mut input, &mut line)?;
            }
            pending = 0;
        }
    }
    output.flush()?;
    for _ in 0..pending {
        reply(&mut input, &mut line)?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let buckets: Vec<i64> = (0..config.span_ms / HOUR_MS)
        .map(|hour| config.base_ms + hour * HOUR_MS)
        .collect();
    let mut estimates = Vec::new();
    for (variation, &exact) in exact_visitors.iter().enumerate() {
        let keys: Vec<String> = buckets
            .iter()
            .map(|bucket| format!("{}:v{variation}:{bucket}", config.experiment))
            .collect();
        let mut parts: Vec<&[u8]> = vec![b"PFCOUNT"];
        parts.extend(keys.iter().map(|key| key.as_bytes()));
        command(&mut output, &parts)?;
        output.flush()?;
        reply(&mut input, &mut line)?;
        let count: f64 = line[1..].trim().parse()?;
        estimates.push((exact, count));
    }
    guard.kill();
    Ok(RedisFigures {
        version,
        pfadd_ops: ops,
        seconds,
        ops_per_second: ops as f64 / seconds,
        estimates,
    })
}
