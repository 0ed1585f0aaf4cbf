//! The cache policies a report compares, behind one small [`Policy`] trait:
//!
//! * `sieve`: the production SIEVE, [`warp_cache_core::mem::MemStore`] (the memory backend's
//!   engine, over the one SIEVE of `core::policy`, INV-1);
//! * `shm-sieve`: the production SIEVE of the shared backend,
//!   [`warp_cache_core::shm::ShmStore`] over heap memory laid out exactly like its files
//!   (single process: the same table, arena, SIEVE list and seqlock code as in /dev/shm);
//! * `model-sieve`: the reference [`warp_cache_core::model::SieveModel`] (paper pseudocode,
//!   O(capacity) per request: slow on big traces, see [`PolicyKind::cost_per_request`]);
//! * `lru`: the reference [`warp_cache_core::model::LruModel`];
//! * `fifo`: first in, first out ([`Fifo`], written here);
//! * `optimal`: Belady's MIN ([`Optimal`], written here): on a miss with a full cache, evict
//!   the entry whose next request is farthest in the future (never requested again first).
//!
//! Every policy starts cold, stores every missed key (size 1) and never expires anything.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use warp_cache_core::mem::MemStore;
use warp_cache_core::model::{LruModel, SieveModel};
use warp_cache_core::shm::{InsertOutcome, ShmConfig, ShmStore};

/// A cache replaying a trace one request at a time.
pub trait Policy {
    /// The policy's name in reports (`sieve`, `lru`, ...).
    fn name(&self) -> &'static str;
    /// One request: returns whether it hit; a miss stores the key (evicting if full).
    fn access(&mut self, key: u64) -> bool;
}

/// The policies `--policies` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// Production SIEVE: `warp_cache_core::mem::MemStore`.
    Sieve,
    /// Production SIEVE of the shared backend: `warp_cache_core::shm::ShmStore` (heap-backed).
    ShmSieve,
    /// Reference SIEVE: `warp_cache_core::model::SieveModel`.
    ModelSieve,
    Lru,
    Fifo,
    Optimal,
}

impl PolicyKind {
    /// Every policy, in report column order.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Sieve,
        PolicyKind::ShmSieve,
        PolicyKind::ModelSieve,
        PolicyKind::Lru,
        PolicyKind::Fifo,
        PolicyKind::Optimal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Sieve => "sieve",
            PolicyKind::ShmSieve => "shm-sieve",
            PolicyKind::ModelSieve => "model-sieve",
            PolicyKind::Lru => "lru",
            PolicyKind::Fifo => "fifo",
            PolicyKind::Optimal => "optimal",
        }
    }

    /// One line for `--help` and reports.
    pub fn describe(self) -> &'static str {
        match self {
            PolicyKind::Sieve => "production SIEVE (warp_cache_core::mem::MemStore)",
            PolicyKind::ShmSieve => {
                "production SIEVE of the shared backend (warp_cache_core::shm::ShmStore)"
            }
            PolicyKind::ModelSieve => {
                "reference SIEVE (core::model::SieveModel, O(capacity) per request)"
            }
            PolicyKind::Lru => "least recently used (core::model::LruModel)",
            PolicyKind::Fifo => "first in, first out",
            PolicyKind::Optimal => {
                "Belady's optimal (evicts the key needed farthest in the future)"
            }
        }
    }

    /// Rough work per request in units of "one hash lookup", used to skip the reference
    /// SIEVE on huge runs when it was not asked for explicitly.
    pub fn cost_per_request(self, capacity: usize) -> u64 {
        match self {
            PolicyKind::ModelSieve => capacity as u64 / 4 + 1,
            _ => 1,
        }
    }

    /// Parses a comma-separated list (`sieve,lru,optimal`); `all` means every policy.
    pub fn parse_list(text: &str) -> Result<Vec<PolicyKind>, String> {
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                kinds.extend(PolicyKind::ALL);
            } else {
                kinds.push(part.parse()?);
            }
        }
        if kinds.is_empty() {
            return Err("--policies needs at least one policy, e.g. sieve,lru".into());
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "sieve" | "prod-sieve" => PolicyKind::Sieve,
            "shm-sieve" | "shm_sieve" => PolicyKind::ShmSieve,
            "model-sieve" | "model_sieve" | "ref-sieve" => PolicyKind::ModelSieve,
            "lru" => PolicyKind::Lru,
            "fifo" => PolicyKind::Fifo,
            "optimal" | "belady" | "opt" => PolicyKind::Optimal,
            _ => {
                return Err(format!(
                    "unknown policy {text:?}; expected a comma-separated list of: sieve, shm-sieve, model-sieve, lru, fifo, optimal (or all)"
                ))
            }
        };
        Ok(kind)
    }
}

/// The future of a trace, shared by every [`Optimal`] replaying it: the keys and, for each
/// request, the index of the next request for the same key (`usize::MAX` if none).
#[derive(Debug, Clone)]
pub struct Future {
    keys: Arc<[u64]>,
    next_use: Arc<[usize]>,
}

impl Future {
    pub fn new(keys: &[u64]) -> Future {
        Future {
            keys: keys.into(),
            next_use: next_use_positions(keys).into(),
        }
    }
}

/// For each position of `keys`, the position of the next request for the same key, or
/// `usize::MAX` when the key is not requested again.
pub fn next_use_positions(keys: &[u64]) -> Vec<usize> {
    let mut next_use = vec![usize::MAX; keys.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (position, &key) in keys.iter().enumerate().rev() {
        if let Some(next) = seen.insert(key, position) {
            next_use[position] = next;
        }
    }
    next_use
}

/// Builds the policy `kind` with room for `capacity` keys. `future` is needed by
/// [`PolicyKind::Optimal`] only.
pub fn build(
    kind: PolicyKind,
    capacity: usize,
    future: Option<&Future>,
) -> Result<Box<dyn Policy>, String> {
    if capacity == 0 {
        return Err("capacity must be at least 1".into());
    }
    Ok(match kind {
        PolicyKind::Sieve => Box::new(ProdSieve::new(capacity)?),
        PolicyKind::ShmSieve => Box::new(ShmSieve::new(capacity)?),
        PolicyKind::ModelSieve => Box::new(ModelSieve(SieveModel::new(capacity))),
        PolicyKind::Lru => Box::new(Lru(LruModel::new(capacity))),
        PolicyKind::Fifo => Box::new(Fifo::new(capacity)),
        PolicyKind::Optimal => {
            let future = future.ok_or("the optimal policy needs the whole trace in advance")?;
            Box::new(Optimal::new(capacity, future.clone()))
        }
    })
}

/// Replays `keys` through `policy`; returns the number of misses. `progress` is called with
/// the number of requests done every 2^16 requests.
pub fn replay(policy: &mut dyn Policy, keys: &[u64], progress: &mut dyn FnMut(usize)) -> u64 {
    let mut misses = 0;
    for (chunk_index, chunk) in keys.chunks(1 << 16).enumerate() {
        for &key in chunk {
            if !policy.access(key) {
                misses += 1;
            }
        }
        progress(chunk_index * (1 << 16) + chunk.len());
    }
    misses
}

/// The production SIEVE: the memory backend's store with unit values and no TTL.
pub struct ProdSieve {
    store: MemStore<u64, ()>,
}

impl ProdSieve {
    pub fn new(capacity: usize) -> Result<ProdSieve, String> {
        let max_size = u32::try_from(capacity)
            .map_err(|_| format!("capacity {capacity} is too large for the store (u32)"))?;
        let store = MemStore::new(max_size, None).map_err(|err| err.to_string())?;
        Ok(ProdSieve { store })
    }
}

impl Policy for ProdSieve {
    fn name(&self) -> &'static str {
        PolicyKind::Sieve.name()
    }

    fn access(&mut self, key: u64) -> bool {
        if self.store.get_value(&key, 0).is_some() {
            return true;
        }
        self.store.insert_value(key, (), 0);
        false
    }
}

/// The production SIEVE of the shared backend: a heap-backed [`ShmStore`] (exactly the file
/// layout and code of the shared backend, without files), keys as 8 little-endian bytes, empty
/// values, no TTL.
pub struct ShmSieve {
    store: ShmStore,
    out: Vec<u8>,
}

impl ShmSieve {
    pub fn new(capacity: usize) -> Result<ShmSieve, String> {
        let capacity = u32::try_from(capacity)
            .map_err(|_| format!("capacity {capacity} is too large for the shared store (u32)"))?;
        let store = ShmStore::over_memory(ShmConfig {
            dir: None,
            name: "sim-report".to_owned(),
            capacity,
            key_bytes_max: 8,
            value_bytes_max: 8,
            ttl_ns: None,
            max_bytes: None,
        })
        .map_err(|err| err.to_string())?;
        Ok(ShmSieve {
            store,
            out: Vec::new(),
        })
    }
}

impl Policy for ShmSieve {
    fn name(&self) -> &'static str {
        PolicyKind::ShmSieve.name()
    }

    fn access(&mut self, key: u64) -> bool {
        let key = key.to_le_bytes();
        // A heap-backed store has no files: its operations cannot fail.
        if self.store.get(&key, 0, &mut self.out).unwrap_or(false) {
            return true;
        }
        let outcome = self.store.insert(&key, &[], 0);
        debug_assert!(
            matches!(outcome, Ok(InsertOutcome::Inserted { .. })),
            "{outcome:?}"
        );
        false
    }
}

/// The reference SIEVE.
pub struct ModelSieve(pub SieveModel<u64, ()>);

impl Policy for ModelSieve {
    fn name(&self) -> &'static str {
        PolicyKind::ModelSieve.name()
    }

    fn access(&mut self, key: u64) -> bool {
        self.0.access(key, (), 0)
    }
}

/// The reference LRU.
pub struct Lru(pub LruModel<u64>);

impl Policy for Lru {
    fn name(&self) -> &'static str {
        PolicyKind::Lru.name()
    }

    fn access(&mut self, key: u64) -> bool {
        self.0.access(key)
    }
}

/// First in, first out: a hit changes nothing; a miss with a full cache evicts the key that
/// was inserted earliest.
#[derive(Debug, Clone)]
pub struct Fifo {
    capacity: usize,
    order: VecDeque<u64>,
    present: HashSet<u64>,
}

impl Fifo {
    pub fn new(capacity: usize) -> Fifo {
        assert!(capacity > 0, "capacity must be positive");
        Fifo {
            capacity,
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            present: HashSet::new(),
        }
    }
}

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        PolicyKind::Fifo.name()
    }

    fn access(&mut self, key: u64) -> bool {
        if self.present.contains(&key) {
            return true;
        }
        if self.order.len() == self.capacity {
            let oldest = self
                .order
                .pop_front()
                .expect("a full cache has an oldest key");
            self.present.remove(&oldest);
        }
        self.order.push_back(key);
        self.present.insert(key);
        false
    }
}

/// Belady's MIN over a known future. It must be fed exactly the trace its [`Future`] was
/// built from, in order (checked: a different key panics, as the result would be meaningless).
///
/// Every miss is stored (demand paging, the same convention as the other policies); with a
/// full cache the victim is the cached key whose next request is farthest away, keys never
/// requested again first (ties between those do not change the miss count).
#[derive(Debug, Clone)]
pub struct Optimal {
    capacity: usize,
    future: Future,
    position: usize,
    /// Cached key -> position of its next request.
    next_of: HashMap<u64, usize>,
    /// (position of next request, key) of every cached key; the last one is the victim.
    by_next: BTreeSet<(usize, u64)>,
}

impl Optimal {
    pub fn new(capacity: usize, future: Future) -> Optimal {
        assert!(capacity > 0, "capacity must be positive");
        Optimal {
            capacity,
            future,
            position: 0,
            next_of: HashMap::new(),
            by_next: BTreeSet::new(),
        }
    }
}

impl Policy for Optimal {
    fn name(&self) -> &'static str {
        PolicyKind::Optimal.name()
    }

    fn access(&mut self, key: u64) -> bool {
        let position = self.position;
        assert!(
            self.future.keys.get(position) == Some(&key),
            "the optimal policy was fed a request ({key} at position {position}) that is not in the trace it was built for"
        );
        self.position += 1;
        let next = self.future.next_use[position];
        if let Some(old_next) = self.next_of.insert(key, next) {
            self.by_next.remove(&(old_next, key));
            self.by_next.insert((next, key));
            return true;
        }
        if self.by_next.len() == self.capacity {
            let (_, victim) = self.by_next.pop_last().expect("a full cache has a victim");
            self.next_of.remove(&victim);
        }
        self.by_next.insert((next, key));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn misses(kind: PolicyKind, capacity: usize, keys: &[u64]) -> u64 {
        let future = Future::new(keys);
        let mut policy = build(kind, capacity, Some(&future)).unwrap();
        replay(policy.as_mut(), keys, &mut |_| {})
    }

    fn hits(policy: &mut dyn Policy, keys: &[u64]) -> Vec<bool> {
        keys.iter().map(|&k| policy.access(k)).collect()
    }

    #[test]
    fn fifo_ignores_hits_when_evicting() {
        let mut fifo = Fifo::new(2);
        // 1 2 | 1 (hit, no reordering) | 3 evicts 1 (oldest insert) | 1 misses, evicts 2.
        assert_eq!(
            hits(&mut fifo, &[1, 2, 1, 3, 1, 2]),
            vec![false, false, true, false, false, false]
        );
        // LRU on the same trace keeps 1 (recently used) and evicts 2 instead.
        let mut lru = Lru(LruModel::new(2));
        assert_eq!(
            hits(&mut lru, &[1, 2, 1, 3, 1, 2]),
            vec![false, false, true, false, true, false]
        );
    }

    #[test]
    fn optimal_evicts_the_farthest_next_use() {
        // Capacity 2: 1 2 3(evict 2: next use of 1 is sooner) 1 hit, 2 miss.
        let keys = [1, 2, 3, 1, 2];
        let future = Future::new(&keys);
        let mut optimal = Optimal::new(2, future);
        assert_eq!(
            hits(&mut optimal, &keys),
            vec![false, false, false, true, false]
        );
    }

    #[test]
    fn optimal_evicts_never_used_again_first() {
        // 1 2 3: key 2 is never requested again, key 1 is; 3 must evict 2.
        let keys = [1, 2, 3, 1, 3, 1];
        assert_eq!(misses(PolicyKind::Optimal, 2, &keys), 3);
    }

    #[test]
    fn optimal_on_the_classic_textbook_string() {
        // Reference string of many OS textbooks, 3 frames: MIN gives 9 faults.
        let keys = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];
        assert_eq!(misses(PolicyKind::Optimal, 3, &keys), 9);
        assert_eq!(misses(PolicyKind::Lru, 3, &keys), 12);
        assert_eq!(misses(PolicyKind::Fifo, 3, &keys), 15);
    }

    #[test]
    #[should_panic(expected = "not in the trace")]
    fn optimal_refuses_a_different_trace() {
        let mut optimal = Optimal::new(2, Future::new(&[1, 2, 3]));
        optimal.access(1);
        optimal.access(3);
    }

    #[test]
    fn optimal_is_a_lower_bound_and_sieves_agree() {
        let spec = crate::gen::GenSpec {
            requests: 20_000,
            keys: 2_000,
            ..crate::gen::GenSpec::default()
        };
        for kind in crate::gen::Kind::ALL {
            let keys = crate::gen::generate(&crate::gen::GenSpec {
                kind,
                ..spec.clone()
            })
            .unwrap();
            for capacity in [1, 7, 100, 500] {
                let optimal = misses(PolicyKind::Optimal, capacity, &keys);
                let sieve = misses(PolicyKind::Sieve, capacity, &keys);
                assert_eq!(
                    sieve,
                    misses(PolicyKind::ModelSieve, capacity, &keys),
                    "{kind} {capacity}"
                );
                assert_eq!(
                    sieve,
                    misses(PolicyKind::ShmSieve, capacity, &keys),
                    "{kind} {capacity}"
                );
                for other in [
                    PolicyKind::Sieve,
                    PolicyKind::ShmSieve,
                    PolicyKind::Lru,
                    PolicyKind::Fifo,
                ] {
                    assert!(
                        optimal <= misses(other, capacity, &keys),
                        "{kind} {capacity} {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn capacity_one_and_compulsory_misses() {
        let keys = [5, 5, 6, 5, 6, 6];
        for kind in PolicyKind::ALL {
            assert_eq!(misses(kind, 1, &keys), 4, "{kind}");
            // With room for everything only the two first requests miss.
            assert_eq!(misses(kind, 10, &keys), 2, "{kind}");
        }
    }

    #[test]
    fn next_use_positions_point_at_the_next_request() {
        assert_eq!(
            next_use_positions(&[1, 2, 1, 1, 3]),
            vec![2, usize::MAX, 3, usize::MAX, usize::MAX]
        );
    }

    #[test]
    fn policy_lists_parse() {
        assert_eq!(
            PolicyKind::parse_list("lru, sieve,lru").unwrap(),
            vec![PolicyKind::Sieve, PolicyKind::Lru]
        );
        assert_eq!(
            PolicyKind::parse_list("all").unwrap(),
            PolicyKind::ALL.to_vec()
        );
        assert!(PolicyKind::parse_list("arc")
            .unwrap_err()
            .contains("model-sieve"));
        assert!(PolicyKind::parse_list("").is_err());
        for kind in PolicyKind::ALL {
            assert_eq!(kind.name().parse::<PolicyKind>(), Ok(kind));
        }
    }
}
