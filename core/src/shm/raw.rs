//! The few unsafe primitives of the shared-memory store that are not about files (those are
//! in `region.rs`): clock, process identity and liveness, CPU number, and the signals the
//! failpoints raise, and the fork hook that keeps presence files (`liveness.rs`) per process.
//! Every block states the invariant it relies on.
#![allow(unsafe_code)] // The crate's OS primitives: libc calls with nothing safe to wrap them.

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the machine. Read it
/// through [`crate::clock`], the one entry.
pub(crate) fn clock_monotonic_ns() -> Option<u64> {
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

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds (Linux; the precise clock elsewhere): a few
/// nanoseconds to read, a few milliseconds of resolution. For rate limits only, never TTL.
#[cfg(target_os = "linux")]
pub(crate) fn coarse_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn coarse_clock_ns() -> u64 {
    clock_monotonic_ns().unwrap_or(0)
}

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Cached pid; 0 = unknown. Reset in a forked child by the atfork handler below.
static PID_CACHE: AtomicU32 = AtomicU32::new(0);
/// Number of forks this process descends from (bumped in every forked child).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Presence-file descriptors (`liveness.rs`) a forked child must close: -1 = empty entry.
const PRESENCE_FD_SLOTS: usize = 64;
static PRESENCE_FDS: [AtomicI32; PRESENCE_FD_SLOTS] =
    [const { AtomicI32::new(-1) }; PRESENCE_FD_SLOTS];

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: atomics and close(2) only.
    PID_CACHE.store(0, Relaxed);
    FORK_GENERATION.fetch_add(1, Relaxed);
    for slot in &PRESENCE_FDS {
        let fd = slot.swap(-1, Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` is a presence descriptor this process (the parent, before the fork)
            // kept open for its whole life and never closed; the child closes its inherited
            // copy so the parent's lock dies with the parent. Nothing else uses the number.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

fn register_fork_handler() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that only performs atomic operations and close;
        // no prepare or parent handler. The function lives for the whole program.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// How many forks separate this process from the one that loaded the library: state cached
/// under an older generation belongs to an ancestor process.
#[inline]
pub fn fork_generation() -> u64 {
    register_fork_handler();
    FORK_GENERATION.load(Relaxed)
}

/// Keeps a presence descriptor open for the rest of the process's life (never closed here; a
/// forked child closes its inherited copy). Beyond 64 of them a child keeps the copy: its
/// parent then counts as alive until the child exits too.
pub fn keep_presence_fd(fd: std::os::fd::OwnedFd) {
    use std::os::fd::IntoRawFd;
    register_fork_handler();
    let raw = fd.into_raw_fd();
    for slot in &PRESENCE_FDS {
        if slot.compare_exchange(-1, raw, Relaxed, Relaxed).is_ok() {
            return;
        }
    }
}

/// The calling process's id. Cached (getpid is a real system call: docs/performance.md); a
/// `pthread_atfork` child handler clears the cache so a forked child sees its own pid.
pub fn current_pid() -> u32 {
    let cached = PID_CACHE.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    register_fork_handler();
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    PID_CACHE.store(pid, Relaxed);
    pid
}

/// The effective user id (file ownership checks).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The CPU the calling thread runs on, used only to pick a counter stripe.
#[cfg(all(target_os = "linux", not(miri)))]
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure, handled below.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(0)
}

/// Without `sched_getcpu` (or under miri, which cannot call it), threads spread over stripes
/// by a per-thread number.
#[cfg(any(not(target_os = "linux"), miri))]
pub fn current_cpu() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static STRIPE: u32 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    STRIPE.with(|stripe| *stripe)
}

/// Sends `signal` to the calling process (failpoints: SIGSTOP, SIGKILL).
pub fn raise_signal(signal: i32) {
    // SAFETY: raise only delivers a signal to the calling thread; the signals the failpoints
    // use (SIGSTOP, SIGKILL) have default actions and no handler runs in our code.
    unsafe {
        libc::raise(signal);
    }
}

/// Aborts the process at once (failpoint "abort"): no unwinding, no destructors, the lock
/// stays held exactly as a crash would leave it.
pub fn abort_process() -> ! {
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_its_own_pid() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only reads an atomic, calls getpid and exits with _exit: no
        // allocation, no locks.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: getpid has no preconditions.
            let real = unsafe { libc::getpid() } as u32;
            let ok = current_pid() == real && current_pid() != parent && fork_generation() == 1;
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is writable.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(waited, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child saw a stale pid"
        );
        assert_eq!(current_pid(), parent);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = clock_monotonic_ns().unwrap();
        let b = clock_monotonic_ns().unwrap();
        assert!(b >= a);
    }
}
