//! Where shared files live and how cache names become file names (only `[A-Za-z0-9._-]`,
//! never starting with a dot, long names hashed).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use super::{DIR_ENV, NAME_MAX_PLAIN};

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
        crate::shm::raw::effective_uid()
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
    PathBuf::from(format!(
        "/tmp/warp_cache-{}",
        crate::shm::raw::effective_uid()
    ))
}

pub(super) fn plain_char(c: char) -> bool {
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
