//! The slot arena: `capacity` metadata slots whose key and value words live in an extent of
//! the heap (`heap.rs`), the free-slot allocator, and [`ShmSlots`], the [`SieveSlots`] view
//! the one SIEVE ([`crate::policy`]) runs on (INV-1).
//!
//! All access is through relaxed atomic loads and stores of whole words. Slot indices come
//! from the trusted geometry or are range-checked before use; lengths read from a slot are
//! checked against the caller's limits before anything is copied or allocated (INV-7).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::heap::{entry_bytes, Extent, Heap};
use super::layout::{word, DataHeader, Geometry, SlotMeta, WORD_BYTES};
use super::slot_seq::{SlotSeq, SlotWrite};
use crate::policy::{SieveSlots, SlotIndex, NO_SLOT};

/// A slot number read from a corrupt word: out of range for every capacity.
const CORRUPT_SLOT: SlotIndex = NO_SLOT - 1;

fn slot_from_word(value: u64) -> SlotIndex {
    u32::try_from(value).unwrap_or(CORRUPT_SLOT)
}

/// Key and value lengths of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lens {
    pub key: u32,
    pub value: u32,
}

/// Problems found by the allocator (the caller resets, INV-S4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArenaError {
    /// No free slot although the SIEVE list is not full.
    Exhausted,
    /// The free list names a slot out of range.
    BadFreeLink { slot: u64 },
}

impl std::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArenaError::Exhausted => f.write_str("arena has no free slot below capacity"),
            ArenaError::BadFreeLink { slot } => write!(f, "free list names slot {slot}"),
        }
    }
}

/// The arena plus the header words it needs (SIEVE list words, allocator words).
#[derive(Debug, Clone, Copy)]
pub struct Arena<'a> {
    header: &'a [AtomicU64],
    slots: &'a [AtomicU64],
    heap: Heap<'a>,
    /// Borrowed, not copied: an `Arena` is built for every read (the hit path).
    geometry: &'a Geometry,
}

impl<'a> Arena<'a> {
    /// `header` is the header words, `slots` exactly `capacity * slot_words` words, `heap`
    /// the heap section with its free-list heads.
    pub fn new(
        header: &'a [AtomicU64],
        slots: &'a [AtomicU64],
        heap: Heap<'a>,
        geometry: &'a Geometry,
    ) -> Self {
        Arena {
            header,
            slots,
            heap,
            geometry,
        }
    }

    pub fn heap(&self) -> Heap<'a> {
        self.heap
    }

    pub fn capacity(&self) -> u32 {
        self.geometry.capacity
    }

    #[inline]
    fn header_word(&self, index: usize) -> u64 {
        self.header.get(index).map_or(0, |w| w.load(Relaxed))
    }

    #[inline]
    fn set_header_word(&self, index: usize, value: u64) {
        if let Some(w) = self.header.get(index) {
            w.store(value, Relaxed);
        }
    }

    /// Word `field` of `slot`'s block, if the slot is in range.
    #[inline]
    fn slot_word(&self, slot: u32, field: usize) -> Option<&'a AtomicU64> {
        if slot >= self.geometry.capacity {
            return None;
        }
        self.slots
            .get(slot as usize * self.geometry.slot_words + field)
    }

    #[inline]
    fn meta(&self, slot: u32, field: usize) -> u64 {
        self.slot_word(slot, field).map_or(0, |w| w.load(Relaxed))
    }

    #[inline]
    fn set_meta(&self, slot: u32, field: usize, value: u64) {
        if let Some(w) = self.slot_word(slot, field) {
            w.store(value, Relaxed);
        }
    }

    /// The `count` words starting at word `offset` of `slot`'s extent.
    #[inline]
    fn words(&self, slot: u32, offset: usize, count: usize) -> &'a [AtomicU64] {
        let extent = self.heap.extent_words(self.extent(slot)).unwrap_or(&[]);
        extent.get(offset..offset + count).unwrap_or(&[])
    }

    fn key_words(&self, slot: u32, count: usize) -> &'a [AtomicU64] {
        self.words(slot, 0, count.min(self.geometry.key_words))
    }

    /// The extent word of `slot` (0: none).
    #[inline]
    pub fn extent(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, extent))
    }

    /// `slot`'s sequence word (INV-S3, `slot_seq.rs`), if the slot is in range.
    #[inline]
    pub fn seq(&self, slot: u32) -> Option<SlotSeq<'a, AtomicU64>> {
        self.slot_word(slot, word!(SlotMeta, seq)).map(SlotSeq::new)
    }

    /// Takes `slot`'s extent away and frees it: the slot's section is begun first (so a
    /// reader still holding the old extent word fails its validation when the freed extent's
    /// words change, INV-S3) and left open, for [`Arena::write_entry`] of the entry's new
    /// extent to end: between the two, the slot has no extent, and a reader of its key must
    /// wait rather than take that for a miss. (If the entry is dropped instead,
    /// [`Arena::free`] starts and ends a section of its own, which leaves the word even.)
    #[must_use = "end the slot's section with write_entry"]
    pub fn release_extent(&self, slot: u32) -> Option<SlotWrite> {
        let extent = self.extent(slot);
        let section = self.seq(slot).map(|seq| seq.write_begin());
        self.set_meta(slot, word!(SlotMeta, extent), 0);
        #[cfg(unix)]
        super::failpoint::hit(super::failpoint::Point::MidRelease);
        self.heap.free(extent);
        section
    }

    /// Whether `slot`'s extent can take a value of `value_len` bytes in place.
    pub fn fits_in_place(&self, slot: u32, key_len: u32, value_len: u32) -> bool {
        Extent::decode(self.extent(slot))
            .is_some_and(|e| e.bytes() >= entry_bytes(key_len, value_len))
    }

    // --- entry data ---

    #[inline]
    pub fn lens(&self, slot: u32) -> Lens {
        let lens = self.meta(slot, word!(SlotMeta, lens));
        Lens {
            key: lens as u32,
            value: (lens >> 32) as u32,
        }
    }

    #[inline]
    pub fn hash(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, hash))
    }

    #[inline]
    pub fn stored_at_ns(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, stored_at_ns))
    }

    /// `slot`'s words, range-checked once (`None` if out of range): the hit path reads
    /// several fields of one slot through it without a check per field.
    #[inline]
    pub fn slot(&self, slot: u32) -> Option<SlotWords<'a>> {
        if slot >= self.geometry.capacity {
            return None;
        }
        let start = slot as usize * self.geometry.slot_words;
        let block = self.slots.get(start..start + self.geometry.slot_words)?;
        let (meta, _) = block.split_first_chunk::<META_WORDS>()?;
        let extent = self
            .heap
            .extent_words(meta[word!(SlotMeta, extent)].load(Relaxed))?;
        let key_len = meta[word!(SlotMeta, lens)].load(Relaxed) as u32;
        let key_words = (key_len as usize)
            .div_ceil(WORD_BYTES)
            .min(self.geometry.key_words);
        let (key, value) = extent.split_at_checked(key_words)?;
        let value = value.get(..self.geometry.value_words).unwrap_or(value);
        Some(SlotWords { meta, key, value })
    }

    /// Whether `slot` holds exactly `key` (its recorded hash and length, then every word).
    #[inline]
    pub fn key_matches(&self, slot: u32, hash: u64, key: &[u8]) -> bool {
        self.slot(slot).is_some_and(|s| s.key_matches(hash, key))
    }

    /// Appends `len` value bytes of `slot` to `out`. `len` must already be checked against
    /// the value limit (it is clamped to it regardless).
    #[inline]
    pub fn copy_value(&self, slot: u32, len: u32, out: &mut impl ValueSink) {
        if let Some(words) = self.slot(slot) {
            words.copy_value(len.min(self.geometry.value_bytes_max), out);
        }
    }

    /// The key bytes of `slot` (validation and diagnostics).
    pub fn key(&self, slot: u32) -> Vec<u8> {
        let len = (self.lens(slot).key as usize).min(self.geometry.key_bytes_max as usize);
        let mut out = Vec::with_capacity(len);
        for word in self.key_words(slot, len.div_ceil(WORD_BYTES)) {
            out.extend_from_slice(&word.load(Relaxed).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Stores `bytes` into `words`, the last word zero-padded (as many words as both have).
    #[inline]
    fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(WORD_BYTES);
        let mut words = words.iter();
        // Chunks first: `zip` stops on the first exhausted side without taking from the
        // second, so the word for the tail is still in `words`.
        for (chunk, word) in (&mut chunks).zip(&mut words) {
            let mut whole = [0u8; WORD_BYTES];
            whole.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(whole), Relaxed);
        }
        let tail = chunks.remainder();
        if let (false, Some(word)) = (tail.is_empty(), words.next()) {
            let padded = tail
                .iter()
                .enumerate()
                .fold(0u64, |word, (i, &b)| word | u64::from(b) << (8 * i));
            word.store(padded, Relaxed);
        }
    }

    /// `slot`'s metadata words, if the slot is in range.
    #[inline]
    fn meta_block(&self, slot: u32) -> Option<&'a [AtomicU64; META_WORDS]> {
        if slot >= self.geometry.capacity {
            return None;
        }
        let start = slot as usize * self.geometry.slot_words;
        self.slots
            .get(start..start + self.geometry.slot_words)?
            .first_chunk::<META_WORDS>()
    }

    /// Writes a whole entry (writer, inside a write section) under table epoch `epoch` into
    /// `extent` (from [`Heap::alloc`] for [`entry_bytes`] of these lengths), inside the
    /// slot's section: `open`, the one [`Arena::release_extent`] left open, or a new one.
    /// Lengths are within the limits (checked by the caller).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn write_entry(
        &self,
        slot: u32,
        extent: u64,
        hash: u64,
        key: &[u8],
        value: &[u8],
        stored_at_ns: u64,
        epoch: u64,
        open: Option<SlotWrite>,
    ) {
        let Some(meta) = self.meta_block(slot) else {
            return;
        };
        let seq = SlotSeq::new(&meta[word!(SlotMeta, seq)]);
        let section = open.unwrap_or_else(|| seq.write_begin());
        meta[word!(SlotMeta, hash)].store(hash, Relaxed);
        meta[word!(SlotMeta, extent)].store(extent, Relaxed);
        let words = self.heap.extent_words(extent).unwrap_or(&[]);
        let key_words = key
            .len()
            .div_ceil(WORD_BYTES)
            .min(self.geometry.key_words)
            .min(words.len());
        let (key_area, value_area) = words.split_at(key_words);
        Self::store_bytes(key_area, key);
        self.write_value_into(
            meta,
            value_area,
            key.len() as u32,
            value,
            stored_at_ns,
            epoch,
        );
        seq.write_end(section);
    }

    /// Replaces the value, its stamp and the entry check (writer, inside a write section);
    /// the value fits the slot's extent ([`Arena::fits_in_place`]).
    pub fn write_value(
        &self,
        slot: u32,
        key_len: u32,
        value: &[u8],
        stored_at_ns: u64,
        epoch: u64,
    ) {
        let Some(meta) = self.meta_block(slot) else {
            return;
        };
        let words = self
            .heap
            .extent_words(meta[word!(SlotMeta, extent)].load(Relaxed))
            .unwrap_or(&[]);
        let key_words = (key_len as usize)
            .div_ceil(WORD_BYTES)
            .min(self.geometry.key_words)
            .min(words.len());
        let seq = SlotSeq::new(&meta[word!(SlotMeta, seq)]);
        let section = seq.write_begin();
        self.write_value_into(
            meta,
            &words[key_words..],
            key_len,
            value,
            stored_at_ns,
            epoch,
        );
        seq.write_end(section);
    }

    /// The value half of a write: `value_area` is the slot's extent after the key words.
    #[inline]
    fn write_value_into(
        &self,
        meta: &[AtomicU64; META_WORDS],
        value_area: &[AtomicU64],
        key_len: u32,
        value: &[u8],
        stored_at_ns: u64,
        epoch: u64,
    ) {
        let count = value
            .len()
            .div_ceil(WORD_BYTES)
            .min(self.geometry.value_words)
            .min(value_area.len());
        let words = &value_area[..count];
        let half = words.len() / 2;
        Self::store_bytes(&words[..half], value);
        // (The failpoints, like the store, exist on unix only.)
        #[cfg(unix)]
        super::failpoint::hit(super::failpoint::Point::MidWrite);
        Self::store_bytes(
            &words[half..],
            value.get(half * WORD_BYTES..).unwrap_or(&[]),
        );
        let lens = u64::from(key_len) | (u64::from(value.len() as u32) << 32);
        meta[word!(SlotMeta, lens)].store(lens, Relaxed);
        meta[word!(SlotMeta, stored_at_ns)].store(stored_at_ns, Relaxed);
        let hash = meta[word!(SlotMeta, hash)].load(Relaxed);
        let check = crate::hash::entry_check(epoch, hash, lens, stored_at_ns, value);
        meta[word!(SlotMeta, check)].store(check, Relaxed);
    }

    /// The entry check word stored for `slot` (validation).
    pub fn check(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, check))
    }

    /// The value bytes of `slot` (validation and diagnostics).
    pub fn value(&self, slot: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let len = self.lens(slot).value.min(self.geometry.value_bytes_max);
        self.copy_value(slot, len, &mut out);
        out
    }

    // --- allocator (writer only) ---

    pub fn high_water(&self) -> u64 {
        self.header_word(word!(DataHeader, high_water))
    }

    pub fn free_head(&self) -> u64 {
        self.header_word(word!(DataHeader, free_head))
    }

    /// The next slot on the free list after `slot` (a free slot's links word holds it).
    pub fn free_next(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, links))
    }

    /// A slot not in use: from the free list, else the next never-used one.
    pub fn alloc(&self) -> Result<u32, ArenaError> {
        let head = self.free_head();
        if head != u64::from(NO_SLOT) {
            let slot = u32::try_from(head)
                .ok()
                .filter(|&s| u64::from(s) < self.high_water().min(u64::from(self.capacity())))
                .ok_or(ArenaError::BadFreeLink { slot: head })?;
            let next = self.free_next(slot);
            self.set_header_word(word!(DataHeader, free_head), next);
            return Ok(slot);
        }
        let high = self.high_water();
        if high < u64::from(self.capacity()) {
            self.set_header_word(word!(DataHeader, high_water), high + 1);
            return Ok(high as u32);
        }
        Err(ArenaError::Exhausted)
    }

    /// Puts `slot` on the free list and its extent on the heap's (it was unlinked from the
    /// SIEVE list and the table).
    pub fn free(&self, slot: u32) {
        let extent = self.extent(slot);
        if let Some(seq) = self.seq(slot) {
            let section = seq.write_begin();
            self.set_meta(slot, word!(SlotMeta, extent), 0);
            self.set_meta(slot, word!(SlotMeta, lens), 0);
            #[cfg(unix)]
            super::failpoint::hit(super::failpoint::Point::MidRelease);
            seq.write_end(section);
        }
        // After the section (see `release_extent`): freeing writes the extent's first word.
        self.heap.free(extent);
        self.set_meta(slot, word!(SlotMeta, links), self.free_head());
        self.set_header_word(word!(DataHeader, free_head), u64::from(slot));
    }

    /// Forgets every slot: empty SIEVE list, empty free list, nothing used. Settles the
    /// sequence of every slot used so far (a writer that died inside a slot section left it
    /// odd); the caller has moved the table epoch first, so what readers copied across the
    /// reset fails its entry check (`slot_seq.rs`).
    pub fn reset(&self) {
        let used = self.high_water().min(u64::from(self.capacity())) as u32;
        for slot in 0..used {
            if let Some(seq) = self.seq(slot) {
                seq.settle();
            }
        }
        let mut slots = ShmSlots::new(*self);
        crate::policy::reset(&mut slots);
        self.set_header_word(word!(DataHeader, free_head), u64::from(NO_SLOT));
        self.set_header_word(word!(DataHeader, high_water), 0);
        self.heap.reset();
    }

    /// Compacts the heap ([`Heap::compact`]) over the entries on the SIEVE list; `false` if
    /// the list or the extents are corrupt (nothing moved: the caller resets).
    pub fn compact(&self) -> bool {
        let slots = ShmSlots::new(*self);
        // The length is a header word (hostile, INV-7): more entries than slots is a corrupt
        // list, and must not size an allocation.
        if slots.len() > self.capacity() {
            return false;
        }
        let mut live = Vec::with_capacity(slots.len() as usize);
        let mut cursor = slots.head();
        let mut visited = 0usize;
        while cursor != NO_SLOT {
            if visited >= slots.len() as usize || cursor >= self.capacity() {
                return false;
            }
            // (A slot whose extent is being replaced has none: nothing to move.)
            let extent = self.extent(cursor);
            if extent != 0 {
                live.push((cursor, extent));
            }
            visited += 1;
            cursor = slots.next(cursor);
        }
        if visited != slots.len() as usize {
            return false;
        }
        // Every live slot's section spans the move: its words change place (INV-S3).
        let sections: Vec<_> = live
            .iter()
            .filter_map(|&(slot, _)| self.seq(slot))
            .map(|seq| (seq, seq.write_begin()))
            .collect();
        let moved = self.heap.compact(&live);
        if let Some(moved) = &moved {
            for &(slot, extent) in moved {
                self.set_meta(slot, word!(SlotMeta, extent), extent);
            }
        }
        // In reverse: a slot listed twice (a corrupt list, which the caller then resets)
        // still ends even.
        for (seq, section) in sections.into_iter().rev() {
            seq.write_end(section);
        }
        moved.is_some()
    }
}

const META_WORDS: usize = super::layout::META_WORDS;

/// One slot's words split into meta, key and value parts ([`Arena::slot`]). Loads only:
/// what they return is hostile input to be checked by the caller (INV-7) and, for a
/// lock-free reader, to be validated by the seqlock before use (INV-S3).
#[derive(Debug, Clone, Copy)]
pub struct SlotWords<'a> {
    meta: &'a [AtomicU64; META_WORDS],
    key: &'a [AtomicU64],
    value: &'a [AtomicU64],
}

impl SlotWords<'_> {
    #[inline]
    fn meta(&self, field: usize) -> u64 {
        self.meta.get(field).map_or(0, |w| w.load(Relaxed))
    }

    #[inline]
    pub fn lens(&self) -> Lens {
        let lens = self.meta(word!(SlotMeta, lens));
        Lens {
            key: lens as u32,
            value: (lens >> 32) as u32,
        }
    }

    #[inline]
    pub fn stored_at_ns(&self) -> u64 {
        self.meta(word!(SlotMeta, stored_at_ns))
    }

    /// Both lengths as stored (the word the entry check covers).
    #[inline]
    pub fn lens_word(&self) -> u64 {
        self.meta(word!(SlotMeta, lens))
    }

    /// The entry check word ([`crate::hash::entry_check`]).
    #[inline]
    pub fn check(&self) -> u64 {
        self.meta(word!(SlotMeta, check))
    }

    #[inline]
    pub fn visited(&self) -> bool {
        self.meta(word!(SlotMeta, visited)) != 0
    }

    /// Whether this slot holds exactly `key` (its recorded hash and length, then every word).
    #[inline]
    pub fn key_matches(&self, hash: u64, key: &[u8]) -> bool {
        if self.meta(word!(SlotMeta, hash)) != hash || self.lens().key as usize != key.len() {
            return false;
        }
        let Some(words) = self.key.get(..key.len().div_ceil(WORD_BYTES)) else {
            return false;
        };
        let mut chunks = key.chunks_exact(WORD_BYTES);
        for (chunk, word) in (&mut chunks).zip(words) {
            let mut bytes = [0u8; WORD_BYTES];
            bytes.copy_from_slice(chunk);
            if word.load(Relaxed) != u64::from_le_bytes(bytes) {
                return false;
            }
        }
        let tail = chunks.remainder();
        if tail.is_empty() {
            return true;
        }
        // The last word holds the tail bytes and zero padding. Assembled without a
        // variable-length copy (that would call memcpy on every hit): from the key's last 8
        // bytes shifted down when the key has them, else byte by byte.
        let padded = match key.last_chunk::<WORD_BYTES>() {
            Some(last) => u64::from_le_bytes(*last) >> (8 * (WORD_BYTES - tail.len())),
            None => tail
                .iter()
                .enumerate()
                .fold(0u64, |word, (i, &b)| word | u64::from(b) << (8 * i)),
        };
        words
            .last()
            .is_some_and(|last| last.load(Relaxed) == padded)
    }

    /// Copies `len` value bytes (clamped to the slot's value words) to `out`.
    #[inline]
    pub fn copy_value(&self, len: u32, out: &mut impl ValueSink) {
        let len = (len as usize).min(self.value.len() * WORD_BYTES);
        let words = self.value.get(..len.div_ceil(WORD_BYTES)).unwrap_or(&[]);
        out.fill(words, len);
    }
}

/// Where a read copies value bytes: a `Vec<u8>`, or a [`SmallValue`] that keeps small values
/// on the caller's stack.
pub trait ValueSink {
    /// Forgets what an earlier (discarded) read attempt copied.
    fn clear(&mut self);
    /// Appends the first `len` bytes of `words` (little-endian; `len <= words.len() * 8`,
    /// at most one call after each [`ValueSink::clear`]).
    fn fill(&mut self, words: &[AtomicU64], len: usize);
    /// The bytes held since the last [`ValueSink::clear`].
    fn bytes(&self) -> &[u8];
}

impl ValueSink for Vec<u8> {
    #[inline]
    fn clear(&mut self) {
        Vec::clear(self);
    }

    #[inline]
    fn fill(&mut self, words: &[AtomicU64], len: usize) {
        self.reserve(words.len() * WORD_BYTES);
        let start = self.len();
        for word in words {
            self.extend_from_slice(&word.load(Relaxed).to_le_bytes());
        }
        self.truncate(start + len);
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Values up to this many bytes are copied to the stack by [`SmallValue`].
pub const SMALL_VALUE_BYTES: usize = 48;

/// A [`ValueSink`] that holds values of up to [`SMALL_VALUE_BYTES`] inline (no `Vec` length
/// and capacity bookkeeping per word: the hit path of small values) and larger ones in a
/// caller's `Vec`.
#[derive(Debug)]
pub struct SmallValue<'v> {
    inline: [u8; SMALL_VALUE_BYTES],
    /// Bytes held inline; unused once spilled.
    len: usize,
    spilled: bool,
    spill: &'v mut Vec<u8>,
}

impl<'v> SmallValue<'v> {
    /// An empty value whose large contents go to `spill`.
    #[inline]
    pub fn new(spill: &'v mut Vec<u8>) -> SmallValue<'v> {
        SmallValue {
            inline: [0; SMALL_VALUE_BYTES],
            len: 0,
            spilled: false,
            spill,
        }
    }

    /// The value bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        if self.spilled {
            self.spill
        } else {
            self.inline.get(..self.len).unwrap_or(&[])
        }
    }

    /// The spill `Vec`, which from now on holds the value (for a caller that fills it
    /// directly).
    pub fn spill_mut(&mut self) -> &mut Vec<u8> {
        self.spilled = true;
        self.spill
    }

    /// Leaves the value bytes in the spill `Vec` (copied there if held inline).
    pub fn settle(&mut self) {
        if !self.spilled {
            self.spill.clear();
            self.spill
                .extend_from_slice(self.inline.get(..self.len).unwrap_or(&[]));
            self.spilled = true;
        }
    }
}

impl ValueSink for SmallValue<'_> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        SmallValue::bytes(self)
    }

    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.spilled = false;
    }

    #[inline]
    fn fill(&mut self, words: &[AtomicU64], len: usize) {
        if len <= SMALL_VALUE_BYTES {
            for (bytes, word) in self.inline.chunks_exact_mut(WORD_BYTES).zip(words) {
                bytes.copy_from_slice(&word.load(Relaxed).to_le_bytes());
            }
            self.len = len;
        } else {
            self.spill.clear();
            self.spill.fill(words, len);
            self.spilled = true;
        }
    }
}

/// The SIEVE list stored in the mapping: head/tail/hand/len in the header, prev/next packed in
/// each slot's `links` word, the visited bit in its own word (set by lock-free readers).
/// Out-of-range values read back are reported as out-of-range slots so [`crate::policy`]
/// flags them (it checks every link it follows).
#[derive(Debug)]
pub struct ShmSlots<'a> {
    arena: Arena<'a>,
}

impl<'a> ShmSlots<'a> {
    pub fn new(arena: Arena<'a>) -> Self {
        ShmSlots { arena }
    }

    fn links(&self, slot: SlotIndex) -> (SlotIndex, SlotIndex) {
        let links = self.arena.meta(slot, word!(SlotMeta, links));
        (links as u32, (links >> 32) as u32)
    }

    fn set_links(&self, slot: SlotIndex, prev: SlotIndex, next: SlotIndex) {
        self.arena.set_meta(
            slot,
            word!(SlotMeta, links),
            u64::from(prev) | (u64::from(next) << 32),
        );
    }
}

impl SieveSlots for ShmSlots<'_> {
    fn capacity(&self) -> u32 {
        self.arena.capacity()
    }
    fn head(&self) -> SlotIndex {
        slot_from_word(self.arena.header_word(word!(DataHeader, sieve_head)))
    }
    fn set_head(&mut self, slot: SlotIndex) {
        self.arena
            .set_header_word(word!(DataHeader, sieve_head), u64::from(slot));
    }
    fn tail(&self) -> SlotIndex {
        slot_from_word(self.arena.header_word(word!(DataHeader, sieve_tail)))
    }
    fn set_tail(&mut self, slot: SlotIndex) {
        self.arena
            .set_header_word(word!(DataHeader, sieve_tail), u64::from(slot));
    }
    fn hand(&self) -> SlotIndex {
        slot_from_word(self.arena.header_word(word!(DataHeader, sieve_hand)))
    }
    fn set_hand(&mut self, slot: SlotIndex) {
        self.arena
            .set_header_word(word!(DataHeader, sieve_hand), u64::from(slot));
    }
    fn len(&self) -> u32 {
        // A corrupt length above u32 reads as "more than capacity", which validate rejects.
        slot_from_word(self.arena.header_word(word!(DataHeader, sieve_len)))
    }
    fn set_len(&mut self, len: u32) {
        self.arena
            .set_header_word(word!(DataHeader, sieve_len), u64::from(len));
    }
    fn prev(&self, slot: SlotIndex) -> SlotIndex {
        self.links(slot).0
    }
    fn set_prev(&mut self, slot: SlotIndex, prev: SlotIndex) {
        let (_, next) = self.links(slot);
        self.set_links(slot, prev, next);
    }
    fn next(&self, slot: SlotIndex) -> SlotIndex {
        self.links(slot).1
    }
    fn set_next(&mut self, slot: SlotIndex, next: SlotIndex) {
        let (prev, _) = self.links(slot);
        self.set_links(slot, prev, next);
    }
    fn visited(&self, slot: SlotIndex) -> bool {
        self.arena.meta(slot, word!(SlotMeta, visited)) != 0
    }
    fn set_visited(&self, slot: SlotIndex, visited: bool) {
        self.arena
            .set_meta(slot, word!(SlotMeta, visited), u64::from(visited));
    }
}

#[cfg(test)]
mod tests;
