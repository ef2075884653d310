//! The shard function, shared by the node (which stores a visitor in its
//! shard) and the client (which sends the visitor's events to the shard's
//! owner). One implementation for both, so they cannot disagree.
//!
//! The keys are part of the on-disk and on-wire format: changing one moves
//! every visitor to another shard. [`SHARD_HASH`] names this function in
//! `GET /v1/shard-map`, so a client can refuse a map computed by a function
//! it does not know.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The name of the shard function, as `GET /v1/shard-map` reports it:
/// SipHash-1-3 of the length-prefixed (project, visitor) with
/// [`SHARD_KEYS`], modulo the shard count.
pub const SHARD_HASH: &str = "siphash13-v1";

/// Two SipHash keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKeys(pub u64, pub u64);

/// The keys of the shard hash (and of the node's segment hash).
pub const SHARD_KEYS: HashKeys = HashKeys(0x5e55_1014_db00_0001, 0x5e55_1014_db00_0002);

/// SipHash-1-3 of two strings under `keys`. Length prefixes keep
/// ("ab", "c") and ("a", "bc") apart.
pub fn pair_hash(keys: HashKeys, first: &str, second: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(keys.0, keys.1);
    hasher.write_u64(first.len() as u64);
    hasher.write(first.as_bytes());
    hasher.write_u64(second.len() as u64);
    hasher.write(second.as_bytes());
    hasher.finish()
}

/// The virtual shard of a visitor: stable hash of (project, visitor),
/// modulo `shards` (which must be at least 1).
pub fn shard_of(project: &str, visitor: &str, shards: u32) -> u32 {
    assert!(shards > 0, "a cluster has at least one shard");
    (pair_hash(SHARD_KEYS, project, visitor) % u64::from(shards)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shard hash of ("shop", "visitor-1"), as computed since the
    /// first release.
    const PINNED_HASH: u64 = 14_092_242_719_749_956_939;

    #[test]
    fn shard_values_are_pinned() {
        // If these change, data on disk and events in flight land in the
        // wrong shard: the keys and the encoding must never change.
        assert_eq!(pair_hash(SHARD_KEYS, "shop", "visitor-1"), PINNED_HASH);
        assert_eq!(
            shard_of("shop", "visitor-1", 256),
            (PINNED_HASH % 256) as u32
        );
        assert_ne!(
            pair_hash(SHARD_KEYS, "ab", "c"),
            pair_hash(SHARD_KEYS, "a", "bc"),
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
