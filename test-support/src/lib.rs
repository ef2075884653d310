//! What SessionDB's tests share, in one place instead of copies:
//!
//! - [`oracle`]: a plain batch computation of `docs/semantics.md`, the
//!   reference every exact metric of the engine is checked against (node
//!   tests, property tests, the chaos harness);
//! - [`eventually`]: the one way a test waits for a condition, polling it
//!   with a bound to fail at rather than sleeping;
//! - [`TempDir`]: a temporary directory removed on drop.

pub mod eventually;
pub mod oracle;
mod temp_dir;

pub use eventually::{eventually, poll_until, TimedOut, POLL_INTERVAL};
pub use temp_dir::TempDir;
