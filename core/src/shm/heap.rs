//! The extent heap of a data file (format 4): key and value bytes of every entry live in one
//! extent of a size class, taken from the class's free list or from a bump pointer, so an
//! entry pays for the bytes it stores and not for the limits (docs/ARCHITECTURE.md
//! "Extent heap" says why this design and how it behaves under fragmentation).
//!
//! * Classes: 16-byte granules up to 256 B (16 classes), then 8 classes per doubling
//!   (each at most 1.125x the one below), [`CLASS_COUNT`] in all.
//! * An extent is named by one word, `(class + 1) << 40 | granule` (0 = no extent); a free
//!   extent's first word links to the next free extent of its class (same encoding, 0 ends).
//! * The bump pointer, the bytes on free lists and the bytes made real by `fallocate` are
//!   writer-block words of the header, changed only under the writer lock inside an odd
//!   sequence, so a writer killed anywhere in here leaves an odd sequence and the next
//!   writer resets the whole heap (INV-S4): no allocator state is ever repaired in place.
//! * Everything read back from the file (heads, links, extent words, the bump pointer) is
//!   hostile (INV-7): it is range-checked against the trusted geometry before use, and a
//!   value that fails is [`Alloc::Corrupt`], never a panic, a loop or an out-of-range access.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::layout::{word, DataHeader, WORD_BYTES};

/// Allocation unit of the heap.
pub const GRANULE_BYTES: u64 = 16;
/// Size classes (the last is 256 B x 2^30 x 2 = 512 GiB, past any entry the limits allow).
pub const CLASS_COUNT: usize = 256;
/// Classes of 16-byte steps below this size, geometric ones above it.
const SMALL_LIMIT_BYTES: u64 = 256;
const SMALL_CLASSES: usize = (SMALL_LIMIT_BYTES / GRANULE_BYTES) as usize;
/// Classes per doubling above [`SMALL_LIMIT_BYTES`].
const STEPS_PER_DOUBLING: usize = 8;
const GRANULE_BITS: u32 = 40;
const GRANULE_MASK: u64 = (1 << GRANULE_BITS) - 1;
/// Compaction runs only when it wins back at least this fraction of the heap, so its cost
/// (moving every live extent) is paid at most once per `heap/16` bytes allocated.
const COMPACT_FRACTION: u64 = 16;

/// Bytes of size class `class` (the hit path reads it from [`CLASS_TABLE`]).
#[inline]
pub fn class_bytes(class: usize) -> u64 {
    CLASS_TABLE.get(class).copied().unwrap_or(u64::MAX)
}

/// [`class_bytes_of`] of every class, computed at compile time.
static CLASS_TABLE: [u64; CLASS_COUNT] = {
    let mut table = [0u64; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        table[class] = class_bytes_of(class);
        class += 1;
    }
    table
};

const fn class_bytes_of(class: usize) -> u64 {
    if class < SMALL_CLASSES {
        return (class as u64 + 1) * GRANULE_BYTES;
    }
    let above = class - SMALL_CLASSES;
    let base = SMALL_LIMIT_BYTES << (above / STEPS_PER_DOUBLING);
    let step = base / STEPS_PER_DOUBLING as u64;
    base + (above % STEPS_PER_DOUBLING + 1) as u64 * step
}

/// The smallest class holding `bytes`, `None` past the largest.
pub fn class_of(bytes: u64) -> Option<usize> {
    if bytes <= SMALL_LIMIT_BYTES {
        return Some((bytes.max(1).div_ceil(GRANULE_BYTES) - 1) as usize);
    }
    let x = bytes - 1;
    let top_bit = 63 - x.leading_zeros() as usize; // >= 8
    let doubling = top_bit - SMALL_LIMIT_BYTES.trailing_zeros() as usize;
    let base = SMALL_LIMIT_BYTES << doubling;
    let step = base / STEPS_PER_DOUBLING as u64;
    let class = SMALL_CLASSES + doubling * STEPS_PER_DOUBLING + ((x - base) / step) as usize;
    (class < CLASS_COUNT).then_some(class)
}

/// Bytes an entry of these lengths occupies in its extent: key words then value words.
pub fn entry_bytes(key_len: u32, value_len: u32) -> u64 {
    let word = WORD_BYTES as u64;
    u64::from(key_len).div_ceil(word) * word + u64::from(value_len).div_ceil(word) * word
}

/// An extent's class and first granule, decoded from its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub class: usize,
    pub granule: u64,
}

impl Extent {
    pub fn encode(self) -> u64 {
        (self.class as u64 + 1) << GRANULE_BITS | self.granule
    }

    /// `None` for 0 (no extent) and for class numbers past the table.
    #[inline(always)]
    pub fn decode(word: u64) -> Option<Extent> {
        let class = usize::try_from(word >> GRANULE_BITS).ok()?.checked_sub(1)?;
        (class < CLASS_COUNT).then_some(Extent {
            class,
            granule: word & GRANULE_MASK,
        })
    }

    pub fn bytes(self) -> u64 {
        class_bytes(self.class)
    }

    pub fn start_byte(self) -> u64 {
        self.granule * GRANULE_BYTES
    }

    /// One past its last byte (classes of a decoded word are in the table: no overflow).
    pub fn end_byte(self) -> u64 {
        self.start_byte().saturating_add(self.bytes())
    }

    fn first_word(self) -> usize {
        (self.start_byte() / WORD_BYTES as u64) as usize
    }

    fn word_count(self) -> usize {
        (self.bytes() / WORD_BYTES as u64) as usize
    }
}

/// What [`Heap::alloc`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alloc {
    /// This extent (its word) is now the caller's.
    Got(u64),
    /// The bump pointer fits the budget but the file must first be made real up to this many
    /// heap bytes ([`Heap::set_committed`] after a successful `fallocate`).
    Grow { committed_bytes: u64 },
    /// Enough bytes are free, but only scattered: compact, then ask again.
    Compact,
    /// The budget is used up by live entries: evict one (SIEVE), then ask again.
    Full,
    /// The entry is larger than the whole heap budget: never storable.
    TooBig,
    /// A head or link of a free list names bytes outside the used heap.
    Corrupt,
}

/// The heap section and the header words that describe it.
#[derive(Debug, Clone, Copy)]
pub struct Heap<'a> {
    header: &'a [AtomicU64],
    heads: &'a [AtomicU64],
    words: &'a [AtomicU64],
}

impl<'a> Heap<'a> {
    /// `heads` are the [`CLASS_COUNT`] free-list heads, `words` the whole mapped heap (its
    /// length is the budget).
    pub fn new(header: &'a [AtomicU64], heads: &'a [AtomicU64], words: &'a [AtomicU64]) -> Self {
        Heap {
            header,
            heads,
            words,
        }
    }

    fn get(&self, index: usize) -> u64 {
        self.header.get(index).map_or(0, |w| w.load(Relaxed))
    }

    fn set(&self, index: usize, value: u64) {
        if let Some(w) = self.header.get(index) {
            w.store(value, Relaxed);
        }
    }

    /// Heap bytes the budget allows.
    pub fn budget_bytes(&self) -> u64 {
        (self.words.len() * WORD_BYTES) as u64
    }

    /// Bytes below the bump pointer (used at least once since the last reset), clamped.
    pub fn bump_bytes(&self) -> u64 {
        self.get(word!(DataHeader, heap_bump))
            .min(self.budget_bytes())
    }

    /// Bytes on the free lists.
    pub fn free_bytes(&self) -> u64 {
        self.get(word!(DataHeader, heap_free))
    }

    /// Heap bytes made real (allocated in the file), as recorded by the writers.
    pub fn committed_bytes(&self) -> u64 {
        self.get(word!(DataHeader, heap_committed))
    }

    pub fn set_committed(&self, bytes: u64) {
        self.set(word!(DataHeader, heap_committed), bytes);
    }

    pub fn compactions(&self) -> u64 {
        self.get(word!(DataHeader, heap_compactions))
    }

    /// The words of an extent, if it lies inside the mapped heap (hostile word: checked).
    #[inline(always)]
    pub fn extent_words(&self, extent_word: u64) -> Option<&'a [AtomicU64]> {
        let extent = Extent::decode(extent_word)?;
        let start = extent.first_word();
        self.words
            .get(start..start.checked_add(extent.word_count())?)
    }

    /// An extent for `bytes` of entry, or what the caller must do first.
    pub fn alloc(&self, bytes: u64) -> Alloc {
        let Some(class) = class_of(bytes) else {
            return Alloc::TooBig;
        };
        let need = class_bytes(class);
        if need > self.budget_bytes() {
            return Alloc::TooBig;
        }
        let bump = self.get(word!(DataHeader, heap_bump));
        if bump > self.budget_bytes() || bump % GRANULE_BYTES != 0 {
            return Alloc::Corrupt;
        }
        if let Some(head) = self.heads.get(class) {
            let head_word = head.load(Relaxed);
            if head_word != 0 {
                let Some(extent) = self.used_extent_of(head_word, class, bump) else {
                    return Alloc::Corrupt;
                };
                let next = self
                    .words
                    .get(extent.first_word())
                    .map_or(0, |w| w.load(Relaxed));
                if next != 0 && self.used_extent_of(next, class, bump).is_none() {
                    return Alloc::Corrupt;
                }
                head.store(next, Relaxed);
                #[cfg(unix)]
                super::failpoint::hit(super::failpoint::Point::MidAlloc);
                self.set(
                    word!(DataHeader, heap_free),
                    self.free_bytes().saturating_sub(need),
                );
                return Alloc::Got(head_word);
            }
        }
        let end = bump + need;
        if end <= self.budget_bytes() {
            if end > self.committed_bytes() {
                return Alloc::Grow {
                    committed_bytes: end,
                };
            }
            #[cfg(unix)]
            super::failpoint::hit(super::failpoint::Point::MidAlloc);
            self.set(word!(DataHeader, heap_bump), end);
            return Alloc::Got(
                Extent {
                    class,
                    granule: bump / GRANULE_BYTES,
                }
                .encode(),
            );
        }
        // (`heap_free` is read back from the file: a hostile value must not overflow.)
        let unused = (self.budget_bytes() - bump).saturating_add(self.free_bytes());
        if unused >= need && unused >= self.budget_bytes() / COMPACT_FRACTION {
            Alloc::Compact
        } else {
            Alloc::Full
        }
    }

    /// Whether `word` is an extent that can hold `bytes` of entry exactly as [`Heap::alloc`]
    /// would size it (its class) and lies inside the used heap: an evicted entry's extent
    /// then serves the next entry as it is (hostile word: checked like a free-list head).
    pub fn reusable_for(&self, word: u64, bytes: u64) -> bool {
        let bump = self.bump_bytes();
        class_of(bytes).is_some_and(|class| self.used_extent_of(word, class, bump).is_some())
    }

    /// `word` as an extent of `class` inside the used heap, or `None`.
    fn used_extent_of(&self, word: u64, class: usize, bump: u64) -> Option<Extent> {
        Extent::decode(word).filter(|e| e.class == class && e.end_byte() <= bump)
    }

    /// Returns an extent (of an entry just unlinked) to its class's free list.
    pub fn free(&self, extent_word: u64) {
        let Some(extent) = Extent::decode(extent_word) else {
            return;
        };
        let (Some(head), Some(first)) = (
            self.heads.get(extent.class),
            self.words.get(extent.first_word()),
        ) else {
            return;
        };
        first.store(head.load(Relaxed), Relaxed);
        head.store(extent_word, Relaxed);
        self.set(
            word!(DataHeader, heap_free),
            self.free_bytes().saturating_add(extent.bytes()),
        );
    }

    /// Forgets every extent (with the slots' own reset): empty lists, bump at 0. The bytes
    /// made real stay real (`heap_committed` is kept: the file does not shrink).
    pub fn reset(&self) {
        for head in self.heads {
            head.store(0, Relaxed);
        }
        self.set(word!(DataHeader, heap_bump), 0);
        self.set(word!(DataHeader, heap_free), 0);
    }

    /// Slides the live extents `live` (slot, extent word) down to the start of the heap in
    /// address order and empties the free lists; returns each slot's new extent word, or
    /// `None` (nothing moved) if the extents overlap or leave the used heap (corruption:
    /// the caller resets). Runs inside a write section: readers retry (INV-S3).
    pub fn compact(&self, live: &[(u32, u64)]) -> Option<Vec<(u32, u64)>> {
        let bump = self.bump_bytes();
        let mut extents = Vec::with_capacity(live.len());
        for &(slot, word) in live.iter() {
            let extent = Extent::decode(word).filter(|e| e.end_byte() <= bump)?;
            extents.push((extent, slot));
        }
        extents.sort_unstable_by_key(|(e, _)| e.granule);
        let mut end = 0;
        for (extent, _) in &extents {
            if extent.start_byte() < end {
                return None;
            }
            end = extent.end_byte();
        }
        let mut cursor = 0u64;
        let mut moved = Vec::with_capacity(extents.len());
        for (index, (extent, slot)) in extents.iter().enumerate() {
            let to = Extent {
                class: extent.class,
                granule: cursor / GRANULE_BYTES,
            };
            if to.granule != extent.granule {
                let (from, dest) = (extent.first_word(), to.first_word());
                // Ascending copy: `dest < from`, so no word is overwritten before it is read.
                for i in 0..extent.word_count() {
                    if let (Some(src), Some(dst)) =
                        (self.words.get(from + i), self.words.get(dest + i))
                    {
                        dst.store(src.load(Relaxed), Relaxed);
                    }
                }
            }
            if index == extents.len() / 2 {
                // (The failpoints, like the store, exist on unix only.)
                #[cfg(unix)]
                super::failpoint::hit(super::failpoint::Point::MidCompact);
            }
            cursor += extent.bytes();
            moved.push((*slot, to.encode()));
        }
        for head in self.heads {
            head.store(0, Relaxed);
        }
        self.set(word!(DataHeader, heap_bump), cursor);
        self.set(word!(DataHeader, heap_free), 0);
        self.set(
            word!(DataHeader, heap_compactions),
            self.compactions().saturating_add(1),
        );
        Some(moved)
    }
}

#[cfg(test)]
mod tests;
