//! The faults `--faults` injects, and how each is carried out.
//!
//! * `kill@<point>` / `stop@<point>`: the target worker's request becomes a *forced write*
//!   (an insert even on a hit, retried while the lock is busy, so the write path is always
//!   reached) with core's failpoint `<point>:kill` or `<point>:stop` armed for that insert
//!   (feature `failpoints` of warp-cache-core). The worker dies (SIGKILL) or stops itself
//!   (SIGSTOP) at that exact point of the write path:
//!   - `after_lock`: writer lock held, sequence even;
//!   - `mid_alloc`: inside the write section, a heap free list or bump pointer half updated;
//!   - `mid_write`: inside the write section (sequence odd), half of the value written;
//!   - `mid_release`: inside a slot's own section (its sequence odd) while its extent is
//!     taken away (the forced write removes the key, which frees its slot);
//!   - `before_unlock`: section ended, lock still held.
//! * `kill@async` / `stop@async`: the parent sends SIGKILL / SIGSTOP once the worker has
//!   reported a given number of results of its batch: it lands wherever the worker is (inside a
//!   get, an insert, or idle).
//!
//! A killed worker is restarted (a new process, incarnation + 1) a few steps later; a stopped
//! one gets SIGCONT a few steps later. Faults never overlap (see `scheduler`).
#![forbid(unsafe_code)]

use std::fmt;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    KillAfterLock,
    KillMidAlloc,
    KillMidWrite,
    KillMidRelease,
    KillBeforeUnlock,
    KillAsync,
    StopAfterLock,
    StopMidAlloc,
    StopMidWrite,
    StopMidRelease,
    StopBeforeUnlock,
    StopAsync,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillAfterLock,
        FaultKind::KillMidAlloc,
        FaultKind::KillMidWrite,
        FaultKind::KillMidRelease,
        FaultKind::KillBeforeUnlock,
        FaultKind::KillAsync,
        FaultKind::StopAfterLock,
        FaultKind::StopMidAlloc,
        FaultKind::StopMidWrite,
        FaultKind::StopMidRelease,
        FaultKind::StopBeforeUnlock,
        FaultKind::StopAsync,
    ];

    /// Name in reports: `kill@mid_write`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillAfterLock => "kill@after_lock",
            FaultKind::KillMidAlloc => "kill@mid_alloc",
            FaultKind::KillMidWrite => "kill@mid_write",
            FaultKind::KillMidRelease => "kill@mid_release",
            FaultKind::KillBeforeUnlock => "kill@before_unlock",
            FaultKind::KillAsync => "kill@async",
            FaultKind::StopAfterLock => "stop@after_lock",
            FaultKind::StopMidAlloc => "stop@mid_alloc",
            FaultKind::StopMidWrite => "stop@mid_write",
            FaultKind::StopMidRelease => "stop@mid_release",
            FaultKind::StopBeforeUnlock => "stop@before_unlock",
            FaultKind::StopAsync => "stop@async",
        }
    }

    /// Whether the worker dies (else it is stalled and resumed).
    pub fn kills(self) -> bool {
        matches!(
            self,
            FaultKind::KillAfterLock
                | FaultKind::KillMidAlloc
                | FaultKind::KillMidWrite
                | FaultKind::KillMidRelease
                | FaultKind::KillBeforeUnlock
                | FaultKind::KillAsync
        )
    }

    /// The core failpoint spec armed for the forced write (`None` for the async kinds, which
    /// the parent delivers by signal).
    pub fn failpoint(self) -> Option<&'static str> {
        match self {
            FaultKind::KillAfterLock => Some("after_lock:kill"),
            FaultKind::KillMidAlloc => Some("mid_alloc:kill"),
            FaultKind::KillMidWrite => Some("mid_write:kill"),
            FaultKind::KillMidRelease => Some("mid_release:kill"),
            FaultKind::KillBeforeUnlock => Some("before_unlock:kill"),
            FaultKind::StopAfterLock => Some("after_lock:stop"),
            FaultKind::StopMidAlloc => Some("mid_alloc:stop"),
            FaultKind::StopMidWrite => Some("mid_write:stop"),
            FaultKind::StopMidRelease => Some("mid_release:stop"),
            FaultKind::StopBeforeUnlock => Some("before_unlock:stop"),
            FaultKind::KillAsync | FaultKind::StopAsync => None,
        }
    }

    /// Whether the parent delivers it by signal after some results.
    pub fn is_async(self) -> bool {
        self.failpoint().is_none()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the failpoints needed by `--faults` are compiled into this binary (sim's feature
/// `faults`, on by default, enables warp-cache-core's `failpoints`).
pub fn failpoints_available() -> bool {
    warp_cache_core::shm::failpoint::ENABLED
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp_cache_core::shm::failpoint;

    #[test]
    fn every_failpoint_spec_parses_in_core() {
        for kind in FaultKind::ALL {
            if let Some(spec) = kind.failpoint() {
                let parsed = failpoint::parse(spec).unwrap();
                assert_eq!(parsed.len(), 1, "{kind}");
                let kills = parsed[0].1 == failpoint::Action::Kill;
                assert_eq!(kills, kind.kills(), "{kind}");
            } else {
                assert!(kind.is_async());
            }
        }
        let names: std::collections::HashSet<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), FaultKind::ALL.len());
    }
}
