//! Tests of the command line: parsing and defaults, the replay options and the command that
//! replays a seed, the embedded demo trace and the committed generated traces, the progress bar.

use std::path::Path;

use clap::{CommandFactory, Parser};

use super::*;
use crate::gen::{self, Kind};
use crate::mp::pidns::ProcView;
use crate::policies::PolicyKind;
use crate::report::CapacitySpec;
use crate::trace::{self, Format};

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
