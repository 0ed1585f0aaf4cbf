//! Byte layout of the two shared files. Every structure is `repr(C)` and made only of
//! `AtomicU64` words, so the mapping is viewed as `&[AtomicU64]` and a field is addressed by
//! its word index `offset_of!(Struct, field) / 8` (never a literal offset). Sizes are pinned
//! by compile-time asserts.
//!
//! # Data file (`<name>.data`)
//!
//! | bytes                       | content                                                  |
//! |-----------------------------|----------------------------------------------------------|
//! | `0 .. 512`                  | [`DataHeader`]: parameter block (256 B), writer block (128 B), state line (128 B: epoch, retired) |
//! | `stripes_offset ..`         | `stripe_count` x [`CounterStripe`] (128 B each)           |
//! | `table_offset ..`           | `bucket_count` x u64 buckets (see [`crate::shm::table`])  |
//! | `arena_offset ..`           | `capacity` slots of `slot_bytes` each                    |
//!
//! A slot is a [`SlotMeta`] (56 B) followed by `key_words` and `value_words` u64 words holding
//! the key and value bytes packed little-endian (the unused tail of the last word is zero).
//!
//! # Lock file (`<name>.lock`)
//!
//! [`LockFile`], 1,152 B: identity line, then the seqlock state word (writer-lock owner and
//! sequence in one word, then the count of writers asleep on it) and the takeover counter on
//! separate 128-byte lines, then the
//! mapper table (which processes use these files), then the single-flight marks (which
//! process computes which key: `flight.rs`).
//!
//! All numbers are native-endian; the header's `endian` word (written as
//! [`ENDIAN_MARK`]) makes a file from a machine of the other endianness a mismatch.
#![forbid(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU64;

use super::heap::{class_bytes, class_of, entry_bytes, CLASS_COUNT, GRANULE_BYTES};
use crate::error::{Error, Result};

pub const WORD_BYTES: usize = 8;

/// "WARPCDAT" read as a little-endian u64.
pub const DATA_MAGIC: u64 = u64::from_le_bytes(*b"WARPCDAT");
/// "WARPCLCK" read as a little-endian u64.
pub const LOCK_MAGIC: u64 = u64::from_le_bytes(*b"WARPCLCK");
/// Reads back as this value only on a machine of the writer's endianness.
pub const ENDIAN_MARK: u64 = 0x0102_0304_0506_0708;
/// Version of this layout. Bump on any change of the structures below or of their meaning.
/// 3: the lock file holds single-flight marks. 4: entries live in the extent heap
/// (`heap.rs`), slots hold only metadata, the file grows with `fallocate`. 5: each slot has
/// its own sequence word (`slot_seq.rs`) where the free-list link was; a free slot's link
/// lives in its (then unused) SIEVE links word.
pub const FORMAT_VERSION: u64 = 5;
/// Counter stripes (one per CPU modulo this): hits from different CPUs touch different lines.
pub const STRIPE_COUNT: u64 = 32;
/// Largest capacity: the table needs `2 * capacity` buckets addressable by 32-bit hashes.
pub const MAX_CAPACITY: u32 = 1 << 31;
/// Sanity bound on one data file (1 TiB): anything larger is a parameter error.
pub const MAX_REGION_BYTES: u64 = 1 << 40;
/// Alignment of the stripes, table and arena (a cache line pair).
pub const SECTION_ALIGN: u64 = 128;

/// Data file header.
#[repr(C)]
pub struct DataHeader {
    // --- parameter block: written once before the file is published, then only read ---
    pub magic: AtomicU64,
    pub endian: AtomicU64,
    pub format_version: AtomicU64,
    /// [`crate::codec::CODEC_VERSION`].
    pub codec_version: AtomicU64,
    /// Fingerprint of the key hash function as compiled into the creating process.
    pub hash_algo_id: AtomicU64,
    pub capacity: AtomicU64,
    pub key_bytes_max: AtomicU64,
    pub value_bytes_max: AtomicU64,
    pub slot_bytes: AtomicU64,
    pub bucket_count: AtomicU64,
    pub stripe_count: AtomicU64,
    pub stripes_offset: AtomicU64,
    pub table_offset: AtomicU64,
    pub arena_offset: AtomicU64,
    pub region_bytes: AtomicU64,
    /// Random at creation: tells two files with the same parameters apart.
    pub creation_nonce: AtomicU64,
    /// The `nonce` of the lock file this data file is paired with (INV-S2).
    pub lock_nonce: AtomicU64,
    /// Byte offset of the free-list heads (`heap.rs`) and of the heap.
    pub heads_offset: AtomicU64,
    pub heap_offset: AtomicU64,
    /// The byte budget (`max_bytes`): the file never grows past it.
    pub budget_bytes: AtomicU64,
    pub _reserved0: [AtomicU64; 12],
    // --- writer block: changed only under the writer lock, inside an odd sequence ---
    pub sieve_head: AtomicU64,
    pub sieve_tail: AtomicU64,
    pub sieve_hand: AtomicU64,
    /// Number of entries (= current size).
    pub sieve_len: AtomicU64,
    /// Head of the free-slot list (slots freed by removal), `NO_SLOT` if empty.
    pub free_head: AtomicU64,
    /// Slots `high_water..capacity` have never been used since the last reset.
    pub high_water: AtomicU64,
    /// Number of times the table was reset after a crash or corruption (diagnostics).
    pub resets: AtomicU64,
    /// Heap bytes below the bump pointer, on the free lists, and made real in the file
    /// (`heap.rs`); compactions run (diagnostics).
    pub heap_bump: AtomicU64,
    pub heap_free: AtomicU64,
    pub heap_committed: AtomicU64,
    pub heap_compactions: AtomicU64,
    pub _reserved1: [AtomicU64; 5],
    // --- state line: loaded by every read, written only by resets, takeovers, retirement ---
    /// Table epoch: changed (under the writer lock) by every reset, clear and lock takeover,
    /// so entries written before it never validate again (INV-S8).
    pub epoch: AtomicU64,
    /// Nonzero once this data file (and the lock file paired with it) was replaced or removed
    /// by a warp_cache process: every process using it moves to the files now at its names.
    pub retired: AtomicU64,
    pub _reserved2: [AtomicU64; 14],
}

/// Per-CPU counters, one 128-byte line pair each.
#[repr(C)]
pub struct CounterStripe {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub oversize_skips: AtomicU64,
    /// Hits whose value bytes then failed to decode (recomputed): reported as misses.
    pub decode_failures: AtomicU64,
    /// Inserts skipped because the file could not grow (the filesystem is full).
    pub space_skips: AtomicU64,
    /// Lock-free reads redone or held up by a write in progress (a failed validation, or an
    /// odd sequence at the start: each wait counts once). Zero in files of earlier builds of
    /// this format (it was padding): a count, never trusted for anything else.
    pub read_retries: AtomicU64,
    /// Writer-lock acquisitions that found the lock held by another writer and waited.
    pub lock_waits: AtomicU64,
    /// Inserts skipped because the writer lock stayed held (by a live process that made no
    /// progress for the insert's patience, or for its whole wait). Zero in files of earlier
    /// builds of this format (it was padding).
    pub lock_skips: AtomicU64,
    pub _pad: [AtomicU64; 8],
}

/// Per-slot metadata; key and value words follow it.
#[repr(C)]
pub struct SlotMeta {
    /// SIEVE links: prev (towards the head) in the low 32 bits, next in the high 32 bits.
    /// While the slot is free: the next slot on the free list (`NO_SLOT` at its end).
    pub links: AtomicU64,
    /// SIEVE visited bit (0 or 1). Written by lock-free readers.
    pub visited: AtomicU64,
    /// Key length in the low 32 bits, value length in the high 32 bits.
    pub lens: AtomicU64,
    /// Full 64-bit key hash.
    pub hash: AtomicU64,
    /// `CLOCK_MONOTONIC` stamp of the last store (INV-5).
    pub stored_at_ns: AtomicU64,
    /// The slot's sequence (`slot_seq.rs`): odd while a writer changes what a lock-free
    /// reader copies from this slot, moved on by every such change (INV-S3).
    pub seq: AtomicU64,
    /// [`crate::hash::entry_check`] of the entry under the epoch its writer locked in
    /// (INV-S8); 0 in a never-written slot.
    pub check: AtomicU64,
    /// The heap extent holding the key and value words (`heap::Extent`), 0 = none.
    pub extent: AtomicU64,
}

/// Lock file.
#[repr(C)]
pub struct LockFile {
    pub magic: AtomicU64,
    pub endian: AtomicU64,
    pub format_version: AtomicU64,
    /// Random at creation; data files record it (INV-S2).
    pub nonce: AtomicU64,
    pub _pad0: [AtomicU64; 12],
    /// Seqlock state (`seqlock.rs`): the writer-lock owner's liveness id (`liveness.rs`; 0 =
    /// free) in the high 32 bits, the sequence (odd while a writer is changing the data file)
    /// in the low 32 bits.
    pub state: AtomicU64,
    /// Writers sleeping on the state word's owner half (`futex.rs`): an unlock wakes one only
    /// when this is nonzero. A waiter killed while asleep leaves it high, which costs later
    /// unlocks a wake call each, never a missed wake. Zero in files of earlier builds of
    /// this format (it was padding): their writers do not wake, and sleepers time out.
    pub lock_waiters: AtomicU64,
    pub _pad1: [AtomicU64; 14],
    /// Number of times a waiter took the lock over from a dead owner (diagnostics).
    pub takeovers: AtomicU64,
    pub _pad2: [AtomicU64; 15],
    /// Liveness ids of the processes that have these files mapped (0 = free entry), so that a
    /// cleaner knows whether any live process still uses them.
    pub mappers: [AtomicU64; MAPPER_SLOTS],
    /// Nonzero once a process found every mapper entry taken by a live process: the files are
    /// then never removed as unused.
    pub mappers_overflow: AtomicU64,
    /// Single-flight marks (`flight.rs`): 0 = free, else the computing process's liveness id
    /// in the high 32 bits and a tag of the key hash in the low 32 bits.
    pub flights: [AtomicU64; FLIGHT_SLOTS],
}

/// Mapper entries in a lock file.
pub const MAPPER_SLOTS: usize = 31;
/// Single-flight marks in a lock file (at most this many keys are marked at once; a key that
/// finds no free mark is computed unmarked).
pub const FLIGHT_SLOTS: usize = 64;

const _: () = assert!(size_of::<AtomicU64>() == WORD_BYTES);
const _: () = assert!(size_of::<DataHeader>() == 512);
const _: () = assert!(offset_of!(DataHeader, epoch) == 384);
const _: () = assert!(offset_of!(DataHeader, sieve_head) == 256);
const _: () = assert!(size_of::<CounterStripe>() == SECTION_ALIGN as usize);
const _: () = assert!(size_of::<SlotMeta>() == 64);
const _: () = assert!(size_of::<LockFile>() == 1152);
const _: () = assert!(offset_of!(LockFile, flights) == 640);
const _: () = assert!(offset_of!(LockFile, mappers) == 384);
const _: () = assert!(offset_of!(LockFile, state) == 128);
const _: () = assert!(offset_of!(LockFile, takeovers) == 256);
const _: () = assert!(size_of::<DataHeader>() as u64 % SECTION_ALIGN == 0);

/// Word index of a field: `word!(Struct, field)`.
macro_rules! word {
    ($ty:ty, $field:ident) => {
        std::mem::offset_of!($ty, $field) / $crate::shm::layout::WORD_BYTES
    };
}
pub(crate) use word;

pub const HEADER_WORDS: usize = size_of::<DataHeader>() / WORD_BYTES;
pub const STRIPE_WORDS: usize = size_of::<CounterStripe>() / WORD_BYTES;
pub const META_WORDS: usize = size_of::<SlotMeta>() / WORD_BYTES;
pub const LOCK_FILE_BYTES: u64 = size_of::<LockFile>() as u64;
pub const LOCK_FILE_WORDS: usize = size_of::<LockFile>() / WORD_BYTES;

/// Where everything is in a data file of given parameters. Computed from the *caller's*
/// parameters (trusted) and compared with the header at open; the hot paths use only this,
/// never offsets read back from the mapping (INV-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u32,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub key_words: usize,
    pub value_words: usize,
    /// Words per slot: the metadata only (key and value words live in the heap).
    pub slot_words: usize,
    pub bucket_count: usize,
    pub stripe_count: usize,
    /// Word indexes of the sections.
    pub stripes_word: usize,
    pub heads_word: usize,
    pub table_word: usize,
    pub arena_word: usize,
    pub heap_word: usize,
    /// Words of heap the budget allows.
    pub heap_words: usize,
    /// Bytes before the heap: made real when the file is created.
    pub fixed_bytes: u64,
    /// The budget (`max_bytes`): bytes mapped, and the most the file ever grows to.
    pub region_bytes: u64,
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v / align * align)
}

/// Heap bytes the default budget gives each entry beyond its largest class: 1/8, so that a
/// count-bound cache of largest entries always finds the free space compaction needs
/// (`heap.rs`), and SIEVE evicts by count only (the oracle gates).
const DEFAULT_BUDGET_SLACK_EIGHTHS: u64 = 9;

impl Geometry {
    /// Computes the layout with checked u64 arithmetic; parameters the layout cannot address
    /// give [`crate::ErrorKind::InvalidArgument`] naming what to change. `max_bytes` `None`
    /// is the default budget: every entry at both limits, plus 1/8 (clamped to
    /// [`MAX_REGION_BYTES`]).
    pub fn new(
        capacity: u32,
        key_bytes_max: u32,
        value_bytes_max: u32,
        max_bytes: Option<u64>,
    ) -> Result<Geometry> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::invalid_argument(format!(
                "max_size must be between 1 and {MAX_CAPACITY} for the shared backend, got {capacity}"
            )));
        }
        if key_bytes_max == 0 {
            return Err(Error::invalid_argument(
                "max_key_size must be a positive int, got 0",
            ));
        }
        if value_bytes_max == 0 {
            return Err(Error::invalid_argument(
                "max_value_size must be a positive int, got 0",
            ));
        }
        let too_big = || {
            Error::invalid_argument(format!(
                "shared cache of max_size={capacity} needs more than {MAX_REGION_BYTES} bytes \
                 for its table: lower max_size"
            ))
        };
        let word = WORD_BYTES as u64;
        let key_words = u64::from(key_bytes_max).div_ceil(word);
        let value_words = u64::from(value_bytes_max).div_ceil(word);
        let slot_words = META_WORDS as u64;
        let bucket_count = (u64::from(capacity) * 2).next_power_of_two().max(8);
        let stripes_offset = size_of::<DataHeader>() as u64;
        let heads_offset = stripes_offset + STRIPE_COUNT * size_of::<CounterStripe>() as u64;
        let table_offset = align_up(heads_offset + CLASS_COUNT as u64 * word, SECTION_ALIGN)
            .ok_or_else(too_big)?;
        let arena_offset = bucket_count
            .checked_mul(word)
            .and_then(|bytes| bytes.checked_add(table_offset))
            .and_then(|end| align_up(end, SECTION_ALIGN))
            .ok_or_else(too_big)?;
        let heap_offset = (slot_words * word)
            .checked_mul(u64::from(capacity))
            .and_then(|arena| arena.checked_add(arena_offset))
            .and_then(|end| align_up(end, SECTION_ALIGN))
            .ok_or_else(too_big)?;
        if heap_offset > MAX_REGION_BYTES {
            return Err(too_big());
        }
        let largest_entry = class_of(entry_bytes(key_bytes_max, value_bytes_max))
            .map(class_bytes)
            .ok_or_else(too_big)?;
        let region_bytes = match max_bytes {
            Some(budget) => {
                let least = heap_offset + class_bytes(0);
                if budget < least || budget > MAX_REGION_BYTES {
                    return Err(Error::invalid_argument(format!(
                        "max_bytes must be between {least} (the header and table of \
                         max_size={capacity}) and {MAX_REGION_BYTES}, got {budget}"
                    )));
                }
                budget / GRANULE_BYTES * GRANULE_BYTES
            }
            None => {
                let per_entry = (largest_entry / 8 * DEFAULT_BUDGET_SLACK_EIGHTHS)
                    .next_multiple_of(GRANULE_BYTES);
                per_entry
                    .checked_mul(u64::from(capacity))
                    .and_then(|heap| heap.checked_add(heap_offset))
                    .map_or(MAX_REGION_BYTES, |total| total.min(MAX_REGION_BYTES))
            }
        };
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| too_big());
        Ok(Geometry {
            capacity,
            key_bytes_max,
            value_bytes_max,
            key_words: to_usize(key_words)?,
            value_words: to_usize(value_words)?,
            slot_words: to_usize(slot_words)?,
            bucket_count: to_usize(bucket_count)?,
            stripe_count: STRIPE_COUNT as usize,
            stripes_word: to_usize(stripes_offset / word)?,
            heads_word: to_usize(heads_offset / word)?,
            table_word: to_usize(table_offset / word)?,
            arena_word: to_usize(arena_offset / word)?,
            heap_word: to_usize(heap_offset / word)?,
            heap_words: to_usize((region_bytes - heap_offset) / word)?,
            fixed_bytes: heap_offset,
            region_bytes,
        })
    }

    pub fn slot_bytes(&self) -> u64 {
        (self.slot_words * WORD_BYTES) as u64
    }

    pub fn region_words(&self) -> usize {
        // `region_bytes` fit a usize when the geometry was built.
        (self.region_bytes / WORD_BYTES as u64) as usize
    }

    /// The header parameter block this geometry writes and expects: (word index, value).
    pub fn parameter_words(
        &self,
        hash_algo_id: u64,
        creation_nonce: u64,
        lock_nonce: u64,
    ) -> [(usize, u64); 20] {
        [
            (word!(DataHeader, magic), DATA_MAGIC),
            (word!(DataHeader, endian), ENDIAN_MARK),
            (word!(DataHeader, format_version), FORMAT_VERSION),
            (
                word!(DataHeader, codec_version),
                u64::from(crate::codec::CODEC_VERSION),
            ),
            (word!(DataHeader, hash_algo_id), hash_algo_id),
            (word!(DataHeader, capacity), u64::from(self.capacity)),
            (
                word!(DataHeader, key_bytes_max),
                u64::from(self.key_bytes_max),
            ),
            (
                word!(DataHeader, value_bytes_max),
                u64::from(self.value_bytes_max),
            ),
            (word!(DataHeader, slot_bytes), self.slot_bytes()),
            (word!(DataHeader, bucket_count), self.bucket_count as u64),
            (word!(DataHeader, stripe_count), self.stripe_count as u64),
            (
                word!(DataHeader, stripes_offset),
                (self.stripes_word * WORD_BYTES) as u64,
            ),
            (
                word!(DataHeader, table_offset),
                (self.table_word * WORD_BYTES) as u64,
            ),
            (
                word!(DataHeader, arena_offset),
                (self.arena_word * WORD_BYTES) as u64,
            ),
            (word!(DataHeader, region_bytes), self.region_bytes),
            (word!(DataHeader, creation_nonce), creation_nonce),
            (word!(DataHeader, lock_nonce), lock_nonce),
            (
                word!(DataHeader, heads_offset),
                (self.heads_word * WORD_BYTES) as u64,
            ),
            (
                word!(DataHeader, heap_offset),
                (self.heap_word * WORD_BYTES) as u64,
            ),
            (word!(DataHeader, budget_bytes), self.region_bytes),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_words_are_where_the_docs_say() {
        assert_eq!(word!(DataHeader, magic), 0);
        assert_eq!(word!(DataHeader, lock_nonce), 16);
        assert_eq!(word!(DataHeader, sieve_head), 32);
        assert_eq!(word!(DataHeader, resets), 38);
        assert_eq!(word!(SlotMeta, seq), 5);
        assert_eq!(word!(SlotMeta, check), 6);
        assert_eq!(word!(DataHeader, epoch), 48);
        assert_eq!(word!(DataHeader, retired), 49);
        assert_eq!(word!(LockFile, mappers), 48);
        assert_eq!(word!(LockFile, state), 16);
        assert_eq!(word!(LockFile, takeovers), 32);
        assert_eq!(word!(LockFile, flights), 80);
        assert_eq!(HEADER_WORDS, 64);
        assert_eq!(META_WORDS, 8);
        assert_eq!(word!(SlotMeta, extent), 7);
        assert_eq!(word!(DataHeader, heap_bump), 39);
        assert_eq!(word!(DataHeader, budget_bytes), 19);
    }

    #[test]
    fn default_geometry() {
        let g = Geometry::new(128, 512, 4096, None).unwrap();
        assert_eq!(g.slot_bytes(), 64);
        assert_eq!(g.bucket_count, 256);
        assert_eq!(g.stripes_word * 8, 512);
        assert_eq!(g.heads_word * 8, 512 + 32 * 128);
        assert_eq!(g.table_word * 8, 512 + 32 * 128 + 256 * 8);
        assert_eq!(g.arena_word * 8, 512 + 32 * 128 + 256 * 8 + 256 * 8);
        assert_eq!(g.fixed_bytes, g.arena_word as u64 * 8 + 128 * 64);
        assert_eq!(g.heap_word as u64 * 8, g.fixed_bytes);
        // Default budget: each entry at both limits (4,608 B, a class of its own), + 1/8.
        assert_eq!(g.region_bytes, g.fixed_bytes + 128 * 4608 / 8 * 9);
        assert_eq!(g.heap_words as u64 * 8, g.region_bytes - g.fixed_bytes);
        assert_eq!(g.key_words, 64);
        // Odd limits round up to whole words.
        let g = Geometry::new(1, 9, 1, None).unwrap();
        assert_eq!((g.key_words, g.value_words, g.bucket_count), (2, 1, 8));
        // An explicit budget is kept (rounded down to a granule).
        let g = Geometry::new(128, 512, 4096, Some(1 << 20)).unwrap();
        assert_eq!(g.region_bytes, 1 << 20);
        // A huge default is clamped, not refused.
        let g = Geometry::new(1 << 20, 512, u32::MAX, None).unwrap();
        assert_eq!(g.region_bytes, MAX_REGION_BYTES);
    }

    #[test]
    fn unaddressable_parameters_are_invalid_arguments() {
        use crate::ErrorKind::InvalidArgument;
        let fixed_128 = Geometry::new(128, 512, 4096, None).unwrap().fixed_bytes;
        for (capacity, key, value, budget) in [
            (0, 512, 4096, None),
            (MAX_CAPACITY + 1, 8, 8, None),
            (1, 0, 8, None),
            (1, 8, 0, None),
            (128, 512, 4096, Some(fixed_128)),
            (128, 512, 4096, Some(MAX_REGION_BYTES + 1)),
            (128, 512, 4096, Some(0)),
        ] {
            let err = Geometry::new(capacity, key, value, budget).unwrap_err();
            assert_eq!(err.kind, InvalidArgument, "{capacity} {key} {value}");
            assert!(!err.message.is_empty());
        }
        assert!(Geometry::new(MAX_CAPACITY, 8, 8, None).is_ok());
        assert!(Geometry::new(128, 512, 4096, Some(fixed_128 + 16)).is_ok());
    }
}
