//! What the node's integration tests share: a handle on the real `sessiondb`
//! binary, clusters of them, headless Chromium for the console tests and
//! the seeded workload generator. The oracle and the one bounded wait
//! (`eventually`) are shared with the other crates' tests through
//! `sessiondb-test-support`.

pub mod browser;
pub mod cluster;
pub mod node;
pub mod workload;
