//! The in-process store (`core::mem`) against the reference SIEVE model on random operation
//! sequences: get / insert / remove / clear / advance-clock, with and without TTL, capacities
//! 1..=32 over a small key space. After every step the store must return the same value,
//! evict the same key, pass `validate()`, and hold the same keys in the same order with the
//! hand on the same key.
//!
//! Three drivers run the same sequences: the typed API of `MemStore`, the raw API with a
//! deliberately colliding hash (the path the Python adapter takes: candidates, hit, remove,
//! replace_at, insert_new), and the typed API of `SyncMemStore`.
//!
//! Cases default to 384 (sequences of 100..600 operations, about 1.3 * 10^5 operations per
//! driver); `PROPTEST_CASES=N` overrides. A failure prints the minimal sequence and proptest's
//! seed (persisted under `proptest-regressions/` and replayed first on the next run).

use proptest::prelude::*;
use warp_cache_core::mem::{Displaced, Hit, MemStore, SyncMemStore};
use warp_cache_core::model::SieveModel;

const KEY_SPACE: u8 = 48;
const DEFAULT_CASES: u32 = 384;

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Insert(u8, u32),
    Remove(u8),
    Clear,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0..KEY_SPACE).prop_map(Op::Get),
        35 => (0..KEY_SPACE, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        8 => (0..KEY_SPACE).prop_map(Op::Remove),
        1 => Just(Op::Clear),
        12 => (0u64..25).prop_map(Op::Advance),
    ]
}

fn ttl() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(0)),
        4 => (1u64..60).prop_map(Some),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One way of driving a store; all must behave exactly like the model.
trait Driver {
    fn get(&mut self, key: u8, now_ns: u64) -> Option<u32>;
    fn insert(&mut self, key: u8, value: u32, now_ns: u64) -> Option<u8>;
    fn remove(&mut self, key: u8) -> Option<u32>;
    fn clear(&mut self);
    fn check(&self) -> Result<(Vec<u8>, Option<u8>, usize), String>;
}

struct Typed(MemStore<u8, u32>);

impl Driver for Typed {
    fn get(&mut self, key: u8, now_ns: u64) -> Option<u32> {
        self.0.get_value(&key, now_ns)
    }
    fn insert(&mut self, key: u8, value: u32, now_ns: u64) -> Option<u8> {
        self.0.insert_value(key, value, now_ns)
    }
    fn remove(&mut self, key: u8) -> Option<u32> {
        self.0.remove_value(&key)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    fn check(&self) -> Result<(Vec<u8>, Option<u8>, usize), String> {
        check_store(&self.0)
    }
}

/// The raw API with a hash that collides on purpose (`key % 3`), driven like the Python
/// adapter: candidates are compared by the caller, references are re-checked before use.
struct Raw(MemStore<u8, u32>);

fn raw_hash(key: u8) -> u64 {
    u64::from(key % 3)
}

impl Driver for Raw {
    fn get(&mut self, key: u8, now_ns: u64) -> Option<u32> {
        let now = if self.0.needs_clock() { now_ns } else { 0 };
        let pending: Vec<_> = self
            .0
            .candidates(raw_hash(key))
            .filter(|(_, k)| **k == key)
            .map(|(at, _)| at)
            .collect();
        let at = *pending.first()?;
        match self.0.hit(at, now) {
            Hit::Fresh(value) => Some(*value),
            Hit::Expired => {
                self.0.remove(at).expect("current reference");
                None
            }
            Hit::Gone => panic!("reference went stale without a change"),
        }
    }
    fn insert(&mut self, key: u8, value: u32, now_ns: u64) -> Option<u8> {
        let hash = raw_hash(key);
        if let Some(at) = self.0.find(hash, |k| *k == key) {
            if self.0.ttl_ns() != Some(0) {
                let old = self.0.replace_at(at, value, now_ns);
                assert!(old.is_ok(), "current reference");
                return None;
            }
        }
        match self.0.insert_new(hash, key, value, now_ns) {
            Displaced::Evicted(k, _) => Some(k),
            Displaced::Nothing | Displaced::Refused(..) => None,
            Displaced::Replaced(_) => panic!("insert_new never replaces"),
        }
    }
    fn remove(&mut self, key: u8) -> Option<u32> {
        let at = self.0.find(raw_hash(key), |k| *k == key)?;
        self.0.remove(at).map(|(_, v)| v)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    fn check(&self) -> Result<(Vec<u8>, Option<u8>, usize), String> {
        check_store(&self.0)
    }
}

struct Shared(SyncMemStore<u8, u32>);

impl Driver for Shared {
    fn get(&mut self, key: u8, now_ns: u64) -> Option<u32> {
        self.0.get_value(&key, now_ns)
    }
    fn insert(&mut self, key: u8, value: u32, now_ns: u64) -> Option<u8> {
        self.0.insert_value(key, value, now_ns)
    }
    fn remove(&mut self, key: u8) -> Option<u32> {
        self.0.remove_value(&key)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    fn check(&self) -> Result<(Vec<u8>, Option<u8>, usize), String> {
        check_store(&self.0.read())
    }
}

fn check_store(store: &MemStore<u8, u32>) -> Result<(Vec<u8>, Option<u8>, usize), String> {
    store.validate()?;
    let keys: Vec<u8> = store.keys_from_head().into_iter().copied().collect();
    Ok((keys, store.hand_key().copied(), store.len()))
}

fn run(
    driver: &mut dyn Driver,
    capacity: u32,
    ttl_ns: Option<u64>,
    ops: &[Op],
) -> Result<u64, TestCaseError> {
    let mut model = SieveModel::with_ttl(capacity as usize, ttl_ns);
    let mut now_ns = 1_000u64;
    let mut hits = 0u64;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Get(key) => {
                let expected = model.get(&key, now_ns);
                hits += u64::from(expected.is_some());
                prop_assert_eq!(driver.get(key, now_ns), expected, "step {} {:?}", step, op);
            }
            Op::Insert(key, value) => {
                let expected = model.insert(key, value, now_ns);
                prop_assert_eq!(
                    driver.insert(key, value, now_ns),
                    expected,
                    "step {} {:?}",
                    step,
                    op
                );
            }
            Op::Remove(key) => {
                let expected = model.remove(&key);
                prop_assert_eq!(driver.remove(key), expected, "step {} {:?}", step, op);
            }
            Op::Clear => {
                driver.clear();
                model.clear();
            }
            Op::Advance(dt) => now_ns += dt,
        }
        let (keys, hand, len) = driver
            .check()
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: validate: {e}")))?;
        prop_assert_eq!(&keys, &model.keys_from_head(), "order after step {}", step);
        prop_assert_eq!(hand, model.hand_key(), "hand after step {}", step);
        prop_assert!(len <= capacity as usize);
        prop_assert_eq!(len, model.len());
    }
    Ok(hits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn typed_store_matches_reference_sieve(
        capacity in 1u32..=32,
        ttl_ns in ttl(),
        ops in proptest::collection::vec(op(), 100..600),
    ) {
        let mut store = Typed(MemStore::new(capacity, ttl_ns).unwrap());
        let hits = run(&mut store, capacity, ttl_ns, &ops)?;
        let gets = ops.iter().filter(|op| matches!(op, Op::Get(_))).count() as u64;
        let stats = store.0.counters().snapshot();
        prop_assert_eq!(stats.hits, hits);
        prop_assert_eq!(stats.hits + stats.misses, gets);
    }

    #[test]
    fn raw_api_with_colliding_hashes_matches_reference_sieve(
        capacity in 1u32..=32,
        ttl_ns in ttl(),
        ops in proptest::collection::vec(op(), 100..600),
    ) {
        let mut store = Raw(MemStore::new(capacity, ttl_ns).unwrap());
        run(&mut store, capacity, ttl_ns, &ops)?;
    }

    #[test]
    fn sync_store_matches_reference_sieve(
        capacity in 1u32..=32,
        ttl_ns in ttl(),
        ops in proptest::collection::vec(op(), 100..600),
    ) {
        let mut store = Shared(SyncMemStore::new(capacity, ttl_ns).unwrap());
        run(&mut store, capacity, ttl_ns, &ops)?;
    }
}

/// The proptest cases above must add up to at least 10^5 operations per driver by default.
#[test]
fn default_budget_is_at_least_1e5_operations() {
    let min_average_ops = (100 + 600) / 2;
    assert!(u64::from(DEFAULT_CASES) * min_average_ops >= 100_000);
}

/// The harness must be able to fail: a store that never sets the visited bit on hits evicts
/// the wrong entry, and `run` reports it.
#[test]
fn model_test_detects_a_wrong_victim() {
    struct NoTouch(Raw);
    impl Driver for NoTouch {
        fn get(&mut self, key: u8, _now_ns: u64) -> Option<u32> {
            // Reads the value without `hit()`, so the visited bit stays clear.
            let store = &(self.0).0;
            store.find(raw_hash(key), |k| *k == key)?;
            store.iter().find(|(k, _)| **k == key).map(|(_, v)| *v)
        }
        fn insert(&mut self, key: u8, value: u32, now_ns: u64) -> Option<u8> {
            self.0.insert(key, value, now_ns)
        }
        fn remove(&mut self, key: u8) -> Option<u32> {
            self.0.remove(key)
        }
        fn clear(&mut self) {
            self.0.clear()
        }
        fn check(&self) -> Result<(Vec<u8>, Option<u8>, usize), String> {
            self.0.check()
        }
    }
    let ops = [
        Op::Insert(1, 1),
        Op::Insert(2, 2),
        Op::Get(1),
        Op::Insert(3, 3),
    ];
    let mut faithful = Raw(MemStore::new(2, None).unwrap());
    assert!(run(&mut faithful, 2, None, &ops).is_ok());
    let mut broken = NoTouch(Raw(MemStore::new(2, None).unwrap()));
    assert!(run(&mut broken, 2, None, &ops).is_err());
}
