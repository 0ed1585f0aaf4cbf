//! Read-only inspection of a cache directory (`python -m warp_cache list` / `stats`).
//!
//! Rules:
//! * nothing is written and no lock is taken: files are opened read-only (`region.rs`) and
//!   *copied* with `pread` (no mapping), and every figure comes from the copy;
//! * the copy is trusted only as far as the one header check (`header.rs`) and the one
//!   invariant check (`store/validate.rs`, over the copy: `store/copy.rs`) allow (INV-7): a
//!   hostile, truncated or half-written file gives a [`Condition::Corrupt`] naming the file
//!   and what is wrong, never a panic, a hang or an allocation beyond the file's own length;
//! * a consistent copy follows the seqlock read rule (INV-S3): the sequence is even and the
//!   same before and after the data file is copied; a writer that keeps it odd is waited for
//!   a bounded time, then judged alive ([`Condition::Busy`]) or dead (an interrupted write,
//!   reported as corruption until the next writer resets the table);
//! * liveness (who holds the writer lock, who maps the pair) is judged by presence files
//!   (`liveness.rs`, INV-8): the format records liveness ids, not pids.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::header::check_header;
use super::layout::{
    word, DataHeader, Geometry, LockFile, DATA_MAGIC, ENDIAN_MARK, FORMAT_VERSION, HEADER_WORDS,
    LOCK_FILE_BYTES, LOCK_FILE_WORDS, LOCK_MAGIC, MAPPER_SLOTS, WORD_BYTES,
};
use super::liveness::{self, OwnerState};
use super::region::{CacheDir, ShmFile};
use super::store::{ShmInfo, ShmStore};
use crate::error::{Error, Result};

/// Data files larger than this are not copied whole: their figures come from the header and
/// they are reported as not validated.
pub const FULL_CHECK_BYTES_MAX: u64 = 1 << 30;
/// Attempts to copy a pair while no write section is open, and the pause between two.
const COPY_ATTEMPTS: usize = 50;
const COPY_PAUSE: Duration = Duration::from_millis(2);

/// What the inspector concluded about one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Current format, readable, and (if `validated`) every invariant holds.
    Healthy,
    /// A live writer kept a write section open for as long as the inspector waited: the
    /// figures come from an unchecked copy.
    Busy,
    /// Another format version, endianness or build: a process of this version would replace
    /// the files (INV-9), `remove --stale` removes them once nobody maps them.
    Outdated(String),
    /// `file` (a name in the directory) is damaged: `problem` says how.
    Corrupt { file: String, problem: String },
}

/// A process named by a lock file: its liveness id (the presence file `.live.<id>`) and what
/// the kernel says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub liveness_id: u64,
    pub state: OwnerState,
}

/// The parameters a data header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub capacity: u32,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub slot_bytes: u64,
    pub region_bytes: u64,
}

/// Everything the inspector read about one cache (`<stem>.data` and `<stem>.lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    pub stem: String,
    pub condition: Condition,
    /// Whether the full invariant check ran on a consistent copy and passed.
    pub validated: bool,
    pub data_file_bytes: Option<u64>,
    pub lock_file_bytes: Option<u64>,
    /// As found in the lock file (or the data file, for a lock file of this format).
    pub format_version: Option<u64>,
    pub params: Option<Params>,
    /// Counters and size (from a copy; `None` when the files could not be read that far).
    pub info: Option<ShmInfo>,
    /// Key plus value bytes of the entries (validated copies only).
    pub payload_bytes: Option<u64>,
    /// The writer lock's holder (`None`: free or unknown).
    pub lock_owner: Option<Process>,
    pub sequence: Option<u32>,
    /// The mapper table: processes that have the pair mapped.
    pub mappers: Vec<Process>,
    pub mappers_overflow: bool,
    pub epoch: Option<u64>,
    /// Set in the data header once a warp_cache process replaced or removed the pair.
    pub retired: bool,
}

impl CacheReport {
    fn new(stem: &str) -> CacheReport {
        CacheReport {
            stem: stem.to_owned(),
            condition: Condition::Healthy,
            validated: false,
            data_file_bytes: None,
            lock_file_bytes: None,
            format_version: None,
            params: None,
            info: None,
            payload_bytes: None,
            lock_owner: None,
            sequence: None,
            mappers: Vec::new(),
            mappers_overflow: false,
            epoch: None,
            retired: false,
        }
    }

    fn corrupt(mut self, file: &str, problem: impl Into<String>) -> CacheReport {
        self.condition = Condition::Corrupt {
            file: file.to_owned(),
            problem: problem.into(),
        };
        self
    }

    fn outdated(mut self, why: impl Into<String>) -> CacheReport {
        self.condition = Condition::Outdated(why.into());
        self
    }

    /// Whether the writer lock is held by a process found dead.
    pub fn lock_held_by_dead(&self) -> bool {
        self.lock_owner
            .is_some_and(|owner| owner.state == OwnerState::Dead)
    }
}

/// A cache directory's caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirReport {
    pub dir: PathBuf,
    /// False: the directory does not exist (nothing was created).
    pub exists: bool,
    pub caches: Vec<CacheReport>,
    /// Presence files (`.live.*`: one per process using the directory, dead ones included
    /// until swept) and temporary files (`.tmp.*`).
    pub presence_files: usize,
    pub temp_files: usize,
}

/// The stems of the caches in a listing: names ending in `.data` or `.lock` that are not
/// presence or temporary files, sorted, each once.
pub fn stems(names: &[String]) -> Vec<String> {
    let mut stems: Vec<String> = names
        .iter()
        .filter(|name| !name.starts_with('.'))
        .filter_map(|name| {
            name.strip_suffix(".data")
                .or_else(|| name.strip_suffix(".lock"))
        })
        .filter(|stem| !stem.is_empty())
        .map(str::to_owned)
        .collect();
    stems.sort();
    stems.dedup();
    stems
}

/// Opens an existing directory without creating it (`Ok(None)`: there is none).
pub fn open_existing_dir(path: &Path) -> Result<Option<CacheDir>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot stat {}", path.display()), &e)),
        Ok(_) => CacheDir::open(path).map(Some),
    }
}

/// Inspects every cache in `path` (`stem`: only that one, if present).
pub fn inspect_dir(path: &Path, stem: Option<&str>) -> Result<DirReport> {
    let mut report = DirReport {
        dir: path.to_owned(),
        exists: false,
        caches: Vec::new(),
        presence_files: 0,
        temp_files: 0,
    };
    let Some(dir) = open_existing_dir(path)? else {
        return Ok(report);
    };
    report.exists = true;
    let names = dir.names()?;
    report.presence_files = names
        .iter()
        .filter(|n| n.starts_with(liveness::PRESENCE_PREFIX))
        .count();
    report.temp_files = names
        .iter()
        .filter(|n| n.starts_with(liveness::TEMP_PREFIX))
        .count();
    report.caches = stems(&names)
        .into_iter()
        .filter(|s| stem.is_none_or(|wanted| wanted == s))
        .map(|s| inspect_pair(&dir, &s))
        .collect();
    Ok(report)
}

fn word_at(bytes: &[u8], index: usize) -> Option<u64> {
    let start = index.checked_mul(WORD_BYTES)?;
    let chunk = bytes.get(start..start.checked_add(WORD_BYTES)?)?;
    Some(u64::from_ne_bytes(chunk.try_into().ok()?))
}

fn to_atomics(bytes: &[u8]) -> Box<[AtomicU64]> {
    bytes
        .chunks_exact(WORD_BYTES)
        .map(|c| AtomicU64::new(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect()
}

/// The first `len` bytes of `file` (fallible allocation: `len` is at most the file's length).
fn read_prefix(file: &ShmFile, len: u64) -> std::result::Result<Vec<u8>, String> {
    let len = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit in memory"))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| format!("cannot allocate {len} bytes to copy it"))?;
    bytes.resize(len, 0);
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

fn process(dir: &CacheDir, liveness_id: u64) -> Process {
    Process {
        liveness_id,
        // `me` = 0: the inspector has no presence of its own and holds nothing.
        state: liveness::owner_state(dir, liveness_id, 0),
    }
}

fn open_read_only(dir: &CacheDir, name: &str) -> std::result::Result<(ShmFile, u64), String> {
    match dir.open_file_read_only(name) {
        Ok(Some(file)) => match file.current_len() {
            Ok(len) => Ok((file, len)),
            Err(e) => Err(e.message),
        },
        Ok(None) => Err("is missing (the pair is incomplete)".to_owned()),
        Err(e) => Err(e.message),
    }
}

/// Inspects the pair `<stem>.data` / `<stem>.lock` of `dir`.
pub fn inspect_pair(dir: &CacheDir, stem: &str) -> CacheReport {
    let report = CacheReport::new(stem);
    let lock_name = format!("{stem}.lock");
    let data_name = format!("{stem}.data");
    // 1. The lock file: identity, then the writer lock and the mapper table.
    let (lock_file, lock_len) = match open_read_only(dir, &lock_name) {
        Ok(found) => found,
        Err(problem) => return report.corrupt(&lock_name, problem),
    };
    let mut report = CacheReport {
        lock_file_bytes: Some(lock_len),
        ..report
    };
    let lock = match read_prefix(&lock_file, lock_len.min(LOCK_FILE_BYTES)) {
        Ok(bytes) => bytes,
        Err(problem) => return report.corrupt(&lock_name, problem),
    };
    let identity = |index| word_at(&lock, index);
    if identity(word!(LockFile, magic)) != Some(LOCK_MAGIC) {
        return report.corrupt(&lock_name, "is not a warp_cache lock file (no magic)");
    }
    if identity(word!(LockFile, endian)) != Some(ENDIAN_MARK) {
        return report.outdated("written on a machine of the other byte order");
    }
    let version = identity(word!(LockFile, format_version));
    report.format_version = version;
    if version != Some(FORMAT_VERSION) {
        let found = version.map_or("unreadable".to_owned(), |v| v.to_string());
        return report.outdated(format!(
            "format version {found}; this warp_cache reads version {FORMAT_VERSION}"
        ));
    }
    if lock_len < LOCK_FILE_BYTES {
        return report.corrupt(
            &lock_name,
            format!("is truncated: {lock_len} bytes, a lock file has {LOCK_FILE_BYTES}"),
        );
    }
    read_lock_figures(dir, &lock, &mut report);
    // 2. The data file's header.
    let (data_file, data_len) = match open_read_only(dir, &data_name) {
        Ok(found) => found,
        Err(problem) => return report.corrupt(&data_name, problem),
    };
    report.data_file_bytes = Some(data_len);
    let header_bytes = (HEADER_WORDS * WORD_BYTES) as u64;
    if data_len < header_bytes {
        return report.corrupt(
            &data_name,
            format!("is truncated: {data_len} bytes, its header alone has {header_bytes}"),
        );
    }
    let header_copy = match read_prefix(&data_file, header_bytes) {
        Ok(bytes) => bytes,
        Err(problem) => return report.corrupt(&data_name, problem),
    };
    let header: Vec<u64> = (0..HEADER_WORDS)
        .map(|i| word_at(&header_copy, i).unwrap_or(0))
        .collect();
    let lock_nonce = word_at(&lock, word!(LockFile, nonce)).unwrap_or(0);
    let geometry = match header_geometry(&header, lock_nonce) {
        Ok(geometry) => geometry,
        Err(Verdict::Outdated(why)) => return report.outdated(why),
        Err(Verdict::Corrupt(problem)) => return report.corrupt(&data_name, problem),
    };
    report.params = Some(Params {
        capacity: geometry.capacity,
        key_bytes_max: geometry.key_bytes_max,
        value_bytes_max: geometry.value_bytes_max,
        slot_bytes: geometry.slot_bytes(),
        region_bytes: geometry.region_bytes,
    });
    report.epoch = Some(header[word!(DataHeader, epoch)]);
    report.retired = header[word!(DataHeader, retired)] != 0;
    // The fixed part and the heap bytes the writers made real must all be in the file.
    let needed_bytes = geometry.fixed_bytes
        + header[word!(DataHeader, heap_committed)]
            .min(geometry.region_bytes - geometry.fixed_bytes);
    if data_len < needed_bytes {
        return report.corrupt(
            &data_name,
            format!("is truncated: {data_len} bytes, its header's layout needs {needed_bytes}"),
        );
    }
    if geometry.region_bytes > FULL_CHECK_BYTES_MAX {
        // Figures of the header only; not validated.
        report.info = Some(ShmInfo {
            current_size: header[word!(DataHeader, sieve_len)].min(u64::from(geometry.capacity)),
            capacity: geometry.capacity,
            resets: header[word!(DataHeader, resets)],
            ..ShmInfo::default()
        });
        return report;
    }
    // 3. A consistent copy of the pair, then the one invariant check over it.
    check_copy(dir, &lock_file, &data_file, &data_name, geometry, report)
}

fn read_lock_figures(dir: &CacheDir, lock: &[u8], report: &mut CacheReport) {
    let state = word_at(lock, word!(LockFile, state)).unwrap_or(0);
    report.sequence = Some(state as u32);
    let owner = state >> 32;
    report.lock_owner = (owner != 0).then(|| process(dir, owner));
    let start = word!(LockFile, mappers);
    report.mappers = (start..start + MAPPER_SLOTS)
        .filter_map(|i| word_at(lock, i))
        .filter(|&id| id != 0)
        .map(|id| process(dir, id))
        .collect();
    report.mappers_overflow = word_at(lock, word!(LockFile, mappers_overflow)).unwrap_or(0) != 0;
}

enum Verdict {
    Outdated(String),
    Corrupt(String),
}

/// The layout a data header declares, checked word by word against the one header check.
fn header_geometry(header: &[u64], lock_nonce: u64) -> std::result::Result<Geometry, Verdict> {
    let at = |index: usize| header.get(index).copied().unwrap_or(0);
    if at(word!(DataHeader, magic)) != DATA_MAGIC {
        return Err(Verdict::Corrupt(
            "is not a warp_cache data file (no magic)".into(),
        ));
    }
    if at(word!(DataHeader, endian)) != ENDIAN_MARK {
        return Err(Verdict::Outdated(
            "written on a machine of the other byte order".into(),
        ));
    }
    let version = at(word!(DataHeader, format_version));
    if version != FORMAT_VERSION {
        return Err(Verdict::Outdated(format!(
            "data file of format version {version}; this warp_cache reads version {FORMAT_VERSION}"
        )));
    }
    let codec = at(word!(DataHeader, codec_version));
    if codec != u64::from(crate::codec::CODEC_VERSION) {
        return Err(Verdict::Outdated(format!(
            "values of codec version {codec}; this warp_cache writes version {}",
            crate::codec::CODEC_VERSION
        )));
    }
    if at(word!(DataHeader, hash_algo_id)) != crate::hash::hash_algo_id() {
        return Err(Verdict::Outdated(
            "keys hashed by another build of warp_cache".into(),
        ));
    }
    let limit = |index: usize, what: &str| {
        u32::try_from(at(index)).map_err(|_| {
            Verdict::Corrupt(format!(
                "header says {what} = {}, more than any cache can have",
                at(index)
            ))
        })
    };
    let geometry = Geometry::new(
        limit(word!(DataHeader, capacity), "max_size")?,
        limit(word!(DataHeader, key_bytes_max), "max_key_size")?,
        limit(word!(DataHeader, value_bytes_max), "max_value_size")?,
        Some(at(word!(DataHeader, budget_bytes))),
    )
    .map_err(|e| Verdict::Corrupt(format!("header parameters are impossible: {}", e.message)))?;
    check_header(header, &geometry, Some(lock_nonce)).map_err(|mismatch| {
        if mismatch.word == word!(DataHeader, lock_nonce) {
            Verdict::Corrupt(format!(
                "belongs to another lock file (lock nonce {:#x}, the lock file's is {:#x})",
                mismatch.found.unwrap_or(0),
                mismatch.expected
            ))
        } else {
            Verdict::Corrupt(format!(
                "header word {} ({}) is {}, its parameters give {}",
                mismatch.word,
                header_field_name(mismatch.word),
                mismatch.found.unwrap_or(0),
                mismatch.expected
            ))
        }
    })?;
    Ok(geometry)
}

/// The name of a parameter-block word (for messages).
fn header_field_name(index: usize) -> &'static str {
    const NAMES: [(usize, &str); 10] = [
        (word!(DataHeader, slot_bytes), "slot_bytes"),
        (word!(DataHeader, bucket_count), "bucket_count"),
        (word!(DataHeader, stripe_count), "stripe_count"),
        (word!(DataHeader, stripes_offset), "stripes_offset"),
        (word!(DataHeader, table_offset), "table_offset"),
        (word!(DataHeader, arena_offset), "arena_offset"),
        (word!(DataHeader, region_bytes), "region_bytes"),
        (word!(DataHeader, capacity), "capacity"),
        (word!(DataHeader, key_bytes_max), "key_bytes_max"),
        (word!(DataHeader, value_bytes_max), "value_bytes_max"),
    ];
    NAMES
        .iter()
        .find(|(i, _)| *i == index)
        .map_or("parameter", |(_, name)| name)
}

/// Copies the pair until the copy is consistent (INV-S3), then validates it.
fn check_copy(
    dir: &CacheDir,
    lock_file: &ShmFile,
    data_file: &ShmFile,
    data_name: &str,
    geometry: Geometry,
    mut report: CacheReport,
) -> CacheReport {
    let state_offset = (word!(LockFile, state) * WORD_BYTES) as u64;
    let read_state = || {
        let mut word = [0u8; WORD_BYTES];
        lock_file
            .read_exact_at(&mut word, state_offset)
            .ok()
            .map(|()| u64::from_ne_bytes(word))
    };
    let mut last = None;
    for attempt in 0..COPY_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(COPY_PAUSE);
        }
        let Some(before) = read_state() else {
            continue;
        };
        // The heap past what the file holds was never made real: it reads as zeros.
        let file_len = data_file.current_len().unwrap_or(0);
        let data = match read_prefix(data_file, file_len.min(geometry.region_bytes)) {
            Ok(bytes) => bytes,
            Err(problem) => return report.corrupt(data_name, problem),
        };
        let Ok(lock) = read_prefix(lock_file, LOCK_FILE_BYTES) else {
            continue;
        };
        let after = word_at(&lock, word!(LockFile, state)).unwrap_or(0);
        let consistent = before as u32 & 1 == 0 && before as u32 == after as u32;
        last = Some((data, lock, consistent, after));
        if consistent {
            break;
        }
    }
    let Some((data, lock, consistent, state)) = last else {
        return report.corrupt(data_name, "could not be read consistently");
    };
    read_lock_figures(dir, &lock, &mut report);
    if lock.len() < LOCK_FILE_WORDS * WORD_BYTES {
        return report.corrupt(data_name, "its lock file shrank while it was read");
    }
    // The heap past the file's end was never made real: zeros (region_bytes <= 1 GiB here).
    let mut data = data;
    if (data.len() as u64) < geometry.region_bytes
        && data
            .try_reserve_exact(geometry.region_bytes as usize - data.len())
            .is_ok()
    {
        data.resize(geometry.region_bytes as usize, 0);
    }
    let Some(store) = ShmStore::over_copies(geometry, to_atomics(&data), to_atomics(&lock)) else {
        return report.corrupt(data_name, "shrank while it was read");
    };
    report.info = store.info_copy().ok();
    if !consistent {
        // Still odd at the last look and nobody alive holds the lock: an interrupted write
        // (what a reader would recover from, INV-8). Else writers were busy all along.
        let odd = state as u32 & 1 == 1;
        return match report.lock_owner {
            Some(p) if odd && p.state == OwnerState::Dead => report.corrupt(
                data_name,
                format!(
                    "was left in the middle of a write: its writer (presence {}) died; the next \
                     write to this cache resets it",
                    liveness::presence_name(p.liveness_id)
                ),
            ),
            None if odd => report.corrupt(
                data_name,
                "was left in the middle of a write, and no writer holds the lock; the next \
                 write to this cache resets it",
            ),
            _ => CacheReport {
                condition: Condition::Busy,
                ..report
            },
        };
    }
    match store.validate_copy() {
        Ok(()) => {
            report.validated = true;
            report.payload_bytes = store.payload_bytes_copy().ok();
            report
        }
        Err(corruption) => report.corrupt(data_name, format!("fails its check: {corruption}")),
    }
}

#[cfg(test)]
#[path = "inspect/tests.rs"]
pub(crate) mod tests;
