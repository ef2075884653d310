//! Every bound the node enforces, in one place, with its unit in its name.
//!
//! A limit that is not named here does not exist. `docs/api.md` lists the
//! ones a client can hit.

/// Largest ingest request body.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most events in one ingest batch.
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// Longest event id.
pub const ID_BYTES_MAX: usize = 128;
/// Longest visitor id.
pub const VISITOR_BYTES_MAX: usize = 256;
/// Longest event key (also conversion keys in queries).
pub const KEY_BYTES_MAX: usize = 128;
/// Most attributes on one event.
pub const ATTRIBUTES_MAX: usize = 32;
/// Longest attribute name.
pub const ATTRIBUTE_NAME_BYTES_MAX: usize = 64;
/// Longest attribute value.
pub const ATTRIBUTE_VALUE_BYTES_MAX: usize = 256;
/// Most decisions on one event.
pub const DECISIONS_MAX: usize = 16;
/// Longest experiment or variation name.
pub const DECISION_NAME_BYTES_MAX: usize = 128;
/// Largest absolute event value. Values are kept in micro-units in `i64`,
/// and 1e12 × 1e6 stays well inside it.
pub const VALUE_ABS_MAX: f64 = 1e12;
/// Most events a visitor holds inside the horizon (retained, not frozen).
/// Bounds the cost of re-evaluating one visitor.
pub const VISITOR_EVENTS_MAX: usize = 10_000;
/// Longest project name.
pub const PROJECT_NAME_BYTES_MAX: usize = 64;
/// Most projects on one cluster.
pub const PROJECTS_MAX: usize = 1_000;
/// Most breakdown attributes per project.
pub const BREAKDOWN_ATTRIBUTES_MAX: usize = 16;
/// Most conversion keys in one results query.
pub const QUERY_KEYS_MAX: usize = 32;
/// Most buckets one results or time-series query may span.
pub const QUERY_BUCKETS_MAX: i64 = 24 * 400;
/// Most points one time-series answer may hold per variation.
pub const TIMESERIES_POINTS_MAX: i64 = 2_000;
/// Most shards a node can be created with.
pub const SHARDS_MAX: u32 = 4_096;
/// Most messages waiting in front of one session or segment actor.
/// Ractor mailboxes are unbounded; this bound is enforced with a semaphore.
pub const ACTOR_QUEUE_MESSAGES_MAX: usize = 64;
/// How long an ingest request waits for room in a full shard queue before
/// the node answers `overloaded`.
pub const INGEST_QUEUE_WAIT_MS: u64 = 5_000;
/// How long a request waits for an actor's reply before giving up.
pub const ACTOR_REPLY_WAIT_MS: u64 = 30_000;
/// How long a session actor waits for the log to sync a record before it
/// treats the log as failed.
pub const LOG_SYNC_WAIT_MS: u64 = 60_000;
/// Most deltas one session actor sends to one segment actor in one message.
pub const DELTAS_PER_MESSAGE_MAX: usize = 65_536;
