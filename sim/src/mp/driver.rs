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
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use warp_cache_core::clock::monotonic_now_ns;
use warp_cache_core::shm::failpoint::FAILPOINT_ENV;
use warp_cache_core::shm::layout::LockFile;
use warp_cache_core::shm::ShmStore;

use super::checker::{CheckStats, Checker, Violation, ViolationKind};
use super::faults::FaultKind;
use super::os::{self, ProcState, Signal};
use super::pidns::{PidNamespaces, ProcView};
use super::protocol::{
    Command, Mode, Reply, RequestResult, Sabotage, WorkerConfig, WORKER_DIR_ENV, WORKER_ENV,
};
use super::scheduler::{self, Plan, PlanSpec, Step};
use super::worker::store_config;
use crate::report::CapacitySpec;
use crate::trace::{count_unique, Trace};

/// Default watchdog: a busy worker silent for this long is a liveness failure.
pub const WATCHDOG_DEFAULT: Duration = Duration::from_secs(5);
/// Default bound on recovery after a crash (the shared backend's target: under 1 s).
pub const RECOVERY_BOUND_DEFAULT: Duration = Duration::from_secs(1);
/// A stopped worker stays stopped at least this long (so others meet its held lock).
const STALL_MIN: Duration = Duration::from_millis(20);
/// Event poll interval (stop detection, watchdog).
const TICK: Duration = Duration::from_millis(5);
/// A busy worker silent this long is checked for an unplanned stop.
const UNPLANNED_STOP_CHECK: Duration = Duration::from_millis(50);
/// Correctness violations kept for the report (all are counted).
const VIOLATIONS_KEPT: usize = 10;

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

/// Failure classes, each with its own exit code in the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A worker died without a planned fault, panicked, or broke the protocol.
    Crash,
    /// A worker made no progress within the watchdog, or no write succeeded within the
    /// recovery bound after a crash.
    Liveness,
    /// A wrong value, a failed validation, or a difference from the reference SIEVE.
    Correctness,
    /// The harness itself could not run (spawn failed, failpoints missing, bad options).
    Harness,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Crash => "crash",
            FailureKind::Liveness => "liveness",
            FailureKind::Correctness => "correctness",
            FailureKind::Harness => "harness",
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Plan step at which it was seen.
    pub step: Option<usize>,
    pub message: String,
}

impl Failure {
    fn new(kind: FailureKind, step: Option<usize>, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            step,
            message: message.into(),
        }
    }
}

/// One recovery after a kill: the probe write of the next step succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub fault: FaultKind,
    /// From sending the probe (the first request after the crash was seen) to its
    /// completion: worker wake-up, lock takeover, table repair, write. Held to the bound.
    pub recovery_ns: u64,
    /// From the moment the parent saw the worker dead to the probe's completion (adds the
    /// harness's own work in between, e.g. starting the replacement worker).
    pub since_crash_ns: u64,
    /// Duration of the probe request as the worker measured it.
    pub probe_op_ns: u64,
}

/// Figures that depend on timing (they differ between runs of one seed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    pub stats: CheckStats,
    pub recoveries: Vec<Recovery>,
    pub stops_observed: u64,
    /// Workers found stopped without a planned stop (a stop failpoint reached twice in one
    /// insert), resumed at once.
    pub unplanned_stops: u64,
    pub kills_observed: u64,
    pub takeovers: u64,
    pub resets: u64,
    pub validations: u64,
    pub max_op_ns: u64,
    pub wall: Duration,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct MpReport {
    // Deterministic part: a function of the seed, the options and the trace.
    pub seed: u64,
    pub trace_name: String,
    pub trace_format: String,
    pub trace_requests: usize,
    pub ops: usize,
    pub unique_keys: usize,
    pub workers: u16,
    pub capacity: u32,
    pub capacity_requested: String,
    pub faults: bool,
    pub serial: bool,
    pub exact: bool,
    pub batch_max: usize,
    pub write_fraction: f64,
    pub pid_ns: Option<ProcView>,
    pub slow_write_ms: u32,
    pub steps: usize,
    pub digest: u64,
    pub fault_counts: Vec<(FaultKind, usize)>,
    pub restarts: usize,
    pub checkpoints: usize,
    pub dropped_planned: usize,
    pub recovery_bound: Duration,
    pub watchdog: Duration,
    pub wrong_values: u64,
    pub validation_failures: u64,
    pub model_mismatches: u64,
    pub violations: Vec<Violation>,
    pub failure: Option<Failure>,
    // Timing-dependent part.
    pub timing: Timing,
}

impl MpReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    pub fn faults_injected(&self) -> usize {
        self.fault_counts.iter().map(|(_, n)| n).sum()
    }

    /// Lock takeovers beyond the workers killed (INV-8 allows a takeover only from a dead
    /// owner, and the exact compare-exchange lets each dead owner's word be taken over at most
    /// once): every one of these took the lock from a live writer.
    pub fn excess_takeovers(&self) -> u64 {
        self.timing
            .takeovers
            .saturating_sub(self.timing.kills_observed)
    }
}

/// The correctness failure of a run whose lock was taken over from a live writer.
fn takeover_failure(report: &MpReport) -> Option<Failure> {
    let excess = report.excess_takeovers();
    (excess > 0).then(|| {
        Failure::new(
            FailureKind::Correctness,
            None,
            format!(
                "{} writer-lock takeovers but only {} workers were killed: {excess} times a live writer's lock was taken over (two writers at once)",
                report.timing.takeovers, report.timing.kills_observed
            ),
        )
    })
}

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
    let exact = options.serial && !options.faults;
    let mut report = MpReport {
        seed: options.seed,
        trace_name: trace.name.clone(),
        trace_format: trace.format.name().to_owned(),
        trace_requests: trace.keys.len(),
        ops,
        unique_keys,
        workers: spec.workers,
        capacity,
        capacity_requested: options.capacity.to_string(),
        faults: options.faults,
        serial: options.serial,
        exact,
        batch_max: options.batch_max,
        write_fraction: options.write_fraction,
        pid_ns: options.pid_ns,
        slow_write_ms: options.slow_write_ms,
        steps: plan.steps.len(),
        digest: plan.digest(),
        fault_counts: plan.fault_counts(),
        restarts: plan.restarts(),
        checkpoints: plan.checkpoints(),
        dropped_planned: plan.dropped_requests(),
        recovery_bound: options.recovery_bound,
        watchdog: options.watchdog,
        wrong_values: 0,
        validation_failures: 0,
        model_mismatches: 0,
        violations: Vec::new(),
        failure: None,
        timing: Timing::default(),
    };
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
    let mut driver = match Driver::new(options, keys, capacity, exact) {
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

fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(101), _) => "exit status 101 (the worker panicked)".to_owned(),
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
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

    // ---------------------------------------------------------------------------------------
    // Processes

    fn spawn(&mut self, workers: &[u16]) -> Result<(), Failure> {
        for &worker in workers {
            let slot = &mut self.slots[worker as usize];
            if slot.started_once {
                slot.incarnation = slot.incarnation.wrapping_add(1);
            }
            slot.started_once = true;
            let config = WorkerConfig {
                worker,
                incarnation: slot.incarnation,
                name: self.store_name.clone(),
                capacity: self.capacity,
                sabotage: self.options.sabotage,
                slow_write_ms: self.options.slow_write_ms,
            };
            let (program, args) = match &self.options.launcher {
                Launcher::CurrentExe => (
                    std::env::current_exe().map_err(|e| {
                        Failure::new(
                            FailureKind::Harness,
                            Some(self.step),
                            format!("cannot find this executable to start workers: {e}"),
                        )
                    })?,
                    Vec::new(),
                ),
                Launcher::Program { path, args } => (path.clone(), args.clone()),
            };
            let mut command = Process::new(&program);
            command
                .args(&args)
                .env(WORKER_ENV, config.to_line())
                .env(WORKER_DIR_ENV, &self.dir.path)
                .env_remove(FAILPOINT_ENV)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let spawned = match self.namespaces.as_mut() {
                Some(namespaces) => namespaces.spawn(worker, &mut command),
                None => command.spawn(),
            };
            let mut child = spawned.map_err(|e| {
                Failure::new(
                    FailureKind::Harness,
                    Some(self.step),
                    format!("cannot start worker {}: {e}", program.display()),
                )
            })?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take().expect("piped stdin");
            let (commands, pending) = mpsc::channel::<String>();
            std::thread::spawn(move || {
                let mut stdin = BufWriter::new(stdin);
                for text in pending {
                    // An error means the worker died; its end-of-file event reports that.
                    if stdin
                        .write_all(text.as_bytes())
                        .and_then(|()| stdin.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let tx = self.tx.clone();
            let incarnation = slot.incarnation;
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx
                        .send(Event::Line {
                            worker,
                            incarnation,
                            line,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(Event::Eof {
                    worker,
                    incarnation,
                    at_ns: monotonic_now_ns(),
                });
            });
            let pid = child.id();
            slot.proc = Some(Proc {
                child,
                commands: Some(commands),
                pid,
            });
            slot.ready = false;
            slot.stalled_since = None;
            slot.outstanding = None;
            slot.expect = Expect::Nothing;
            slot.last_progress = Instant::now();
        }
        while workers.iter().any(|&w| !self.slots[w as usize].ready) {
            self.pump()?;
        }
        Ok(())
    }

    fn send(&mut self, worker: u16, commands: &[Command]) {
        let Some(proc) = self.slots[worker as usize].proc.as_mut() else {
            return;
        };
        let Some(sender) = proc.commands.as_ref() else {
            return;
        };
        let mut text = String::new();
        for command in commands {
            text.push_str(&command.to_line());
            text.push('\n');
        }
        let _ = sender.send(text);
    }

    fn quit_all(&mut self) -> Result<(), Failure> {
        for worker in 0..self.slots.len() as u16 {
            self.send(worker, &[Command::Quit]);
            if let Some(proc) = self.slots[worker as usize].proc.as_mut() {
                proc.commands = None;
            }
        }
        let deadline = Instant::now() + self.options.watchdog;
        for index in 0..self.slots.len() {
            let Some(mut proc) = self.slots[index].proc.take() else {
                continue;
            };
            let status = loop {
                match proc.child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(TICK);
                    }
                    _ => {
                        let _ = proc.child.kill();
                        let _ = proc.child.wait();
                        return Err(self.fail(
                            FailureKind::Liveness,
                            format!("worker {index} did not exit after the last step"),
                        ));
                    }
                }
            };
            if !status.success() {
                return Err(self.fail(
                    FailureKind::Crash,
                    format!("worker {index} ended with {}", describe_status(&status)),
                ));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Steps

    fn run_step(&mut self, step: &Step) -> Result<(), Failure> {
        if !step.restarts.is_empty() {
            self.spawn(&step.restarts)?;
        }
        if let Some(worker) = step.resume {
            self.resume(worker)?;
        }
        for slot in &mut self.slots {
            slot.expect = Expect::Nothing;
        }
        self.probe_index = None;
        self.probe_result = None;
        if let Some(fault) = step.fault {
            self.current_fault = Some(fault.kind);
        }

        let step_number = self.step as u32;
        if step.probe {
            self.probe_index = step.batches.first().map(|b| b.start as u64);
            self.probe_sent_ns = monotonic_now_ns();
        }
        for batch in &step.batches {
            let worker = batch.worker;
            let incarnation = self.slots[worker as usize].incarnation;
            let mut commands = Vec::with_capacity(batch.len + 1);
            for offset in 0..batch.len {
                let index = batch.start + offset;
                let key = self.keys[index];
                let mode = match batch.forced_at(offset) {
                    None => Mode::ReadThrough,
                    Some(forced) if !forced.retry => Mode::Update,
                    Some(forced) => Mode::Forced(
                        forced
                            .fault
                            .and_then(|kind| kind.failpoint())
                            .map(str::to_owned),
                    ),
                };
                self.checker
                    .dispatch(index as u64, key, worker, incarnation, step_number);
                commands.push(Command::Request {
                    index: index as u64,
                    key,
                    mode,
                });
            }
            commands.push(Command::EndBatch {
                step: self.step as u64,
            });
            let slot = &mut self.slots[worker as usize];
            slot.outstanding = Some(Outstanding {
                step: self.step,
                len: batch.len,
                reported: 0,
                done: false,
            });
            slot.last_progress = Instant::now();
            if let Some(fault) = step.fault.filter(|f| f.worker == worker) {
                let index = (batch.start + fault.after) as u64;
                slot.expect = match fault.kind {
                    FaultKind::KillAsync => Expect::Async {
                        kill: true,
                        after: fault.after,
                        delivered: false,
                    },
                    FaultKind::StopAsync => Expect::Async {
                        kill: false,
                        after: fault.after,
                        delivered: false,
                    },
                    kind if kind.kills() => Expect::FailpointDeath { index },
                    _ => Expect::FailpointStop { index },
                };
            }
            self.send(worker, &commands);
            self.maybe_deliver(worker)?;
        }

        while self.slots.iter().any(Slot::busy) {
            self.pump()?;
        }
        for slot in &mut self.slots {
            if slot.outstanding.as_ref().is_some_and(|o| o.done) {
                slot.outstanding = None;
            }
        }
        self.checker.end_step(step_number);

        if step.probe {
            self.check_probe()?;
        }
        if step.checkpoint {
            self.timing.validations += 1;
            if let Err(message) = self.store.validate() {
                self.note_violation(Violation {
                    kind: ViolationKind::Validation,
                    index: step.batches.last().map_or(0, |b| (b.start + b.len) as u64),
                    message: format!("at the checkpoint of step {}: {message}", self.step),
                });
            }
        }
        Ok(())
    }

    fn resume(&mut self, worker: u16) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let (Some(proc), Some(since)) = (slot.proc.as_ref(), slot.stalled_since) else {
            return Err(self.fail(
                FailureKind::Harness,
                format!("worker {worker} should be stopped, but is not"),
            ));
        };
        let elapsed = since.elapsed();
        if elapsed < STALL_MIN {
            std::thread::sleep(STALL_MIN - elapsed);
        }
        let pid = proc.pid;
        if let Err(e) = os::send_signal(pid, Signal::Cont) {
            return Err(self.fail(
                FailureKind::Harness,
                format!("cannot SIGCONT worker {worker}: {e}"),
            ));
        }
        let slot = &mut self.slots[worker as usize];
        slot.stalled_since = None;
        slot.last_progress = Instant::now();
        Ok(())
    }

    /// After a kill, the next write must succeed within the bound (INV-8: a waiter takes a
    /// dead owner's lock over and repairs the table in bounded time).
    fn check_probe(&mut self) -> Result<(), Failure> {
        let Some((death_ns, fault)) = self.last_death.take() else {
            return Err(self.fail(
                FailureKind::Harness,
                "a probe step without a preceding kill",
            ));
        };
        let Some(result) = self.probe_result.take() else {
            return Err(self.fail(FailureKind::Harness, "the probe request gave no result"));
        };
        let bound_ns = self.options.recovery_bound.as_nanos() as u64;
        let recovery_ns = result
            .done_ns
            .saturating_sub(self.probe_sent_ns.max(death_ns));
        let since_crash_ns = result.done_ns.saturating_sub(death_ns);
        if !result.insert.stored() {
            return Err(self.fail(
                FailureKind::Liveness,
                format!(
                    "after {fault}, a forced write could not store for {:.1} ms ({:?})",
                    result.op_ns as f64 / 1e6,
                    result.insert
                ),
            ));
        }
        if recovery_ns > bound_ns {
            return Err(self.fail(
                FailureKind::Liveness,
                format!(
                    "after {fault}, the first write took {:.1} ms to complete (bound {} ms)",
                    recovery_ns as f64 / 1e6,
                    self.options.recovery_bound.as_millis()
                ),
            ));
        }
        self.timing.recoveries.push(Recovery {
            fault,
            recovery_ns,
            since_crash_ns,
            probe_op_ns: result.op_ns,
        });
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Events

    /// Waits for one event (or a tick), handles it, then runs the stop detection and the
    /// watchdog.
    fn pump(&mut self) -> Result<(), Failure> {
        match self.rx.recv_timeout(TICK) {
            Ok(event) => self.handle(event)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.fail(FailureKind::Harness, "event channel closed"))
            }
        }
        self.tick()
    }

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Line {
                worker,
                incarnation,
                line,
            } => {
                if self.slots[worker as usize].incarnation != incarnation {
                    return Ok(());
                }
                let reply = Reply::parse(&line)
                    .map_err(|e| self.fail(FailureKind::Crash, format!("worker {worker}: {e}")))?;
                self.handle_reply(worker, incarnation, reply)
            }
            Event::Eof {
                worker,
                incarnation,
                at_ns,
            } => {
                if self.slots[worker as usize].incarnation != incarnation
                    || !self.slots[worker as usize].alive()
                {
                    return Ok(());
                }
                self.handle_death(worker, incarnation, at_ns)
            }
        }
    }

    fn handle_reply(&mut self, worker: u16, incarnation: u16, reply: Reply) -> Result<(), Failure> {
        let step = self.step;
        match reply {
            Reply::Ready { .. } => {
                let slot = &mut self.slots[worker as usize];
                if slot.ready {
                    return Err(self.fail(
                        FailureKind::Crash,
                        format!("worker {worker} said ready twice"),
                    ));
                }
                slot.ready = true;
                slot.last_progress = Instant::now();
            }
            Reply::Fatal(message) => {
                return Err(self.fail(
                    FailureKind::Crash,
                    format!("worker {worker}.{incarnation} failed: {message}"),
                ));
            }
            Reply::Done { step: done_step } => {
                let slot = &mut self.slots[worker as usize];
                let Some(outstanding) = slot.outstanding.as_mut() else {
                    return Err(Failure::new(
                        FailureKind::Crash,
                        Some(step),
                        format!("worker {worker}: batch end without a batch"),
                    ));
                };
                if outstanding.step as u64 != done_step || outstanding.reported != outstanding.len {
                    return Err(Failure::new(
                        FailureKind::Crash,
                        Some(step),
                        format!(
                            "worker {worker}: end of batch {done_step} after {} of {} results (batch of step {})",
                            outstanding.reported, outstanding.len, outstanding.step
                        ),
                    ));
                }
                outstanding.done = true;
                slot.last_progress = Instant::now();
                if let Expect::FailpointDeath { index } | Expect::FailpointStop { index } =
                    slot.expect
                {
                    return Err(Failure::new(
                        FailureKind::Harness,
                        Some(step),
                        format!("worker {worker} finished its batch without reaching the failpoint of request {index}"),
                    ));
                }
            }
            Reply::Result(result) => {
                let slot = &mut self.slots[worker as usize];
                let Some(outstanding) = slot.outstanding.as_mut() else {
                    return Err(self.fail(
                        FailureKind::Crash,
                        format!("worker {worker}: result without a batch"),
                    ));
                };
                outstanding.reported += 1;
                slot.last_progress = Instant::now();
                if let Expect::FailpointDeath { index } | Expect::FailpointStop { index } =
                    slot.expect
                {
                    if index == result.index {
                        return Err(self.fail(
                            FailureKind::Harness,
                            format!(
                                "the failpoint of request {index} was not reached (insert outcome {:?}); is sim built with its `faults` feature?",
                                result.insert
                            ),
                        ));
                    }
                }
                self.timing.max_op_ns = self.timing.max_op_ns.max(result.op_ns);
                if self.probe_index == Some(result.index) {
                    self.probe_result = Some(result.clone());
                }
                let violations = self
                    .checker
                    .result(worker, incarnation, step as u32, &result);
                for violation in violations {
                    if violation.kind == ViolationKind::Protocol {
                        return Err(self.fail(
                            FailureKind::Crash,
                            format!("worker {worker}.{incarnation}: {violation}"),
                        ));
                    }
                    self.note_violation(violation);
                }
                self.maybe_deliver(worker)?;
            }
        }
        Ok(())
    }

    fn note_violation(&mut self, violation: Violation) {
        match violation.kind {
            kind if kind.is_wrong_value() => self.wrong_values += 1,
            ViolationKind::Validation => self.validation_failures += 1,
            _ => self.model_mismatches += 1,
        }
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(violation);
        }
    }

    /// Sends a planned asynchronous SIGKILL / SIGSTOP once enough results are in.
    fn maybe_deliver(&mut self, worker: u16) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let Expect::Async {
            kill,
            after,
            delivered: false,
        } = slot.expect
        else {
            return Ok(());
        };
        let reported = slot.outstanding.as_ref().map_or(0, |o| o.reported);
        if reported < after {
            return Ok(());
        }
        let Some(proc) = slot.proc.as_mut() else {
            return Ok(());
        };
        let sent = if kill {
            proc.child.kill()
        } else {
            os::send_signal(proc.pid, Signal::Stop)
        };
        slot.expect = Expect::Async {
            kill,
            after,
            delivered: true,
        };
        slot.last_progress = Instant::now();
        sent.map_err(|e| {
            self.fail(
                FailureKind::Harness,
                format!("cannot signal worker {worker}: {e}"),
            )
        })
    }

    fn handle_death(&mut self, worker: u16, incarnation: u16, at_ns: u64) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let Some(mut proc) = slot.proc.take() else {
            return Ok(());
        };
        let status = proc.child.wait();
        let expected = matches!(
            slot.expect,
            Expect::FailpointDeath { .. }
                | Expect::Async {
                    kill: true,
                    delivered: true,
                    ..
                }
        );
        slot.ready = false;
        slot.outstanding = None;
        slot.stalled_since = None;
        slot.expect = Expect::Nothing;
        let status_text = status
            .as_ref()
            .map_or_else(|e| format!("unknown status ({e})"), describe_status);
        if !expected {
            return Err(self.fail(
                FailureKind::Crash,
                format!("worker {worker}.{incarnation} died unexpectedly: {status_text}"),
            ));
        }
        if status.as_ref().ok().and_then(|s| s.signal()) != Some(libc::SIGKILL) {
            return Err(self.fail(
                FailureKind::Crash,
                format!("worker {worker}.{incarnation} was to be killed by SIGKILL but ended with {status_text}"),
            ));
        }
        self.timing.kills_observed += 1;
        self.checker
            .worker_lost(worker, incarnation, self.step as u32);
        let fault = self.current_fault.unwrap_or(FaultKind::KillAsync);
        self.last_death = Some((at_ns, fault));
        Ok(())
    }

    fn tick(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let Some(proc) = slot.proc.as_ref() else {
                continue;
            };
            if slot.stalled_since.is_some() {
                continue;
            }
            let expect_stop = matches!(
                slot.expect,
                Expect::FailpointStop { .. }
                    | Expect::Async {
                        kill: false,
                        delivered: true,
                        ..
                    }
            );
            if expect_stop && os::process_state(proc.pid) == ProcState::Stopped {
                slot.stopped_at = match slot.expect {
                    Expect::FailpointStop { index } => Some(index),
                    _ => None,
                };
                slot.stalled_since = Some(now);
                slot.expect = Expect::Nothing;
                self.timing.stops_observed += 1;
                continue;
            }
            if !expect_stop
                && slot.busy()
                && now.duration_since(slot.last_progress) > UNPLANNED_STOP_CHECK
                && os::process_state(proc.pid) == ProcState::Stopped
            {
                // A stop failpoint hit a second time within one insert: the store ran the
                // write section's body again after finding corruption under the writer lock,
                // i.e. another writer changed the data while this one held the lock (nothing
                // else corrupts the files of a replay). A correctness violation; resume the
                // worker at once so that the run goes on.
                let pid = proc.pid;
                let at = slot.stopped_at;
                slot.last_progress = now;
                self.timing.unplanned_stops += 1;
                if let Err(e) = os::send_signal(pid, Signal::Cont) {
                    return Err(self.fail(
                        FailureKind::Harness,
                        format!("cannot SIGCONT worker {index} after an unplanned stop: {e}"),
                    ));
                }
                self.note_violation(Violation {
                    kind: ViolationKind::StoreCorrupt,
                    index: at.unwrap_or(0),
                    message: format!(
                        "worker {index} stopped at its stop failpoint a second time in one insert (request {}): the write ran again after finding corruption under the writer lock",
                        at.map_or_else(|| "unknown".to_owned(), |i| i.to_string())
                    ),
                });
                continue;
            }
            if slot.busy() && now.duration_since(slot.last_progress) > self.options.watchdog {
                let what = match (&slot.outstanding, slot.ready) {
                    (_, false) => "starting (no ready line)".to_owned(),
                    (Some(o), true) if !o.done => {
                        format!("{} of {} requests of its batch answered", o.reported, o.len)
                    }
                    _ => format!("waiting for a planned fault ({:?})", slot.expect),
                };
                let message = format!(
                    "worker {index}.{} made no progress for {} ms: {what}",
                    slot.incarnation,
                    self.options.watchdog.as_millis()
                );
                return Err(self.fail(FailureKind::Liveness, message));
            }
        }
        Ok(())
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
