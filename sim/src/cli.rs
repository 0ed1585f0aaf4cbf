//! Command line of the `sim` binary: argument parsing (clap) and the jobs: the hit-rate
//! report (default), the multi-process replay (`--workers K`, [`ReplayArgs`], see
//! [`crate::mp`]) and `sim gen`.
//!
//! Extending: new report flags go into [`ReportArgs`], replay flags into [`ReplayArgs`], new
//! jobs into [`Command`]; [`main`] dispatches. Exit codes live in [`exit`].

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::gen::{self, GenSpec, Kind};
use crate::mp::pidns::ProcView;
use crate::mp::{self, MpOptions};
use crate::policies::PolicyKind;
use crate::report::{self, CapacitySpec, Progress, ReportOptions};
use crate::trace::{self, Format, Trace};

/// Process exit codes of `sim`.
pub mod exit {
    /// Everything ran and every check passed.
    pub const SUCCESS: u8 = 0;
    /// The job could not run: unreadable or corrupt trace, unwritable output.
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// A correctness check failed (production and reference SIEVE disagree; a replay read a
    /// wrong value or the store failed validation).
    pub const CORRECTNESS: u8 = 3;
    /// Replay: a worker died without a planned fault, panicked or broke the protocol.
    pub const CRASH: u8 = 4;
    /// Replay: a worker made no progress within the watchdog, or no write succeeded within the
    /// recovery bound after a crash (a hang).
    pub const LIVENESS: u8 = 5;

    /// The exit code of a replay failure.
    pub fn of_failure(kind: crate::mp::FailureKind) -> u8 {
        match kind {
            crate::mp::FailureKind::Crash => CRASH,
            crate::mp::FailureKind::Liveness => LIVENESS,
            crate::mp::FailureKind::Correctness => CORRECTNESS,
            crate::mp::FailureKind::Harness => FAILURE,
        }
    }
}

/// The generated trace embedded in the binary, replayed when no `--trace` is given.
pub const DEMO_TRACE_NAME: &str = "corpora/traces/mixed.txt.gz";
/// Bytes of [`DEMO_TRACE_NAME`].
pub const DEMO_TRACE: &[u8] = include_bytes!("../../corpora/traces/mixed.txt.gz");

const ABOUT: &str =
    "Cache simulator of warp_cache: replays a trace of keys through the production SIEVE and \
reference policies and reports their miss ratios.";

const LONG_ABOUT: &str = "\
Cache simulator of warp_cache.

Hit-rate report (default): replays a trace (a sequence of keys, every object of size 1, cold \
start) through several cache policies at several cache sizes and prints the miss ratio of each:

  sieve        production SIEVE (warp_cache_core::mem::MemStore, the memory backend's engine)
  shm-sieve    production SIEVE of the shared backend (warp_cache_core::shm::ShmStore, one process)
  model-sieve  reference SIEVE written like the paper's pseudocode; the three SIEVEs must agree exactly
  lru          least recently used
  fifo         first in, first out
  optimal      Belady's optimal (knows the future; a lower bound for every policy)

Without --trace it runs a demo on a small generated trace built into the binary. \
`sim gen` writes synthetic traces (Zipf, scans, loops, shifting working sets).

Multi-process replay (--workers K): starts K worker processes (this binary again) that open one \
real shared-memory cache (files in a fresh directory under /dev/shm, removed at the end) and \
replay the trace between them: every request is a get and, on a miss, an insert of a value that \
names its key, writer and request and carries a checksum. The seed alone decides the schedule \
(which worker runs which requests, in which step, where faults hit); the same seed and binary \
give the same schedule and the same deterministic report (its first line is seed=N; figures \
that depend on timing are printed last, under their own header). The parent checks every \
result: a get may miss, but it must never return a torn value, another key's value, a value \
that was never stored or one already overwritten; with --serial and no --faults every result \
must equal the reference SIEVE's. The store is validated at checkpoints; a watchdog turns a \
hang into a failure.

With --faults, workers are killed (SIGKILL) at failpoints inside the write path (after taking \
the writer lock, in the middle of writing a value, before unlocking) or at random points, \
stalled with SIGSTOP and resumed with SIGCONT, and restarted; after every kill the next write \
must succeed within --recovery-ms (lock takeover and repair). --seeds N runs N seeds and prints \
the exact command that replays each failing one. --write-fraction makes some requests updates of \
present keys, so that writers and readers meet on hot keys (with long --batch-max batches this \
exercises the seqlock's read validation). --pid-ns runs every worker in a PID namespace of its own (one cache directory shared, as between containers); more lock takeovers than killed workers then mean a live writer's lock was taken over.";

const AFTER_HELP: &str = "\
Trace formats (--format, otherwise detected from the path and the first bytes; gzip/xz by magic bytes):
  txt             one decimal key per line (blank lines and lines starting with '*' are skipped)
  be32 / be64     raw big-endian 32-/64-bit keys
  addr            text lines '<op> 0x<hex address> <n>', the key is the address
  oracle-general  libCacheSim binary: 24-byte records {u32 time, u64 id, u32 size, i64 next}

Examples (from a checkout, run `cargo run --release -p sim -- <options>` in place of `sim <options>`):
  sim                                                   demo on the embedded trace
  sim --trace ../shared/traces/caffeine/lirs/sprite.trace.gz
  sim --trace web07.trace.xz --format be32 --capacity 100,1000,10000 --json out.json --plot out.svg
  sim --trace t.txt --policies sieve,lru,optimal --capacity 0.5%,1%,2%,5%,10%
  sim gen --kind zipf --alpha 0.8 --seed 1 --out zipf.txt.gz
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --seed 7 --faults --ops 20000
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --faults --seeds 20 --ops 5000
  sim --trace corpora/traces/loop.txt.gz --workers 3 --serial --seed 1 --ops 5000
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 2 --batch-max 2000 --write-fraction 0.5 --seeds 5
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --faults --pid-ns --seeds 5 --ops 6000

Exit codes:
  0  success (every check passed)
  1  the job could not run: unreadable trace, unwritable output, workers could not start
  2  bad arguments
  3  correctness: SIEVE implementations disagree; a replay read a wrong value, failed
     validation, took the writer lock over more often than workers were killed (a live
     writer's lock taken), or (with --serial, no --faults) differed from the reference SIEVE
  4  crash: a replay worker died without a planned fault, panicked or broke the protocol
  5  liveness: a replay worker made no progress within --watchdog-ms, or no write succeeded
     within --recovery-ms after a crash
With --seeds, the exit code is the first failing seed's.";

/// `sim`: hit-rate report (default) or `sim gen`.
#[derive(Debug, Parser)]
#[command(
    name = "sim",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub replay: ReplayArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a synthetic trace (one decimal key per line; gzip if OUT ends in .gz).
    Gen(GenArgs),
}

/// A comma-separated list of cache sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityList(pub Vec<CapacitySpec>);

impl FromStr for CapacityList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        CapacitySpec::parse_list(text).map(CapacityList)
    }
}

/// A comma-separated list of policies.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyList(pub Vec<PolicyKind>);

impl FromStr for PolicyList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        PolicyKind::parse_list(text).map(PolicyList)
    }
}

/// Options of the hit-rate report.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Trace file to replay (default: the embedded demo trace).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Trace format: txt, be32, be64, addr or oracle-general (default: detected).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,

    /// Cache sizes: entries (100,1000) or percentages of the trace's unique keys (1%,5%,10%).
    /// A replay (--workers) uses the first size, relative to the replayed requests' keys.
    #[arg(long, value_name = "SIZES", default_value = "1%,5%,10%")]
    pub capacity: CapacityList,

    /// Policies to compare, comma-separated: sieve, shm-sieve, model-sieve, lru, fifo, optimal,
    /// or all.
    /// By default all, except that model-sieve is skipped on runs too big for it.
    #[arg(long, value_name = "LIST")]
    pub policies: Option<PolicyList>,

    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also draw miss ratio against cache size as an SVG image to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// Options of the multi-process replay (any of them, with --workers or --seeds, selects it).
#[derive(Debug, Args)]
#[command(next_help_heading = "Multi-process replay")]
pub struct ReplayArgs {
    /// Replay the trace with K worker processes sharing one real shared-memory cache.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Option<u16>,

    /// Seed of the replay's schedule and faults (default: random, printed as seed=N). With
    /// --seeds: the first of N consecutive seeds.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Inject faults: SIGKILL at write-path failpoints and at random points, SIGSTOP/SIGCONT
    /// stalls, restarts.
    #[arg(long)]
    pub faults: bool,

    /// Run N seeds (fresh run each; random unless --seed gives the first), print every failing
    /// seed with the command that replays it. Implies --workers 4 unless given.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub seeds: Option<u32>,

    /// Replay only the first N requests of the trace (default: all).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,

    /// One worker at a time (a total order of requests); without --faults every result must
    /// then equal the reference SIEVE's exactly.
    #[arg(long)]
    pub serial: bool,

    /// Largest batch of requests a worker gets per step (larger batches: longer stretches of
    /// truly concurrent requests between barriers).
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_max: u32,

    /// Fraction of requests (0 to 1) that are forced writes: an insert even on a hit, so that
    /// writers update hot keys in place while other workers read them (default: 0, a pure
    /// read-through replay).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_fraction)]
    pub write_fraction: f64,

    /// Liveness bound: a busy worker silent for this long fails the run (exit code 5).
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub watchdog_ms: u64,

    /// Recovery bound: after a worker is killed, the next write must complete within this
    /// long (lock takeover, repair; exit code 5 otherwise).
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub recovery_ms: u64,

    /// Run every worker in a PID namespace of its own (needs root / CAP_SYS_ADMIN; the run
    /// fails with exit code 1 where PID namespaces are not permitted): own-proc (the default)
    /// gives each namespace its own /proc, like containers sharing /dev/shm; host-proc leaves
    /// the driver's /proc visible (`unshare --pid --fork` without --mount-proc).
    #[arg(long, value_name = "PROC", num_args = 0..=1, require_equals = true,
          default_missing_value = "own-proc")]
    pub pid_ns: Option<ProcView>,

    /// Every forced write of --write-fraction holds the writer lock MS milliseconds longer
    /// (core failpoint mid_write:sleep=MS): a slow but live writer, as one descheduled while
    /// holding the lock on a loaded machine. Waiters must wait for it, never take over.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub slow_writes: u32,
}

impl ReplayArgs {
    /// Whether the replay was asked for.
    pub fn selected(&self) -> bool {
        self.workers.is_some() || self.seeds.is_some()
    }

    /// Replay flags given without --workers / --seeds.
    fn stray_flag(&self) -> Option<&'static str> {
        if self.seed.is_some() {
            Some("--seed")
        } else if self.faults {
            Some("--faults")
        } else if self.ops.is_some() {
            Some("--ops")
        } else if self.serial {
            Some("--serial")
        } else if self.pid_ns.is_some() {
            Some("--pid-ns")
        } else {
            None
        }
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{text:?} is not a fraction between 0 and 1 (e.g. 0.1)"
        )),
    }
}

/// Options of `sim gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// zipf: skewed independent requests; scan: Zipf plus one-time sequential scans;
    /// loop: 0..keys repeated; shift: Zipf whose hot set moves; mixed: random segments of all.
    #[arg(long, value_name = "KIND")]
    pub kind: Kind,
    /// Seed of the random stream: the same seed and options give the same keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of requests.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Distinct keys of the Zipf / loop part.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Zipf exponent (0 = uniform; around 1 = typical web skew).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Length of each scan (and of each `mixed` segment).
    #[arg(long, default_value_t = 1_000)]
    pub scan_len: usize,
    /// Fraction of requests that belong to scans (`scan`).
    #[arg(long, default_value_t = 0.3)]
    pub scan_fraction: f64,
    /// Number of working-set phases (`shift`).
    #[arg(long, default_value_t = 4)]
    pub phases: usize,
    /// Output file (gzip-compressed when it ends in .gz); default: standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl GenArgs {
    pub fn spec(&self) -> GenSpec {
        GenSpec {
            kind: self.kind,
            seed: self.seed,
            requests: self.requests,
            keys: self.keys,
            alpha: self.alpha,
            scan_len: self.scan_len,
            scan_fraction: self.scan_fraction,
            phases: self.phases,
        }
    }
}

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

/// A progress bar on standard error, drawn only when standard error is a terminal.
pub struct TerminalProgress {
    enabled: bool,
    total: u64,
    last_draw: Option<Instant>,
}

impl TerminalProgress {
    pub fn new() -> TerminalProgress {
        TerminalProgress {
            enabled: io::stderr().is_terminal(),
            total: 0,
            last_draw: None,
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// One line of progress bar: `[#####.....]  50%  lru @ 490`.
pub fn progress_line(done: u64, total: u64, what: &str) -> String {
    const WIDTH: u64 = 30;
    let fraction = if total == 0 {
        1.0
    } else {
        (done.min(total) as f64) / total as f64
    };
    let filled = (fraction * WIDTH as f64) as u64;
    format!(
        "[{}{}] {:>3}%  {what}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        (fraction * 100.0) as u64
    )
}

impl Progress for TerminalProgress {
    fn start(&mut self, total: u64) {
        self.total = total;
        self.last_draw = None;
    }

    fn update(&mut self, done: u64, what: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|last| now.duration_since(last) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut stderr = io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{}", progress_line(done, self.total, what));
        let _ = stderr.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut stderr = io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn report_flags_parse() {
        let cli = Cli::try_parse_from([
            "sim",
            "--trace",
            "t.txt",
            "--format",
            "be32",
            "--capacity",
            "100,5%",
            "--policies",
            "lru,sieve",
            "--json",
            "o.json",
            "--plot",
            "o.svg",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let args = cli.report;
        assert_eq!(args.format, Some(Format::Be32));
        assert_eq!(
            args.capacity.0,
            vec![
                CapacitySpec::Absolute(100),
                CapacitySpec::PercentMilli(5_000)
            ]
        );
        assert_eq!(
            args.policies.unwrap().0,
            vec![PolicyKind::Sieve, PolicyKind::Lru]
        );
    }

    #[test]
    fn defaults_and_errors() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.report.capacity.0.len(), 3);
        assert!(cli.report.trace.is_none());
        let err = Cli::try_parse_from(["sim", "--capacity", "0%"]).unwrap_err();
        assert!(err.to_string().contains("percentage"), "{err}");
        let err = Cli::try_parse_from(["sim", "--format", "csv"]).unwrap_err();
        assert!(err.to_string().contains("oracle-general"), "{err}");
        assert!(
            Cli::try_parse_from(["sim", "gen"]).is_err(),
            "--kind is required"
        );
        let cli = Cli::try_parse_from(["sim", "gen", "--kind", "loop", "--keys", "5"]).unwrap();
        let Some(Command::Gen(args)) = cli.command else {
            panic!("expected gen")
        };
        assert_eq!(args.spec().kind, Kind::Loop);
        assert_eq!(args.spec().keys, 5);
    }

    #[test]
    fn replay_flags_parse_and_build_the_replay_command() {
        let cli = Cli::try_parse_from([
            "sim",
            "--trace",
            "my trace.txt",
            "--workers",
            "3",
            "--seed",
            "9",
            "--faults",
            "--ops",
            "500",
            "--write-fraction",
            "0.25",
            "--capacity",
            "2%,5%",
        ])
        .unwrap();
        assert!(cli.replay.selected());
        assert_eq!(cli.replay.workers, Some(3));
        let options = replay_options(&cli.report, &cli.replay, 9);
        assert_eq!(options.workers, 3);
        assert!(options.faults && !options.serial);
        assert_eq!(options.ops, Some(500));
        assert_eq!(options.capacity, CapacitySpec::PercentMilli(2_000));
        assert_eq!(options.write_fraction, 0.25);
        assert_eq!(
            replay_command(&cli.report, &cli.replay, 3, 9),
            "cargo run --release -p sim -- --trace 'my trace.txt' --workers 3 --seed 9 --faults --ops 500 --capacity 2% --write-fraction 0.25"
        );
        for bad in [
            vec!["sim", "--workers", "0"],
            vec!["sim", "--workers", "2", "--write-fraction", "1.5"],
            vec!["sim", "--seeds", "0"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["sim", "--workers", "2", "--pid-ns", "--faults"]).unwrap();
        assert_eq!(cli.replay.pid_ns, Some(ProcView::Own));
        assert!(cli.replay.faults);
        assert_eq!(
            replay_options(&cli.report, &cli.replay, 1).pid_ns,
            Some(ProcView::Own)
        );
        assert!(replay_command(&cli.report, &cli.replay, 2, 1).ends_with(" --pid-ns"));
        let cli = Cli::try_parse_from(["sim", "--workers", "2", "--pid-ns=host-proc"]).unwrap();
        assert_eq!(cli.replay.pid_ns, Some(ProcView::Host));
        assert!(replay_command(&cli.report, &cli.replay, 2, 1).ends_with("--pid-ns=host-proc"));
        assert!(Cli::try_parse_from(["sim", "--workers", "2", "--pid-ns=yes"]).is_err());
        let stray = Cli::try_parse_from(["sim", "--faults"]).unwrap();
        assert!(!stray.replay.selected());
        assert_eq!(stray.replay.stray_flag(), Some("--faults"));
        let seeds = Cli::try_parse_from(["sim", "--seeds", "3"]).unwrap();
        assert!(seeds.replay.selected());
        assert_eq!(replay_options(&seeds.report, &seeds.replay, 1).workers, 4);
    }

    #[test]
    fn embedded_demo_trace_loads() {
        let args = Cli::try_parse_from(["sim"]).unwrap().report;
        let trace = load_trace(&args).unwrap();
        assert!(trace.requests() >= 10_000);
        assert!(trace.name.contains("embedded"));
    }

    /// The committed generated traces and the `sim gen` arguments that wrote them (also listed
    /// in corpora/traces/README.md).
    const COMMITTED_TRACES: &[(&str, &str)] = &[
        ("zipf-0.8.txt.gz", "--kind zipf --alpha 0.8"),
        ("zipf-1.0.txt.gz", "--kind zipf --alpha 1.0"),
        ("scan.txt.gz", "--kind scan"),
        ("loop.txt.gz", "--kind loop"),
        ("shift.txt.gz", "--kind shift"),
        ("mixed.txt.gz", "--kind mixed"),
    ];

    #[test]
    fn committed_traces_are_what_gen_writes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpora/traces");
        for (file, args) in COMMITTED_TRACES {
            let argv = ["sim", "gen"].into_iter().chain(args.split_whitespace());
            let Some(Command::Gen(gen_args)) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("expected gen")
            };
            let expected = gen::generate(&gen_args.spec()).unwrap();
            let committed = trace::read_trace(&dir.join(file), None).unwrap();
            assert!(
                committed.keys == expected,
                "corpora/traces/{file} is not `sim gen {args}`; regenerate it (see corpora/traces/README.md)"
            );
        }
        assert!(DEMO_TRACE_NAME.ends_with(COMMITTED_TRACES[5].0));
    }

    #[test]
    fn progress_line_is_bounded() {
        assert_eq!(
            progress_line(50, 100, "lru @ 4"),
            format!("[{}{}]  50%  lru @ 4", "#".repeat(15), ".".repeat(15))
        );
        assert!(progress_line(200, 100, "x").contains("100%"));
        assert!(progress_line(0, 0, "x").contains("100%"));
    }
}
