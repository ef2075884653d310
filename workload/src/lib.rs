//! Seeded workload generators shared by the oracle tests (`node/tests/`)
//! and the benchmark harness (`bench/`, `scripts/bench`).
//!
//! Two generators, one vocabulary (the wire `sessiondb_protocol::Event`):
//!
//! - **Mixed** (`generate`, `WorkloadConfig`, `Workload`; re-exported from
//!   `mixed`): a few thousand visitors built to hit every corner of
//!   `docs/semantics.md` — several experiments, events exactly at the
//!   session gap, ties broken by id, midnights, conflicting and repeated
//!   decisions, several decisions per event, RFC 3339 timestamps, values
//!   that exercise micro-unit rounding. Events are owned `Event`s; the
//!   oracle reads `Workload::distinct`, the node gets `Workload::arrival`.
//! - **Scale** (`scale::generate_scale`, `ScaleConfig`, `ScaleWorkload`):
//!   the benchmark shape of `docs/benchmarks.md` — one experiment with 10 variations, a
//!   `browser` breakdown with 10 Zipf-distributed values, millions of
//!   visitors with 1–5 sessions of pageviews, clicks, `add_to_cart` and
//!   `purchase` (integer revenue in minor units). Events are kept as
//!   compact `ScaleEvent`s (~32 bytes) and turned into wire events
//!   (`ScaleWorkload::to_event`), NDJSON (`write_ndjson`) or a flat CSV for
//!   the SQL peers (`write_csv`) on demand. Its guarantees (one decision per
//!   event, sessions under 12 h, ids ordered like event time) keep the
//!   peers' SQL simple and exact; they are listed in `scale`.
//!
//! Both model disorder the same way: first what really happened (event
//! time), then arrival: a configurable share of events delivered late
//! (out of order), decisions delivered after the visitor's later events,
//! and exact re-sent duplicates (same id, same content). Everything is
//! deterministic in the seed.

mod mixed;
pub mod scale;

pub use mixed::*;
pub use scale::{generate_scale, ScaleConfig, ScaleEvent, ScaleKind, ScaleWorkload};
