//! [`MemStore`]: the single-threaded in-process store (see the module docs in `mem/mod.rs`).
#![forbid(unsafe_code)]

use std::fmt;
use std::hash::Hash;

use hashbrown::HashTable;

use super::Counters;
use crate::clock::is_fresh;
use crate::policy::{self, SieveSlots, SlotIndex, VecSlots, NO_SLOT};
use crate::Error;

/// The largest `max_size` a store accepts: slot indices are `u32` and `u32::MAX` is the
/// [`NO_SLOT`] sentinel.
pub const MAX_SIZE_LIMIT: u32 = NO_SLOT - 1;

/// Seeds of the fixed hasher used by the typed API (any fixed values do; they never leave the
/// process).
const TYPED_HASH_SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// A reference to an entry that can be checked later: the slot and its generation when the
/// reference was taken. Any removal, eviction or clear bumps the generation, so a stale
/// reference is detected instead of pointing at another key (INV-M1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRef {
    pub slot: SlotIndex,
    pub generation: u32,
}

/// Result of [`MemStore::hit`].
#[derive(Debug)]
pub enum Hit<'a, V> {
    /// The entry is fresh; its visited bit is now set.
    Fresh(&'a V),
    /// The entry is there but expired; the caller removes it (the model does).
    Expired,
    /// The reference is stale: the entry was removed, evicted or cleared since.
    Gone,
}

/// Result of [`MemStore::lookup`].
#[derive(Debug)]
pub enum Lookup<'a, V> {
    /// A fresh entry: its visited bit is now set.
    Fresh(SlotRef, &'a V),
    /// An equal key whose entry has expired; the caller removes it (the model does).
    Expired(SlotRef),
    /// No candidate satisfied `eq`.
    Absent,
}

/// What an insert pushed out of the store. The caller drops it, outside any borrow of the
/// store when dropping may run foreign code (a Python `__del__`).
#[derive(Debug)]
#[must_use = "displaced keys and values must be dropped outside the store's borrow"]
pub enum Displaced<K, V> {
    /// A new entry went in without displacing anything.
    Nothing,
    /// The key was present: its value was replaced in place; here is the old value.
    Replaced(V),
    /// The store was full: SIEVE evicted this entry to make room.
    Evicted(K, V),
    /// The store keeps nothing (`ttl_ns == Some(0)`): the arguments come back untouched.
    Refused(K, V),
}

impl<K, V> Displaced<K, V> {
    /// The evicted key, if the insert evicted one.
    pub fn evicted_key(self) -> Option<K> {
        match self {
            Displaced::Evicted(key, _) => Some(key),
            _ => None,
        }
    }
}

struct Entry<K, V> {
    hash: u64,
    stored_at_ns: u64,
    key: K,
    value: V,
}

struct Slot<K, V> {
    generation: u32,
    entry: Option<Entry<K, V>>,
}

/// An element of the index: an occupied slot and [`hash_check`] of its entry's hash.
type IndexElement = (SlotIndex, u32);
const INDEX_ELEMENT_SIZE: usize = std::mem::size_of::<IndexElement>();
/// Buckets from which the index (9 bytes a bucket) outgrows a core's L2 cache and prefetch
/// hints start to pay.
const PREFETCH_MIN_BUCKETS: usize = 1 << 16;

/// The in-process store. See the module docs for the two APIs and the semantics.
pub struct MemStore<K, V> {
    /// Occupied slots, each with [`hash_check`] of its entry's stored hash and keyed by
    /// [`index_hash`] of that check word (INV-M4).
    table: HashTable<IndexElement>,
    /// Slot storage, grown one slot at a time as entries arrive (never above `max_size`).
    slots: Vec<Slot<K, V>>,
    /// Slots emptied by a removal, reused before new slots are created.
    free: Vec<SlotIndex>,
    /// The SIEVE list over the occupied slots (INV-1).
    list: VecSlots,
    max_size: u32,
    ttl_ns: Option<u64>,
    /// Generation of slots created from now on: above every generation handed out before the
    /// last clear, so references taken before a clear never match a recreated slot.
    generation_floor: u32,
    /// Bumped by every structural change (new entry, removal, eviction, clear).
    version: u64,
    counters: Counters,
    /// Where the index's control bytes started at the last insert, and its bucket mask: only
    /// used to compute prefetch hints (never dereferenced), so a stale value costs a useless
    /// prefetch, nothing else.
    index_hint: IndexHint,
}

/// The address of bucket 0's control byte and the bucket mask of the index (hashbrown keeps
/// the buckets' elements just below the control bytes, bucket `i` at `ctrl - (i + 1) * size`).
#[derive(Clone, Copy, Default)]
struct IndexHint {
    ctrl_address: usize,
    bucket_mask: usize,
}

impl<K, V> fmt::Debug for MemStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore")
            .field("len", &self.len())
            .field("max_size", &self.max_size)
            .field("ttl_ns", &self.ttl_ns)
            .field("slot_count", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> MemStore<K, V> {
    /// An empty store for at most `max_size` entries (`1..=MAX_SIZE_LIMIT`); nothing is
    /// allocated per slot until entries arrive. `ttl_ns = None` never expires, `Some(0)`
    /// stores nothing.
    pub fn new(max_size: u32, ttl_ns: Option<u64>) -> Result<Self, Error> {
        if max_size == 0 {
            return Err(Error::invalid_argument(
                "max_size must be a positive int, got 0",
            ));
        }
        if max_size > MAX_SIZE_LIMIT {
            return Err(Error::invalid_argument(format!(
                "max_size must be at most {MAX_SIZE_LIMIT}, got {max_size}"
            )));
        }
        Ok(MemStore {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            list: VecSlots::new(max_size),
            max_size,
            ttl_ns,
            generation_floor: 0,
            version: 0,
            counters: Counters::new(),
            index_hint: IndexHint::default(),
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.list.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    pub fn ttl_ns(&self) -> Option<u64> {
        self.ttl_ns
    }

    /// Whether lookups need the clock (`now_ns` is ignored when there is no TTL).
    pub fn needs_clock(&self) -> bool {
        self.ttl_ns.is_some()
    }

    /// Changes whenever an entry is added or removed (not on hits or in-place updates).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Hits, misses and sizes for `cache_info()`.
    pub fn cache_stats(&self) -> crate::stats::CacheStats {
        let counts = self.counters.snapshot();
        crate::stats::CacheStats {
            hits: counts.hits,
            misses: counts.misses,
            max_size: u64::from(self.max_size),
            current_size: self.len() as u64,
            oversize_skips: None,
            space_skips: None,
            read_retries: None,
            lock_waits: None,
            lock_skips: None,
        }
    }

    #[inline]
    fn entry_at(&self, at: SlotRef) -> Option<&Entry<K, V>> {
        let slot = self.slots.get(at.slot as usize)?;
        if slot.generation != at.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    /// Entries whose stored hash equals `hash`, with a reference to each. No side effects.
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = (SlotRef, &K)> + '_ {
        let check = hash_check(hash);
        self.table
            .iter_hash(index_hash(check))
            .filter_map(move |&(slot, slot_check)| {
                if slot_check != check {
                    return None;
                }
                let stored = self.slots.get(slot as usize)?;
                let entry = stored.entry.as_ref()?;
                (entry.hash == hash).then_some((
                    SlotRef {
                        slot,
                        generation: stored.generation,
                    },
                    &entry.key,
                ))
            })
    }

    /// The first candidate for `hash` whose key satisfies `eq`. No side effects.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&K) -> bool) -> Option<SlotRef> {
        let slots = &self.slots;
        let check = hash_check(hash);
        let &(slot, _) = self.table.find(index_hash(check), |&(slot, slot_check)| {
            // The check word is in the table's own bucket: a false tag match costs no load of
            // the slot (a cache miss in a big store).
            slot_check == check
                && match slots.get(slot as usize) {
                    Some(Slot {
                        entry: Some(entry), ..
                    }) => entry.hash == hash && eq(&entry.key),
                    _ => false,
                }
        })?;
        Some(SlotRef {
            slot,
            generation: self.slots[slot as usize].generation,
        })
    }

    /// One lookup in one probe: the first candidate satisfying `eq`, fresh (visited bit set,
    /// value returned) or expired. Equivalent to [`MemStore::find`] then [`MemStore::hit`].
    #[inline]
    pub fn lookup(&self, hash: u64, now_ns: u64, eq: impl FnMut(&K) -> bool) -> Lookup<'_, V> {
        let Some(at) = self.find(hash, eq) else {
            return Lookup::Absent;
        };
        match self.hit(at, now_ns) {
            Hit::Fresh(value) => Lookup::Fresh(at, value),
            Hit::Expired => Lookup::Expired(at),
            Hit::Gone => Lookup::Absent,
        }
    }

    /// The key behind a reference, if it is still current.
    pub fn key_at(&self, at: SlotRef) -> Option<&K> {
        self.entry_at(at).map(|entry| &entry.key)
    }

    /// Whether the entry behind `at` is fresh at `now_ns`; `None` if the reference is stale.
    /// No side effects (the visited bit is left alone).
    pub fn is_fresh_at(&self, at: SlotRef, now_ns: u64) -> Option<bool> {
        self.entry_at(at)
            .map(|entry| is_fresh(entry.stored_at_ns, now_ns, self.ttl_ns))
    }

    /// A lookup hit on `at`: a fresh entry gets its visited bit set (through an atomic, so
    /// this is safe under a shared lock) and its value is returned.
    #[inline]
    pub fn hit(&self, at: SlotRef, now_ns: u64) -> Hit<'_, V> {
        match self.entry_at(at) {
            None => Hit::Gone,
            Some(entry) if is_fresh(entry.stored_at_ns, now_ns, self.ttl_ns) => {
                // An occupied slot is always linked and has storage, so touch cannot fail.
                let touched = policy::touch(&self.list, at.slot);
                debug_assert!(touched.is_ok(), "occupied slot without list storage");
                Hit::Fresh(&entry.value)
            }
            Some(_) => Hit::Expired,
        }
    }

    /// A look at `at` that changes nothing: the value of a fresh entry, with its visited bit
    /// left alone (a peek does not keep an entry from eviction, and counts nothing).
    pub fn peek(&self, at: SlotRef, now_ns: u64) -> Hit<'_, V> {
        match self.entry_at(at) {
            None => Hit::Gone,
            Some(entry) if is_fresh(entry.stored_at_ns, now_ns, self.ttl_ns) => {
                Hit::Fresh(&entry.value)
            }
            Some(_) => Hit::Expired,
        }
    }

    /// Takes the entry out of an occupied slot: drops it from the table and bumps the
    /// generation. The caller has already unlinked the slot from the SIEVE list.
    #[inline(always)]
    fn take_entry(&mut self, slot: SlotIndex) -> Option<Entry<K, V>> {
        let stored = self.slots.get_mut(slot as usize)?;
        let entry = stored.entry.take()?;
        stored.generation = stored.generation.wrapping_add(1);
        let index_key = index_hash(hash_check(entry.hash));
        if let Ok(found) = self.table.find_entry(index_key, |&(s, _)| s == slot) {
            found.remove();
        }
        self.version = self.version.wrapping_add(1);
        Some(entry)
    }

    /// Removes the entry behind `at` (the SIEVE hand is repaired, as libCacheSim does).
    /// `None` if the reference is stale.
    pub fn remove(&mut self, at: SlotRef) -> Option<(K, V)> {
        self.entry_at(at)?;
        policy::remove(&mut self.list, at.slot).ok()?;
        let entry = self.take_entry(at.slot)?;
        self.free.push(at.slot);
        Some((entry.key, entry.value))
    }

    /// Replaces the value behind `at` in place (position and visited bit kept, stamp
    /// renewed) and returns the old value; gives `value` back if the reference is stale.
    pub fn replace_at(&mut self, at: SlotRef, value: V, now_ns: u64) -> Result<V, V> {
        let entry = self
            .slots
            .get_mut(at.slot as usize)
            .filter(|stored| stored.generation == at.generation)
            .and_then(|stored| stored.entry.as_mut());
        match entry {
            Some(entry) => {
                entry.stored_at_ns = now_ns;
                Ok(std::mem::replace(&mut entry.value, value))
            }
            None => Err(value),
        }
    }

    /// Adds an entry the caller knows is absent (it compared every candidate). When the
    /// store is full SIEVE evicts first; the new entry goes in at the head, unvisited.
    pub fn insert_new(&mut self, hash: u64, key: K, value: V, now_ns: u64) -> Displaced<K, V> {
        if self.ttl_ns == Some(0) {
            return Displaced::Refused(key, value);
        }
        let mut displaced = Displaced::Nothing;
        let slot = if self.list.len() >= self.max_size {
            // Evict only when full (INV-2). A full, valid list always has a victim; a failure
            // here is a broken invariant.
            let victim =
                policy::evict(&mut self.list).expect("a full SIEVE list always yields a victim");
            let old = self
                .take_entry(victim)
                .expect("every linked slot holds an entry");
            displaced = Displaced::Evicted(old.key, old.value);
            victim
        } else if let Some(slot) = self.free.pop() {
            slot
        } else {
            // No free slot and fewer entries than max_size: every existing slot is occupied,
            // so the next index is below max_size (all slots are used before any eviction).
            let slot = self.slots.len() as SlotIndex;
            self.slots.push(Slot {
                generation: self.generation_floor,
                entry: None,
            });
            self.list.ensure_slot(slot);
            slot
        };
        self.slots[slot as usize].entry = Some(Entry {
            hash,
            stored_at_ns: now_ns,
            key,
            value,
        });
        policy::insert(&mut self.list, slot).expect("a free slot always fits in the list");
        let check = hash_check(hash);
        let inserted = self
            .table
            .insert_unique(index_hash(check), (slot, check), |&(_, check)| {
                index_hash(check)
            });
        let bucket = inserted.bucket_index();
        let element_address = inserted.get() as *const IndexElement as usize;
        self.index_hint = IndexHint {
            ctrl_address: element_address + (bucket + 1) * INDEX_ELEMENT_SIZE,
            bucket_mask: self.table.num_buckets() - 1,
        };
        self.version = self.version.wrapping_add(1);
        displaced
    }

    /// Whether prefetch hints pay here: the index is too big to stay in the core's own caches
    /// (below that size a hint's few instructions are pure cost: docs/performance.md,
    /// "Figures behind the code").
    #[inline]
    pub fn prefetch_pays(&self) -> bool {
        self.index_hint.bucket_mask >= PREFETCH_MIN_BUCKETS - 1
    }

    /// The addresses of the index lines that a probe for `hash` reads first: its home control
    /// group (16 control bytes, one line) and the 16 elements of that group (8 bytes each,
    /// two lines), for a caller that wants to prefetch them. Plain numbers computed from the
    /// layout at the last insert, never dereferenced here; stale after a resize until the
    /// next insert (then a prefetch of them is merely useless: INV-M6).
    #[inline]
    pub fn index_lines(&self, hash: u64) -> [usize; 3] {
        let IndexHint {
            ctrl_address,
            bucket_mask,
        } = self.index_hint;
        let home = index_hash(hash_check(hash)) as usize & bucket_mask;
        // Elements sit below the control bytes, bucket `i` at `ctrl - (i + 1) * size`: the
        // group's first element is the highest address, its ninth one line lower.
        let first_element = ctrl_address.wrapping_sub((home + 1) * INDEX_ELEMENT_SIZE);
        [
            ctrl_address.wrapping_add(home),
            first_element,
            first_element.wrapping_sub(8 * INDEX_ELEMENT_SIZE),
        ]
    }

    /// The stored hash of the entry SIEVE will most likely evict next (the one under the hand,
    /// unless its visited bit is set); `None` when the store is empty. With
    /// [`MemStore::index_lines`], the next eviction's index probe can be prefetched one miss
    /// ahead: in a big store it is otherwise a cache miss (docs/performance.md).
    #[inline]
    pub fn next_victim_hash(&self) -> Option<u64> {
        let candidate = policy::next_candidate(&self.list);
        match self.slots.get(candidate as usize) {
            Some(Slot {
                entry: Some(entry), ..
            }) => Some(entry.hash),
            _ => None,
        }
    }

    /// Stores `value` under `key`: a present key (found by `eq` among the candidates) is
    /// updated in place; otherwise the entry is added, evicting when full.
    pub fn insert(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        now_ns: u64,
        eq: impl FnMut(&K) -> bool,
    ) -> Displaced<K, V> {
        if self.ttl_ns == Some(0) {
            return Displaced::Refused(key, value);
        }
        match self.find(hash, eq) {
            Some(at) => match self.replace_at(at, value, now_ns) {
                Ok(old) => Displaced::Replaced(old),
                Err(value) => self.insert_new(hash, key, value, now_ns),
            },
            None => self.insert_new(hash, key, value, now_ns),
        }
    }

    /// Empties the store and returns every entry so that the caller drops them outside any
    /// borrow. Slot storage is released; references taken before stay stale forever.
    /// Counters are left alone (the caller decides).
    pub fn clear(&mut self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len());
        let mut top_generation = self.generation_floor;
        for stored in std::mem::take(&mut self.slots) {
            top_generation = top_generation.max(stored.generation);
            if let Some(entry) = stored.entry {
                out.push((entry.key, entry.value));
            }
        }
        self.generation_floor = top_generation.wrapping_add(1);
        self.table = HashTable::new();
        self.free = Vec::new();
        self.list = VecSlots::new(self.max_size);
        self.version = self.version.wrapping_add(1);
        out
    }

    /// Every entry, in no particular order (for garbage-collector traversal).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.slots
            .iter()
            .filter_map(|stored| stored.entry.as_ref().map(|e| (&e.key, &e.value)))
    }

    /// Keys from head (newest) to tail (oldest): the SIEVE order, for tests.
    pub fn keys_from_head(&self) -> Vec<&K> {
        policy::order_from_head(&self.list)
            .into_iter()
            .filter_map(|slot| self.slots[slot as usize].entry.as_ref().map(|e| &e.key))
            .collect()
    }

    /// The key under the SIEVE hand, for tests.
    pub fn hand_key(&self) -> Option<&K> {
        let hand = self.list.hand();
        if hand == NO_SLOT {
            return None;
        }
        self.slots
            .get(hand as usize)?
            .entry
            .as_ref()
            .map(|e| &e.key)
    }

    /// The visited bit behind a current reference, for tests.
    pub fn visited(&self, at: SlotRef) -> Option<bool> {
        self.entry_at(at)?;
        Some(self.list.visited(at.slot))
    }

    /// Checks every structure against the others: the SIEVE list (policy::validate), the
    /// table, the slots and the free list. Cost O(max(len, slot count)).
    pub fn validate(&self) -> Result<(), String> {
        policy::validate(&self.list).map_err(|e| e.to_string())?;
        let len = self.len();
        let slot_count = self.slots.len();
        if len > self.max_size as usize || slot_count > self.max_size as usize {
            return Err(format!(
                "{len} entries in {slot_count} slots exceed max_size {}",
                self.max_size
            ));
        }
        if self.list.allocated() as usize != slot_count {
            return Err(format!(
                "list has storage for {} slots, store has {slot_count}",
                self.list.allocated()
            ));
        }
        if self.table.len() != len {
            return Err(format!(
                "table holds {} slots, list {len}",
                self.table.len()
            ));
        }
        let occupied = self.slots.iter().filter(|s| s.entry.is_some()).count();
        if occupied != len {
            return Err(format!("{occupied} occupied slots, list {len}"));
        }
        if occupied + self.free.len() != slot_count {
            return Err(format!(
                "{occupied} occupied + {} free != {slot_count} slots",
                self.free.len()
            ));
        }
        let mut seen_free = vec![false; slot_count];
        for &slot in &self.free {
            let index = slot as usize;
            if index >= slot_count || seen_free[index] || self.slots[index].entry.is_some() {
                return Err(format!(
                    "free slot {slot} is out of range, repeated or occupied"
                ));
            }
            seen_free[index] = true;
        }
        let mut linked = vec![false; slot_count];
        for slot in policy::order_from_head(&self.list) {
            let index = slot as usize;
            if index >= slot_count || self.slots[index].entry.is_none() {
                return Err(format!("linked slot {slot} holds no entry"));
            }
            linked[index] = true;
        }
        for (index, stored) in self.slots.iter().enumerate() {
            let Some(entry) = stored.entry.as_ref() else {
                continue;
            };
            if !linked[index] {
                return Err(format!("occupied slot {index} is not in the SIEVE list"));
            }
            let slot = index as SlotIndex;
            let check = hash_check(entry.hash);
            if self
                .table
                .find(index_hash(check), |&(s, c)| s == slot && c == check)
                .is_none()
            {
                return Err(format!("occupied slot {index} is not findable by its hash"));
            }
            if self.generation_floor > stored.generation
                && self.generation_floor - stored.generation > u32::MAX / 2
            {
                return Err(format!("slot {index} has a generation below the floor"));
            }
        }
        Ok(())
    }
}

/// The low 32 bits of a hash, kept beside the slot index in the table (INV-M4). The index is
/// keyed by this word alone ([`index_hash`]): hashbrown can then rehash or resize from its own
/// elements, without loading any slot (at a million entries those loads were a cache miss
/// per entry). Equal hashes give equal check words; a probe compares the word before it
/// loads a slot, so a false tag match costs no slot load (a random cache miss in a big store).
#[inline(always)]
fn hash_check(hash: u64) -> u32 {
    hash as u32
}

/// The hash hashbrown sees for an element with check word `check`: the bucket bits are the
/// check word itself (a 32-bit position: tables of up to 2^32 buckets), the 7-bit control tag
/// a mix of it. Every entry of one check word has one home and one tag.
#[inline(always)]
fn index_hash(check: u32) -> u64 {
    const TAG_BITS: u64 = 0x7f << 57;
    let check = u64::from(check);
    check | (check.wrapping_mul(0x9e37_79b9_7f4a_7c15) & TAG_BITS)
}

/// The fixed hash of the typed API.
pub(super) fn typed_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let [k0, k1, k2, k3] = TYPED_HASH_SEEDS;
    ahash::RandomState::with_seeds(k0, k1, k2, k3).hash_one(key)
}

/// Typed convenience API: keys hashed with a fixed hasher and compared with `==`.
impl<K: Hash + Eq, V: Clone> MemStore<K, V> {
    /// A lookup: a fresh hit returns a clone of the value (visited bit set); an expired entry
    /// is removed and counts as a miss, like the model.
    pub fn get_value(&mut self, key: &K, now_ns: u64) -> Option<V> {
        match self.lookup(typed_hash(key), now_ns, |k| k == key) {
            Lookup::Fresh(_, value) => {
                let value = value.clone();
                self.counters.record_hit();
                Some(value)
            }
            Lookup::Expired(at) => {
                let _expired = self.remove(at);
                self.counters.record_miss();
                None
            }
            Lookup::Absent => {
                self.counters.record_miss();
                None
            }
        }
    }

    /// Stores `value` under `key` and reports what was displaced (the caller drops it).
    pub fn insert_keyed(&mut self, key: K, value: V, now_ns: u64) -> Displaced<K, V> {
        let hash = typed_hash(&key);
        match self.find(hash, |k| k == &key) {
            Some(at) if self.ttl_ns != Some(0) => match self.replace_at(at, value, now_ns) {
                Ok(old) => Displaced::Replaced(old),
                Err(value) => self.insert_new(hash, key, value, now_ns),
            },
            _ => self.insert_new(hash, key, value, now_ns),
        }
    }

    /// Stores `value` under `key`; returns the key SIEVE evicted to make room, if any.
    pub fn insert_value(&mut self, key: K, value: V, now_ns: u64) -> Option<K> {
        self.insert_keyed(key, value, now_ns).evicted_key()
    }

    /// Removes `key` whether fresh or not, like the model's `remove`.
    pub fn remove_value(&mut self, key: &K) -> Option<V> {
        let at = self.find(typed_hash(key), |k| k == key)?;
        self.remove(at).map(|(_, value)| value)
    }

    /// Whether `key` is stored (fresh or not). No side effects.
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(typed_hash(key), |k| k == key).is_some()
    }
}

#[cfg(test)]
mod tests;
