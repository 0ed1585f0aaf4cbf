//! The shared store is *exact* SIEVE: a single-process replay through `ShmStore` (real mapped
//! files) gives exactly the reference model's hits, and on the LIRS `multi1` trace at capacity
//! 130 the miss ratio libCacheSim reports (.6646, traces README). Plus TTL semantics and
//! random operation sequences against the model (the `fuzz_ops` body).

#[path = "shm_util.rs"]
mod shm_util;

use std::io::BufRead;
use std::path::PathBuf;

use proptest::prelude::*;
use shm_util::{int_key, int_value, TestDir};
use warp_cache_core::model::SieveModel;
use warp_cache_core::shm::{InsertOutcome, ShmConfig, ShmStore};

/// Replays `keys` (get, then insert on a miss) through the store and the model; asserts
/// they agree on every request and returns the number of misses.
fn replay(store: &ShmStore, capacity: usize, keys: &[u64]) -> u64 {
    let mut model: SieveModel<u64, ()> = SieveModel::new(capacity);
    let mut out = Vec::new();
    let mut misses = 0u64;
    for (step, &key) in keys.iter().enumerate() {
        let encoded = int_key(key as i64);
        let hit = store.get(&encoded, 0, &mut out).unwrap();
        let model_hit = model.access(key, (), 0);
        assert_eq!(hit, model_hit, "request {step} (key {key}) disagrees");
        if hit {
            assert_eq!(out, int_value(key as i64 * 3), "value of key {key}");
        } else {
            misses += 1;
            let outcome = store
                .insert(&encoded, &int_value(key as i64 * 3), 0)
                .unwrap();
            assert!(
                matches!(outcome, InsertOutcome::Inserted { .. }),
                "{outcome:?}"
            );
        }
    }
    let info = store.info().unwrap();
    assert_eq!(info.misses, misses);
    assert_eq!(info.hits, keys.len() as u64 - misses);
    assert_eq!(info.current_size, model.len() as u64);
    store.validate().unwrap();
    misses
}

/// A skewed trace with a scan in the middle (xorshift; fixed seed).
fn generated_trace(len: usize, universe: u64) -> Vec<u64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..len)
        .map(|i| {
            if (len / 3..len / 3 + 500).contains(&i) {
                10_000 + i as u64 // a one-off scan
            } else {
                // Roughly Zipf-like: the minimum of two uniforms squared.
                let a = next() % universe;
                let b = next() % universe;
                a.min(b) * a.min(b) / universe
            }
        })
        .collect()
}

#[test]
fn generated_trace_matches_the_model_exactly() {
    let dir = TestDir::new("exact");
    for capacity in [1u32, 7, 64, 300] {
        let store = ShmStore::open(dir.config(&format!("gen{capacity}"), capacity)).unwrap();
        let keys = generated_trace(20_000, 2_000);
        let misses = replay(&store, capacity as usize, &keys);
        assert!(misses > 0 && misses < keys.len() as u64);
    }
}

fn trace_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces")
        .join(relative)
}

#[test]
fn multi1_at_capacity_130_has_libcachesim_miss_ratio() {
    let path = trace_path("caffeine/lirs/multi1.trace.gz");
    let Ok(file) = std::fs::File::open(&path) else {
        assert!(
            !warp_cache_tests::running_in_ci(),
            "CI=true: {} is absent",
            path.display()
        );
        eprintln!("skipped: {} is absent", path.display());
        return;
    };
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let keys: Vec<u64> = reader
        .lines()
        .map(|line| line.expect("trace line"))
        .filter(|line| !line.trim().is_empty() && !line.starts_with('*'))
        .map(|line| line.trim().parse().expect("decimal key"))
        .collect();
    assert_eq!(keys.len(), 15_858, "request count from the traces README");
    let dir = TestDir::new("multi1");
    let store = ShmStore::open(dir.config("multi1", 130)).unwrap();
    let misses = replay(&store, 130, &keys);
    let ratio = misses as f64 / keys.len() as f64;
    assert_eq!(
        format!("{ratio:.4}"),
        "0.6646",
        "{misses} misses of {}",
        keys.len()
    );
}

#[test]
fn ttl_is_per_process_and_future_stamps_are_stale() {
    let dir = TestDir::new("ttl");
    let short = ShmStore::open(ShmConfig {
        ttl_ns: Some(10),
        max_bytes: None,
        ..dir.config("ttl", 8)
    })
    .unwrap();
    let long = ShmStore::open(ShmConfig {
        ttl_ns: Some(1_000),
        max_bytes: None,
        ..dir.config("ttl", 8)
    })
    .unwrap();
    let never = ShmStore::open(dir.config("ttl", 8)).unwrap();
    let mut out = Vec::new();
    short.insert(b"k", b"v", 100).unwrap();
    assert!(short.get(b"k", 109, &mut out).unwrap());
    // The same entry, seen through each process's own ttl.
    assert!(
        long.get(b"k", 500, &mut out).unwrap(),
        "fresh for the long ttl"
    );
    assert!(
        never.get(b"k", u64::MAX, &mut out).unwrap(),
        "no ttl: never stale"
    );
    assert!(
        !short.get(b"k", 110, &mut out).unwrap(),
        "stale for the short ttl"
    );
    assert_eq!(
        never.info().unwrap().current_size,
        0,
        "the stale entry was removed, as the model does"
    );
    // Stamped in the future (another clock namespace): not fresh, whatever the ttl.
    long.insert(b"f", b"v", 5_000).unwrap();
    assert!(!long.get(b"f", 4_000, &mut out).unwrap());
    // ttl 0: never served, never stored.
    let zero = ShmStore::open(ShmConfig {
        ttl_ns: Some(0),
        max_bytes: None,
        ..dir.config("ttl", 8)
    })
    .unwrap();
    never.insert(b"z", b"v", 0).unwrap();
    assert!(!zero.get(b"z", 0, &mut out).unwrap());
    assert!(never.get(b"z", 0, &mut out).unwrap());
    never.validate().unwrap();
}

#[test]
fn ttl_replay_matches_the_model_with_a_clock() {
    let store = ShmStore::over_memory(ShmConfig {
        dir: None,
        name: "ttl-model".into(),
        capacity: 16,
        key_bytes_max: 64,
        value_bytes_max: 64,
        ttl_ns: Some(40),
        max_bytes: None,
    })
    .unwrap();
    let mut model: SieveModel<u64, u64> = SieveModel::with_ttl(16, Some(40));
    let keys = generated_trace(5_000, 64);
    let mut out = Vec::new();
    for (now_ns, &key) in keys.iter().enumerate() {
        let now_ns = now_ns as u64;
        let encoded = int_key(key as i64);
        let hit = store.get(&encoded, now_ns, &mut out).unwrap();
        let expected = model.get(&key, now_ns);
        assert_eq!(hit, expected.is_some(), "t={now_ns} key {key}");
        if !hit {
            store
                .insert(&encoded, &int_value(now_ns as i64), now_ns)
                .unwrap();
            model.insert(key, now_ns, now_ns);
        } else {
            assert_eq!(out, int_value(expected.unwrap() as i64));
        }
    }
    assert_eq!(store.info().unwrap().current_size, model.len() as u64);
    store.validate().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    /// Random get/insert/remove/clear/clock sequences against the model (the arena fuzz
    /// target's body): ~10^5 checked operations per run.
    #[test]
    fn random_operations_match_the_model(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        warp_cache_core::shm::fuzz::fuzz_ops(&data);
    }

    #[test]
    fn hostile_images_never_break_the_store(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        warp_cache_core::shm::fuzz::fuzz_image(&data);
    }
}
