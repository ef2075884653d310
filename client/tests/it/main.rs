//! The client crate's integration tests, in one binary so that the client,
//! its dependencies and the test support are linked once:
//!
//! - `sender`: the `Sender` against the real node binary;
//! - `routing`: the sender with a `ShardMapRouter` against in-process fake
//!   nodes that refuse on cue;
//! - `cli`: the `sessiondb-ctl` binary against the real node;
//! - `api`: `Client` calls against the real node (range alignment, gzip,
//!   credentials);
//! - `examples`: the documented examples, run against a real node.
//!
//! Run one area with a module filter, e.g.
//! `cargo test -p sessiondb-client --test it sender::`.

mod support;

mod api;
mod cli;
mod examples;
mod routing;
mod sender;
