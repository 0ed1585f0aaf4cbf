//! Who is alive, from the kernel (INV-8): the writer-lock owner word and the mapper table hold
//! *liveness ids*, not pids.
//!
//! A pid means different things in different PID namespaces (two containers sharing
//! `/dev/shm` may both run their worker as pid 1), so a waiter judging an owner by
//! `kill(pid, 0)` in its own namespace could take the lock from a live writer. Instead each
//! process that uses a cache directory creates one *presence file* there,
//! `.live.<8 hex digits of a random 32-bit id>`, and holds an exclusive `flock` on it for as long as
//! it lives. The kernel drops that lock when the last descriptor of the open file description
//! closes, which happens when the process dies, whatever namespace it is in; so "the presence
//! file of id X exists and is locked" is exactly "process X is alive", checked by any process
//! that sees the directory ([`owner_state`]).
//!
//! * One descriptor per process per cache directory (normally one in all), held for the life
//!   of the process; never one per cache.
//! * A forked child is a new process: the `pthread_atfork` child handler (`raw.rs`) closes the
//!   inherited presence descriptors (else the parent's lock would outlive the parent) and
//!   bumps the fork generation, so the child creates presence files of its own on first use.
//! * Presence files of dead processes, and temporary files (`.tmp.<id>.…`) whose creator is
//!   dead, are removed by [`sweep`] (run when a cache is opened, at most every
//!   [`SWEEP_EVERY_NS`] per directory and process).
//! * `flock` rather than `fcntl(F_OFD_SETLK)`: the same kernel semantics (owned by the open
//!   file description, released on its last close, namespace-independent) and also available
//!   on macOS.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::raw;
use super::region::{CacheDir, FileId, PresenceProbe};
use super::seqlock::Liveness;
use crate::error::{Error, ErrorKind, Result};

/// Name prefix of presence files.
pub const PRESENCE_PREFIX: &str = ".live.";
/// Name prefix of temporary files (followed by the creator's id in hex and a dot).
pub const TEMP_PREFIX: &str = ".tmp.";
/// A directory is swept at most this often by one process.
pub const SWEEP_EVERY_NS: u64 = 10_000_000_000;
/// How long a caller waits for the registry lock (a thread may have held it at `fork`; then
/// the child gives up instead of hanging: it stays a reader until its presence exists).
const REGISTRY_WAIT: Duration = Duration::from_millis(200);

/// The presence file name of `id`.
pub fn presence_name(id: u64) -> String {
    format!("{PRESENCE_PREFIX}{id:08x}")
}

/// The prefix of temporary files created by the process of `id`.
pub fn temp_prefix(id: u64) -> String {
    format!("{TEMP_PREFIX}{id:08x}.")
}

/// The id encoded in a presence or temporary file name.
fn id_in_name(name: &str) -> Option<(u64, bool)> {
    let (rest, presence) = if let Some(rest) = name.strip_prefix(PRESENCE_PREFIX) {
        (rest, true)
    } else {
        (name.strip_prefix(TEMP_PREFIX)?, false)
    };
    let hex = rest.get(..8)?;
    if !presence && rest.as_bytes().get(8) != Some(&b'.') {
        return None;
    }
    if presence && rest.len() != 8 {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|&id| id != 0)
        .map(|id| (id, presence))
}

/// This process's presence in one directory.
#[derive(Debug, Clone, Copy)]
struct Entry {
    dir: FileId,
    id: u64,
    /// The fork generation it was created in; entries of an older one belong to the parent.
    fork_generation: u64,
}

fn registry() -> &'static Mutex<Vec<Entry>> {
    static REGISTRY: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

fn lock_registry() -> Result<std::sync::MutexGuard<'static, Vec<Entry>>> {
    let start = std::time::Instant::now();
    loop {
        match registry().try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if start.elapsed() < REGISTRY_WAIT => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    "the liveness registry stayed locked (a thread held it at fork?)",
                ))
            }
        }
    }
}

fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Relaxed));
    hasher.write_u32(raw::current_pid());
    hasher.write_u64(crate::clock::monotonic_now_ns());
    hasher.write_u64(raw::fork_generation());
    // Ids share the lock's state word with the sequence: 32 bits (`seqlock::OWNER_MAX`).
    // Unique among live processes: a presence file is created exclusively (`O_EXCL`).
    (hasher.finish() & super::seqlock::OWNER_MAX).max(1)
}

/// This process's liveness id in `dir`, creating (and locking) its presence file on first use
/// in this process, after a fork, or when the file was removed under it (`revalidate`).
pub fn owner_word(dir: &CacheDir) -> Result<u64> {
    let dir_id = dir.id()?;
    let generation = raw::fork_generation();
    let mut entries = lock_registry()?;
    entries.retain(|e| e.fork_generation == generation);
    if let Some(entry) = entries.iter().find(|e| e.dir == dir_id) {
        return Ok(entry.id);
    }
    let id = create_presence(dir)?;
    entries.push(Entry {
        dir: dir_id,
        id,
        fork_generation: generation,
    });
    Ok(id)
}

fn create_presence(dir: &CacheDir) -> Result<u64> {
    let mut last_error = None;
    // A sweeper may remove our temporary file before it is published (its presence file does
    // not exist yet): try again with another id.
    for _ in 0..4 {
        let id = random_id();
        let tmp = format!("{}live", temp_prefix(id));
        match dir.create_presence(&tmp, &presence_name(id)) {
            Ok(fd) => {
                raw::keep_presence_fd(fd);
                return Ok(id);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Io, "cannot create a presence file")))
}

/// Whether the presence file of this process in `dir` is still in place (someone may have
/// removed the directory's contents); if not, forgets it so that the next [`owner_word`]
/// creates a new one. (The old descriptor stays open: a lock taken under the old id may
/// still be held.) Called from the store's rate-limited file checks.
pub fn revalidate(dir: &CacheDir) {
    let (Ok(dir_id), Ok(mut entries)) = (dir.id(), lock_registry()) else {
        return;
    };
    let generation = raw::fork_generation();
    entries.retain(|e| {
        e.fork_generation != generation
            || e.dir != dir_id
            || dir.probe_presence(&presence_name(e.id)) != PresenceProbe::Absent
    });
}

/// What the kernel says about the process behind an owner word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    Alive,
    Dead,
    /// Could not be checked: treated as alive (never take a lock over on a guess).
    Unknown,
}

/// The state of the process whose liveness id is `owner`, as seen in `dir`. `me` is the
/// caller's own id (alive by definition: another of its threads holds the lock).
pub fn owner_state(dir: &CacheDir, owner: u64, me: u64) -> OwnerState {
    if owner == 0 {
        return OwnerState::Dead;
    }
    if owner == me {
        return OwnerState::Alive;
    }
    match dir.probe_presence(&presence_name(owner)) {
        PresenceProbe::Held => OwnerState::Alive,
        PresenceProbe::Released | PresenceProbe::Absent => OwnerState::Dead,
        PresenceProbe::Unknown => OwnerState::Unknown,
    }
}

/// [`Liveness`] of owners of a file-backed store, judged in its directory.
pub struct DirLiveness<'a> {
    pub dir: &'a CacheDir,
    pub me: u64,
}

impl Liveness for DirLiveness<'_> {
    fn owner_alive(&self, owner: u64) -> bool {
        owner_state(self.dir, owner, self.me) != OwnerState::Dead
    }
}

/// An id for stores over this process's heap (tests, fuzzing, the simulator's single-process
/// mode): no other process can see them, so every owner but this process is dead.
pub fn local_token() -> u64 {
    static TOKEN: AtomicU64 = AtomicU64::new(0);
    static TOKEN_GENERATION: AtomicU64 = AtomicU64::new(u64::MAX);
    let generation = raw::fork_generation();
    if TOKEN_GENERATION.load(Relaxed) != generation {
        TOKEN.store(random_id(), Relaxed);
        TOKEN_GENERATION.store(generation, Relaxed);
    }
    TOKEN.load(Relaxed)
}

/// [`Liveness`] of owners of a heap store: alive only if it is this process.
pub struct LocalLiveness {
    pub me: u64,
}

impl Liveness for LocalLiveness {
    fn owner_alive(&self, owner: u64) -> bool {
        owner != 0 && owner == self.me
    }
}

/// Removes, in `dir`, presence files whose process is dead and temporary files whose creator
/// is dead (killed while creating a cache file). At most once per [`SWEEP_EVERY_NS`] per
/// directory in this process, unless `force`. Returns the names removed.
pub fn sweep(dir: &CacheDir, force: bool) -> Vec<String> {
    static LAST: OnceLock<Mutex<HashMap<FileId, u64>>> = OnceLock::new();
    let now = crate::clock::monotonic_now_ns();
    let Ok(dir_id) = dir.id() else {
        return Vec::new();
    };
    {
        let Ok(mut last) = LAST.get_or_init(Default::default).try_lock() else {
            return Vec::new();
        };
        match last.get(&dir_id) {
            Some(&at) if !force && now.saturating_sub(at) < SWEEP_EVERY_NS => return Vec::new(),
            _ => {
                last.insert(dir_id, now);
            }
        }
    }
    let Ok(names) = dir.names() else {
        return Vec::new();
    };
    let mut states: HashMap<u64, bool> = HashMap::new();
    let mut removed = Vec::new();
    for name in names {
        let Some((id, presence)) = id_in_name(&name) else {
            continue;
        };
        let dead = *states.entry(id).or_insert_with(|| {
            matches!(
                dir.probe_presence(&presence_name(id)),
                PresenceProbe::Released | PresenceProbe::Absent
            )
        });
        // A live creator's temporary files are in use. (A creator's own temporary presence
        // file, removed before it was published, makes `create_presence` try another id.)
        let _ = presence;
        if dead && dir.remove(&name).is_ok() {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A shell child that `flock`s the presence file of `id` in `path` and then sleeps
    /// holding it (`exec sleep` keeps the locked descriptor open): a live process of that id
    /// until it is killed. Returns once the lock is held.
    pub(crate) fn hold_presence_in_child(path: &std::path::Path, id: u64) -> std::process::Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 9>'{}' && flock -x 9 && echo locked && exec sleep 30",
                path.join(presence_name(id)).display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        child
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "warp_live_{tag}_{}_{}",
            std::process::id(),
            crate::clock::monotonic_now_ns()
        ))
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(id_in_name(&presence_name(0xabc)), Some((0xabc, true)));
        let tmp = format!("{}x.data.3", temp_prefix(7));
        assert_eq!(id_in_name(&tmp), Some((7, false)));
        assert_eq!(id_in_name(".live.zz"), None);
        assert_eq!(id_in_name(".tmp.00000001x"), None);
        assert_eq!(id_in_name("module.f.0123456789abcdef.data"), None);
        assert_eq!(id_in_name(&presence_name(0)), None);
    }

    #[test]
    fn this_process_is_alive_and_strangers_are_dead() {
        let path = temp_dir("self");
        let dir = CacheDir::open(&path).unwrap();
        let me = owner_word(&dir).unwrap();
        assert_eq!(owner_word(&dir).unwrap(), me, "one presence per directory");
        assert_eq!(owner_state(&dir, me, me), OwnerState::Alive);
        // Another description of the same file sees our lock: alive.
        assert_eq!(owner_state(&dir, me, 1), OwnerState::Alive);
        assert_eq!(owner_state(&dir, 0x1234, me), OwnerState::Dead);
        assert_eq!(owner_state(&dir, 0, me), OwnerState::Dead);
        std::fs::remove_dir_all(&path).unwrap();
    }

    /// A child process (a real fork, then exec of `sleep`) holding a presence file: alive while
    /// it runs, dead once killed, before and after it is reaped.
    #[test]
    fn a_killed_process_is_dead_even_unreaped() {
        let path = temp_dir("child");
        let dir = CacheDir::open(&path).unwrap();
        let name = presence_name(0x5eed);
        let mut child = hold_presence_in_child(&path, 0x5eed);
        assert_eq!(owner_state(&dir, 0x5eed, 1), OwnerState::Alive);
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while owner_state(&dir, 0x5eed, 1) == OwnerState::Alive
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            owner_state(&dir, 0x5eed, 1),
            OwnerState::Dead,
            "zombie is dead"
        );
        child.wait().unwrap();
        assert_eq!(owner_state(&dir, 0x5eed, 1), OwnerState::Dead);
        // The sweep removes the dead process's presence file and its temporary files.
        std::fs::write(path.join(format!("{}f.data.0", temp_prefix(0x5eed))), b"x").unwrap();
        let mine = owner_word(&dir).unwrap();
        std::fs::write(path.join(format!("{}f.data.0", temp_prefix(mine))), b"x").unwrap();
        let mut removed = sweep(&dir, true);
        removed.sort();
        let mut expected = vec![format!("{}f.data.0", temp_prefix(0x5eed)), name.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(path.join(presence_name(mine)).exists(), "ours is kept");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_removed_presence_file_is_recreated() {
        let path = temp_dir("revalidate");
        let dir = CacheDir::open(&path).unwrap();
        let first = owner_word(&dir).unwrap();
        std::fs::remove_file(path.join(presence_name(first))).unwrap();
        revalidate(&dir);
        let second = owner_word(&dir).unwrap();
        assert_ne!(first, second);
        assert_eq!(owner_state(&dir, second, 1), OwnerState::Alive);
        std::fs::remove_dir_all(&path).unwrap();
    }
}
