//! The text of a multi-process replay's report: the full report ([`format_report`]: the
//! deterministic part, then [`TIMING_HEADER`] and the figures that depend on timing) and the
//! one-line summary of `--seeds` mode ([`summary_line`]).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::outcome::MpReport;
use super::pidns::ProcView;
use crate::report::thousands;

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// The line that separates the deterministic report from the timing-dependent figures.
pub const TIMING_HEADER: &str = "timing-dependent (differs between runs of the same seed):";

/// The full report: `seed=N`, the deterministic part, then [`TIMING_HEADER`] and the figures
/// that depend on timing.
pub fn format_report(report: &MpReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "seed={}", report.seed);
    let _ = writeln!(
        out,
        "replay     {} ({}): {} of {} requests, {} unique keys",
        report.trace_name,
        report.trace_format,
        thousands(report.ops),
        thousands(report.trace_requests),
        thousands(report.unique_keys)
    );
    let _ = writeln!(
        out,
        "setup      {} workers, capacity {} ({}), faults {}, {} schedule, batches of 1..{}, forced writes {}%",
        report.workers,
        thousands(report.capacity as usize),
        report.capacity_requested,
        if report.faults { "on" } else { "off" },
        if report.serial {
            "serial"
        } else {
            "concurrent"
        },
        report.batch_max,
        report.write_fraction * 100.0
    );
    if report.slow_write_ms > 0 {
        let _ = writeln!(
            out,
            "slow       every forced write holds the writer lock {} ms longer (a live writer descheduled under the lock)",
            report.slow_write_ms
        );
    }
    if let Some(view) = report.pid_ns {
        let _ = writeln!(
            out,
            "namespaces one PID namespace per worker ({view}: {}), one cache directory",
            match view {
                ProcView::Own => "each with its own /proc, like a container",
                ProcView::Host => "all seeing the driver's /proc",
            }
        );
    }
    let _ = writeln!(
        out,
        "schedule   {} steps, digest {:016x}, {} checkpoints",
        thousands(report.steps),
        report.digest,
        report.checkpoints
    );
    if report.faults {
        let kinds: Vec<String> = report
            .fault_counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            out,
            "faults     {} injected: {}; {} restarts, {} requests dropped by failpoint kills",
            report.faults_injected(),
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(" ")
            },
            report.restarts,
            report.dropped_planned
        );
    }
    let _ = writeln!(
        out,
        "checks     wrong values {}, validation failures {}, {}",
        report.wrong_values,
        report.validation_failures,
        if report.exact {
            format!("reference SIEVE mismatches {}", report.model_mismatches)
        } else {
            "reference SIEVE comparison off (only with --serial and no --faults)".to_owned()
        }
    );
    match &report.failure {
        None => {
            let _ = writeln!(out, "result     PASS");
        }
        Some(failure) => {
            let at = failure
                .step
                .map(|s| format!(" at step {s}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "result     FAIL ({}){at}: {}",
                failure.kind.name(),
                failure.message
            );
            for violation in report.violations.iter().skip(1) {
                let _ = writeln!(out, "           also: {violation}");
            }
        }
    }
    let t = &report.timing;
    let s = &t.stats;
    let _ = writeln!(out, "{TIMING_HEADER}");
    let _ = writeln!(
        out,
        "  results  {} checked: {} hits (values verified), {} misses; inserts {} ({} evicting), updates {}, lock-busy skips {}; {} lost with killed workers",
        thousands(s.results as usize),
        thousands(s.hits as usize),
        thousands(s.misses as usize),
        thousands((s.inserted + s.inserted_evicting) as usize),
        thousands(s.inserted_evicting as usize),
        thousands(s.updated as usize),
        thousands(s.skipped_busy as usize),
        s.lost
    );
    if report.faults || !t.recoveries.is_empty() {
        let mut recovery: Vec<u64> = t.recoveries.iter().map(|r| r.recovery_ns).collect();
        recovery.sort_unstable();
        let max = recovery.last().copied().unwrap_or(0);
        let median = recovery.get(recovery.len() / 2).copied().unwrap_or(0);
        let max_since_crash = t
            .recoveries
            .iter()
            .map(|r| r.since_crash_ns)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "  recovery {} of {} kills recovered: the first write after each crash completed within {} (median {}, bound {} ms; {} counting the harness's restarts)",
            t.recoveries.len(),
            t.kills_observed,
            ms(max),
            ms(median),
            report.recovery_bound.as_millis(),
            ms(max_since_crash),
        );
        let _ = writeln!(
            out,
            "  stalls   {} workers stopped (SIGSTOP) and resumed{}",
            t.stops_observed,
            if t.unplanned_stops > 0 {
                format!(
                    "; {} unplanned stops resumed at once (a stop failpoint reached twice in one insert: its write ran again after finding corruption under the lock; a correctness violation)",
                    t.unplanned_stops
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "  lock     {} writer-lock takeovers ({} workers killed: at most that many are legitimate), {} table resets",
        t.takeovers, t.kills_observed, t.resets
    );
    let _ = writeln!(
        out,
        "  latency  slowest request {} (counting any time its worker was stopped); {} validations",
        ms(t.max_op_ns),
        t.validations
    );
    let _ = writeln!(out, "  wall     {:.2} s", t.wall.as_secs_f64());
    out
}

/// One line for `--seeds` mode.
pub fn summary_line(report: &MpReport) -> String {
    let verdict = match &report.failure {
        None => "PASS".to_owned(),
        Some(f) => format!("FAIL ({})", f.kind.name()),
    };
    let max_recovery = report
        .timing
        .recoveries
        .iter()
        .map(|r| r.recovery_ns)
        .max()
        .unwrap_or(0);
    format!(
        "seed={} {verdict}: {} steps, {} faults, {} recoveries (max {}), wrong values {}, takeovers {}, {:.2} s",
        report.seed,
        report.steps,
        report.faults_injected(),
        report.timing.recoveries.len(),
        ms(max_recovery),
        report.wrong_values,
        report.timing.takeovers,
        report.timing.wall.as_secs_f64()
    )
}
