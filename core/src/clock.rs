//! The one clock for TTL: `CLOCK_MONOTONIC` in nanoseconds. It is system-wide on Linux, so
//! stamps written by one process are comparable in another (INV-5).
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on the monotonic clock.
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

#[cfg(unix)]
fn raw_monotonic_ns() -> Option<u64> {
    crate::shm::raw::clock_monotonic_ns()
}

#[cfg(not(unix))]
fn raw_monotonic_ns() -> Option<u64> {
    None
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
