//! The production per-slot sequence (`warp_cache_core::shm::slot_seq::SlotSeq`, generic over
//! its word) under loom's model checker, in a miniature of the arena: two slots, each with a
//! sequence word and an extent word naming one of two two-word extents of a shared heap. The
//! writer follows the arena's protocol (`Arena::release_extent`, `Arena::free`,
//! `Arena::write_entry`): an extent is taken from a slot inside that slot's section and only
//! then overwritten (the heap's free-list link) and handed to the other slot, whose own
//! section stays open from losing its old extent to holding the new one. Run with:
//!
//! `RUSTFLAGS="--cfg warp_loom" cargo test -p warp-cache-tests --test loom_slot_seq --release`
//!
//! Without `--cfg warp_loom` this file compiles to nothing.
#![cfg(warp_loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::Relaxed;
use warp_cache_core::shm::slot_seq::SlotSeq;

/// An extent word meaning "no extent".
const NONE: u64 = u64::MAX;
/// What freeing an extent writes into its first word (the heap's free-list link).
const FREE_LINK: u64 = 99;

struct Slot {
    seq: AtomicU64,
    extent: AtomicU64,
}

struct Arena {
    slots: [Slot; 2],
    /// Two extents of two words; an entry keeps both words equal to its value.
    heap: [[AtomicU64; 2]; 2],
}

impl Arena {
    /// Slot 0 holds value 1 in extent 0, slot 1 value 2 in extent 1.
    fn new() -> Arc<Arena> {
        let slot = |extent| Slot {
            seq: AtomicU64::new(0),
            extent: AtomicU64::new(extent),
        };
        let pair = |value| [AtomicU64::new(value), AtomicU64::new(value)];
        Arc::new(Arena {
            slots: [slot(0), slot(1)],
            heap: [pair(1), pair(2)],
        })
    }

    fn seq(&self, slot: usize) -> SlotSeq<'_, AtomicU64> {
        SlotSeq::new(&self.slots[slot].seq)
    }

    /// `Arena::write_value`: a new value in the slot's own extent.
    fn rewrite(&self, slot: usize, value: u64) {
        let section = self.seq(slot).write_begin();
        let extent = self.slots[slot].extent.load(Relaxed) as usize;
        self.heap[extent][0].store(value, Relaxed);
        self.heap[extent][1].store(value, Relaxed);
        self.seq(slot).write_end(section);
    }

    /// `Arena::release_extent` then `Heap::free`: the extent leaves the slot inside its
    /// section, and is written (the free link) only after it.
    fn release(&self, slot: usize) -> usize {
        let extent = self.slots[slot].extent.load(Relaxed) as usize;
        let section = self.seq(slot).write_begin();
        self.slots[slot].extent.store(NONE, Relaxed);
        self.seq(slot).write_end(section);
        self.heap[extent][0].store(FREE_LINK, Relaxed);
        extent
    }

    /// `Arena::release_extent`: the slot's section begins, its extent word is cleared and the
    /// extent freed (its free link written) inside it; the section stays open for
    /// `write_entry_open`.
    fn release_open(&self, slot: usize) -> (usize, warp_cache_core::shm::slot_seq::SlotWrite) {
        let extent = self.slots[slot].extent.load(Relaxed) as usize;
        let section = self.seq(slot).write_begin();
        self.slots[slot].extent.store(NONE, Relaxed);
        self.heap[extent][0].store(FREE_LINK, Relaxed);
        (extent, section)
    }

    /// `Arena::write_entry` ending the section `release_open` left open.
    fn write_entry_open(
        &self,
        slot: usize,
        extent: usize,
        value: u64,
        section: warp_cache_core::shm::slot_seq::SlotWrite,
    ) {
        self.slots[slot].extent.store(extent as u64, Relaxed);
        self.heap[extent][0].store(value, Relaxed);
        self.heap[extent][1].store(value, Relaxed);
        self.seq(slot).write_end(section);
    }

    /// One optimistic read of `slot` as `ShmStore::probe_slot` does it: `Some` only if
    /// validated.
    fn read(&self, slot: usize) -> Option<(u64, u64)> {
        let seq = self.seq(slot);
        let start = seq.read_begin();
        if start & 1 == 1 {
            return None;
        }
        let extent = self.slots[slot].extent.load(Relaxed);
        let words = self.heap.get(usize::try_from(extent).ok()?)?;
        let pair = (words[0].load(Relaxed), words[1].load(Relaxed));
        seq.read_validate(start).then_some(pair)
    }
}

/// Issue 12's point: a write of one slot never makes a reader of another retry.
#[test]
fn a_reader_of_one_slot_is_never_invalidated_by_writes_of_another() {
    loom::model(|| {
        let arena = Arena::new();
        let writer = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                arena.rewrite(0, 3);
                arena.rewrite(0, 4);
            })
        };
        for _ in 0..2 {
            assert_eq!(arena.read(1), Some((2, 2)), "slot 1 was never written");
        }
        writer.join().unwrap();
        assert_eq!(arena.read(0), Some((4, 4)));
    });
}

/// A validated read of a slot is never torn, across rewrites in place.
#[test]
fn a_validated_read_of_a_rewritten_slot_is_never_torn() {
    loom::model(|| {
        let arena = Arena::new();
        let writer = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                arena.rewrite(0, 3);
                arena.rewrite(0, 4);
            })
        };
        for _ in 0..2 {
            if let Some((a, b)) = arena.read(0) {
                assert_eq!(a, b, "torn read accepted");
                assert!(matches!(a, 1 | 3 | 4), "value {a} was never slot 0's");
            }
        }
        writer.join().unwrap();
    });
}

/// A reader of slot 0 never accepts the free link or slot 1's bytes when slot 0's extent is
/// freed and handed to slot 1 while it reads.
#[test]
fn a_reader_never_accepts_bytes_of_an_extent_reused_by_another_slot() {
    loom::model(|| {
        let arena = Arena::new();
        let writer = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                let extent = arena.release(0);
                // Slot 1 changes extents the way an update to a larger class does.
                let (old, section) = arena.release_open(1);
                arena.write_entry_open(1, extent, 5, section);
                assert_eq!(old, 1);
            })
        };
        if let Some(pair) = arena.read(0) {
            assert_eq!(pair, (1, 1), "slot 0 served bytes it no longer owned");
        }
        writer.join().unwrap();
        assert_eq!(arena.read(0), None, "slot 0 has no extent");
        assert_eq!(arena.read(1), Some((5, 5)));
    });
}
