//! [`Sender`]: buffered, batched, retried ingest.
//!
//! # Design
//!
//! ```text
//!  Sender (clonable handle)            worker task (one per Sender::new)
//!  ──────────────────────────          ─────────────────────────────────────────
//!  track(event):                        owns the buffers; loops over
//!    take 1 permit of the event    ──▶    · a command from the channel: an event
//!    semaphore (Wait: await one;  mpsc     (append to its partition's buffer,
//!    Error: BufferFull if none)  bounded   cut a batch at `batch_events_max`)
//!    send (seq, event)                      or a flush waiter
//!                                         · a linger timer (cut a partial batch)
//!  flush(): send a waiter, await it       · a finished batch task (count outcomes,
//!                                           give its permits back, answer waiters)
//!                                       and starts ready batches while fewer than
//!                                       `in_flight_batches_max` are in flight.
//!
//!  batch task (one per batch): route → encode → POST → on a transport error,
//!  429/502/503/504 or per-event `overloaded`, `not_owner` or `shard_moving`,
//!  tell the router, group the events again by partition, and resend the
//!  same events (same ids) until `retry_attempts_max` attempts.
//! ```
//!
//! * **Partitions.** The router puts each event in a partition
//!   ([`Router::partition`]) and a batch never mixes partitions: with the
//!   [`ShardMapRouter`](crate::ShardMapRouter) a partition is a shard owner,
//!   so each batch goes whole to the node that owns its events. Single-node
//!   routers have one partition, and batching is as before.
//! * **Rerouting.** A node that does not own an event's shard refuses it
//!   (`not_owner`, naming the owner); the router learns the owner (or
//!   fetches a fresh map) and the event is resent to it. A resend that the
//!   router routes elsewhere now goes at once; the others wait the backoff.
//!   Each resend counts as an attempt, so a batch's attempts stay bounded.
//! * **One owner.** Only the worker touches the buffer, the batch list and
//!   the report, so none of them needs a lock; producers only talk to it
//!   through the bounded channel.
//! * **The bound is on events, not messages.** An event holds one permit of a
//!   semaphore of `buffer_events_max` permits from `track` until its batch is
//!   resolved (acknowledged, rejected or failed). So the events in the
//!   channel, in the buffer, waiting for a batch slot and in flight together
//!   never exceed `buffer_events_max`, whatever the node does.
//! * **Retries keep ids.** A retried batch carries the same events; if the
//!   node applied the first attempt (the answer was lost), it counts the
//!   retry's events as duplicates, so every event is counted once.
//! * **Flush is a watermark.** A flush cuts every buffer into a batch and waits
//!   until every batch cut before it is resolved. Every resolved event is
//!   reported in exactly one [`FlushReport`].
//!
//! The worker stops when every handle is dropped, after it has sent what it
//! still holds (nobody sees that last report; flush first to see it).

use crate::router::{Feedback, Partition, Router, SingleNode};
use crate::{Client, ClientError};
use sessiondb_protocol::{Event, RejectCode};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// Most commands (events and flush requests) waiting in the channel in
/// front of the worker. The worker never blocks while it drains the
/// channel, so this only smooths bursts; the real bound is
/// [`SenderConfig::buffer_events_max`].
pub const CHANNEL_COMMANDS_MAX: usize = 4_096;
/// Most rejected and failed events described one by one in one
/// [`FlushReport`]; further ones are only counted in
/// [`FlushReport::details_dropped`]. Flush often to see every one.
pub const REPORT_DETAILS_MAX: usize = 100_000;

/// How a batch is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `application/x-sessiondb-batch` (`sessiondb_protocol::binary`):
    /// compact and cheap to decode. The default.
    #[default]
    Binary,
    /// `application/json`: the `EventBatch` JSON of `docs/api.md`.
    Json,
}

/// Whether a batch's body is compressed on the wire.
///
/// Gzip shrinks a binary batch about fourfold and a JSON one about sevenfold
/// for the cost of compressing it on the client (and inflating it on the
/// node): it pays on a slow link, not on a fast one (`docs/client.md`,
/// "Compression", and the figures in `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// The body as encoded. The default.
    #[default]
    None,
    /// `Content-Encoding: gzip`, at the fastest level.
    Gzip,
}

/// What [`Sender::track`] does when `buffer_events_max` events are already
/// held (buffered or in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Wait until a batch resolves and makes room. The default.
    #[default]
    Wait,
    /// Fail at once with [`ClientError::BufferFull`]; the event is not taken.
    Error,
}

/// Tuning of a [`Sender`]. Every field has a default; see [`Default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// A batch is sent as soon as it holds this many events (1 – 10 000,
    /// the node's `BATCH_EVENTS_MAX`). Default 1 000.
    pub batch_events_max: usize,
    /// A partial batch is sent this long after its first event arrived.
    /// Default 5 ms.
    pub linger: Duration,
    /// Most events held at once: tracked but not yet resolved. Default
    /// 100 000. At least `batch_events_max`.
    pub buffer_events_max: usize,
    /// What `track` does when the buffer is full. Default [`Backpressure::Wait`].
    pub backpressure: Backpressure,
    /// Wire encoding of batches. Default [`Encoding::Binary`].
    pub encoding: Encoding,
    /// Compression of batch bodies. Default [`Compression::None`].
    pub compression: Compression,
    /// Most batches sent concurrently. Default 4.
    pub in_flight_batches_max: usize,
    /// Most attempts per event, the first included (≥ 1); resends after
    /// `overloaded`, `not_owner` and `shard_moving` count. Default 8.
    pub retry_attempts_max: u32,
    /// Backoff before the first retry; doubles per retry, plus a random
    /// part of up to as much again. Default 50 ms.
    pub retry_backoff_initial: Duration,
    /// Largest backoff between two attempts (before its random part).
    /// Default 2 s.
    pub retry_backoff_max: Duration,
    /// Longest time from `track` to the event's outcome: an event not
    /// resolved by then (its attempts still failing, or its request still
    /// unanswered) fails with [`ClientError::DeliveryTimeout`], so a node
    /// that accepts connections and never answers holds nothing longer.
    /// Default 30 s. A request cut short may still have been applied;
    /// sending the event again is safe (it keeps its id).
    pub delivery_timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            batch_events_max: 1_000,
            linger: Duration::from_millis(5),
            buffer_events_max: 100_000,
            backpressure: Backpressure::Wait,
            encoding: Encoding::Binary,
            compression: Compression::None,
            in_flight_batches_max: 4,
            retry_attempts_max: 8,
            retry_backoff_initial: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(2),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

impl SenderConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: String| Err(ClientError::InvalidConfig { message });
        let events_max = sessiondb_protocol::binary::BINARY_EVENTS_MAX;
        if !(1..=events_max).contains(&self.batch_events_max) {
            return invalid(format!(
                "batch_events_max is {}; it must be 1 to {events_max}",
                self.batch_events_max
            ));
        }
        if self.buffer_events_max < self.batch_events_max
            || self.buffer_events_max > Semaphore::MAX_PERMITS
        {
            return invalid(format!(
                "buffer_events_max is {}; it must be at least batch_events_max ({})",
                self.buffer_events_max, self.batch_events_max
            ));
        }
        if self.in_flight_batches_max == 0 {
            return invalid("in_flight_batches_max must be at least 1".into());
        }
        if self.retry_attempts_max == 0 {
            return invalid("retry_attempts_max must be at least 1".into());
        }
        if self.retry_backoff_initial > self.retry_backoff_max {
            return invalid(format!(
                "retry_backoff_initial ({:?}) is over retry_backoff_max ({:?})",
                self.retry_backoff_initial, self.retry_backoff_max
            ));
        }
        if self.delivery_timeout.is_zero() {
            return invalid("delivery_timeout must be more than zero".into());
        }
        Ok(())
    }
}

/// An event the node refused, with its reason (`docs/api.md`, "Per-event
/// reasons").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// The number [`Sender::track`] returned for this event.
    pub seq: u64,
    /// The event's id.
    pub id: String,
    /// Why, e.g. [`RejectCode::TooLate`].
    pub reason: RejectCode,
    /// Human-readable explanation.
    pub message: String,
}

/// An event whose batch never got an answer, or got a whole-batch error,
/// after every attempt. The node may or may not have applied it (resending
/// it later is safe: it keeps its id).
#[derive(Debug, Clone)]
pub struct FailedEvent {
    /// The number [`Sender::track`] returned for this event.
    pub seq: u64,
    /// The event, handed back as it was sent (with its id and project):
    /// send it again later, or keep it.
    pub event: Event,
    /// The last attempt's error, shared by every event of the batch.
    pub error: Arc<ClientError>,
}

/// The outcome of every event resolved since the previous report.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    /// Events newly applied by the node.
    pub accepted: u64,
    /// Events the node had already applied (e.g. the lost answer of an
    /// earlier attempt); nothing changed.
    pub duplicates: u64,
    /// Events the node refused, each with its reason.
    pub rejected: Vec<RejectedEvent>,
    /// Events that could not be delivered.
    pub failed: Vec<FailedEvent>,
    /// Rejected or failed events beyond [`REPORT_DETAILS_MAX`], counted but
    /// not described.
    pub details_dropped: u64,
}

impl FlushReport {
    /// Every event was accepted or was a duplicate.
    pub fn is_success(&self) -> bool {
        self.rejected.is_empty() && self.failed.is_empty() && self.details_dropped == 0
    }

    /// How many events this report covers.
    pub fn events(&self) -> u64 {
        self.accepted
            + self.duplicates
            + self.rejected.len() as u64
            + self.failed.len() as u64
            + self.details_dropped
    }

    fn merge(&mut self, other: FlushReport) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.details_dropped += other.details_dropped;
        for rejected in other.rejected {
            if self.has_room() {
                self.rejected.push(rejected);
            } else {
                self.details_dropped += 1;
            }
        }
        for failed in other.failed {
            if self.has_room() {
                self.failed.push(failed);
            } else {
                self.details_dropped += 1;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.rejected.len() + self.failed.len() < REPORT_DETAILS_MAX
    }
}

/// Counters of a [`Sender`] since it was created (all handles together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderStats {
    /// Events taken by `track`.
    pub events_tracked: u64,
    /// Events held now: tracked, not yet resolved.
    pub events_held: u64,
    /// The most events ever held at once; never over `buffer_events_max`.
    pub events_held_max: u64,
    /// Events resolved: accepted, duplicate, rejected or failed.
    pub events_resolved: u64,
    /// Batches cut from the buffer.
    pub batches: u64,
    /// HTTP requests sent, retries included.
    pub requests_sent: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Events resent because a node refused them as `not_owner` or
    /// `shard_moving` (routed by a stale map, or caught by a shard move).
    pub reroutes: u64,
}

/// State shared by the handles, the worker and the batch tasks.
#[derive(Debug)]
struct Shared {
    config: SenderConfig,
    router: Arc<dyn Router>,
    /// The project of [`Client::sender_for`]: given to events without one,
    /// and the only one events may name.
    project: Option<String>,
    permits: Semaphore,
    next_seq: AtomicU64,
    events_held_max: AtomicU64,
    batches: AtomicU64,
    requests_sent: AtomicU64,
    retries: AtomicU64,
    reroutes: AtomicU64,
    /// Events resolved so far; changes after every batch.
    resolved: watch::Sender<u64>,
    /// Set by [`Sender::close`]: every batch still unresolved at this
    /// instant fails with [`ClientError::DeliveryTimeout`].
    cutoff: watch::Sender<Option<Instant>>,
    /// `close` was called: dropping the handles afterwards loses nothing.
    closed: AtomicBool,
}

impl Shared {
    fn events_held(&self) -> u64 {
        (self.config.buffer_events_max - self.permits.available_permits()) as u64
    }
}

enum Command {
    Event {
        seq: u64,
        event: Event,
    },
    Flush(oneshot::Sender<FlushReport>),
    /// Stop taking events, deliver what is held until `deadline`, answer
    /// the report of everything not reported yet.
    Close {
        deadline: Instant,
        reply: oneshot::Sender<FlushReport>,
    },
}

/// A buffered, batching, retrying event producer. See the module
/// documentation for its design.
///
/// Cheap to clone: clones share the buffer, the worker and the counters.
///
/// # Shutting down
///
/// Call [`Sender::close`] before the program ends: it sends what is held
/// and answers the outcome of every event not reported yet, failed ones
/// handed back. If the last handle is dropped while events are still held,
/// the sender logs a warning (`tracing`), and its worker goes on sending
/// them in the background for as long as the Tokio runtime runs (at most
/// [`SenderConfig::delivery_timeout`] each), logging failures; events
/// still held when the runtime stops are lost.
///
/// `examples/page_views.rs`, run by the crate's tests against a real node:
///
#[doc = concat!("```no_run\n", include_str!("../examples/page_views.rs"), "```")]
#[derive(Debug, Clone)]
pub struct Sender {
    handle: Arc<Handle>,
}

/// What the clones of a [`Sender`] share; its drop is the last handle's.
#[derive(Debug)]
struct Handle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let held = self.shared.events_held();
        if held > 0 && !self.shared.closed.load(Ordering::Relaxed) {
            tracing::warn!(
                events_held = held,
                "sessiondb sender dropped while holding {held} events; they are sent in the \
                 background while the runtime runs, and nobody sees their outcome: \
                 call Sender::close(timeout) before dropping it"
            );
        }
    }
}

impl Client {
    /// A [`Sender`] that sends every batch to this client's node.
    ///
    /// Fails with [`ClientError::NoRuntime`] outside a Tokio runtime (it
    /// spawns the sender's worker).
    pub fn sender(&self, config: SenderConfig) -> Result<Sender, ClientError> {
        Sender::new(Arc::new(SingleNode::new(self.clone())), config)
    }

    /// [`Client::sender`] bound to `project`: events without a project get
    /// it, and [`Sender::track`] refuses an event of another project with
    /// [`ClientError::WrongProject`] (the node would refuse its whole batch).
    pub fn sender_for(
        &self,
        project: impl Into<String>,
        config: SenderConfig,
    ) -> Result<Sender, ClientError> {
        Sender::build(
            Arc::new(SingleNode::new(self.clone())),
            config,
            Some(project.into()),
        )
    }
}

impl Sender {
    /// A sender whose batches go where `router` says.
    ///
    /// Fails with [`ClientError::InvalidConfig`] if `config` is
    /// inconsistent, and with [`ClientError::NoRuntime`] outside a Tokio
    /// runtime (it spawns the sender's worker).
    pub fn new(router: Arc<dyn Router>, config: SenderConfig) -> Result<Sender, ClientError> {
        Sender::build(router, config, None)
    }

    /// [`Sender::new`] bound to `project` (see [`Client::sender_for`]).
    pub fn new_for(
        router: Arc<dyn Router>,
        project: impl Into<String>,
        config: SenderConfig,
    ) -> Result<Sender, ClientError> {
        Sender::build(router, config, Some(project.into()))
    }

    fn build(
        router: Arc<dyn Router>,
        config: SenderConfig,
        project: Option<String>,
    ) -> Result<Sender, ClientError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let (commands, receiver) = mpsc::channel(CHANNEL_COMMANDS_MAX);
        let shared = Arc::new(Shared {
            permits: Semaphore::new(config.buffer_events_max),
            config,
            router,
            project,
            next_seq: AtomicU64::new(0),
            events_held_max: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            requests_sent: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            reroutes: AtomicU64::new(0),
            resolved: watch::Sender::new(0),
            cutoff: watch::Sender::new(None),
            closed: AtomicBool::new(false),
        });
        let worker = Worker::new(Arc::clone(&shared), receiver);
        runtime.spawn(worker.run());
        Ok(Sender {
            handle: Arc::new(Handle { commands, shared }),
        })
    }

    /// Gives `event` the sender's project when it has none, and a random
    /// id when it has none (once: retries keep it).
    fn complete(&self, event: &mut Event) -> Result<(), ClientError> {
        if let Some(project) = &self.handle.shared.project {
            if event.project.is_empty() {
                event.project.clone_from(project);
            } else if event.project != *project {
                return Err(ClientError::WrongProject {
                    expected: project.clone(),
                    found: event.project.clone(),
                });
            }
        }
        if event.id.is_empty() {
            event.id = format!("{:032x}", rand::random::<u128>());
        }
        Ok(())
    }

    /// Hands `event` to the sender, to be sent in a batch.
    ///
    /// Returns the event's sequence number (`seq` in [`RejectedEvent`] and
    /// [`FailedEvent`]) as soon as the sender holds it, long before the node
    /// acknowledges it: use [`Sender::flush`] to learn the outcome. When
    /// `buffer_events_max` events are held, waits for room or fails with
    /// [`ClientError::BufferFull`], per [`SenderConfig::backpressure`].
    ///
    /// An event without an id gets a random one here, and one without a
    /// project the sender's ([`Client::sender_for`]).
    pub async fn track(&self, mut event: Event) -> Result<u64, ClientError> {
        self.complete(&mut event)?;
        let shared = &self.handle.shared;
        match shared.config.backpressure {
            Backpressure::Wait => shared
                .permits
                .acquire()
                .await
                .map_err(|_| ClientError::SenderClosed)?
                .forget(),
            Backpressure::Error => match shared.permits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(TryAcquireError::NoPermits) => {
                    return Err(ClientError::BufferFull {
                        buffer_events_max: shared.config.buffer_events_max,
                    })
                }
                Err(TryAcquireError::Closed) => return Err(ClientError::SenderClosed),
            },
        }
        shared
            .events_held_max
            .fetch_max(shared.events_held(), Ordering::Relaxed);
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let command = Command::Event { seq, event };
        let commands = &self.handle.commands;
        let sent = match commands.try_send(command) {
            Ok(()) => Ok(()),
            // The channel holds commands, not events: the worker drains it
            // without blocking, so this waits only for a burst to pass.
            Err(mpsc::error::TrySendError::Full(command)) => commands
                .send(command)
                .await
                .map_err(|_| ClientError::SenderClosed),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ClientError::SenderClosed),
        };
        if let Err(error) = sent {
            shared.permits.add_permits(1);
            return Err(error);
        }
        Ok(seq)
    }

    /// Sends what is buffered and waits until every event tracked before
    /// this call (by any clone) is resolved: acknowledged, rejected with a
    /// reason, or failed after every retry.
    ///
    /// The report covers every event resolved since the previous report
    /// was handed out, so each event appears in exactly one report. Events
    /// tracked after this call may be in it too if they resolved first.
    ///
    /// It returns at the latest [`SenderConfig::delivery_timeout`] after
    /// the oldest event it waits for was tracked: an event not resolved by
    /// then is failed. With the node refusing connections it returns once
    /// the attempts run out (with the defaults, the backoffs add up to
    /// under 12 s).
    pub async fn flush(&self) -> Result<FlushReport, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| ClientError::SenderClosed)?;
        answer.await.map_err(|_| ClientError::SenderClosed)
    }

    /// [`Sender::flush`], waiting at most `timeout`: then it fails with
    /// [`ClientError::FlushTimeout`] and the events keep going (a later
    /// flush or [`Sender::close`] reports them).
    pub async fn flush_timeout(&self, timeout: Duration) -> Result<FlushReport, ClientError> {
        // A flush dropped before its answer leaves its report to the next.
        tokio::time::timeout(timeout, self.flush())
            .await
            .map_err(|_| ClientError::FlushTimeout { timeout })?
    }

    /// Stops taking events (for every clone: `track` then fails with
    /// [`ClientError::SenderClosed`]), sends everything held, and answers
    /// the outcome of every event not reported yet, within `timeout`:
    /// events not resolved by then are failed with
    /// [`ClientError::DeliveryTimeout`] and handed back in
    /// [`FlushReport::failed`]. Nothing is lost unreported. A second call
    /// answers an empty report.
    pub async fn close(&self, timeout: Duration) -> FlushReport {
        let shared = &self.handle.shared;
        shared.closed.store(true, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let command = Command::Close { deadline, reply };
        if self.handle.commands.send(command).await.is_err() {
            return FlushReport::default(); // Closed already.
        }
        answer.await.unwrap_or_default()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SenderStats {
        let shared = &self.handle.shared;
        SenderStats {
            events_tracked: shared.next_seq.load(Ordering::Relaxed),
            events_held: shared.events_held(),
            events_held_max: shared.events_held_max.load(Ordering::Relaxed),
            events_resolved: *shared.resolved.borrow(),
            batches: shared.batches.load(Ordering::Relaxed),
            requests_sent: shared.requests_sent.load(Ordering::Relaxed),
            retries: shared.retries.load(Ordering::Relaxed),
            reroutes: shared.reroutes.load(Ordering::Relaxed),
        }
    }

    /// The number of resolved events, updated after every batch: to show
    /// progress, or to wait for lingering batches without flushing
    /// (`receiver.wait_for(|resolved| *resolved >= n)`).
    pub fn resolved_events(&self) -> watch::Receiver<u64> {
        self.handle.shared.resolved.subscribe()
    }

    /// The configuration the sender runs with.
    pub fn config(&self) -> &SenderConfig {
        &self.handle.shared.config
    }
}

/// A batch cut from the buffer: events and their sequence numbers, in the
/// same order.
struct Batch {
    id: u64,
    seqs: Vec<u64>,
    events: Vec<Event>,
    /// Its oldest event's `track` plus `delivery_timeout`.
    deadline: Instant,
}

/// Events of one partition not yet cut into a batch.
struct Pending {
    seqs: Vec<u64>,
    events: Vec<Event>,
    /// When this partial batch is cut anyway.
    linger_deadline: Instant,
    /// When its first event arrived.
    first_at: Instant,
}

/// The worker: the only owner of the buffers, the batch queue and the report.
struct Worker {
    shared: Arc<Shared>,
    receiver: mpsc::Receiver<Command>,
    /// Events not yet cut into a batch, per partition (`Router::partition`):
    /// a batch never mixes partitions. Empty buffers are removed, so this
    /// holds at most one entry per partition with events.
    buffers: BTreeMap<Partition, Pending>,
    /// Cut batches waiting for an in-flight slot.
    ready: VecDeque<Batch>,
    /// Each task answers its batch id, its event count and its outcomes.
    in_flight: JoinSet<(u64, usize, FlushReport)>,
    /// Ids of batches cut and not yet resolved.
    unresolved: BTreeSet<u64>,
    next_batch_id: u64,
    /// Flush callers, each with the first batch id it does not wait for.
    waiters: Vec<(u64, oneshot::Sender<FlushReport>)>,
    report: FlushReport,
    /// The caller of [`Sender::close`], answered when everything resolved.
    closer: Option<oneshot::Sender<FlushReport>>,
}

impl Worker {
    fn new(shared: Arc<Shared>, receiver: mpsc::Receiver<Command>) -> Worker {
        Worker {
            shared,
            receiver,
            buffers: BTreeMap::new(),
            ready: VecDeque::new(),
            in_flight: JoinSet::new(),
            unresolved: BTreeSet::new(),
            next_batch_id: 0,
            waiters: Vec::new(),
            report: FlushReport::default(),
            closer: None,
        }
    }

    async fn run(mut self) {
        let mut open = true;
        loop {
            self.start_ready_batches();
            if !open && self.unresolved.is_empty() && self.buffers.is_empty() {
                self.finish();
                return;
            }
            let deadline = self
                .buffers
                .values()
                .map(|pending| pending.linger_deadline)
                .min();
            tokio::select! {
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    // A batch task only panics on a bug; its events are then
                    // lost to the report, but never double-counted.
                    if let Ok((id, events, report)) = joined {
                        self.resolve(id, events, report);
                    }
                }
                command = self.receiver.recv(), if open => match command {
                    Some(Command::Event { seq, event }) => self.push(seq, event),
                    Some(Command::Flush(reply)) => {
                        self.cut_all();
                        self.waiters.push((self.next_batch_id, reply));
                    }
                    Some(Command::Close { deadline, reply }) => {
                        // Events already in the channel are still taken;
                        // new ones are refused, and waiting `track`s fail.
                        self.receiver.close();
                        self.shared.permits.close();
                        self.shared.cutoff.send_replace(Some(deadline));
                        self.closer = Some(reply);
                    }
                    None => {
                        open = false;
                        self.cut_all();
                    }
                },
                () = sleep_until_or_forever(deadline) => self.cut_lingered(),
            }
            self.answer_waiters();
        }
    }

    /// Answers the closer with everything not reported yet; without one,
    /// logs what nobody will see.
    fn finish(&mut self) {
        let report = std::mem::take(&mut self.report);
        match self.closer.take() {
            Some(closer) => {
                let _ = closer.send(report);
            }
            None if !report.is_success() => tracing::warn!(
                rejected = report.rejected.len(),
                failed = report.failed.len(),
                "sessiondb sender stopped after its handles were dropped; events were \
                 rejected or not delivered, and nobody took the report"
            ),
            None => {}
        }
    }

    fn push(&mut self, seq: u64, event: Event) {
        let partition = self.shared.router.partition(&event);
        let linger = self.shared.config.linger;
        let now = Instant::now();
        let pending = self.buffers.entry(partition).or_insert_with(|| Pending {
            seqs: Vec::new(),
            events: Vec::new(),
            linger_deadline: now + linger,
            first_at: now,
        });
        pending.seqs.push(seq);
        pending.events.push(event);
        if pending.events.len() >= self.shared.config.batch_events_max {
            self.cut(partition);
        }
    }

    /// Moves a partition's buffer to the ready queue as one batch.
    fn cut(&mut self, partition: Partition) {
        let Some(pending) = self.buffers.remove(&partition) else {
            return;
        };
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.unresolved.insert(id);
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.ready.push_back(Batch {
            id,
            seqs: pending.seqs,
            events: pending.events,
            deadline: pending.first_at + self.shared.config.delivery_timeout,
        });
    }

    /// Cuts every buffer (a flush, or the last handle dropped).
    fn cut_all(&mut self) {
        let partitions: Vec<Partition> = self.buffers.keys().copied().collect();
        for partition in partitions {
            self.cut(partition);
        }
    }

    /// Cuts the buffers whose linger time is over.
    fn cut_lingered(&mut self) {
        let now = Instant::now();
        let due: Vec<Partition> = self
            .buffers
            .iter()
            .filter(|(_, pending)| pending.linger_deadline <= now)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in due {
            self.cut(partition);
        }
    }

    fn start_ready_batches(&mut self) {
        while self.in_flight.len() < self.shared.config.in_flight_batches_max {
            let Some(batch) = self.ready.pop_front() else {
                return;
            };
            let shared = Arc::clone(&self.shared);
            let span = tracing::debug_span!(
                "sessiondb_batch",
                batch = batch.id,
                events = batch.events.len()
            );
            self.in_flight.spawn(
                async move {
                    let (id, events) = (batch.id, batch.events.len());
                    (id, events, deliver(&shared, batch).await)
                }
                .instrument(span),
            );
        }
    }

    /// Counts a finished batch of `events` events. The permits given back
    /// are the batch's size, not the node's counts, so a wrong answer can
    /// never loosen the bound.
    fn resolve(&mut self, id: u64, events: usize, report: FlushReport) {
        self.unresolved.remove(&id);
        self.report.merge(report);
        self.shared.permits.add_permits(events);
        self.shared
            .resolved
            .send_modify(|resolved| *resolved += events as u64);
    }

    /// Answers the flush callers whose batches are all resolved; the first
    /// one takes the report gathered so far.
    fn answer_waiters(&mut self) {
        let oldest_unresolved = self.unresolved.first().copied().unwrap_or(u64::MAX);
        let mut index = 0;
        while index < self.waiters.len() {
            if self.waiters[index].0 <= oldest_unresolved {
                let (_, reply) = self.waiters.swap_remove(index);
                // A caller that stopped waiting loses its report; the next
                // flush gets it instead.
                if let Err(report) = reply.send(std::mem::take(&mut self.report)) {
                    self.report.merge(report);
                }
            } else {
                index += 1;
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether an error might go away on its own: nothing answered, or the
/// node (or a proxy in front of it) said "later".
fn is_retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } | ClientError::UnexpectedErrorBody { status, .. } => {
            matches!(status, 429 | 502 | 503 | 504)
        }
        _ => false,
    }
}

/// A part of a batch still to be sent: events of one partition, the number
/// of the next try, and the earliest time to send it.
struct Part {
    seqs: Vec<u64>,
    events: Vec<Event>,
    attempt: u32,
    not_before: Option<Instant>,
}

/// When a refused event is sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// The router routes it elsewhere now: at once.
    Now,
    /// After the backoff of its attempt.
    Later,
}

/// Sends one batch until every event is resolved or the attempts run out.
///
/// A batch starts as one part. Events to resend (overloaded, refused as not
/// owned or moving, or a whole attempt that failed retryably) are grouped
/// again by their partition at that moment — the router may have learned
/// new owners — into parts that go out in turn, each counting its own
/// attempts.
async fn deliver(shared: &Shared, batch: Batch) -> FlushReport {
    let config = &shared.config;
    let mut report = FlushReport::default();
    let mut expired = std::pin::pin!(expiry(batch.deadline, shared.cutoff.subscribe()));
    let mut parts = vec![Part {
        seqs: batch.seqs,
        events: batch.events,
        attempt: 0,
        not_before: None,
    }];
    while let Some(index) = next_part(&parts) {
        let Part {
            seqs,
            mut events,
            attempt,
            not_before,
        } = parts.swap_remove(index);
        let wait = sleep_until_or_now(not_before);
        let timed_out = tokio::select! {
            biased;
            () = &mut expired => true,
            () = wait => false,
        };
        if timed_out {
            parts.push(Part {
                seqs,
                events,
                attempt,
                not_before,
            });
            fail_expired(&mut report, parts);
            break;
        }
        if attempt > 0 {
            shared.retries.fetch_add(1, Ordering::Relaxed);
        }
        let client = shared.router.route(&events, attempt);
        shared.requests_sent.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            attempt,
            node = client.base_url(),
            events = events.len(),
            "sending"
        );
        let last_attempt = attempt + 1 >= config.retry_attempts_max;
        let answer = tokio::select! {
            biased;
            () = &mut expired => {
                parts.push(Part { seqs, events, attempt, not_before });
                fail_expired(&mut report, parts);
                break;
            }
            answer = client.send_compressed(&events, config.encoding, config.compression) => answer,
        };
        match answer {
            Ok(answer) => {
                report.accepted += answer.accepted;
                report.duplicates += answer.duplicates;
                let mut resend: Vec<Option<Resend>> = vec![None; events.len()];
                // One feedback per shard and answer: a batch of a moved shard
                // holds many events with the same news.
                let mut told: BTreeMap<Option<u32>, Resend> = BTreeMap::new();
                for rejection in answer.rejected {
                    let Some(index) = (rejection.index < events.len()).then_some(rejection.index)
                    else {
                        continue; // A node bug; nothing to attribute it to.
                    };
                    if !rejection.reason.is_retryable() || last_attempt {
                        report.rejected.push(RejectedEvent {
                            seq: seqs[index],
                            id: std::mem::take(&mut events[index].id),
                            reason: rejection.reason,
                            message: rejection.message,
                        });
                        continue;
                    }
                    resend[index] = Some(match rejection.reason {
                        RejectCode::NotOwner | RejectCode::ShardMoving => {
                            shared.reroutes.fetch_add(1, Ordering::Relaxed);
                            *told.entry(rejection.shard).or_insert_with(|| {
                                let feedback = if rejection.reason == RejectCode::NotOwner {
                                    Feedback::NotOwner {
                                        shard: rejection.shard,
                                        owner: rejection.owner,
                                        epoch: rejection.epoch,
                                    }
                                } else {
                                    Feedback::ShardMoving {
                                        shard: rejection.shard,
                                        epoch: rejection.epoch,
                                    }
                                };
                                if shared.router.feedback(&client, feedback) {
                                    Resend::Now
                                } else {
                                    Resend::Later
                                }
                            })
                        }
                        _ => Resend::Later,
                    });
                }
                let backoff_until = Instant::now() + backoff(config, attempt);
                let mut regrouped: BTreeMap<(Partition, bool), Part> = BTreeMap::new();
                for ((seq, event), resend) in seqs.into_iter().zip(events).zip(resend) {
                    let Some(resend) = resend else { continue };
                    let partition = shared.router.partition(&event);
                    let now = resend == Resend::Now;
                    let part = regrouped.entry((partition, now)).or_insert_with(|| Part {
                        seqs: Vec::new(),
                        events: Vec::new(),
                        attempt: attempt + 1,
                        not_before: (!now).then_some(backoff_until),
                    });
                    part.seqs.push(seq);
                    part.events.push(event);
                }
                parts.extend(regrouped.into_values());
            }
            Err(error) if is_retryable(&error) && !last_attempt => {
                tracing::debug!(attempt, error = %error, "attempt failed; retrying after a backoff");
                if matches!(error, ClientError::Transport { .. }) {
                    shared.router.feedback(&client, Feedback::Unreachable);
                }
                // The node's `Retry-After` (429, 503) wins over our backoff.
                let backoff_until =
                    Instant::now() + retry_wait(config, attempt, error.retry_after());
                let mut regrouped: BTreeMap<Partition, Part> = BTreeMap::new();
                for (seq, event) in seqs.into_iter().zip(events) {
                    let part = regrouped
                        .entry(shared.router.partition(&event))
                        .or_insert_with(|| Part {
                            seqs: Vec::new(),
                            events: Vec::new(),
                            attempt: attempt + 1,
                            not_before: Some(backoff_until),
                        });
                    part.seqs.push(seq);
                    part.events.push(event);
                }
                parts.extend(regrouped.into_values());
            }
            Err(error) => {
                tracing::warn!(attempt, events = events.len(), error = %error, "events not delivered");
                let error = Arc::new(error);
                report
                    .failed
                    .extend(
                        seqs.into_iter()
                            .zip(events)
                            .map(|(seq, event)| FailedEvent {
                                seq,
                                event,
                                error: Arc::clone(&error),
                            }),
                    );
            }
        }
    }
    report
}

/// Completes at the batch's deadline, or at the close cutoff if that
/// comes first (it may be set while the batch runs).
async fn expiry(deadline: Instant, mut cutoff: watch::Receiver<Option<Instant>>) {
    loop {
        let effective = cutoff
            .borrow_and_update()
            .map_or(deadline, |cutoff| cutoff.min(deadline));
        tokio::select! {
            () = tokio::time::sleep_until(effective) => return,
            changed = cutoff.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
    }
}

/// Fails every event of `parts`: their time is up.
fn fail_expired(report: &mut FlushReport, parts: Vec<Part>) {
    let error = Arc::new(ClientError::DeliveryTimeout);
    let events: usize = parts.iter().map(|part| part.events.len()).sum();
    tracing::warn!(events, "events not delivered in time");
    for part in parts {
        for (seq, event) in part.seqs.into_iter().zip(part.events) {
            report.failed.push(FailedEvent {
                seq,
                event,
                error: Arc::clone(&error),
            });
        }
    }
}

async fn sleep_until_or_now(instant: Option<Instant>) {
    if let Some(instant) = instant {
        tokio::time::sleep_until(instant).await;
    }
}

/// The part to send next: the one that may go earliest.
fn next_part(parts: &[Part]) -> Option<usize> {
    parts
        .iter()
        .enumerate()
        .min_by_key(|(_, part)| part.not_before)
        .map(|(index, _)| index)
}

/// How long to wait before retry `attempt`: the node's `Retry-After` when
/// it sent one (it knows how long its overload lasts; capped at
/// `retry_backoff_max` so a wrong header cannot stall the sender), plus
/// up to a tenth of it as jitter so that refused senders do not come back
/// together; else the exponential backoff.
fn retry_wait(config: &SenderConfig, attempt: u32, asked: Option<Duration>) -> Duration {
    match asked {
        Some(asked) => {
            let asked = asked.min(config.retry_backoff_max);
            asked + asked.mul_f64(rand::random::<f64>() / 10.0)
        }
        None => backoff(config, attempt),
    }
}

/// Exponential backoff with jitter (backon's): the delay doubles from
/// `retry_backoff_initial` per attempt up to `retry_backoff_max`, plus a
/// random part of up to as much again, so that senders that failed
/// together do not retry together.
fn backoff(config: &SenderConfig, attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(config.retry_backoff_initial)
        .with_max_delay(config.retry_backoff_max)
        .with_jitter()
        .with_max_times(attempt as usize + 1)
        .build()
        .nth(attempt as usize)
        .unwrap_or(config.retry_backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_replaces_the_backoff_and_is_capped() {
        let config = SenderConfig {
            retry_backoff_initial: Duration::from_millis(10),
            retry_backoff_max: Duration::from_secs(5),
            ..SenderConfig::default()
        };
        for _ in 0..100 {
            let wait = retry_wait(&config, 0, Some(Duration::from_secs(2))).as_millis() as u64;
            assert!((2_000..=2_200).contains(&wait), "{wait}");
            let capped = retry_wait(&config, 0, Some(Duration::from_secs(60))).as_millis() as u64;
            assert!((5_000..=5_500).contains(&capped), "{capped}");
            // Without a header, the exponential backoff (10 ms at attempt
            // 0, plus up to as much again).
            let own = retry_wait(&config, 0, None).as_millis() as u64;
            assert!((10..=20).contains(&own), "{own}");
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_bounded_jitter() {
        let config = SenderConfig {
            retry_backoff_initial: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            ..SenderConfig::default()
        };
        for (attempt, full_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_000),
            (40, 1_000),
        ] {
            for _ in 0..50 {
                let delay = backoff(&config, attempt).as_millis() as u64;
                assert!(
                    (full_ms..=2 * full_ms).contains(&delay),
                    "attempt {attempt}: {delay} ms outside {full_ms}..={}",
                    2 * full_ms
                );
            }
        }
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let cases = [
            SenderConfig {
                batch_events_max: 0,
                ..SenderConfig::default()
            },
            SenderConfig {
                batch_events_max: 10_001,
                ..SenderConfig::default()
            },
            SenderConfig {
                batch_events_max: 100,
                buffer_events_max: 99,
                ..SenderConfig::default()
            },
            SenderConfig {
                retry_attempts_max: 0,
                ..SenderConfig::default()
            },
            SenderConfig {
                in_flight_batches_max: 0,
                ..SenderConfig::default()
            },
            SenderConfig {
                retry_backoff_initial: Duration::from_millis(10),
                retry_backoff_max: Duration::from_millis(5),
                ..SenderConfig::default()
            },
            SenderConfig {
                delivery_timeout: Duration::ZERO,
                ..SenderConfig::default()
            },
        ];
        for config in cases {
            assert!(
                matches!(config.validate(), Err(ClientError::InvalidConfig { .. })),
                "{config:?}"
            );
        }
        assert!(SenderConfig::default().validate().is_ok());
    }

    #[test]
    fn report_details_are_bounded_and_counted() {
        let mut report = FlushReport::default();
        let rejected = |seq| RejectedEvent {
            seq,
            id: format!("e-{seq}"),
            reason: RejectCode::TooLate,
            message: String::new(),
        };
        report.merge(FlushReport {
            accepted: 3,
            rejected: (0..REPORT_DETAILS_MAX as u64).map(rejected).collect(),
            ..FlushReport::default()
        });
        report.merge(FlushReport {
            duplicates: 2,
            rejected: vec![rejected(1), rejected(2)],
            ..FlushReport::default()
        });
        assert_eq!(report.rejected.len(), REPORT_DETAILS_MAX);
        assert_eq!(report.details_dropped, 2);
        assert_eq!(report.events(), 3 + 2 + REPORT_DETAILS_MAX as u64 + 2);
        assert!(!report.is_success());
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    #[test]
    fn a_sender_outside_a_runtime_is_an_error_not_a_panic() {
        let error = Client::new("http://127.0.0.1:7070")
            .sender(SenderConfig::default())
            .unwrap_err();
        assert!(matches!(error, ClientError::NoRuntime), "{error:?}");
    }

    #[tokio::test]
    async fn a_bound_sender_refuses_events_of_another_project() {
        let sender = Client::new("http://127.0.0.1:7070")
            .sender_for("shop", SenderConfig::default())
            .unwrap();
        let error = sender
            .track(Event::pageview("v-1").project("blog"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::WrongProject { expected, found } if expected == "shop" && found == "blog"),
            "{error:?}"
        );
        assert_eq!(sender.stats().events_tracked, 0);
    }
}
