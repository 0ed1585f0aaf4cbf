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

/// The directory shared files live in: `$WARP_CACHE_DIR`, else the platform default.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    platform_dir()
}

#[cfg(target_os = "linux")]
fn platform_dir() -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/warp_cache-{}",
        super::raw::effective_uid()
    ))
}

#[cfg(target_os = "macos")]
fn platform_dir() -> PathBuf {
    // $TMPDIR is per user on macOS.
    let tmp = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    PathBuf::from(tmp).join("warp_cache")
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn platform_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/warp_cache-{}", super::raw::effective_uid()))
}

fn plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// 128-bit FNV-1a: deterministic in every build and on every platform.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// A file-name stem that is safe inside the cache directory.
///
/// A name made only of `[A-Za-z0-9._-]`, 1 to [`NAME_MAX_PLAIN`] characters, not starting with
/// a dot and not containing `--`, is kept as is. Any other name becomes
/// `<readable prefix>--<32 hex digits of a 128-bit hash of the whole name>`: plain names never
/// contain `--`, so a hashed name never equals a plain one, and the result never contains `/`,
/// never starts with a dot and is at most 82 characters.
pub fn sanitize_name(name: &str) -> String {
    sanitize_name_within(name, NAME_MAX_PLAIN)
}

/// [`sanitize_name`] with room for a suffix: the result is at most `max_len` characters
/// (`max_len` >= 40; a name within it is kept as is when plain, else hashed with a shorter
/// readable prefix).
pub fn sanitize_name_within(name: &str, max_len: usize) -> String {
    let max_len = max_len.max(40);
    let plain = !name.is_empty()
        && name.len() <= max_len
        && !name.starts_with('.')
        && !name.contains("--")
        && name.chars().all(plain_char);
    if plain {
        return name.to_owned();
    }
    let mut prefix: String = name
        .chars()
        .map(|c| if plain_char(c) { c } else { '_' })
        .skip_while(|&c| c == '.')
        .take(48.min(max_len - 34))
        .collect();
    while prefix.contains("--") {
        prefix = prefix.replace("--", "-_");
    }
    while prefix.ends_with('-') {
        prefix.pop();
    }
    if prefix.is_empty() {
        prefix.push('h');
    }
    format!("{prefix}--{:032x}", fnv1a_128(name.as_bytes()))
}

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
        let cname = name_cstring(name)?;
        // SAFETY: the directory fd is open for the lifetime of `self`; `cname` is a valid
        // NUL-terminated relative name without '/'.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
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

fn no_space(dir: &Path, len: u64, available: Option<u64>) -> Error {
    let available = available
        .map(|a| format!(" ({a} bytes available)"))
        .unwrap_or_default();
    Error::new(
        ErrorKind::NoSpace,
        format!(
            "not enough space in {} for a shared cache file of {len} bytes{available}: lower \
             max_size or max_key_size/max_value_size, free space, or enlarge the filesystem \
             (Docker: --shm-size)",
            dir.display()
        ),
    )
}

/// Reserves `len` bytes so later page faults cannot hit a full filesystem.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64, dir: &Path) -> Result<()> {
    let Ok(off_len) = libc::off_t::try_from(len) else {
        return Err(Error::invalid_argument(format!(
            "file length {len} does not fit off_t"
        )));
    };
    // SAFETY: the fd is open for writing; posix_fallocate only allocates blocks for the range.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
    match rc {
        0 => Ok(()),
        libc::ENOSPC | libc::EFBIG => Err(no_space(dir, len, None)),
        // Filesystems without fallocate: size the file; pages are then allocated on first use.
        libc::EOPNOTSUPP | libc::EINVAL => file
            .set_len(len)
            .map_err(|e| Error::io(format!("cannot size a file in {}", dir.display()), &e)),
        errno => Err(Error::io(
            format!("cannot reserve {len} bytes in {}", dir.display()),
            &std::io::Error::from_raw_os_error(errno),
        )),
    }
}

/// macOS has no posix_fallocate: size the file (the free-space check above still applies).
#[cfg(not(target_os = "linux"))]
fn reserve(file: &File, len: u64, dir: &Path) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io(format!("cannot size a file in {}", dir.display()), &e))
}

fn not_a_regular_file(path: &Path, meta: &std::fs::Metadata) -> Error {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symlink"
    } else {
        "a device"
    };
    Error::new(
        ErrorKind::Io,
        format!(
            "refusing to use {}: not a regular file ({what}); remove it",
            path.display()
        ),
    )
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
        let file_len = file.current_len()?;
        if file_len < len_bytes {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} is {file_len} bytes, shorter than the {len_bytes} its layout needs",
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
mod bus {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Registered ranges at most (two per shared store generation); beyond, mappings work
    /// unprotected.
    const SLOTS: usize = 1024;

    static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static ENDS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
    static FAULTS: AtomicU64 = AtomicU64::new(0);
    static PAGE_BYTES: AtomicUsize = AtomicUsize::new(4096);
    /// The handler this one replaced (`sa_sigaction` as an address, and `sa_flags`).
    static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
    static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
    static INSTALL: Once = Once::new();

    pub fn fault_count() -> u64 {
        FAULTS.load(Ordering::Relaxed)
    }

    pub fn faulted(slot: usize) -> bool {
        FAULTED.get(slot).is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// Registers `[start, start + len)`; `None` if the registry is full.
    pub fn register(start: usize, len: usize) -> Option<usize> {
        INSTALL.call_once(install);
        let end = start.checked_add(len)?;
        for (slot, cell) in STARTS.iter().enumerate() {
            if cell
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                FAULTED[slot].store(false, Ordering::Release);
                ENDS[slot].store(end, Ordering::Release);
                return Some(slot);
            }
        }
        None
    }

    /// Forgets a range (before it is unmapped).
    pub fn unregister(slot: usize) {
        if let (Some(end), Some(start)) = (ENDS.get(slot), STARTS.get(slot)) {
            end.store(0, Ordering::Release);
            start.store(0, Ordering::Release);
        }
    }

    fn install() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            if page.is_power_of_two() {
                PAGE_BYTES.store(page, Ordering::Relaxed);
            }
        }
        // SAFETY: `action` and `previous` are valid sigaction structs for the call; the new
        // handler has the SA_SIGINFO signature and lives for the whole program; the previous
        // disposition is recorded before the handler can run for a registered range (no
        // range is registered before this returns).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
                PREVIOUS_FLAGS.store(previous.sa_flags as usize, Ordering::Relaxed);
                PREVIOUS_HANDLER.store(previous.sa_sigaction, Ordering::Release);
            }
        }
    }

    /// # Safety
    /// Called by the kernel as a SA_SIGINFO signal handler for SIGBUS.
    unsafe extern "C" fn on_sigbus(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo_t; si_code > 0 means it reports a fault
        // at si_addr (not a signal sent by a process).
        let fault_address = unsafe {
            match info.as_ref() {
                Some(info) if info.si_code > 0 => Some(info.si_addr() as usize),
                _ => None,
            }
        };
        if let Some(address) = fault_address {
            let page = PAGE_BYTES.load(Ordering::Relaxed);
            for slot in 0..SLOTS {
                let start = STARTS[slot].load(Ordering::Acquire);
                let end = ENDS[slot].load(Ordering::Acquire);
                if start == 0 || address < start || address >= end {
                    continue;
                }
                let page_start = address & !(page - 1);
                // SAFETY: `page_start` is a page inside a live mapping we own (registered
                // ranges are unregistered before munmap); replacing that one page with a
                // private anonymous page is what the mapping's users are prepared for
                // (INV-S6): its contents become zeros visible to this process only.
                let mapped = unsafe {
                    libc::mmap(
                        page_start as *mut libc::c_void,
                        page,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if mapped != libc::MAP_FAILED {
                    FAULTED[slot].store(true, Ordering::Release);
                    FAULTS.fetch_add(1, Ordering::AcqRel);
                    return;
                }
                break;
            }
        }
        // Not ours: what would have happened without this handler.
        let previous = PREVIOUS_HANDLER.load(Ordering::Acquire);
        let flags = PREVIOUS_FLAGS.load(Ordering::Relaxed) as libc::c_int;
        if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
            // SAFETY: restores the default disposition (valid struct); returning re-executes
            // the faulting access (or, for a sent signal, re-raising delivers it once this
            // handler returns), which now takes the default action.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
                if fault_address.is_none() {
                    libc::raise(libc::SIGBUS);
                }
            }
            return;
        }
        // SAFETY: `previous` is the handler installed before ours, with the signature its
        // flags declare; it is called as the kernel would have called it.
        unsafe {
            if flags & libc::SA_SIGINFO != 0 {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(previous);
                handler(signal, info, context);
            } else {
                let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
                handler(signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "warp_region_{tag}_{}_{}",
            std::process::id(),
            super::super::raw::clock_monotonic_ns().unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn sanitize_keeps_plain_names_and_hashes_others() {
        assert_eq!(sanitize_name("mod.func_1-a"), "mod.func_1-a");
        for hostile in [
            "../../etc/passwd",
            "/abs",
            "..",
            ".",
            "",
            ".hidden",
            "a b",
            "ünï",
            "a--b",
            "x\0y",
            &"q".repeat(500),
        ] {
            let s = sanitize_name(hostile);
            assert!(!s.is_empty() && s.len() <= 82, "{hostile:?} -> {s}");
            assert!(s.chars().all(plain_char), "{hostile:?} -> {s}");
            assert!(!s.starts_with('.'), "{hostile:?} -> {s}");
            assert!(
                s.contains("--"),
                "{hostile:?} -> {s}: hashed names carry the marker"
            );
        }
        assert_ne!(
            sanitize_name(&"q".repeat(500)),
            sanitize_name(&"q".repeat(501))
        );
        assert_ne!(sanitize_name("a b"), sanitize_name("a_b"));
        assert_eq!(sanitize_name("a b"), sanitize_name("a b"), "deterministic");
        assert_eq!(sanitize_name("<lambda>").len(), "_lambda_".len() + 2 + 32);
    }

    #[test]
    fn create_publish_replace_and_map() {
        let path = temp_dir("cpr");
        let dir = CacheDir::open(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert!(dir.open_file("x.data").unwrap().is_none());
        let (file, tmp) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
        let first_id = file.id();
        assert_eq!(
            std::fs::metadata(path.join(&tmp)).unwrap().mode() & 0o777,
            0o600
        );
        let map = Mapping::map(file, 4096).unwrap();
        map.words()[3].store(42, Ordering::Relaxed);
        assert!(dir.publish(&tmp, "x.data").unwrap());
        assert!(dir.file_id(&tmp).unwrap().is_none(), "temp name removed");
        // A second publish under the same name loses.
        let (_f2, tmp2) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
        assert!(!dir.publish(&tmp2, "x.data").unwrap());
        // Replace: new inode at the name, the old mapping still works.
        let (f3, tmp3) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
        let new_id = f3.id();
        dir.replace(&tmp3, "x.data").unwrap();
        assert_eq!(dir.file_id("x.data").unwrap(), Some(new_id));
        assert_ne!(new_id, first_id);
        assert_eq!(map.words()[3].load(Ordering::Relaxed), 42);
        assert_eq!(
            dir.stat_name("x.data").unwrap().map(|(_, len)| len),
            Some(4096)
        );
        let reopened = dir.open_file("x.data").unwrap().unwrap();
        assert_eq!(reopened.id(), new_id);
        assert!(
            Mapping::map(reopened, 8192).is_err(),
            "never map past the end"
        );
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn refuses_symlinks_foreign_and_writable_things() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_dir("refuse");
        let dir = CacheDir::open(&path).unwrap();
        // Symlinked file.
        std::os::unix::fs::symlink("/etc/hostname", path.join("s.data")).unwrap();
        let err = dir.open_file("s.data").unwrap_err();
        assert!(err.message.contains("symlink"), "{}", err.message);
        // Group-writable file.
        std::fs::write(path.join("w.data"), b"x").unwrap();
        std::fs::set_permissions(path.join("w.data"), std::fs::Permissions::from_mode(0o664))
            .unwrap();
        let err = dir.open_file("w.data").unwrap_err();
        assert!(err.message.contains("writable"), "{}", err.message);
        // Symlinked directory.
        let link = temp_dir("refuse_link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = CacheDir::open(&link).unwrap_err();
        assert!(err.message.contains("symlink"), "{}", err.message);
        // World-writable directory.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = CacheDir::open(&path).unwrap_err();
        assert!(err.message.contains("writable"), "{}", err.message);
        // Foreign owner (only testable as root).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        if super::super::raw::effective_uid() == 0 {
            std::fs::write(path.join("f.data"), b"x").unwrap();
            std::fs::set_permissions(path.join("f.data"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            std::os::unix::fs::chown(path.join("f.data"), Some(4242), None).unwrap();
            let err = dir.open_file("f.data").unwrap_err();
            assert!(err.message.contains("owned by uid 4242"), "{}", err.message);
        }
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_file_truncated_under_its_mapping_faults_into_zeros_not_sigbus() {
        let path = temp_dir("sigbus");
        let dir = CacheDir::open(&path).unwrap();
        let (file, tmp) = dir.create_temp(".tmp.t.", "t", 3 * 4096).unwrap();
        let map = Mapping::map(file, 3 * 4096).unwrap();
        let words = map.words();
        let last = words.len() - 1;
        words[last].store(7, Ordering::Relaxed);
        assert!(!map.faulted());
        // Another process (here: us) breaks INV-9 and truncates the mapped file.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path.join(&tmp))
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(dir.stat_name(&tmp).unwrap().map(|(_, len)| len), Some(0));
        // Touching it would be a SIGBUS; the safety net turns it into zeros and a flag.
        assert_eq!(words[last].load(Ordering::Relaxed), 0);
        assert_eq!(words[0].load(Ordering::Relaxed), 0);
        words[1].store(5, Ordering::Relaxed);
        assert_eq!(
            words[1].load(Ordering::Relaxed),
            5,
            "private page is writable"
        );
        assert!(map.faulted());
        assert!(bus_fault_count() >= 2);
        drop(map);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn reservation_beyond_free_space_is_no_space() {
        let path = temp_dir("nospace");
        let dir = CacheDir::open(&path).unwrap();
        let err = dir.create_temp(".tmp.t.", "big", 1 << 60).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoSpace, "{}", err.message);
        assert!(err.message.contains("max_size"), "{}", err.message);
        // Nothing left behind.
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
        std::fs::remove_dir_all(&path).unwrap();
    }
}
