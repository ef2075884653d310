//! SessionDB node: a clustered, in-memory counting database for
//! experimentation and product analytics (see `docs/architecture.md`).
//!
//! Layers, each depending only on the ones above it:
//!
//! - `limits`, `clock`, `hashing`: named bounds, the injectable clock,
//!   stable hashes.
//! - `project`: projects and their settings.
//! - `event`: the internal event and validation from the wire event.
//! - `stats`: the statistics of a results page (pure math).
//! - `project_rates`: accepted events per project (console rates, metrics).
//! - `engine`: session actors, segment actors, queries — behind `Engine`.
//! - `placement`: the control plane — the openraft group that replicates
//!   members, the shard map and project configurations.
//! - `replication`: the data plane's storage — every shard group's openraft
//!   log in one shared, group-committed log. With `placement`, the only
//!   modules that import openraft.
//! - `http`: the HTTP API; the only module that knows the wire types'
//!   JSON shape besides `event` validation.
//! - `server`, `cli`, `admin_token`, `cluster_startup`, `demo`, `tls`: the
//!   process: configuration, the admin token and cluster secret, listener
//!   (HTTPS when configured), bootstrapping or joining the cluster,
//!   shutdown, the synthetic workload.

pub mod admin_token;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod demo;
pub mod engine;
pub mod event;
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
