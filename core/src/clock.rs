//! The one clock: every monotonic clock read of the crate and the one freshness rule for TTL
//! (INV-5). `CLOCK_MONOTONIC` is system-wide on Linux, so stamps written by one process are
//! comparable in another. The system calls themselves are in `shm::raw` (the crate's unsafe
//! primitives); nothing else calls them.
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on the monotonic clock: the stamp of stored entries and the clock of every
/// wait and bound.
///
/// Rust's `Instant` is `CLOCK_MONOTONIC` on Linux and macOS; we read it as a duration since a
/// fixed process-independent origin by asking the OS for the raw value through `libc` in the
/// shared store. In-process code only needs differences, which this gives.
pub fn monotonic_now_ns() -> u64 {
    raw_monotonic_ns().unwrap_or_else(|| {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    })
}

/// A cheap, low-resolution reading of the monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux,
/// the precise clock elsewhere). For rate limits only, never for TTL stamps.
#[cfg(unix)]
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    crate::shm::raw::coarse_clock_ns()
}

#[cfg(unix)]
fn raw_monotonic_ns() -> Option<u64> {
    crate::shm::raw::clock_monotonic_ns()
}

#[cfg(not(unix))]
fn raw_monotonic_ns() -> Option<u64> {
    None
}

/// Whether an entry stored at `stored_at_ns` is still fresh at `now_ns` for a cache whose
/// time-to-live is `ttl_ns` (`None` = never expires). An entry stamped in the future (clock
/// skew between processes) is not fresh. Used by the stores and the reference models alike,
/// so that "fresh" means one thing everywhere (INV-5).
#[inline]
pub fn is_fresh(stored_at_ns: u64, now_ns: u64, ttl_ns: Option<u64>) -> bool {
    match ttl_ns {
        None => true,
        Some(ttl_ns) => now_ns >= stored_at_ns && now_ns - stored_at_ns < ttl_ns,
    }
}

/// Converts a TTL in seconds (already validated finite and non-negative) to nanoseconds,
/// saturating at `u64::MAX` (about 584 years).
pub fn ttl_seconds_to_ns(ttl_seconds: f64) -> u64 {
    let ns = ttl_seconds * 1e9;
    if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    }
}
