//! SessionDB node: a clustered, in-memory counting database for
//! experimentation and product analytics (see `docs/architecture.md`).
//!
//! Layers, each depending only on the ones above it:
//!
//! - `limits`, `clock`, `hashing`, `keys`, `admin_token`, `metrics`, `tls`:
//!   named bounds, the injectable clock, stable hashes, credentials, metric
//!   primitives, the TLS server configuration.
//! - `project`: projects and their settings.
//! - `event`: the internal event and validation from the wire event.
//! - `stats`: the statistics of a results page (pure math).
//! - `log`, `checkpoint`: the durable ingest log and the checkpoint store.
//! - `engine`: shard and aggregate actors under a supervisor, ingest,
//!   this node's query shares — behind `Engine`. Knows nothing of the
//!   cluster.
//! - `project_rates`: accepted events per project (console rates, metrics).
//! - `replication`: the shard groups' Raft — every group's openraft log in
//!   one shared, group-committed log, and a group's replica (its Raft, the
//!   `GroupApply` state machine, snapshots, transport). Knows nothing of
//!   events or the engine; not started by the node yet.
//! - `cluster`: placement (the openraft group; with `replication` the only
//!   modules that import openraft), the one `PeerClient`, the `QueryCoordinator`, the leader
//!   path, shard moves, startup. Drives the engine; never imports `http`.
//! - `http`: the edge — the public API and the server side of the internal
//!   routes; the only module that knows the public wire types' JSON shape
//!   besides `event` validation.
//! - `server`, `cli`, `demo`: the process: configuration, listener (HTTPS
//!   when configured), shutdown (also after an actor failure), the
//!   synthetic workload.

pub mod admin_token;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod demo;
pub mod durable_file;
pub mod engine;
pub mod event;
pub mod experiment_aliases;
pub mod hashing;
pub mod http;
pub mod keys;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod project;
pub mod project_rates;
pub mod replication;
pub mod server;
pub mod stats;
pub mod tls;
