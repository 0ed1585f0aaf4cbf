//! Open-addressing hash table with linear probing and backward-shift deletion, over a slice
//! of `AtomicU64` buckets (in the mapping, or on the heap in tests).
//!
//! A bucket is `0` (empty) or `(hash32 << 32) | (slot + 1)`, where `hash32` is the low 32 bits
//! of the key's 64-bit hash. An entry's home bucket is `hash32 & mask`; the bucket count is a
//! power of two at least twice the capacity (load factor <= 1/2). Deletion shifts later
//! entries of the probe run back into the hole, so there are no tombstones and every entry
//! stays reachable from its home without crossing an empty bucket (INV-S5).
//!
//! Everything read from a bucket is hostile input (INV-7): slot numbers are range-checked
//! and every probe is bounded by the bucket count, so a table full of garbage costs one pass,
//! never an endless loop.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const EMPTY: u64 = 0;

/// Low 32 bits of a key hash: what buckets store.
#[inline]
pub fn hash32(hash: u64) -> u32 {
    hash as u32
}

#[inline]
pub fn bucket_word(hash: u64, slot: u32) -> u64 {
    (u64::from(hash32(hash)) << 32) | (u64::from(slot) + 1)
}

/// The slot a bucket names (`None` for an empty bucket; may be out of range if corrupt).
#[inline]
pub fn bucket_slot(bucket: u64) -> Option<u32> {
    (bucket as u32).checked_sub(1)
}

#[inline]
pub fn bucket_hash32(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

const DIGEST_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// One step of a run digest: order-sensitive, so a shifted run reads differently.
#[inline(always)]
fn fold_digest(digest: u64, bucket: u64) -> u64 {
    (digest ^ bucket)
        .wrapping_mul(0x0000_0100_0000_01b3)
        .rotate_left(29)
}

/// A structural problem found while changing the table (the caller resets, INV-S4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// No empty bucket within the bucket count: more entries than the capacity allows.
    NoEmptyBucket,
    /// The slot being removed is not reachable from its home bucket.
    SlotNotFound { slot: u32 },
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::NoEmptyBucket => f.write_str("hash table has no empty bucket"),
            TableError::SlotNotFound { slot } => {
                write!(f, "slot {slot} is not reachable in the hash table")
            }
        }
    }
}

/// The bucket array.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    buckets: &'a [AtomicU64],
    mask: usize,
    capacity: u32,
}

impl<'a> Table<'a> {
    /// `buckets.len()` must be a power of two (the geometry guarantees it).
    pub fn new(buckets: &'a [AtomicU64], capacity: u32) -> Table<'a> {
        debug_assert!(buckets.len().is_power_of_two());
        Table {
            buckets,
            mask: buckets.len().wrapping_sub(1),
            capacity,
        }
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    #[inline]
    fn home(&self, hash32: u32) -> usize {
        hash32 as usize & self.mask
    }

    #[inline]
    pub fn load(&self, index: usize) -> u64 {
        self.buckets
            .get(index & self.mask)
            .map_or(EMPTY, |b| b.load(Relaxed))
    }

    #[inline]
    fn store(&self, index: usize, value: u64) {
        if let Some(bucket) = self.buckets.get(index & self.mask) {
            bucket.store(value, Relaxed);
        }
    }

    /// Probes for `hash`; for each in-range slot whose bucket carries the same 32-bit hash,
    /// asks `is_match(slot)`. Returns the bucket index and slot of the first match. Bounded by
    /// the bucket count; used by lock-free readers (the result is then validated by the
    /// seqlock) and by writers.
    #[inline]
    pub fn find(&self, hash: u64, mut is_match: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        self.find_map(hash, |index, slot| is_match(slot).then_some((index, slot)))
    }

    /// [`Table::find`] returning what `matched(bucket index, slot)` makes of the first
    /// candidate it accepts (`Some`): lets a reader keep what it learnt about the slot while
    /// checking it, instead of looking it up again.
    #[inline]
    pub fn find_map<T>(
        &self,
        hash: u64,
        matched: impl FnMut(usize, u32) -> Option<T>,
    ) -> Option<T> {
        self.probe(hash, matched).ok()
    }

    /// [`Table::find_map`] that, when nothing matched, returns the [`Table::run_digest`] of
    /// the bucket words it walked: a lock-free reader probes again and trusts its miss only
    /// if the run still reads the same (a backward shift during the walk may have moved the
    /// key behind it).
    #[inline]
    pub fn probe<T>(
        &self,
        hash: u64,
        mut matched: impl FnMut(usize, u32) -> Option<T>,
    ) -> Result<T, u64> {
        let want = hash32(hash);
        let mut index = self.home(want);
        let mut digest = DIGEST_SEED;
        for _ in 0..self.buckets.len() {
            let bucket = self.load(index);
            // Only an EMPTY word ends the run, as in `insert`/`remove`/`reachable`: a garbage
            // bucket with a zero slot part is skipped like an out-of-range slot (else a key
            // inserted behind it could never be found again).
            if bucket == EMPTY {
                return Err(digest);
            }
            digest = fold_digest(digest, bucket);
            if let Some(slot) = bucket_slot(bucket) {
                if bucket_hash32(bucket) == want && slot < self.capacity {
                    if let Some(found) = matched(index, slot) {
                        return Ok(found);
                    }
                }
            }
            index = (index + 1) & self.mask;
        }
        Err(digest)
    }

    /// A digest of the bucket words of `hash`'s probe run (from its home to the first empty
    /// bucket, bounded by the bucket count), folded in order as [`Table::probe`] does.
    pub fn run_digest(&self, hash: u64) -> u64 {
        let mut index = self.home(hash32(hash));
        let mut digest = DIGEST_SEED;
        for _ in 0..self.buckets.len() {
            let bucket = self.load(index);
            if bucket == EMPTY {
                break;
            }
            digest = fold_digest(digest, bucket);
            index = (index + 1) & self.mask;
        }
        digest
    }

    /// Adds `slot` under `hash` in the first empty bucket of its probe run. (The caller has
    /// checked that the key is absent.)
    pub fn insert(&self, hash: u64, slot: u32) -> Result<usize, TableError> {
        let mut index = self.home(hash32(hash));
        for _ in 0..self.buckets.len() {
            if self.load(index) == EMPTY {
                self.store(index, bucket_word(hash, slot));
                return Ok(index);
            }
            index = (index + 1) & self.mask;
        }
        Err(TableError::NoEmptyBucket)
    }

    /// Removes the bucket naming `slot` (probing from `hash`'s home) and shifts the rest of
    /// the probe run back so no entry loses its path from home.
    pub fn remove(&self, hash: u64, slot: u32) -> Result<(), TableError> {
        let target = bucket_word(hash, slot);
        let mut index = self.home(hash32(hash));
        for _ in 0..self.buckets.len() {
            let bucket = self.load(index);
            if bucket == EMPTY {
                break;
            }
            if bucket == target {
                self.remove_at(index);
                return Ok(());
            }
            index = (index + 1) & self.mask;
        }
        Err(TableError::SlotNotFound { slot })
    }

    /// Backward-shift deletion of the entry at `hole`.
    fn remove_at(&self, mut hole: usize) {
        let mut probe = hole;
        for _ in 0..self.buckets.len() {
            probe = (probe + 1) & self.mask;
            let bucket = self.load(probe);
            if bucket == EMPTY {
                break;
            }
            let home = self.home(bucket_hash32(bucket));
            // The entry may move into the hole if the hole lies on its path home..=probe.
            let from_home = probe.wrapping_sub(home) & self.mask;
            let from_hole = probe.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                self.store(hole, bucket);
                hole = probe;
            }
        }
        self.store(hole, EMPTY);
    }

    /// Empties every bucket.
    pub fn clear(&self) {
        for bucket in self.buckets {
            bucket.store(EMPTY, Relaxed);
        }
    }

    /// Whether the entry at `index` is reachable from its home bucket without crossing an
    /// empty bucket.
    pub fn reachable(&self, index: usize, bucket: u64) -> bool {
        let mut probe = self.home(bucket_hash32(bucket));
        for _ in 0..self.buckets.len() {
            if probe == index {
                return true;
            }
            if self.load(probe) == EMPTY {
                return false;
            }
            probe = (probe + 1) & self.mask;
        }
        false
    }

    /// Non-empty buckets as (index, bucket word).
    pub fn entries(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.load(Relaxed)))
            .filter(|&(_, b)| b != EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn buckets(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(EMPTY)).collect()
    }

    fn check_all_reachable(table: &Table<'_>) {
        for (index, bucket) in table.entries() {
            assert!(
                table.reachable(index, bucket),
                "bucket {index} lost its path"
            );
        }
    }

    #[test]
    fn a_run_digest_changes_when_the_run_shifts_and_matches_an_unchanged_probe() {
        let words = buckets(8);
        let table = Table::new(&words, 4);
        for (slot, hash) in [(0u32, 1u64), (1, 9), (2, 17)] {
            table.insert(hash, slot).unwrap();
        }
        // A probe for an absent key of home 1 walks the whole run.
        let miss = table.probe(25, |_, _| None::<()>).unwrap_err();
        assert_eq!(miss, table.run_digest(25));
        table.remove(9, 1).unwrap(); // slot 2 shifts back into the hole
        assert_ne!(table.run_digest(25), miss, "the shift shows");
        assert_eq!(table.probe(17, |_, s| (s == 2).then_some(s)), Ok(2));
    }

    #[test]
    fn colliding_keys_stay_findable_through_deletions() {
        let words = buckets(8);
        let table = Table::new(&words, 4);
        // Hashes 1, 9, 17 share home 1; 2 is displaced by them.
        for (slot, hash) in [(0u32, 1u64), (1, 9), (2, 17), (3, 2)] {
            table.insert(hash, slot).unwrap();
        }
        check_all_reachable(&table);
        table.remove(9, 1).unwrap();
        check_all_reachable(&table);
        assert_eq!(table.find(17, |s| s == 2), Some((2, 2)), "shifted back");
        assert_eq!(table.find(2, |s| s == 3), Some((3, 3)));
        assert_eq!(table.find(9, |_| true), None);
        assert_eq!(
            table.remove(9, 1),
            Err(TableError::SlotNotFound { slot: 1 })
        );
    }

    #[test]
    fn find_map_returns_the_first_accepted_candidate() {
        let words = buckets(8);
        let table = Table::new(&words, 4);
        // Three entries with the same 32-bit hash in one probe run.
        for slot in 0..3u32 {
            table.insert(3, slot).unwrap();
        }
        let mut seen = Vec::new();
        let found = table.find_map(3, |index, slot| {
            seen.push(slot);
            (slot == 1).then_some((index, slot * 10))
        });
        assert_eq!(found, Some((4, 10)), "bucket 4 holds slot 1");
        assert_eq!(seen, [0, 1], "stops at the first accepted candidate");
        assert_eq!(table.find_map(3, |_, _| None::<()>), None);
        assert_eq!(table.find(3, |s| s == 2), Some((5, 2)));
    }

    #[test]
    fn wraparound_probe_runs() {
        let words = buckets(8);
        let table = Table::new(&words, 4);
        table.insert(7, 0).unwrap();
        table.insert(15, 1).unwrap(); // wraps to 0
        table.insert(0, 2).unwrap(); // home 0, pushed to 1
        check_all_reachable(&table);
        table.remove(7, 0).unwrap();
        check_all_reachable(&table);
        assert!(table.find(15, |s| s == 1).is_some());
        assert!(table.find(0, |s| s == 2).is_some());
    }

    #[test]
    fn random_operations_match_a_hashmap() {
        let words = buckets(64);
        let table = Table::new(&words, 32);
        let mut model: HashMap<u32, u64> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = (state % 32) as u32;
            // Few distinct home buckets: long probe runs and many collisions.
            let hash = (state >> 40) % 12 + (u64::from(slot) << 40);
            if let Some(&old) = model.get(&slot) {
                table.remove(old, slot).unwrap();
                model.remove(&slot);
            } else {
                table.insert(hash, slot).unwrap();
                model.insert(slot, hash);
            }
            check_all_reachable(&table);
            for (&s, &h) in &model {
                assert!(table.find(h, |x| x == s).is_some());
            }
            assert_eq!(table.entries().count(), model.len());
        }
    }

    #[test]
    fn garbage_buckets_cost_one_bounded_pass() {
        let words: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(u64::MAX)).collect();
        let table = Table::new(&words, 4);
        assert_eq!(
            table.find(5, |_| true),
            None,
            "slot u32::MAX - 1 is out of range"
        );
        assert_eq!(table.insert(5, 0), Err(TableError::NoEmptyBucket));
        assert!(table.remove(5, 0).is_err());
    }
}
