//! Options of one multi-process replay ([`MpOptions`]) and how its workers are started
//! ([`Launcher`]).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::pidns::ProcView;
use super::protocol::Sabotage;
use super::scheduler;
use crate::report::CapacitySpec;

/// Default watchdog: a busy worker silent for this long is a liveness failure.
pub const WATCHDOG_DEFAULT: Duration = Duration::from_secs(5);
/// Default bound on recovery after a crash (the shared backend's target: under 1 s).
pub const RECOVERY_BOUND_DEFAULT: Duration = Duration::from_secs(1);

/// How workers are started: this executable again (the `sim` binary, or a test binary whose
/// `main` calls [`super::worker::run_if_requested`]) or another program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    CurrentExe,
    Program { path: PathBuf, args: Vec<OsString> },
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct MpOptions {
    pub seed: u64,
    pub workers: u16,
    pub faults: bool,
    /// One worker per step (a total order; without faults the exact model check runs).
    pub serial: bool,
    /// Requests to replay (a prefix of the trace; `None` = all).
    pub ops: Option<usize>,
    /// Cache size, resolved against the unique keys of the replayed prefix.
    pub capacity: CapacitySpec,
    pub batch_max: usize,
    /// Fraction of requests that are forced writes (an update even on a hit), so that writers
    /// and readers meet on hot keys; 0 = a pure read-through replay.
    pub write_fraction: f64,
    pub watchdog: Duration,
    pub recovery_bound: Duration,
    pub launcher: Launcher,
    /// Parent of the per-run directory (default: /dev/shm, else the temp dir).
    pub base_dir: Option<PathBuf>,
    /// Test hook: a deliberate bug in every worker (proves the checks can fail).
    pub sabotage: Option<Sabotage>,
    /// Every worker in a PID namespace of its own (`--pid-ns`, see [`super::pidns`]).
    pub pid_ns: Option<ProcView>,
    /// Updates (`write_fraction`) hold the writer lock this many ms longer (`--slow-writes`;
    /// a live writer descheduled under the lock); 0 = off.
    pub slow_write_ms: u32,
}

impl MpOptions {
    pub fn new(seed: u64, workers: u16) -> MpOptions {
        MpOptions {
            seed,
            workers,
            faults: false,
            serial: false,
            ops: None,
            capacity: CapacitySpec::PercentMilli(1_000),
            batch_max: scheduler::BATCH_MAX_DEFAULT,
            write_fraction: 0.0,
            watchdog: WATCHDOG_DEFAULT,
            recovery_bound: RECOVERY_BOUND_DEFAULT,
            launcher: Launcher::CurrentExe,
            base_dir: None,
            sabotage: None,
            pid_ns: None,
            slow_write_ms: 0,
        }
    }
}
