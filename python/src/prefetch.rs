//! Prefetch hints for the memory backend's miss path in big caches (docs/performance.md):
//! while one miss finishes, start loading the index lines the next misses will probe (the
//! next victim's, and for consecutive int keys the next block's), so their memory latency
//! overlaps with work instead of stalling it.

// `unsafe` allowed: CPU prefetch intrinsics.
#![allow(unsafe_code)]

use pyo3::prelude::*;
use warp_cache_core::mem::{Displaced, MemStore};

use crate::key::StoredKey;

/// Asks the CPU to start loading the cache line holding `address`. A hint only: it reads
/// nothing the program can see, never faults (not on an unmapped or bogus address either)
/// and changes no memory, so `address` may be a plain number computed from a stale layout.
/// No effect on architectures other than x86_64.
#[inline(always)]
fn prefetch_read(address: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `prefetcht0` is in SSE, which every x86_64 CPU has (part of the target's
        // baseline). The instruction performs no architectural memory access, cannot fault on
        // any address and has no effect on program state, so no pointer validity is needed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = address;
    }
}

/// Prefetches where a probe for `hash` begins in `store`'s index.
#[inline(always)]
fn prefetch_probe(store: &MemStore<StoredKey, Py<PyAny>>, hash: u64) {
    for address in store.index_lines(hash) {
        prefetch_read(address);
    }
}

/// After a miss stored a key (`next_block`: its [`StoredKey::next_block_hash`]) (and displaced what `displaced` holds) in a big store: prefetch
/// the index lines of the entry SIEVE evicts next, and of the blocks that follow the new key
/// and the evicted one when they are single ints that start a block
/// (`key::next_block_hash`). Costs nothing when the store is small (`prefetch_pays`).
#[inline]
pub fn after_miss(
    store: &MemStore<StoredKey, Py<PyAny>>,
    next_block: Option<u64>,
    displaced: &Displaced<StoredKey, Py<PyAny>>,
) {
    if !store.prefetch_pays() {
        return;
    }
    if let Displaced::Evicted(evicted, _) = displaced {
        if let Some(hash) = store.next_victim_hash() {
            prefetch_probe(store, hash);
        }
        if let Some(hash) = evicted.next_block_hash() {
            prefetch_probe(store, hash);
        }
    }
    if let Some(hash) = next_block {
        prefetch_probe(store, hash);
    }
}
