//! Self-describing values written by the multi-process replay: every value names the key it
//! was stored under, the worker (and incarnation) that wrote it and the request that made it,
//! and ends in a checksum, so the checker can tell a correct value from a torn, foreign or
//! invented one.
//!
//! Layout (little-endian), total length `36 + (mix(key, index) % 160)` bytes:
//!
//! | bytes        | field                                                  |
//! |--------------|--------------------------------------------------------|
//! | 0..4         | magic `WSV1`                                           |
//! | 4..12        | key (u64)                                              |
//! | 12..14       | worker id (u16)                                        |
//! | 14..16       | incarnation of the worker (u16, +1 per restart)        |
//! | 16..24       | request index in the trace (u64)                       |
//! | 24..28       | total length (u32)                                     |
//! | 28..len-8    | filler derived from (key, index)                       |
//! | len-8..len   | FNV-1a 64 of bytes 0..len-8                            |
//!
//! Lengths differ between versions of one key, so a value torn between two versions fails the
//! length or the checksum test.
#![forbid(unsafe_code)]

use std::fmt;

use warp_cache_core::codec::{self, Value};

/// Magic bytes at the start of every value.
pub const VALUE_MAGIC: [u8; 4] = *b"WSV1";
/// Fixed part of a value: header (28 bytes) and checksum (8 bytes).
pub const VALUE_BYTES_MIN: usize = 36;
/// Largest value [`encode`] writes.
pub const VALUE_BYTES_MAX: usize = VALUE_BYTES_MIN + 159;
/// `max_value_size` of the replay's store (room for every value).
pub const STORE_VALUE_BYTES_MAX: u32 = 256;
/// `max_key_size` of the replay's store (a one-int tuple is 14 bytes).
pub const STORE_KEY_BYTES_MAX: u32 = 32;

/// Who wrote a value, for which key, in which request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueId {
    pub key: u64,
    pub worker: u16,
    pub incarnation: u16,
    pub index: u64,
}

/// Why bytes are not a valid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// Shorter than the fixed part or longer than any value.
    BadLength(usize),
    BadMagic,
    /// The length field disagrees with the byte count.
    LengthField {
        field: u32,
        actual: usize,
    },
    /// Checksum mismatch: torn or corrupted.
    Checksum,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::BadLength(len) => write!(f, "impossible length {len}"),
            ValueError::BadMagic => write!(f, "bad magic"),
            ValueError::LengthField { field, actual } => {
                write!(f, "length field {field} but {actual} bytes (torn?)")
            }
            ValueError::Checksum => write!(f, "checksum mismatch (torn or corrupted)"),
        }
    }
}

/// FNV-1a 64.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64 finalizer.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn value_len(key: u64, index: u64) -> usize {
    VALUE_BYTES_MIN + (mix64(key ^ index.rotate_left(32)) % 160) as usize
}

/// The bytes stored for `id`.
pub fn encode(id: &ValueId) -> Vec<u8> {
    let len = value_len(id.key, id.index);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&VALUE_MAGIC);
    out.extend_from_slice(&id.key.to_le_bytes());
    out.extend_from_slice(&id.worker.to_le_bytes());
    out.extend_from_slice(&id.incarnation.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let mut state = mix64(id.key.wrapping_mul(31) ^ id.index);
    while out.len() < len - 8 {
        state = mix64(state);
        out.push(state as u8);
    }
    let sum = fnv64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len(), len);
    out
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Parses and verifies bytes read from the store.
pub fn decode(bytes: &[u8]) -> Result<ValueId, ValueError> {
    if bytes.len() < VALUE_BYTES_MIN || bytes.len() > VALUE_BYTES_MAX {
        return Err(ValueError::BadLength(bytes.len()));
    }
    if bytes[..4] != VALUE_MAGIC {
        return Err(ValueError::BadMagic);
    }
    let field = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if field as usize != bytes.len() {
        return Err(ValueError::LengthField {
            field,
            actual: bytes.len(),
        });
    }
    let body = bytes.len() - 8;
    if fnv64(&bytes[..body]) != le_u64(bytes, body) {
        return Err(ValueError::Checksum);
    }
    Ok(ValueId {
        key: le_u64(bytes, 4),
        worker: u16::from_le_bytes([bytes[12], bytes[13]]),
        incarnation: u16::from_le_bytes([bytes[14], bytes[15]]),
        index: le_u64(bytes, 16),
    })
}

/// The store key of trace key `key`: the encoded one-element tuple `(key,)`, exactly as the
/// Python layer encodes the call `f(key)` (keys above `i64::MAX` wrap to negative ints).
pub fn store_key(key: u64) -> Vec<u8> {
    codec::encode(&Value::Tuple(vec![Value::Int(key as i64)])).expect("a flat tuple encodes")
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Inverse of [`to_hex`].
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: u64, index: u64) -> ValueId {
        ValueId {
            key,
            worker: 3,
            incarnation: 2,
            index,
        }
    }

    #[test]
    fn round_trips_and_lengths_vary() {
        let mut lengths = std::collections::HashSet::new();
        for index in 0..200 {
            let v = id(index % 7, index);
            let bytes = encode(&v);
            assert!(bytes.len() >= VALUE_BYTES_MIN && bytes.len() <= VALUE_BYTES_MAX);
            assert!(bytes.len() <= STORE_VALUE_BYTES_MAX as usize);
            lengths.insert(bytes.len());
            assert_eq!(decode(&bytes), Ok(v));
        }
        assert!(lengths.len() > 50, "lengths should vary: {}", lengths.len());
    }

    #[test]
    fn torn_and_corrupted_values_are_rejected() {
        let a = encode(&id(5, 10));
        let b = encode(&id(5, 11));
        // Torn: first half of one version, second half of another of the same length.
        let mut same_len = (12..10_000)
            .map(|i| encode(&id(5, i)))
            .find(|v| v.len() == a.len() && *v != a)
            .unwrap();
        let half = a.len() / 2;
        same_len[..half].copy_from_slice(&a[..half]);
        assert_eq!(decode(&same_len), Err(ValueError::Checksum));
        // Torn between versions of different lengths: the header of one, the rest of another.
        let mut mixed = b.clone();
        mixed[..28].copy_from_slice(&a[..28]);
        if a.len() != b.len() {
            assert!(matches!(
                decode(&mixed),
                Err(ValueError::LengthField { .. })
            ));
        } else {
            assert_eq!(decode(&mixed), Err(ValueError::Checksum));
        }
        for flip in [0, 5, 20, a.len() - 1] {
            let mut bad = a.clone();
            bad[flip] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {flip}");
        }
        assert_eq!(decode(&[]), Err(ValueError::BadLength(0)));
        assert_eq!(decode(&[0u8; 40]), Err(ValueError::BadMagic));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(store_key(7), store_key(7));
        assert_ne!(store_key(7), store_key(8));
        assert!(store_key(u64::MAX).len() <= STORE_KEY_BYTES_MAX as usize);
    }
}
