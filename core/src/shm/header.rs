//! Writing and checking the identity words of the two files: the data file's parameter block
//! (INV-9: a file whose parameters differ is replaced, never reused) and the lock file's
//! identity line.
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::layout::{
    word, DataHeader, Geometry, LockFile, ENDIAN_MARK, FORMAT_VERSION, LOCK_FILE_WORDS, LOCK_MAGIC,
};
use crate::corruption::HeaderMismatch;
use crate::hash::hash_algo_id;
use crate::policy::NO_SLOT;

/// A random nonzero number (file nonces).
pub fn random_nonce() -> u64 {
    use std::collections::hash_map::RandomState;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u64(crate::clock::monotonic_now_ns());
    hasher.finish() | 1
}

fn setter(words: &[AtomicU64]) -> impl Fn(usize, u64) + '_ {
    move |index: usize, value: u64| {
        if let Some(w) = words.get(index) {
            w.store(value, Relaxed);
        }
    }
}

/// Writes a fresh lock file image.
pub fn init_lock_words(words: &[AtomicU64], nonce: u64) {
    for w in words {
        w.store(0, Relaxed);
    }
    let set = setter(words);
    set(word!(LockFile, magic), LOCK_MAGIC);
    set(word!(LockFile, endian), ENDIAN_MARK);
    set(word!(LockFile, format_version), FORMAT_VERSION);
    set(word!(LockFile, nonce), nonce);
}

/// Whether `words` are a lock file of this format.
pub fn lock_words_valid(words: &[AtomicU64]) -> bool {
    let get = |index: usize| words.get(index).map(|w| w.load(Relaxed));
    words.len() >= LOCK_FILE_WORDS
        && get(word!(LockFile, magic)) == Some(LOCK_MAGIC)
        && get(word!(LockFile, endian)) == Some(ENDIAN_MARK)
        && get(word!(LockFile, format_version)) == Some(FORMAT_VERSION)
}

pub fn lock_nonce_of(words: &[AtomicU64]) -> u64 {
    words
        .get(word!(LockFile, nonce))
        .map_or(0, |w| w.load(Relaxed))
}

/// Writes a fresh, empty data region (parameter block, empty SIEVE list and allocator).
pub fn init_data_words(words: &[AtomicU64], geometry: &Geometry, lock_nonce: u64) {
    let set = setter(words);
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
    set(word!(DataHeader, epoch), 1);
    set(word!(DataHeader, retired), 0);
}

/// Compares a header (as native-endian words) with what `geometry` and `lock_nonce` expect.
/// `Err` names the first word that differs.
pub fn check_header(
    header: &[u64],
    geometry: &Geometry,
    lock_nonce: Option<u64>,
) -> std::result::Result<(), HeaderMismatch> {
    let creation = word!(DataHeader, creation_nonce);
    let pairing = word!(DataHeader, lock_nonce);
    for (index, expected) in geometry.parameter_words(hash_algo_id(), 0, lock_nonce.unwrap_or(0)) {
        if index == creation || (index == pairing && lock_nonce.is_none()) {
            continue;
        }
        let found = header.get(index).copied();
        if found != Some(expected) {
            return Err(HeaderMismatch {
                word: index,
                expected,
                found,
            });
        }
    }
    Ok(())
}
