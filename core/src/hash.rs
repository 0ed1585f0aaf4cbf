//! The one stable hash of the shared backend: fixed-seed ahash over encoded bytes, the same in
//! every process that runs this build (never Python's `hash()`: PYTHONHASHSEED must not
//! matter). Used for key hashes and for the entry check word that fences writers (INV-S8).
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Identifies the key hash: ahash 0.8 with the seeds below, as compiled into this binary
/// (ahash's output depends on compile-time CPU features, so the id mixes in a probe hash).
const HASH_ALGO_TAG: u64 = 0x4148_4153_4830_0801; // "AHASH0", ahash 0.8, seeds v1
static KEY_HASHER: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

/// The shared backend's key hash over the encoded key bytes.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = KEY_HASHER.build_hasher();
    hasher.write(key);
    hasher.finish()
}

/// The hash algorithm id recorded in data headers: files hashed by another build are replaced.
pub fn hash_algo_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| HASH_ALGO_TAG ^ key_hash(b"warp_cache hash probe v1"))
}

/// The check word of a shared entry: a hash of everything a reader returns or decides on (the
/// table epoch the writer locked under, the key hash, both lengths, the stamp and the value
/// bytes). A reader recomputes it over what it copied, so a copy torn by a writer that was
/// fenced off (judged dead, still running) or by a hostile process never validates, and an
/// entry written under an older epoch (before a takeover or reset) is never served (INV-S8).
#[inline]
pub fn entry_check(epoch: u64, key_hash: u64, lens: u64, stored_at_ns: u64, value: &[u8]) -> u64 {
    let mut hasher = KEY_HASHER.build_hasher();
    hasher.write_u64(epoch);
    hasher.write_u64(key_hash);
    hasher.write_u64(lens);
    hasher.write_u64(stored_at_ns);
    hasher.write(value);
    // 0 is what a never-written slot holds: never a valid check.
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_fixed() {
        // Deterministic within a build. (Not pinned to a constant: ahash's output depends on
        // compile-time CPU features, which is why the header records `hash_algo_id`.)
        assert_eq!(key_hash(b"abc"), key_hash(b"abc"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(
            hash_algo_id(),
            HASH_ALGO_TAG ^ key_hash(b"warp_cache hash probe v1")
        );
    }

    #[test]
    fn the_entry_check_covers_every_field() {
        let base = entry_check(1, 2, 3, 4, b"value");
        assert_ne!(base, 0);
        for other in [
            entry_check(2, 2, 3, 4, b"value"),
            entry_check(1, 3, 3, 4, b"value"),
            entry_check(1, 2, 4, 4, b"value"),
            entry_check(1, 2, 3, 5, b"value"),
            entry_check(1, 2, 3, 4, b"valuf"),
            entry_check(1, 2, 3, 4, b"valu"),
        ] {
            assert_ne!(base, other);
        }
    }
}
