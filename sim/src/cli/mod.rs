//! Command line of the `sim` binary: argument parsing (clap) and the jobs: the hit-rate
//! report (default), the multi-process replay (`--workers K`, [`ReplayArgs`], see
//! [`crate::mp`]) and `sim gen`.
//!
//! Extending: new report flags go into [`ReportArgs`], replay flags into [`ReplayArgs`], new
//! jobs into [`Command`]; [`main`] dispatches. Exit codes live in [`exit`].
//!
//! Files: the flags are defined in `args` (help text in `help`), the replay job is `replay`,
//! the report's progress bar `progress`; this file holds the entry point, the report and
//! `gen` jobs and the trace loading.

mod args;
pub mod exit;
mod help;
mod progress;
mod replay;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

pub use args::{CapacityList, Cli, Command, GenArgs, PolicyList, ReplayArgs, ReportArgs};
pub use progress::{progress_line, TerminalProgress};
pub use replay::{replay_command, replay_options, run_replay};

use crate::gen;
use crate::policies::PolicyKind;
use crate::report::{self, ReportOptions};
use crate::trace::{self, Format, Trace};

/// The generated trace embedded in the binary, replayed when no `--trace` is given.
pub const DEMO_TRACE_NAME: &str = "corpora/traces/mixed.txt.gz";
/// Bytes of [`DEMO_TRACE_NAME`].
pub const DEMO_TRACE: &[u8] = include_bytes!("../../../corpora/traces/mixed.txt.gz");

/// Entry point of the binary. A process started as a replay worker runs the worker instead.
pub fn main() -> ExitCode {
    if let Some(code) = crate::mp::worker::run_if_requested() {
        return code;
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Gen(args)) => run_gen(&args),
        None if cli.replay.selected() => run_replay(&cli.report, &cli.replay),
        None => match cli.replay.stray_flag() {
            Some(flag) => fail(
                exit::USAGE,
                format!(
                    "{flag} belongs to the multi-process replay: add --workers K (or --seeds N)"
                ),
            ),
            None => run_report(&cli.report),
        },
    };
    ExitCode::from(code)
}

fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    eprintln!("sim: error: {message}");
    code
}

/// Loads the trace the arguments name, or the embedded demo trace.
pub fn load_trace(args: &ReportArgs) -> Result<Trace, trace::TraceError> {
    match &args.trace {
        Some(path) => trace::read_trace(path, args.format),
        None => {
            let mut trace = trace::read_bytes(DEMO_TRACE, Format::Txt, DEMO_TRACE_NAME)?;
            trace.name = format!("{DEMO_TRACE_NAME} (embedded demo trace)");
            Ok(trace)
        }
    }
}

/// The report job: returns an exit code.
pub fn run_report(args: &ReportArgs) -> u8 {
    let show_reading = args.trace.is_some() && io::stderr().is_terminal();
    if let (true, Some(path)) = (show_reading, &args.trace) {
        eprint!("reading {} ...", path.display());
    }
    let loaded = load_trace(args);
    if show_reading {
        eprint!("\r\x1b[2K");
    }
    let trace = match loaded {
        Ok(trace) => trace,
        Err(err) => return fail(exit::FAILURE, err),
    };
    let options = ReportOptions {
        capacities: args.capacity.0.clone(),
        policies: args
            .policies
            .as_ref()
            .map_or_else(|| PolicyKind::ALL.to_vec(), |list| list.0.clone()),
        force_model_sieve: args
            .policies
            .as_ref()
            .is_some_and(|list| list.0.contains(&PolicyKind::ModelSieve)),
    };
    let mut progress = TerminalProgress::new();
    let report = match report::run(&trace, &options, &mut progress) {
        Ok(report) => report,
        Err(err) => return fail(exit::USAGE, err),
    };
    print!("{}", report::format_table(&report));
    if let Some(path) = &args.json {
        if let Err(err) = write_file(path, report::to_json(&report).as_bytes()) {
            return fail(exit::FAILURE, err);
        }
        eprintln!("sim: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(err) = write_file(path, report::to_svg(&report).as_bytes()) {
            return fail(exit::FAILURE, err);
        }
        eprintln!("sim: wrote {}", path.display());
    }
    if report.sieve_mismatches.is_empty() {
        exit::SUCCESS
    } else {
        fail(
            exit::CORRECTNESS,
            "the SIEVE implementations disagree (see the note above)",
        )
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// `sim gen`: returns an exit code.
pub fn run_gen(args: &GenArgs) -> u8 {
    let keys = match gen::generate(&args.spec()) {
        Ok(keys) => keys,
        Err(err) => return fail(exit::USAGE, err),
    };
    let result = match &args.out {
        Some(path) => {
            let gzip = path.extension().is_some_and(|ext| ext == "gz");
            File::create(path)
                .and_then(|file| gen::write_text(&keys, file, gzip))
                .map_err(|err| format!("cannot write {}: {err}", path.display()))
        }
        None => gen::write_text(&keys, io::stdout().lock(), false)
            .map_err(|err| format!("cannot write to standard output: {err}")),
    };
    if let Err(err) = result {
        return fail(exit::FAILURE, err);
    }
    if let Some(path) = &args.out {
        eprintln!(
            "sim: wrote {} requests ({} unique keys) to {}",
            keys.len(),
            trace::count_unique(&keys),
            path.display()
        );
    }
    exit::SUCCESS
}
