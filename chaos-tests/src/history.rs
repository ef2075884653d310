//! The recorded history of a run: every client operation (invoke, then ok,
//! fail or unknown), every ownership observation, every fault and every
//! shard move, each stamped with a monotonic time (milliseconds since the
//! run started). The checkers (`check`) read only this and the final read.

use crate::api::FailCode;
use sessiondb_protocol::RejectCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Milliseconds since the run started, from a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    started: Instant,
}

impl RunClock {
    pub fn start() -> RunClock {
        RunClock {
            started: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// How an ingest operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// The node answered: every event not listed in `rejected` was applied
    /// (accepted now or a duplicate of an applied one).
    Ok {
        /// (position in the batch, reason).
        rejected: Vec<(usize, RejectCode)>,
    },
    /// The node refused the batch or could not be reached: nothing applied.
    Fail { code: FailCode },
    /// No answer: the batch may or may not have been applied.
    Unknown { message: String },
}

/// One ingest operation: a batch of events sent by one client to one node.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub node: u64,
    /// Indices into the run's table of distinct events, in batch order.
    pub events: Vec<usize>,
    /// The shard of every event of the batch (same order).
    pub shards: Vec<u32>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: OpOutcome,
}

/// One node's answer to `GET /v1/cluster`: owner and epoch per shard.
#[derive(Debug, Clone)]
pub struct Observation {
    pub at_ms: u64,
    pub observer: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// (owner, epoch, moving_to) by shard.
    pub shards: Vec<(u64, u64, Option<u64>)>,
}

/// A fault as it was carried out.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// The planned fault (`nemesis::Fault`'s description).
    pub planned: String,
    /// The node(s) it hit, resolved when it started.
    pub targets: Vec<u64>,
    /// Nodes on the minority side of a partition (they may stop serving).
    pub minority: Vec<u64>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Whether the harness verified that the fault took effect, and how.
    pub applied: bool,
    pub evidence: String,
}

/// A shard move or rebalance asked of the cluster during the run.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    pub what: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: String,
}

#[derive(Debug, Default)]
struct Records {
    ops: Vec<Op>,
    observations: Vec<Observation>,
    faults: Vec<FaultRecord>,
    moves: Vec<MoveRecord>,
}

/// The shared, append-only history of one run.
#[derive(Debug, Clone)]
pub struct History {
    pub clock: RunClock,
    records: Arc<Mutex<Records>>,
}

impl History {
    pub fn new() -> History {
        History {
            clock: RunClock::start(),
            records: Arc::new(Mutex::new(Records::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().expect("history lock is never poisoned")
    }

    /// One line on stderr: where the run is, so a slow or stuck run shows
    /// its phase (cargo test prints it for failing tests).
    pub fn progress(&self, message: &str) {
        eprintln!("[chaos +{} ms] {message}", self.clock.now_ms());
    }

    pub fn record_op(&self, op: Op) {
        self.lock().ops.push(op);
    }

    pub fn record_observation(&self, observation: Observation) {
        self.lock().observations.push(observation);
    }

    pub fn record_fault(&self, fault: FaultRecord) {
        self.lock().faults.push(fault);
    }

    pub fn record_move(&self, record: MoveRecord) {
        self.lock().moves.push(record);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.lock().observations.clone()
    }

    pub fn faults(&self) -> Vec<FaultRecord> {
        self.lock().faults.clone()
    }

    pub fn moves(&self) -> Vec<MoveRecord> {
        self.lock().moves.clone()
    }

    /// Writes the whole history, one record a line, to `path` (for the
    /// post-mortem of a red run); `events` names each event index.
    pub fn dump(&self, path: &std::path::Path, events: &[String]) -> std::io::Result<()> {
        use std::io::Write;
        let records = self.lock();
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for fault in &records.faults {
            writeln!(out, "fault {fault:?}")?;
        }
        for record in &records.moves {
            writeln!(out, "move {record:?}")?;
        }
        for observation in &records.observations {
            writeln!(out, "observation {observation:?}")?;
        }
        for op in &records.ops {
            let names: Vec<&str> = op.events.iter().map(|&i| events[i].as_str()).collect();
            writeln!(
                out,
                "op client={} node={} invoke={} complete={} outcome={:?} shards={:?} events={names:?}",
                op.client, op.node, op.invoke_ms, op.complete_ms, op.outcome, op.shards
            )?;
        }
        out.flush()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
