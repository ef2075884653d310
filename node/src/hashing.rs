//! Stable hashes. Every node must compute the same shard for a visitor and
//! the same sketch hash for a visitor, forever: these keys are part of the
//! on-disk and on-wire format and must never change.
//!
//! The shard function lives in `sessiondb_protocol::hashing`, shared with
//! the client, which routes events to their shard's owner with it.

use sessiondb_protocol::hashing::{pair_hash, HashKeys, SHARD_KEYS};

pub use sessiondb_protocol::hashing::shard_of;

const SKETCH_KEYS: HashKeys = HashKeys(0x5e55_1014_db00_0003, 0x5e55_1014_db00_0004);

/// The aggregate actor responsible for an experiment's aggregates, of
/// `segments` aggregate actors.
pub fn aggregate_actor_of(project: &str, experiment: &str, segments: usize) -> usize {
    assert!(segments > 0);
    (pair_hash(SHARD_KEYS, project, experiment) % segments as u64) as usize
}

/// The value a visitor contributes to distinct-count sketches. Independent
/// of the shard hash so that a shard's visitors still spread over all
/// sketch registers.
pub fn sketch_hash_of(project: &str, visitor: &str) -> u64 {
    pair_hash(SKETCH_KEYS, project, visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_hash_is_independent_of_the_shard_hash() {
        assert_eq!(
            sketch_hash_of("shop", "visitor-1"),
            sketch_hash_of("shop", "visitor-1")
        );
        assert_ne!(
            sketch_hash_of("shop", "visitor-1"),
            pair_hash(SHARD_KEYS, "shop", "visitor-1")
        );
    }
}
