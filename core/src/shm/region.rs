//! The only code that opens, creates, maps and unmaps the shared files (INV-S1).
//!
//! Security rules (spec "Files", design brief convention 4):
//! * the directory is `$WARP_CACHE_DIR`, else `/dev/shm/warp_cache-<uid>/` on Linux
//!   (`$TMPDIR/warp_cache/` on macOS); missing directories are created `0700`;
//! * the directory is opened with `O_NOFOLLOW` and must be a directory owned by the effective
//!   user and not group/world-writable; files are opened *relative to that directory handle*
//!   (`openat`, no path re-resolution) with `O_NOFOLLOW`, and must be regular files owned by
//!   the user and not group/world-writable; anything else is a clear [`Error`];
//! * file names come from [`sanitize_name`]: only `[A-Za-z0-9._-]`, never starting with a dot,
//!   so a name can never leave the directory;
//! * new files are created `0600` under a temporary name, fully initialised, then published
//!   with `link` (create-if-absent, atomic) or `rename` (replace), never truncated in place;
//! * space is reserved at creation with `posix_fallocate` (after an `fstatvfs` check), so a full
//!   `/dev/shm` is an [`ErrorKind::NoSpace`] at open and not a SIGBUS later.
//!
//! SIGBUS: a mapping faults if *another* process truncates the file under it. This crate never
//! truncates a file that may be mapped (INV-9); the store re-checks the file size with `fstat`
//! on its slow paths and moves to a fresh file when it shrank. A process that ignores this
//! protocol (`truncate -s 0` on a live cache) is survived by the SIGBUS safety net at the
//! bottom of this file (INV-S6): a fault inside a registered mapping maps a private zero page
//! over the faulting page and flags the mapping; the store never serves a read from a flagged
//! mapping and moves to fresh files. Faults anywhere else go to the previous handler.
#![allow(unsafe_code)] // Opening and mapping the shared files takes openat/mmap/munmap.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};

/// Environment variable that overrides the cache directory.
pub const DIR_ENV: &str = "WARP_CACHE_DIR";
/// Longest sanitized name kept as given; longer names are hashed.
pub const NAME_MAX_PLAIN: usize = 100;

/// What [`CacheDir::probe_presence`] found at a presence file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceProbe {
    /// The file exists and a process holds its lock: that process is alive.
    Held,
    /// The file exists and nobody holds its lock: its process is gone (the kernel releases a
    /// `flock` when the last descriptor of its open file description closes, at exit at the
    /// latest, whatever PID namespace the process lives in).
    Released,
    /// No such file.
    Absent,
    /// It could not be checked (permissions, descriptor limit, ...): assume alive.
    Unknown,
}

/// Device and inode: tells whether a name still points at the file we mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

fn name_cstring(name: &str) -> Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::invalid_argument(format!(
            "internal error: unsafe file name {name:?}"
        )));
    }
    CString::new(name)
        .map_err(|_| Error::invalid_argument(format!("file name {name:?} contains a NUL byte")))
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn check_owner_and_mode(what: &str, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let uid = super::raw::effective_uid();
    if meta.uid() != uid {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "refusing to use {what} {}: it is owned by uid {}, not by this user (uid {uid}); \
                 remove it or set {DIR_ENV} to a directory of your own",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "refusing to use {what} {}: it is group- or world-writable (mode {:o}); \
                 run `chmod go-w` on it or set {DIR_ENV} to a private directory",
                path.display(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// An opened, checked cache directory. Files are opened relative to its handle.
#[derive(Debug)]
pub struct CacheDir {
    dir: File,
    path: PathBuf,
}

impl CacheDir {
    /// Creates `path` (mode 0700, parents too) if missing, opens it without following a
    /// symlink and checks owner and mode.
    pub fn open(path: &Path) -> Result<CacheDir> {
        if std::fs::symlink_metadata(path).is_err() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| {
                    Error::io(
                        format!(
                            "cannot create the shared cache directory {} (set {DIR_ENV} to a \
                             writable directory)",
                            path.display()
                        ),
                        &e,
                    )
                })?;
        }
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            Error::invalid_argument(format!(
                "cache directory {} contains a NUL byte",
                path.display()
            ))
        })?;
        // SAFETY: `cpath` is a valid NUL-terminated string for the duration of the call; the
        // flags open a directory read-only without following a final symlink.
        let fd = unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                    " (it is a symlink or not a directory: refusing to follow it)"
                }
                _ => "",
            };
            return Err(Error::io(
                format!(
                    "cannot open the shared cache directory {}{hint}",
                    path.display()
                ),
                &err,
            ));
        }
        // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
        let dir = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = dir
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), &e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} is not a directory", path.display()),
            ));
        }
        check_owner_and_mode("cache directory", path, &meta)?;
        Ok(CacheDir {
            dir,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an existing file read-write (never following a symlink). `Ok(None)` if absent.
    pub fn open_file(&self, name: &str) -> Result<Option<ShmFile>> {
        self.open_existing(name, libc::O_RDWR)
    }

    /// Opens an existing file read-only, with the checks of [`CacheDir::open_file`] (the
    /// inspector, `inspect.rs`: nothing it opens can be written through).
    pub fn open_file_read_only(&self, name: &str) -> Result<Option<ShmFile>> {
        self.open_existing(name, libc::O_RDONLY)
    }

    fn open_existing(&self, name: &str, access: libc::c_int) -> Result<Option<ShmFile>> {
        let cname = name_cstring(name)?;
        // SAFETY: the directory fd is open for the lifetime of `self`; `cname` is a valid
        // NUL-terminated relative name without '/'.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                cname.as_ptr(),
                access | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            let err = last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) => Err(Error::io(
                    format!(
                        "refusing to open {}: it is a symlink",
                        self.path.join(name).display()
                    ),
                    &err,
                )),
                _ => {
                    // A directory (EISDIR) or socket (ENXIO) planted at the name: say what it is.
                    let path = self.path.join(name);
                    if let Ok(meta) = std::fs::symlink_metadata(&path) {
                        if !meta.file_type().is_file() {
                            return Err(not_a_regular_file(&path, &meta));
                        }
                    }
                    Err(Error::io(format!("cannot open {}", path.display()), &err))
                }
            };
        }
        // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        ShmFile::checked(file, self.path.join(name)).map(Some)
    }

    /// Creates a new `0600` file under a unique temporary name `<prefix><stem>.<n>` with `len`
    /// bytes reserved. `prefix` names the creator (`liveness::temp_prefix`), so that a sweeper
    /// can remove it if the creator dies before publishing it. Returns the file and its
    /// temporary name (publish it with [`CacheDir::publish`] or [`CacheDir::replace`], or
    /// [`CacheDir::remove`] it).
    pub fn create_temp(&self, prefix: &str, stem: &str, len: u64) -> Result<(ShmFile, String)> {
        use std::sync::atomic::AtomicU32;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        self.check_free_space(len)?;
        let mut attempt = 0;
        let (fd, tmp_name) = loop {
            let tmp_name = format!("{prefix}{stem}.{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            let cname = name_cstring(&tmp_name)?;
            // SAFETY: valid directory fd and NUL-terminated relative name; O_EXCL makes this
            // create a new file or fail; mode 0600 is passed as the variadic mode argument.
            let fd = unsafe {
                libc::openat(
                    self.dir.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_RDWR
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd >= 0 {
                break (fd, tmp_name);
            }
            let err = last_os_error();
            attempt += 1;
            if err.raw_os_error() != Some(libc::EEXIST) || attempt > 16 {
                return Err(Error::io(
                    format!("cannot create a file in {}", self.path.display()),
                    &err,
                ));
            }
        };
        // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let result = reserve(&file, len, &self.path)
            .and_then(|()| ShmFile::checked(file, self.path.join(&tmp_name)));
        match result {
            Ok(file) => Ok((file, tmp_name)),
            Err(e) => {
                let _ = self.remove(&tmp_name);
                Err(e)
            }
        }
    }

    /// [`ErrorKind::NoSpace`] if the directory's filesystem has fewer than `len` free bytes.
    pub fn check_free_space(&self, len: u64) -> Result<()> {
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: the directory fd is open; `stats` is valid and writable for the call.
        let rc = unsafe { libc::fstatvfs(self.dir.as_raw_fd(), &mut stats) };
        if rc != 0 {
            return Ok(()); // unknown: posix_fallocate still reports ENOSPC
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        if stats.f_flag as u64 & libc::ST_RDONLY as u64 != 0 {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the cache directory {} is on a read-only filesystem",
                    self.path.display()
                ),
            ));
        }
        if stats.f_blocks == 0 {
            // /proc, /sys and the like: not storage at all (and not "full").
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the cache directory {} is on a filesystem that cannot hold files (it \
                     reports no blocks at all)",
                    self.path.display()
                ),
            ));
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        let available = (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64);
        if len > available {
            return Err(no_space(&self.path, len, Some(available)));
        }
        Ok(())
    }

    /// Publishes a temporary file under `name` only if `name` does not exist (atomic `link`).
    /// Returns `false` if another process published first. The temporary name is removed.
    pub fn publish(&self, tmp_name: &str, name: &str) -> Result<bool> {
        let ctmp = name_cstring(tmp_name)?;
        let cname = name_cstring(name)?;
        let dirfd = self.dir.as_raw_fd();
        // SAFETY: both names are valid NUL-terminated relative names in the open directory.
        let rc = unsafe { libc::linkat(dirfd, ctmp.as_ptr(), dirfd, cname.as_ptr(), 0) };
        let outcome = if rc == 0 {
            Ok(true)
        } else {
            let err = last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                Ok(false)
            } else {
                Err(Error::io(
                    format!("cannot publish {}", self.path.join(name).display()),
                    &err,
                ))
            }
        };
        let _ = self.remove(tmp_name);
        outcome
    }

    /// Atomically replaces `name` by the temporary file (`rename`). Processes that mapped the
    /// old file keep their mapping (a different inode); nothing is truncated (INV-9).
    pub fn replace(&self, tmp_name: &str, name: &str) -> Result<()> {
        let ctmp = name_cstring(tmp_name)?;
        let cname = name_cstring(name)?;
        let dirfd = self.dir.as_raw_fd();
        // SAFETY: both names are valid NUL-terminated relative names in the open directory.
        let rc = unsafe { libc::renameat(dirfd, ctmp.as_ptr(), dirfd, cname.as_ptr()) };
        if rc != 0 {
            let err = last_os_error();
            let _ = self.remove(tmp_name);
            return Err(Error::io(
                format!("cannot replace {}", self.path.join(name).display()),
                &err,
            ));
        }
        Ok(())
    }

    /// Unlinks `name` (absent is fine).
    pub fn remove(&self, name: &str) -> Result<()> {
        let cname = name_cstring(name)?;
        // SAFETY: valid directory fd and NUL-terminated relative name.
        let rc = unsafe { libc::unlinkat(self.dir.as_raw_fd(), cname.as_ptr(), 0) };
        if rc != 0 {
            let err = last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(Error::io(
                    format!("cannot remove {}", self.path.join(name).display()),
                    &err,
                ));
            }
        }
        Ok(())
    }

    /// The directory's own identity (device and inode).
    pub fn id(&self) -> Result<FileId> {
        let meta = self
            .dir
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.path.display()), &e))?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The names in the directory (`.` and `..` excluded; names that are not UTF-8 skipped:
    /// this crate never creates such names).
    pub fn names(&self) -> Result<Vec<String>> {
        // Through /proc/self/fd would need /proc; re-open the path instead, then check that it
        // is still the directory we hold (a swapped directory is listed as empty).
        let listing = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io(format!("cannot list {}", self.path.display()), &e))?;
        let same = match (std::fs::symlink_metadata(&self.path), self.id()) {
            (Ok(meta), Ok(id)) => meta.dev() == id.dev && meta.ino() == id.ino,
            _ => false,
        };
        if !same {
            return Ok(Vec::new());
        }
        Ok(listing
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect())
    }

    /// Creates this process's presence file `name`: a new `0600` file, locked with an
    /// exclusive `flock` before it is published under `name` (so a checker never finds it
    /// unlocked while its creator lives), through the temporary name `tmp_name`. Returns the
    /// descriptor, which must stay open for as long as the process is to count as alive.
    pub fn create_presence(&self, tmp_name: &str, name: &str) -> Result<OwnedFd> {
        let ctmp = name_cstring(tmp_name)?;
        // SAFETY: valid directory fd and NUL-terminated relative name; O_EXCL creates a new
        // file or fails; mode 0600 is the variadic mode argument.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                ctmp.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                format!("cannot create a presence file in {}", self.path.display()),
                &last_os_error(),
            ));
        }
        // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is an open descriptor; flock has no memory preconditions.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = last_os_error();
            let _ = self.remove(tmp_name);
            return Err(Error::io(
                format!("cannot lock a presence file in {}", self.path.display()),
                &err,
            ));
        }
        if !self.publish(tmp_name, name)? {
            return Err(Error::new(
                ErrorKind::Io,
                format!("presence file {name} already exists"),
            ));
        }
        Ok(fd)
    }

    /// Whether the presence file `name` is held by a live process ([`PresenceProbe`]). Takes
    /// a shared lock for an instant when the file is free (released before returning).
    pub fn probe_presence(&self, name: &str) -> PresenceProbe {
        let Ok(cname) = name_cstring(name) else {
            return PresenceProbe::Absent;
        };
        // SAFETY: valid directory fd and NUL-terminated relative name; O_NONBLOCK so that a
        // FIFO planted at the name cannot block the open.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return match last_os_error().raw_os_error() {
                Some(libc::ENOENT) => PresenceProbe::Absent,
                _ => PresenceProbe::Unknown,
            };
        }
        // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is open; flock has no memory preconditions. A shared lock conflicts
        // only with the owner's exclusive one.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            return PresenceProbe::Released; // dropping `fd` releases our shared lock
        }
        match last_os_error().raw_os_error() {
            Some(libc::EWOULDBLOCK) => PresenceProbe::Held,
            _ => PresenceProbe::Unknown,
        }
    }

    /// The identity of the file `name` currently points at (not following a symlink).
    pub fn file_id(&self, name: &str) -> Result<Option<FileId>> {
        Ok(self.stat_name(name)?.map(|(id, _)| id))
    }

    /// The identity and length of the file `name` currently points at (no symlink followed).
    pub fn stat_name(&self, name: &str) -> Result<Option<(FileId, u64)>> {
        let cname = name_cstring(name)?;
        // SAFETY: an all-zero stat is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid directory fd, NUL-terminated relative name, writable `st`.
        let rc = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                cname.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let err = last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(Error::io(
                    format!("cannot stat {}", self.path.join(name).display()),
                    &err,
                )),
            };
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Ok(Some((
            FileId {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
            },
            st.st_size.max(0) as u64,
        )))
    }
}

/// An open, checked shared file.
#[derive(Debug)]
pub struct ShmFile {
    file: File,
    id: FileId,
    path: PathBuf,
}

impl ShmFile {
    fn checked(file: File, path: PathBuf) -> Result<ShmFile> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), &e))?;
        if !meta.file_type().is_file() {
            return Err(not_a_regular_file(&path, &meta));
        }
        check_owner_and_mode("cache file", &path, &meta)?;
        Ok(ShmFile {
            file,
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            path,
        })
    }

    pub fn id(&self) -> FileId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads exactly `buf.len()` bytes at `offset` (header checks without mapping).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at `offset`, only inside the file's current length (never extends it).
    pub fn write_inside(&self, buf: &[u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let end = offset.saturating_add(buf.len() as u64);
        if self.current_len()? < end {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{} is too short to write at {offset}", self.path.display()),
            ));
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(format!("cannot write {}", self.path.display()), &e))
    }

    /// Grows the file to `len` bytes, made real (`posix_fallocate`: a full filesystem is an
    /// [`ErrorKind::NoSpace`] now, never a SIGBUS later); a file already that long is left
    /// alone. Files only grow: a mapped file is never shrunk (INV-9).
    pub fn extend_to(&self, len: u64) -> Result<()> {
        let current = self.current_len()?;
        if current >= len {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        reserve_from(&self.file, current, len, dir)
    }

    /// Current length (fstat), to detect a file shrunk under a mapping.
    pub fn current_len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("cannot stat {}", self.path.display()), &e))
    }
}

/// A shared, read-write mapping of the first `len` bytes of a file, viewed as words. It holds
/// no file descriptor: the mapping keeps the file's pages, the descriptor is closed once it is
/// made.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<AtomicU64>,
    len_bytes: usize,
    id: FileId,
    path: PathBuf,
    /// Registration with the SIGBUS safety net (`None`: the registry was full).
    bus_slot: Option<usize>,
}

// SAFETY: the mapping is plain shared memory accessed only through `&[AtomicU64]` (atomic
// operations are safe from any thread); the pointer is never used after `munmap` in `drop`.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access through `&Mapping` goes through atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len_bytes` of `file`. Fails (no mapping) unless the file is at least that long,
    /// so the mapping never covers a page past the end of the file at open time.
    pub fn map(file: ShmFile, len_bytes: u64) -> Result<Mapping> {
        Self::map_growable(file, len_bytes, len_bytes)
    }

    /// Maps `len_bytes` of `file`, which must hold at least `least_bytes` now: the rest is
    /// where the file will grow ([`ShmFile::extend_to`]). Users touch only what the file
    /// holds (the heap's committed bytes); a touch past its end (a hostile header) is caught
    /// by the SIGBUS safety net (INV-S6).
    pub fn map_growable(file: ShmFile, len_bytes: u64, least_bytes: u64) -> Result<Mapping> {
        let file_len = file.current_len()?;
        if file_len < least_bytes {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} is {file_len} bytes, shorter than the {least_bytes} its layout needs",
                    file.path.display()
                ),
            ));
        }
        let len = usize::try_from(len_bytes)
            .ok()
            .filter(|&len| len > 0 && len % 8 == 0)
            .ok_or_else(|| Error::invalid_argument(format!("cannot map {len_bytes} bytes")))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed address), of `len`
        // bytes of an fd open read-write; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = last_os_error();
            let kind = if err.raw_os_error() == Some(libc::ENOMEM) {
                ErrorKind::NoSpace
            } else {
                ErrorKind::Io
            };
            return Err(Error {
                kind,
                ..Error::io(format!("cannot map {}", file.path.display()), &err)
            });
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| Error::new(ErrorKind::Io, "mmap returned a null pointer"))?;
        let bus_slot = bus::register(ptr.as_ptr() as usize, len);
        Ok(Mapping {
            ptr,
            len_bytes: len,
            id: file.id,
            path: file.path,
            bus_slot,
        })
    }

    /// Whether touching this mapping ever faulted (its file was truncated under it): its
    /// contents can no longer be trusted to be shared (INV-S6).
    #[inline]
    pub fn faulted(&self) -> bool {
        bus::fault_count() != 0 && self.bus_slot.is_some_and(bus::faulted)
    }

    /// Whether the SIGBUS safety net watches this mapping (INV-S6): a truncation under it is
    /// then flagged by [`Mapping::faulted`] instead of killing the process.
    #[inline]
    pub fn guarded(&self) -> bool {
        self.bus_slot.is_some()
    }

    /// The mapping as words. Page-aligned, so every word is aligned.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is a live mapping of `len_bytes` (a multiple of 8) bytes, page-aligned
        // hence aligned for AtomicU64, which has the layout of u64 and permits concurrent
        // access from other threads and processes through atomic operations only. The slice
        // borrows `self`, so it cannot outlive the munmap in `drop`. (A file truncated by a
        // foreign process makes access fault: see the module docs, INV-9.)
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len_bytes / 8) }
    }

    /// The identity of the mapped file.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The path the file had when it was mapped (messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes mapped.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes as u64
    }

    /// Detaches the range from its file: it keeps its address (a reader still holding a slice
    /// of it reads zeros, which are never a valid entry, INV-7) but no longer holds the file's
    /// pages, so a replaced or removed file's memory is freed once no mapping needs it. Used
    /// when the store moves to fresh files (`store.rs`), instead of an unmap that would leave
    /// other threads' slices dangling.
    pub fn detach(&self) {
        // SAFETY: the range is exactly this live mapping (page-aligned start, its own length);
        // MAP_FIXED replaces it atomically with private zero pages, so every address in it
        // stays readable and writable for the slices `words()` handed out; `drop` later
        // unmaps the same range.
        let mapped = unsafe {
            libc::mmap(
                self.ptr.as_ptr().cast(),
                self.len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        // On failure the file stays mapped (its memory is freed at drop instead).
        let _ = mapped;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(slot) = self.bus_slot {
            bus::unregister(slot);
        }
        // SAFETY: `ptr`/`len_bytes` describe exactly the mapping created in `map`, unmapped
        // only here; no reference from `words()` outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len_bytes);
        }
    }
}

/// Number of faults the SIGBUS safety net absorbed in this process (0 almost always: the
/// store's hot path checks this one counter before looking at its own mappings).
#[inline]
pub fn bus_fault_count() -> u64 {
    bus::fault_count()
}

/// The SIGBUS safety net (INV-S6).
///
/// Every [`Mapping`] registers its address range here. The first registration installs a
/// `SIGBUS` handler (`SA_SIGINFO`, chaining to the handler it replaces). When a fault's
/// address lies in a registered range (its file was truncated under the mapping by a process
/// that broke INV-9), the handler maps one private, zero-filled page over the faulting page
/// (`MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS`), flags the range and returns: the faulting
/// access is retried and sees zeros. The store then never serves a read from a flagged
/// mapping and replaces its files (zeros are never a valid entry, INV-7). Any other SIGBUS
/// goes to the previous handler, or (if there was none) to the default action, exactly as
/// without this module.
///
/// The handler only reads atomics and calls `mmap`/`sigaction`/`raise` (system calls; `mmap`
/// is not on POSIX's async-signal-safe list, but is a plain system call on Linux and macOS).
mod bus;
mod checks;
mod names;

use checks::{no_space, not_a_regular_file, reserve, reserve_from};
#[cfg(test)]
use names::plain_char;
pub use names::{default_dir, sanitize_name, sanitize_name_within};

#[cfg(test)]
mod tests;
