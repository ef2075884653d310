//! The node's integration tests, in one binary so that the node library and
//! its dependencies are linked once rather than once per file (each file
//! directly in `tests/` would be a binary of its own).
//!
//! Run one area with a module filter, e.g.
//! `cargo test -p sessiondb-node --test it durability::`.
//!
//! - against one real node (`sessiondb serve` over loopback HTTP): `api`,
//!   `actor_failure`,
//!   `bad_input`, `limits`, `admin_auth`, `security`, `tls`, `logging`,
//!   `metrics`, `oracle`, `order_independence`, `compat_optimizely`,
//!   `compat_segment`, `durability`, `statistics`, `ingest_limits`,
//!   `weights` (and a cluster of two);
//! - against real multi-node clusters: `cluster`, `cluster_membership`,
//!   `cluster_identity`, `cluster_degraded`, `cluster_query`,
//!   `cluster_routing`, `shard_moves`;
//! - the admin console in headless Chromium: `console`, `console_cluster`;
//! - cross-origin ingest over HTTP and in headless Chromium: `cors`;
//! - the real Optimizely and Segment Python libraries (from PyPI) against
//!   one node: `real_sdks`;
//! - engines in process (no sockets): `shard_handoff`, `fuzz_decoders`.
//!
//! `support` holds every helper the modules share.

mod support;

mod actor_failure;
mod admin_auth;
mod api;
mod bad_input;
mod cluster;
mod cluster_degraded;
mod cluster_identity;
mod cluster_membership;
mod cluster_query;
mod cluster_routing;
mod compat_optimizely;
mod compat_segment;
mod compression;
mod console;
mod console_cluster;
mod cors;
mod durability;
mod fsync_trace;
mod fuzz_decoders;
mod ingest_limits;
mod limits;
mod logging;
mod metrics;
mod oracle;
mod order_independence;
mod real_sdks;
mod security;
mod shard_handoff;
mod shard_moves;
mod statistics;
mod tls;
mod weights;
