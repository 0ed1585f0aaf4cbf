//! The parent of a multi-process replay: creates the run's store in a private directory,
//! starts the workers, executes the [`Plan`] step by step (dispatch, faults, barrier,
//! checkpoints), feeds every result to the [`Checker`], and runs the watchdog.
//!
//! Failure classes (see [`FailureKind`]): a worker that dies when no fault was planned, panics
//! or breaks the protocol is a *crash*; a worker that makes no progress for
//! [`MpOptions::watchdog`], or a store that does not accept a write within
//! [`MpOptions::recovery_bound`] after a crash, is a *liveness* failure; a wrong value, a
//! validation failure or (exact runs) a difference from the reference SIEVE is a
//! *correctness* failure. Crash and liveness failures end the run at once; correctness
//! violations are collected and the run goes on (to count them).
//!
//! This file holds the state of a run and its outline ([`run`]); the worker processes
//! (starting, signalling, deaths, quitting) are `procs`, the execution of one plan step
//! (dispatch, barrier, resume, recovery probe, checkpoint) is `steps`, and the handling of
//! the workers' replies with the stop detection and the watchdog is `events`. The options are
//! [`super::options`], what a run produced [`super::outcome`].
#![forbid(unsafe_code)]

mod events;
mod procs;
mod steps;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use warp_cache_core::shm::layout::LockFile;
use warp_cache_core::shm::ShmStore;

use super::checker::{Checker, Violation};
use super::faults::FaultKind;
use super::options::MpOptions;
use super::outcome::{takeover_failure, Failure, FailureKind, MpReport, Timing};
use super::pidns::PidNamespaces;
use super::protocol::RequestResult;
use super::scheduler::{self, Plan, PlanSpec};
use super::worker::store_config;
use crate::trace::{count_unique, Trace};

/// Event poll interval (stop detection, watchdog).
const TICK: Duration = Duration::from_millis(5);

/// A per-run directory, removed (with the store files) on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create(base: Option<&Path>, seed: u64) -> Result<RunDir, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = match base {
            Some(base) => base.to_owned(),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let path = base.join(format!(
            "warp_sim-{}-{seed}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        // The store creates it (0700) on open.
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

enum Event {
    Line {
        worker: u16,
        incarnation: u16,
        line: String,
    },
    Eof {
        worker: u16,
        incarnation: u16,
        at_ns: u64,
    },
}

struct Proc {
    child: Child,
    /// Batches of command lines for the worker's stdin, written by a thread of their own so
    /// the parent never blocks on a full pipe (a worker may stop in the middle of a batch).
    /// `None` closes the worker's stdin.
    commands: Option<Sender<String>>,
    pid: u32,
}

struct Outstanding {
    step: usize,
    len: usize,
    reported: usize,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Nothing,
    /// Dies (SIGKILL at a failpoint) while running request `index`.
    FailpointDeath {
        index: u64,
    },
    /// Stops itself at a failpoint while running request `index`.
    FailpointStop {
        index: u64,
    },
    /// The parent sends SIGKILL / SIGSTOP after `after` results of the batch.
    Async {
        kill: bool,
        after: usize,
        delivered: bool,
    },
}

struct Slot {
    incarnation: u16,
    started_once: bool,
    proc: Option<Proc>,
    ready: bool,
    stalled_since: Option<Instant>,
    outstanding: Option<Outstanding>,
    last_progress: Instant,
    expect: Expect,
    /// The request of the last stop at a failpoint (for an unplanned second stop).
    stopped_at: Option<u64>,
}

impl Slot {
    fn alive(&self) -> bool {
        self.proc.is_some()
    }

    /// Whether the barrier must still wait for this worker.
    fn busy(&self) -> bool {
        if !self.alive() || self.stalled_since.is_some() {
            return false;
        }
        if !self.ready {
            return true;
        }
        match self.expect {
            Expect::FailpointDeath { .. } | Expect::FailpointStop { .. } => return true,
            Expect::Async { .. } => return true,
            Expect::Nothing => {}
        }
        self.outstanding.as_ref().is_some_and(|o| !o.done)
    }
}

struct Driver<'a> {
    options: &'a MpOptions,
    keys: &'a [u64],
    dir: RunDir,
    store_name: String,
    capacity: u32,
    store: ShmStore,
    slots: Vec<Slot>,
    /// `--pid-ns`: the workers' namespaces (dropped after the workers, see `Drop`).
    namespaces: Option<PidNamespaces>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    checker: Checker,
    timing: Timing,
    violations: Vec<Violation>,
    wrong_values: u64,
    validation_failures: u64,
    model_mismatches: u64,
    step: usize,
    last_death: Option<(u64, FaultKind)>,
    current_fault: Option<FaultKind>,
    probe_index: Option<u64>,
    probe_sent_ns: u64,
    probe_result: Option<RequestResult>,
}

/// Runs one multi-process replay of `trace` (never panics on worker misbehaviour; every
/// problem ends up in [`MpReport::failure`]).
pub fn run(trace: &Trace, options: &MpOptions) -> MpReport {
    let started = Instant::now();
    let ops = options
        .ops
        .unwrap_or(trace.keys.len())
        .min(trace.keys.len());
    let keys = &trace.keys[..ops];
    let unique_keys = count_unique(keys);
    let capacity_entries = options.capacity.resolve(unique_keys.max(1));
    let capacity = u32::try_from(capacity_entries).unwrap_or(u32::MAX);
    let spec = PlanSpec {
        seed: options.seed,
        ops,
        workers: options.workers.max(1),
        faults: options.faults,
        serial: options.serial,
        batch_max: options.batch_max,
        write_fraction: options.write_fraction,
    };
    let plan = scheduler::plan(&spec);
    let mut report = MpReport::planned(trace, options, &spec, &plan, unique_keys, capacity);
    if options.workers == 0 {
        report.failure = Some(Failure::new(
            FailureKind::Harness,
            None,
            "--workers must be at least 1",
        ));
        return report;
    }
    if options.slow_write_ms > 0 && !super::faults::failpoints_available() {
        report.failure = Some(Failure::new(
            FailureKind::Harness,
            None,
            "--slow-writes needs failpoints: build sim with its default feature `faults`",
        ));
        return report;
    }
    if options.faults && !super::faults::failpoints_available() {
        report.failure = Some(Failure::new(
            FailureKind::Harness,
            None,
            "--faults needs failpoints: build sim with its default feature `faults`",
        ));
        return report;
    }
    let mut driver = match Driver::new(options, keys, capacity, report.exact) {
        Ok(driver) => driver,
        Err(failure) => {
            report.failure = Some(failure);
            return report;
        }
    };
    let outcome = driver.execute(&plan);
    driver.finish_figures();
    report.wrong_values = driver.wrong_values;
    report.validation_failures = driver.validation_failures;
    report.model_mismatches = driver.model_mismatches;
    report.violations = driver.violations.clone();
    report.timing = driver.timing.clone();
    report.failure = match outcome {
        Err(failure) => Some(failure),
        Ok(()) => driver.first_correctness_failure(),
    };
    drop(driver);
    report.timing.wall = started.elapsed();
    if report.failure.is_none() {
        report.failure = takeover_failure(&report);
    }
    report
}

impl<'a> Driver<'a> {
    fn new(
        options: &'a MpOptions,
        keys: &'a [u64],
        capacity: u32,
        exact: bool,
    ) -> Result<Driver<'a>, Failure> {
        let harness = |message: String| Failure::new(FailureKind::Harness, None, message);
        if warp_cache_core::shm::failpoint::ENABLED {
            // The parent's own store operations (validate) must never hit a failpoint.
            let _ = warp_cache_core::shm::failpoint::set(None);
        }
        let dir = RunDir::create(options.base_dir.as_deref(), options.seed).map_err(harness)?;
        let store_name = format!("sim-{}", options.seed);
        let store = ShmStore::open(store_config(dir.path.clone(), &store_name, capacity))
            .map_err(|e| harness(format!("cannot create the run's store: {e}")))?;
        let namespaces = options
            .pid_ns
            .map(|view| PidNamespaces::create(view, options.workers.max(1)))
            .transpose()
            .map_err(harness)?;
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let slots = (0..options.workers.max(1))
            .map(|_| Slot {
                incarnation: 0,
                started_once: false,
                proc: None,
                ready: false,
                stalled_since: None,
                outstanding: None,
                last_progress: now,
                expect: Expect::Nothing,
                stopped_at: None,
            })
            .collect();
        Ok(Driver {
            options,
            keys,
            dir,
            store_name,
            capacity,
            store,
            slots,
            namespaces,
            tx,
            rx,
            checker: Checker::new(exact.then_some(capacity as usize)),
            timing: Timing::default(),
            violations: Vec::new(),
            wrong_values: 0,
            validation_failures: 0,
            model_mismatches: 0,
            step: 0,
            last_death: None,
            current_fault: None,
            probe_index: None,
            probe_sent_ns: 0,
            probe_result: None,
        })
    }

    fn fail(&self, kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure::new(kind, Some(self.step), message)
    }

    fn first_correctness_failure(&self) -> Option<Failure> {
        let first = self.violations.first()?;
        let total = self.wrong_values + self.validation_failures + self.model_mismatches;
        Some(Failure::new(
            FailureKind::Correctness,
            None,
            format!("{first} ({total} correctness violations in all)"),
        ))
    }

    fn execute(&mut self, plan: &Plan) -> Result<(), Failure> {
        let all: Vec<u16> = (0..self.slots.len() as u16).collect();
        self.spawn(&all)?;
        for (index, step) in plan.steps.iter().enumerate() {
            self.step = index;
            self.run_step(step)?;
        }
        self.quit_all()
    }

    /// Shared counters after the run.
    fn finish_figures(&mut self) {
        self.timing.stats = self.checker.stats;
        if let Ok(info) = self.store.info() {
            self.timing.resets = info.resets;
        }
        if let Some(paths) = self.store.paths() {
            if let Ok(bytes) = std::fs::read(&paths.lock) {
                let at = std::mem::offset_of!(LockFile, takeovers);
                if let Some(word) = bytes.get(at..at + 8) {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(word);
                    self.timing.takeovers = u64::from_ne_bytes(raw);
                }
            }
        }
    }
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut proc) = slot.proc.take() {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
            }
        }
    }
}
