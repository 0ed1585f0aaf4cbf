//! Test-only failpoints in the shared store's write path (feature `failpoints`; without it
//! [`hit`] is an empty inline function and the environment is never read).
//!
//! Configure with the environment variable `WARP_CACHE_FAILPOINT` (read once, at the first
//! failpoint check) or [`set`], as a comma-separated list of `point:action`:
//!
//! | point         | where                                                          |
//! |---------------|----------------------------------------------------------------|
//! | `after_lock`  | writer lock held, sequence still even (data consistent)        |
//! | `mid_write`   | inside a write section (sequence odd), half of a value written |
//! | `before_unlock` | write section ended (sequence even), lock still held         |
//! | `mid_alloc`   | inside a heap allocation (a free list or the bump half updated) |
//! | `mid_compact` | halfway through a heap compaction (half the extents moved)     |
//! | `mid_release` | inside a slot's section that takes its extent away (slot odd) |
//!
//! | action      | effect                                                        |
//! |-------------|---------------------------------------------------------------|
//! | `stop`      | `SIGSTOP` to the process (a stalled writer; resume with SIGCONT) |
//! | `kill`      | `SIGKILL` to the process (a crash)                            |
//! | `abort`     | `abort()` (a crash with a core dump)                          |
//! | `sleep=MS`  | sleep MS milliseconds (a slow writer)                         |
//!
//! Example: `WARP_CACHE_FAILPOINT=mid_write:kill`.
#![forbid(unsafe_code)]

/// Environment variable holding the failpoint list.
pub const FAILPOINT_ENV: &str = "WARP_CACHE_FAILPOINT";

/// A place in the write path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    AfterLock,
    MidWrite,
    BeforeUnlock,
    /// Inside a heap allocation (`heap.rs`): a free list or the bump pointer half updated.
    MidAlloc,
    /// Halfway through a heap compaction (`heap.rs`): half the live extents moved.
    MidCompact,
    /// Inside the slot section of `Arena::free`/`Arena::release_extent`: the slot's sequence
    /// odd, its extent word cleared, the extent not yet freed.
    MidRelease,
}

/// What happens when an armed point is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Kill,
    Abort,
    SleepMs(u64),
}

/// Parses `point:action[,point:action...]`.
pub fn parse(spec: &str) -> Result<Vec<(Point, Action)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (point, action) = item
                .split_once(':')
                .ok_or_else(|| format!("failpoint {item:?} is not point:action"))?;
            let point = match point {
                "after_lock" => Point::AfterLock,
                "mid_write" => Point::MidWrite,
                "before_unlock" => Point::BeforeUnlock,
                "mid_compact" => Point::MidCompact,
                "mid_alloc" => Point::MidAlloc,
                "mid_release" => Point::MidRelease,
                other => return Err(format!("unknown failpoint {other:?}")),
            };
            let action = match action {
                "stop" => Action::Stop,
                "kill" => Action::Kill,
                "abort" => Action::Abort,
                other => match other.strip_prefix("sleep=").map(str::parse) {
                    Some(Ok(ms)) => Action::SleepMs(ms),
                    _ => return Err(format!("unknown failpoint action {other:?}")),
                },
            };
            Ok((point, action))
        })
        .collect()
}

#[cfg(feature = "failpoints")]
mod imp {
    use super::{parse, Action, Point, FAILPOINT_ENV};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Once};

    static ARMED: AtomicBool = AtomicBool::new(false);
    static CONFIG: Mutex<Vec<(Point, Action)>> = Mutex::new(Vec::new());
    static FROM_ENV: Once = Once::new();

    fn load_env() {
        FROM_ENV.call_once(|| {
            if let Ok(spec) = std::env::var(FAILPOINT_ENV) {
                match parse(&spec) {
                    Ok(points) => install(points),
                    Err(e) => eprintln!("warp_cache: ignoring {FAILPOINT_ENV}: {e}"),
                }
            }
        });
    }

    fn install(points: Vec<(Point, Action)>) {
        let armed = !points.is_empty();
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = points;
        ARMED.store(armed, Ordering::SeqCst);
    }

    /// Replaces the configuration (`None` disarms everything), overriding the environment.
    pub fn set(spec: Option<&str>) -> Result<(), String> {
        load_env();
        install(match spec {
            Some(spec) => parse(spec)?,
            None => Vec::new(),
        });
        Ok(())
    }

    #[inline]
    pub fn hit(point: Point) {
        load_env();
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        let action = CONFIG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(p, _)| *p == point)
            .map(|&(_, a)| a);
        match action {
            None => {}
            Some(Action::Stop) => crate::shm::raw::raise_signal(libc::SIGSTOP),
            Some(Action::Kill) => crate::shm::raw::raise_signal(libc::SIGKILL),
            Some(Action::Abort) => crate::shm::raw::abort_process(),
            Some(Action::SleepMs(ms)) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        }
    }
}

#[cfg(feature = "failpoints")]
pub use imp::{hit, set};

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_point: Point) {}

/// Without the `failpoints` feature there is nothing to configure.
#[cfg(not(feature = "failpoints"))]
pub fn set(_spec: Option<&str>) -> Result<(), String> {
    Err("warp-cache-core was built without the `failpoints` feature".to_owned())
}

/// Whether failpoints are compiled in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_typos() {
        assert_eq!(
            parse("after_lock:stop, mid_write:sleep=5").unwrap(),
            vec![
                (Point::AfterLock, Action::Stop),
                (Point::MidWrite, Action::SleepMs(5))
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("after_lok:stop").is_err());
        assert!(parse("after_lock:explode").is_err());
        assert!(parse("after_lock").is_err());
    }
}
