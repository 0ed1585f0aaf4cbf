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

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use super::arena::{Arena, ShmSlots, ValueSink};
use super::failpoint::{self, Point};
use super::files::{
    self, heap_words, len_if_same, open_generation, Files, Generation, Generations,
    FILE_CHECK_EVERY_NS,
};
use super::header::{
    check_header, init_data_words, init_lock_words, lock_nonce_of, lock_words_valid, random_nonce,
};
use super::layout::{
    word, CounterStripe, DataHeader, Geometry, LockFile, HEADER_WORDS, LOCK_FILE_WORDS,
    STRIPE_WORDS, WORD_BYTES,
};
use super::liveness::{self, LocalLiveness, OwnerState};
use super::raw;
use super::region::{self, CacheDir, FileId};
use super::seqlock::{Acquire, Liveness, SeqLock};
use super::table::{self, Table, TableError};
use crate::error::{Error, ErrorKind, Result};
use crate::hash::entry_check;
pub use crate::hash::{hash_algo_id, key_hash};
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
/// Reads between two looks at the coarse clock for the rate-limited file check.
const FILE_CHECK_READS: u32 = 16;
/// A thread samples its CPU (for the counter stripe) once per this many counted reads.
const STRIPE_REFRESH_COUNTS: u32 = 256;

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
    /// The store could not follow its files any more (see `files.rs`): nothing is stored.
    Unfollowable,
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
    /// Times a waiter took the writer lock over from a process found dead (diagnostics).
    pub takeovers: u64,
}

/// Where a file-backed store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmPaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub lock: PathBuf,
}

/// Borrowed views of one generation, split by the trusted geometry.
struct View<'a> {
    header: &'a [AtomicU64],
    stripes: &'a [AtomicU64],
    table: Table<'a>,
    arena: Arena<'a>,
    lock_words: &'a [AtomicU64],
    lock: SeqLock<'a, AtomicU64>,
    generation: &'a Generation,
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
        let lock = SeqLock::new(lock_words.get(word!(LockFile, state))?);
        Some(View {
            generation,
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

    fn epoch(&self) -> u64 {
        self.header_word(word!(DataHeader, epoch))
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
            lock: SeqLock::new(lock_words.get(word!(LockFile, state))?),
        })
    }

    /// The full view of the same generation.
    fn full(&self) -> Option<View<'a>> {
        View::new(self.geometry, self.generation)
    }

    /// The table epoch entries must have been written under (INV-S8).
    #[inline(always)]
    fn epoch(&self) -> u64 {
        self.data
            .get(word!(DataHeader, epoch))
            .map_or(0, |w| w.load(Relaxed))
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
    /// The table epoch this holder writes entries under: read when the lock was taken (so a
    /// holder whose lock is later taken over keeps an epoch its successor has left, INV-S8),
    /// and updated by the holder's own resets.
    epoch: std::cell::Cell<u64>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(self.me);
    }
}

/// [`Liveness`] of lock owners of one generation: heap stores know only this process; file
/// stores ask the kernel through presence files in the generation's directory, opened on the
/// first check only (a lock taken without waiting never opens it).
struct OwnerCheck<'s> {
    files: Option<&'s Files>,
    dir_id: Option<FileId>,
    me: u64,
    dir: OnceCell<Option<CacheDir>>,
}

impl OwnerCheck<'_> {
    fn state(&self, owner: u64) -> OwnerState {
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
    generations: Generations,
    /// Serializes moving to a new generation.
    refresh: Mutex<()>,
    /// Coarse-clock time of the last name check ([`FILE_CHECK_EVERY_NS`]).
    last_file_check_ns: AtomicU64,
    /// Reads left before the next look at the coarse clock ([`FILE_CHECK_READS`]).
    reads_until_check: AtomicU32,
    /// 1 + the index of a retired generation the store could not leave (0 = none): it is then
    /// re-checked at the normal rate, not on every read.
    unfollowable: std::sync::atomic::AtomicUsize,
    /// Set when the store can no longer follow its files (generation list full): every
    /// lookup misses and nothing is stored, so no stale value is ever served.
    disabled: std::sync::atomic::AtomicBool,
    /// This process's liveness id in the files' directory, and the fork generation it was
    /// read in (0 = not yet; a forked child gets its own).
    me: AtomicU64,
    me_fork_generation: AtomicU64,
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
        let files = Files::new(dir_path, &config.name);
        let dir = files.open_dir()?;
        // A data file will have to be created: fail on space before creating anything.
        let reusable = dir
            .open_file(&files.data_name)?
            .is_some_and(|file| files::data_file_fits(&file, &geometry, None));
        if !reusable {
            dir.check_free_space(geometry.region_bytes)?;
        }
        let me = liveness::owner_word(&dir)?;
        // Leftovers of processes that died while creating files (at most every few seconds).
        liveness::sweep(&dir, false);
        let generation = open_generation(&files, &dir, &geometry, true, me)?;
        // Other code versions of this function that no live process uses any more.
        files::remove_unused_versions(&files, &dir, me);
        let store = Self::with_generation(geometry, config.ttl_ns, Some(files), generation);
        store.me.store(me, Relaxed);
        store
            .me_fork_generation
            .store(raw::fork_generation() + 1, Relaxed);
        Ok(store)
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
        let generation = Generation::heap(data, lock);
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
        let generation = Generation::heap(data, lock);
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
        ShmStore {
            geometry,
            ttl_ns,
            files,
            generations: Generations::new(generation),
            refresh: Mutex::new(()),
            last_file_check_ns: AtomicU64::new(raw::coarse_clock_ns()),
            reads_until_check: AtomicU32::new(FILE_CHECK_READS),
            disabled: std::sync::atomic::AtomicBool::new(false),
            unfollowable: std::sync::atomic::AtomicUsize::new(0),
            me: AtomicU64::new(0),
            me_fork_generation: AtomicU64::new(0),
            stalled_seq: AtomicU64::new(0),
            stalled_owner: AtomicU64::new(0),
            stalled_owner_seq: AtomicU64::new(0),
            last_reset_reason: Mutex::new(None),
        }
    }

    /// This process's owner word for the lock (a liveness id; a random per-process token for
    /// heap stores). Cached per fork generation.
    fn me(&self) -> Result<u64> {
        let generation = raw::fork_generation() + 1;
        if self.me_fork_generation.load(Relaxed) == generation {
            return Ok(self.me.load(Relaxed));
        }
        let me = match &self.files {
            None => liveness::local_token(),
            Some(files) => liveness::owner_word(&files.open_dir()?)?,
        };
        self.me.store(me, Relaxed);
        self.me_fork_generation.store(generation, Relaxed);
        Ok(me)
    }

    /// Whether the lock owner `owner` is alive, judged for the generation `generation`.
    fn owner_check<'s>(&'s self, generation: &'s Generation, me: u64) -> OwnerCheck<'s> {
        OwnerCheck {
            files: self.files.as_ref(),
            dir_id: generation.dir_id,
            me,
            dir: OnceCell::new(),
        }
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
            dir: files.dir_path.clone(),
            data: files.dir_path.join(&files.data_name),
            lock: files.dir_path.join(&files.lock_name),
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
        self.generations.current()
    }

    /// Whether a mapping of the current generation was patched by the SIGBUS safety net.
    fn generation_faulted(&self) -> bool {
        self.generation().faulted()
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
        if self.files.is_some() {
            self.follow_files_on_read();
        }
        let generation = self.generation();
        let parts = ReadView::new(&self.geometry, generation)
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
        if key.len() > self.geometry.key_bytes_max as usize
            || self.ttl_ns == Some(0)
            || self.is_disabled()
        {
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
            // What the entry check covers, loaded inside the validated window (INV-S8).
            let mut checked = None;
            let outcome = match found {
                None => ReadOutcome::Miss,
                Some((slot, words)) => {
                    let lens = words.lens();
                    let stored_at_ns = words.stored_at_ns();
                    if lens.value > self.geometry.value_bytes_max {
                        // Only garbage has this; never serve it (validated or not).
                        ReadOutcome::Miss
                    } else if is_fresh(stored_at_ns, now_ns, self.ttl_ns) {
                        words.copy_value(lens.value, out);
                        checked =
                            Some((view.epoch(), words.lens_word(), stored_at_ns, words.check()));
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
                if let Some((epoch, lens, stored_at_ns, check)) = checked {
                    // A consistent copy of an entry written under another epoch (by a writer
                    // fenced off by a takeover), or torn by a writer outside the protocol,
                    // is never served: a miss, recomputed by the caller.
                    if entry_check(epoch, hash, lens, stored_at_ns, out.bytes()) != check {
                        out.clear();
                        return ReadOutcome::Miss;
                    }
                }
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
            let Ok(me) = self.me() else {
                return false;
            };
            let owners = self.owner_check(view.generation, me);
            if owners.owner_alive(view.lock.owner()) || odd.recoveries >= 2 {
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
        let now = raw::clock_monotonic_ns().unwrap_or(0);
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
    /// over from a dead one. (A taken-over owner is fenced off by the state word, INV-S8: it
    /// can neither begin nor end a section any more; if it died inside one, the next section
    /// finds the sequence odd and resets to a new epoch.)
    ///
    /// A hold this store already waited out in full (same owner *and* same sequence: the
    /// holder made no progress, e.g. it is stopped) is not waited for again: only checked.
    fn lock<'a>(&self, view: &View<'a>, max_wait: Duration) -> Option<LockGuard<'a>> {
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
        if owner != 0
            && owner == self.stalled_owner.load(Relaxed)
            && view.lock.sequence() == self.stalled_owner_seq.load(Relaxed)
        {
            if !owners.owner_alive(owner) && view.lock.take_over(owner, me) {
                return guard(true);
            }
            if view.lock.owner() == owner {
                return None;
            }
        }
        match view.lock.acquire(me, max_wait, &owners) {
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

    /// Runs `body` inside a write section (lock held through `guard`), passing the epoch to
    /// write entries under. An interrupted previous section, or corruption reported by `body`,
    /// resets the table and arena (INV-S4); after a reset caused by `body`, `body` runs once
    /// more on the empty store.
    fn write_section<R>(
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

    /// Empties the table and arena, counts a reset and moves to a new table epoch (inside a
    /// write section). Returns the new epoch.
    fn reset_structures(&self, view: &View<'_>) -> u64 {
        view.table.clear();
        view.arena.reset();
        if let Some(w) = view.header.get(word!(DataHeader, resets)) {
            w.fetch_add(1, Relaxed);
        }
        let epoch = view.epoch().wrapping_add(1).max(1);
        if let Some(w) = view.header.get(word!(DataHeader, epoch)) {
            w.store(epoch, Relaxed);
        }
        epoch
    }

    /// Recovery started by a reader that found an odd sequence and a dead (or no) writer.
    fn recover_interrupted(&self, view: &View<'_>) {
        let Ok(me) = self.me() else {
            return;
        };
        let guard = || LockGuard {
            lock: view.lock,
            me,
            epoch: std::cell::Cell::new(view.epoch()),
        };
        let owner = view.lock.owner();
        let held = if owner == 0 {
            view.lock.try_lock(me)
        } else {
            let taken = view.lock.take_over(owner, me);
            if taken {
                self.count_takeover(view);
            }
            taken
        };
        if held {
            // The sequence is odd: this section resets (INV-S4, INV-S8).
            let guard = guard();
            self.write_section(view, &guard, |_, _| Ok(()));
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
        if self.is_disabled() {
            return Ok(InsertOutcome::Skipped(SkipReason::Unfollowable));
        }
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
        let outcome = self.write_section(&view, &guard, |v, epoch| {
            self.insert_locked(v, epoch, key, hash, value, now_ns)
        });
        failpoint::hit(Point::BeforeUnlock);
        drop(guard);
        Ok(outcome.unwrap_or(InsertOutcome::Skipped(SkipReason::Corrupt)))
    }

    fn insert_locked(
        &self,
        view: &View<'_>,
        epoch: u64,
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
                .write_value(slot, key.len() as u32, value, now_ns, epoch);
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
        view.arena
            .write_entry(slot, hash, key, value, now_ns, epoch);
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

    /// Removes `key` if present. `Ok(false)` if absent or the lock stayed busy.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let hash = key_hash(key);
        self.check_files(false)?;
        let view = self.view()?;
        let Some(guard) = self.lock(&view, LOCK_WAIT) else {
            return Ok(false);
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
        self.write_section(&view, &guard, |v, epoch| {
            v.table.clear();
            v.arena.reset();
            // A new epoch: nothing written before the clear validates again (INV-S8).
            let epoch = epoch.wrapping_add(1).max(1);
            if let Some(w) = v.header.get(word!(DataHeader, epoch)) {
                w.store(epoch, Relaxed);
            }
            guard.epoch.set(epoch);
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
            takeovers: view
                .lock_words
                .get(word!(LockFile, takeovers))
                .map_or(0, |w| w.load(Relaxed)),
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
        let guard = self
            .lock(&view, LOCK_WAIT_LONG)
            .ok_or_else(|| busy_error(view.lock.owner()).message)?;
        if view.lock.sequence() & 1 == 1 {
            return Err("sequence is odd: an interrupted write awaits recovery".to_owned());
        }
        self.validate_locked(&view, guard.epoch.get())
    }

    fn validate_locked(&self, view: &View<'_>, epoch: u64) -> std::result::Result<(), String> {
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
            let lens = view.arena.lens(slot);
            let lens_word = u64::from(lens.key) | (u64::from(lens.value) << 32);
            let check = entry_check(
                epoch,
                hash,
                lens_word,
                view.arena.stored_at_ns(slot),
                &view.arena.value(slot),
            );
            if view.arena.check(slot) != check {
                return Err(format!("slot {slot}'s check word does not match its entry"));
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

    /// Every read counts down to a look at the coarse clock (the rate-limited name check of
    /// [`ShmStore::check_files`]); a retired generation (another process replaced or removed
    /// the files and said so) is followed at once. No system call on the way.
    #[inline(always)]
    fn follow_files_on_read(&self) {
        let countdown = self.reads_until_check.load(Relaxed);
        if countdown != 0 && !self.generation().retired() {
            self.reads_until_check.store(countdown - 1, Relaxed);
            return;
        }
        self.follow_files_slow();
    }

    #[cold]
    #[inline(never)]
    fn follow_files_slow(&self) {
        self.reads_until_check.store(FILE_CHECK_READS, Relaxed);
        let _ = self.check_files(false);
    }

    /// Whether the store gave up following its files (every call computes).
    #[inline(always)]
    fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    /// Slow-path file checks, at most every [`FILE_CHECK_EVERY_NS`] (coarse clock) unless
    /// `force`, the generation was retired, or the SIGBUS safety net flagged it: our files
    /// were truncated (a foreign process broke INV-9), or the names now point at other files
    /// or none (replaced, removed, the directory itself removed and made again). Moves to a
    /// fresh generation when needed: truncated files are replaced; replaced or removed ones
    /// are followed only to files with our parameters (or recreated), never fought over.
    fn check_files(&self, force: bool) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let generation = self.generation();
        let index = self.generations.current_index();
        let now = raw::coarse_clock_ns();
        let last = self.last_file_check_ns.load(Relaxed);
        let faulted = generation.faulted();
        // A retired generation we already failed to leave waits for the rate limit.
        let retired = generation.retired() && self.unfollowable.load(Relaxed) != index + 1;
        let due = force || faulted || retired || now.saturating_sub(last) >= FILE_CHECK_EVERY_NS;
        if !due {
            return Ok(());
        }
        self.last_file_check_ns.store(now, Relaxed);
        let dir = match files.open_dir() {
            Ok(dir) => dir,
            Err(e) if faulted => return Err(e),
            Err(_) => return Ok(()),
        };
        liveness::revalidate(&dir);
        let dir_moved = dir.id().ok() != generation.dir_id;
        let shrunk = |name: &str, backing: &files::Backing| {
            len_if_same(&dir, name, backing.file_id())
                .is_some_and(|len| len < backing.mapped_bytes())
        };
        let truncated = faulted
            || shrunk(&files.data_name, &generation.data)
            || shrunk(&files.lock_name, &generation.lock);
        // A name that cannot be checked (e.g. a permission change) counts as unchanged.
        let moved_from =
            |name: &str, ours: Option<FileId>| dir.file_id(name).is_ok_and(|found| found != ours);
        let moved = dir_moved
            || moved_from(&files.data_name, generation.data.file_id())
            || moved_from(&files.lock_name, generation.lock.file_id());
        if !truncated && !moved {
            if retired {
                // Retired, but the names still point at it: nothing to move to yet.
                self.unfollowable.store(index + 1, Relaxed);
            }
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
        if !self.generations.has_room() {
            self.disabled.store(true, Relaxed);
            return Ok(());
        }
        let me = liveness::owner_word(&dir)?;
        match open_generation(files, &dir, &self.geometry, truncated, me) {
            Ok(fresh) => {
                if !self.generations.push(fresh) {
                    self.disabled.store(true, Relaxed);
                }
                generation.unregister_mapper(self.me.load(Relaxed));
                // Our id may differ in a new directory.
                self.me.store(me, Relaxed);
                self.me_fork_generation
                    .store(raw::fork_generation() + 1, Relaxed);
                Ok(())
            }
            Err(e) if truncated => Err(e),
            Err(_) => {
                self.unfollowable.store(index + 1, Relaxed);
                Ok(())
            }
        }
    }
}

impl Drop for ShmStore {
    fn drop(&mut self) {
        // The mapper tables no longer name us (a cleaner may remove files nobody uses).
        if self.files.is_some()
            && self.me_fork_generation.load(Relaxed) == raw::fork_generation() + 1
        {
            let me = self.me.load(Relaxed);
            for generation in self.generations.all() {
                generation.unregister_mapper(me);
            }
        }
    }
}

fn busy_error(owner: u64) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "the shared cache's writer lock is held by a live process (presence file {}: \
             stopped or stuck?); try again, or stop that process",
            liveness::presence_name(owner)
        ),
    )
}

fn truncated_error(files: &Files) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "shared cache file {} was truncated by another process and could not be replaced",
            files.dir_path.join(&files.data_name).display()
        ),
    )
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

    /// INV-S8: a writer whose lock was taken over while it still ran (judged dead) and that
    /// then writes a whole, self-consistent entry and links it into the table is never served:
    /// the takeover moved the table to a new epoch, and it cannot end its section.
    #[test]
    fn a_fenced_writer_is_never_served() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"old", b"v", 0).unwrap();
        let view = store.view().unwrap();
        const ZOMBIE: u64 = 0x2bad;
        assert!(view.lock.try_lock(ZOMBIE));
        let zombie_epoch = view.epoch();
        let section = view.lock.write_begin(ZOMBIE).unwrap();
        // The zombie stalls here; this process's insert finds it dead (heap stores know only
        // this process) and takes over: the odd sequence makes its section reset.
        assert!(matches!(
            store.insert(b"fresh", b"new", 0).unwrap(),
            InsertOutcome::Inserted { .. }
        ));
        let info = store.info().unwrap();
        assert_eq!((info.takeovers, info.resets), (1, 1));
        assert_ne!(view.epoch(), zombie_epoch);
        // The zombie goes on: a complete entry for "k" in a free slot, linked in the table.
        let hash = key_hash(b"k");
        let slot = view.arena.alloc().unwrap();
        view.arena
            .write_entry(slot, hash, b"k", b"zombie", 0, zombie_epoch);
        view.table.insert(hash, slot).unwrap();
        assert!(!view.lock.write_end(section), "it cannot publish");
        assert!(view.lock.write_begin(ZOMBIE).is_none(), "nor begin again");
        assert!(!view.lock.unlock(ZOMBIE));
        let mut out = Vec::new();
        assert!(
            !store.get(b"k", 0, &mut out).unwrap(),
            "an entry written by a fenced writer was served: {out:?}"
        );
        assert!(out.is_empty());
        assert!(store.get(b"fresh", 0, &mut out).unwrap());
        assert_eq!(out, b"new");
        assert!(
            !store.get(b"old", 0, &mut out).unwrap(),
            "the torn table was reset"
        );
    }

    /// A takeover from a writer that died holding the lock but outside a section (nothing can
    /// be torn) keeps the entries; the dead owner still cannot write afterwards.
    #[test]
    fn a_clean_takeover_keeps_the_entries_and_fences_the_old_owner() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"a", b"1", 0).unwrap();
        let view = store.view().unwrap();
        const DEAD: u64 = 0x0dead;
        assert!(view.lock.try_lock(DEAD));
        store.insert(b"b", b"2", 0).unwrap();
        let info = store.info().unwrap();
        assert_eq!((info.takeovers, info.resets), (1, 0));
        let mut out = Vec::new();
        assert!(store.get(b"a", 0, &mut out).unwrap());
        assert!(store.get(b"b", 0, &mut out).unwrap());
        assert!(view.lock.write_begin(DEAD).is_none());
        store.validate().unwrap();
    }

    #[test]
    fn an_interrupted_write_is_reset_by_the_next_writer() {
        let store = ShmStore::over_memory(config(4)).unwrap();
        store.insert(b"k", b"v", 0).unwrap();
        let view = store.view().unwrap();
        // A writer "died" inside a section: odd sequence, lock free (its guard unwound).
        let me = store.me().unwrap();
        assert!(view.lock.try_lock(me));
        let _abandoned = view.lock.write_begin(me).unwrap();
        assert!(view.lock.unlock(me)); // its guard unwound
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
}
