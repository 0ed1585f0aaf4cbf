//! Space reservation and the precise errors for files and directories that cannot be used.
#![allow(unsafe_code)] // posix_fallocate has no std wrapper.

use std::fs::File;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

pub(super) fn no_space(dir: &Path, len: u64, available: Option<u64>) -> Error {
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
pub(super) fn reserve(file: &File, len: u64, dir: &Path) -> Result<()> {
    reserve_from(file, 0, len, dir)
}

/// Reserves bytes `from..len` (the file grows to `len` if shorter), as [`reserve`].
#[cfg(target_os = "linux")]
pub(super) fn reserve_from(file: &File, from: u64, len: u64, dir: &Path) -> Result<()> {
    let (Ok(off_from), Ok(off_len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(len.saturating_sub(from)),
    ) else {
        return Err(Error::invalid_argument(format!(
            "file length {len} does not fit off_t"
        )));
    };
    if off_len == 0 {
        return Ok(());
    }
    // SAFETY: the fd is open for writing; posix_fallocate only allocates blocks for the range.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off_from, off_len) };
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
pub(super) fn reserve(file: &File, len: u64, dir: &Path) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io(format!("cannot size a file in {}", dir.display()), &e))
}

/// macOS: as [`reserve`].
#[cfg(not(target_os = "linux"))]
pub(super) fn reserve_from(file: &File, _from: u64, len: u64, dir: &Path) -> Result<()> {
    reserve(file, len, dir)
}

pub(super) fn not_a_regular_file(path: &Path, meta: &std::fs::Metadata) -> Error {
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
