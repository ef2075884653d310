//! The writer thread: takes every queued append, writes them as one group,
//! syncs once, then answers every waiter.
//!
//! A std thread, not a tokio task: it spends its life in blocking `write`
//! and `fdatasync`, and must not hold a runtime worker while it does.

use super::format::{self, SEGMENT_HEADER_LEN};
use super::segment::SegmentFile;
use super::{lock, AppendCallback, Appended, LogError, Position, Shared};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// How the writer answers a request.
pub(super) enum Reply {
    /// `append_batch` / `enqueue_batch`: a task awaits the positions.
    Waiter(oneshot::Sender<Result<Range<Position>, LogError>>),
    /// `enqueue_with_callback`: called on the writer thread with the
    /// positions and the byte offset of every record, so the caller can
    /// read a record back without scanning its segment.
    Callback(AppendCallback),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Waiter(_) => f.write_str("Waiter"),
            Reply::Callback(_) => f.write_str("Callback"),
        }
    }
}

/// One `append_batch` call waiting for its group.
#[derive(Debug)]
pub(super) struct Request {
    pub records: Vec<(u32, Vec<u8>)>,
    /// Bytes the records take on disk.
    pub bytes: usize,
    pub reply: Reply,
    /// Where each record starts in its segment; filled by the writer only
    /// for a `Reply::Callback`.
    pub offsets: Vec<u64>,
    /// Queue room, given back when the request is answered and dropped.
    pub permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Request {
    /// Answers the waiter (who may have gone away) or calls the callback,
    /// then gives the queue room back.
    fn answer(self, result: Result<Range<Position>, LogError>) {
        let Request {
            reply,
            offsets,
            permits,
            records,
            ..
        } = self;
        match reply {
            Reply::Waiter(sender) => {
                let _ = sender.send(result);
            }
            Reply::Callback(callback) => callback(result.map(|positions| {
                assert_eq!(offsets.len(), records.len(), "one offset per record");
                Appended { positions, offsets }
            })),
        }
        drop(permits);
    }

    fn wants_offsets(&self) -> bool {
        matches!(self.reply, Reply::Callback(_))
    }
}

#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    receiver: Receiver<Request>,
    active: SegmentFile,
    next_position: Position,
    /// A request taken from the queue that did not fit the previous group.
    pending: Option<Request>,
    /// Encoded records of the group, reused between groups.
    buffer: Vec<u8>,
    /// Set on the first write or sync error; never cleared.
    failure: Option<String>,
}

/// Where the log stood before a group, to cut the group's bytes off again
/// if it fails.
#[derive(Debug)]
struct GroupStart {
    path: PathBuf,
    len_bytes: u64,
    created: Vec<PathBuf>,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Request>,
        active: SegmentFile,
        next_position: Position,
    ) -> Writer {
        Writer {
            shared,
            receiver,
            active,
            next_position,
            pending: None,
            buffer: Vec::new(),
            failure: None,
        }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub(super) fn run(mut self) {
        while let Some(first) = self.next_request() {
            if let Some(cause) = &self.failure {
                first.answer(Err(LogError::Failed {
                    cause: cause.clone(),
                }));
                continue;
            }
            let group = self.gather(first);
            self.commit(group);
        }
    }

    fn next_request(&mut self) -> Option<Request> {
        self.pending.take().or_else(|| self.receiver.recv().ok())
    }

    /// Adds queued requests to `first` until the group is full, the queue
    /// is empty and `group_wait_us` has passed since `first`.
    fn gather(&mut self, first: Request) -> Vec<Request> {
        let config = &self.shared.config;
        let deadline = Instant::now() + Duration::from_micros(config.group_wait_us);
        let mut records = first.records.len();
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while records < config.group_records_max && bytes < config.group_bytes_max {
            let next = match self.receiver.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        break;
                    }
                    match self.receiver.recv_timeout(wait) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if records + next.records.len() > config.group_records_max
                || bytes + next.bytes > config.group_bytes_max
            {
                self.pending = Some(next);
                break;
            }
            records += next.records.len();
            bytes += next.bytes;
            group.push(next);
        }
        assert!(records <= config.group_records_max && bytes <= config.group_bytes_max);
        group
    }

    /// Writes and syncs a group, then answers its waiters.
    fn commit(&mut self, mut group: Vec<Request>) {
        let start = GroupStart {
            path: self.active.path().to_path_buf(),
            len_bytes: self.active.len_bytes(),
            created: Vec::new(),
        };
        let first_position = self.next_position;
        match self.write_group(&mut group, start) {
            Ok(new_segments) => {
                let records = self.next_position - first_position;
                self.publish(new_segments, &group, records);
                let mut position = first_position;
                for request in group {
                    let count = request.records.len() as u64;
                    request.answer(Ok(position..position + count));
                    position += count;
                }
                assert_eq!(position, self.next_position);
            }
            Err((error, start)) => self.fail(error, start, group),
        }
    }

    /// Encodes the group, rotating segments where one would overflow, and
    /// syncs. Returns the first positions of segments it created.
    fn write_group(
        &mut self,
        group: &mut [Request],
        mut start: GroupStart,
    ) -> Result<Vec<Position>, (LogError, GroupStart)> {
        let segment_bytes_max = self.shared.config.segment_bytes_max as u64;
        let mut new_segments = Vec::new();
        self.buffer.clear();
        for request in group.iter_mut() {
            let wants_offsets = request.wants_offsets();
            for (shard, payload) in &request.records {
                let record_bytes = format::record_len(payload.len()) as u64;
                let written = self.active.len_bytes() + self.buffer.len() as u64;
                if written + record_bytes > segment_bytes_max && written > SEGMENT_HEADER_LEN as u64
                {
                    match self.rotate() {
                        Ok(segment) => {
                            start.created.push(segment.path().to_path_buf());
                            new_segments.push(segment.first_position());
                            self.active = segment;
                        }
                        Err(error) => return Err((error, start)),
                    }
                }
                if wants_offsets {
                    request
                        .offsets
                        .push(self.active.len_bytes() + self.buffer.len() as u64);
                }
                format::encode_record(&mut self.buffer, self.next_position, *shard, payload);
                self.next_position += 1;
            }
        }
        match self.flush() {
            Ok(()) => Ok(new_segments),
            Err(error) => Err((error, start)),
        }
    }

    /// Syncs what is buffered into the active segment and creates the next
    /// one, starting at the next position.
    fn rotate(&mut self) -> Result<SegmentFile, LogError> {
        self.flush()?;
        SegmentFile::create(
            &self.shared.dir,
            self.next_position,
            self.shared.config.fault.clone(),
        )
    }

    /// Writes the buffer to the active segment and syncs it.
    fn flush(&mut self) -> Result<(), LogError> {
        let counters = &self.shared.counters;
        self.active.write_all(&self.buffer)?;
        counters.add_bytes(self.buffer.len() as u64);
        self.buffer.clear();
        let started = Instant::now();
        self.active.sync()?;
        counters.add_fsync(started.elapsed());
        Ok(())
    }

    /// Makes a committed group visible to readers and counters.
    fn publish(&self, new_segments: Vec<Position>, group: &[Request], records: u64) {
        let mut state = lock(&self.shared.state);
        state.segments.extend(new_segments);
        state.last_position = self.next_position - 1;
        drop(state);
        self.shared.synced.send_replace(self.next_position - 1);
        self.shared.counters.add_group(group.len() as u64, records);
    }

    /// Enters the failed state: this group's waiters get the I/O error,
    /// every later append `Failed`. The group's bytes are cut off on a best
    /// effort basis (not synced, never retried) so that a restart sees only
    /// acknowledged records.
    fn fail(&mut self, error: LogError, start: GroupStart, group: Vec<Request>) {
        let cause = error.to_string();
        tracing::error!(%cause, "log: write or fsync failed; the log accepts no more appends");
        lock(&self.shared.state).failure = Some(cause.clone());
        self.failure = Some(cause);
        // Wakes `Log::wait_synced` callers to see the failure.
        self.shared.synced.send_modify(|_| {});
        for path in start.created.iter().rev() {
            if let Err(error) = std::fs::remove_file(path) {
                tracing::warn!(segment = %path.display(), %error, "log: could not remove a failed segment");
            }
        }
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&start.path)
            .and_then(|file| file.set_len(start.len_bytes));
        if let Err(error) = cut {
            tracing::warn!(segment = %start.path.display(), %error, "log: could not cut a failed group");
        }
        for request in group {
            request.answer(Err(error.duplicate()));
        }
    }
}
