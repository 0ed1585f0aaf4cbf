//! The command line's definition (clap): the flags of the hit-rate report ([`ReportArgs`]),
//! of the multi-process replay ([`ReplayArgs`]) and of `sim gen` ([`GenArgs`]), with their
//! value parsers.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use super::help::{ABOUT, AFTER_HELP, LONG_ABOUT};
use crate::gen::{GenSpec, Kind};
use crate::mp::pidns::ProcView;
use crate::policies::PolicyKind;
use crate::report::CapacitySpec;
use crate::trace::Format;

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
    pub(super) fn stray_flag(&self) -> Option<&'static str> {
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
