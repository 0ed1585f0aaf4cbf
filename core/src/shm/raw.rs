//! The few unsafe primitives of the shared-memory store that are not about files (those are
//! in `region.rs`): clock, process identity and liveness, CPU number, and the signals the
//! failpoints raise. Every block states the invariant it relies on.

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

/// Cached pid; 0 = unknown. Reset in a forked child by the atfork handler below.
static PID_CACHE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn forget_pid_in_child() {
    // Async-signal-safe: a single atomic store.
    PID_CACHE.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// The calling process's id. Cached (getpid is a real system call, ~150 ns here); a
/// `pthread_atfork` child handler clears the cache so a forked child sees its own pid.
pub fn current_pid() -> u32 {
    use std::sync::atomic::Ordering::Relaxed;
    static REGISTER: std::sync::Once = std::sync::Once::new();
    let cached = PID_CACHE.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that only performs an atomic store; no prepare
        // or parent handler. The function lives for the whole program.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid_in_child));
        }
    });
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

/// What `kill(pid, 0)` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidStatus {
    /// It exists (possibly owned by another user, or a zombie).
    Exists,
    /// No such process.
    Gone,
}

/// Probes `pid` with signal 0 (no signal is sent).
pub fn pid_status(pid: u32) -> PidStatus {
    // pid 0 or anything that would be negative as pid_t would address process groups: never
    // a lock owner.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return PidStatus::Gone;
    };
    if pid <= 0 {
        return PidStatus::Gone;
    }
    // SAFETY: signal 0 performs only the existence and permission check; `pid` is positive so
    // it names a single process, never a group.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        return PidStatus::Exists;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => PidStatus::Gone,
        // EPERM: it exists but belongs to someone else.
        _ => PidStatus::Exists,
    }
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
    fn self_exists_and_an_impossible_pid_is_gone() {
        assert_eq!(pid_status(current_pid()), PidStatus::Exists);
        assert_eq!(pid_status(0), PidStatus::Gone);
        assert_eq!(pid_status(u32::MAX), PidStatus::Gone);
        // Linux pid_max is at most 2^22.
        assert_eq!(pid_status((1 << 22) + 12_345), PidStatus::Gone);
    }

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
            let ok = current_pid() == real && current_pid() != parent;
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
