//! Durability of the real `sessiondb serve` binary (`docs/durability.md`):
//! acknowledged means on disk, SIGKILL loses nothing acknowledged and counts
//! nothing twice, torn log tails are cut and corrupt logs refused,
//! checkpoints taken under load restore exactly, deduplication survives
//! restarts, and a failing disk makes ingest fail loudly while reads go on.
//!
//! Every node runs on a manual clock fixed just after the workload's last
//! event time (restarts pass the same `--manual-clock`), with a week of
//! allowed lateness, so every event stays inside the horizon and the oracle
//! over the acknowledged events is the exact expected answer whatever the
//! arrival order.
//!
//! Nothing here sleeps to synchronise: the controller of the kill tests
//! acts when the clients have acknowledged a number of batches, clients
//! that lose their connection wait for the controller to publish the
//! restarted node, and nodes are awaited through their listening line.
//!
//! `SESSIONDB_DURABILITY_SEED=<u64>` runs the kill test with that seed only.

use crate::support::node::{NodeOptions, TestNode};
use crate::support::workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::StatusCode;
use sessiondb_protocol::{
    CheckpointResponse, Decision, Event, EventBatch, EventType, IngestResponse, ResultsResponse,
    Timestamp,
};
use sessiondb_test_support::oracle::{compare, Oracle, OracleSettings};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

const PROJECT: &str = "durable";
const KEYS: &[&str] = &["add_to_cart", "purchase", "signup"];
const BREAKDOWNS: &[Option<&str>] = &[None, Some("browser")];
const SPAN_MS: i64 = 3 * DAY_MS;
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
/// Concurrent ingest clients in the load tests.
const CLIENTS: usize = 4;
/// Kills per seed in the kill test (a last one after all clients finished
/// comes on top).
const KILLS_PER_SEED: usize = 4;
const KILL_TEST_SEEDS: &[u64] = &[0x5eed_0001, 0x5eed_0002];
/// Bound on waiting for a condition that should come soon (a bound, not a
/// delay; a debug build on a busy machine is slow).
const CONDITION_WAIT_MAX: Duration = Duration::from_secs(120);
/// Bound on one HTTP exchange of a load client.
const REQUEST_WAIT_MAX: Duration = Duration::from_secs(120);
/// Consecutive non-200 answers or transport errors for one batch, with no
/// node restart in between, after which a load client gives up.
const ATTEMPTS_WITHOUT_RESTART_MAX: u32 = 20;
/// What the node logs when it cut a torn or damaged log tail.
const CUT_MESSAGE: &str = "log tail was torn or damaged and has been cut";
/// Segment file layout (node/src/log/mod.rs).
const SEGMENT_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 20;

// ---------------------------------------------------------------------------
// Workloads, the fixed clock, the oracle.

fn workload_config(seed: u64, visitors: usize) -> WorkloadConfig {
    let mut config = WorkloadConfig::new(seed, PROJECT);
    config.visitors = visitors;
    config.span_ms = SPAN_MS;
    config.max_delay_ms = 2 * DAY_MS;
    config
}

/// The node's clock: just after every workload event, so nothing is too
/// early and (with a week of lateness) nothing too late.
fn clock_ms(config: &WorkloadConfig) -> i64 {
    config.base_ms + config.span_ms + MINUTE_MS
}

fn node_options(config: &WorkloadConfig) -> NodeOptions {
    NodeOptions {
        start_ms: clock_ms(config),
        shards: None,
    }
}

async fn create_project(node: &TestNode) {
    node.create_project(
        PROJECT,
        serde_json::json!({ "allowed_lateness_ms": ALLOWED_LATENESS_MS }),
    )
    .await;
}

fn oracle(events: &[Event]) -> Oracle {
    Oracle::new(OracleSettings::default(), events)
}

/// The workload's arrival order cut into batches of at most `events_max`
/// events (the clock is fixed, so arrival time plays no part).
fn batches(workload: &Workload, events_max: usize) -> Vec<Vec<Event>> {
    workload
        .batches(i64::MAX, events_max)
        .into_iter()
        .map(|(_, events)| events)
        .collect()
}

/// Hour-aligned query ranges: everything, and a stretch from mid-day.
fn ranges(config: &WorkloadConfig) -> Vec<(i64, i64)> {
    let base = config.base_ms;
    vec![
        (base, base + config.span_ms),
        (base + DAY_MS + 5 * HOUR_MS, base + 2 * DAY_MS + 7 * HOUR_MS),
    ]
}

/// Compares every experiment of `config` over `ranges`, without and with a
/// breakdown, with the oracle over `events`; returns every disagreement.
/// An experiment nobody in `events` was exposed to must be unknown.
async fn results_problems(
    node: &TestNode,
    config: &WorkloadConfig,
    events: &[Event],
) -> Vec<String> {
    let oracle = oracle(events);
    let exposed = oracle.experiments();
    let mut problems = Vec::new();
    for experiment in config.experiment_names() {
        for (from, to) in ranges(config) {
            for &breakdown in BREAKDOWNS {
                let path = TestNode::results_path(PROJECT, &experiment, from, to, breakdown, KEYS);
                let raw = node.get_raw(&path).await;
                if !exposed.contains(&experiment) {
                    if raw.status != StatusCode::NOT_FOUND {
                        problems.push(format!(
                            "GET {path}: nobody was exposed, expected 404, got {} {}",
                            raw.status, raw.text
                        ));
                    }
                    continue;
                }
                if raw.status != StatusCode::OK {
                    problems.push(format!("GET {path}: {} {}", raw.status, raw.text));
                    continue;
                }
                let actual: ResultsResponse = match serde_json::from_value(raw.body) {
                    Ok(actual) => actual,
                    Err(e) => {
                        problems.push(format!("GET {path}: not a ResultsResponse ({e})"));
                        continue;
                    }
                };
                let expected = oracle.results(&experiment, from, to, breakdown, KEYS);
                problems.extend(
                    compare(&actual, &expected, KEYS)
                        .into_iter()
                        .map(|p| format!("{experiment} {breakdown:?}: {p}")),
                );
            }
        }
    }
    problems
}

/// Panics unless the node's results equal the oracle over `events`.
async fn assert_results(node: &TestNode, config: &WorkloadConfig, events: &[Event], what: &str) {
    let problems = results_problems(node, config, events).await;
    let context = if what.contains("seed=") {
        what.to_string()
    } else {
        format!("seed={} {what}", config.seed)
    };
    assert!(
        problems.is_empty(),
        "{context}: results disagree with the oracle over {} events in {} places, first ones:\n{}\nnode stderr:\n{}",
        events.len(),
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        node.stderr_tail()
    );
}

// ---------------------------------------------------------------------------
// Small HTTP helpers.

fn batch_body(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&EventBatch {
        events: events.to_vec(),
    })
    .expect("a batch serializes")
}

/// Sends one batch that must be acknowledged without rejections; returns
/// (accepted, duplicates).
async fn send_acked(node: &TestNode, events: &[Event], what: &str) -> (u64, u64) {
    let raw = node.post_raw("/v1/events", batch_body(events)).await;
    assert_eq!(
        raw.status,
        StatusCode::OK,
        "{what}: ingest answered {}; node stderr:\n{}",
        raw.text,
        node.stderr_tail()
    );
    let answer: IngestResponse = serde_json::from_value(raw.body).expect("an IngestResponse");
    assert!(
        answer.rejected.is_empty(),
        "{what}: events rejected: {:?}",
        answer.rejected.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        answer.accepted + answer.duplicates,
        events.len() as u64,
        "{what}: every event is accepted or a duplicate: {answer:?}"
    );
    (answer.accepted, answer.duplicates)
}

async fn checkpoint(node: &TestNode, what: &str) -> CheckpointResponse {
    let raw = node.post_admin("/v1/admin/checkpoint", "").await;
    assert_eq!(
        raw.status,
        StatusCode::OK,
        "{what}: checkpoint answered {}; node stderr:\n{}",
        raw.text,
        node.stderr_tail()
    );
    serde_json::from_value(raw.body)
        .unwrap_or_else(|e| panic!("{what}: not a checkpoint answer ({e}): {}", raw.text))
}

// ---------------------------------------------------------------------------
// The node's stderr and log files.

/// The node's stderr without terminal colour codes.
fn plain_stderr(node: &TestNode) -> String {
    strip_ansi(&node.stderr_text())
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the node's "recovered" line reports.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    checkpoint_position: u64,
    records_replayed: u64,
    log_bytes_cut: u64,
}

fn recovery_report(node: &TestNode, what: &str) -> Recovery {
    let stderr = plain_stderr(node);
    let line = stderr
        .lines()
        .find(|l| l.contains("RecoveryReport {"))
        .unwrap_or_else(|| panic!("{what}: no recovery report in the node's stderr:\n{stderr}"));
    let field = |name: &str| -> u64 {
        let start = line
            .find(&format!("{name}: "))
            .unwrap_or_else(|| panic!("{what}: no {name} in {line}"))
            + name.len()
            + 2;
        let digits: String = line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits
            .parse()
            .unwrap_or_else(|e| panic!("{what}: {name} in {line}: {e}"))
    };
    Recovery {
        checkpoint_position: field("checkpoint_position"),
        records_replayed: field("records_replayed"),
        log_bytes_cut: field("log_bytes_cut"),
    }
}

/// The log's segment files, oldest first.
fn segment_files(node: &TestNode) -> Vec<PathBuf> {
    let dir = node.node_data_dir().join("log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("log-") && name.ends_with(".seg")
        })
        .collect();
    files.sort();
    files
}

fn last_segment(node: &TestNode) -> PathBuf {
    segment_files(node)
        .pop()
        .expect("the log has at least one segment")
}

/// (offset, length) of every record of a segment file, framing included.
fn records_of(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let total = 8 + length as usize;
        assert!(
            offset + total <= bytes.len(),
            "record at {offset} runs past the end"
        );
        records.push((offset, total));
        offset += total;
    }
    assert_eq!(offset, bytes.len(), "the segment ends with a whole record");
    records
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len() as usize
}

// ---------------------------------------------------------------------------
// Concurrent load with a controller that kills and checkpoints.

/// What the controller does once the clients have acknowledged `at`
/// batches in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Checkpoint,
    /// Ask for a checkpoint, and SIGKILL the node once two more batches
    /// were acknowledged (or the checkpoint answered): usually while the
    /// checkpoint is being encoded or written.
    KillDuringCheckpoint,
}

/// The current node: a generation that changes on every kill and restart,
/// and its base URL while it serves.
type NodeAddress = (u64, Option<String>);

/// How one attempt to send a batch ended.
#[derive(Debug, Clone)]
enum Attempt {
    Acknowledged(IngestResponse),
    /// The node answered, but not 200 (e.g. 503 while going down).
    Failed(StatusCode, String),
    /// No answer: the connection broke (the node was killed).
    Unknown(String),
}

#[derive(Debug, Default)]
struct Progress {
    acknowledged: AtomicU64,
    changed: Notify,
}

impl Progress {
    /// Waits until `acknowledged >= at`.
    /// (Woken by each acknowledgement rather than polling, so the
    /// controller acts right at `at`.)
    async fn wait_for(&self, at: u64, seed: u64) {
        let reached = tokio::time::timeout(CONDITION_WAIT_MAX, async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.acknowledged.load(Ordering::SeqCst) >= at {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "seed={seed}: clients acknowledged only {} batches of the {at} awaited within {CONDITION_WAIT_MAX:?}",
            self.acknowledged.load(Ordering::SeqCst)
        );
    }
}

/// One client: sends its batches in order, each until it is acknowledged.
async fn run_client(
    seed: u64,
    client: usize,
    batches: Vec<(usize, Vec<Event>)>,
    mut address: watch::Receiver<NodeAddress>,
    progress: Arc<Progress>,
) -> Vec<(usize, Vec<Attempt>)> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_WAIT_MAX)
        .build()
        .expect("an HTTP client");
    let mut log = Vec::with_capacity(batches.len());
    for (index, events) in batches {
        let body = batch_body(&events);
        let mut attempts = Vec::new();
        let mut attempts_this_generation = 0;
        let mut last_generation = None;
        loop {
            let (generation, url) = address.borrow_and_update().clone();
            if last_generation != Some(generation) {
                attempts_this_generation = 0;
                last_generation = Some(generation);
            }
            let Some(url) = url else {
                // The node is down: wait for the controller to restart it.
                tokio::time::timeout(CONDITION_WAIT_MAX, address.changed())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("seed={seed} client {client}: no node restarted within {CONDITION_WAIT_MAX:?}")
                    })
                    .expect("the controller outlives the clients");
                continue;
            };
            attempts_this_generation += 1;
            assert!(
                attempts_this_generation <= ATTEMPTS_WITHOUT_RESTART_MAX,
                "seed={seed} client {client}: batch {index} failed {ATTEMPTS_WITHOUT_RESTART_MAX} times on one node: {:?}",
                attempts.last()
            );
            let sent = http
                .post(format!("{url}/v1/events"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .bearer_auth(crate::support::node::TEST_ADMIN_TOKEN)
                .body(body.clone())
                .send()
                .await;
            let attempt = match sent {
                Err(e) => Attempt::Unknown(e.to_string()),
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Err(e) => Attempt::Unknown(e.to_string()),
                        Ok(text) if status == StatusCode::OK => {
                            let answer: IngestResponse = serde_json::from_str(&text)
                                .unwrap_or_else(|e| {
                                    panic!("seed={seed}: batch {index}: not an IngestResponse ({e}): {text}")
                                });
                            Attempt::Acknowledged(answer)
                        }
                        Ok(text) => Attempt::Failed(status, text),
                    }
                }
            };
            let done = matches!(attempt, Attempt::Acknowledged(_));
            attempts.push(attempt);
            if done {
                progress.acknowledged.fetch_add(1, Ordering::SeqCst);
                progress.changed.notify_waiters();
                break;
            }
            // Retry at once: if the node was killed, the generation has
            // already moved on (the controller moves it before killing), and
            // the next round waits for the restarted node.
        }
        log.push((index, attempts));
    }
    log
}

/// A checkpoint taken during a load run.
#[derive(Debug, Clone)]
struct CheckpointTaken {
    answer: CheckpointResponse,
    /// Whether a batch acknowledged before it was sent after the previous
    /// checkpoint answered, so that its position must be higher.
    must_grow: bool,
    /// Batches acknowledged when it answered.
    acknowledged_when_answered: u64,
}

/// What a load run saw.
#[derive(Debug)]
struct LoadOutcome {
    /// Per batch (in workload order), every attempt.
    attempts: Vec<Vec<Attempt>>,
    checkpoints: Vec<CheckpointTaken>,
    /// Per restart: the recovery report, and the position of the last
    /// checkpoint answered before it.
    recoveries: Vec<(Recovery, Option<u64>)>,
}

/// Streams `batches` from `CLIENTS` concurrent clients (batch i goes to
/// client i mod CLIENTS) while the controller performs `plan` in order:
/// each action once `gap` more batches were acknowledged since the previous
/// action was done (or once all were).
async fn run_load(
    node: &mut TestNode,
    seed: u64,
    batches: &[Vec<Event>],
    plan: &[(u64, Action)],
) -> LoadOutcome {
    let progress = Arc::new(Progress::default());
    let (address, receiver) = watch::channel::<NodeAddress>((0, Some(node.base_url().to_string())));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let mine: Vec<(usize, Vec<Event>)> = batches
            .iter()
            .enumerate()
            .filter(|(i, _)| i % CLIENTS == client)
            .map(|(i, events)| (i, events.clone()))
            .collect();
        clients.push(tokio::spawn(run_client(
            seed,
            client,
            mine,
            receiver.clone(),
            Arc::clone(&progress),
        )));
    }

    let total = batches.len() as u64;
    let mut generation = 0;
    let mut checkpoints: Vec<CheckpointTaken> = Vec::new();
    let mut recoveries = Vec::new();
    // Acknowledged batches when the previous action, and the previous
    // checkpoint, were done.
    let mut acknowledged_after_action = 0;
    let mut acknowledged_after_checkpoint: Option<u64> = None;
    for &(gap, action) in plan {
        let at = (acknowledged_after_action + gap).min(total);
        progress.wait_for(at, seed).await;
        let now = progress.acknowledged.load(Ordering::SeqCst);
        match action {
            Action::Kill | Action::KillDuringCheckpoint => {
                let racing_checkpoint = if action == Action::KillDuringCheckpoint {
                    let url = node.url("/v1/admin/checkpoint");
                    let token = node.admin_token().to_string();
                    let mut request = tokio::spawn(async move {
                        let response = reqwest::Client::new()
                            .post(url)
                            .bearer_auth(token)
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        let status = response.status();
                        let text = response.text().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>((status, text))
                    });
                    tokio::select! {
                        _ = progress.wait_for((now + 2).min(total), seed) => {}
                        _ = &mut request => {}
                    }
                    Some(request)
                } else {
                    None
                };
                generation += 1;
                address.send_replace((generation, None));
                node.kill_9().await;
                if let Some(request) = racing_checkpoint {
                    let answer = request.await.expect("the checkpoint request task");
                    let written = plain_stderr(node).contains("checkpoint written");
                    println!(
                        "seed={seed}: checkpoint racing the kill: {answer:?}; written before the kill: {written}"
                    );
                    // Answered before the process died: it is on disk, and
                    // recovery must start from it or later.
                    if let Ok((StatusCode::OK, text)) = answer {
                        let answer: CheckpointResponse = serde_json::from_str(&text)
                            .unwrap_or_else(|e| {
                                panic!("seed={seed}: checkpoint answer ({e}): {text}")
                            });
                        checkpoints.push(CheckpointTaken {
                            answer,
                            must_grow: false,
                            acknowledged_when_answered: now,
                        });
                    }
                }
                node.restart().await;
                let recovery = recovery_report(node, &format!("seed={seed} restart"));
                println!(
                    "seed={seed}: killed after {now} acknowledged batches; recovered {recovery:?}"
                );
                recoveries.push((recovery, checkpoints.last().map(|c| c.answer.position)));
                generation += 1;
                address.send_replace((generation, Some(node.base_url().to_string())));
            }
            Action::Checkpoint => {
                // Each client has one batch in flight at most: with more
                // than CLIENTS batches acknowledged since the previous
                // checkpoint answered, one of them was sent after it, so
                // its record is in this checkpoint and not in that one.
                let must_grow = acknowledged_after_checkpoint
                    .is_some_and(|previous| now > previous + CLIENTS as u64);
                let answer = checkpoint(node, &format!("seed={seed} checkpoint under load")).await;
                let acknowledged_when_answered = progress.acknowledged.load(Ordering::SeqCst);
                acknowledged_after_checkpoint = Some(acknowledged_when_answered);
                println!("seed={seed}: checkpoint after {now} acknowledged batches: {answer:?}");
                checkpoints.push(CheckpointTaken {
                    answer,
                    must_grow,
                    acknowledged_when_answered,
                });
            }
        }
        acknowledged_after_action = progress.acknowledged.load(Ordering::SeqCst);
    }

    let mut attempts: Vec<Vec<Attempt>> = vec![Vec::new(); batches.len()];
    for client in clients {
        for (index, log) in client.await.expect("a client task") {
            attempts[index] = log;
        }
    }
    LoadOutcome {
        attempts,
        checkpoints,
        recoveries,
    }
}

/// Checks the per-batch answers of a load run: every batch ends with one
/// acknowledgement, which rejects nothing and reports every event as
/// accepted or duplicate, and no more events were accepted in acknowledged
/// answers than there are distinct events.
fn check_answers(seed: u64, batches: &[Vec<Event>], outcome: &LoadOutcome, distinct: usize) {
    let mut accepted = 0;
    let (mut failed, mut unknown) = (0, 0);
    let mut examples = std::collections::BTreeSet::new();
    for (index, (events, attempts)) in batches.iter().zip(&outcome.attempts).enumerate() {
        let acknowledged: Vec<&IngestResponse> = attempts
            .iter()
            .filter_map(|a| match a {
                Attempt::Acknowledged(answer) => Some(answer),
                _ => None,
            })
            .collect();
        assert_eq!(
            acknowledged.len(),
            1,
            "seed={seed}: batch {index} acknowledged once (attempts {attempts:?})"
        );
        let answer = acknowledged[0];
        assert!(
            answer.rejected.is_empty(),
            "seed={seed}: batch {index}: events rejected: {:?}",
            answer.rejected
        );
        assert_eq!(
            answer.accepted + answer.duplicates,
            events.len() as u64,
            "seed={seed}: batch {index}: every event accepted or duplicate: {answer:?}"
        );
        accepted += answer.accepted;
        for attempt in attempts {
            match attempt {
                Attempt::Failed(status, text) => {
                    failed += 1;
                    examples.insert(format!("{status} {text}"));
                }
                Attempt::Unknown(error) => {
                    unknown += 1;
                    examples.insert(error.clone());
                }
                Attempt::Acknowledged(_) => {}
            }
        }
    }
    println!(
        "seed={seed}: {} batches acknowledged, {failed} failed and {unknown} unknown attempts retried, {accepted} events accepted in acknowledged answers of {distinct} distinct",
        batches.len()
    );
    if !examples.is_empty() {
        println!("seed={seed}: what retried attempts saw: {examples:?}");
    }
    assert!(
        accepted <= distinct as u64,
        "seed={seed}: acknowledged answers accepted {accepted} events but there are only {distinct} distinct ones: something was applied twice"
    );
}

/// Re-sends every distinct event: each must be reported as a duplicate.
async fn assert_all_duplicates(node: &TestNode, seed: u64, distinct: &[Event], what: &str) {
    let (mut accepted, mut duplicates) = (0, 0);
    for chunk in distinct.chunks(500) {
        let (a, d) = send_acked(node, chunk, &format!("seed={seed} {what}")).await;
        accepted += a;
        duplicates += d;
    }
    assert_eq!(
        (accepted, duplicates),
        (0, distinct.len() as u64),
        "seed={seed} {what}: every re-sent event must be a duplicate (accepted, duplicates)"
    );
}

// ---------------------------------------------------------------------------
// 1. SIGKILL under concurrent load.

async fn kill_under_load(seed: u64) {
    println!("durability seed={seed}");
    let config = workload_config(seed, 280);
    let workload = generate(&config);
    let batches = batches(&workload, 25);
    let total = batches.len() as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Kills after a random number of further acknowledged batches each,
    // and a checkpoint between the first and the second kill.
    let mut plan: Vec<(u64, Action)> = (0..KILLS_PER_SEED)
        .map(|_| (rng.gen_range(total / 14..=total / 8).max(1), Action::Kill))
        .collect();
    let checkpoint_gap = rng.gen_range(1..=total / 14);
    plan.insert(1, (checkpoint_gap, Action::Checkpoint));
    plan[3].1 = Action::KillDuringCheckpoint;
    println!(
        "seed={seed}: {} events ({} distinct) in {total} batches; plan {plan:?}",
        workload.arrival.len(),
        workload.distinct.len()
    );

    let started = Instant::now();
    let mut node = TestNode::start_with(node_options(&config)).await;
    create_project(&node).await;
    let outcome = run_load(&mut node, seed, &batches, &plan).await;
    check_answers(seed, &batches, &outcome, workload.distinct.len());

    assert_eq!(
        outcome.recoveries.len(),
        KILLS_PER_SEED,
        "seed={seed}: every planned kill happened"
    );
    let first_checkpoint = &outcome.checkpoints[0].answer;
    assert!(
        first_checkpoint.position > 0,
        "seed={seed}: the checkpoint includes acknowledged records: {first_checkpoint:?}"
    );
    for (recovery, last_checkpoint) in &outcome.recoveries {
        if let Some(position) = last_checkpoint {
            assert!(
                recovery.checkpoint_position >= *position,
                "seed={seed}: recovery after the checkpoint at {position} started from {recovery:?}"
            );
        }
    }
    assert!(
        outcome
            .recoveries
            .iter()
            .any(|(r, c)| c.is_some() && r.checkpoint_position > 0 && r.records_replayed > 0),
        "seed={seed}: some recovery used the checkpoint plus the log tail: {:?}",
        outcome.recoveries
    );

    let what = format!("seed={seed} after {KILLS_PER_SEED} kills");
    assert_results(&node, &config, &workload.distinct, &what).await;

    // A last SIGKILL with everything acknowledged: recovery alone must give
    // the same answers, and remember every event id.
    node.kill_9().await;
    node.restart().await;
    assert_results(
        &node,
        &config,
        &workload.distinct,
        &format!("seed={seed} after the final kill"),
    )
    .await;
    assert_all_duplicates(
        &node,
        seed,
        &workload.distinct,
        "re-send after the final kill",
    )
    .await;
    // Counters restart with the process: this one saw only the re-sends.
    let status = node.get_raw("/v1/status").await;
    assert_eq!(
        status.status,
        StatusCode::OK,
        "seed={seed}: {}",
        status.text
    );
    assert_eq!(
        (
            status.body["events_accepted"].as_u64(),
            status.body["events_duplicate"].as_u64()
        ),
        (Some(0), Some(workload.distinct.len() as u64)),
        "seed={seed}: status after the re-send: {}",
        status.text
    );
    assert_results(
        &node,
        &config,
        &workload.distinct,
        &format!("seed={seed} after the re-send"),
    )
    .await;
    println!("seed={seed}: kill test done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_concurrent_load_loses_nothing_and_counts_nothing_twice() {
    let seeds: Vec<u64> = match std::env::var("SESSIONDB_DURABILITY_SEED") {
        Ok(seed) => vec![seed.parse().expect("SESSIONDB_DURABILITY_SEED is a u64")],
        Err(_) => KILL_TEST_SEEDS.to_vec(),
    };
    for seed in seeds {
        kill_under_load(seed).await;
    }
}

// ---------------------------------------------------------------------------
// 2. Torn and corrupt log tails.

/// A batch of one new visitor only, so that it is exactly one log record
/// (one shard): an exposure to `exp-0` and conversions after it.
fn marker_batch(config: &WorkloadConfig, name: &str) -> Vec<Event> {
    let t = config.base_ms + DAY_MS + 3 * HOUR_MS;
    let event = |n: usize, offset: i64, event_type: EventType| Event {
        id: format!("{name}-{n}"),
        project: PROJECT.to_string(),
        visitor: format!("{name}-visitor"),
        ts: Timestamp::Milliseconds(t + offset),
        event_type,
        key: None,
        value: None,
        attributes: [("browser".to_string(), "marker".to_string())]
            .into_iter()
            .collect(),
        decisions: Vec::new(),
    };
    let mut decision = event(0, 0, EventType::Decision);
    decision.decisions = vec![Decision {
        experiment: "exp-0".to_string(),
        variation: "control".to_string(),
    }];
    let pageview = event(1, MINUTE_MS, EventType::Pageview);
    let mut purchase = event(2, 2 * MINUTE_MS, EventType::Custom);
    purchase.key = Some("purchase".to_string());
    purchase.value = Some(42.5);
    let mut cart = event(3, 3 * MINUTE_MS, EventType::Custom);
    cart.key = Some("add_to_cart".to_string());
    vec![decision, pageview, purchase, cart]
}

/// Starts a node with the project and `workload` acknowledged in batches.
async fn node_with(config: &WorkloadConfig, workload: &Workload) -> TestNode {
    let node = TestNode::start_with(node_options(config)).await;
    create_project(&node).await;
    for (i, batch) in batches(workload, 40).iter().enumerate() {
        send_acked(&node, batch, &format!("seed={} batch {i}", config.seed)).await;
    }
    node
}

/// Restarts after the test damaged the log tail: the node must start, say
/// that it cut the tail, and have cut exactly `expected_len` bytes off.
async fn restart_after_tail_damage(
    node: &mut TestNode,
    segment: &Path,
    damaged_len: usize,
    expected_len: usize,
    what: &str,
) {
    node.restart().await;
    let stderr = plain_stderr(node);
    assert!(
        stderr.contains(CUT_MESSAGE),
        "{what}: the node must report the cut tail; stderr:\n{stderr}"
    );
    let recovery = recovery_report(node, what);
    assert_eq!(
        (recovery.log_bytes_cut as usize, file_len(segment)),
        (damaged_len - expected_len, expected_len),
        "{what}: bytes cut and segment length after the cut ({recovery:?})"
    );
    let status = node.get_raw("/v1/status").await;
    let storage = &status.body["storage"];
    assert_eq!(
        storage["log_bytes_cut"].as_u64(),
        Some(recovery.log_bytes_cut),
        "{what}: /v1/status reports the cut: {storage}"
    );
    let segment_name = segment
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a name");
    assert!(
        storage["log_cut"]
            .as_str()
            .is_some_and(|cut| cut.contains(segment_name)),
        "{what}: /v1/status says where the log was cut: {storage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_or_damaged_log_tails_are_cut_and_never_applied() {
    let seed = 0x7041_0001;
    println!("durability seed={seed}");
    let config = workload_config(seed, 50);
    let workload = generate(&config);
    let marker = marker_batch(&config, "marker");
    let mut everything = workload.distinct.clone();
    everything.extend(marker.iter().cloned());
    let mut node = node_with(&config, &workload).await;
    assert_eq!(
        send_acked(&node, &marker, &format!("seed={seed} marker")).await,
        (marker.len() as u64, 0),
        "seed={seed}: the marker batch is new"
    );
    assert_results(&node, &config, &everything, "before any damage").await;

    // (a) The last record loses its last 3 bytes, as if the crash hit its
    // write. The marker batch is that record: it disappears (in a real crash
    // it would not have been acknowledged), nothing else does.
    node.kill_9().await;
    let segment = last_segment(&node);
    let bytes = read_file(&segment);
    let (last_offset, _) = *records_of(&bytes).last().expect("records");
    write_file(&segment, &bytes[..bytes.len() - 3]);
    let what = format!("seed={seed} truncated tail");
    restart_after_tail_damage(&mut node, &segment, bytes.len() - 3, last_offset, &what).await;
    assert_results(&node, &config, &workload.distinct, &what).await;
    assert_eq!(
        send_acked(&node, &marker, &what).await,
        (marker.len() as u64, 0),
        "{what}: the cut batch was never applied, so its re-send is accepted"
    );
    assert_results(&node, &config, &everything, &format!("{what}, re-sent")).await;

    // (b) A flipped byte in the last record's payload: bad checksum, cut.
    node.kill_9().await;
    let segment = last_segment(&node);
    let mut bytes = read_file(&segment);
    let (last_offset, last_len) = *records_of(&bytes).last().expect("records");
    bytes[last_offset + RECORD_HEADER_LEN + (last_len - RECORD_HEADER_LEN) / 2] ^= 0x5a;
    write_file(&segment, &bytes);
    let what = format!("seed={seed} bad checksum in the last record");
    restart_after_tail_damage(&mut node, &segment, bytes.len(), last_offset, &what).await;
    assert_results(&node, &config, &workload.distinct, &what).await;
    assert_eq!(
        send_acked(&node, &marker, &what).await,
        (marker.len() as u64, 0),
        "{what}: the cut batch was never applied, so its re-send is accepted"
    );
    assert_results(&node, &config, &everything, &format!("{what}, re-sent")).await;

    // (c) Garbage after the last record (a torn next write): cut, and
    // every acknowledged record stays.
    for (label, garbage) in [
        ("garbage length", vec![0xab_u8; 37]),
        // A plausible length (100) with too few bytes behind it.
        (
            "short record",
            [100_u32.to_le_bytes().to_vec(), vec![7_u8; 30]].concat(),
        ),
    ] {
        node.kill_9().await;
        let segment = last_segment(&node);
        let mut bytes = read_file(&segment);
        let valid_len = bytes.len();
        bytes.extend_from_slice(&garbage);
        write_file(&segment, &bytes);
        let what = format!("seed={seed} {label} appended");
        restart_after_tail_damage(&mut node, &segment, bytes.len(), valid_len, &what).await;
        assert_results(&node, &config, &everything, &what).await;
        assert_eq!(
            send_acked(&node, &marker, &what).await,
            (0, marker.len() as u64),
            "{what}: the marker batch is still applied, its re-send is a duplicate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_before_the_tail_stops_the_node_from_starting() {
    let seed = 0x7041_0002;
    println!("durability seed={seed}");
    let config = workload_config(seed, 50);
    let workload = generate(&config);
    let mut node = node_with(&config, &workload).await;
    node.kill_9().await;

    let segment = last_segment(&node);
    let original = read_file(&segment);
    let records = records_of(&original);
    assert!(
        records.len() >= 3,
        "seed={seed}: enough records to damage one in the middle"
    );
    let (offset, len) = records[records.len() / 2];
    let flipped = offset + RECORD_HEADER_LEN + (len - RECORD_HEADER_LEN) / 2;
    let mut damaged = original.clone();
    damaged[flipped] ^= 0x01;
    write_file(&segment, &damaged);

    let failure = node
        .try_restart_with_args(Vec::new())
        .await
        .err()
        .unwrap_or_else(|| {
            panic!(
                "seed={seed}: a node with a corrupt record in the middle of its log must not start"
            )
        });
    let stderr = strip_ansi(&failure.stderr);
    assert_eq!(
        failure.status.and_then(|s| s.code()),
        Some(1),
        "seed={seed}: exit status for a corrupt log; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("corrupt") && stderr.contains(&format!("at byte {offset}")),
        "seed={seed}: the error names the corruption and where it is; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains(CUT_MESSAGE),
        "seed={seed}: damage before the tail is never cut; stderr:\n{stderr}"
    );
    assert_eq!(
        read_file(&segment),
        damaged,
        "seed={seed}: the refused log is left as it was"
    );

    // Repaired, the log is accepted again and nothing was lost.
    write_file(&segment, &original);
    node.restart().await;
    assert_results(
        &node,
        &config,
        &workload.distinct,
        &format!("seed={seed} repaired"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 3. Checkpoints under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_taken_under_load_restore_exactly() {
    let seed = 0xc4ec_0001;
    println!("durability seed={seed}");
    let config = workload_config(seed, 250);
    let workload = generate(&config);
    // Small batches, so that the load outlasts the checkpoints: they no
    // longer stop ingest, and the clients go on while one is taken.
    let batches = batches(&workload, 4);
    let total = batches.len() as u64;
    // Three checkpoints, each after an eighth of the batches more (clients
    // keep sending while one is taken), and a log tail after the last.
    let plan: Vec<(u64, Action)> = vec![(total / 8, Action::Checkpoint); 3];
    let mut node = TestNode::start_with(node_options(&config)).await;
    create_project(&node).await;
    let outcome = run_load(&mut node, seed, &batches, &plan).await;
    check_answers(seed, &batches, &outcome, workload.distinct.len());

    assert_eq!(outcome.checkpoints.len(), plan.len(), "seed={seed}");
    let mut grew = 0;
    for pair in outcome.checkpoints.windows(2) {
        let (previous, next, must_grow) = (&pair[0].answer, &pair[1].answer, pair[1].must_grow);
        assert!(
            next.position >= previous.position && (!must_grow || next.position > previous.position),
            "seed={seed}: checkpoint positions (must grow: {must_grow}): {previous:?} then {next:?}"
        );
        assert!(
            next.visitors >= previous.visitors,
            "seed={seed}: with the clock fixed no visitor leaves the state: {previous:?} then {next:?}"
        );
        grew += usize::from(must_grow);
    }
    assert!(
        grew >= 1,
        "seed={seed}: batches were acknowledged between some checkpoints: {:?}",
        outcome.checkpoints
    );
    for CheckpointTaken { answer, .. } in &outcome.checkpoints {
        assert!(
            answer.position > 0 && answer.bytes > 0 && answer.visitors > 0,
            "seed={seed}: {answer:?}"
        );
    }
    let removed: u64 = outcome
        .checkpoints
        .iter()
        .map(|c| c.answer.log_segments_removed)
        .sum();
    let last_taken = outcome.checkpoints.last().expect("checkpoints").clone();
    let last = &last_taken.answer;
    // Whatever was removed, the log still starts at or before the record
    // after the last checkpoint (the restart below replays from there).
    let first_segment = segment_files(&node)[0].clone();
    let first_position: u64 = first_segment
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("log-"))
        .and_then(|n| n.strip_suffix(".seg"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("segment name {}", first_segment.display()));
    assert!(
        first_position <= last.position + 1,
        "seed={seed}: the log keeps every record after the last checkpoint ({removed} segments removed, first segment {first_position}, checkpoint {})",
        last.position
    );
    assert_results(
        &node,
        &config,
        &workload.distinct,
        &format!("seed={seed} under load"),
    )
    .await;

    node.kill_9().await;
    node.restart().await;
    let what = format!("seed={seed} after SIGKILL following checkpoints under load");
    let recovery = recovery_report(&node, &what);
    assert!(
        recovery.checkpoint_position >= last.position,
        "{what}: recovery starts from the last checkpoint ({}): {recovery:?}",
        last.position
    );
    println!("{what}: {recovery:?}");
    // Batches sent after the last checkpoint answered are in the log tail.
    if last_taken.acknowledged_when_answered + (CLIENTS as u64) < total {
        assert!(
            recovery.records_replayed > 0,
            "{what}: batches were acknowledged after the last checkpoint, so recovery replays a log tail: {recovery:?}"
        );
    }
    assert_results(&node, &config, &workload.distinct, &what).await;
    assert_all_duplicates(&node, seed, &workload.distinct, "re-send after recovery").await;
}

// ---------------------------------------------------------------------------
// 4. Duplicate retries across restarts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_events_are_duplicates_after_restarts() {
    let seed = 0xd0b1_0001;
    println!("durability seed={seed}");
    let config = workload_config(seed, 60);
    let workload = generate(&config);
    let distinct = &workload.distinct;
    let third = distinct.len() / 3;
    let (a, b, c) = (
        &distinct[..third],
        &distinct[third..2 * third],
        &distinct[2 * third..],
    );
    let mut node = TestNode::start_with(node_options(&config)).await;
    create_project(&node).await;

    // A goes into a checkpoint, B only into the log after it.
    let what = format!("seed={seed}");
    assert_eq!(send_acked(&node, a, &what).await, (a.len() as u64, 0));
    let first_checkpoint = checkpoint(&node, &what).await;
    assert_eq!(send_acked(&node, b, &what).await, (b.len() as u64, 0));
    node.kill_9().await;
    node.restart().await;
    let recovery = recovery_report(&node, &what);
    assert!(
        recovery.checkpoint_position == first_checkpoint.position && recovery.records_replayed > 0,
        "{what}: A comes from the checkpoint at {}, B from the log: {recovery:?}",
        first_checkpoint.position
    );
    let a_and_b = [a, b].concat();
    assert_results(
        &node,
        &config,
        &a_and_b,
        &format!("{what} A in checkpoint, B in log"),
    )
    .await;
    assert_eq!(
        send_acked(&node, a, &what).await,
        (0, a.len() as u64),
        "{what}: A re-sent, first copy in the checkpoint"
    );
    assert_eq!(
        send_acked(&node, b, &what).await,
        (0, b.len() as u64),
        "{what}: B re-sent, first copy in the replayed log"
    );
    assert_results(
        &node,
        &config,
        &a_and_b,
        &format!("{what} after re-sending A and B"),
    )
    .await;

    // C mixed with a part of A: only C counts.
    let mixed = [c, &a[..a.len().min(25)]].concat();
    assert_eq!(
        send_acked(&node, &mixed, &what).await,
        (c.len() as u64, a.len().min(25) as u64),
        "{what}: C is new, the part of A is not"
    );
    node.kill_9().await;
    node.restart().await;
    for (name, part) in [("A", a), ("B", b), ("C", c)] {
        assert_eq!(
            send_acked(&node, part, &what).await,
            (0, part.len() as u64),
            "{what}: {name} re-sent after a second restart"
        );
    }
    assert_results(&node, &config, distinct, &format!("{what} A, B and C")).await;

    // A checkpoint taken by a node that recovered from the log, then an
    // empty log tail.
    let second_checkpoint = checkpoint(&node, &what).await;
    assert!(
        second_checkpoint.position > first_checkpoint.position,
        "{what}: {second_checkpoint:?}"
    );
    node.kill_9().await;
    node.restart().await;
    let recovery = recovery_report(&node, &what);
    assert_eq!(
        (recovery.checkpoint_position, recovery.records_replayed),
        (second_checkpoint.position, 0),
        "{what}: everything comes from the second checkpoint"
    );
    assert_all_duplicates(&node, seed, distinct, "re-send, all in the checkpoint").await;
    assert_results(
        &node,
        &config,
        distinct,
        &format!("{what} from the second checkpoint"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 5. The disk-error path.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_log_sync_stops_ingest_loudly_and_keeps_reads() {
    let seed = 0xd15c_0001;
    println!("durability seed={seed}");
    let config = workload_config(seed, 60);
    let workload = generate(&config);
    let batches = batches(&workload, 20);
    // Enough successful syncs for the segment header, the project and a few
    // batches (each batch is one group, one sync); the loop below finds
    // where it fails.
    let syncs_before_failure = 8;
    let fault = vec![
        "--fault-log-sync-after".to_string(),
        syncs_before_failure.to_string(),
    ];
    let mut node = TestNode::start_with_args(node_options(&config), fault).await;
    create_project(&node).await;

    let (acknowledged, failed_batch) = send_until_storage_fails(&node, &batches, seed).await;
    let failed = failed_batch.unwrap_or_else(|| {
        panic!("seed={seed}: no batch failed with the log's fsync failing after {syncs_before_failure} syncs")
    });
    assert!(
        failed > 0,
        "seed={seed}: some batches were acknowledged before the failure"
    );
    println!("seed={seed}: {failed} batches acknowledged, batch {failed} failed");

    // Every later batch fails the same way: new events, the failed batch
    // again, and an acknowledged one again.
    let later: Vec<&Vec<Event>> = batches[failed..]
        .iter()
        .take(4)
        .chain(std::iter::once(&batches[0]))
        .collect();
    for batch in later {
        let raw = node.post_raw("/v1/events", batch_body(batch)).await;
        assert_eq!(
            (raw.status, raw.error_code()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
            "seed={seed}: ingest after the log failed: {}",
            raw.text
        );
    }
    // Nothing durable can be changed either: project creation is logged.
    let raw = node
        .post_raw(
            "/v1/projects",
            serde_json::json!({"name": "after-failure"}).to_string(),
        )
        .await;
    assert_eq!(
        (raw.status, raw.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
        "seed={seed}: project creation after the log failed: {}",
        raw.text
    );
    // Not ready, and saying why; status and metrics say it too.
    let ready = node.get_anonymous("/v1/ready").await;
    assert_eq!(
        (ready.status, ready.body["reason"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_failed")),
        "seed={seed}: /v1/ready after the log failed: {}",
        ready.text
    );
    let status = node.get_raw("/v1/status").await;
    assert!(
        status.body["storage"]["failure"].is_string(),
        "seed={seed}: /v1/status names the failure: {}",
        status.text
    );
    let metrics = node.get_raw("/metrics").await;
    assert!(
        metrics
            .text
            .lines()
            .any(|line| line == "sessiondb_storage_failed 1"),
        "seed={seed}: /metrics:\n{}",
        metrics.text
    );
    // Reads keep working and see exactly the acknowledged batches.
    for path in ["/v1/health", "/v1/status", "/v1/projects"] {
        let raw = node.get_raw(path).await;
        assert_eq!(
            raw.status,
            StatusCode::OK,
            "seed={seed}: GET {path}: {}",
            raw.text
        );
    }
    assert_results(
        &node,
        &config,
        &acknowledged,
        &format!("seed={seed} with the log failed"),
    )
    .await;

    // A restart without the fault: every acknowledged event is there; the
    // failed batch is there as a whole or not at all (the log tries to cut
    // it; if it stayed, it was never acknowledged and its retry is deduped).
    node.kill_9().await;
    node.restart_with_args(Vec::new()).await;
    let with_failed = [acknowledged.as_slice(), batches[failed].as_slice()].concat();
    let without = results_problems(&node, &config, &acknowledged).await;
    let with = results_problems(&node, &config, &with_failed).await;
    assert!(
        without.is_empty() || with.is_empty(),
        "seed={seed} after a restart without the fault: results match neither the acknowledged batches ({} problems, first: {:?}) nor those plus the failed one ({} problems, first: {:?})",
        without.len(),
        without.first(),
        with.len(),
        with.first()
    );
    println!(
        "seed={seed}: after the restart the failed batch is {}",
        if without.is_empty() {
            "absent"
        } else {
            "present"
        }
    );
    let raw = node.get_raw("/v1/projects/after-failure").await;
    assert_eq!(
        raw.status,
        StatusCode::NOT_FOUND,
        "seed={seed}: a project whose creation failed does not exist after a restart: {}",
        raw.text
    );

    // Ingest works again; retrying what failed completes the data.
    for (index, batch) in batches.iter().enumerate().skip(failed) {
        send_acked(&node, batch, &format!("seed={seed} retry of batch {index}")).await;
    }
    assert_all_duplicates(&node, seed, &workload.distinct, "re-send after the retries").await;
    assert_results(
        &node,
        &config,
        &workload.distinct,
        &format!("seed={seed} after the retries"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 6. A damaged newest checkpoint: fall back to the one kept back.

/// The checkpoint files of the node, oldest first.
fn checkpoint_files(node: &TestNode) -> Vec<PathBuf> {
    let dir = node.node_data_dir().join("checkpoints");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "sdbc")
        })
        .collect();
    files.sort();
    files
}

#[derive(Debug, Clone, Copy)]
enum CheckpointDamage {
    Truncated,
    ByteFlipped,
    Deleted,
}

fn damage_checkpoint(file: &Path, damage: CheckpointDamage) {
    match damage {
        CheckpointDamage::Truncated => {
            let bytes = read_file(file);
            write_file(file, &bytes[..bytes.len() / 2]);
        }
        CheckpointDamage::ByteFlipped => {
            let mut bytes = read_file(file);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            write_file(file, &bytes);
        }
        CheckpointDamage::Deleted => {
            std::fs::remove_file(file).unwrap_or_else(|e| panic!("remove {}: {e}", file.display()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_and_loses_nothing() {
    let seed = 0xc4ec_0b4c;
    println!("durability seed={seed}");
    let config = workload_config(seed, 120);
    let workload = generate(&config);
    let batches = batches(&workload, 10);
    let damages = [
        CheckpointDamage::Truncated,
        CheckpointDamage::ByteFlipped,
        CheckpointDamage::Deleted,
    ];
    // Per damage: batches, a checkpoint, batches, the checkpoint that gets
    // damaged, batches (the log tail).
    let per_stretch = batches.len() / (damages.len() * 3);
    assert!(per_stretch >= 2, "seed={seed}: {} batches", batches.len());
    let mut stretches = batches.chunks(per_stretch);
    let mut node = TestNode::start_with(node_options(&config)).await;
    create_project(&node).await;
    let mut acknowledged: Vec<Event> = Vec::new();
    for (round, damage) in damages.into_iter().enumerate() {
        let what = format!("seed={seed} round {round} ({damage:?})");
        let mut send_stretch = async |acknowledged: &mut Vec<Event>| {
            for batch in stretches.next().expect("a stretch of batches") {
                send_acked(&node, batch, &what).await;
                acknowledged.extend(batch.iter().cloned());
            }
        };
        send_stretch(&mut acknowledged).await;
        let kept_back = checkpoint(&node, &what).await;
        send_stretch(&mut acknowledged).await;
        let newest = checkpoint(&node, &what).await;
        assert!(newest.position > kept_back.position, "{what}");
        send_stretch(&mut acknowledged).await;

        node.kill_9().await;
        let files = checkpoint_files(&node);
        assert_eq!(files.len(), 2, "{what}: two checkpoints on disk: {files:?}");
        damage_checkpoint(files.last().expect("the newest"), damage);
        node.restart().await;

        let stderr = plain_stderr(&node);
        assert!(
            stderr.contains("checkpoint is damaged; falling back"),
            "{what}: the fallback is logged; stderr:\n{stderr}"
        );
        let recovery = recovery_report(&node, &what);
        assert_eq!(
            recovery.checkpoint_position, kept_back.position,
            "{what}: recovery starts from the checkpoint kept back ({recovery:?})"
        );
        let status = node.get_raw("/v1/status").await;
        assert_eq!(status.status, StatusCode::OK, "{what}: {}", status.text);
        let storage = &status.body["storage"];
        assert_eq!(
            storage["recovered_checkpoint_position"].as_u64(),
            Some(kept_back.position),
            "{what}: {storage}"
        );
        assert_eq!(
            storage["checkpoints_skipped"].as_array().map(Vec::len),
            Some(1),
            "{what}: the damaged checkpoint is reported: {storage}"
        );
        let metrics = node.get_raw("/metrics").await;
        assert!(
            metrics
                .text
                .lines()
                .any(|line| line == "sessiondb_recovery_checkpoints_skipped 1"),
            "{what}: the metric counts the skipped checkpoint:\n{}",
            metrics.text
        );
        // Every acknowledged event is there, none twice.
        assert_results(&node, &config, &acknowledged, &what).await;
        let distinct_acknowledged = acknowledged.len();
        let mut resent = 0;
        for batch in acknowledged.chunks(50) {
            let (accepted, duplicates) = send_acked(&node, batch, &what).await;
            assert_eq!(
                accepted, 0,
                "{what}: every acknowledged event is still applied"
            );
            resent += duplicates as usize;
        }
        assert_eq!(resent, distinct_acknowledged, "{what}");
    }
}

// ---------------------------------------------------------------------------
// 7. A real full file system.

/// A tmpfs mounted for one test, lazily unmounted on drop (the node may
/// still be exiting).
struct Tmpfs {
    path: PathBuf,
}

/// Runs a command that must succeed; panics with its output otherwise.
fn run_checked(program: &str, arguments: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) on `path`.
    /// This test needs root (CI runs as root); it fails, never skips,
    /// without it.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let uid = run_checked("id", &["-u"]);
        assert_eq!(
            uid.trim(),
            "0",
            "the full-disk test mounts a tmpfs and must run as root (uid {})",
            uid.trim()
        );
        let path_text = path.to_str().expect("a UTF-8 path");
        run_checked(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path_text,
            ],
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn resize(&self, size: &str) {
        let path_text = self.path.to_str().expect("a UTF-8 path");
        run_checked("mount", &["-o", &format!("remount,size={size}"), path_text]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_log_loudly_and_loses_nothing_acknowledged() {
    let seed = 0xf011_0001;
    println!("durability seed={seed}");
    let config = workload_config(seed, 3_000);
    let workload = generate(&config);
    let batches = batches(&workload, 100);
    let mut tmpfs = None;
    let mut node =
        TestNode::start_prepared(node_options(&config), Vec::new(), Vec::new(), |path| {
            tmpfs = Some(Tmpfs::mount(path, "2m"));
        })
        .await;
    let tmpfs = tmpfs.expect("mounted");
    create_project(&node).await;

    let (acknowledged, failed) = send_until_storage_fails(&node, &batches, seed).await;
    let failed = failed.unwrap_or_else(|| {
        panic!(
            "seed={seed}: {} batches fit on a 2 MiB file system; the test needs a full one",
            batches.len()
        )
    });
    println!(
        "seed={seed}: {failed} batches ({} events) acknowledged before the disk was full",
        acknowledged.len()
    );
    assert!(failed > 0, "seed={seed}: some batches fit");

    let ready = node.get_anonymous("/v1/ready").await;
    assert_eq!(
        (ready.status, ready.body["reason"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_failed")),
        "seed={seed}: /v1/ready on a full disk: {}",
        ready.text
    );
    let raw = node
        .post_raw("/v1/events", batch_body(&batches[failed + 1]))
        .await;
    assert_eq!(
        (raw.status, raw.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
        "seed={seed}: ingest after the disk filled: {}",
        raw.text
    );
    assert_results(&node, &config, &acknowledged, "queries on a full disk").await;

    // Space is freed; the node comes back on its own, with exactly what was
    // acknowledged: nothing of the failed batch.
    node.kill_9().await;
    tmpfs.resize("64m");
    node.restart().await;
    let what = format!("seed={seed} restarted after the disk was freed");
    assert_results(&node, &config, &acknowledged, &what).await;
    let status = node.get_raw("/v1/status").await;
    assert!(
        status.body["storage"].get("failure").is_none(),
        "{what}: {}",
        status.text
    );
    // The workload repeats some events (client retries): those of the
    // failed batch acknowledged earlier, or twice in it, are duplicates.
    let mut seen: std::collections::HashSet<&str> =
        acknowledged.iter().map(|event| event.id.as_str()).collect();
    let new_in_failed = batches[failed]
        .iter()
        .filter(|event| seen.insert(event.id.as_str()))
        .count() as u64;
    let (accepted, duplicates) = send_acked(&node, &batches[failed], &what).await;
    assert_eq!(
        (accepted, duplicates),
        (new_in_failed, batches[failed].len() as u64 - new_in_failed),
        "{what}: nothing of the batch that failed was applied"
    );
    for batch in acknowledged.chunks(100) {
        let (accepted, _) = send_acked(&node, batch, &what).await;
        assert_eq!(
            accepted, 0,
            "{what}: acknowledged events are all still there"
        );
    }
    node.kill_9().await;
    drop(tmpfs);
}

/// Sends `batches` in order until one is refused `503 storage_unavailable`:
/// the events acknowledged before it, and its index (`None`: none failed).
/// Every acknowledged batch must be accepted whole; any other answer fails.
async fn send_until_storage_fails(
    node: &TestNode,
    batches: &[Vec<Event>],
    seed: u64,
) -> (Vec<Event>, Option<usize>) {
    let mut acknowledged: Vec<Event> = Vec::new();
    for (index, batch) in batches.iter().enumerate() {
        let raw = node.post_raw("/v1/events", batch_body(batch)).await;
        match raw.status {
            StatusCode::OK => {
                let answer: IngestResponse =
                    serde_json::from_value(raw.body).expect("an IngestResponse");
                assert!(answer.rejected.is_empty(), "seed={seed}: {answer:?}");
                acknowledged.extend(batch.iter().cloned());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    raw.error_code(),
                    Some("storage_unavailable"),
                    "seed={seed}: batch {index}: {}",
                    raw.text
                );
                return (acknowledged, Some(index));
            }
            other => panic!(
                "seed={seed}: batch {index}: unexpected {other} {}; stderr:\n{}",
                raw.text,
                node.stderr_tail()
            ),
        }
    }
    (acknowledged, None)
}
