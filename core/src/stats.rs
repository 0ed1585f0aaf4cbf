//! [`CacheStats`]: what both stores report for `cache_info()` (the Python adapter turns it into
//! its `CacheInfo` in one place).
#![forbid(unsafe_code)]

/// Counters and sizes of one cache, as `cache_info()` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// The most entries the cache holds (`max_size` of the in-process store, the capacity of
    /// the shared one).
    pub max_size: u64,
    pub current_size: u64,
    /// Values not stored because they exceed the shared store's byte limit; `None` for the
    /// in-process store, which has no such limit.
    pub oversize_skips: Option<u64>,
    /// Values not stored because the shared store's file could not grow (its filesystem was
    /// full); `None` for the in-process store.
    pub space_skips: Option<u64>,
    /// Shared store contention: reads redone or held up by a write in progress, and writes
    /// that waited for the writer lock; `None` for the in-process store.
    pub read_retries: Option<u64>,
    pub lock_waits: Option<u64>,
    /// Values not stored because the shared store's writer lock stayed held by a live
    /// process (a stopped or descheduled writer); `None` for the in-process store.
    pub lock_skips: Option<u64>,
}
