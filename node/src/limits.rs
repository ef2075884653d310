//! The bounds a client can hit — request, batch, event and query sizes,
//! project counts, queueing waits, per-credential and per-project limits —
//! and the bounds of the engine's actors, with their units in their names.
//! `docs/api.md` lists the ones a client can hit, with the answer it gets.
//!
//! Every other limit is named too, next to the code it sizes (a rule: a
//! bound sits here when a client can hit it; otherwise it sits with its
//! module):
//!
//! - the ingest log: `log::LogConfig` and its `*_DEFAULT`s (segment, record,
//!   group-commit and queue sizes);
//! - the replicated log: `replication::ReplicatedLogConfig` (entry cache,
//!   read and carry-forward sizes) on top of a `LogConfig`;
//! - the cluster: `cluster::placement::RaftConfig` (Raft timing),
//!   `cluster::peer` (one wait per internal route), `cluster::moves`
//!   (rebalance size, concurrent moves), `cluster::planner`,
//!   `cluster::leader`, `cluster::startup` (join attempts), the learner and
//!   bootstrap waits in `cluster::placement::membership`, and
//!   `cluster::MOVE_VISIBLE_WAIT_MS`;
//! - HTTP bodies other than ingest: `http::shards::IMPORT_BODY_BYTES_MAX`
//!   and the private `*_BODY_BYTES_MAX` of `http::{mod, cluster, projects,
//!   query}`;
//! - credentials: `keys` (rotation grace) and `admin_token` (token length);
//! - recovery: the replay batch bounds in `engine::durability`;
//! - project settings' ranges: `project::Settings::patched`;
//! - the binary batch format: `sessiondb_protocol::binary`;
//! - numerical iteration caps of the statistics: `stats`;
//! - test and demo hooks: the fault route's wait in `http::admin`, the
//!   demo feed's visitors in `demo`.
//!
//! `docs/operations.md`, "Limits", names every one with its default and
//! unit.

/// Largest ingest request body.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most events in one ingest batch.
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// Longest event id.
pub const ID_BYTES_MAX: usize = 128;
/// Longest visitor id.
pub const VISITOR_BYTES_MAX: usize = 256;
/// Longest event key. (Conversion keys in a query are bounded in number,
/// `QUERY_KEYS_MAX`, not in length: a longer key matches nothing.)
pub const KEY_BYTES_MAX: usize = 128;
/// Most attributes of one event that are looked at; the ones beyond it (in
/// name order, after the project's breakdown attributes) are dropped and
/// counted, the event is kept.
pub const ATTRIBUTES_MAX: usize = 32;
/// Longest attribute name; a longer one names no breakdown attribute and is
/// dropped.
pub const ATTRIBUTE_NAME_BYTES_MAX: usize = 64;
/// Longest attribute value kept; a longer one is cut at a UTF-8 character
/// boundary and counted, the event is kept.
pub const ATTRIBUTE_VALUE_BYTES_MAX: usize = 256;
/// Most experiments one project has on one node; an event naming one more
/// is rejected `cardinality_limit` (`engine::cardinality`).
pub const EXPERIMENTS_PER_PROJECT_MAX: usize = 1_000;
/// Most variations one experiment has on one node; an event naming one more
/// is rejected `cardinality_limit`.
pub const VARIATIONS_PER_EXPERIMENT_MAX: usize = 1_000;
/// Most conversion keys (event `key`s) one project has on one node; an
/// event with one more is rejected `cardinality_limit`.
pub const CONVERSION_KEYS_PER_PROJECT_MAX: usize = 1_000;
/// Most distinct values of one breakdown attribute in one experiment on one
/// node; further values are counted under `(other)`.
pub const BREAKDOWN_VALUES_PER_ATTRIBUTE_MAX: usize = 1_000;
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
/// Most variations one results query may give an expected allocation weight
/// (`weights`, for the sample ratio mismatch check).
pub const QUERY_WEIGHTS_MAX: usize = 64;
/// Most variations an experiment's stored allocation weights may name
/// (`PUT /v1/projects/{p}/experiments/{e}/weights`).
pub const EXPERIMENT_WEIGHTS_VARIATIONS_MAX: usize = 64;
/// Most experiments of one project with stored allocation weights: each is
/// kept in the placement state every member holds.
pub const WEIGHTED_EXPERIMENTS_PER_PROJECT_MAX: usize = 1_000;
/// Smallest stored allocation weight: a weight is a ratio (1:1, 2:1), and
/// one below this is a typo rather than an allocation.
pub const EXPERIMENT_WEIGHT_MIN: f64 = 0.001;
/// Largest stored allocation weight.
pub const EXPERIMENT_WEIGHT_MAX: f64 = 1_000_000.0;
/// Most buckets one results or time-series query may span.
pub const QUERY_BUCKETS_MAX: i64 = 24 * 400;
/// Most points one time-series answer may hold per variation.
pub const TIMESERIES_POINTS_MAX: i64 = 2_000;
/// Most shards a node can be created with.
pub const SHARDS_MAX: u32 = 4_096;
/// Most aggregate actors (`--segment-actors`) a node can run.
pub const AGGREGATE_ACTORS_MAX: usize = 256;
/// Most messages waiting in front of one shard or aggregate actor.
/// Ractor mailboxes are unbounded; this bound is enforced with a semaphore.
pub const ACTOR_QUEUE_MESSAGES_MAX: usize = 64;
/// How long an ingest request waits for room in a full shard queue before
/// the node answers `overloaded`.
pub const INGEST_QUEUE_WAIT_MS: u64 = 5_000;
/// How long a request waits for room at an actor, and then for its reply,
/// before giving up (queries, status, the checkpoint's copies).
pub const ACTOR_REPLY_WAIT_MS: u64 = 30_000;
/// How long a change that actors apply in log order (an ingest record, a
/// replayed batch, a reconfiguration, a shard replaced) may take before
/// its caller stops waiting; the change itself stays queued and is applied
/// in order. Longer than `LOG_SYNC_WAIT_MS`: an ingest record waits for
/// its sync before it is applied.
pub const ACTOR_APPLY_WAIT_MS: u64 = 2 * LOG_SYNC_WAIT_MS;
/// How long a node whose actor failed keeps answering (`/v1/ready` says
/// `503 actor_failed`, work is refused) before it stops, so that load
/// balancers see it leave (`docs/operations.md`, "Actor failures").
pub const ACTOR_FAILURE_STOP_DELAY_MS: u64 = 5_000;
/// How long a shard actor waits for the log to sync a record before it
/// treats the log as failed.
pub const LOG_SYNC_WAIT_MS: u64 = 60_000;
/// Most deltas one shard actor sends to one aggregate actor in one message.
pub const DELTAS_PER_MESSAGE_MAX: usize = 65_536;
/// How long the HTTP server lets requests in flight finish when the node
/// stops before it drops them.
pub const SHUTDOWN_WAIT_SECONDS: u64 = 10;

// Settings an operator may change (flag and configuration file key, see
// `cli::ServeArgs` and the limits table in docs/operations.md). These are
// their defaults.

/// Default of `--connections-max`: open HTTP connections the node keeps at
/// once, over all workers. Beyond it, new connections wait in the kernel's
/// accept queue until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 2_048;
/// Default of `--requests-in-flight-per-credential-max`: requests one
/// credential (bearer token, basic-auth user; without one, the client's IP
/// address) may have in flight at once; beyond it, `429 too_many_requests`.
pub const REQUESTS_IN_FLIGHT_PER_CREDENTIAL_MAX_DEFAULT: usize = 256;
/// Default of `--query-cost-max`: most cell-buckets (time buckets × cells)
/// one results or time-series query may touch; beyond it,
/// `422 query_too_expensive`.
pub const QUERY_COST_MAX_DEFAULT: u64 = 1_000_000;
/// Default of `--ingest-queue-wait-ms`: how long an ingest request waits
/// for room (the sequencer, a full shard queue, the log's group-commit
/// backlog) before the node answers `503 overloaded`.
pub const INGEST_QUEUE_WAIT_MS_DEFAULT: u64 = INGEST_QUEUE_WAIT_MS;
/// Default of `--checkpoint-log-bytes-max`: a checkpoint is taken once
/// the log grew by this much since the last one. Recovery replays about
/// this much log (`docs/benchmarks.md`, "Durability": replay runs at
/// ~0.9 M events/s, ~51 log bytes per event), so ~2.6 M events, ~3 s.
pub const CHECKPOINT_LOG_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// How often the log's growth is compared with `--checkpoint-log-bytes-max`.
pub const CHECKPOINT_LOG_CHECK_INTERVAL_MS: u64 = 1_000;
/// `Retry-After` of `503 overloaded` and `429 too_many_requests`: long
/// enough for a queue of `ACTOR_QUEUE_MESSAGES_MAX` batches to drain.
pub const OVERLOAD_RETRY_AFTER_SECONDS: u64 = 1;
/// Most distinct credentials (and client addresses) tracked by the
/// in-flight limit at once; entries exist only while a request is in
/// flight, so this bounds memory under a flood of made-up tokens. Beyond
/// it, new credentials get `429 too_many_requests`.
pub const CREDENTIALS_TRACKED_MAX: usize = 100_000;
/// Most projects tracked by the per-project event rate limit (one token
/// bucket each); equal to `PROJECTS_MAX`, so every project has one.
pub const RATE_LIMITED_PROJECTS_MAX: usize = PROJECTS_MAX;
