//! Borrowed views of one file generation: the full [`View`] (writers, slow paths) and the lean [`ReadView`] of the hit path.

use super::stripe_hint;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::super::arena::{Arena, ShmSlots};
use super::super::files::Generation;
use super::super::heap::{Heap, CLASS_COUNT};
use super::super::layout::{word, DataHeader, Geometry, LockFile, HEADER_WORDS, STRIPE_WORDS};
use super::super::seqlock::SeqLock;
use super::super::table::Table;

/// Borrowed views of one generation, split by the trusted geometry.
pub(super) struct View<'a> {
    pub(super) header: &'a [AtomicU64],
    pub(super) stripes: &'a [AtomicU64],
    pub(super) table: Table<'a>,
    pub(super) arena: Arena<'a>,
    pub(super) lock_words: &'a [AtomicU64],
    pub(super) lock: SeqLock<'a, AtomicU64>,
    pub(super) generation: &'a Generation,
}

impl<'a> View<'a> {
    #[inline(always)]
    pub(super) fn new(geometry: &'a Geometry, generation: &'a Generation) -> Option<View<'a>> {
        let data = generation.data.words();
        let lock_words = generation.lock.words();
        let header = data.get(..HEADER_WORDS)?;
        let stripes = data.get(
            geometry.stripes_word..geometry.stripes_word + geometry.stripe_count * STRIPE_WORDS,
        )?;
        let buckets = data.get(geometry.table_word..geometry.table_word + geometry.bucket_count)?;
        let slots = data.get(
            geometry.arena_word
                ..geometry.arena_word + geometry.capacity as usize * geometry.slot_words,
        )?;
        let heap = heap_of(geometry, data, header)?;
        let lock = SeqLock::with_waiters(
            lock_words.get(word!(LockFile, state))?,
            lock_words.get(word!(LockFile, lock_waiters))?,
        );
        Some(View {
            generation,
            header,
            stripes,
            table: Table::new(buckets, geometry.capacity),
            arena: Arena::new(header, slots, heap, geometry),
            lock_words,
            lock,
        })
    }

    pub(super) fn header_word(&self, index: usize) -> u64 {
        self.header.get(index).map_or(0, |w| w.load(Relaxed))
    }

    pub(super) fn stripe_word(&self, stripe: usize, field: usize) -> Option<&'a AtomicU64> {
        self.stripes.get(stripe * STRIPE_WORDS + field)
    }

    pub(super) fn count(&self, field: usize) {
        let stripes = self.stripes.len() / STRIPE_WORDS;
        if stripes == 0 {
            return;
        }
        let hint = stripe_hint() as usize;
        // The layout's stripe count is a power of two: a mask, not a division, per count.
        let stripe = if stripes.is_power_of_two() {
            hint & (stripes - 1)
        } else {
            hint % stripes
        };
        if let Some(counter) = self.stripe_word(stripe, field) {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn sum(&self, field: usize) -> u64 {
        (0..self.stripes.len() / STRIPE_WORDS)
            .filter_map(|stripe| self.stripe_word(stripe, field))
            .fold(0u64, |total, w| total.wrapping_add(w.load(Relaxed)))
    }

    pub(super) fn slots(&self) -> ShmSlots<'a> {
        ShmSlots::new(self.arena)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.header_word(word!(DataHeader, epoch))
    }
}

/// The heap section and its free-list heads.
#[inline(always)]
fn heap_of<'a>(
    geometry: &Geometry,
    data: &'a [AtomicU64],
    header: &'a [AtomicU64],
) -> Option<Heap<'a>> {
    let heads = data.get(geometry.heads_word..geometry.heads_word + CLASS_COUNT)?;
    let words = data.get(geometry.heap_word..geometry.heap_word + geometry.heap_words)?;
    Some(Heap::new(header, heads, words))
}

/// What a lock-free read touches of one generation: the seqlock and the data words, with
/// the table, slot and counter words sliced on demand. Built on every read, so it is cheaper
/// than a [`View`] (no header or lock-file slices, no sections split in advance); slow paths
/// (an odd sequence, a recovery, an expired entry, a first touch) build the full [`View`] of
/// the *same* generation with [`ReadView::full`] (INV-S7).
#[derive(Clone, Copy)]
pub(super) struct ReadView<'a> {
    pub(super) geometry: &'a Geometry,
    pub(super) generation: &'a Generation,
    pub(super) data: &'a [AtomicU64],
    pub(super) lock: SeqLock<'a, AtomicU64>,
}

impl<'a> ReadView<'a> {
    #[inline(always)]
    pub(super) fn new(geometry: &'a Geometry, generation: &'a Generation) -> Option<ReadView<'a>> {
        let lock_words = generation.lock.words();
        Some(ReadView {
            geometry,
            generation,
            data: generation.data.words(),
            lock: SeqLock::new(lock_words.get(word!(LockFile, state))?),
        })
    }

    /// The full view of the same generation.
    pub(super) fn full(&self) -> Option<View<'a>> {
        View::new(self.geometry, self.generation)
    }

    /// The table epoch entries must have been written under (INV-S8).
    #[inline(always)]
    pub(super) fn epoch(&self) -> u64 {
        self.data
            .get(word!(DataHeader, epoch))
            .map_or(0, |w| w.load(Relaxed))
    }

    #[inline(always)]
    pub(super) fn table(&self) -> Option<Table<'a>> {
        let start = self.geometry.table_word;
        let buckets = self.data.get(start..start + self.geometry.bucket_count)?;
        Some(Table::new(buckets, self.geometry.capacity))
    }

    /// The arena's slot words (an arena without the header: only slot contents are read).
    #[inline(always)]
    pub(super) fn slots(&self) -> Option<Arena<'a>> {
        let start = self.geometry.arena_word;
        let slots = self
            .data
            .get(start..start + self.geometry.capacity as usize * self.geometry.slot_words)?;
        // Readers only follow extent words: no header, no free-list heads.
        let heap_start = self.geometry.heap_word;
        let words = self
            .data
            .get(heap_start..heap_start + self.geometry.heap_words)?;
        Some(Arena::new(
            &[],
            slots,
            Heap::new(&[], &[], words),
            self.geometry,
        ))
    }

    /// Counts one event on the stripe of `hint` (`None`: the calling thread's, as
    /// [`View::count`]).
    #[inline(always)]
    pub(super) fn count(&self, field: usize, hint: Option<u32>) {
        let stripes = self.geometry.stripe_count;
        if stripes == 0 {
            return;
        }
        let hint = hint.unwrap_or_else(stripe_hint) as usize;
        let stripe = if stripes.is_power_of_two() {
            hint & (stripes - 1)
        } else {
            hint % stripes
        };
        let index = self.geometry.stripes_word + stripe * STRIPE_WORDS + field;
        if let Some(counter) = self.data.get(index) {
            counter.fetch_add(1, Relaxed);
        }
    }
}
