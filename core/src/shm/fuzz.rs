//! Property bodies over heap-backed stores (no files), driven by bytes like a fuzz target but
//! not one of the cargo-fuzz targets: `tests/rust/shm_sieve_exact.rs` and the unit tests
//! below run them on pseudo-random inputs (the `arena` and `region` targets of
//! [`crate::fuzz_targets`] fuzz the same store). Each panics on a violated property; anything
//! else is a pass. Compiled only for tests and fuzzing (feature `testkit`).
#![forbid(unsafe_code)]

use super::store::{InsertOutcome, ShmConfig, ShmStore, SkipReason};
use crate::fuzz_targets::Input;
use crate::model::SieveModel;

fn value_for(key: u8, version: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| key ^ version ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// Arbitrary operation sequences (get / insert / remove / clear / clock advance) on a heap
/// store, checked step by step against the reference [`SieveModel`] (same hits, same values,
/// same size) and `validate()`.
pub fn fuzz_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = u32::from(input.next().unwrap_or(3) % 8) + 1;
    let ttl_ns = match input.next().unwrap_or(0) % 4 {
        0 | 1 => None,
        2 => Some(0),
        _ => Some(u64::from(input.next().unwrap_or(5) % 16) + 1),
    };
    let store = ShmStore::over_memory(ShmConfig {
        dir: None,
        name: "fuzz".into(),
        capacity,
        key_bytes_max: 4,
        value_bytes_max: 12,
        ttl_ns,
        max_bytes: None,
    })
    .expect("valid parameters");
    let mut model: SieveModel<Vec<u8>, Vec<u8>> = SieveModel::with_ttl(capacity as usize, ttl_ns);
    let mut now_ns = 0u64;
    let mut out = Vec::new();
    let (mut hits, mut misses) = (0u64, 0u64);
    while let Some(op) = input.next() {
        let key_byte = input.next().unwrap_or(0);
        // Keys of 1..=5 bytes: 5-byte keys exceed the 4-byte limit.
        let key = vec![key_byte % 16; usize::from(key_byte >> 6) + 1 + usize::from(op & 1)];
        match op % 8 {
            0..=2 => {
                let hit = store.get(&key, now_ns, &mut out).expect("heap get");
                let expected = model.get(&key, now_ns);
                assert_eq!(hit, expected.is_some(), "get {key:?} at {now_ns}");
                if let Some(value) = expected {
                    assert_eq!(out, value, "value of {key:?}");
                    hits += 1;
                } else {
                    assert!(out.is_empty());
                    misses += 1;
                }
            }
            3 | 4 => {
                let len = usize::from(input.next().unwrap_or(0) % 14);
                let value = value_for(key_byte, op, len);
                let outcome = store.insert(&key, &value, now_ns).expect("heap insert");
                if key.len() > 4 || value.len() > 12 {
                    assert_eq!(outcome, InsertOutcome::Skipped(SkipReason::Oversize));
                } else {
                    let was_present = model.contains(&key);
                    model.insert(key.clone(), value, now_ns);
                    match outcome {
                        InsertOutcome::Updated => assert!(was_present),
                        InsertOutcome::Inserted { .. } => assert!(!was_present),
                        InsertOutcome::Skipped(SkipReason::ZeroTtl) => assert_eq!(ttl_ns, Some(0)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            5 => {
                let removed = store.remove(&key).expect("heap remove");
                assert_eq!(removed, model.remove(&key).is_some());
            }
            6 => now_ns += u64::from(input.next().unwrap_or(1) % 8),
            _ => {
                if input.next().unwrap_or(0) % 8 == 0 {
                    store.clear().expect("heap clear");
                    model.clear();
                    hits = 0;
                    misses = 0;
                }
            }
        }
        let info = store.info().expect("info");
        assert_eq!(info.current_size, model.len() as u64);
        assert_eq!((info.hits, info.misses), (hits, misses));
        if let Err(e) = store.validate() {
            panic!("validate after op {op}: {e}");
        }
    }
    // Same contents: every key the model still holds fresh is present with its value.
    for key in model.keys_from_head() {
        let expected = model.get(&key, now_ns);
        let hit = store.get(&key, now_ns, &mut out).expect("get");
        assert_eq!(hit, expected.is_some(), "{key:?} at the end");
        if let Some(value) = expected {
            assert_eq!(out, value);
        }
    }
}

/// Hostile memory: builds a small store, XORs `data` into its data image (pairs of a
/// position byte and a mask byte, spread over the whole region), loads it with
/// `from_image` and runs operations. Nothing may panic or hang; after `clear()` the store
/// must validate and work normally. Returns whether the image got past the header check
/// (for coverage checks; a fuzz harness ignores it).
pub fn fuzz_image(data: &[u8]) -> bool {
    let config = ShmConfig {
        dir: None,
        name: "fuzz".into(),
        capacity: 4,
        key_bytes_max: 8,
        value_bytes_max: 8,
        ttl_ns: None,
        max_bytes: None,
    };
    let store = ShmStore::over_memory(config.clone()).expect("valid parameters");
    for k in 0..6u8 {
        store.insert(&[k], &[k; 5], 0).expect("insert");
    }
    let (mut image, lock) = store.image();
    let mut input = Input::new(data);
    // Mostly past the 256-byte parameter block (a changed parameter is just a mismatch):
    // the SIEVE/allocator words, counters, buckets and slots.
    let stride = image.len() / 256 + 1;
    while let (Some(position), Some(mask)) = (input.next(), input.next()) {
        let fine = usize::from(input.next().unwrap_or(0));
        let spot = usize::from(position) * stride + fine;
        let at = if position < 4 {
            spot % image.len()
        } else {
            256 + spot % (image.len() - 256)
        };
        image[at] ^= mask;
    }
    let Ok(hostile) = ShmStore::from_image(config, &image, &lock) else {
        return false; // a header mismatch: `open` would replace such a file
    };
    let mut out = Vec::new();
    for k in 0..8u8 {
        let _ = hostile.get(&[k], 0, &mut out);
        assert!(out.len() <= 8, "a value longer than the limit was returned");
        let _ = hostile.insert(&[k, k], &[k], 0);
        let _ = hostile.get(&[k, k], 0, &mut out);
        let _ = hostile.remove(&[k]);
    }
    let _ = hostile.info();
    let _ = hostile.validate();
    hostile.clear().expect("clear");
    hostile.validate().expect("a cleared store is valid");
    hostile.insert(b"k", b"v", 0).expect("insert");
    assert!(hostile.get(b"k", 0, &mut out).expect("get"));
    assert_eq!(out, b"v");
    hostile.validate().expect("valid after use");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz_targets::tests::pseudo_random;

    #[test]
    fn ops_body_on_pseudo_random_inputs() {
        for seed in 0..300 {
            fuzz_ops(&pseudo_random(seed, 400));
        }
    }

    #[test]
    fn image_body_on_pseudo_random_inputs() {
        let loaded = (0..300)
            .filter(|&seed| fuzz_image(&pseudo_random(seed, (seed % 40) as usize * 3)))
            .count();
        assert!(
            loaded > 150,
            "only {loaded} of 300 hostile images got past the header"
        );
    }
}
