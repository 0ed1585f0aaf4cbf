//! Hit-rate cross-check against libCacheSim, without Python.
//!
//! `corpora/oracle/libcachesim_sieve.json` holds libCacheSim 0.3.5's miss counts (written by
//! `tests/python/oracle_libcachesim.py --write`; `tests/python/test_libcachesim_oracle.py`
//! re-checks them live). For every entry whose trace is present this test asserts, exactly:
//! * the sim readers produce the same key sequence the script fed libCacheSim (request count,
//!   unique keys, sequence hash) and the format detected from the path is the recorded one;
//! * production SIEVE (`MemStore`) misses == reference `SieveModel` misses == libCacheSim
//!   `Sieve` misses (INV-1: one SIEVE, equal to the paper's);
//! * LRU, FIFO and Belady's optimal equal libCacheSim's `LRU`, `FIFO` and `Belady`.
//!
//! A second test replays the reference cells of `../shared/traces/README.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use sim::policies::{self, Future, PolicyKind};
use sim::report::CapacitySpec;
use sim::trace::{self, Format};
use warp_cache_tests::{corpora_dir, keys_fnv64, locate_trace, TraceSource};

#[derive(Debug, Deserialize)]
struct OracleFile {
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    trace: String,
    source: String,
    format: String,
    percent: u64,
    capacity: usize,
    requests: usize,
    unique_keys: usize,
    keys_fnv64: String,
    misses: u64,
    lru_misses: u64,
    fifo_misses: u64,
    optimal_misses: u64,
}

fn misses(kind: PolicyKind, capacity: usize, keys: &[u64], future: &Future) -> u64 {
    let mut policy = policies::build(kind, capacity, Some(future)).unwrap();
    policies::replay(policy.as_mut(), keys, &mut |_| {})
}

#[test]
fn sieve_matches_libcachesim_exactly() {
    let path = corpora_dir().join("oracle/libcachesim_sieve.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let oracle: OracleFile = serde_json::from_str(&text).expect("oracle JSON parses");

    let mut by_trace: BTreeMap<(String, String, String), Vec<&Entry>> = BTreeMap::new();
    for entry in &oracle.entries {
        by_trace
            .entry((
                entry.source.clone(),
                entry.trace.clone(),
                entry.format.clone(),
            ))
            .or_default()
            .push(entry);
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut checked_generated = 0;
    for ((source, name, format), entries) in &by_trace {
        let source = TraceSource::parse(source).expect("source is corpora or shared");
        let path = match locate_trace(source, name) {
            Ok(path) => path,
            Err(reason) => {
                assert_eq!(
                    source,
                    TraceSource::Shared,
                    "committed traces are always present: {reason}"
                );
                eprintln!("{reason}");
                continue;
            }
        };
        let started = Instant::now();
        let format: Format = format.parse().unwrap();
        assert_eq!(
            trace::detect_format(&path).unwrap(),
            format,
            "{name}: detected format"
        );
        let trace = trace::read_trace(&path, None).unwrap();
        let keys = &trace.keys;
        let unique_keys = trace.unique_keys();
        let future = Future::new(keys);
        for entry in entries {
            let what = format!("{name} at {}%", entry.percent);
            assert_eq!(keys.len(), entry.requests, "{what}: requests");
            assert_eq!(unique_keys, entry.unique_keys, "{what}: unique keys");
            assert_eq!(keys_fnv64(keys), entry.keys_fnv64, "{what}: key sequence");
            let capacity = CapacitySpec::PercentMilli(entry.percent * 1000).resolve(unique_keys);
            assert_eq!(capacity, entry.capacity, "{what}: capacity rule");

            let production = misses(PolicyKind::Sieve, capacity, keys, &future);
            let reference = misses(PolicyKind::ModelSieve, capacity, keys, &future);
            let results = [
                (
                    "production SIEVE vs libCacheSim Sieve",
                    production,
                    entry.misses,
                ),
                (
                    "reference SIEVE vs libCacheSim Sieve",
                    reference,
                    entry.misses,
                ),
                (
                    "LRU vs libCacheSim LRU",
                    misses(PolicyKind::Lru, capacity, keys, &future),
                    entry.lru_misses,
                ),
                (
                    "FIFO vs libCacheSim FIFO",
                    misses(PolicyKind::Fifo, capacity, keys, &future),
                    entry.fifo_misses,
                ),
                (
                    "optimal vs libCacheSim Belady",
                    misses(PolicyKind::Optimal, capacity, keys, &future),
                    entry.optimal_misses,
                ),
            ];
            for (label, ours, theirs) in results {
                if ours != theirs {
                    failures.push(format!(
                        "{what} (capacity {capacity}): {label}: {ours} != {theirs}"
                    ));
                }
            }
            checked += 1;
            if source == TraceSource::Corpora {
                checked_generated += 1;
            }
        }
        eprintln!(
            "checked {name}: {} requests, {} capacities in {:.2?}",
            keys.len(),
            entries.len(),
            started.elapsed()
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked_generated >= 6,
        "the generated Zipf and scan traces must always be checked"
    );
    eprintln!("{checked} oracle entries matched exactly");
}

/// The reference table of `../shared/traces/README.md` (libCacheSim 0.3.5, 4 decimals):
/// trace, format, capacity, LRU, SIEVE, Belady.
const README_CELLS: &[(&str, usize, &str, &str, &str)] = &[
    (
        "libCacheSim/cloudPhysicsIO.txt",
        490,
        ".8379",
        ".8291",
        ".7926",
    ),
    (
        "libCacheSim/cloudPhysicsIO.txt",
        4897,
        ".8049",
        ".7907",
        ".6290",
    ),
    (
        "caffeine/lirs/multi1.trace.gz",
        130,
        ".7616",
        ".6646",
        ".5069",
    ),
    (
        "caffeine/cache2k/web07.trace.xz",
        1024,
        ".4944",
        ".4656",
        ".3628",
    ),
    (
        "caffeine/cache2k/web12.trace.xz",
        688,
        ".3998",
        ".3645",
        ".2532",
    ),
    (
        "caffeine/scarab/scarab-recs.trace.xz",
        12918,
        ".4829",
        ".4614",
        ".3096",
    ),
    (
        "caffeine/corda/trace_vaultservice.gz",
        905,
        ".6667",
        ".9933",
        ".6667",
    ),
    (
        "caffeine/lirs/sprite.trace.gz",
        708,
        ".1349",
        ".1807",
        ".0863",
    ),
];

fn four_decimals(misses: u64, requests: usize) -> String {
    let text = format!("{:.4}", misses as f64 / requests as f64);
    text.trim_start_matches('0').to_string()
}

#[test]
fn shared_traces_readme_reference_cells() {
    let mut checked = 0;
    let mut cache: BTreeMap<&str, (Vec<u64>, Future)> = BTreeMap::new();
    for &(name, capacity, lru, sieve, optimal) in README_CELLS {
        let path = match locate_trace(TraceSource::Shared, name) {
            Ok(path) => path,
            Err(reason) => {
                eprintln!("{reason}");
                continue;
            }
        };
        let (keys, future) = cache.entry(name).or_insert_with(|| {
            let keys = trace::read_trace(Path::new(&path), None).unwrap().keys;
            let future = Future::new(&keys);
            (keys, future)
        });
        let n = keys.len();
        let ours = (
            four_decimals(misses(PolicyKind::Lru, capacity, keys, future), n),
            four_decimals(misses(PolicyKind::Sieve, capacity, keys, future), n),
            four_decimals(misses(PolicyKind::Optimal, capacity, keys, future), n),
        );
        assert_eq!(
            ours,
            (lru.to_string(), sieve.to_string(), optimal.to_string()),
            "{name} at capacity {capacity}: (LRU, SIEVE, optimal)"
        );
        checked += 1;
    }
    eprintln!("{checked} README reference cells matched");
}
