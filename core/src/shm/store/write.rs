//! Writes: the writer lock (taking over from dead owners, INV-8), write sections and resets (INV-S4, INV-S8), insert, remove, clear, counters.

use super::{
    busy_error, InsertOutcome, ShmInfo, ShmStore, SkipReason, View, INSERT_PATIENCE, LOCK_WAIT,
    LOCK_WAIT_LONG,
};
use std::cell::OnceCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::super::failpoint::{self, Point};
use super::super::files::{Backing, Files};
use super::super::heap::{self, Alloc};
use super::super::layout::{word, CounterStripe, DataHeader, LockFile};
use super::super::liveness::{self, LocalLiveness, OwnerState};
use super::super::region::{self, CacheDir, FileId};
use super::super::seqlock::{Acquire, Liveness, SeqLock};
use super::super::table::TableError;
use crate::clock::is_fresh;
use crate::error::Result;
pub use crate::hash::key_hash;
use crate::policy::{self, PolicyError, SieveSlots};

/// The heap grows by at least this much (or 1/16 of what it holds) at a time, so a filling
/// cache calls `fallocate` rarely while a small one stays small.
const GROW_STEP_MIN_BYTES: u64 = 64 << 10;

/// Heap bytes to make real when `needed` are: a step past what is committed, within budget.
fn grow_target(committed: u64, needed: u64, budget: u64) -> u64 {
    let step = GROW_STEP_MIN_BYTES.max(committed / 16);
    needed
        .max(committed.saturating_add(step))
        .next_multiple_of(4096)
        .min(budget)
        .max(needed)
}

/// Why [`ShmStore::alloc_extent`] found no extent.
enum NoExtent {
    Skip(SkipReason),
    /// Only evicting would make room (and the caller does not evict).
    Full,
}

/// Liveness checks of an owner whose hold was already waited out, before skipping.
const STALLED_OWNER_CHECKS: u32 = 4;

/// Holds the writer lock; releases it on drop (also on unwinding).
pub(super) struct LockGuard<'a> {
    pub(super) lock: SeqLock<'a, AtomicU64>,
    pub(super) me: u64,
    /// The table epoch this holder writes entries under: read when the lock was taken (so a
    /// holder whose lock is later taken over keeps an epoch its successor has left, INV-S8),
    /// and updated by the holder's own resets.
    pub(super) epoch: std::cell::Cell<u64>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(self.me);
    }
}

/// [`Liveness`] of lock owners of one generation: heap stores know only this process; file
/// stores ask the kernel through presence files in the generation's directory, opened on the
/// first check only (a lock taken without waiting never opens it).
pub(super) struct OwnerCheck<'s> {
    pub(super) files: Option<&'s Files>,
    pub(super) dir_id: Option<FileId>,
    pub(super) me: u64,
    pub(super) dir: OnceCell<Option<CacheDir>>,
}

impl OwnerCheck<'_> {
    pub(super) fn state(&self, owner: u64) -> OwnerState {
        let Some(files) = self.files else {
            return if (LocalLiveness { me: self.me }).owner_alive(owner) {
                OwnerState::Alive
            } else {
                OwnerState::Dead
            };
        };
        // The directory the generation lives in; if the path now names another directory
        // (ours was removed), its owners cannot be judged: never take over on a guess.
        let dir = self.dir.get_or_init(|| {
            files
                .open_dir()
                .ok()
                .filter(|dir| dir.id().ok() == self.dir_id)
        });
        match dir {
            Some(dir) => liveness::owner_state(dir, owner, self.me),
            None => OwnerState::Unknown,
        }
    }
}

impl Liveness for OwnerCheck<'_> {
    fn owner_alive(&self, owner: u64) -> bool {
        self.state(owner) != OwnerState::Dead
    }
}

/// A structural problem found under the lock.
#[derive(Debug)]
pub(super) enum Corruption {
    Policy(PolicyError),
    Table(TableError),
    Arena(super::super::arena::ArenaError),
    Heap(&'static str),
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Policy(e) => write!(f, "{e}"),
            Corruption::Table(e) => write!(f, "{e}"),
            Corruption::Arena(e) => write!(f, "{e}"),
            Corruption::Heap(what) => f.write_str(what),
        }
    }
}

impl From<PolicyError> for Corruption {
    fn from(e: PolicyError) -> Self {
        Corruption::Policy(e)
    }
}
impl From<TableError> for Corruption {
    fn from(e: TableError) -> Self {
        Corruption::Table(e)
    }
}
impl From<super::super::arena::ArenaError> for Corruption {
    fn from(e: super::super::arena::ArenaError) -> Self {
        Corruption::Arena(e)
    }
}

impl ShmStore {
    // ----------------------------------------------------------------------------------------
    // Writes

    /// Takes the writer lock for `view`, waiting up to `max_wait` for a live owner and taking
    /// over from a dead one. (A taken-over owner is fenced off by the state word, INV-S8: it
    /// can neither begin nor end a section any more; if it died inside one, the next section
    /// finds the sequence odd and resets to a new epoch.)
    ///
    /// A hold this store already waited out in full (same owner *and* same sequence: the
    /// holder made no progress, e.g. it is stopped) is not waited for again: only checked.
    pub(super) fn lock<'a>(&self, view: &View<'a>, max_wait: Duration) -> Option<LockGuard<'a>> {
        self.lock_with_patience(view, max_wait, max_wait)
    }

    /// [`ShmStore::lock`] that gives up once the hold it waits for made no progress for
    /// `patience` (`SeqLock::acquire_with_patience`; inserts, which may skip caching).
    pub(super) fn lock_with_patience<'a>(
        &self,
        view: &View<'a>,
        max_wait: Duration,
        patience: Duration,
    ) -> Option<LockGuard<'a>> {
        let me = self.me().ok()?;
        let owners = self.owner_check(view.generation, me);
        let guard = |took_over: bool| {
            self.stalled_owner.store(0, Relaxed);
            let guard = LockGuard {
                lock: view.lock,
                me,
                epoch: std::cell::Cell::new(view.epoch()),
            };
            if took_over {
                self.count_takeover(view);
            }
            Some(guard)
        };
        let owner = view.lock.owner();
        if owner != 0 {
            view.count(word!(CounterStripe, lock_waits));
        }
        if owner != 0
            && owner == self.stalled_owner.load(Relaxed)
            && view.lock.sequence() == self.stalled_owner_seq.load(Relaxed)
        {
            // A few looks over a few milliseconds, not one: a killed process whose main thread
            // is already a zombie may still be closing its descriptors in its other threads
            // (its presence lock goes with the last of them).
            for attempt in 0..STALLED_OWNER_CHECKS {
                if !owners.owner_alive(owner) && view.lock.take_over(owner, me) {
                    return guard(true);
                }
                if view.lock.owner() != owner {
                    break;
                }
                if attempt + 1 == STALLED_OWNER_CHECKS {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match view
            .lock
            .acquire_with_patience(me, max_wait, patience, &owners)
        {
            Acquire::Acquired => guard(false),
            Acquire::TookOver { .. } => guard(true),
            // Not recorded as waited out: the next insert gives this hold its patience again
            // (a few dozen microseconds) rather than the millisecond checks above.
            Acquire::Stalled { .. } => None,
            Acquire::Busy { owner } => {
                if max_wait >= LOCK_WAIT {
                    self.stalled_owner_seq.store(view.lock.sequence(), Relaxed);
                    self.stalled_owner.store(owner, Relaxed);
                }
                None
            }
        }
    }

    pub(super) fn count_takeover(&self, view: &View<'_>) {
        if let Some(w) = view.lock_words.get(word!(LockFile, takeovers)) {
            w.fetch_add(1, Relaxed);
        }
    }

    /// Runs `body` inside a write section (lock held through `guard`), passing the epoch to
    /// write entries under. An interrupted previous section, or corruption reported by `body`,
    /// resets the table and arena (INV-S4); after a reset caused by `body`, `body` runs once
    /// more on the empty store.
    pub(super) fn write_section<R>(
        &self,
        view: &View<'_>,
        guard: &LockGuard<'_>,
        mut body: impl FnMut(&View<'_>, u64) -> std::result::Result<R, Corruption>,
    ) -> Option<R> {
        // `None`: our lock was taken over (we were judged dead): write nothing (INV-S8).
        let section = view.lock.write_begin(guard.me)?;
        if section.interrupted {
            self.note_reset("a writer died inside a write section".to_owned());
            guard.epoch.set(self.reset_structures(view));
        }
        let result = match body(view, guard.epoch.get()) {
            Ok(r) => Some(r),
            Err(corruption) => {
                self.note_reset(corruption.to_string());
                guard.epoch.set(self.reset_structures(view));
                body(view, guard.epoch.get()).ok()
            }
        };
        let _ = view.lock.write_end(section);
        result
    }

    pub(super) fn note_reset(&self, reason: String) {
        // try_lock: never block here (fork-safe even if a thread held it at fork time).
        if let Ok(mut last) = self.last_reset_reason.try_lock() {
            *last = Some(reason);
        }
    }

    /// Why this process last reset the table after a crash or corruption, if it did.
    pub fn last_reset_reason(&self) -> Option<String> {
        self.last_reset_reason.lock().ok().and_then(|r| r.clone())
    }

    /// Empties the table and arena, counts a reset and moves to a new table epoch (inside a
    /// write section). Returns the new epoch.
    pub(super) fn reset_structures(&self, view: &View<'_>) -> u64 {
        let epoch = Self::next_epoch(view);
        view.table.clear();
        view.arena.reset();
        if let Some(w) = view.header.get(word!(DataHeader, resets)) {
            w.fetch_add(1, Relaxed);
        }
        epoch
    }

    /// Moves the table to a new epoch and returns it. First thing in a reset or clear: a
    /// reader that copied a slot whose words the reset then reuses loads the new epoch after
    /// its validation fence, and its entry check fails (`slot_seq.rs`, INV-S8).
    fn next_epoch(view: &View<'_>) -> u64 {
        let epoch = view.epoch().wrapping_add(1).max(1);
        if let Some(w) = view.header.get(word!(DataHeader, epoch)) {
            w.store(epoch, Relaxed);
        }
        epoch
    }

    /// Recovery started by a reader that found an odd sequence (of `odd_slot`, if named) and
    /// judged the lock's owner `dead_owner` dead (0: no owner). The lock is taken only from
    /// that owner (an exact compare-exchange, INV-8): by now a live writer may have taken it
    /// over from the dead one, or taken it free, and be inside its own section; taking
    /// whatever owner is there now would reset the table under that writer's feet.
    ///
    /// Holding the lock, no slot section can be open except one nobody will end: one left by
    /// a writer that died (its global section is then odd too, and resets), by a writer
    /// fenced off by a takeover, or found in a hostile file. Such a slot would hold every
    /// reader of its hash up until it is next written, which may be never (a bucket naming it
    /// precedes the key's own slot in the probe run): its entry is dropped (INV-S4: a reset if
    /// that finds the structures inconsistent).
    pub(super) fn recover_interrupted(
        &self,
        view: &View<'_>,
        dead_owner: u64,
        odd_slot: Option<u32>,
    ) {
        let Ok(me) = self.me() else {
            return;
        };
        let guard = || LockGuard {
            lock: view.lock,
            me,
            epoch: std::cell::Cell::new(view.epoch()),
        };
        let held = if dead_owner == 0 {
            view.lock.try_lock(me)
        } else {
            let taken = view.lock.take_over(dead_owner, me);
            if taken {
                self.count_takeover(view);
            }
            taken
        };
        if held {
            // An odd global sequence makes this section reset (INV-S4, INV-S8).
            let guard = guard();
            self.write_section(view, &guard, |v, _| match odd_slot {
                Some(slot) if v.arena.seq(slot).is_some_and(|seq| seq.value() & 1 == 1) => {
                    Self::remove_slot(v, slot)
                }
                _ => Ok(()),
            });
        }
    }

    /// Stores `value` under `key` (encoded bytes) stamped `now_ns`.
    pub fn insert(&self, key: &[u8], value: &[u8], now_ns: u64) -> Result<InsertOutcome> {
        self.insert_hashed(key, key_hash(key), value, now_ns)
    }

    /// [`ShmStore::insert`] with the hash precomputed by [`key_hash`].
    pub fn insert_hashed(
        &self,
        key: &[u8],
        hash: u64,
        value: &[u8],
        now_ns: u64,
    ) -> Result<InsertOutcome> {
        // Over a limit, or larger than the whole heap budget: never storable.
        let heap_bytes = self.geometry.region_bytes - self.geometry.fixed_bytes;
        if key.len() > self.geometry.key_bytes_max as usize
            || value.len() > self.geometry.value_bytes_max as usize
            || heap::class_of(heap::entry_bytes(key.len() as u32, value.len() as u32))
                .is_none_or(|class| heap::class_bytes(class) > heap_bytes)
        {
            self.record_oversize_skip();
            return Ok(InsertOutcome::Skipped(SkipReason::Oversize));
        }
        if self.ttl_ns == Some(0) {
            return Ok(InsertOutcome::Skipped(SkipReason::ZeroTtl));
        }
        self.check_files(false)?;
        if self.is_disabled() {
            return Ok(InsertOutcome::Skipped(SkipReason::Unfollowable));
        }
        // One attempt: lock, one write section, unlock.
        let insert_once = || -> Result<InsertOutcome> {
            let view = self.view()?;
            let Some(guard) = self.lock_with_patience(&view, LOCK_WAIT, INSERT_PATIENCE) else {
                view.count(word!(CounterStripe, lock_skips));
                return Ok(InsertOutcome::Skipped(SkipReason::LockBusy));
            };
            failpoint::hit(Point::AfterLock);
            let outcome = self.write_section(&view, &guard, |v, epoch| {
                self.insert_locked(v, epoch, key, hash, value, now_ns)
            });
            failpoint::hit(Point::BeforeUnlock);
            drop(guard);
            Ok(outcome.unwrap_or(InsertOutcome::Skipped(SkipReason::Corrupt)))
        };
        let mut outcome = insert_once()?;
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // The files were truncated under us (found without an fstat, INV-S6): the write
            // may have gone to private zero pages. Move to fresh files and write once more.
            self.check_files(true)?;
            outcome = insert_once()?;
        }
        Ok(outcome)
    }

    pub(super) fn insert_locked(
        &self,
        view: &View<'_>,
        epoch: u64,
        key: &[u8],
        hash: u64,
        value: &[u8],
        now_ns: u64,
    ) -> std::result::Result<InsertOutcome, Corruption> {
        let (key_len, value_len) = (key.len() as u32, value.len() as u32);
        if let Some((_, slot)) = view
            .table
            .find(hash, |slot| view.arena.key_matches(slot, hash, key))
        {
            if view.arena.fits_in_place(slot, key_len, value_len) {
                view.arena.write_value(slot, key_len, value, now_ns, epoch);
                return Ok(InsertOutcome::Updated);
            }
            // Another extent, for the same slot (its place in the SIEVE list and its visited
            // bit stay), found without evicting anything. The slot's section stays open
            // until it has one (readers of the key wait instead of missing) ...
            let open = view.arena.release_extent(slot);
            match self.alloc_extent(view, heap::entry_bytes(key_len, value_len), false)? {
                Ok((extent, _)) => {
                    view.arena
                        .write_entry(slot, extent, hash, key, value, now_ns, epoch, open);
                    Self::check_first_match(view, key, hash, slot)?;
                    return Ok(InsertOutcome::Updated);
                }
                Err(NoExtent::Skip(skip)) => {
                    Self::remove_slot(view, slot)?;
                    return Ok(InsertOutcome::Skipped(skip));
                }
                // ... or, when the byte budget binds, the entry is stored anew (at the head,
                // unvisited), as if it had been removed first.
                Err(NoExtent::Full) => Self::remove_slot(view, slot)?,
            }
        }
        let mut slots = view.slots();
        let bytes = heap::entry_bytes(key_len, value_len);
        // Evict by count first, when every slot is used (INV-2). The victim's slot is reused,
        // and so is its extent when it is of the new entry's class (the common case of
        // entries of one size: no free-list traffic).
        let mut reused = None;
        let mut victim_section = None;
        if slots.len() >= self.geometry.capacity {
            let victim = policy::evict(&mut slots)?;
            view.table.remove(view.arena.hash(victim), victim)?;
            let extent = view.arena.extent(victim);
            let same_class = view.arena.heap().reusable_for(extent, bytes);
            if !same_class {
                victim_section = view.arena.release_extent(victim);
            }
            reused = Some((victim, same_class.then_some(extent)));
        }
        let (slot, extent, evicted) = match reused {
            Some((victim, Some(extent))) => {
                // The allocation of this entry: the victim's extent changes hands.
                failpoint::hit(Point::MidAlloc);
                (victim, extent, true)
            }
            _ => {
                // ... then, while the byte budget binds, by the same SIEVE hand until the
                // entry fits.
                let (extent, evicted_for_bytes) = match self.alloc_extent(view, bytes, true)? {
                    Ok(found) => found,
                    Err(NoExtent::Skip(skip)) => {
                        if let Some((victim, _)) = reused {
                            view.arena.free(victim);
                        }
                        return Ok(InsertOutcome::Skipped(skip));
                    }
                    Err(NoExtent::Full) => return Err(Corruption::Heap("evicting found no room")),
                };
                let slot = match reused {
                    Some((victim, _)) => victim,
                    None => view.arena.alloc()?,
                };
                (slot, extent, reused.is_some() || evicted_for_bytes)
            }
        };
        view.arena.write_entry(
            slot,
            extent,
            hash,
            key,
            value,
            now_ns,
            epoch,
            victim_section,
        );
        policy::insert(&mut slots, slot)?;
        view.table.insert(hash, slot)?;
        Self::check_first_match(view, key, hash, slot)?;
        Ok(InsertOutcome::Inserted { evicted })
    }

    /// After an entry was written into a new extent: `slot` must be the first match of `key`
    /// in its probe run. A hostile file can give two live slots one extent (a bump pointer or
    /// free list behind live extents, INV-7); writing then makes an older slot of the same
    /// hash read as this key ahead of `slot`, and readers would find that one (and miss, or
    /// serve it). Found under the lock, it is corruption: the table is reset (INV-S4).
    #[inline]
    fn check_first_match(
        view: &View<'_>,
        key: &[u8],
        hash: u64,
        slot: u32,
    ) -> std::result::Result<(), Corruption> {
        // (Our own slot is recognised by number: no key comparison on the common path.)
        match view
            .table
            .find(hash, |s| s == slot || view.arena.key_matches(s, hash, key))
        {
            Some((_, found)) if found == slot => Ok(()),
            _ => Err(Corruption::Heap("two entries share an extent")),
        }
    }

    /// Makes the data file `len` bytes long and real (under the writer lock). The file is
    /// opened by name for this only (no descriptor is kept) and must still be the one mapped;
    /// `false` (skip caching) when it is not, or the filesystem is full.
    fn grow_data(&self, view: &View<'_>, len: u64) -> bool {
        let Backing::Mapped(mapping) = &view.generation.data else {
            return true; // heap memory: all of it exists
        };
        let Some(files) = &self.files else {
            return false;
        };
        let grown = (|| -> Result<bool> {
            let dir = files.open_dir()?;
            let Some(file) = dir.open_file(&files.data_name)? else {
                return Ok(false);
            };
            if file.id() != mapping.id() {
                return Ok(false);
            }
            file.extend_to(len)?;
            Ok(true)
        })();
        grown.unwrap_or(false)
    }

    /// Removes the entry under the SIEVE hand (its slot and extent are freed).
    fn evict_one(&self, view: &View<'_>) -> std::result::Result<(), Corruption> {
        let victim = policy::evict(&mut view.slots())?;
        view.table.remove(view.arena.hash(victim), victim)?;
        view.arena.free(victim);
        Ok(())
    }

    /// An extent of `bytes` (and whether entries were evicted for it), growing the file,
    /// compacting the heap or (if `evict`) evicting as [`Heap::alloc`] says; `Err(Skip)`
    /// when the file cannot grow (the filesystem is full) or the entry can never fit,
    /// `Err(Full)` when only evicting would make room and `evict` is false.
    fn alloc_extent(
        &self,
        view: &View<'_>,
        bytes: u64,
        evict: bool,
    ) -> std::result::Result<std::result::Result<(u64, bool), NoExtent>, Corruption> {
        let heap = view.arena.heap();
        let mut evicted = false;
        let mut compacted = false;
        let mut emptied = false;
        loop {
            match heap.alloc(bytes) {
                Alloc::Got(extent) => return Ok(Ok((extent, evicted))),
                Alloc::Grow { committed_bytes } => {
                    let target =
                        grow_target(heap.committed_bytes(), committed_bytes, heap.budget_bytes());
                    if !self.grow_data(view, self.geometry.fixed_bytes + target) {
                        view.count(word!(CounterStripe, space_skips));
                        return Ok(Err(NoExtent::Skip(SkipReason::NoSpace)));
                    }
                    heap.set_committed(target);
                }
                Alloc::Compact if !compacted => {
                    if !view.arena.compact() {
                        return Err(Corruption::Heap("compaction found overlapping extents"));
                    }
                    compacted = true;
                }
                Alloc::Compact | Alloc::Full if !evict => return Ok(Err(NoExtent::Full)),
                Alloc::Compact | Alloc::Full => {
                    if view.slots().len() == 0 {
                        if emptied {
                            return Err(Corruption::Heap("an empty heap has no room"));
                        }
                        // Nothing is live: whatever the lists and bump say, all of it is free.
                        heap.reset();
                        emptied = true;
                        continue;
                    }
                    self.evict_one(view)?;
                    evicted = true;
                    compacted = false;
                }
                Alloc::TooBig => {
                    view.count(word!(CounterStripe, oversize_skips));
                    return Ok(Err(NoExtent::Skip(SkipReason::Oversize)));
                }
                Alloc::Corrupt => return Err(Corruption::Heap("a free list leaves the heap")),
            }
        }
    }

    pub(super) fn remove_slot(view: &View<'_>, slot: u32) -> std::result::Result<(), Corruption> {
        view.table.remove(view.arena.hash(slot), slot)?;
        policy::remove(&mut view.slots(), slot)?;
        view.arena.free(slot);
        Ok(())
    }

    /// After a read found `key` expired: remove it if the lock is free right now.
    pub(super) fn remove_if_expired(&self, view: &View<'_>, key: &[u8], hash: u64, now_ns: u64) {
        let Some(guard) = self.lock(view, Duration::ZERO) else {
            return;
        };
        let ttl_ns = self.ttl_ns;
        self.write_section(view, &guard, |v, _| {
            match v
                .table
                .find(hash, |slot| v.arena.key_matches(slot, hash, key))
            {
                Some((_, slot)) if !is_fresh(v.arena.stored_at_ns(slot), now_ns, ttl_ns) => {
                    Self::remove_slot(v, slot)
                }
                _ => Ok(()),
            }
        });
    }

    /// Removes `key` if present (`Ok(false)`: it was absent). Waits for the lock as
    /// [`ShmStore::clear`] does, and like it gives an [`ErrorKind::Io`] error (nothing
    /// removed) if a live process held it all that time: a removal the caller asked for is
    /// never dropped silently, since the entry would go on being served.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let hash = key_hash(key);
        self.check_files(false)?;
        let view = self.view()?;
        let Some(guard) = self.lock(&view, LOCK_WAIT_LONG) else {
            return Err(busy_error(view.lock.owner()));
        };
        let removed = self.write_section(&view, &guard, |v, _| {
            match v
                .table
                .find(hash, |slot| v.arena.key_matches(slot, hash, key))
            {
                Some((_, slot)) => Self::remove_slot(v, slot).map(|()| true),
                None => Ok(false),
            }
        });
        drop(guard);
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // Truncated under us (INV-S6): the fresh files start empty, so the key is gone.
            self.check_files(true)?;
        }
        Ok(removed.unwrap_or(false))
    }

    /// Counts a hit whose value bytes the caller could not decode (damaged, or a pickle whose
    /// class is gone) and therefore recomputed: [`ShmStore::info`] reports it as a miss.
    pub fn record_decode_failure(&self) {
        if let Ok(view) = self.view() {
            view.count(word!(CounterStripe, decode_failures));
        }
    }

    /// Counts a result that was not cached because its key or value was too large (the
    /// Python layer calls this when it skips `insert`).
    pub fn record_oversize_skip(&self) {
        if let Ok(view) = self.view() {
            view.count(word!(CounterStripe, oversize_skips));
        }
    }

    /// Removes every entry and zeroes every counter, for every process using the cache.
    /// Waits up to [`LOCK_WAIT_LONG`] for the writer lock; a live process holding it longer
    /// gives an [`ErrorKind::Io`] error (nothing cleared).
    pub fn clear(&self) -> Result<()> {
        self.check_files(true)?;
        let view = self.view()?;
        let Some(guard) = self.lock(&view, LOCK_WAIT_LONG) else {
            return Err(busy_error(view.lock.owner()));
        };
        self.write_section(&view, &guard, |v, _| {
            // A new epoch: nothing written before the clear validates again (INV-S8).
            guard.epoch.set(Self::next_epoch(v));
            v.table.clear();
            v.arena.reset();
            for w in v.stripes {
                w.store(0, Relaxed);
            }
            Ok(())
        });
        Ok(())
    }

    /// Shared counters and the current number of entries.
    pub fn info(&self) -> Result<ShmInfo> {
        self.check_files(false)?;
        let info = self.info_once()?;
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // Read through a truncated mapping (INV-S6): read the fresh files instead.
            self.check_files(true)?;
            return self.info_once();
        }
        Ok(info)
    }

    pub(super) fn info_once(&self) -> Result<ShmInfo> {
        let view = self.view()?;
        // A hit that could not be decoded was recomputed: it is a miss. (Counters are bumped
        // without the lock, so a clear can fall between a hit and its failure: saturate.)
        let decode_failures = view.sum(word!(CounterStripe, decode_failures));
        let hits = view.sum(word!(CounterStripe, hits));
        Ok(ShmInfo {
            hits: hits.saturating_sub(decode_failures),
            misses: view
                .sum(word!(CounterStripe, misses))
                .wrapping_add(decode_failures.min(hits)),
            oversize_skips: view.sum(word!(CounterStripe, oversize_skips)),
            space_skips: view.sum(word!(CounterStripe, space_skips)),
            read_retries: view.sum(word!(CounterStripe, read_retries)),
            lock_waits: view.sum(word!(CounterStripe, lock_waits)),
            lock_skips: view.sum(word!(CounterStripe, lock_skips)),
            current_size: view
                .header_word(word!(DataHeader, sieve_len))
                .min(u64::from(self.geometry.capacity)),
            capacity: self.geometry.capacity,
            resets: view.header_word(word!(DataHeader, resets)),
            takeovers: view
                .lock_words
                .get(word!(LockFile, takeovers))
                .map_or(0, |w| w.load(Relaxed)),
            heap_compactions: view.arena.heap().compactions(),
            heap_bump_bytes: view.arena.heap().bump_bytes(),
            heap_committed_bytes: view.arena.heap().committed_bytes(),
        })
    }
}
