//! The multi-process replay job (`--workers` / `--seeds`, see [`crate::mp`]): its options
//! from the command line, the runs, and the command that replays one seed.

use std::time::Duration;

use super::args::{ReplayArgs, ReportArgs};
use super::{exit, fail, load_trace};
use crate::mp::pidns::ProcView;
use crate::mp::{self, MpOptions};

/// Quotes `text` for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,%+@".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The exact command that replays one seed of a replay.
pub fn replay_command(report: &ReportArgs, replay: &ReplayArgs, workers: u16, seed: u64) -> String {
    let mut parts: Vec<String> = vec!["cargo run --release -p sim --".into()];
    if let Some(path) = &report.trace {
        parts.push(format!("--trace {}", shell_quote(&path.to_string_lossy())));
    }
    if let Some(format) = report.format {
        parts.push(format!("--format {}", format.name()));
    }
    parts.push(format!("--workers {workers} --seed {seed}"));
    if replay.faults {
        parts.push("--faults".into());
    }
    if replay.serial {
        parts.push("--serial".into());
    }
    if let Some(ops) = replay.ops {
        parts.push(format!("--ops {ops}"));
    }
    if let Some(first) = report.capacity.0.first() {
        parts.push(format!("--capacity {first}"));
    }
    if replay.write_fraction > 0.0 {
        parts.push(format!("--write-fraction {}", replay.write_fraction));
    }
    if replay.batch_max as usize != crate::mp::scheduler::BATCH_MAX_DEFAULT {
        parts.push(format!("--batch-max {}", replay.batch_max));
    }
    if replay.watchdog_ms != 5_000 {
        parts.push(format!("--watchdog-ms {}", replay.watchdog_ms));
    }
    if replay.recovery_ms != 1_000 {
        parts.push(format!("--recovery-ms {}", replay.recovery_ms));
    }
    if replay.slow_writes > 0 {
        parts.push(format!("--slow-writes {}", replay.slow_writes));
    }
    match replay.pid_ns {
        Some(ProcView::Own) => parts.push("--pid-ns".into()),
        Some(view) => parts.push(format!("--pid-ns={view}")),
        None => {}
    }
    parts.join(" ")
}

/// The options of one replay run from the command line.
pub fn replay_options(report: &ReportArgs, replay: &ReplayArgs, seed: u64) -> MpOptions {
    let mut options = MpOptions::new(seed, replay.workers.unwrap_or(4));
    options.faults = replay.faults;
    options.serial = replay.serial;
    options.ops = replay.ops.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if let Some(first) = report.capacity.0.first() {
        options.capacity = *first;
    }
    options.batch_max = replay.batch_max as usize;
    options.write_fraction = replay.write_fraction;
    options.watchdog = Duration::from_millis(replay.watchdog_ms.max(1));
    options.recovery_bound = Duration::from_millis(replay.recovery_ms.max(1));
    options.pid_ns = replay.pid_ns;
    options.slow_write_ms = replay.slow_writes;
    options
}

/// The multi-process replay job (`--workers` / `--seeds`): returns an exit code.
pub fn run_replay(report_args: &ReportArgs, replay: &ReplayArgs) -> u8 {
    for (flag, given) in [
        ("--json", report_args.json.is_some()),
        ("--plot", report_args.plot.is_some()),
        ("--policies", report_args.policies.is_some()),
    ] {
        if given {
            return fail(
                exit::USAGE,
                format!(
                    "{flag} is an option of the hit-rate report, not of the replay (--workers)"
                ),
            );
        }
    }
    let workers = replay.workers.unwrap_or(4);
    if replay.pid_ns.is_some() {
        if let Err(reason) = mp::pidns::available() {
            return fail(exit::FAILURE, reason);
        }
    }
    let Some(count) = replay.seeds else {
        let seed = replay
            .seed
            .unwrap_or_else(|| u64::from(rand::random::<u32>()));
        // The seed first, before anything can fail.
        println!("seed={seed}");
        let trace = match load_trace(report_args) {
            Ok(trace) => trace,
            Err(err) => return fail(exit::FAILURE, err),
        };
        let report = mp::run(&trace, &replay_options(report_args, replay, seed));
        let text = mp::format_report(&report);
        print!(
            "{}",
            text.strip_prefix(&format!("seed={seed}\n"))
                .unwrap_or(&text)
        );
        return match &report.failure {
            None => exit::SUCCESS,
            Some(failure) => {
                eprintln!(
                    "sim: replay failed ({}); replay it with:\n  {}",
                    failure.kind.name(),
                    replay_command(report_args, replay, workers, seed)
                );
                exit::of_failure(failure.kind)
            }
        };
    };

    let seeds: Vec<u64> = match replay.seed {
        Some(base) => (0..u64::from(count))
            .map(|i| base.wrapping_add(i))
            .collect(),
        None => (0..count)
            .map(|_| u64::from(rand::random::<u32>()))
            .collect(),
    };
    println!(
        "seeds: {count} runs of {workers} workers{}{} ({})",
        if replay.faults { " with faults" } else { "" },
        match replay.pid_ns {
            Some(view) => format!(", one PID namespace each ({view})"),
            None => String::new(),
        },
        match replay.seed {
            Some(base) => format!(
                "seeds {base} to {}",
                base.wrapping_add(u64::from(count) - 1)
            ),
            None => "random seeds".to_owned(),
        }
    );
    let trace = match load_trace(report_args) {
        Ok(trace) => trace,
        Err(err) => return fail(exit::FAILURE, err),
    };
    let mut first_failure: Option<u8> = None;
    let mut failed = 0usize;
    let mut walls = Vec::new();
    let (mut faults, mut recoveries, mut wrong, mut max_recovery_ns) = (0usize, 0usize, 0u64, 0u64);
    let mut takeovers = 0u64;
    for &seed in &seeds {
        let report = mp::run(&trace, &replay_options(report_args, replay, seed));
        println!("{}", mp::summary_line(&report));
        walls.push(report.timing.wall.as_secs_f64());
        faults += report.faults_injected();
        recoveries += report.timing.recoveries.len();
        wrong += report.wrong_values;
        takeovers += report.timing.takeovers;
        max_recovery_ns = report
            .timing
            .recoveries
            .iter()
            .map(|r| r.recovery_ns)
            .fold(max_recovery_ns, u64::max);
        if let Some(failure) = &report.failure {
            failed += 1;
            println!("  {}: {}", failure.kind.name(), failure.message);
            println!(
                "  replay: {}",
                replay_command(report_args, replay, workers, seed)
            );
            first_failure.get_or_insert(exit::of_failure(failure.kind));
        }
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "seeds: {} run, {failed} failed; faults injected {faults}, recoveries {recoveries} (max {:.1} ms), wrong values {wrong}, lock takeovers {takeovers}; time per seed median {:.2} s, max {:.2} s",
        seeds.len(),
        max_recovery_ns as f64 / 1e6,
        walls.get(walls.len() / 2).copied().unwrap_or(0.0),
        walls.last().copied().unwrap_or(0.0)
    );
    first_failure.unwrap_or(exit::SUCCESS)
}
