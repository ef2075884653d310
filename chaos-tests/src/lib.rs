//! Fault-injection tests against a cluster of real SessionDB nodes
//! (`docs/reliability.md`).
//!
//! A run ([`run::run`]) starts a cluster of the `FROM scratch` image in
//! Docker ([`cluster`]), drives concurrent clients that record every
//! operation ([`history`]) while a seeded schedule of faults ([`nemesis`])
//! and background shard moves hit the cluster, heals, reads every shard
//! back, and checks the history ([`check`]). The [`Seed`] fixes everything
//! that is random and is printed with every failing run.

pub mod api;
pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod run;

use std::fmt;
use std::str::FromStr;

/// The environment variable that fixes a run's seed.
pub const SEED_ENV: &str = "CHAOS_SEED";

/// The seed used when [`SEED_ENV`] is unset, so that a plain `cargo test`
/// is deterministic. Vary it explicitly to explore other schedules.
pub const SEED_DEFAULT: u64 = 1;

/// The seed of one chaos run: every random choice of the run (fault
/// schedule, client operations, timings) is derived from it, so the same
/// seed replays the same run.
///
/// It displays as `CHAOS_SEED=<n>`, exactly what to put in front of the
/// test command to replay a failure, and parses back from that form (or
/// from the bare number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seed(pub u64);

impl Seed {
    /// The seed from [`SEED_ENV`], or [`SEED_DEFAULT`] if it is unset.
    ///
    /// # Errors
    ///
    /// A set but unparsable value is an error rather than silently replaced,
    /// so a mistyped replay seed cannot run a different schedule.
    pub fn from_env() -> Result<Seed, ParseSeedError> {
        match std::env::var(SEED_ENV) {
            Ok(text) => text.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Seed(SEED_DEFAULT)),
            Err(std::env::VarError::NotUnicode(text)) => Err(ParseSeedError {
                text: text.to_string_lossy().into_owned(),
            }),
        }
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SEED_ENV}={}", self.0)
    }
}

impl FromStr for Seed {
    type Err = ParseSeedError;

    /// Accepts `CHAOS_SEED=<n>` (as printed by `Display`) or a bare `<n>`.
    fn from_str(text: &str) -> Result<Seed, ParseSeedError> {
        let trimmed = text.trim();
        let number = trimmed
            .strip_prefix(SEED_ENV)
            .and_then(|rest| rest.strip_prefix('='))
            .unwrap_or(trimmed);
        number.parse().map(Seed).map_err(|_| ParseSeedError {
            text: text.to_string(),
        })
    }
}

/// A seed that is not a `u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSeedError {
    text: String,
}

impl fmt::Display for ParseSeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid seed {:?}: expected an unsigned 64-bit integer, e.g. {}",
            self.text,
            Seed(SEED_DEFAULT)
        )
    }
}

impl std::error::Error for ParseSeedError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_round_trips_through_display_and_parse() {
        for n in [0, 1, 42, u64::MAX] {
            let seed = Seed(n);
            let printed = seed.to_string();
            assert_eq!(printed, format!("CHAOS_SEED={n}"));
            assert_eq!(printed.parse::<Seed>(), Ok(seed));
            assert_eq!(n.to_string().parse::<Seed>(), Ok(seed));
        }
    }

    #[test]
    fn invalid_seeds_are_rejected() {
        for text in [
            "",
            "CHAOS_SEED=",
            "-1",
            "abc",
            "CHAOS_SEED=18446744073709551616",
        ] {
            assert!(text.parse::<Seed>().is_err(), "{text:?} parsed");
        }
    }
}
