//! In-process store: the memory backend's engine, generic over key and value so that Rust
//! tests use plain types and the Python adapter stores Python objects.
//!
//! * [`MemStore`] is the single-threaded store: a `hashbrown::HashTable` of slot indices keyed
//!   by the caller's 64-bit hash (each beside 32 check bits of that hash, so that a false match
//!   of hashbrown's 7-bit tag never loads the slot, INV-M4), a vector of slots holding key,
//!   value, stamp and generation,
//!   and the one SIEVE list ([`crate::policy`] over [`crate::policy::VecSlots`], INV-1). Exact
//!   SIEVE over the whole cache: never more than `max_size` entries, every slot used before
//!   the first eviction, slot storage allocated as entries arrive.
//! * [`SyncMemStore`] wraps it for free-threaded use with [`crate::sync::RwLock`]: hits under
//!   the read lock (visited bits are atomics), misses, evictions and clear under the write
//!   lock. There is one store and one SIEVE list, so exactness and the bound hold under any
//!   interleaving.
//!
//! Two APIs:
//! * the *raw* API ([`MemStore::candidates`], [`MemStore::hit`], [`MemStore::insert_new`],
//!   [`MemStore::replace_at`], [`MemStore::remove`], [`MemStore::clear`]) takes precomputed
//!   hashes and hands out [`SlotRef`]s that stay checkable after the store was changed. The
//!   Python adapter uses it so that it never runs Python code (`__eq__`, `__del__`) while it
//!   holds a borrow of the store: it collects candidates, releases the store, compares, then
//!   re-checks the reference's generation (INV-M1 in the report / ARCHITECTURE);
//! * the *typed* API ([`MemStore::get_value`], [`MemStore::insert_value`], ...) hashes `K` with a
//!   fixed hasher; the simulator and the model tests use it.
//!
//! Callers of the raw API choose the hash, and with it the memory layout of big stores: the
//! bucket is `hash & mask` (hashbrown's h1) and the tag `hash >> 57`. The Python adapter keeps
//! blocks of consecutive int keys in consecutive buckets (`python/src/key.rs`), so a store of
//! a million sequential ints is walked in memory order; any hash with well-mixed top bits and
//! no long runs of equal low bits works.
//!
//! Semantics equal [`crate::model::SieveModel`] exactly (same hits, same victims, same order):
//! an expired entry found by a lookup is removed, inserting a present key updates it in place
//! (position and visited bit kept), `ttl_ns == Some(0)` stores nothing, and freshness is
//! [`crate::clock::is_fresh`] (INV-5).

mod concurrent;
mod store;

pub use concurrent::SyncMemStore;
pub use store::{Displaced, Hit, Lookup, MemStore, SlotRef, MAX_SIZE_LIMIT};

use crate::sync::{AtomicU64, Ordering};

/// Hit and miss counters.
///
/// Two ways to count: [`Counters::record_hit`] / [`Counters::record_miss`] are atomic
/// read-modify-writes, exact under any concurrency; the `_serialized` variants are a relaxed
/// load plus store (no locked instruction), exact only when the caller guarantees that no two
/// increments run at once (the Python adapter under the GIL). Misusing them loses counts; it
/// is never undefined behaviour.
#[derive(Debug, Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a hit without a locked instruction; exact only if increments are serialized.
    pub fn record_hit_serialized(&self) {
        let hits = self.hits.load(Ordering::Relaxed);
        self.hits.store(hits.wrapping_add(1), Ordering::Relaxed);
    }

    /// Counts a miss without a locked instruction; exact only if increments are serialized.
    pub fn record_miss_serialized(&self) {
        let misses = self.misses.load(Ordering::Relaxed);
        self.misses.store(misses.wrapping_add(1), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_reset() {
        let counters = Counters::new();
        counters.record_hit();
        counters.record_hit_serialized();
        counters.record_miss();
        counters.record_miss_serialized();
        counters.record_miss();
        assert_eq!(counters.snapshot(), Stats { hits: 2, misses: 3 });
        counters.reset();
        assert_eq!(counters.snapshot(), Stats::default());
    }
}
