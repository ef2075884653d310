//! The chaos crate's integration tests, in one binary (the harness, the
//! client and their dependencies are linked once). Both need Docker Engine
//! and the image (`cluster-config/build-image`):
//!
//! - `chaos`: the short chaos profile;
//! - `docker`: the `FROM scratch` image and the compose cluster.
//!
//! Run one with a module filter, e.g.
//! `cargo test -p sessiondb-chaos-tests --test it chaos::`.

mod chaos;
mod docker;

/// One Docker cluster at a time: the chaos runs and the image tests take
/// turns, so the 2-core machine is not swamped and the compose cluster's
/// fixed network never meets a run's.
static DOCKER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
