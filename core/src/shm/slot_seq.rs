//! The per-slot sequence (format 5): one word in each slot's metadata that a lock-free
//! reader validates instead of the lock file's global sequence, so a write to one entry never
//! makes a reader of another entry retry (issue 12). Generic over its word ([`Word`]) like the
//! seqlock, so `tests/rust/loom_slot_seq.rs` and `shuttle_slot_seq.rs` run *this* code.
//!
//! # Protocol (INV-S3, per slot)
//!
//! * **Writers** (always holding the writer lock, inside a global write section) wrap every
//!   change of what a reader copies from a slot (its lengths, hash, stamp, check and extent
//!   words, and the heap words of its extent) in [`SlotSeq::write_begin`] (odd, Release fence
//!   after it) and [`SlotSeq::write_end`] (even, Release). Bytes a slot used to own (a freed
//!   extent, an extent a compaction moves) are overwritten only after that slot's sequence
//!   moved, so a reader still holding the old extent word fails its validation.
//! * **Readers** `s = read_begin()` (Acquire): odd means a write of *this* slot is in progress
//!   (or its writer died: INV-8, the caller checks the lock owner); copy with relaxed loads;
//!   `read_validate(s)` (Acquire fence, reload) keeps the copy only if `s` is unchanged.
//! * **A slot that changes extents** (an update to a larger class, a victim of another
//!   class) keeps one section open from `Arena::release_extent` to `Arena::write_entry`:
//!   between the two it has no extent, and a reader must wait rather than miss.
//! * **Resets** (inside the global section that found a dead writer's odd sequence) first
//!   move the table epoch, then [`SlotSeq::settle`] every slot: an odd word left by the dead
//!   writer becomes even, and readers that copied across the reset fail on the epoch.
//!
//! Only one writer holds the lock, so the word needs no read-modify-write: a writer fenced off
//! by a takeover (INV-S8) may still store to it, which at worst leaves a slot odd (readers
//! wait a bounded time, then miss; the next write of the slot moves it on) or lets a torn copy
//! validate, which the entry check word then rejects.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use super::seqlock::Word;

/// One slot's sequence word.
#[derive(Debug)]
pub struct SlotSeq<'a, W: Word> {
    word: &'a W,
}

impl<W: Word> Clone for SlotSeq<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word> Copy for SlotSeq<'_, W> {}

/// The odd value a write section set (end it with [`SlotSeq::write_end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "end the slot's section with write_end"]
pub struct SlotWrite {
    odd: u64,
}

impl<'a, W: Word> SlotSeq<'a, W> {
    #[inline(always)]
    pub fn new(word: &'a W) -> Self {
        SlotSeq { word }
    }

    /// Starts a read: odd means the slot is being written (do not trust a copy).
    #[inline(always)]
    pub fn read_begin(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Ends a read started at `start`: true only if `start` was even and the slot was not
    /// written since, so every relaxed load in between saw one state of the slot.
    #[inline(always)]
    pub fn read_validate(&self, start: u64) -> bool {
        W::fence(Ordering::Acquire);
        start & 1 == 0 && self.word.load(Ordering::Relaxed) == start
    }

    /// Makes the word odd before a writer changes the slot (the writer lock is held). An
    /// already odd word (left by a fenced writer, or hostile) moves to the next odd value, so
    /// no reader that saw it can validate across this section either.
    #[inline(always)]
    pub fn write_begin(&self) -> SlotWrite {
        let current = self.word.load(Ordering::Relaxed);
        let odd = current.wrapping_add(if current & 1 == 1 { 2 } else { 1 });
        self.word.store(odd, Ordering::Relaxed);
        W::fence(Ordering::Release);
        SlotWrite { odd }
    }

    /// Makes the word even again, publishing the section's stores.
    #[inline(always)]
    pub fn write_end(&self, section: SlotWrite) {
        self.word
            .store(section.odd.wrapping_add(1), Ordering::Release);
    }

    /// Makes an odd word even (a reset, after the epoch moved; see the module docs).
    #[inline]
    pub fn settle(&self) {
        let current = self.word.load(Ordering::Relaxed);
        if current & 1 == 1 {
            self.word.store(current.wrapping_add(1), Ordering::Release);
        }
    }

    /// The current value (diagnostics, tests).
    pub fn value(&self) -> u64 {
        self.word.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_write_of_the_slot_invalidates_a_read_of_it_and_nothing_else_does() {
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let (seq_a, seq_b) = (SlotSeq::new(&a), SlotSeq::new(&b));
        let start_a = seq_a.read_begin();
        let start_b = seq_b.read_begin();
        let section = seq_a.write_begin();
        assert_eq!(seq_a.read_begin() & 1, 1, "odd while written");
        seq_a.write_end(section);
        assert!(
            !seq_a.read_validate(start_a),
            "a read across the write fails"
        );
        assert!(
            seq_b.read_validate(start_b),
            "another slot's write changes nothing"
        );
        assert!(seq_a.read_validate(seq_a.read_begin()));
    }

    #[test]
    fn an_odd_word_moves_to_a_fresh_odd_value_and_settles_even() {
        let word = AtomicU64::new(5); // left odd by a writer that died
        let seq = SlotSeq::new(&word);
        assert!(!seq.read_validate(5), "odd never validates");
        let section = seq.write_begin();
        assert_eq!(seq.value(), 7);
        seq.write_end(section);
        assert_eq!(seq.value(), 8);
        let word = AtomicU64::new(9);
        let seq = SlotSeq::new(&word);
        seq.settle();
        assert_eq!(seq.value(), 10);
        seq.settle();
        assert_eq!(seq.value(), 10, "an even word is left alone");
    }

    #[test]
    fn the_word_wraps() {
        let word = AtomicU64::new(u64::MAX - 1);
        let seq = SlotSeq::new(&word);
        let section = seq.write_begin();
        assert_eq!(seq.value(), u64::MAX);
        seq.write_end(section);
        assert_eq!(seq.value(), 0);
    }
}
