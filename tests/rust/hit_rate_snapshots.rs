//! Hit-rate snapshot gates: one insta snapshot per trace holding the
//! production SIEVE's and LRU's miss ratios at 1%, 5% and 10% of the trace's unique keys.
//!
//! Any change of a hit rate fails until it is reviewed and accepted deliberately:
//! `cargo insta review`, or rerun with `INSTA_UPDATE=always`. CI runs with
//! `INSTA_UPDATE=no` (or `cargo insta test --check`), so a new or changed snapshot fails there.
//!
//! The committed generated traces (`corpora/traces/`) are always checked. Real traces from
//! `../shared/traces` are checked when present; when absent the test prints why and passes
//! without touching its snapshot. The three 5-million-request traces run only with
//! `--ignored` (they take minutes at the test profile's opt-level 1).

use std::fmt::Write as _;

use sim::policies::{self, PolicyKind};
use sim::report::CapacitySpec;
use sim::trace;
use warp_cache_tests::{locate_trace, TraceSource};

const PERCENTS: [u64; 3] = [1, 5, 10];

/// The snapshot text of one trace: its size, then one line per capacity with the miss ratios
/// at 6 decimals and the exact miss counts.
fn snapshot_text(name: &str, keys: &[u64]) -> String {
    let unique_keys = sim::trace::count_unique(keys);
    let mut out = String::new();
    let _ = writeln!(out, "trace: {name}");
    let _ = writeln!(out, "requests: {}", keys.len());
    let _ = writeln!(out, "unique_keys: {unique_keys}");
    let _ = writeln!(
        out,
        "{:>7}  {:>8}  {:>8}  {:>8}  {:>12}  {:>10}",
        "percent", "capacity", "sieve", "lru", "sieve_misses", "lru_misses"
    );
    for percent in PERCENTS {
        let capacity = CapacitySpec::PercentMilli(percent * 1000).resolve(unique_keys);
        let mut misses = [0u64; 2];
        for (slot, kind) in misses.iter_mut().zip([PolicyKind::Sieve, PolicyKind::Lru]) {
            let mut policy = policies::build(kind, capacity, None).unwrap();
            *slot = policies::replay(policy.as_mut(), keys, &mut |_| {});
        }
        let ratio = |m: u64| m as f64 / keys.len() as f64;
        let _ = writeln!(
            out,
            "{:>6}%  {capacity:>8}  {:>8.6}  {:>8.6}  {:>12}  {:>10}",
            percent,
            ratio(misses[0]),
            ratio(misses[1]),
            misses[0],
            misses[1]
        );
    }
    out
}

fn check(snapshot: &str, source: TraceSource, relative: &str) {
    let path = match locate_trace(source, relative) {
        Ok(path) => path,
        Err(reason) => {
            assert_eq!(
                source,
                TraceSource::Shared,
                "committed traces are always present: {reason}"
            );
            eprintln!("{reason}");
            return;
        }
    };
    let trace = trace::read_trace(&path, None).unwrap_or_else(|err| panic!("{err}"));
    let text = snapshot_text(relative, &trace.keys);
    insta::assert_snapshot!(snapshot, text);
}

macro_rules! snapshot_tests {
    ($($(#[$attr:meta])* $test:ident: $source:ident $path:literal;)*) => {$(
        #[test]
        $(#[$attr])*
        fn $test() {
            check(stringify!($test), TraceSource::$source, $path);
        }
    )*};
}

snapshot_tests! {
    generated_zipf_0_8: Corpora "traces/zipf-0.8.txt.gz";
    generated_zipf_1_0: Corpora "traces/zipf-1.0.txt.gz";
    generated_scan: Corpora "traces/scan.txt.gz";
    generated_loop: Corpora "traces/loop.txt.gz";
    generated_shift: Corpora "traces/shift.txt.gz";
    generated_mixed: Corpora "traces/mixed.txt.gz";

    real_cloudphysicsio: Shared "libCacheSim/cloudPhysicsIO.txt";
    real_lirs_2_pools: Shared "caffeine/lirs/2_pools.trace.gz";
    real_lirs_backf: Shared "caffeine/lirs/backf.trace.gz";
    real_lirs_cpp: Shared "caffeine/lirs/cpp.trace.gz";
    real_lirs_cs: Shared "caffeine/lirs/cs.trace.gz";
    real_lirs_gli: Shared "caffeine/lirs/gli.trace.gz";
    real_lirs_loop: Shared "caffeine/lirs/loop.trace.gz";
    real_lirs_multi1: Shared "caffeine/lirs/multi1.trace.gz";
    real_lirs_multi2: Shared "caffeine/lirs/multi2.trace.gz";
    real_lirs_multi3: Shared "caffeine/lirs/multi3.trace.gz";
    real_lirs_ps: Shared "caffeine/lirs/ps.trace.gz";
    real_lirs_scan: Shared "caffeine/lirs/scan.trace.gz";
    real_lirs_sprite: Shared "caffeine/lirs/sprite.trace.gz";
    real_lirs_zigzag: Shared "caffeine/lirs/zigzag.trace.gz";
    real_cache2k_web07: Shared "caffeine/cache2k/web07.trace.xz";
    real_cache2k_web12: Shared "caffeine/cache2k/web12.trace.xz";
    real_corda_vaultservice: Shared "caffeine/corda/trace_vaultservice.gz";
    real_scarab_recs: Shared "caffeine/scarab/scarab-recs.trace.xz";
    real_address_gcc: Shared "caffeine/address/gcc.trace.gz";
    real_address_swim: Shared "caffeine/address/swim.trace.gz";
    real_address_twolf: Shared "caffeine/address/twolf.trace.gz";

    #[ignore = "5M requests: run with --ignored (use --release)"]
    real_cache2k_orm_busy: Shared "caffeine/cache2k/orm-busy.trace.xz";
    #[ignore = "5M requests: run with --ignored (use --release)"]
    real_cache2k_orm_night: Shared "caffeine/cache2k/orm-night.trace.xz";
    #[ignore = "5.3M requests: run with --ignored (use --release)"]
    real_cloud_physics_w106: Shared "caffeine/cloud_physics/w106.trace.xz";
}

#[test]
fn snapshot_text_is_fixed_decimal() {
    let text = snapshot_text("t", &[1, 2, 1, 3, 1, 2, 4, 4, 4, 4]);
    assert!(
        text.starts_with("trace: t\nrequests: 10\nunique_keys: 4\n"),
        "{text}"
    );
    // 1% of 4 keys -> capacity 1: SIEVE and LRU both miss 7 of 10.
    let first = text.lines().nth(4).unwrap();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["1%", "1", "0.700000", "0.700000", "7", "7"]
    );
}
