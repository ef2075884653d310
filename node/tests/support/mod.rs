//! Shared test support: a seeded workload generator, the oracle (a plain batch
//! computation of `docs/semantics.md`), a handle on the real `sessiondb`
//! binary, and headless Chromium for the console tests.
//!
//! Every file in `tests/` is its own crate and uses only part of this module,
//! so unused helpers are expected in some of them.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod node;
pub mod oracle;
pub mod workload;
