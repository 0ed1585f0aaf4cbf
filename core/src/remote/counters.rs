//! Counters of the Redis tier. Not fields of [`crate::CacheStats`] (yet): that type is a
//! snapshot both stores build under their own locks, while these are atomics bumped by the
//! client from any thread; the Python wiring slice adds a snapshot of them to `cache_info`
//! beside the store's, in one place.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters (relaxed atomics: statistics, never used to decide anything).
#[derive(Debug, Default)]
pub struct RemoteCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    fast_fails: AtomicU64,
    rejected_records: AtomicU64,
    unsigned_pickle_refusals: AtomicU64,
}

/// A snapshot of [`RemoteCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteStats {
    /// Records read and verified.
    pub hits: u64,
    /// Reads that found no key, or a record that was rejected (also in `rejected_records`).
    pub misses: u64,
    /// Calls that reached for the server and failed: timeouts, connection errors, error
    /// replies.
    pub errors: u64,
    /// Calls refused by the open breaker without touching the network.
    pub fast_fails: u64,
    /// Records that failed verification (and were deleted).
    pub rejected_records: u64,
    /// Pickled values not stored because no secret is configured.
    pub unsigned_pickle_refusals: u64,
}

impl RemoteCounters {
    pub fn snapshot(&self) -> RemoteStats {
        RemoteStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            fast_fails: self.fast_fails.load(Relaxed),
            rejected_records: self.rejected_records.load(Relaxed),
            unsigned_pickle_refusals: self.unsigned_pickle_refusals.load(Relaxed),
        }
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn fast_fail(&self) {
        self.fast_fails.fetch_add(1, Relaxed);
    }
    pub(crate) fn rejected_record(&self) {
        self.rejected_records.fetch_add(1, Relaxed);
    }
    pub(crate) fn unsigned_pickle_refusal(&self) {
        self.unsigned_pickle_refusals.fetch_add(1, Relaxed);
    }
}
