//! The short chaos profile (SPEC §9, `docs/reliability.md`): a few runs
//! with fixed seeds against a 3-node Docker cluster of the image, which
//! together apply every nemesis at least once (but those in `KNOWN_RED`),
//! with shard moves and rebalances in the background of all of them.
//!
//! Each run must come out green: every planned fault applied, and every
//! checker satisfied. A failing run prints its seed, schedule, history
//! summary, violations and the nodes' log tails; `CHAOS_SEED=<n>` runs the
//! same scenarios with another seed, and the printed `--bin chaos` command
//! replays one run alone.
//!
//! Needs Docker Engine and the image (`cluster-config/build-image`;
//! `SESSIONDB_IMAGE` names another than `sessiondb:dev`). The runs take
//! turns (one cluster at a time), so the 2-core machine is not swamped.

use sessiondb_chaos_tests::nemesis::{NemesisKind, Schedule};
use sessiondb_chaos_tests::run::{run, RunConfig};
use sessiondb_chaos_tests::{Seed, SEED_ENV};
use std::collections::BTreeSet;

/// The runs of the short profile: (fixed seed, nemeses, one fault each).
const SCENARIOS: &[(&str, u64, &[NemesisKind])] = &[
    (
        "crashes",
        101,
        &[
            NemesisKind::KillRestart,
            NemesisKind::KillLeader,
            NemesisKind::Pause,
        ],
    ),
    (
        "partitions",
        202,
        &[
            NemesisKind::IsolateNode,
            NemesisKind::IsolateLeader,
            NemesisKind::OneWay,
        ],
    ),
    (
        "owners",
        303,
        &[
            NemesisKind::IsolateOwner,
            NemesisKind::KillMovingOwner,
            NemesisKind::Clock,
        ],
    ),
    (
        "disks",
        404,
        &[
            NemesisKind::DiskFail,
            NemesisKind::DiskSlow,
            NemesisKind::Clock,
        ],
    ),
];

/// Nemeses left out of the short profile because they find a known,
/// unfixed bug (`docs/reliability.md`, "Bugs found"); the long profile
/// runs them. `kill-moving-leader`: a leader killed between `BeginMove` and
/// `CommitMove` leaves the shard fenced for good (seed 1 reproduces it:
/// `--bin chaos -- --seed 1 --nemeses kill-moving-leader --faults 2`).
const KNOWN_RED: &[NemesisKind] = &[NemesisKind::KillMovingLeader];

/// One cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The scenario's seed, or `CHAOS_SEED` when set (to explore or replay).
fn seed_for(fixed: u64) -> u64 {
    match std::env::var_os(SEED_ENV) {
        Some(_) => Seed::from_env().unwrap_or_else(|error| panic!("{error}")).0,
        None => fixed,
    }
}

async fn run_scenario(name: &str) {
    let (_, fixed, kinds) = SCENARIOS
        .iter()
        .find(|(scenario, _, _)| *scenario == name)
        .expect("a scenario of that name");
    let _turn = SERIAL.lock().await;
    let config = RunConfig::new(seed_for(*fixed), kinds);
    let report = run(&config)
        .await
        .unwrap_or_else(|error| panic!("scenario {name}: {error:#}"));
    let text = report.describe();
    println!("{text}");
    assert!(
        report.verdict.is_green(),
        "scenario {name} is not green:\n{text}"
    );
    assert!(report.ops > 0, "scenario {name} sent nothing:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_kill_restart_kill_leader_pause() {
    run_scenario("crashes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_isolate_node_isolate_leader_one_way() {
    run_scenario("partitions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_isolate_owner_kill_moving_owner_clock() {
    run_scenario("owners").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_fail_slow_and_clock() {
    run_scenario("disks").await;
}

#[test]
fn short_profile_covers_every_nemesis() {
    let covered: BTreeSet<NemesisKind> = SCENARIOS
        .iter()
        .flat_map(|(_, seed, kinds)| RunConfig::new(*seed, kinds).schedule().faults)
        .map(|fault| fault.kind)
        .collect();
    let expected: BTreeSet<NemesisKind> = NemesisKind::ALL
        .iter()
        .copied()
        .filter(|kind| !KNOWN_RED.contains(kind))
        .collect();
    assert_eq!(
        covered, expected,
        "every nemesis but the known-red ones is in some scenario's schedule"
    );
}

#[test]
fn a_seed_replays_the_same_schedule() {
    let kinds = NemesisKind::ALL;
    let first = Schedule::generate(7, kinds, 20, (1_000, 3_000));
    assert_eq!(first, Schedule::generate(7, kinds, 20, (1_000, 3_000)));
    assert_ne!(first, Schedule::generate(8, kinds, 20, (1_000, 3_000)));
    let drawn: BTreeSet<NemesisKind> = first.faults.iter().map(|fault| fault.kind).collect();
    assert_eq!(
        drawn.len(),
        kinds.len(),
        "20 faults draw every kind: {first}"
    );
}

#[test]
fn seed_from_environment_is_valid() {
    let seed = Seed::from_env().unwrap_or_else(|error| panic!("{error}"));
    println!("{seed}");
}
