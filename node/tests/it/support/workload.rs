//! The seeded workload generator lives in the `sessiondb-workload` crate
//! (`workload/`), shared with the benchmark harness.

pub use sessiondb_workload::*;
