//! The hasher of the hot-path maps (pending calls, the reply history's
//! sessions, services by name): `foldhash`'s quality hasher. std's default
//! SipHash-1-3 cost about 140 instructions per lookup on the per-call path,
//! nine lookups a call. Not `foldhash::fast`: with some process seeds it
//! put 4,096 sequential ids (what call ids and session counters are) into
//! half of 1,024 buckets; the quality variant's extra multiply spreads them
//! for every seed tried.
//!
//! Keys such as client-chosen session ids come from the network, so each
//! map gets its own random seed (`foldhash::quality::RandomState`): without
//! it, a peer could pick ids that all fall into one bucket. It is not a
//! cryptographic hash (the address-validation cookie uses a keyed SipHash,
//! `server/verify.rs`).

#[cfg(test)]
use std::hash::BuildHasher;

/// Builds the hot-path maps' hashers, with a random seed per map.
pub(crate) type FastState = foldhash::quality::RandomState;

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
