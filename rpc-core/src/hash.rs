//! A fast, randomly seeded hasher for the hot-path maps (pending calls,
//! the reply history's sessions, services by name).
//!
//! std's default SipHash-1-3 cost about 140 instructions per lookup on the
//! per-call path, nine lookups a call. This is a folded multiply (as in
//! foldhash and wyhash): each 8-byte word is mixed with a per-map random
//! seed by a 64x64->128-bit multiply whose halves are xored. Keys such as
//! client-chosen session ids come from the network, so the seed is random
//! per map (from std's `RandomState`): without it, a peer could pick ids
//! that all fall into one bucket. It is not a cryptographic hash.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Multiplier constants (odd, from the fractional digits of pi).
const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7345;

/// `a * b` as 128 bits, halves xored.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a).wrapping_mul(u128::from(b));
    (m as u64) ^ ((m >> 64) as u64)
}

/// Builds [`FastHasher`]s with a seed chosen at random when the map is made.
#[derive(Clone, Debug)]
pub(crate) struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> FastState {
        // RandomState's keys are random per process and advance per
        // instance; hashing a constant with them yields a fresh seed.
        let seed = RandomState::new().hash_one(0x5eed_u64);
        FastState { seed: seed | 1 }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { state: self.seed }
    }
}

/// The hasher of [`FastState`].
#[derive(Debug)]
pub(crate) struct FastHasher {
    state: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // One more round so that the high bits (hashbrown's tag) depend on
        // every input bit.
        fold(self.state ^ K1, K0)
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.state = fold(self.state ^ n, K0);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word.get_mut(..rest.len())
            .unwrap_or_default()
            .copy_from_slice(rest);
        // The length goes in too, so that "ab" and "ab\0" differ.
        self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
    }
}

/// A `HashMap` with [`FastState`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;
/// A `HashSet` with [`FastState`].
pub(crate) type FastSet<T> = std::collections::HashSet<T, FastState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        let state = FastState::default();
        let hashes: Vec<u64> = (1..=4096u64).map(|id| state.hash_one(id)).collect();
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(
            buckets.len() > 900,
            "{} of 1024 buckets used",
            buckets.len()
        );
        assert_eq!(tags.len(), 128, "every 7-bit tag appears");
    }

    #[test]
    fn seeds_differ_between_maps_and_strings_hash_by_content() {
        let (a, b) = (FastState::default(), FastState::default());
        assert_ne!(a.hash_one(42u64), b.hash_one(42u64));
        assert_eq!(a.hash_one("demo.v1.Counter"), a.hash_one("demo.v1.Counter"));
        assert_ne!(a.hash_one("demo.v1.Counter"), a.hash_one("demo.v1.Counte"));
        assert_ne!(a.hash_one("ab"), a.hash_one("ab\0"));
        let mut map: FastMap<&str, u32> = FastMap::default();
        map.insert("x", 1);
        assert_eq!(map.get("x"), Some(&1));
    }
}
