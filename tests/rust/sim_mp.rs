//! The simulator's multi-process replay (`sim::mp`), end to end: real worker processes sharing
//! one real shared-memory store, with faults, over fixed seeds; determinism of the schedule
//! and report; the exact comparison with the reference SIEVE on a serial schedule; and proof
//! that each failure class is detected (a wrong value, a hang, a crash), so the harness can
//! fail; and the PID-namespace mode (`--pid-ns`: its machinery, and that workers of different
//! namespaces never take a live writer's lock; the latter fails until core's owner check is
//! namespace-safe).
//!
//! This test has its own `main` (`harness = false`): the replay starts its workers by running
//! this same binary again with `WARP_SIM_WORKER` set, and `main` turns such a process into a
//! worker before anything else. Arguments: an optional substring filter; `--list`.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sim::mp::checker::{Checker, ViolationKind};
use sim::mp::pidns::ProcView;
use sim::mp::protocol::{InsertCode, RequestResult, Sabotage};
use sim::mp::value::{self, ValueId};
use sim::mp::{self, FailureKind, MpOptions, MpReport};
use sim::report::CapacitySpec;
use sim::trace::{self, Trace};

fn zipf_trace() -> Trace {
    let path = warp_cache_tests::corpora_dir().join("traces/zipf-1.0.txt.gz");
    trace::read_trace(&path, None).expect("committed trace corpora/traces/zipf-1.0.txt.gz")
}

fn options(seed: u64, workers: u16, ops: usize) -> MpOptions {
    let mut options = MpOptions::new(seed, workers);
    options.ops = Some(ops);
    options
}

fn expect_pass(report: &MpReport) {
    assert!(
        report.passed(),
        "seed {} failed; report:\n{}",
        report.seed,
        mp::format_report(report)
    );
    assert_eq!(report.wrong_values, 0);
    assert_eq!(report.validation_failures, 0);
}

/// Fixed seeds with every kind of fault: all pass, every kill is followed by a recovery
/// within the bound, and nothing wrong is ever read.
fn faults_over_fixed_seeds_pass() {
    let trace = zipf_trace();
    let (mut kills, mut stops, mut recoveries, mut faults) = (0, 0, 0, 0);
    for (seed, write_fraction) in [(1, 0.0), (2, 0.1), (3, 0.2)] {
        let mut options = options(seed, 3, 2_500);
        options.faults = true;
        options.write_fraction = write_fraction;
        let report = mp::run(&trace, &options);
        expect_pass(&report);
        assert!(
            report.faults_injected() > 0,
            "seed {seed}: no fault planned"
        );
        assert_eq!(
            report.timing.recoveries.len() as u64,
            report.timing.kills_observed,
            "seed {seed}: every kill must be followed by a recovery"
        );
        assert!(report.timing.stats.results > 2_000, "seed {seed}");
        assert!(
            report.timing.stats.hits > 0,
            "seed {seed}: nothing to verify"
        );
        kills += report.timing.kills_observed;
        stops += report.timing.stops_observed;
        recoveries += report.timing.recoveries.len();
        faults += report.faults_injected();
    }
    assert!(kills >= 3 && stops >= 3, "kills {kills}, stops {stops}");
    println!("    {faults} faults, {kills} kills, {stops} stops, {recoveries} recoveries");
}

fn deterministic_part(report: &MpReport) -> String {
    let text = mp::format_report(report);
    let end = text.find(mp::TIMING_HEADER).expect("timing header");
    text[..end].to_owned()
}

/// The same seed gives the same schedule and the same deterministic report; another seed
/// another schedule.
fn same_seed_same_report() {
    let trace = zipf_trace();
    let mut options = options(42, 3, 1_500);
    options.faults = true;
    let first = mp::run(&trace, &options);
    let second = mp::run(&trace, &options);
    expect_pass(&first);
    expect_pass(&second);
    assert!(deterministic_part(&first).starts_with("seed=42\n"));
    assert_eq!(deterministic_part(&first), deterministic_part(&second));
    assert_eq!(first.digest, second.digest);
    options.seed = 43;
    let other = mp::run(&trace, &options);
    assert_ne!(first.digest, other.digest);
}

/// One worker at a time and no faults: every hit, miss and value equals the reference
/// SIEVE's, request by request, across three processes.
fn serial_run_matches_the_reference_sieve() {
    let trace = zipf_trace();
    let mut options = options(7, 3, 6_000);
    options.serial = true;
    options.capacity = CapacitySpec::PercentMilli(2_000);
    options.write_fraction = 0.1;
    let report = mp::run(&trace, &options);
    expect_pass(&report);
    assert!(report.exact);
    assert_eq!(report.timing.stats.model_checked, 6_000);
    assert_eq!(report.model_mismatches, 0);
    assert!(
        report.timing.stats.inserted_evicting > 0,
        "the cache must fill and evict"
    );
}

/// The checker itself: a deliberately wrong value (another key's, a torn one, one never
/// stored) is reported.
fn checker_detects_wrong_values() {
    let mut checker = Checker::new(None);
    let miss = |index| RequestResult {
        index,
        value: None,
        insert: InsertCode::Inserted,
        done_ns: 0,
        op_ns: 0,
    };
    let hit = |index, id: ValueId| RequestResult {
        index,
        value: Some(value::encode(&id)),
        insert: InsertCode::None,
        done_ns: 0,
        op_ns: 0,
    };
    let id = |key, index| ValueId {
        key,
        worker: 0,
        incarnation: 0,
        index,
    };
    checker.dispatch(0, 10, 0, 0, 0);
    checker.dispatch(1, 11, 0, 0, 0);
    assert!(checker.result(0, 0, 0, &miss(0)).is_empty());
    assert!(checker.result(0, 0, 0, &miss(1)).is_empty());
    checker.end_step(0);
    // Correct: key 10 reads request 0's value.
    checker.dispatch(2, 10, 1, 0, 1);
    assert!(checker.result(1, 0, 1, &hit(2, id(10, 0))).is_empty());
    // Wrong: key 10 reads key 11's value.
    checker.dispatch(3, 10, 1, 0, 1);
    let found = checker.result(1, 0, 1, &hit(3, id(11, 1)));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, ViolationKind::Foreign);
    // Wrong: a torn copy of a correct value.
    checker.dispatch(4, 10, 1, 0, 1);
    let mut torn = hit(4, id(10, 0));
    if let Some(bytes) = torn.value.as_mut() {
        let last = bytes.len() - 1;
        bytes[last / 2] ^= 0xff;
    }
    assert_eq!(checker.result(1, 0, 1, &torn)[0].kind, ViolationKind::Torn);
    // Wrong: a value no request wrote.
    checker.dispatch(5, 10, 1, 0, 1);
    assert_eq!(
        checker.result(1, 0, 1, &hit(5, id(10, 999)))[0].kind,
        ViolationKind::Invented
    );
    assert_eq!(checker.stats.wrong_values, 3);
}

/// The index of the first request for the trace's most frequent key among the first `ops`.
fn first_request_of_hottest_key(trace: &Trace, ops: usize) -> u64 {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for &key in &trace.keys[..ops] {
        *counts.entry(key).or_default() += 1;
    }
    let (&hottest, _) = counts.iter().max_by_key(|&(k, c)| (*c, *k)).unwrap();
    trace.keys.iter().position(|&k| k == hottest).unwrap() as u64
}

/// A worker that stores another key's value makes the run fail as a correctness failure
/// (exit code 3 in the CLI): the whole pipeline can detect a wrong value.
fn a_wrong_value_in_the_store_fails_the_run() {
    let trace = zipf_trace();
    let ops = 2_000;
    let mut options = options(5, 3, ops);
    options.capacity = CapacitySpec::PercentMilli(50_000);
    options.sabotage = Some(Sabotage::ForeignValue {
        index: first_request_of_hottest_key(&trace, ops),
    });
    let report = mp::run(&trace, &options);
    let failure = report
        .failure
        .as_ref()
        .expect("the foreign value must be detected");
    assert_eq!(failure.kind, FailureKind::Correctness, "{failure:?}");
    assert!(report.wrong_values >= 1);
    assert_eq!(report.violations[0].kind, ViolationKind::Foreign);
    assert_eq!(
        sim::cli::exit::of_failure(failure.kind),
        sim::cli::exit::CORRECTNESS
    );
}

/// A worker that stops answering is a liveness failure within the watchdog.
fn a_hung_worker_is_a_liveness_failure() {
    let trace = zipf_trace();
    let mut options = options(6, 2, 1_000);
    options.watchdog = Duration::from_millis(400);
    options.sabotage = Some(Sabotage::Hang { index: 300 });
    let started = Instant::now();
    let report = mp::run(&trace, &options);
    let failure = report.failure.as_ref().expect("the hang must be detected");
    assert_eq!(failure.kind, FailureKind::Liveness, "{failure:?}");
    assert!(
        failure.message.contains("no progress"),
        "{}",
        failure.message
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        sim::cli::exit::of_failure(failure.kind),
        sim::cli::exit::LIVENESS
    );
}

/// A worker that panics is a crash.
fn a_panicking_worker_is_a_crash() {
    let trace = zipf_trace();
    let mut options = options(8, 2, 1_000);
    options.sabotage = Some(Sabotage::Panic { index: 500 });
    let report = mp::run(&trace, &options);
    let failure = report.failure.as_ref().expect("the panic must be detected");
    assert_eq!(failure.kind, FailureKind::Crash, "{failure:?}");
    assert!(failure.message.contains("panicked"), "{}", failure.message);
    assert_eq!(
        sim::cli::exit::of_failure(failure.kind),
        sim::cli::exit::CRASH
    );
    let codes = [
        sim::cli::exit::SUCCESS,
        sim::cli::exit::CORRECTNESS,
        sim::cli::exit::CRASH,
        sim::cli::exit::LIVENESS,
    ];
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len(), "exit codes must differ");
}

/// Whether `--pid-ns` can run here; prints why not.
fn pid_ns_available() -> bool {
    match mp::pidns::available() {
        Ok(()) => true,
        Err(reason) => {
            println!("    skipped: {reason}");
            false
        }
    }
}

/// `--pid-ns` machinery, which must work on any core: a single worker in a PID namespace of
/// its own (own /proc, then the host's) is killed and stopped at failpoints and by signals
/// from the driver, resumed, restarted inside its namespace, and every kill is recovered.
/// (One worker: no writer of another namespace to misjudge.)
fn pid_ns_faults_reach_workers_in_their_namespaces() {
    if !pid_ns_available() {
        return;
    }
    let trace = zipf_trace();
    for view in [ProcView::Own, ProcView::Host] {
        let mut options = options(2, 1, 2_500);
        options.faults = true;
        options.pid_ns = Some(view);
        let report = mp::run(&trace, &options);
        expect_pass(&report);
        assert_eq!(report.pid_ns, Some(view));
        let t = &report.timing;
        assert!(
            t.kills_observed >= 3 && t.stops_observed >= 3,
            "{view}: kills {}, stops {}",
            t.kills_observed,
            t.stops_observed
        );
        assert_eq!(t.recoveries.len() as u64, t.kills_observed, "{view}");
        assert!(
            mp::format_report(&report).contains("one PID namespace per worker"),
            "{view}"
        );
    }
}

/// Workers in different PID namespaces sharing one cache (containers sharing /dev/shm): a
/// writer that is stopped (SIGSTOP at a failpoint inside the writer lock) or merely slow
/// (`slow_write_ms`, no fault at all) is alive, so no other worker may take its lock over:
/// no more takeovers than killed workers, no wrong value, a valid store.
///
/// Failed on every run while the owner check was `kill(pid, 0)` and the start time in the
/// waiter's namespace (fixed by kernel liveness), then in about 2 of 7 runs while a reader's
/// recovery took the lock from whoever held it instead of the owner it had judged dead
/// (fixed in `core/src/shm/store/write.rs` `recover_interrupted`). Seeds 1 and 7 are in
/// corpora/sim-seeds/pid-ns.txt.
fn pid_ns_workers_never_take_a_live_writers_lock() {
    if !pid_ns_available() {
        return;
    }
    let trace = zipf_trace();
    let mut runs = Vec::new();
    for seed in [1, 7] {
        let mut options = options(seed, 4, 6_000);
        options.faults = true;
        options.write_fraction = 0.1;
        options.pid_ns = Some(ProcView::Own);
        runs.push(options);
    }
    let mut slow = options(3, 4, 5_000);
    slow.write_fraction = 0.1;
    slow.slow_write_ms = 3;
    slow.pid_ns = Some(ProcView::Own);
    runs.push(slow);
    let mut failures = Vec::new();
    for options in &runs {
        let report = mp::run(&trace, options);
        let t = &report.timing;
        println!(
            "    seed {} (faults {}, slow writes {} ms): {}; takeovers {} for {} killed workers, wrong values {}, validation failures {}",
            report.seed,
            report.faults,
            options.slow_write_ms,
            report.failure.as_ref().map_or("PASS".to_owned(), |f| format!("FAIL ({})", f.kind.name())),
            t.takeovers,
            t.kills_observed,
            report.wrong_values,
            report.validation_failures
        );
        // The run must have exercised what it is about.
        if options.faults {
            assert!(
                t.stops_observed > 0,
                "seed {}: no worker was stopped",
                report.seed
            );
        } else {
            assert!(
                t.stats.updated > 0,
                "seed {}: no slow update ran",
                report.seed
            );
            assert_eq!(t.kills_observed, 0);
        }
        if !report.passed() || report.excess_takeovers() > 0 || report.wrong_values > 0 {
            failures.push(mp::format_report(&report));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} PID-namespace runs failed:\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n")
    );
}

type TestFn = fn();

const TESTS: &[(&str, TestFn)] = &[
    ("checker_detects_wrong_values", checker_detects_wrong_values),
    ("faults_over_fixed_seeds_pass", faults_over_fixed_seeds_pass),
    ("same_seed_same_report", same_seed_same_report),
    (
        "serial_run_matches_the_reference_sieve",
        serial_run_matches_the_reference_sieve,
    ),
    (
        "a_wrong_value_in_the_store_fails_the_run",
        a_wrong_value_in_the_store_fails_the_run,
    ),
    (
        "a_hung_worker_is_a_liveness_failure",
        a_hung_worker_is_a_liveness_failure,
    ),
    (
        "a_panicking_worker_is_a_crash",
        a_panicking_worker_is_a_crash,
    ),
    (
        "pid_ns_faults_reach_workers_in_their_namespaces",
        pid_ns_faults_reach_workers_in_their_namespaces,
    ),
    (
        "pid_ns_workers_never_take_a_live_writers_lock",
        pid_ns_workers_never_take_a_live_writers_lock,
    ),
];

fn main() -> ExitCode {
    if let Some(code) = mp::worker::run_if_requested() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests (sim_mp)", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(test));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {verdict} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
