//! Distinct-count sketches behind a narrow type, so the representation can
//! change (SPEC §2: "put a better-suited piece behind the same narrow
//! interface") without touching the segment store.
//!
//! Today: hyperloglogplus' HyperLogLog++ with a fixed-key SipHash. Every node
//! must hash with the same keys — sketches built with different hashers merge
//! silently wrong (SPEC §10).

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;
use std::hash::BuildHasher;

const SKETCH_HASH_KEY_0: u64 = 0x5e55_1014_db00_0011;
const SKETCH_HASH_KEY_1: u64 = 0x5e55_1014_db00_0012;

/// Builds SipHash-1-3 hashers with constant keys.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FixedKeyHasher;

impl BuildHasher for FixedKeyHasher {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(SKETCH_HASH_KEY_0, SKETCH_HASH_KEY_1)
    }
}

/// A HyperLogLog++ sketch of visitor hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sketch {
    inner: HyperLogLogPlus<u64, FixedKeyHasher>,
}

impl Sketch {
    pub fn new(precision: u8) -> Sketch {
        let inner = HyperLogLogPlus::new(precision, FixedKeyHasher)
            .expect("precision is validated by project settings (4..=18)");
        Sketch { inner }
    }

    pub fn insert(&mut self, visitor_hash: u64) {
        self.inner.insert(&visitor_hash);
    }

    /// Adds every element of `other`. Both must have the same precision,
    /// which holds because a project's precision never changes.
    pub fn merge(&mut self, other: &Sketch) {
        self.inner
            .merge(&other.inner)
            .expect("sketches of one project share a precision");
    }

    /// The estimated number of distinct elements. Takes `&mut self` because
    /// hyperloglogplus flushes its insertion buffer here.
    pub fn estimate(&mut self) -> f64 {
        self.inner.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_estimate_counts_each_element_once() {
        let mut left = Sketch::new(14);
        let mut right = Sketch::new(14);
        for visitor in 0..30_000_u64 {
            left.insert(visitor);
        }
        for visitor in 20_000..50_000_u64 {
            right.insert(visitor);
        }
        left.merge(&right);
        let estimate = left.estimate();
        let relative_error = (estimate - 50_000.0).abs() / 50_000.0;
        assert!(relative_error < 0.04, "estimate {estimate}");
        let mut small = Sketch::new(14);
        for visitor in [7_u64, 7, 8] {
            small.insert(visitor);
        }
        assert!((small.estimate() - 2.0).abs() < 0.01);
    }
}
