//! The life of a cache's file pair: opening, creating and replacing it (INV-9, INV-S2), the
//! *generations* a store moves through when its files are replaced or removed under it, the
//! mapper table that tells cleaners which live processes use a pair, and removing the files
//! of other code versions of the same function that nobody uses any more.
//!
//! Following files (a process must notice that its files were replaced or removed):
//! * a warp_cache process that replaces a pair sets `retired` in the old data header after
//!   publishing the new file; every read loads that word, so users move at their next call;
//! * a pair removed by someone else (`rm -rf` of the directory) is noticed by the store's
//!   rate-limited name check (`store.rs`, [`FILE_CHECK_EVERY_NS`]).
//!
//! A store never unmaps a generation while it lives (another thread may still be reading it);
//! a generation it leaves is *detached* instead ([`Mapping::detach`]): its addresses stay
//! valid but read zeros and no longer hold the file's memory.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::header::{
    check_header, init_data_words, init_lock_words, lock_nonce_of, lock_words_valid, random_nonce,
};
use super::layout::{
    word, DataHeader, Geometry, LockFile, HEADER_WORDS, LOCK_FILE_BYTES, LOCK_FILE_WORDS,
    MAPPER_SLOTS, WORD_BYTES,
};
use super::liveness::{self, DirLiveness, OwnerState};
use super::region::{self, CacheDir, FileId, Mapping, ShmFile};
use super::seqlock::SeqLock;
use crate::error::{Error, ErrorKind, Result};

/// How long file replacement waits for the writer lock.
pub const REPLACE_LOCK_WAIT: Duration = Duration::from_secs(2);
/// A store re-checks its names at most this often.
pub const FILE_CHECK_EVERY_NS: u64 = 100_000_000;
/// Attempts to open a stable pair of files while other processes create or replace them.
const OPEN_ATTEMPTS: usize = 16;
/// A directory listing is reused for this long by the version cleaner (decorating thousands
/// of functions lists the directory once, not once each).
const LISTING_REUSE_NS: u64 = 2_000_000_000;

/// Names of one cache's files.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir_path: PathBuf,
    pub stem: String,
    pub data_name: String,
    pub lock_name: String,
    /// `<family>.`: the stem of every code version of the same function starts with it and
    /// ends with 16 hex digits (`None` when the name has no such shape).
    pub family_prefix: Option<String>,
}

impl Files {
    /// The files of cache `name` in `dir_path`. A name of the shape `<family>.<16 hex>` (the
    /// Python layer's `module.qualname.fingerprint`) keeps that shape after sanitizing, so
    /// that other versions of the same function can be recognized.
    pub fn new(dir_path: PathBuf, name: &str) -> Files {
        let split = name
            .rsplit_once('.')
            .filter(|(family, fp)| !family.is_empty() && is_fingerprint(fp));
        let (stem, family_prefix) = match split {
            Some((family, fp)) => {
                // Room for ".<16 hex>.data": file names stay within the plain-name limit.
                let family = region::sanitize_name_within(family, region::NAME_MAX_PLAIN - 22);
                (format!("{family}.{fp}"), Some(format!("{family}.")))
            }
            None => (region::sanitize_name(name), None),
        };
        Files {
            dir_path,
            data_name: format!("{stem}.data"),
            lock_name: format!("{stem}.lock"),
            stem,
            family_prefix,
        }
    }

    pub fn open_dir(&self) -> Result<CacheDir> {
        CacheDir::open(&self.dir_path)
    }
}

fn is_fingerprint(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The words of one file of a generation.
pub enum Backing {
    Mapped(Mapping),
    Heap(Box<[AtomicU64]>),
}

impl Backing {
    #[inline(always)]
    pub fn words(&self) -> &[AtomicU64] {
        match self {
            Backing::Mapped(mapping) => mapping.words(),
            Backing::Heap(words) => words,
        }
    }

    pub fn file_id(&self) -> Option<FileId> {
        match self {
            Backing::Mapped(mapping) => Some(mapping.id()),
            Backing::Heap(_) => None,
        }
    }

    /// Bytes the file must keep (0 for heap words: they cannot shrink).
    pub fn mapped_bytes(&self) -> u64 {
        match self {
            Backing::Mapped(mapping) => mapping.len_bytes(),
            Backing::Heap(_) => 0,
        }
    }

    /// Whether the SIGBUS safety net watches this mapping (heap words cannot be truncated).
    #[inline]
    pub fn guarded(&self) -> bool {
        match self {
            Backing::Mapped(mapping) => mapping.guarded(),
            Backing::Heap(_) => true,
        }
    }

    /// Whether the SIGBUS safety net patched this mapping (INV-S6).
    #[inline]
    pub fn faulted(&self) -> bool {
        match self {
            Backing::Mapped(mapping) => mapping.faulted(),
            Backing::Heap(_) => false,
        }
    }

    pub(super) fn detach(&self) {
        if let Backing::Mapped(mapping) = self {
            mapping.detach();
        }
    }
}

/// Heap words for a store that lives in this process only.
pub fn heap_words(count: usize) -> Result<Box<[AtomicU64]>> {
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

/// One pair of mapped files (or heap regions) a store uses.
pub struct Generation {
    pub data: Backing,
    pub lock: Backing,
    /// The directory the pair was opened in (`None`: heap).
    pub dir_id: Option<FileId>,
}

impl Generation {
    pub fn heap(data: Box<[AtomicU64]>, lock: Box<[AtomicU64]>) -> Generation {
        Generation {
            data: Backing::Heap(data),
            lock: Backing::Heap(lock),
            dir_id: None,
        }
    }

    /// Whether a warp_cache process replaced or removed this pair.
    #[inline(always)]
    pub fn retired(&self) -> bool {
        self.data
            .words()
            .get(word!(DataHeader, retired))
            .is_some_and(|w| w.load(Relaxed) != 0)
    }

    pub fn faulted(&self) -> bool {
        self.data.faulted() || self.lock.faulted()
    }

    /// The lock-file words of the mapper table.
    fn mappers(&self) -> &[AtomicU64] {
        let start = word!(LockFile, mappers);
        self.lock
            .words()
            .get(start..start + MAPPER_SLOTS)
            .unwrap_or(&[])
    }

    /// Forgets that this process maps the pair (the store is done with it).
    pub fn unregister_mapper(&self, me: u64) {
        for slot in self.mappers() {
            let _ = slot.compare_exchange(me, 0, Relaxed, Relaxed);
        }
    }
}

/// Records `me` in the mapper table of a lock file image, reclaiming entries of dead
/// processes; when every entry belongs to a live process, sets the overflow flag (the files
/// are then never removed as unused).
fn register_mapper(lock: &[AtomicU64], me: u64, dir: &CacheDir) {
    let start = word!(LockFile, mappers);
    let Some(slots) = lock.get(start..start + MAPPER_SLOTS) else {
        return;
    };
    if slots.iter().any(|s| s.load(Relaxed) == me) {
        return;
    }
    for slot in slots {
        if slot.compare_exchange(0, me, Relaxed, Relaxed).is_ok() {
            return;
        }
    }
    for slot in slots {
        let occupant = slot.load(Relaxed);
        if liveness::owner_state(dir, occupant, me) == OwnerState::Dead
            && slot
                .compare_exchange(occupant, me, Relaxed, Relaxed)
                .is_ok()
        {
            return;
        }
    }
    if let Some(overflow) = lock.get(word!(LockFile, mappers_overflow)) {
        overflow.store(1, Relaxed);
    }
}

/// Whether an existing data file has exactly our parameters (and, if given, belongs to the
/// lock file of nonce `lock_nonce`).
pub fn data_file_fits(file: &ShmFile, geometry: &Geometry, lock_nonce: Option<u64>) -> bool {
    let Ok(len) = file.current_len() else {
        return false;
    };
    len >= geometry.fixed_bytes
        && read_words(file, HEADER_WORDS)
            .is_some_and(|header| check_header(&header, geometry, lock_nonce).is_ok())
}

/// The first `count` words of a file, read without mapping it.
fn read_words(file: &ShmFile, count: usize) -> Option<Vec<u64>> {
    let mut bytes = vec![0u8; count * WORD_BYTES];
    file.read_exact_at(&mut bytes, 0).ok()?;
    Some(
        bytes
            .chunks_exact(WORD_BYTES)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
    )
}

/// Marks a data file as retired (after another file was published at its name): processes
/// still using it move on at their next call. Best effort: a file too short to hold a header
/// is left alone (it never had valid contents).
pub(crate) fn mark_retired(file: &ShmFile) {
    let offset = (word!(DataHeader, retired) * WORD_BYTES) as u64;
    let _ = file.write_inside(&1u64.to_ne_bytes(), offset);
}

fn map_lock(file: ShmFile) -> Result<Option<Mapping>> {
    if file.current_len()? < LOCK_FILE_BYTES {
        return Ok(None);
    }
    let mapping = Mapping::map(file, LOCK_FILE_BYTES)?;
    Ok(lock_words_valid(mapping.words()).then_some(mapping))
}

fn create_lock(files: &Files, dir: &CacheDir, me: u64) -> Result<(Mapping, String)> {
    let prefix = liveness::temp_prefix(me);
    let (file, tmp) = dir.create_temp(&prefix, &files.stem, LOCK_FILE_BYTES)?;
    let mapping = match Mapping::map(file, LOCK_FILE_BYTES) {
        Ok(m) => m,
        Err(e) => {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
    };
    init_lock_words(mapping.words(), random_nonce());
    Ok((mapping, tmp))
}

fn create_data(
    files: &Files,
    dir: &CacheDir,
    geometry: &Geometry,
    lock_nonce: u64,
    me: u64,
) -> Result<(Mapping, String)> {
    let prefix = liveness::temp_prefix(me);
    // Only the fixed part is made real now; the heap grows under the writer lock.
    let (file, tmp) = dir.create_temp(&prefix, &files.stem, geometry.fixed_bytes)?;
    let mapping = match Mapping::map_growable(file, geometry.region_bytes, geometry.fixed_bytes) {
        Ok(m) => m,
        Err(e) => {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
    };
    init_data_words(mapping.words(), geometry, lock_nonce);
    Ok((mapping, tmp))
}

pub fn busy_error(dir: &CacheDir, owner: u64) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "the shared cache's writer lock in {} is held by a live process (presence {}; \
             stopped or stuck?); try again, or stop that process",
            dir.path().display(),
            liveness::presence_name(owner)
        ),
    )
}

/// Opens a consistent (lock, data) pair in `dir`, creating missing files or (if `replace`)
/// replacing mismatched ones; registers `me` as a mapper of the pair.
pub fn open_generation(
    files: &Files,
    dir: &CacheDir,
    geometry: &Geometry,
    replace: bool,
    me: u64,
) -> Result<Generation> {
    let mismatch = |what: &str| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{what} has other parameters; not replacing it"),
        )
    };
    for _attempt in 0..OPEN_ATTEMPTS {
        // 1. The lock file.
        let lock = match dir.open_file(&files.lock_name)? {
            Some(file) => match map_lock(file)? {
                Some(mapping) => mapping,
                None if replace => {
                    let (mapping, tmp) = create_lock(files, dir, me)?;
                    dir.replace(&tmp, &files.lock_name)?;
                    mapping
                }
                None => return Err(mismatch("lock file")),
            },
            None => {
                let (mapping, tmp) = create_lock(files, dir, me)?;
                if !dir.publish(&tmp, &files.lock_name)? {
                    continue; // another process created it first: open theirs
                }
                mapping
            }
        };
        let lock_nonce = lock_nonce_of(lock.words());
        // 2. The data file, paired with that lock file (INV-S2).
        let data = match dir.open_file(&files.data_name)? {
            Some(file) if data_file_fits(&file, geometry, Some(lock_nonce)) => {
                Mapping::map_growable(file, geometry.region_bytes, geometry.fixed_bytes)?
            }
            Some(_) if !replace => return Err(mismatch("data file")),
            Some(_) => {
                // Replace under the writer lock so concurrent replacers agree on one file.
                let lock_words = lock.words();
                let seqlock = SeqLock::with_waiters(
                    &lock_words[word!(LockFile, state)],
                    &lock_words[word!(LockFile, lock_waiters)],
                );
                let liveness = DirLiveness { dir, me };
                if !seqlock.acquire(me, REPLACE_LOCK_WAIT, &liveness).held() {
                    return Err(busy_error(dir, seqlock.owner()));
                }
                let mapped = (|| match dir.open_file(&files.data_name)? {
                    Some(file) if data_file_fits(&file, geometry, Some(lock_nonce)) => {
                        Mapping::map_growable(file, geometry.region_bytes, geometry.fixed_bytes)
                    }
                    old => {
                        let (mapping, tmp) = create_data(files, dir, geometry, lock_nonce, me)?;
                        dir.replace(&tmp, &files.data_name)?;
                        if let Some(old) = old {
                            mark_retired(&old);
                        }
                        Ok(mapping)
                    }
                })();
                seqlock.unlock(me);
                mapped?
            }
            None => {
                let (mapping, tmp) = create_data(files, dir, geometry, lock_nonce, me)?;
                if !dir.publish(&tmp, &files.data_name)? {
                    continue;
                }
                mapping
            }
        };
        // 3. Both names must still point at what we mapped; else someone replaced one of
        // them meanwhile: start over.
        if dir.file_id(&files.lock_name)? == Some(lock.id())
            && dir.file_id(&files.data_name)? == Some(data.id())
        {
            register_mapper(lock.words(), me, dir);
            return Ok(Generation {
                data: Backing::Mapped(data),
                lock: Backing::Mapped(lock),
                dir_id: Some(dir.id()?),
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
            dir.path().display()
        ),
    ))
}

/// Removes the files of other code versions of `files`' function (same family, another
/// fingerprint) that no live process maps: their lock file's mapper table and writer lock
/// name no live process, and no process overflowed the table. Files of another format
/// version, or that cannot be read, are left alone (`python -m warp_cache remove --stale`
/// is the tool for those). Returns the stems removed.
pub fn remove_unused_versions(files: &Files, dir: &CacheDir, me: u64) -> Vec<String> {
    let Some(prefix) = &files.family_prefix else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in cached_listing(dir) {
        let Some(stem) = name.strip_suffix(".lock") else {
            continue;
        };
        let Some(fingerprint) = stem.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if !is_fingerprint(fingerprint) || stem == files.stem {
            continue;
        }
        if unused_pair(dir, &name, me) {
            if let Ok(Some(data)) = dir.open_file(&format!("{stem}.data")) {
                mark_retired(&data);
            }
            let data_gone = dir.remove(&format!("{stem}.data")).is_ok();
            if dir.remove(&name).is_ok() && data_gone {
                removed.push(stem.to_owned());
            }
        }
    }
    removed
}

/// Whether the lock file `lock_name` is of this format and names no live process.
pub(crate) fn unused_pair(dir: &CacheDir, lock_name: &str, me: u64) -> bool {
    let Ok(Some(file)) = dir.open_file(lock_name) else {
        return false;
    };
    let Some(words) = read_words(&file, LOCK_FILE_WORDS) else {
        return false;
    };
    let atomics: Vec<AtomicU64> = words.into_iter().map(AtomicU64::new).collect();
    if !lock_words_valid(&atomics) {
        return false;
    }
    let word_at = |index: usize| atomics.get(index).map_or(0, |w| w.load(Relaxed));
    if word_at(word!(LockFile, mappers_overflow)) != 0 {
        return false;
    }
    let start = word!(LockFile, mappers);
    let owners = (start..start + MAPPER_SLOTS)
        .map(word_at)
        .chain([word_at(word!(LockFile, state)) >> 32]);
    let mut all_dead = true;
    for id in owners.filter(|&id| id != 0) {
        if liveness::owner_state(dir, id, me) != OwnerState::Dead {
            all_dead = false;
            break;
        }
    }
    all_dead
}

/// The names in `dir`, listed at most once per [`LISTING_REUSE_NS`] per directory.
fn cached_listing(dir: &CacheDir) -> Vec<String> {
    type Listings = HashMap<FileId, (u64, std::sync::Arc<Vec<String>>)>;
    static LISTINGS: OnceLock<Mutex<Listings>> = OnceLock::new();
    let Ok(id) = dir.id() else {
        return Vec::new();
    };
    let now = crate::clock::coarse_now_ns();
    let listings = LISTINGS.get_or_init(Default::default);
    if let Ok(cache) = listings.try_lock() {
        if let Some((at, names)) = cache.get(&id) {
            if now.saturating_sub(*at) < LISTING_REUSE_NS {
                return names.as_ref().clone();
            }
        }
    }
    let names = dir.names().unwrap_or_default();
    if let Ok(mut cache) = listings.try_lock() {
        cache.insert(id, (now, std::sync::Arc::new(names.clone())));
    }
    names
}

/// The length of the file `name` in `dir` if it is still `id` (`None`: another file or none).
pub fn len_if_same(dir: &CacheDir, name: &str, id: Option<FileId>) -> Option<u64> {
    match dir.stat_name(name) {
        Ok(Some((found, len))) if Some(found) == id => Some(len),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_family_and_fingerprint() {
        let files = Files::new("/d".into(), "pkg.mod.func.0123456789abcdef");
        assert_eq!(files.stem, "pkg.mod.func.0123456789abcdef");
        assert_eq!(files.family_prefix.as_deref(), Some("pkg.mod.func."));
        assert_eq!(files.data_name, "pkg.mod.func.0123456789abcdef.data");
        let odd = Files::new("/d".into(), "m.<lambda>.00000000000000ff");
        assert!(odd.stem.ends_with(".00000000000000ff"), "{}", odd.stem);
        assert!(odd
            .family_prefix
            .as_deref()
            .is_some_and(|p| odd.stem.starts_with(p)));
        let plain = Files::new("/d".into(), "unit");
        assert_eq!((plain.stem.as_str(), plain.family_prefix), ("unit", None));
    }
}
