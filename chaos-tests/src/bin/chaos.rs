//! The long chaos profile and the replay tool (`docs/reliability.md`).
//!
//! ```text
//! cargo run -p sessiondb-chaos-tests --bin chaos -- --seeds 1..20 --faults 6
//! cargo run -p sessiondb-chaos-tests --bin chaos -- --seed 7 --nemeses pause,clock --faults 2
//! ```
//!
//! Runs one chaos run per seed, one after another, prints each run's
//! report and a Markdown table (seed, nemeses, events, ops, verdict), and
//! exits 1 when any run is red or invalid.

use anyhow::{bail, Context};
use clap::Parser;
use sessiondb_chaos_tests::nemesis::NemesisKind;
use sessiondb_chaos_tests::run::{run, RunConfig};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(about = "Chaos runs against a Docker cluster of the sessiondb image")]
struct Args {
    /// One seed (replays a run).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, `first..end` (end excluded).
    #[arg(long, default_value = "1..11")]
    seeds: String,
    /// Nemeses to draw from, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    nemeses: Vec<String>,
    /// Faults per run (default: one per nemesis).
    #[arg(long)]
    faults: Option<usize>,
    /// Visitors of the workload per run.
    #[arg(long, default_value_t = 200)]
    visitors: usize,
    /// Longest hold of a fault, in ms (the shortest is half of it).
    #[arg(long, default_value_t = 4_000)]
    hold_ms_max: u64,
}

fn seeds(args: &Args) -> anyhow::Result<Vec<u64>> {
    if let Some(seed) = args.seed {
        return Ok(vec![seed]);
    }
    let (first, end) = args
        .seeds
        .split_once("..")
        .context("--seeds must be first..end, e.g. 1..11")?;
    let first: u64 = first.parse().context("--seeds: first is not a number")?;
    let end: u64 = end.parse().context("--seeds: end is not a number")?;
    if end <= first {
        bail!("--seeds {first}..{end} is empty");
    }
    Ok((first..end).collect())
}

fn kinds(args: &Args) -> anyhow::Result<Vec<NemesisKind>> {
    if args.nemeses.is_empty() {
        return Ok(NemesisKind::ALL.to_vec());
    }
    args.nemeses
        .iter()
        .map(|name| {
            NemesisKind::from_name(name).with_context(|| {
                let known: Vec<&str> = NemesisKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown nemesis {name:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

async fn main_async(args: Args) -> anyhow::Result<bool> {
    let kinds = kinds(&args)?;
    let mut rows = Vec::new();
    let mut all_green = true;
    for seed in seeds(&args)? {
        let mut config = RunConfig::new(seed, &kinds);
        config.faults = args.faults.unwrap_or(kinds.len());
        config.visitors = args.visitors;
        config.hold_ms = (args.hold_ms_max / 2, args.hold_ms_max);
        let names: Vec<&str> = config
            .schedule()
            .faults
            .iter()
            .map(|f| f.kind.name())
            .collect();
        // An interrupted run drops its cluster guard, which removes the
        // containers, volumes and network.
        let outcome = tokio::select! {
            outcome = run(&config) => outcome,
            _ = interrupted() => bail!("interrupted during seed {seed}; its containers were removed"),
        };
        let (verdict, events) = match outcome {
            Ok(report) => {
                println!("{}", report.describe());
                let verdict = if report.verdict.is_green() {
                    "green".to_string()
                } else if report.verdict.violations.is_empty() {
                    "INVALID".to_string()
                } else {
                    format!("RED ({} violations)", report.verdict.violations.len())
                };
                (verdict, report.events.to_string())
            }
            Err(error) => {
                println!("seed {seed}: the run could not finish: {error:#}");
                ("ERROR".to_string(), "-".to_string())
            }
        };
        all_green &= verdict == "green";
        rows.push(format!(
            "| {seed} | {} | {events} | {verdict} |",
            names.join(", ")
        ));
    }
    println!("| seed | nemeses (in order) | events | result |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(all_green)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(main_async(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
