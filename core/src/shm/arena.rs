//! The slab arena: `capacity` fixed-size slots (meta + key words + value words), the
//! free-slot allocator, and [`ShmSlots`], the [`SieveSlots`] view the one SIEVE
//! ([`crate::policy`]) runs on (INV-1).
//!
//! All access is through relaxed atomic loads and stores of whole words. Slot indices come
//! from the trusted geometry or are range-checked before use; lengths read from a slot are
//! checked against the caller's limits before anything is copied or allocated (INV-7).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::layout::{word, DataHeader, Geometry, SlotMeta, WORD_BYTES};
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
    geometry: Geometry,
}

impl<'a> Arena<'a> {
    /// `header` is the header words, `slots` exactly `capacity * slot_words` words.
    pub fn new(header: &'a [AtomicU64], slots: &'a [AtomicU64], geometry: Geometry) -> Self {
        Arena {
            header,
            slots,
            geometry,
        }
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

    /// The `count` words starting at `offset` inside `slot`'s block.
    #[inline]
    fn words(&self, slot: u32, offset: usize, count: usize) -> &'a [AtomicU64] {
        if slot >= self.geometry.capacity {
            return &[];
        }
        let start = slot as usize * self.geometry.slot_words + offset;
        self.slots.get(start..start + count).unwrap_or(&[])
    }

    fn key_words(&self, slot: u32, count: usize) -> &'a [AtomicU64] {
        self.words(slot, META_WORDS, count.min(self.geometry.key_words))
    }

    fn value_words(&self, slot: u32, count: usize) -> &'a [AtomicU64] {
        self.words(
            slot,
            META_WORDS + self.geometry.key_words,
            count.min(self.geometry.value_words),
        )
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

    /// Whether `slot` holds exactly `key` (its recorded hash and length, then every word).
    #[inline]
    pub fn key_matches(&self, slot: u32, hash: u64, key: &[u8]) -> bool {
        if self.hash(slot) != hash || self.lens(slot).key as usize != key.len() {
            return false;
        }
        let words = self.key_words(slot, key.len().div_ceil(WORD_BYTES));
        if words.len() * WORD_BYTES < key.len() {
            return false;
        }
        let mut chunks = key.chunks_exact(WORD_BYTES);
        for (chunk, word) in (&mut chunks).zip(words) {
            let mut bytes = [0u8; WORD_BYTES];
            bytes.copy_from_slice(chunk);
            if word.load(Relaxed) != u64::from_le_bytes(bytes) {
                return false;
            }
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            // Assembled byte by byte: a variable-length copy into a padded buffer would call
            // memcpy on every hit (most keys end in a partial word).
            let padded = tail
                .iter()
                .enumerate()
                .fold(0u64, |word, (i, &b)| word | u64::from(b) << (8 * i));
            let last = &words[words.len() - 1];
            if last.load(Relaxed) != padded {
                return false;
            }
        }
        true
    }

    /// Appends `len` value bytes of `slot` to `out`. `len` must already be checked against
    /// the value limit (it is clamped to it regardless).
    #[inline]
    pub fn copy_value(&self, slot: u32, len: u32, out: &mut Vec<u8>) {
        let len = (len as usize).min(self.geometry.value_bytes_max as usize);
        let words = self.value_words(slot, len.div_ceil(WORD_BYTES));
        out.reserve(words.len() * WORD_BYTES);
        let start = out.len();
        for word in words {
            out.extend_from_slice(&word.load(Relaxed).to_le_bytes());
        }
        out.truncate(start + len);
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

    fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
        for (word, chunk) in words.iter().zip(bytes.chunks(WORD_BYTES)) {
            let mut padded = [0u8; WORD_BYTES];
            padded[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(padded), Relaxed);
        }
    }

    /// Writes a whole entry (writer, inside a write section). Lengths are within the limits
    /// (checked by the caller).
    pub fn write_entry(&self, slot: u32, hash: u64, key: &[u8], value: &[u8], stored_at_ns: u64) {
        self.set_meta(slot, word!(SlotMeta, hash), hash);
        Self::store_bytes(self.key_words(slot, key.len().div_ceil(WORD_BYTES)), key);
        self.write_value(slot, key.len() as u32, value, stored_at_ns);
    }

    /// Replaces the value and its stamp (writer, inside a write section).
    pub fn write_value(&self, slot: u32, key_len: u32, value: &[u8], stored_at_ns: u64) {
        let words = self.value_words(slot, value.len().div_ceil(WORD_BYTES));
        let half = words.len() / 2;
        Self::store_bytes(&words[..half], value);
        super::failpoint::hit(super::failpoint::Point::MidWrite);
        Self::store_bytes(
            &words[half..],
            value.get(half * WORD_BYTES..).unwrap_or(&[]),
        );
        let lens = u64::from(key_len) | (u64::from(value.len() as u32) << 32);
        self.set_meta(slot, word!(SlotMeta, lens), lens);
        self.set_meta(slot, word!(SlotMeta, stored_at_ns), stored_at_ns);
    }

    // --- allocator (writer only) ---

    pub fn high_water(&self) -> u64 {
        self.header_word(word!(DataHeader, high_water))
    }

    pub fn free_head(&self) -> u64 {
        self.header_word(word!(DataHeader, free_head))
    }

    pub fn free_next(&self, slot: u32) -> u64 {
        self.meta(slot, word!(SlotMeta, free_next))
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

    /// Puts `slot` on the free list (it was unlinked from the SIEVE list and the table).
    pub fn free(&self, slot: u32) {
        self.set_meta(slot, word!(SlotMeta, free_next), self.free_head());
        self.set_meta(slot, word!(SlotMeta, lens), 0);
        self.set_header_word(word!(DataHeader, free_head), u64::from(slot));
    }

    /// Forgets every slot: empty SIEVE list, empty free list, nothing used.
    pub fn reset(&self) {
        let mut slots = ShmSlots::new(*self);
        crate::policy::reset(&mut slots);
        self.set_header_word(word!(DataHeader, free_head), u64::from(NO_SLOT));
        self.set_header_word(word!(DataHeader, high_water), 0);
    }
}

const META_WORDS: usize = super::layout::META_WORDS;

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
mod tests {
    use super::*;
    use crate::policy;
    use crate::shm::layout::HEADER_WORDS;

    struct Heap {
        header: Vec<AtomicU64>,
        slots: Vec<AtomicU64>,
        geometry: Geometry,
    }

    impl Heap {
        fn new(capacity: u32, key_max: u32, value_max: u32) -> Heap {
            let geometry = Geometry::new(capacity, key_max, value_max).unwrap();
            let heap = Heap {
                header: (0..HEADER_WORDS).map(|_| AtomicU64::new(0)).collect(),
                slots: (0..capacity as usize * geometry.slot_words)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                geometry,
            };
            heap.arena().reset();
            heap
        }
        fn arena(&self) -> Arena<'_> {
            Arena::new(&self.header, &self.slots, self.geometry)
        }
    }

    #[test]
    fn entries_round_trip_through_words() {
        let heap = Heap::new(4, 13, 20);
        let arena = heap.arena();
        let slot = arena.alloc().unwrap();
        let key = b"thirteen byte";
        arena.write_entry(slot, 99, key, b"0123456789abcdefghi", 5);
        assert!(arena.key_matches(slot, 99, key));
        assert!(!arena.key_matches(slot, 98, key), "hash differs");
        assert!(!arena.key_matches(slot, 99, b"thirteen bytE"));
        assert!(
            !arena.key_matches(slot, 99, b"thirteen byt"),
            "length differs"
        );
        assert_eq!(arena.lens(slot), Lens { key: 13, value: 19 });
        assert_eq!(arena.stored_at_ns(slot), 5);
        let mut out = vec![b'x'];
        arena.copy_value(slot, 19, &mut out);
        assert_eq!(out, b"x0123456789abcdefghi");
        arena.write_value(slot, 13, b"", 6);
        let mut out = Vec::new();
        arena.copy_value(slot, arena.lens(slot).value, &mut out);
        assert!(out.is_empty());
        assert_eq!(arena.key(slot), key);
        // A hostile length is clamped to the limit: never reads past the slot.
        let mut out = Vec::new();
        arena.copy_value(slot, u32::MAX, &mut out);
        assert_eq!(out.len(), 20);
        assert!(!arena.key_matches(7, 99, key), "out-of-range slot");
    }

    #[test]
    fn allocator_uses_every_slot_then_reuses_freed_ones() {
        let heap = Heap::new(3, 8, 8);
        let arena = heap.arena();
        assert_eq!(
            (0..3).map(|_| arena.alloc().unwrap()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(arena.alloc(), Err(ArenaError::Exhausted));
        arena.free(1);
        arena.free(0);
        assert_eq!(arena.alloc(), Ok(0));
        assert_eq!(arena.alloc(), Ok(1));
        assert_eq!(arena.alloc(), Err(ArenaError::Exhausted));
        // A corrupt free list is an error, not a wild slot.
        heap.header[word!(DataHeader, free_head)].store(77, Relaxed);
        assert_eq!(arena.alloc(), Err(ArenaError::BadFreeLink { slot: 77 }));
        arena.reset();
        assert_eq!(arena.alloc(), Ok(0));
    }

    #[test]
    fn the_one_sieve_runs_on_mapped_slots() {
        let heap = Heap::new(3, 8, 8);
        let mut slots = ShmSlots::new(heap.arena());
        for slot in 0..3 {
            policy::insert(&mut slots, slot).unwrap();
        }
        policy::touch(&slots, 0).unwrap();
        assert_eq!(policy::evict(&mut slots).unwrap(), 1);
        assert_eq!(policy::order_from_head(&slots), vec![2, 0]);
        policy::validate(&slots).unwrap();
        // Corrupt a link: validate and the operations report it.
        heap.header[word!(DataHeader, sieve_head)].store(u64::MAX, Relaxed);
        assert!(policy::validate(&slots).is_err());
        assert!(policy::insert(&mut slots, 1).is_err());
    }
}
