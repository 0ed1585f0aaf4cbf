use super::*;

/// Deterministic bytes for the fuzz bodies' unit tests (xorshift; `seed` picks the stream).
pub(crate) fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn codec_body_on_pseudo_random_inputs() {
    for seed in 0..500 {
        codec(&pseudo_random(seed, (seed % 97) as usize));
    }
}

#[cfg(unix)]
#[test]
fn arena_body_on_pseudo_random_scripts() {
    for seed in 0..300 {
        arena(&pseudo_random(seed, 600));
    }
}

/// The budget-bound pass reaches what a small `max_bytes` is for: evictions by bytes
/// (before the count binds), compactions, entries larger than the whole heap, and
/// updates that need a larger extent.
#[cfg(unix)]
#[test]
fn arena_budget_body_reaches_byte_evictions_and_compaction() {
    let mut total = BudgetStats::default();
    for seed in 0..300 {
        let stats = arena_budget(&pseudo_random(seed, 600));
        total.byte_evictions += stats.byte_evictions;
        total.compactions += stats.compactions;
        total.too_big += stats.too_big;
        total.regrown_updates += stats.regrown_updates;
    }
    assert!(total.byte_evictions > 0, "no eviction by bytes: {total:?}");
    assert!(total.compactions > 0, "no compaction: {total:?}");
    assert!(
        total.too_big > 0,
        "no entry larger than the heap: {total:?}"
    );
    assert!(
        total.regrown_updates > 0,
        "no update to a larger class: {total:?}"
    );
}

#[cfg(unix)]
#[test]
fn region_body_loads_small_budget_seeds() {
    let fixed = crate::shm::layout::Geometry::new(8, 16, 24, None)
        .unwrap()
        .fixed_bytes;
    for heap in [16, 96, 256] {
        let seed = region_seed_with_budget(8, 16, 24, 12, Some(fixed + heap));
        assert_eq!(seed.len() as u64, fixed + heap, "the image is the budget");
        for n in 0..50u64 {
            let mut data = seed.clone();
            let nonce = std::mem::offset_of!(crate::shm::layout::DataHeader, creation_nonce);
            data[nonce..nonce + 8].copy_from_slice(&n.to_ne_bytes()); // every ttl
            assert!(region(&data), "a small-budget file loads");
        }
    }
}

#[cfg(unix)]
#[test]
fn region_body_loads_seeds_and_survives_flipped_bytes() {
    let seed = region_seed(4, 8, 8, 4); // creation nonce 4: no ttl
    assert!(region(&seed), "a well-formed file loads");
    let mut loaded = 0;
    for n in 0..200u64 {
        let mut data = seed.clone();
        for (i, b) in pseudo_random(n, 24).chunks(3).enumerate() {
            // Past the parameter block: the SIEVE words, counters, buckets and slots.
            let at =
                256 + (usize::from(b[0]) << 8 | usize::from(b[1])) * (i + 1) % (data.len() - 256);
            data[at] ^= b[2] | 1;
        }
        loaded += usize::from(region(&data));
    }
    assert_eq!(
        loaded, 200,
        "flips past the parameter block keep the header valid"
    );
    assert!(!region(&seed[..seed.len() - 8]), "a short file is rejected");
    assert!(!region(&[]), "an empty file is rejected");
}
