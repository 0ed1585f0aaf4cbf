//! The few unsafe primitives of the shared-memory store: OS calls and raw word access.
//! Every block states the invariant it relies on.

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the machine.
pub fn clock_monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; CLOCK_MONOTONIC
    // is a clock id every supported unix provides.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}
