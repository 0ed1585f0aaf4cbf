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

use super::files::{self, heap_words, open_generation, Files, Generation};
use super::generations::Generations;
use super::header::{init_data_words, init_lock_words, random_nonce};
use super::layout::{Geometry, LOCK_FILE_WORDS};
use super::liveness::{self};
use super::raw;
use super::region::{self};
use crate::error::{Error, ErrorKind, Result};
pub use crate::hash::{hash_algo_id, key_hash};

mod copy;
mod existing;
mod flight;
mod follow;
#[cfg(any(test, fuzzing, feature = "testkit"))]
mod image;
mod read;
mod stripes;
#[cfg(test)]
mod tests;
mod validate;
mod view;
mod write;

pub use flight::{FlightClaim, FlightMark, FlightWait, FLIGHT_LIVENESS_EVERY};
use stripes::stripe_hint;
pub use stripes::StripeHint;
use view::{ReadView, View};
use write::OwnerCheck;

/// How long an insert waits for a lock held by a live process before skipping.
pub const LOCK_WAIT: Duration = Duration::from_millis(100);
/// ... and for one hold that makes no progress (the holder descheduled or stopped: its
/// owner and sequence unchanged): skipping one insert costs one later miss, waiting costs
/// every writer the holder's time off the CPU (docs/performance.md, issue 12).
pub const INSERT_PATIENCE: Duration = Duration::from_micros(100);
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
    /// Byte budget of the data file (`max_bytes`); `None` = the default of
    /// [`Geometry::new`].
    pub max_bytes: Option<u64>,
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
    /// The file could not grow: the filesystem is full (counted in `space_skips`).
    NoSpace,
}

/// Counters and sizes, shared by every process using the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShmInfo {
    pub hits: u64,
    pub misses: u64,
    pub oversize_skips: u64,
    /// Inserts skipped because the file could not grow (the filesystem was full).
    pub space_skips: u64,
    /// Contention: lock-free reads redone or held up by a write in progress, and writer-lock
    /// acquisitions that waited for another writer.
    pub read_retries: u64,
    pub lock_waits: u64,
    /// Inserts skipped because a live process held the writer lock without progress.
    pub lock_skips: u64,
    pub current_size: u64,
    pub capacity: u32,
    /// Times the table was reset after a crash or corruption (diagnostics).
    pub resets: u64,
    /// Times a waiter took the writer lock over from a process found dead (diagnostics).
    pub takeovers: u64,
    /// The extent heap: compactions run, bytes below the bump pointer, bytes made real.
    pub heap_compactions: u64,
    pub heap_bump_bytes: u64,
    pub heap_committed_bytes: u64,
}

impl ShmInfo {
    /// What `cache_info()` reports of these counters.
    pub fn cache_stats(&self) -> crate::stats::CacheStats {
        crate::stats::CacheStats {
            hits: self.hits,
            misses: self.misses,
            max_size: u64::from(self.capacity),
            current_size: self.current_size,
            oversize_skips: Some(self.oversize_skips),
            space_skips: Some(self.space_skips),
            read_retries: Some(self.read_retries),
            lock_waits: Some(self.lock_waits),
            lock_skips: Some(self.lock_skips),
        }
    }
}

/// Where a file-backed store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmPaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub lock: PathBuf,
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
    /// An odd slot sequence a reader already waited out with a live writer (`slot << 32 |
    /// low 32 bits of the sequence`): later reads seeing it miss at once instead of waiting
    /// again.
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
            config.max_bytes,
        )?;
        let dir_path = config.dir.clone().unwrap_or_else(region::default_dir);
        let files = Files::new(dir_path, &config.name);
        let dir = files.open_dir()?;
        // A data file will have to be created: fail on space before creating anything.
        let reusable = dir
            .open_file(&files.data_name)?
            .is_some_and(|file| files::data_file_fits(&file, &geometry, None));
        if !reusable {
            dir.check_free_space(geometry.fixed_bytes)?;
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
            config.max_bytes,
        )?;
        let lock = heap_words(LOCK_FILE_WORDS)?;
        let nonce = random_nonce();
        init_lock_words(&lock, nonce);
        let data = heap_words(geometry.region_words())?;
        init_data_words(&data, &geometry, nonce);
        Ok(Self::over_heap(geometry, config.ttl_ns, data, lock))
    }

    /// A store over the given heap words (no files, no fork bookkeeping).
    fn over_heap(
        geometry: Geometry,
        ttl_ns: Option<u64>,
        data: Box<[AtomicU64]>,
        lock: Box<[AtomicU64]>,
    ) -> ShmStore {
        Self::with_generation(geometry, ttl_ns, None, Generation::heap(data, lock))
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
            last_file_check_ns: AtomicU64::new(crate::clock::coarse_now_ns()),
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

    /// The byte budget (`max_bytes`): the most the data file grows to, and what is mapped.
    pub fn region_bytes(&self) -> u64 {
        self.geometry.region_bytes
    }

    /// Pairs of files this store moved to after the first (diagnostics: a replacement, a
    /// truncation or a retirement each move it once).
    pub fn moves(&self) -> usize {
        self.generations.current_index()
    }

    /// Bytes of the data file made real at creation (header, counters, table, slots).
    pub fn fixed_bytes(&self) -> u64 {
        self.geometry.fixed_bytes
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
