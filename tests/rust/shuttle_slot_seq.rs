//! Shuttle test of the per-slot sequence protocol (`warp_cache_core::shm::slot_seq`), the
//! production `SlotSeq` over shuttle's atomics, in a miniature arena of three slots and four
//! three-word extents: one writer runs the arena's operations (rewrite in place, an extent
//! released and handed to another slot, a slot freed, a compaction moving an extent) while
//! two readers copy slots the way `ShmStore::probe_slot` does. A validated copy must be one
//! whole value that slot held; readers of untouched slots must never fail validation.
//! Shuttle explores the interleavings under sequential consistency; `loom_slot_seq.rs` checks
//! the memory orderings of the same steps.
//!
//! Run: `cargo test -p warp-cache-tests --features shuttle --release --test shuttle_slot_seq`
//! (see `shuttle_util.rs` for `SHUTTLE_SEED` / `SHUTTLE_SCHEDULE` replay).
#![cfg(feature = "shuttle")]

#[path = "shuttle_util.rs"]
mod shuttle_util;

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use shuttle::sync::atomic::AtomicUsize;
use shuttle::sync::Arc;
use shuttle::thread;
use warp_cache_core::shm::slot_seq::SlotSeq;
// The core's sync shim: shuttle's atomics under `--features shuttle`.
use warp_cache_core::sync::AtomicU64;

const NONE: u64 = u64::MAX;
const FREE_LINK: u64 = 999;
const WORDS: usize = 3;

struct Slot {
    seq: AtomicU64,
    extent: AtomicU64,
}

struct Arena {
    slots: [Slot; 3],
    heap: [[AtomicU64; WORDS]; 4],
}

/// Slot `s`'s `n`th value: readers can tell whose bytes they copied.
fn value(slot: usize, n: u64) -> u64 {
    slot as u64 * 100 + n
}

impl Arena {
    /// Slot `s` holds `value(s, 0)` in extent `s`; extent 3 is free.
    fn new() -> Arc<Arena> {
        Arc::new(Arena {
            slots: std::array::from_fn(|s| Slot {
                seq: AtomicU64::new(0),
                extent: AtomicU64::new(s as u64),
            }),
            heap: std::array::from_fn(|e| {
                std::array::from_fn(|_| AtomicU64::new(if e < 3 { value(e, 0) } else { 0 }))
            }),
        })
    }

    fn seq(&self, slot: usize) -> SlotSeq<'_, AtomicU64> {
        SlotSeq::new(&self.slots[slot].seq)
    }

    fn fill(&self, extent: usize, value: u64) {
        for word in &self.heap[extent] {
            word.store(value, Relaxed);
        }
    }

    fn rewrite(&self, slot: usize, value: u64) {
        let section = self.seq(slot).write_begin();
        self.fill(self.slots[slot].extent.load(Relaxed) as usize, value);
        self.seq(slot).write_end(section);
    }

    /// `Arena::release_extent` (or `Arena::free`) then the heap's free link.
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
        self.fill(extent, value);
        self.seq(slot).write_end(section);
    }

    fn write_entry(&self, slot: usize, extent: usize, value: u64) {
        let section = self.seq(slot).write_begin();
        self.slots[slot].extent.store(extent as u64, Relaxed);
        self.fill(extent, value);
        self.seq(slot).write_end(section);
    }

    /// `Arena::compact` for one live slot: its words move to `to` inside its section.
    fn compact(&self, slot: usize, to: usize) {
        let section = self.seq(slot).write_begin();
        let from = self.slots[slot].extent.load(Relaxed) as usize;
        for (dst, src) in self.heap[to].iter().zip(&self.heap[from]) {
            dst.store(src.load(Relaxed), Relaxed);
        }
        self.slots[slot].extent.store(to as u64, Relaxed);
        self.seq(slot).write_end(section);
    }

    fn read(&self, slot: usize) -> Option<[u64; WORDS]> {
        let seq = self.seq(slot);
        let start = seq.read_begin();
        if start & 1 == 1 {
            return None;
        }
        let extent = self.slots[slot].extent.load(Relaxed);
        let words = self.heap.get(usize::try_from(extent).ok()?)?;
        let copy = std::array::from_fn(|i| words[i].load(Relaxed));
        seq.read_validate(start).then_some(copy)
    }
}

#[test]
fn validated_copies_are_whole_values_of_their_slot_and_other_slots_never_retry() {
    shuttle_util::check(
        "shuttle_slot_seq",
        "validated_copies_are_whole_values_of_their_slot_and_other_slots_never_retry",
        20000,
        || {
            let arena = Arena::new();
            let validated = Arc::new(AtomicUsize::new(0));
            let writer = {
                let arena = Arc::clone(&arena);
                thread::spawn(move || {
                    arena.rewrite(0, value(0, 1));
                    // Slot 0's extent goes to slot 1 (whose own extent is freed).
                    let extent = arena.release(0);
                    // (as an update to a larger class does: one open section)
                    let (freed, section) = arena.release_open(1);
                    arena.write_entry_open(1, extent, value(1, 1), section);
                    // Slot 0 gets slot 1's old extent, then moves to the spare one.
                    arena.write_entry(0, freed, value(0, 2));
                    arena.compact(0, 3);
                    arena.rewrite(0, value(0, 3));
                })
            };
            let mut readers = Vec::new();
            for slot in [0usize, 1] {
                let arena = Arc::clone(&arena);
                let validated = Arc::clone(&validated);
                readers.push(thread::spawn(move || {
                    for _ in 0..4 {
                        if let Some(copy) = arena.read(slot) {
                            assert!(
                                copy.iter().all(|&w| w == copy[0]),
                                "slot {slot}: a torn copy validated: {copy:?}"
                            );
                            assert_eq!(
                                copy[0] / 100,
                                slot as u64,
                                "slot {slot} served another slot's bytes: {copy:?}"
                            );
                            validated.fetch_add(1, SeqCst);
                        }
                    }
                }));
            }
            // Slot 2 is never written: every read of it validates, whatever the writer does.
            let untouched = {
                let arena = Arc::clone(&arena);
                thread::spawn(move || {
                    for _ in 0..4 {
                        assert_eq!(arena.read(2), Some([value(2, 0); WORDS]));
                    }
                })
            };
            writer.join().unwrap();
            untouched.join().unwrap();
            for reader in readers {
                reader.join().unwrap();
            }
            assert_eq!(arena.read(0), Some([value(0, 3); WORDS]));
            assert_eq!(arena.read(1), Some([value(1, 1); WORDS]));
            assert!(arena.seq(0).value() & 1 == 0 && arena.seq(1).value() & 1 == 0);
        },
    );
}
