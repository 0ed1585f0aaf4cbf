//! The full invariant check of the table, arena and SIEVE list (tests, simulator).

use super::{busy_error, ShmStore, View, LOCK_WAIT_LONG};
use std::sync::atomic::Ordering::Relaxed;

use super::super::header::{check_header, lock_nonce_of, lock_words_valid};
use super::super::table::{self};
use crate::corruption::Corruption;
use crate::hash::entry_check;
pub use crate::hash::key_hash;
use crate::policy::{self, NO_SLOT};

impl ShmStore {
    /// Checks every invariant of the table, arena and SIEVE list under the writer lock
    /// (O(capacity + buckets)); `Err` names the first violation. For tests and the
    /// simulator.
    pub fn validate(&self) -> std::result::Result<(), Corruption> {
        self.check_files(true)?;
        let view = self.view()?;
        let header: Vec<u64> = view.header.iter().map(|w| w.load(Relaxed)).collect();
        let lock_nonce = lock_nonce_of(view.lock_words);
        check_header(&header, &self.geometry, Some(lock_nonce)).map_err(Corruption::DataHeader)?;
        if !lock_words_valid(view.lock_words) {
            return Err(Corruption::LockHeader);
        }
        let guard = self
            .lock(&view, LOCK_WAIT_LONG)
            .ok_or_else(|| busy_error(view.lock.owner()))?;
        if view.lock.sequence() & 1 == 1 {
            return Err(Corruption::InterruptedWrite);
        }
        self.validate_locked(&view, guard.epoch.get())
    }

    pub(super) fn validate_locked(
        &self,
        view: &View<'_>,
        epoch: u64,
    ) -> std::result::Result<(), Corruption> {
        let slots = view.slots();
        policy::validate(&slots)?;
        let capacity = self.geometry.capacity;
        let high_water = view.arena.high_water();
        if high_water > u64::from(capacity) {
            return Err(Corruption::HighWaterAboveCapacity {
                high_water,
                capacity,
            });
        }
        const UNUSED: u8 = 0;
        const LISTED: u8 = 1;
        const FREE: u8 = 2;
        let mut state = vec![UNUSED; capacity as usize];
        let listed = policy::order_from_head(&slots);
        for &slot in &listed {
            if u64::from(slot) >= high_water {
                return Err(Corruption::ListedAboveHighWater { slot, high_water });
            }
            state[slot as usize] = LISTED;
            let lens = view.arena.lens(slot);
            if lens.key > self.geometry.key_bytes_max || lens.value > self.geometry.value_bytes_max
            {
                return Err(Corruption::LengthsBeyondLimits { slot, lens });
            }
        }
        let mut free = 0u64;
        let mut cursor = view.arena.free_head();
        while cursor != u64::from(NO_SLOT) {
            let slot = u32::try_from(cursor)
                .ok()
                .filter(|&s| u64::from(s) < high_water)
                .ok_or(Corruption::FreeListSlot { slot: cursor })?;
            if state[slot as usize] != UNUSED {
                return Err(Corruption::FreeSlotReused { slot });
            }
            state[slot as usize] = FREE;
            free += 1;
            cursor = view.arena.free_next(slot);
        }
        if listed.len() as u64 + free != high_water {
            return Err(Corruption::SlotCount {
                listed: listed.len() as u64,
                free,
                high_water,
            });
        }
        let mut has_bucket = vec![false; capacity as usize];
        let mut buckets = 0usize;
        for (index, bucket) in view.table.entries() {
            buckets += 1;
            let slot = table::bucket_slot(bucket)
                .filter(|&s| s < capacity)
                .ok_or(Corruption::BucketSlotOutOfRange { bucket: index })?;
            if state[slot as usize] != LISTED {
                return Err(Corruption::BucketSlotNotListed {
                    bucket: index,
                    slot,
                });
            }
            if std::mem::replace(&mut has_bucket[slot as usize], true) {
                return Err(Corruption::TwoBuckets { slot });
            }
            if table::hash32(view.arena.hash(slot)) != table::bucket_hash32(bucket) {
                return Err(Corruption::BucketHash {
                    bucket: index,
                    slot,
                });
            }
            if !view.table.reachable(index, bucket) {
                return Err(Corruption::UnreachableBucket { bucket: index });
            }
        }
        if buckets != listed.len() {
            return Err(Corruption::BucketCount {
                buckets,
                entries: listed.len(),
            });
        }
        for &slot in &listed {
            let key = view.arena.key(slot);
            let hash = view.arena.hash(slot);
            if key_hash(&key) != hash {
                return Err(Corruption::KeyHash { slot });
            }
            let lens = view.arena.lens(slot);
            let lens_word = u64::from(lens.key) | (u64::from(lens.value) << 32);
            let check = entry_check(
                epoch,
                hash,
                lens_word,
                view.arena.stored_at_ns(slot),
                &view.arena.value(slot),
            );
            let stored = view.arena.check(slot);
            if stored != check {
                return Err(Corruption::CheckWord {
                    slot,
                    expected: check,
                    found: stored,
                });
            }
            let found = view
                .table
                .find(hash, |s| view.arena.key_matches(s, hash, &key))
                .map(|(_, s)| s);
            if found != Some(slot) {
                return Err(Corruption::KeyFinds { slot, found });
            }
        }
        Ok(())
    }
}
