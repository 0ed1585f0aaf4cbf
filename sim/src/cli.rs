//! Command line of the `sim` binary: argument parsing (clap) and the two jobs, the hit-rate
//! report (default) and `sim gen`.
//!
//! Extending: new report/replay flags go into [`ReportArgs`] (or a new `#[command(flatten)]`
//! group next to it), new jobs into [`Command`]; [`main`] dispatches. Exit codes live in
//! [`exit`].

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::gen::{self, GenSpec, Kind};
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
    /// A correctness check failed (e.g. production and reference SIEVE disagree).
    pub const CORRECTNESS: u8 = 3;
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

Replays a trace (a sequence of keys, every object of size 1, cold start) through several cache \
policies at several cache sizes and prints the miss ratio of each:

  sieve        production SIEVE (warp_cache_core::mem::MemStore, the memory backend's engine)
  model-sieve  reference SIEVE written like the paper's pseudocode; must equal `sieve` exactly
  lru          least recently used
  fifo         first in, first out
  optimal      Belady's optimal (knows the future; a lower bound for every policy)

Without --trace it runs a demo on a small generated trace built into the binary. \
`sim gen` writes synthetic traces (Zipf, scans, loops, shifting working sets).";

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

Exit codes: 0 success, 1 unreadable input or output, 2 bad arguments, 3 a correctness check failed.";

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
    #[arg(long, value_name = "SIZES", default_value = "1%,5%,10%")]
    pub capacity: CapacityList,

    /// Policies to compare, comma-separated: sieve, model-sieve, lru, fifo, optimal, or all.
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Gen(args)) => run_gen(&args),
        None => run_report(&cli.report),
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
            "production SIEVE and reference SIEVE disagree (see the note above)",
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
