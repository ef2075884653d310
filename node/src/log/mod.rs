//! The durable ingest log: every accepted ingest batch is appended here and
//! synced to disk before the node acknowledges it (acknowledged means on
//! disk; `docs/durability.md`).
//!
//! One log per node. Records carry the shard they belong to and an opaque
//! payload; the caller encodes and decodes events, the log never looks
//! inside. (The replicated log, `crate::replication`, runs a second `Log`
//! of its own and puts its Raft group's id in the shard field.)
//!
//! # On disk
//!
//! A directory of segment files, `log-<first_position:020>.seg`, where
//! `first_position` is the position of the segment's first record (zero
//! padding makes name order position order). The writer appends to the
//! last segment and starts a new one before a record would take the segment
//! past `segment_bytes_max`. All integers are little-endian.
//!
//! ```text
//! segment header, 24 bytes:
//!   magic "SDB-LOG\0" (8) | version = 1 (u32) | first_position (u64)
//!   | crc32 of the previous 20 bytes (u32)
//! record, 20 bytes + payload:
//!   length (u32) = 12 + payload length
//!   crc32 (u32) over position, shard and payload
//!   position (u64) | shard (u32) | payload (length - 12 bytes)
//! ```
//!
//! Positions start at 1 and go up by exactly 1 from record to record and
//! from segment to segment; a checkpoint names the last position it
//! includes. The checksum is CRC-32 (IEEE, `crc32fast`).
//!
//! # Write path: group commit
//!
//! [`Log::append`] and [`Log::append_batch`] queue a request and await its
//! answer. One writer thread takes the first queued request, then every
//! further one already queued (up to `group_records_max` records and
//! `group_bytes_max` bytes, waiting at most `group_wait_us` for more), encodes
//! them into one buffer, writes it and calls `fdatasync` once; then it
//! answers every waiter with its positions. While one group syncs the next
//! one queues, so batching grows with load without a timer
//! (`group_wait_us = 0`). A batch is never split across groups. The queue
//! holds at most `queue_records_max` records and `queue_bytes_max` bytes
//! (queued plus being written); an append waits for room (backpressure).
//! Dropping an append future does not take the record back.
//!
//! [`Log::enqueue_with_callback`] is the same path for a caller that must
//! not wait: the writer calls its callback, in log order, with the
//! positions and the byte offset of every record, and
//! [`Log::record_reader`] reads a record back at such a location (checking
//! its frame, position and checksum) without streaming its segment.
//!
//! A segment is created with its header synced and the directory synced
//! before a record goes into it, and a full segment is synced before the
//! next one is created; so only the last segment can have a torn tail.
//!
//! # Opening and recovery
//!
//! [`Log::open`] reads every segment in order and checks headers,
//! checksums and positions. Damage at the end of the last segment — a
//! partial record, or a record whose checksum or length is wrong with no
//! valid record after it — is what a crash during a write leaves: the file
//! is cut back to the last valid record and the cut is reported in the
//! [`RecoveryReport`]. Any other damage (in a segment before the last, or
//! followed by a valid record, or a well-formed record out of order) is
//! [`LogError::Corrupt`]; it is never skipped. [`Log::replay_after`] then
//! streams the records after a checkpoint position.
//!
//! Known limit: after a power loss, a filesystem that wrote an unsynced
//! group's pages out of order can leave a hole followed by later records of
//! that same (unacknowledged) group; records carry no group boundary, so
//! this is reported as `Corrupt` rather than cut.
//!
//! # Disk errors
//!
//! If a write or sync fails, the log is failed for good: that group's
//! waiters get [`LogError::Io`], every later append gets
//! [`LogError::Failed`] at once, and the sync is never retried (after a
//! failed `fsync` the kernel may have dropped the dirty pages, and a retry
//! can report success for data that is gone). The writer tries once to cut
//! the failed group off the file (not synced), so that a restart normally
//! replays only acknowledged records; if the cut does not happen, those
//! records were still never acknowledged, the client retries them and
//! deduplication keeps them from counting twice. Reads and replay do not go
//! through the writer and keep working. [`FaultPlan`] injects such failures
//! in tests.
//!
//! Architecture invariant: this module knows nothing of events, shards'
//! owners or checkpoints; it stores numbered, checksummed byte strings.
//! One process per directory: the directory is not locked.

mod fault;
mod format;
mod read;
mod recovery;
mod replay;
mod segment;
mod writer;

#[cfg(test)]
mod read_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use fault::FaultPlan;
pub use format::Damage;
pub use read::RecordReader;
pub use replay::Replay;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Number of a record: 1 for the first record ever, then +1 per record.
/// 0 means "before every record".
pub type Position = u64;

pub const SEGMENT_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
pub const RECORD_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
pub const GROUP_RECORDS_MAX_DEFAULT: usize = 16 * 1024;
pub const GROUP_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
pub const GROUP_WAIT_US_DEFAULT: u64 = 0;
pub const QUEUE_RECORDS_MAX_DEFAULT: usize = 64 * 1024;
pub const QUEUE_BYTES_MAX_DEFAULT: usize = 128 * 1024 * 1024;

/// How the log is sized. `LogConfig::default()` holds the defaults above.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A new segment starts before a record would take the current one past
    /// this size (a segment holds at least one record).
    pub segment_bytes_max: usize,
    /// Largest payload of one record.
    pub record_bytes_max: usize,
    /// Most records written under one sync; also the largest batch.
    pub group_records_max: usize,
    /// Most bytes (framed records) written under one sync; also the largest
    /// batch.
    pub group_bytes_max: usize,
    /// How long the writer may wait for more appends before it syncs a
    /// group that is not full. 0: sync as soon as the previous sync is done.
    pub group_wait_us: u64,
    /// Most records queued or being written; appends wait for room.
    pub queue_records_max: usize,
    /// Most bytes queued or being written; appends wait for room.
    pub queue_bytes_max: usize,
    /// Test hook: fail the Nth write or sync (see [`FaultPlan`]).
    pub fault: Option<Arc<FaultPlan>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            group_records_max: GROUP_RECORDS_MAX_DEFAULT,
            group_bytes_max: GROUP_BYTES_MAX_DEFAULT,
            group_wait_us: GROUP_WAIT_US_DEFAULT,
            queue_records_max: QUEUE_RECORDS_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            fault: None,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), LogError> {
        let record_max = format::record_len(self.record_bytes_max);
        let permits_max = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        let checks: [(&'static str, bool, &str); 7] = [
            (
                "record_bytes_max",
                self.record_bytes_max <= u32::MAX as usize - format::RECORD_FIELDS_LEN,
                "must fit the u32 length field",
            ),
            (
                "segment_bytes_max",
                format::SEGMENT_HEADER_LEN + record_max <= self.segment_bytes_max,
                "must hold the header and one largest record",
            ),
            (
                "group_bytes_max",
                record_max <= self.group_bytes_max && self.group_bytes_max <= u32::MAX as usize,
                "must hold one largest record and fit in u32",
            ),
            (
                "group_records_max",
                self.group_records_max >= 1 && self.group_records_max <= u32::MAX as usize,
                "must be at least 1 and fit in u32",
            ),
            (
                "queue_records_max",
                self.group_records_max <= self.queue_records_max,
                "must be at least group_records_max",
            ),
            (
                "queue_bytes_max",
                self.group_bytes_max <= self.queue_bytes_max,
                "must be at least group_bytes_max",
            ),
            (
                "queue_records_max",
                self.queue_records_max <= permits_max && self.queue_bytes_max <= permits_max,
                "queue bounds must fit a semaphore and u32",
            ),
        ];
        match checks.into_iter().find(|(_, valid, _)| !valid) {
            Some((setting, _, reason)) => Err(LogError::InvalidConfig {
                setting,
                reason: reason.to_string(),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error: {operation} {path:?}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or sync failed; the log accepts no appends.
    #[error("the log failed earlier and accepts no appends: {cause}")]
    Failed { cause: String },
    #[error("log segment {segment:?} is corrupt at byte {offset}: {damage}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        damage: Damage,
    },
    #[error(
        "cannot replay after position {checkpoint}: the log holds positions \
         {first_position}..={last_position}"
    )]
    Unavailable {
        checkpoint: Position,
        first_position: Position,
        last_position: Position,
    },
    /// A read by location asked for a position the log does not hold.
    #[error(
        "no record at position {position}: the log holds positions \
         {first_position}..={last_position}"
    )]
    RecordMissing {
        position: Position,
        first_position: Position,
        last_position: Position,
    },
    #[error("record payload of {bytes} bytes is over record_bytes_max ({bytes_max})")]
    RecordTooLarge { bytes: usize, bytes_max: usize },
    #[error(
        "batch of {records} records / {bytes} bytes is over the group bounds \
         ({records_max} records, {bytes_max} bytes)"
    )]
    BatchTooLarge {
        records: usize,
        bytes: usize,
        records_max: usize,
        bytes_max: usize,
    },
    #[error("empty batch")]
    EmptyBatch,
    #[error("invalid log setting {setting}: {reason}")]
    InvalidConfig {
        setting: &'static str,
        reason: String,
    },
    /// The writer thread is gone (it panicked); nothing is acknowledged.
    #[error("the log writer has stopped")]
    Closed,
}

impl LogError {
    fn io(operation: &'static str, path: &Path, source: std::io::Error) -> LogError {
        LogError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The same error for another waiter of a failed group (`io::Error` is
    /// not `Clone`).
    fn duplicate(&self) -> LogError {
        match self {
            LogError::Io {
                operation,
                path,
                source,
            } => LogError::Io {
                operation,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => LogError::Failed {
                cause: other.to_string(),
            },
        }
    }
}

/// Bytes a record with a payload of `payload_len` bytes takes on disk, the
/// measure of `group_bytes_max` and `queue_bytes_max`.
pub fn record_bytes(payload_len: usize) -> usize {
    format::record_len(payload_len)
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    pub shard: u32,
    pub payload: Vec<u8>,
}

/// Where the records of an [`Log::enqueue_with_callback`] batch landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub positions: Range<Position>,
    /// Byte offset of each record in its segment, in position order; with
    /// the position it is what [`RecordReader::read_at`] needs.
    pub offsets: Vec<u64>,
}

/// Called once on the writer thread when a batch is synced (or failed).
/// It runs before the next group is written, so it must be short and must
/// never wait on the log.
pub type AppendCallback = Box<dyn FnOnce(Result<Appended, LogError>) + Send>;

/// What [`Log::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files, including the active one.
    pub segments: usize,
    /// Valid records kept.
    pub records: u64,
    /// Position of the oldest record kept, if any.
    pub first_position: Option<Position>,
    /// Position of the newest record kept; 0 for a log that never held one.
    pub last_position: Position,
    /// Bytes cut off the end of the last segment.
    pub truncated_bytes: u64,
    /// Where and why the last segment was cut.
    pub cut: Option<TailCut>,
}

/// A torn tail that [`Log::open`] cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub segment: PathBuf,
    pub offset: u64,
    pub damage: Damage,
}

/// What [`Log::truncate_before`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateReport {
    pub segments_removed: usize,
    pub bytes_removed: u64,
}

/// Counters since [`Log::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Appends answered with positions (an `append_batch` counts once).
    pub appends: u64,
    pub records: u64,
    /// Record bytes written (framing included, headers not).
    pub bytes: u64,
    /// Groups committed, each with one sync (two when a segment filled up).
    pub groups: u64,
    /// `fdatasync` calls on record data.
    pub fsyncs: u64,
    pub fsync_time_total: Duration,
    pub group_records_last: u64,
    pub group_records_max: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    groups: AtomicU64,
    fsyncs: AtomicU64,
    fsync_ns_total: AtomicU64,
    group_records_last: AtomicU64,
    group_records_max: AtomicU64,
    /// Each record-data `fdatasync`, for `/metrics`.
    fsync_seconds: crate::metrics::Histogram,
}

impl Counters {
    fn add_group(&self, appends: u64, records: u64) {
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.group_records_last.store(records, Ordering::Relaxed);
        self.group_records_max.fetch_max(records, Ordering::Relaxed);
    }

    fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn add_fsync(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_ns_total.fetch_add(nanos, Ordering::Relaxed);
        self.fsync_seconds.observe(elapsed);
    }

    fn snapshot(&self) -> LogStats {
        LogStats {
            appends: self.appends.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            fsync_time_total: Duration::from_nanos(self.fsync_ns_total.load(Ordering::Relaxed)),
            group_records_last: self.group_records_last.load(Ordering::Relaxed),
            group_records_max: self.group_records_max.load(Ordering::Relaxed),
        }
    }
}

/// State the writer publishes and callers read.
#[derive(Debug)]
struct SharedState {
    /// First positions of the segments on disk, oldest first; the last is
    /// the one being appended to.
    segments: Vec<Position>,
    /// Last synced (acknowledged or acknowledgeable) position.
    last_position: Position,
    /// Last position handed to the writer: the writer numbers requests in
    /// the order they are sent, so this is the position the last record
    /// queued so far will get (`Log::enqueued_position`).
    enqueued_position: Position,
    /// Why the log failed, once it has.
    failure: Option<String>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: LogConfig,
    /// Replay's bound on a payload: `record_bytes_max`, or the largest
    /// payload found at open if the setting was lowered since.
    replay_payload_bytes_max: usize,
    state: Mutex<SharedState>,
    counters: Counters,
    /// The last synced position, for waiters (`Log::wait_synced`); also
    /// signalled when the log fails.
    synced: tokio::sync::watch::Sender<Position>,
}

/// A poisoned lock only means a panic elsewhere; the state stays coherent
/// because every update is a single assignment.
fn lock(state: &Mutex<SharedState>) -> MutexGuard<'_, SharedState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The log of one node. Share it with `Arc<Log>`; every method takes
/// `&self`. Dropping it lets the writer finish the queue and joins it.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<writer::Request>>,
    writer: Option<JoinHandle<()>>,
    record_slots: Arc<Semaphore>,
    byte_slots: Arc<Semaphore>,
}

/// A batch that has its place in the log and awaits its sync.
#[derive(Debug)]
pub struct PendingAppend {
    answer: tokio::sync::oneshot::Receiver<Result<Range<Position>, LogError>>,
}

impl PendingAppend {
    /// Completes when the batch is on disk (or the log failed).
    pub async fn durable(self) -> Result<Range<Position>, LogError> {
        self.answer.await.map_err(|_| LogError::Closed)?
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, validates it, cuts a torn tail,
    /// and starts the writer. Blocking; call it before serving.
    pub fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(&dir, &config)?;
        let shared = Arc::new(Shared {
            dir,
            replay_payload_bytes_max: config.record_bytes_max.max(recovered.payload_bytes_max),
            state: Mutex::new(SharedState {
                segments: recovered.segments,
                last_position: recovered.last_position,
                enqueued_position: recovered.last_position,
                failure: None,
            }),
            counters: Counters::default(),
            synced: tokio::sync::watch::Sender::new(recovered.last_position),
            config,
        });
        let (sender, receiver) = mpsc::channel();
        let writer = writer::Writer::new(
            Arc::clone(&shared),
            receiver,
            recovered.active,
            recovered.last_position + 1,
        );
        let handle = std::thread::Builder::new()
            .name("sessiondb-log-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|source| LogError::io("start writer thread", &shared.dir, source))?;
        let log = Log {
            record_slots: Arc::new(Semaphore::new(shared.config.queue_records_max)),
            byte_slots: Arc::new(Semaphore::new(shared.config.queue_bytes_max)),
            shared,
            sender: Some(sender),
            writer: Some(handle),
        };
        Ok((log, recovered.report))
    }

    /// Appends one record; resolves to its position once it is on disk.
    pub async fn append(&self, shard: u32, payload: Vec<u8>) -> Result<Position, LogError> {
        let positions = self.append_batch(vec![(shard, payload)]).await?;
        assert_eq!(positions.end - positions.start, 1);
        Ok(positions.start)
    }

    /// Appends `(shard, payload)` records as one unit: one waiter, never
    /// split across groups, consecutive positions in the given order.
    /// Resolves once all of them are on disk.
    pub async fn append_batch(
        &self,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<Range<Position>, LogError> {
        self.enqueue_batch(records).await?.durable().await
    }

    /// Queues a batch and returns once it has its place in the log order,
    /// before it is durable. Callers that must keep several queues in the
    /// log's order (the engine's shard queues) enqueue under one lock and
    /// await [`PendingAppend::durable`] outside it.
    pub async fn enqueue_batch(
        &self,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<PendingAppend, LogError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.enqueue(records, writer::Reply::Waiter(reply)).await?;
        Ok(PendingAppend { answer })
    }

    /// Queues a batch like [`Log::enqueue_batch`], and has the writer call
    /// `callback` with the positions and byte offsets of the records once
    /// they are synced, or with the error. Callbacks are called in log
    /// order. On `Err` the batch was not queued and `callback` is dropped
    /// uncalled.
    pub async fn enqueue_with_callback(
        &self,
        records: Vec<(u32, Vec<u8>)>,
        callback: AppendCallback,
    ) -> Result<(), LogError> {
        self.enqueue(records, writer::Reply::Callback(callback))
            .await
    }

    async fn enqueue(
        &self,
        records: Vec<(u32, Vec<u8>)>,
        reply: writer::Reply,
    ) -> Result<(), LogError> {
        let bytes = self.check_batch(&records)?;
        self.check_failure()?;
        let record_permits = Arc::clone(&self.record_slots)
            .acquire_many_owned(records.len() as u32)
            .await
            .map_err(|_| LogError::Closed)?;
        let byte_permits = Arc::clone(&self.byte_slots)
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| LogError::Closed)?;
        self.check_failure()?;
        let request = writer::Request {
            records,
            bytes,
            reply,
            offsets: Vec::new(),
            permits: (record_permits, byte_permits),
        };
        let sender = self.sender.as_ref().ok_or(LogError::Closed)?;
        // Counted and sent under one lock, so the count is the position of
        // the last record queued whatever the callers' interleaving.
        let mut state = lock(&self.shared.state);
        let records = request.records.len() as u64;
        sender.send(request).map_err(|_| LogError::Closed)?;
        state.enqueued_position += records;
        Ok(())
    }

    /// Records with positions after `checkpoint`, up to the last position
    /// synced when this is called, read straight from the files.
    ///
    /// Fails with [`LogError::Unavailable`] when the log cannot continue
    /// exactly after `checkpoint`: its oldest segment starts later (records
    /// were truncated that the checkpoint does not include) or it ends
    /// before `checkpoint` (the checkpoint includes records the log lost).
    pub fn replay_after(&self, checkpoint: Position) -> Result<Replay, LogError> {
        let state = lock(&self.shared.state);
        let first_position = *state.segments.first().expect("the active segment");
        if checkpoint.saturating_add(1) < first_position || checkpoint > state.last_position {
            return Err(LogError::Unavailable {
                checkpoint,
                first_position,
                last_position: state.last_position,
            });
        }
        Ok(Replay::new(
            &self.shared.dir,
            &state.segments,
            checkpoint,
            state.last_position,
            self.shared.replay_payload_bytes_max,
        ))
    }

    /// Deletes the segments whose records all have positions before
    /// `position` (a checkpoint includes `position - 1`). The active segment
    /// is never deleted. Do not replay from before `position` concurrently.
    pub fn truncate_before(&self, position: Position) -> Result<TruncateReport, LogError> {
        let removable: Vec<Position> = {
            let mut state = lock(&self.shared.state);
            let count = state
                .segments
                .windows(2)
                .take_while(|pair| pair[1] <= position)
                .count();
            state.segments.drain(..count).collect()
        };
        let mut report = TruncateReport::default();
        for first_position in removable {
            let path = self
                .shared
                .dir
                .join(format::segment_file_name(first_position));
            let len = std::fs::metadata(&path)
                .map_err(|source| LogError::io("stat segment", &path, source))?
                .len();
            std::fs::remove_file(&path)
                .map_err(|source| LogError::io("remove segment", &path, source))?;
            report.segments_removed += 1;
            report.bytes_removed += len;
        }
        if report.segments_removed > 0 {
            segment::sync_dir(&self.shared.dir)?;
        }
        Ok(report)
    }

    /// Reads single records at the locations [`Appended`] reported (or
    /// [`Replay::last_offset`] found), up to the last synced position. The
    /// reader keeps the segment it read last open; make one per batch of
    /// reads, so that it never holds a deleted segment open for long.
    pub fn record_reader(&self) -> RecordReader {
        let state = lock(&self.shared.state);
        RecordReader::new(
            &self.shared.dir,
            state.segments.clone(),
            state.last_position,
            self.shared.replay_payload_bytes_max,
        )
    }

    /// First positions of the segments on disk, oldest first; the last is
    /// the one being appended to.
    pub fn segment_first_positions(&self) -> Vec<Position> {
        lock(&self.shared.state).segments.clone()
    }

    /// Last position on disk: every append answered so far is at or below.
    pub fn last_position(&self) -> Position {
        lock(&self.shared.state).last_position
    }

    /// Position the last record queued so far gets (synced or not): a
    /// caller that orders its appends (the engine's sequencer) learns where
    /// its records stand before they are synced. Meaningless once the log
    /// failed (records queued then never get their positions).
    pub fn enqueued_position(&self) -> Position {
        lock(&self.shared.state).enqueued_position
    }

    /// Completes once every record up to `position` is synced, or with the
    /// failure if the log failed first. Call it only for positions already
    /// queued (at most `enqueued_position`), or it waits for appends.
    pub async fn wait_synced(&self, position: Position) -> Result<(), LogError> {
        let mut synced = self.shared.synced.subscribe();
        loop {
            // Read before the failure check: a failure after it is
            // signalled after this read and wakes `changed`.
            let last = *synced.borrow_and_update();
            self.check_failure()?;
            if last >= position {
                return Ok(());
            }
            synced.changed().await.map_err(|_| LogError::Closed)?;
        }
    }

    /// Why the log stopped accepting appends, if it has.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.state).failure.clone()
    }

    /// Durations of the record-data `fdatasync` calls since [`Log::open`].
    pub fn fsync_histogram(&self) -> crate::metrics::HistogramSnapshot {
        self.shared.counters.fsync_seconds.snapshot()
    }

    pub fn stats(&self) -> LogStats {
        self.shared.counters.snapshot()
    }

    /// Records queued for the writer or being written (the group-commit
    /// backlog); appends wait when it reaches `queue_records_max`.
    pub fn queued_records(&self) -> usize {
        self.shared
            .config
            .queue_records_max
            .saturating_sub(self.record_slots.available_permits())
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Bytes on disk of the records, and whether the batch fits one group.
    fn check_batch(&self, records: &[(u32, Vec<u8>)]) -> Result<usize, LogError> {
        let config = &self.shared.config;
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut bytes = 0usize;
        for (_, payload) in records {
            if payload.len() > config.record_bytes_max {
                return Err(LogError::RecordTooLarge {
                    bytes: payload.len(),
                    bytes_max: config.record_bytes_max,
                });
            }
            bytes = bytes.saturating_add(format::record_len(payload.len()));
        }
        if records.len() > config.group_records_max || bytes > config.group_bytes_max {
            return Err(LogError::BatchTooLarge {
                records: records.len(),
                bytes,
                records_max: config.group_records_max,
                bytes_max: config.group_bytes_max,
            });
        }
        Ok(bytes)
    }

    fn check_failure(&self) -> Result<(), LogError> {
        match self.failure() {
            Some(cause) => Err(LogError::Failed { cause }),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Disconnecting the queue ends the writer after the last request.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("log: the writer thread panicked");
            }
        }
    }
}
