//! [`ShmStore`]: the cross-process cache over the two shared files (or, for tests and fuzzing,
//! over heap memory laid out exactly the same way).
//!
//! # Operations
//!
//! * [`ShmStore::get`]: lock-free. Hash the key bytes (fixed-seed ahash), probe the table,
//!   compare key words, copy the value words out, validate with the seqlock (INV-S3). A fresh
//!   hit sets the SIEVE visited bit (only if clear: no write on repeated hits) and counts a hit
//!   on the caller's CPU stripe. An expired entry (by *this process's* ttl, INV-5) is removed
//!   under the lock if the lock is free, so a single process replays SIEVE exactly.
//! * [`ShmStore::insert`]: takes the writer lock (bounded wait; a dead owner is taken over),
//!   then inside one write section updates an existing key in place (position and visited bit
//!   kept) or evicts with the one SIEVE and writes a new entry.
//! * [`ShmStore::clear`]: under the lock, empties the table and zeroes every counter stripe,
//!   for every process.
//!
//! # Failure rules
//!
//! * A structural problem found under the lock (policy error, table or allocator
//!   inconsistency) or a write section left odd by a crashed writer resets the table and
//!   arena (INV-S4): the cache loses entries, never returns a torn or wrong value.
//! * A reader that sees an odd sequence for long checks the writer: a dead one is recovered
//!   from, a live one makes the read a miss (bounded time; a stalled sequence is remembered so
//!   later reads miss at once). A writer that cannot get the lock from a live owner within
//!   [`LOCK_WAIT`] skips caching ([`SkipReason::LockBusy`]).
//! * Files: see [`ShmStore::open`] and `region.rs`.
//!
//! # TTL
//!
//! The ttl is a per-process setting, not a file parameter: each process applies its own ttl to
//! the shared `stored_at_ns` stamps (so two processes declaring different ttls share entries
//! and each honours its own). `ttl_ns == Some(0)` never serves or stores anything.
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::arena::{Arena, ShmSlots, ValueSink};
use super::failpoint::{self, Point};
use super::layout::{
    word, CounterStripe, DataHeader, Geometry, LockFile, ENDIAN_MARK, FORMAT_VERSION, HEADER_WORDS,
    LOCK_FILE_BYTES, LOCK_FILE_WORDS, LOCK_MAGIC, STRIPE_WORDS, WORD_BYTES,
};
use super::region::{self, CacheDir, FileId, Mapping, ShmFile};
use super::seqlock::{self, Acquire, Liveness, ProcessLiveness, SeqLock};
use super::table::{self, Table, TableError};
use crate::error::{Error, ErrorKind, Result};
use crate::model::is_fresh;
use crate::policy::{self, PolicyError, SieveSlots, NO_SLOT};

/// How long an insert waits for a lock held by a live process before skipping.
pub const LOCK_WAIT: Duration = Duration::from_millis(100);
/// How long clear/validate/file replacement wait for the lock.
pub const LOCK_WAIT_LONG: Duration = Duration::from_secs(2);
/// A reader seeing an odd sequence this long checks whether the writer is alive.
const READ_ODD_CHECK_NS: u64 = 1_000_000;
/// ... and gives up (a miss) after this long if it is.
const READ_ODD_GIVE_UP_NS: u64 = 5_000_000;
/// ... and in any case after this many polls of an odd sequence (~1 s of yields).
const READ_ODD_SPINS_MAX: u32 = 200_000;
/// A reader whose validation fails this many times in a row gives up (a miss).
const READ_RETRIES: u32 = 64;
/// Files are re-checked for replacement at most this often (inserts).
const FILE_CHECK_EVERY_NS: u64 = 100_000_000;
/// A thread samples its CPU (for the counter stripe) once per this many counted reads.
const STRIPE_REFRESH_COUNTS: u32 = 256;
/// Generations of files a store may move through (replaced or truncated files).
const MAX_GENERATIONS: usize = 8;
/// Attempts to open a stable pair of files while other processes create or replace them.
const OPEN_ATTEMPTS: usize = 16;

/// Identifies the key hash: ahash 0.8 with the seeds below, as compiled into this binary
/// (ahash's output depends on compile-time CPU features, so the id mixes in a probe hash).
const HASH_ALGO_TAG: u64 = 0x4148_4153_4830_0801; // "AHASH0", ahash 0.8, seeds v1
static KEY_HASHER: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

/// The shared backend's key hash: fixed-seed ahash over the encoded key bytes (never Python's
/// `hash()`; PYTHONHASHSEED does not matter).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = KEY_HASHER.build_hasher();
    hasher.write(key);
    hasher.finish()
}

/// The hash algorithm id recorded in data headers.
pub fn hash_algo_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| HASH_ALGO_TAG ^ key_hash(b"warp_cache hash probe v1"))
}

/// Parameters of a shared cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmConfig {
    /// Directory of the files; `None` = `$WARP_CACHE_DIR` or the platform default.
    pub dir: Option<PathBuf>,
    /// Cache name (the Python layer derives it from module, qualname and a code fingerprint);
    /// sanitized into a file-name stem.
    pub name: String,
    /// Maximum number of entries (`max_size`).
    pub capacity: u32,
    /// Maximum encoded key size (`max_key_size`).
    pub key_bytes_max: u32,
    /// Maximum encoded value size (`max_value_size`).
    pub value_bytes_max: u32,
    /// This process's time-to-live (`None` = never expires). Not stored in the file.
    pub ttl_ns: Option<u64>,
}

/// Result of [`ShmStore::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new entry; `evicted` if SIEVE evicted one to make room.
    Inserted { evicted: bool },
    /// The key was present: its value and stamp were replaced in place.
    Updated,
    /// Not stored.
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Key or value larger than the limits (counted in `oversize_skips`).
    Oversize,
    /// A live process held the writer lock for longer than [`LOCK_WAIT`].
    LockBusy,
    /// `ttl_ns == Some(0)`: nothing is ever stored.
    ZeroTtl,
    /// The store was found corrupt, reset, and still failed (should not happen).
    Corrupt,
}

/// Counters and sizes, shared by every process using the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShmInfo {
    pub hits: u64,
    pub misses: u64,
    pub oversize_skips: u64,
    pub current_size: u64,
    pub capacity: u32,
    /// Times the table was reset after a crash or corruption (diagnostics).
    pub resets: u64,
}

/// Where a file-backed store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmPaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub lock: PathBuf,
}

enum Backing {
    Mapped(Mapping),
    Heap(Box<[AtomicU64]>),
}

impl Backing {
    #[inline(always)]
    fn words(&self) -> &[AtomicU64] {
        match self {
            Backing::Mapped(mapping) => mapping.words(),
            Backing::Heap(words) => words,
        }
    }

    fn file_id(&self) -> Option<FileId> {
        match self {
            Backing::Mapped(mapping) => Some(mapping.file().id()),
            Backing::Heap(_) => None,
        }
    }

    /// False if a foreign process shrank the file under the mapping (now, or at some point
    /// since: a mapping that faulted has private pages and is never trusted again, INV-S6).
    fn intact(&self) -> bool {
        match self {
            Backing::Mapped(mapping) => !mapping.faulted() && mapping.file_covers_mapping(),
            Backing::Heap(_) => true,
        }
    }

    /// Whether the SIGBUS safety net watches this mapping (heap words cannot be truncated).
    #[inline]
    fn guarded(&self) -> bool {
        match self {
            Backing::Mapped(mapping) => mapping.guarded(),
            Backing::Heap(_) => true,
        }
    }

    /// Whether the SIGBUS safety net patched this mapping (INV-S6).
    #[inline]
    fn faulted(&self) -> bool {
        match self {
            Backing::Mapped(mapping) => mapping.faulted(),
            Backing::Heap(_) => false,
        }
    }
}

fn heap_words(count: usize) -> Result<Box<[AtomicU64]>> {
    let mut words = Vec::new();
    words.try_reserve_exact(count).map_err(|_| {
        Error::new(
            ErrorKind::NoSpace,
            format!("cannot allocate {count} words for a heap-backed store"),
        )
    })?;
    words.extend((0..count).map(|_| AtomicU64::new(0)));
    Ok(words.into_boxed_slice())
}

/// One pair of mapped files (or heap regions).
struct Generation {
    data: Backing,
    lock: Backing,
}

struct Files {
    dir: CacheDir,
    data_name: String,
    lock_name: String,
    stem: String,
}

/// Borrowed views of one generation, split by the trusted geometry.
struct View<'a> {
    header: &'a [AtomicU64],
    stripes: &'a [AtomicU64],
    table: Table<'a>,
    arena: Arena<'a>,
    lock_words: &'a [AtomicU64],
    lock: SeqLock<'a, AtomicU64>,
}

impl<'a> View<'a> {
    #[inline(always)]
    fn new(geometry: &'a Geometry, generation: &'a Generation) -> Option<View<'a>> {
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
        let lock = SeqLock::new(
            lock_words.get(word!(LockFile, seq))?,
            lock_words.get(word!(LockFile, owner))?,
        );
        Some(View {
            header,
            stripes,
            table: Table::new(buckets, geometry.capacity),
            arena: Arena::new(header, slots, geometry),
            lock_words,
            lock,
        })
    }

    fn header_word(&self, index: usize) -> u64 {
        self.header.get(index).map_or(0, |w| w.load(Relaxed))
    }

    fn stripe_word(&self, stripe: usize, field: usize) -> Option<&'a AtomicU64> {
        self.stripes.get(stripe * STRIPE_WORDS + field)
    }

    fn count(&self, field: usize) {
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

    fn sum(&self, field: usize) -> u64 {
        (0..self.stripes.len() / STRIPE_WORDS)
            .filter_map(|stripe| self.stripe_word(stripe, field))
            .fold(0u64, |total, w| total.wrapping_add(w.load(Relaxed)))
    }

    fn slots(&self) -> ShmSlots<'a> {
        ShmSlots::new(self.arena)
    }
}

/// What a lock-free read touches of one generation: the seqlock and the data words, with
/// the table, slot and counter words sliced on demand. Built on every read, so it is cheaper
/// than a [`View`] (no header or lock-file slices, no sections split in advance); slow paths
/// (an odd sequence, a recovery, an expired entry, a first touch) build the full [`View`] of
/// the *same* generation with [`ReadView::full`].
#[derive(Clone, Copy)]
struct ReadView<'a> {
    geometry: &'a Geometry,
    generation: &'a Generation,
    data: &'a [AtomicU64],
    lock: SeqLock<'a, AtomicU64>,
}

impl<'a> ReadView<'a> {
    #[inline(always)]
    fn new(geometry: &'a Geometry, generation: &'a Generation) -> Option<ReadView<'a>> {
        let lock_words = generation.lock.words();
        Some(ReadView {
            geometry,
            generation,
            data: generation.data.words(),
            lock: SeqLock::new(
                lock_words.get(word!(LockFile, seq))?,
                lock_words.get(word!(LockFile, owner))?,
            ),
        })
    }

    /// The full view of the same generation.
    fn full(&self) -> Option<View<'a>> {
        View::new(self.geometry, self.generation)
    }

    #[inline(always)]
    fn table(&self) -> Option<Table<'a>> {
        let start = self.geometry.table_word;
        let buckets = self.data.get(start..start + self.geometry.bucket_count)?;
        Some(Table::new(buckets, self.geometry.capacity))
    }

    /// The arena's slot words (an arena without the header: only slot contents are read).
    #[inline(always)]
    fn slots(&self) -> Option<Arena<'a>> {
        let start = self.geometry.arena_word;
        let slots = self
            .data
            .get(start..start + self.geometry.capacity as usize * self.geometry.slot_words)?;
        Some(Arena::new(&[], slots, self.geometry))
    }

    /// Counts one event on the stripe of `hint` (`None`: the calling thread's, as
    /// [`View::count`]).
    #[inline(always)]
    fn count(&self, field: usize, hint: Option<u32>) {
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

/// A counter-stripe hint: the CPU of the thread using it, sampled once per
/// [`STRIPE_REFRESH_COUNTS`] uses instead of on every count (`sched_getcpu` was ~30
/// instructions of a ~40 ns hit). A migrated thread, or a forked child that inherited its
/// parent's hint, moves to its own CPU's stripe within that many counts. Only contention
/// depends on the stripe, never a count's correctness.
///
/// Each thread has one ([`ShmStore::get_hashed`]); a caller that already keeps per-thread
/// (or, under a global lock such as Python's GIL, per-process) state can keep one there and
/// pass its value to [`ShmStore::get_hashed_on_stripe`], which saves the thread-local lookup
/// (`__tls_get_addr` in a shared library).
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeHint {
    cpu: u32,
    /// Uses left before the next sample.
    left: u32,
}

impl StripeHint {
    /// A hint that samples the CPU on its first use.
    pub const fn new() -> StripeHint {
        StripeHint { cpu: 0, left: 0 }
    }

    /// The stripe hint for one count.
    #[inline]
    pub fn stripe(&mut self) -> u32 {
        if self.left == 0 {
            self.cpu = super::raw::current_cpu();
            self.left = STRIPE_REFRESH_COUNTS;
        } else {
            self.left -= 1;
        }
        self.cpu
    }
}

/// The calling thread's counter stripe hint ([`StripeHint`]).
#[inline]
fn stripe_hint() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static HINT: Cell<StripeHint> = const { Cell::new(StripeHint::new()) };
    }
    HINT.try_with(|cell| {
        let mut hint = cell.get();
        let stripe = hint.stripe();
        cell.set(hint);
        stripe
    })
    .unwrap_or_else(|_| super::raw::current_cpu())
}

/// Holds the writer lock; releases it on drop (also on unwinding).
struct LockGuard<'a> {
    lock: SeqLock<'a, AtomicU64>,
    me: u64,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(self.me);
    }
}

/// A structural problem found under the lock.
#[derive(Debug)]
enum Corruption {
    Policy(PolicyError),
    Table(TableError),
    Arena(super::arena::ArenaError),
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Policy(e) => write!(f, "{e}"),
            Corruption::Table(e) => write!(f, "{e}"),
            Corruption::Arena(e) => write!(f, "{e}"),
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
impl From<super::arena::ArenaError> for Corruption {
    fn from(e: super::arena::ArenaError) -> Self {
        Corruption::Arena(e)
    }
}

/// Whether a lookup counts a hit or a miss, and on which stripe (`None`: the thread's).
#[derive(Clone, Copy)]
enum Counted {
    No,
    Yes(Option<u32>),
}

/// State of a read waiting out an odd sequence ([`ShmStore::wait_odd`]).
#[derive(Default)]
struct OddWait {
    spins: u32,
    since_ns: Option<u64>,
    recoveries: u32,
}

enum OddStep {
    Retry,
    Miss,
}

enum ReadOutcome {
    /// `visited`: the slot's SIEVE bit as read (unvalidated: only a hint to skip `touch`).
    Hit {
        slot: u32,
        visited: bool,
    },
    Expired,
    Miss,
}

/// The shared cache. `Send + Sync`: share it between threads by reference or `Arc`.
pub struct ShmStore {
    geometry: Geometry,
    ttl_ns: Option<u64>,
    files: Option<Files>,
    generations: [OnceLock<Generation>; MAX_GENERATIONS],
    current: AtomicUsize,
    /// Serializes moving to a new generation.
    refresh: Mutex<()>,
    last_file_check_ns: AtomicU64,
    /// An odd sequence a reader already waited out with a live writer: later reads seeing it
    /// miss at once instead of waiting again.
    stalled_seq: AtomicU64,
    /// A live owner an insert already waited out in full, and the sequence at that time:
    /// later inserts seeing the same hold (no progress) skip at once.
    stalled_owner: AtomicU64,
    stalled_owner_seq: AtomicU64,
    /// Why this process last reset the table (diagnostics).
    last_reset_reason: Mutex<Option<String>>,
}

impl std::fmt::Debug for ShmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmStore")
            .field("geometry", &self.geometry)
            .field("ttl_ns", &self.ttl_ns)
            .field("paths", &self.paths())
            .finish()
    }
}

fn random_nonce() -> u64 {
    use std::collections::hash_map::RandomState;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u64(super::raw::clock_monotonic_ns().unwrap_or(0));
    hasher.finish() | 1
}

fn init_lock_words(words: &[AtomicU64], nonce: u64) {
    for w in words {
        w.store(0, Relaxed);
    }
    let set = |index: usize, value: u64| {
        if let Some(w) = words.get(index) {
            w.store(value, Relaxed);
        }
    };
    set(word!(LockFile, magic), LOCK_MAGIC);
    set(word!(LockFile, endian), ENDIAN_MARK);
    set(word!(LockFile, format_version), FORMAT_VERSION);
    set(word!(LockFile, nonce), nonce);
}

fn lock_words_valid(words: &[AtomicU64]) -> bool {
    let get = |index: usize| words.get(index).map(|w| w.load(Relaxed));
    words.len() >= LOCK_FILE_WORDS
        && get(word!(LockFile, magic)) == Some(LOCK_MAGIC)
        && get(word!(LockFile, endian)) == Some(ENDIAN_MARK)
        && get(word!(LockFile, format_version)) == Some(FORMAT_VERSION)
}

fn lock_nonce_of(words: &[AtomicU64]) -> u64 {
    words
        .get(word!(LockFile, nonce))
        .map_or(0, |w| w.load(Relaxed))
}

/// Writes a fresh, empty data region (parameter block, empty SIEVE list and allocator).
fn init_data_words(words: &[AtomicU64], geometry: &Geometry, lock_nonce: u64) {
    let set = |index: usize, value: u64| {
        if let Some(w) = words.get(index) {
            w.store(value, Relaxed);
        }
    };
    for (index, value) in geometry.parameter_words(hash_algo_id(), random_nonce(), lock_nonce) {
        set(index, value);
    }
    for field in [
        word!(DataHeader, sieve_head),
        word!(DataHeader, sieve_tail),
        word!(DataHeader, sieve_hand),
        word!(DataHeader, free_head),
    ] {
        set(field, u64::from(NO_SLOT));
    }
    set(word!(DataHeader, sieve_len), 0);
    set(word!(DataHeader, high_water), 0);
    set(word!(DataHeader, resets), 0);
}

/// Compares a header (as native-endian words) with what `geometry` and `lock_nonce` expect.
/// `Err` says which field differs.
fn check_header(
    header: &[u64],
    geometry: &Geometry,
    lock_nonce: Option<u64>,
) -> std::result::Result<(), String> {
    let creation = word!(DataHeader, creation_nonce);
    let pairing = word!(DataHeader, lock_nonce);
    for (index, expected) in geometry.parameter_words(hash_algo_id(), 0, lock_nonce.unwrap_or(0)) {
        if index == creation || (index == pairing && lock_nonce.is_none()) {
            continue;
        }
        let found = header.get(index).copied();
        if found != Some(expected) {
            return Err(format!(
                "header word {index} is {found:?}, expected {expected}"
            ));
        }
    }
    Ok(())
}

fn read_header(file: &ShmFile) -> Option<Vec<u64>> {
    let mut bytes = vec![0u8; HEADER_WORDS * WORD_BYTES];
    file.read_exact_at(&mut bytes, 0).ok()?;
    Some(
        bytes
            .chunks_exact(WORD_BYTES)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
    )
}

impl ShmStore {
    /// Opens (or creates) the shared cache `config.name` in its directory.
    ///
    /// * Parameters the layout cannot address: [`ErrorKind::InvalidArgument`].
    /// * Directory or file owned by someone else, group/world-writable, or a symlink:
    ///   [`ErrorKind::Io`].
    /// * Not enough space to reserve the file: [`ErrorKind::NoSpace`].
    /// * Existing files whose header matches are mapped; missing ones are created (temp file +
    ///   `link`, so concurrent creators agree on one); mismatched, garbage or truncated ones
    ///   are replaced (temp file + `rename`, under the writer lock so concurrent replacers
    ///   agree), never truncated in place. A data file always belongs to the lock file whose
    ///   nonce it records (INV-S2).
    pub fn open(config: ShmConfig) -> Result<ShmStore> {
        let geometry = Geometry::new(
            config.capacity,
            config.key_bytes_max,
            config.value_bytes_max,
        )?;
        let dir_path = config.dir.clone().unwrap_or_else(region::default_dir);
        let dir = CacheDir::open(&dir_path)?;
        let stem = region::sanitize_name(&config.name);
        let files = Files {
            dir,
            data_name: format!("{stem}.data"),
            lock_name: format!("{stem}.lock"),
            stem,
        };
        // A data file will have to be created: fail on space before creating anything.
        let reusable = files
            .dir
            .open_file(&files.data_name)?
            .is_some_and(|file| data_file_fits(&file, &geometry, None));
        if !reusable {
            files.dir.check_free_space(geometry.region_bytes)?;
        }
        let generation = open_generation(&files, &geometry, true)?;
        Ok(Self::with_generation(
            geometry,
            config.ttl_ns,
            Some(files),
            generation,
        ))
    }

    /// A store over heap memory with exactly the file layout: for tests, fuzzing and the
    /// simulator's single-process mode. `dir` and `name` are ignored.
    pub fn over_memory(config: ShmConfig) -> Result<ShmStore> {
        let geometry = Geometry::new(
            config.capacity,
            config.key_bytes_max,
            config.value_bytes_max,
        )?;
        let lock = heap_words(LOCK_FILE_WORDS)?;
        let nonce = random_nonce();
        init_lock_words(&lock, nonce);
        let data = heap_words(geometry.region_words())?;
        init_data_words(&data, &geometry, nonce);
        let generation = Generation {
            data: Backing::Heap(data),
            lock: Backing::Heap(lock),
        };
        Ok(Self::with_generation(
            geometry,
            config.ttl_ns,
            None,
            generation,
        ))
    }

    /// A heap store whose memory starts as the given images (as if mapped from hostile files):
    /// for fuzzing the open checks and every operation on garbage. A header that does not
    /// match `config` (or a short image) is an [`ErrorKind::Corrupt`] error, as `open` would
    /// replace such a file.
    pub fn from_image(config: ShmConfig, data: &[u8], lock: &[u8]) -> Result<ShmStore> {
        let geometry = Geometry::new(
            config.capacity,
            config.key_bytes_max,
            config.value_bytes_max,
        )?;
        let to_words = |bytes: &[u8], count: usize| -> Option<Box<[AtomicU64]>> {
            (bytes.len() >= count * WORD_BYTES).then(|| {
                bytes
                    .chunks_exact(WORD_BYTES)
                    .take(count)
                    .map(|c| AtomicU64::new(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))))
                    .collect()
            })
        };
        let corrupt =
            |what: &str| Error::new(ErrorKind::Corrupt, format!("image rejected: {what}"));
        let lock =
            to_words(lock, LOCK_FILE_WORDS).ok_or_else(|| corrupt("lock image too short"))?;
        if !lock_words_valid(&lock) {
            return Err(corrupt("lock header mismatch"));
        }
        let data = to_words(data, geometry.region_words())
            .ok_or_else(|| corrupt("data image too short"))?;
        let header: Vec<u64> = data[..HEADER_WORDS]
            .iter()
            .map(|w| w.load(Relaxed))
            .collect();
        check_header(&header, &geometry, Some(lock_nonce_of(&lock))).map_err(|e| corrupt(&e))?;
        let generation = Generation {
            data: Backing::Heap(data),
            lock: Backing::Heap(lock),
        };
        Ok(Self::with_generation(
            geometry,
            config.ttl_ns,
            None,
            generation,
        ))
    }

    fn with_generation(
        geometry: Geometry,
        ttl_ns: Option<u64>,
        files: Option<Files>,
        generation: Generation,
    ) -> ShmStore {
        let store = ShmStore {
            geometry,
            ttl_ns,
            files,
            generations: Default::default(),
            current: AtomicUsize::new(0),
            refresh: Mutex::new(()),
            last_file_check_ns: AtomicU64::new(super::raw::clock_monotonic_ns().unwrap_or(0)),
            stalled_seq: AtomicU64::new(0),
            stalled_owner: AtomicU64::new(0),
            stalled_owner_seq: AtomicU64::new(0),
            last_reset_reason: Mutex::new(None),
        };
        let _ = store.generations[0].set(generation);
        store
    }

    /// The current data and lock images (tests, fuzzing, simulator snapshots).
    pub fn image(&self) -> (Vec<u8>, Vec<u8>) {
        let generation = self.generation();
        let bytes = |words: &[AtomicU64]| {
            words
                .iter()
                .flat_map(|w| w.load(Relaxed).to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        (
            bytes(generation.data.words()),
            bytes(generation.lock.words()),
        )
    }

    /// Paths of the files (`None` for a heap store).
    pub fn paths(&self) -> Option<ShmPaths> {
        self.files.as_ref().map(|files| ShmPaths {
            dir: files.dir.path().to_owned(),
            data: files.dir.path().join(&files.data_name),
            lock: files.dir.path().join(&files.lock_name),
        })
    }

    /// The sanitized file-name stem (`None` for a heap store).
    pub fn file_stem(&self) -> Option<&str> {
        self.files.as_ref().map(|f| f.stem.as_str())
    }

    pub fn capacity(&self) -> u32 {
        self.geometry.capacity
    }

    pub fn key_bytes_max(&self) -> u32 {
        self.geometry.key_bytes_max
    }

    pub fn value_bytes_max(&self) -> u32 {
        self.geometry.value_bytes_max
    }

    pub fn ttl_ns(&self) -> Option<u64> {
        self.ttl_ns
    }

    /// Bytes of one slot (meta + key + value words) and of the whole data file.
    pub fn slot_bytes(&self) -> u64 {
        self.geometry.slot_bytes()
    }

    pub fn region_bytes(&self) -> u64 {
        self.geometry.region_bytes
    }

    #[inline(always)]
    fn generation(&self) -> &Generation {
        let index = self.current.load(std::sync::atomic::Ordering::Acquire);
        self.generations[index.min(MAX_GENERATIONS - 1)]
            .get()
            .or_else(|| self.generations[0].get())
            .expect("generation 0 is set at construction")
    }

    /// Whether a mapping of the current generation was patched by the SIGBUS safety net.
    fn generation_faulted(&self) -> bool {
        let generation = self.generation();
        generation.data.faulted() || generation.lock.faulted()
    }

    #[inline(always)]
    fn view(&self) -> Result<View<'_>> {
        View::new(&self.geometry, self.generation()).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                "shared cache mapping is smaller than its layout",
            )
        })
    }

    // ----------------------------------------------------------------------------------------
    // Reads

    /// Looks `key` up (encoded key bytes). On a fresh hit, `out` holds exactly the value bytes
    /// and the result is `Ok(true)`; otherwise `out` is empty and the result `Ok(false)`.
    /// Counts a hit or a miss. Never blocks on a writer for more than a few milliseconds.
    pub fn get(&self, key: &[u8], now_ns: u64, out: &mut Vec<u8>) -> Result<bool> {
        self.get_hashed(key, key_hash(key), now_ns, out)
    }

    /// [`ShmStore::get`] with the hash precomputed by [`key_hash`] (saves hashing twice on
    /// a miss followed by an insert).
    pub fn get_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::Yes(None))
    }

    /// [`ShmStore::get_hashed`] copying the value into any [`ValueSink`] (e.g. a
    /// [`super::arena::SmallValue`] on the caller's stack) and counting on the stripe of
    /// `stripe_hint` (a value of the caller's own [`StripeHint`]) instead of the calling
    /// thread's.
    #[inline]
    pub fn get_hashed_on_stripe(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
        stripe_hint: u32,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::Yes(Some(stripe_hint)))
    }

    /// [`ShmStore::get_hashed`] without counting a hit or a miss (a second look at a key
    /// whose miss was already counted, e.g. by an async miss before it starts computing).
    pub fn peek_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::No)
    }

    fn lookup_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
        counted: Counted,
    ) -> Result<bool> {
        out.clear();
        let parts = ReadView::new(&self.geometry, self.generation())
            .and_then(|view| Some((view, view.table()?, view.slots()?)));
        let Some((view, table, slots)) = parts else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "shared cache mapping is smaller than its layout",
            ));
        };
        let count = |field: usize| {
            if let Counted::Yes(hint) = counted {
                view.count(field, hint);
            }
        };
        if key.len() > self.geometry.key_bytes_max as usize || self.ttl_ns == Some(0) {
            count(word!(CounterStripe, misses));
            return Ok(false);
        }
        let outcome = self.read(&view, table, slots, key, hash, now_ns, out);
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // The read may have seen private zero pages (a file truncated under us, INV-S6):
            // never serve it; move to fresh files.
            out.clear();
            let _ = self.check_files(true);
            count(word!(CounterStripe, misses));
            return Ok(false);
        }
        match outcome {
            ReadOutcome::Hit { slot, visited } => {
                if !visited {
                    // Outside the lock: may rarely mark a slot reused meanwhile (only a policy
                    // imprecision under concurrency, never a wrong value).
                    if let Some(full) = view.full() {
                        let _ = policy::touch(&full.slots(), slot);
                    }
                }
                count(word!(CounterStripe, hits));
                Ok(true)
            }
            ReadOutcome::Expired => {
                out.clear();
                if let Some(full) = view.full() {
                    self.remove_if_expired(&full, key, hash, now_ns);
                }
                count(word!(CounterStripe, misses));
                Ok(false)
            }
            ReadOutcome::Miss => {
                out.clear();
                count(word!(CounterStripe, misses));
                Ok(false)
            }
        }
    }

    /// The optimistic read loop (INV-S3). Bounded: at most [`READ_RETRIES`] validation
    /// failures and [`READ_ODD_GIVE_UP_NS`] of odd sequence with a live writer.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn read(
        &self,
        view: &ReadView<'_>,
        table: Table<'_>,
        slots: Arena<'_>,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
    ) -> ReadOutcome {
        let mut retries = 0u32;
        let mut odd = OddWait::default();
        loop {
            let start = view.lock.read_begin();
            if start & 1 == 1 {
                match self.wait_odd(view, start, &mut odd) {
                    OddStep::Retry => continue,
                    OddStep::Miss => return ReadOutcome::Miss,
                }
            }
            out.clear();
            let found = table.find_map(hash, |_, slot| {
                let words = slots.slot(slot)?;
                words.key_matches(hash, key).then_some((slot, words))
            });
            let outcome = match found {
                None => ReadOutcome::Miss,
                Some((slot, words)) => {
                    let lens = words.lens();
                    if lens.value > self.geometry.value_bytes_max {
                        // Only garbage has this; never serve it (validated or not).
                        ReadOutcome::Miss
                    } else if is_fresh(words.stored_at_ns(), now_ns, self.ttl_ns) {
                        words.copy_value(lens.value, out);
                        ReadOutcome::Hit {
                            slot,
                            visited: words.visited(),
                        }
                    } else {
                        ReadOutcome::Expired
                    }
                }
            };
            if view.lock.read_validate(start) {
                return outcome;
            }
            retries += 1;
            if retries >= READ_RETRIES {
                return ReadOutcome::Miss;
            }
        }
    }

    /// A read saw the odd sequence `start` (a write in progress): spin, then yield, check the
    /// writer's liveness and recover from a dead one, or give up (a miss) within
    /// [`READ_ODD_GIVE_UP_NS`] / [`READ_ODD_SPINS_MAX`] polls.
    #[cold]
    #[inline(never)]
    fn wait_odd(&self, view: &ReadView<'_>, start: u64, odd: &mut OddWait) -> OddStep {
        let recover = |odd: &mut OddWait| {
            if ProcessLiveness.owner_alive(view.lock.owner()) || odd.recoveries >= 2 {
                return false;
            }
            odd.recoveries += 1;
            if let Some(full) = view.full() {
                self.recover_interrupted(&full);
            }
            true
        };
        if start == self.stalled_seq.load(Relaxed) {
            // Already waited this write out: miss now, unless its writer died.
            return if recover(odd) {
                OddStep::Retry
            } else {
                OddStep::Miss
            };
        }
        odd.spins += 1;
        if odd.spins < 256 {
            std::hint::spin_loop();
            return OddStep::Retry;
        }
        if odd.spins >= READ_ODD_SPINS_MAX {
            // Hard bound, independent of the clock.
            self.stalled_seq.store(start, Relaxed);
            return OddStep::Miss;
        }
        let now = super::raw::clock_monotonic_ns().unwrap_or(0);
        let since = *odd.since_ns.get_or_insert(now);
        let waited = now.saturating_sub(since);
        if waited >= READ_ODD_CHECK_NS && odd.spins % 64 == 0 {
            if recover(odd) {
                odd.since_ns = None;
                odd.spins = 0;
                return OddStep::Retry;
            }
            if waited >= READ_ODD_GIVE_UP_NS {
                self.stalled_seq.store(start, Relaxed);
                return OddStep::Miss;
            }
        }
        std::thread::yield_now();
        OddStep::Retry
    }

    // ----------------------------------------------------------------------------------------
    // Writes

    /// Takes the writer lock for `view`, waiting up to `max_wait` for a live owner and taking
    /// over from a dead one.
    ///
    /// A hold this store already waited out in full (same owner *and* same sequence: the
    /// holder made no progress, e.g. it is stopped) is not waited for again: only checked.
    fn lock<'a>(&self, view: &View<'a>, max_wait: Duration) -> Option<LockGuard<'a>> {
        let me = seqlock::current_owner();
        let guard = |took_over: bool| {
            if took_over {
                self.count_takeover(view);
            }
            self.stalled_owner.store(0, Relaxed);
            Some(LockGuard {
                lock: view.lock,
                me,
            })
        };
        let owner = view.lock.owner();
        if owner != 0
            && owner == self.stalled_owner.load(Relaxed)
            && view.lock.sequence() == self.stalled_owner_seq.load(Relaxed)
        {
            if !ProcessLiveness.owner_alive(owner) && view.lock.take_over(owner, me) {
                return guard(true);
            }
            if view.lock.owner() == owner {
                return None;
            }
        }
        match view.lock.acquire(me, max_wait, &ProcessLiveness) {
            Acquire::Acquired => guard(false),
            Acquire::TookOver { .. } => guard(true),
            Acquire::Busy { owner } => {
                if max_wait >= LOCK_WAIT {
                    self.stalled_owner_seq.store(view.lock.sequence(), Relaxed);
                    self.stalled_owner.store(owner, Relaxed);
                }
                None
            }
        }
    }

    fn count_takeover(&self, view: &View<'_>) {
        if let Some(w) = view.lock_words.get(word!(LockFile, takeovers)) {
            w.fetch_add(1, Relaxed);
        }
    }

    /// Runs `body` inside a write section (lock held by the caller). An interrupted previous
    /// section, or corruption reported by `body`, resets the table and arena (INV-S4); after a
    /// reset caused by `body`, `body` runs once more on the empty store.
    fn write_section<R>(
        &self,
        view: &View<'_>,
        mut body: impl FnMut(&View<'_>) -> std::result::Result<R, Corruption>,
    ) -> Option<R> {
        let section = view.lock.write_begin();
        if section.interrupted {
            self.note_reset("a writer died inside a write section".to_owned());
            self.reset_structures(view);
        }
        let result = match body(view) {
            Ok(r) => Some(r),
            Err(corruption) => {
                self.note_reset(corruption.to_string());
                self.reset_structures(view);
                body(view).ok()
            }
        };
        view.lock.write_end(section);
        result
    }

    fn note_reset(&self, reason: String) {
        // try_lock: never block here (fork-safe even if a thread held it at fork time).
        if let Ok(mut last) = self.last_reset_reason.try_lock() {
            *last = Some(reason);
        }
    }

    /// Why this process last reset the table after a crash or corruption, if it did.
    pub fn last_reset_reason(&self) -> Option<String> {
        self.last_reset_reason.lock().ok().and_then(|r| r.clone())
    }

    /// Empties the table and arena and counts a reset (inside a write section).
    fn reset_structures(&self, view: &View<'_>) {
        view.table.clear();
        view.arena.reset();
        if let Some(w) = view.header.get(word!(DataHeader, resets)) {
            w.fetch_add(1, Relaxed);
        }
    }

    /// Recovery started by a reader that found an odd sequence and a dead (or no) writer.
    fn recover_interrupted(&self, view: &View<'_>) {
        let me = seqlock::current_owner();
        let owner = view.lock.owner();
        let guard = if owner == 0 {
            view.lock.try_lock(me)
        } else {
            let taken = view.lock.take_over(owner, me);
            if taken {
                self.count_takeover(view);
            }
            taken
        };
        if guard {
            let _guard = LockGuard {
                lock: view.lock,
                me,
            };
            self.write_section(view, |_| Ok(()));
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
        if key.len() > self.geometry.key_bytes_max as usize
            || value.len() > self.geometry.value_bytes_max as usize
        {
            self.record_oversize_skip();
            return Ok(InsertOutcome::Skipped(SkipReason::Oversize));
        }
        if self.ttl_ns == Some(0) {
            return Ok(InsertOutcome::Skipped(SkipReason::ZeroTtl));
        }
        self.check_files(false)?;
        let mut outcome = self.insert_once(key, hash, value, now_ns)?;
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // The files were truncated under us (found without an fstat, INV-S6): the write
            // may have gone to private zero pages. Move to fresh files and write once more.
            self.check_files(true)?;
            outcome = self.insert_once(key, hash, value, now_ns)?;
        }
        Ok(outcome)
    }

    fn insert_once(
        &self,
        key: &[u8],
        hash: u64,
        value: &[u8],
        now_ns: u64,
    ) -> Result<InsertOutcome> {
        let view = self.view()?;
        let Some(guard) = self.lock(&view, LOCK_WAIT) else {
            return Ok(InsertOutcome::Skipped(SkipReason::LockBusy));
        };
        failpoint::hit(Point::AfterLock);
        let outcome =
            self.write_section(&view, |v| self.insert_locked(v, key, hash, value, now_ns));
        failpoint::hit(Point::BeforeUnlock);
        drop(guard);
        Ok(outcome.unwrap_or(InsertOutcome::Skipped(SkipReason::Corrupt)))
    }

    fn insert_locked(
        &self,
        view: &View<'_>,
        key: &[u8],
        hash: u64,
        value: &[u8],
        now_ns: u64,
    ) -> std::result::Result<InsertOutcome, Corruption> {
        if let Some((_, slot)) = view
            .table
            .find(hash, |slot| view.arena.key_matches(slot, hash, key))
        {
            view.arena
                .write_value(slot, key.len() as u32, value, now_ns);
            return Ok(InsertOutcome::Updated);
        }
        let mut slots = view.slots();
        let (slot, evicted) = if slots.len() >= self.geometry.capacity {
            let victim = policy::evict(&mut slots)?;
            view.table.remove(view.arena.hash(victim), victim)?;
            (victim, true)
        } else {
            (view.arena.alloc()?, false)
        };
        view.arena.write_entry(slot, hash, key, value, now_ns);
        policy::insert(&mut slots, slot)?;
        view.table.insert(hash, slot)?;
        Ok(InsertOutcome::Inserted { evicted })
    }

    fn remove_slot(view: &View<'_>, slot: u32) -> std::result::Result<(), Corruption> {
        view.table.remove(view.arena.hash(slot), slot)?;
        policy::remove(&mut view.slots(), slot)?;
        view.arena.free(slot);
        Ok(())
    }

    /// After a read found `key` expired: remove it if the lock is free right now.
    fn remove_if_expired(&self, view: &View<'_>, key: &[u8], hash: u64, now_ns: u64) {
        let Some(_guard) = self.lock(view, Duration::ZERO) else {
            return;
        };
        let ttl_ns = self.ttl_ns;
        self.write_section(view, |v| {
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

    /// Removes `key` if present. `Ok(false)` if absent or the lock stayed busy.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let hash = key_hash(key);
        self.check_files(false)?;
        let view = self.view()?;
        let Some(guard) = self.lock(&view, LOCK_WAIT) else {
            return Ok(false);
        };
        let removed = self.write_section(&view, |v| {
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
        let Some(_guard) = self.lock(&view, LOCK_WAIT_LONG) else {
            return Err(busy_error(view.lock.owner()));
        };
        self.write_section(&view, |v| {
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

    fn info_once(&self) -> Result<ShmInfo> {
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
            current_size: view
                .header_word(word!(DataHeader, sieve_len))
                .min(u64::from(self.geometry.capacity)),
            capacity: self.geometry.capacity,
            resets: view.header_word(word!(DataHeader, resets)),
        })
    }

    /// Checks every invariant of the table, arena and SIEVE list under the writer lock
    /// (O(capacity + buckets)); `Err` describes the first violation. For tests and the
    /// simulator.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.check_files(true).map_err(|e| e.message)?;
        let view = self.view().map_err(|e| e.message)?;
        let header: Vec<u64> = view.header.iter().map(|w| w.load(Relaxed)).collect();
        let lock_nonce = lock_nonce_of(view.lock_words);
        check_header(&header, &self.geometry, Some(lock_nonce)).map_err(|e| format!("data {e}"))?;
        if !lock_words_valid(view.lock_words) {
            return Err("lock file header mismatch".to_owned());
        }
        let _guard = self
            .lock(&view, LOCK_WAIT_LONG)
            .ok_or_else(|| busy_error(view.lock.owner()).message)?;
        if view.lock.sequence() & 1 == 1 {
            return Err("sequence is odd: an interrupted write awaits recovery".to_owned());
        }
        self.validate_locked(&view)
    }

    fn validate_locked(&self, view: &View<'_>) -> std::result::Result<(), String> {
        let slots = view.slots();
        policy::validate(&slots).map_err(|e| e.to_string())?;
        let capacity = self.geometry.capacity;
        let high_water = view.arena.high_water();
        if high_water > u64::from(capacity) {
            return Err(format!("high water {high_water} above capacity {capacity}"));
        }
        const UNUSED: u8 = 0;
        const LISTED: u8 = 1;
        const FREE: u8 = 2;
        let mut state = vec![UNUSED; capacity as usize];
        let listed = policy::order_from_head(&slots);
        for &slot in &listed {
            if u64::from(slot) >= high_water {
                return Err(format!(
                    "listed slot {slot} at or above high water {high_water}"
                ));
            }
            state[slot as usize] = LISTED;
            let lens = view.arena.lens(slot);
            if lens.key > self.geometry.key_bytes_max || lens.value > self.geometry.value_bytes_max
            {
                return Err(format!(
                    "slot {slot} has lengths {lens:?} beyond the limits"
                ));
            }
        }
        let mut free = 0u64;
        let mut cursor = view.arena.free_head();
        while cursor != u64::from(NO_SLOT) {
            let slot = u32::try_from(cursor)
                .ok()
                .filter(|&s| u64::from(s) < high_water)
                .ok_or_else(|| format!("free list names slot {cursor}"))?;
            if state[slot as usize] != UNUSED {
                return Err(format!("free slot {slot} is also listed or freed twice"));
            }
            state[slot as usize] = FREE;
            free += 1;
            cursor = view.arena.free_next(slot);
        }
        if listed.len() as u64 + free != high_water {
            return Err(format!(
                "{} listed + {free} free slots != high water {high_water}",
                listed.len()
            ));
        }
        let mut has_bucket = vec![false; capacity as usize];
        let mut buckets = 0usize;
        for (index, bucket) in view.table.entries() {
            buckets += 1;
            let slot = table::bucket_slot(bucket)
                .filter(|&s| s < capacity)
                .ok_or_else(|| format!("bucket {index} names an out-of-range slot"))?;
            if state[slot as usize] != LISTED {
                return Err(format!("bucket {index} names slot {slot} not in the list"));
            }
            if std::mem::replace(&mut has_bucket[slot as usize], true) {
                return Err(format!("slot {slot} has two buckets"));
            }
            if table::hash32(view.arena.hash(slot)) != table::bucket_hash32(bucket) {
                return Err(format!("bucket {index} hash differs from slot {slot}'s"));
            }
            if !view.table.reachable(index, bucket) {
                return Err(format!("bucket {index} is unreachable from its home"));
            }
        }
        if buckets != listed.len() {
            return Err(format!("{buckets} buckets for {} entries", listed.len()));
        }
        for &slot in &listed {
            let key = view.arena.key(slot);
            let hash = view.arena.hash(slot);
            if key_hash(&key) != hash {
                return Err(format!("slot {slot} hash does not match its key"));
            }
            let found = view
                .table
                .find(hash, |s| view.arena.key_matches(s, hash, &key))
                .map(|(_, s)| s);
            if found != Some(slot) {
                return Err(format!(
                    "slot {slot}'s key finds {found:?} (duplicate key?)"
                ));
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Files

    /// Slow-path file checks: our mapping's file shrank (a foreign truncation) or the names
    /// now point at other files (replaced by a process with other parameters, or deleted).
    /// Moves to a fresh generation when needed. `force` skips the rate limit on the name check.
    fn check_files(&self, force: bool) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let generation = self.generation();
        let now = super::raw::clock_monotonic_ns().unwrap_or(0);
        let last = self.last_file_check_ns.load(Relaxed);
        let due = force || now.saturating_sub(last) >= FILE_CHECK_EVERY_NS;
        // Two fstat calls cost ~0.8 us, most of an insert. With both mappings watched by the
        // SIGBUS safety net (INV-S6), a truncation is flagged the moment an access touches a
        // page past the end (callers re-check the flag after such accesses), so the sizes are
        // only checked with the rate-limited name check. Unwatched mappings check every time.
        let guarded = generation.data.guarded() && generation.lock.guarded();
        let truncated = if due || !guarded {
            !generation.data.intact() || !generation.lock.intact()
        } else {
            generation.data.faulted() || generation.lock.faulted()
        };
        let check_names = due || truncated;
        if !check_names {
            return Ok(());
        }
        self.last_file_check_ns.store(now, Relaxed);
        // A name that cannot be checked (e.g. a permission change) counts as unchanged.
        let moved_from = |name: &str, ours: Option<FileId>| {
            files.dir.file_id(name).is_ok_and(|found| found != ours)
        };
        let moved = moved_from(&files.data_name, generation.data.file_id())
            || moved_from(&files.lock_name, generation.lock.file_id());
        if !truncated && !moved {
            return Ok(());
        }
        let Ok(_refreshing) = self.refresh.try_lock() else {
            return if truncated {
                Err(truncated_error(files))
            } else {
                Ok(())
            };
        };
        if !std::ptr::eq(generation, self.generation()) {
            return Ok(()); // another thread already moved on
        }
        // Our files were truncated: replace them. Merely replaced or deleted: follow only to
        // files with our parameters (or recreate deleted ones); never fight another
        // process's parameters.
        match open_generation(files, &self.geometry, truncated) {
            Ok(fresh) => {
                let next = self.current.load(Relaxed) + 1;
                if next >= MAX_GENERATIONS {
                    return if truncated {
                        Err(truncated_error(files))
                    } else {
                        Ok(())
                    };
                }
                let _ = self.generations[next].set(fresh);
                self.current.store(next, Release);
                Ok(())
            }
            Err(e) if truncated => Err(e),
            Err(_) => Ok(()),
        }
    }
}

fn busy_error(owner: u64) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "the shared cache's writer lock is held by live process {} (stopped or stuck?); \
             try again, or stop that process",
            seqlock::owner_pid(owner)
        ),
    )
}

fn truncated_error(files: &Files) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "shared cache file {} was truncated by another process and could not be replaced",
            files.dir.path().join(&files.data_name).display()
        ),
    )
}

/// Whether an existing data file has exactly our parameters and belongs to `lock_nonce`.
fn data_file_matches(file: &ShmFile, geometry: &Geometry, lock_nonce: u64) -> bool {
    data_file_fits(file, geometry, Some(lock_nonce))
}

/// [`data_file_matches`], optionally ignoring the lock pairing.
fn data_file_fits(file: &ShmFile, geometry: &Geometry, lock_nonce: Option<u64>) -> bool {
    let Ok(len) = file.current_len() else {
        return false;
    };
    len >= geometry.region_bytes
        && read_header(file)
            .is_some_and(|header| check_header(&header, geometry, lock_nonce).is_ok())
}

fn map_lock(file: ShmFile) -> Result<Option<Mapping>> {
    if file.current_len()? < LOCK_FILE_BYTES {
        return Ok(None);
    }
    let mapping = Mapping::map(file, LOCK_FILE_BYTES)?;
    Ok(lock_words_valid(mapping.words()).then_some(mapping))
}

fn create_lock(files: &Files) -> Result<(Mapping, String)> {
    let (file, tmp) = files.dir.create_temp(&files.stem, LOCK_FILE_BYTES)?;
    let mapping = match Mapping::map(file, LOCK_FILE_BYTES) {
        Ok(m) => m,
        Err(e) => {
            let _ = files.dir.remove(&tmp);
            return Err(e);
        }
    };
    init_lock_words(mapping.words(), random_nonce());
    Ok((mapping, tmp))
}

fn create_data(files: &Files, geometry: &Geometry, lock_nonce: u64) -> Result<(Mapping, String)> {
    let (file, tmp) = files.dir.create_temp(&files.stem, geometry.region_bytes)?;
    let mapping = match Mapping::map(file, geometry.region_bytes) {
        Ok(m) => m,
        Err(e) => {
            let _ = files.dir.remove(&tmp);
            return Err(e);
        }
    };
    init_data_words(mapping.words(), geometry, lock_nonce);
    Ok((mapping, tmp))
}

/// Opens a consistent (lock, data) pair, creating or (if `replace`) replacing files.
fn open_generation(files: &Files, geometry: &Geometry, replace: bool) -> Result<Generation> {
    let mismatch = |what: &str| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{what} has other parameters; not replacing it"),
        )
    };
    for _attempt in 0..OPEN_ATTEMPTS {
        // 1. The lock file.
        let lock = match files.dir.open_file(&files.lock_name)? {
            Some(file) => match map_lock(file)? {
                Some(mapping) => mapping,
                None if replace => {
                    let (mapping, tmp) = create_lock(files)?;
                    files.dir.replace(&tmp, &files.lock_name)?;
                    mapping
                }
                None => return Err(mismatch("lock file")),
            },
            None => {
                let (mapping, tmp) = create_lock(files)?;
                if !files.dir.publish(&tmp, &files.lock_name)? {
                    continue; // another process created it first: open theirs
                }
                mapping
            }
        };
        let lock_nonce = lock_nonce_of(lock.words());
        // 2. The data file, paired with that lock file (INV-S2).
        let data = match files.dir.open_file(&files.data_name)? {
            Some(file) if data_file_matches(&file, geometry, lock_nonce) => {
                Mapping::map(file, geometry.region_bytes)?
            }
            Some(_) if !replace => return Err(mismatch("data file")),
            Some(_) => {
                // Replace under the writer lock so concurrent replacers agree on one file.
                let lock_words = lock.words();
                let seqlock = SeqLock::new(
                    &lock_words[word!(LockFile, seq)],
                    &lock_words[word!(LockFile, owner)],
                );
                let me = seqlock::current_owner();
                if !seqlock.acquire(me, LOCK_WAIT_LONG, &ProcessLiveness).held() {
                    return Err(busy_error(seqlock.owner()));
                }
                let _guard = LockGuard { lock: seqlock, me };
                match files.dir.open_file(&files.data_name)? {
                    Some(file) if data_file_matches(&file, geometry, lock_nonce) => {
                        Mapping::map(file, geometry.region_bytes)?
                    }
                    _ => {
                        let (mapping, tmp) = create_data(files, geometry, lock_nonce)?;
                        files.dir.replace(&tmp, &files.data_name)?;
                        mapping
                    }
                }
            }
            None => {
                let (mapping, tmp) = create_data(files, geometry, lock_nonce)?;
                if !files.dir.publish(&tmp, &files.data_name)? {
                    continue;
                }
                mapping
            }
        };
        // 3. Both names must still point at what we mapped; else someone replaced one of
        // them meanwhile: start over.
        if files.dir.file_id(&files.lock_name)? == Some(lock.file().id())
            && files.dir.file_id(&files.data_name)? == Some(data.file().id())
        {
            return Ok(Generation {
                data: Backing::Mapped(data),
                lock: Backing::Mapped(lock),
            });
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "could not open a stable pair of cache files {} and {} in {} (other processes keep \
             replacing them: are several processes using the same cache name with different \
             max_size/max_key_size/max_value_size?)",
            files.data_name,
            files.lock_name,
            files.dir.path().display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: u32) -> ShmConfig {
        ShmConfig {
            dir: None,
            name: "unit".into(),
            capacity,
            key_bytes_max: 64,
            value_bytes_max: 64,
            ttl_ns: None,
        }
    }

    #[test]
    fn heap_store_basic_operations() {
        let store = ShmStore::over_memory(config(2)).unwrap();
        let mut out = Vec::new();
        assert!(!store.get(b"a", 0, &mut out).unwrap());
        assert_eq!(
            store.insert(b"a", b"1", 0).unwrap(),
            InsertOutcome::Inserted { evicted: false }
        );
        assert!(store.get(b"a", 0, &mut out).unwrap());
        assert_eq!(out, b"1");
        assert_eq!(
            store.insert(b"a", b"22", 0).unwrap(),
            InsertOutcome::Updated
        );
        store.insert(b"b", b"2", 0).unwrap();
        assert_eq!(
            store.insert(b"c", b"3", 0).unwrap(),
            InsertOutcome::Inserted { evicted: true }
        );
        // "a" was visited: "b" is the victim.
        assert!(store.get(b"a", 0, &mut out).unwrap());
        assert_eq!(out, b"22");
        assert!(!store.get(b"b", 0, &mut out).unwrap());
        assert!(out.is_empty());
        store.validate().unwrap();
        let info = store.info().unwrap();
        assert_eq!((info.hits, info.misses, info.current_size), (2, 2, 2));
        assert!(store.remove(b"a").unwrap());
        assert!(!store.remove(b"a").unwrap());
        store.validate().unwrap();
        store.clear().unwrap();
        assert_eq!(
            store.info().unwrap(),
            ShmInfo {
                capacity: 2,
                ..ShmInfo::default()
            }
        );
        store.validate().unwrap();
    }

    #[test]
    fn oversize_and_zero_ttl_are_skipped_and_counted() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        let big = vec![0u8; 65];
        assert_eq!(
            store.insert(&big, b"v", 0).unwrap(),
            InsertOutcome::Skipped(SkipReason::Oversize)
        );
        assert_eq!(
            store.insert(b"k", &big, 0).unwrap(),
            InsertOutcome::Skipped(SkipReason::Oversize)
        );
        store.record_oversize_skip();
        assert_eq!(store.info().unwrap().oversize_skips, 3);
        let mut out = Vec::new();
        assert!(!store.get(&big, 0, &mut out).unwrap());
        let zero = ShmStore::over_memory(ShmConfig {
            ttl_ns: Some(0),
            ..config(4)
        })
        .unwrap();
        assert_eq!(
            zero.insert(b"k", b"v", 0).unwrap(),
            InsertOutcome::Skipped(SkipReason::ZeroTtl)
        );
        assert!(!zero.get(b"k", 0, &mut out).unwrap());
    }

    #[test]
    fn corruption_under_the_lock_resets_instead_of_failing() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        for k in 0..4u8 {
            store.insert(&[k], &[k], 0).unwrap();
        }
        let view = store.view().unwrap();
        // Break the SIEVE list: head points nowhere.
        view.header[word!(DataHeader, sieve_head)].store(1000, Relaxed);
        assert!(store.validate().is_err());
        assert_eq!(
            store.insert(b"new", b"v", 0).unwrap(),
            InsertOutcome::Inserted { evicted: false }
        );
        store.validate().unwrap();
        let info = store.info().unwrap();
        assert_eq!((info.current_size, info.resets), (1, 1));
        let mut out = Vec::new();
        assert!(store.get(b"new", 0, &mut out).unwrap());
        assert!(!store.get(&[0], 0, &mut out).unwrap());
    }

    #[test]
    fn an_interrupted_write_is_reset_by_the_next_writer() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"k", b"v", 0).unwrap();
        let view = store.view().unwrap();
        // A writer "died" inside a section: odd sequence, lock free (its guard unwound).
        let _abandoned = view.lock.write_begin();
        let mut out = Vec::new();
        // Readers do not hang: the owner is gone, they recover and then miss/hit cleanly.
        assert!(
            !store.get(b"k", 0, &mut out).unwrap(),
            "recovery dropped the entry"
        );
        assert_eq!(view.lock.sequence() & 1, 0);
        store.insert(b"k", b"v2", 0).unwrap();
        assert!(store.get(b"k", 0, &mut out).unwrap());
        assert_eq!(out, b"v2");
        store.validate().unwrap();
        assert_eq!(store.info().unwrap().resets, 1);
    }

    #[test]
    fn images_round_trip_and_mismatches_are_rejected() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"k", b"v", 0).unwrap();
        let (data, lock) = store.image();
        let copy = ShmStore::from_image(config(4), &data, &lock).unwrap();
        let mut out = Vec::new();
        assert!(copy.get(b"k", 0, &mut out).unwrap());
        assert_eq!(out, b"v");
        assert_eq!(
            ShmStore::from_image(config(5), &data, &lock)
                .unwrap_err()
                .kind,
            ErrorKind::Corrupt
        );
        assert!(ShmStore::from_image(config(4), &data[..100], &lock).is_err());
        let mut bad_lock = lock.clone();
        bad_lock[0] ^= 1;
        assert!(ShmStore::from_image(config(4), &data, &bad_lock).is_err());
    }

    #[test]
    fn a_hit_that_fails_to_decode_counts_as_a_miss() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"k", b"v", 0).unwrap();
        let mut out = Vec::new();
        assert!(store.get(b"k", 0, &mut out).unwrap());
        assert!(store.get(b"k", 0, &mut out).unwrap());
        store.record_decode_failure();
        let info = store.info().unwrap();
        assert_eq!((info.hits, info.misses), (1, 1));
        store.clear().unwrap();
        store.record_decode_failure(); // a failure counted after a clear raced with its hit
        let info = store.info().unwrap();
        assert_eq!((info.hits, info.misses), (0, 0));
    }

    #[test]
    fn peek_does_not_count() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"k", b"v", 0).unwrap();
        let mut out = Vec::new();
        assert!(store
            .peek_hashed(b"k", key_hash(b"k"), 0, &mut out)
            .unwrap());
        assert_eq!(out, b"v");
        assert!(!store
            .peek_hashed(b"x", key_hash(b"x"), 0, &mut out)
            .unwrap());
        assert!(out.is_empty());
        let info = store.info().unwrap();
        assert_eq!((info.hits, info.misses), (0, 0));
        assert!(store.get(b"k", 0, &mut out).unwrap());
        assert_eq!(store.info().unwrap().hits, 1);
    }

    /// A file-backed store in `dir` holding `entries` entries, whose `victim` file ("data" or
    /// "lock") was then truncated to zero bytes under it (as a foreign process could).
    fn store_with_truncated_file(
        dir: &std::path::Path,
        name: &str,
        victim: &str,
        entries: u8,
    ) -> ShmStore {
        let store = ShmStore::open(ShmConfig {
            dir: Some(dir.to_path_buf()),
            name: name.to_owned(),
            ..config(64)
        })
        .unwrap();
        for k in 0..entries {
            store.insert(&[k], &[k; 40], 1).unwrap();
        }
        let paths = store.paths().unwrap();
        let path = if victim == "data" {
            &paths.data
        } else {
            &paths.lock
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
        store
    }

    /// A directory path no other test run uses (pid and clock in the name).
    fn unique_temp_dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "{tag}_{}_{}",
            std::process::id(),
            super::super::raw::clock_monotonic_ns().unwrap_or(0)
        ))
    }

    #[test]
    fn files_truncated_under_a_live_store_are_survived() {
        let dir = unique_temp_dir("warp_store_trunc");
        for victim in ["data", "lock"] {
            let store = store_with_truncated_file(&dir, &format!("trunc_{victim}"), victim, 40);
            let mut out = Vec::new();
            // Every read misses (never a value seen through zero pages), no SIGBUS.
            for k in 0..40u8 {
                assert!(!store.get(&[k], 1, &mut out).unwrap(), "{victim}: key {k}");
                assert!(out.is_empty());
            }
            // Writers move to fresh files and the cache works again.
            store.insert(b"new", b"value", 1).unwrap();
            assert!(store.get(b"new", 1, &mut out).unwrap(), "{victim}");
            assert_eq!(out, b"value");
            store.validate().unwrap();
            let fresh = store.paths().unwrap();
            let len = std::fs::metadata(&fresh.data).unwrap().len();
            assert_eq!(len, store.region_bytes(), "{victim}: replaced, full size");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_insert_right_after_a_truncation_lands_in_fresh_files() {
        // Inserts no longer fstat the files each time (INV-S6 flags the truncation instead):
        // the first insert after one must still end up stored, in fresh full-size files.
        let dir = unique_temp_dir("warp_store_trunc_insert");
        for victim in ["data", "lock"] {
            let store =
                store_with_truncated_file(&dir, &format!("trunc_insert_{victim}"), victim, 8);
            assert!(matches!(
                store.insert(b"fresh", b"value", 1).unwrap(),
                InsertOutcome::Inserted { .. }
            ));
            let mut out = Vec::new();
            assert!(store.get(b"fresh", 1, &mut out).unwrap(), "{victim}");
            assert_eq!(out, b"value");
            assert!(
                !store.get(&[0], 1, &mut out).unwrap(),
                "{victim}: old entries gone"
            );
            assert_eq!(store.info().unwrap().current_size, 1, "{victim}");
            store.validate().unwrap();
            let fresh = store.paths().unwrap();
            let len = std::fs::metadata(&fresh.data).unwrap().len();
            assert_eq!(len, store.region_bytes(), "{victim}: replaced, full size");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ShmStore>();
    }

    #[test]
    fn key_hash_is_fixed() {
        // Deterministic within a build. (Not pinned to a constant: ahash's output depends on
        // compile-time CPU features, which is why the header records `hash_algo_id`.)
        assert_eq!(key_hash(b"abc"), key_hash(b"abc"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(
            hash_algo_id(),
            HASH_ALGO_TAG ^ key_hash(b"warp_cache hash probe v1")
        );
    }
}
