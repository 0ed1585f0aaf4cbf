//! What a multi-process replay produced ([`MpReport`]): its deterministic part (a function
//! of the seed, the options and the trace), the failure if any ([`Failure`], classed by
//! [`FailureKind`]) and the figures that depend on timing ([`Timing`]). The text of a report is
//! [`super::report_text`]; the run itself is [`super::driver`].
#![forbid(unsafe_code)]

use std::time::Duration;

use super::checker::{CheckStats, Violation};
use super::faults::FaultKind;
use super::options::MpOptions;
use super::pidns::ProcView;
use super::scheduler::{Plan, PlanSpec};
use crate::trace::Trace;

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
    pub(super) fn new(
        kind: FailureKind,
        step: Option<usize>,
        message: impl Into<String>,
    ) -> Failure {
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

    /// The report of a run about to execute `plan`: its deterministic part filled in from the
    /// plan and the options, no failure yet, no timing.
    pub(super) fn planned(
        trace: &Trace,
        options: &MpOptions,
        spec: &PlanSpec,
        plan: &Plan,
        unique_keys: usize,
        capacity: u32,
    ) -> MpReport {
        MpReport {
            seed: options.seed,
            trace_name: trace.name.clone(),
            trace_format: trace.format.name().to_owned(),
            trace_requests: trace.keys.len(),
            ops: spec.ops,
            unique_keys,
            workers: spec.workers,
            capacity,
            capacity_requested: options.capacity.to_string(),
            faults: options.faults,
            serial: options.serial,
            exact: options.serial && !options.faults,
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
        }
    }
}

/// The correctness failure of a run whose lock was taken over from a live writer.
pub(super) fn takeover_failure(report: &MpReport) -> Option<Failure> {
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
