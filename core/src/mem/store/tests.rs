use super::*;
use crate::model::SieveModel;

fn keys<K: Clone, V>(store: &MemStore<K, V>) -> Vec<K> {
    store.keys_from_head().into_iter().cloned().collect()
}

/// The prefetch hint's layout arithmetic matches where hashbrown really keeps bucket `i`
/// (if a hashbrown upgrade changed its layout, the hints would silently miss).
fn assert_hint_matches_index<K, V>(store: &MemStore<K, V>) {
    let hint = store.index_hint;
    assert_eq!(hint.bucket_mask, store.table.num_buckets() - 1);
    let mut checked = 0;
    for bucket in 0..store.table.num_buckets() {
        if let Some(element) = store.table.get_bucket(bucket) {
            let address = element as *const IndexElement as usize;
            assert_eq!(
                address,
                hint.ctrl_address - (bucket + 1) * INDEX_ELEMENT_SIZE,
                "bucket {bucket}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, store.len());
}

#[test]
fn big_stores_with_prefetch_hints_keep_sieve_order() {
    // Above PREFETCH_MIN_BUCKETS, so every eviction runs the hint code. SIEVE's outcome is
    // known for these two phases: an all-miss run keeps the newest `n` keys in order; then
    // hits on the even keys and `n / 2` new keys evict exactly the odd ones.
    let n = 70_000u64;
    let mut store = MemStore::<u64, u64>::new(n as u32, None).unwrap();
    for key in 0..3 * n {
        assert_eq!(store.get_value(&key, 0), None);
        assert_eq!(store.insert_value(key, key + 1, 0), key.checked_sub(n));
    }
    assert!(store.prefetch_pays());
    assert_hint_matches_index(&store);
    assert_eq!(keys(&store), (2 * n..3 * n).rev().collect::<Vec<_>>());
    for key in (2 * n..3 * n).step_by(2) {
        assert_eq!(store.get_value(&key, 0), Some(key + 1));
    }
    for key in 3 * n..3 * n + n / 2 {
        let evicted = store.insert_value(key, key + 1, 0).unwrap();
        assert_eq!(evicted % 2, 1, "an unvisited (odd) key goes first");
    }
    assert_hint_matches_index(&store);
    let mut expected: Vec<u64> = (2 * n..3 * n).step_by(2).collect();
    expected.extend(3 * n..3 * n + n / 2);
    let mut stored = keys(&store);
    stored.sort_unstable();
    assert_eq!(stored, expected);
    policy::validate(&store.list).unwrap();
}

#[test]
fn the_index_hint_follows_resizes() {
    let mut store = MemStore::<u64, u64>::new(10_000, None).unwrap();
    for key in 0..20_000u64 {
        let _ = store.insert_value(key, key, 0);
        if key.is_power_of_two() || key % 4999 == 0 {
            assert_hint_matches_index(&store);
        }
    }
}

#[test]
fn rejects_zero_and_oversized_max_size() {
    assert!(MemStore::<u32, u32>::new(0, None).is_err());
    assert!(MemStore::<u32, u32>::new(u32::MAX, None).is_err());
    let huge = MemStore::<u32, u32>::new(MAX_SIZE_LIMIT, None).unwrap();
    assert_eq!(huge.slots.capacity(), 0, "nothing allocated up front");
}

#[test]
fn paper_example_matches_the_model() {
    let mut store = MemStore::new(3, None).unwrap();
    let mut model = SieveModel::new(3);
    for k in ["A", "B", "C"] {
        assert_eq!(store.insert_value(k, 0, 0), model.insert(k, 0, 0));
    }
    assert_eq!(store.get_value(&"A", 0), Some(0));
    assert_eq!(model.get(&"A", 0), Some(0));
    assert_eq!(store.insert_value("D", 0, 0), Some("B"));
    assert_eq!(model.insert("D", 0, 0), Some("B"));
    assert_eq!(keys(&store), model.keys_from_head());
    assert_eq!(store.hand_key().copied(), model.hand_key());
    assert_eq!(store.insert_value("E", 0, 0), Some("C"));
    store.validate().unwrap();
}

#[test]
fn present_key_is_updated_in_place() {
    let mut store = MemStore::new(2, None).unwrap();
    store.insert_value(1, "a", 0);
    store.insert_value(2, "b", 0);
    assert_eq!(store.get_value(&1, 0), Some("a"));
    assert_eq!(store.insert_value(1, "z", 5), None);
    assert_eq!(keys(&store), vec![2, 1], "position kept");
    let at = store.find(typed_hash(&1), |k| *k == 1).unwrap();
    assert_eq!(store.visited(at), Some(true), "visited bit kept");
    assert_eq!(store.get_value(&1, 0), Some("z"));
    store.validate().unwrap();
}

#[test]
fn a_peek_leaves_the_visited_bit_and_the_eviction_order_alone() {
    let mut store = MemStore::new(2, Some(10)).unwrap();
    store.insert_value(1, "a", 0);
    store.insert_value(2, "b", 0);
    let at = store.find(typed_hash(&1), |k| *k == 1).unwrap();
    assert!(matches!(store.peek(at, 5), Hit::Fresh(&"a")));
    assert_eq!(store.visited(at), Some(false), "a peek is not a hit");
    assert!(
        matches!(store.peek(at, 10), Hit::Expired),
        "expired at the ttl"
    );
    // Unvisited, so 1 is still SIEVE's next victim (a hit would have saved it).
    assert_eq!(store.insert_value(3, "c", 5), Some(1));
    assert!(matches!(store.peek(at, 5), Hit::Gone));
    store.validate().unwrap();
}

#[test]
fn every_slot_is_used_before_the_first_eviction() {
    let mut store = MemStore::new(4, None).unwrap();
    for k in 0..4 {
        assert_eq!(store.insert_value(k, k, 0), None);
    }
    assert_eq!(store.remove_value(&1), Some(1));
    assert_eq!(
        store.insert_value(9, 9, 0),
        None,
        "the freed slot is reused, no eviction"
    );
    assert_eq!(store.slots.len(), 4);
    assert_eq!(store.insert_value(10, 10, 0), Some(0));
    store.validate().unwrap();
}

#[test]
fn stale_references_are_detected() {
    let mut store = MemStore::new(2, None).unwrap();
    store.insert_value("a", 1, 0);
    let at = store.find(typed_hash(&"a"), |k| *k == "a").unwrap();
    assert!(matches!(store.hit(at, 0), Hit::Fresh(&1)));
    assert_eq!(store.remove(at), Some(("a", 1)));
    assert!(matches!(store.hit(at, 0), Hit::Gone));
    assert_eq!(store.remove(at), None);
    // The slot is reused by another key: the old reference still does not match.
    store.insert_value("b", 2, 0);
    assert!(matches!(store.hit(at, 0), Hit::Gone));
    assert_eq!(store.replace_at(at, 7, 0), Err(7));
    let at_b = store.find(typed_hash(&"b"), |k| *k == "b").unwrap();
    let drained = store.clear();
    assert_eq!(drained, vec![("b", 2)]);
    store.insert_value("b", 3, 0);
    assert!(
        matches!(store.hit(at_b, 0), Hit::Gone),
        "a clear invalidates every reference, even to a recreated slot"
    );
    store.validate().unwrap();
}

#[test]
fn ttl_expiry_and_zero_ttl() {
    let mut store = MemStore::new(4, Some(10)).unwrap();
    store.insert_value("a", 1, 100);
    assert_eq!(store.get_value(&"a", 109), Some(1));
    assert_eq!(store.get_value(&"a", 110), None);
    assert!(
        store.is_empty(),
        "an expired entry found by a lookup is removed"
    );
    store.insert_value("b", 2, 200);
    assert_eq!(store.get_value(&"b", 150), None, "stamped in the future");
    let mut never = MemStore::new(4, Some(0)).unwrap();
    assert!(matches!(
        never.insert_keyed("a", 1, 0),
        Displaced::Refused("a", 1)
    ));
    assert!(never.is_empty());
    assert_eq!(never.counters().snapshot().hits, 0);
}

#[test]
fn colliding_hashes_are_told_apart_by_eq() {
    let mut store = MemStore::new(8, None).unwrap();
    for k in 0..6u32 {
        let displaced = store.insert_new(42, k, k * 10, 0);
        assert!(matches!(displaced, Displaced::Nothing));
    }
    assert_eq!(store.candidates(42).count(), 6);
    assert_eq!(store.candidates(43).count(), 0);
    let at = store.find(42, |k| *k == 3).unwrap();
    assert!(matches!(store.hit(at, 0), Hit::Fresh(&30)));
    let displaced = store.insert(42, 3, 31, 0, |k| *k == 3);
    assert!(matches!(displaced, Displaced::Replaced(30)));
    assert_eq!(store.len(), 6);
    store.validate().unwrap();
}

#[test]
fn hashes_sharing_bucket_and_tag_stay_apart() {
    // Same low 32 bits (check word, hence bucket and hashbrown's tag): only the full hash
    // stored in the slot tells them apart.
    let (a, b) = (0x0000_0000_0000_0005u64, 0x0000_0001_0000_0005u64);
    assert_eq!(hash_check(a), hash_check(b));
    let mut store = MemStore::new(8, None).unwrap();
    assert!(matches!(
        store.insert_new(a, 1u32, 10, 0),
        Displaced::Nothing
    ));
    assert!(matches!(
        store.insert_new(b, 2u32, 20, 0),
        Displaced::Nothing
    ));
    assert_eq!(
        store.candidates(a).map(|(_, k)| *k).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(
        store.candidates(b).map(|(_, k)| *k).collect::<Vec<_>>(),
        [2]
    );
    let at = store.find(b, |_| true).unwrap();
    assert_eq!(store.key_at(at), Some(&2));
    assert!(store.find(a ^ (1 << 40), |_| true).is_none());
    store.remove(at).unwrap();
    assert!(store.find(b, |_| true).is_none());
    assert!(store.find(a, |k| *k == 1).is_some());
    store.validate().unwrap();
}

#[test]
fn lookup_reports_fresh_expired_and_absent_without_side_effects_on_misses() {
    let mut store = MemStore::new(4, Some(10)).unwrap();
    store.insert_value(1u32, "one", 100);
    let hash = typed_hash(&1u32);
    let at = match store.lookup(hash, 105, |k| *k == 1) {
        Lookup::Fresh(at, value) => {
            assert_eq!(*value, "one");
            at
        }
        other => panic!("expected a fresh hit, got {other:?}"),
    };
    assert_eq!(store.visited(at), Some(true));
    assert_eq!(store.is_fresh_at(at, 109), Some(true));
    assert_eq!(store.is_fresh_at(at, 110), Some(false));
    assert!(matches!(store.lookup(hash, 110, |k| *k == 1), Lookup::Expired(a) if a == at));
    assert!(matches!(
        store.lookup(hash, 105, |k| *k == 2),
        Lookup::Absent
    ));
    let version = store.version();
    store.replace_at(at, "uno", 200).unwrap();
    assert_eq!(
        store.version(),
        version,
        "in-place updates keep the version"
    );
    assert_eq!(
        store.is_fresh_at(at, 205),
        Some(true),
        "the stamp was renewed"
    );
    store.remove(at);
    assert_ne!(store.version(), version);
    assert_eq!(store.is_fresh_at(at, 205), None);
}

#[test]
fn counters_follow_the_typed_api() {
    let mut store = MemStore::new(2, None).unwrap();
    assert_eq!(store.get_value(&1, 0), None);
    store.insert_value(1, 1, 0);
    assert_eq!(store.get_value(&1, 0), Some(1));
    let stats = store.counters().snapshot();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}
