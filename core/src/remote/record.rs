//! The record stored as a Redis value: the full encoded key beside the value, and an
//! integrity tag bound to the namespace.
//!
//! # Layout (version 1)
//!
//! | bytes        | field                                                          |
//! |--------------|----------------------------------------------------------------|
//! | 4            | magic and version `WCR\x01`                                    |
//! | 1            | flags: bit 0 the value is a pickle, bit 1 the tag is an HMAC    |
//! | 4 + n        | u32 LE key length, the encoded key                             |
//! | 4 + m        | u32 LE value length, the value bytes (codec output, opaque)     |
//! | 32 or 8      | tag over `u32 LE namespace length, namespace, everything above` |
//!
//! The tag is HMAC-SHA256 keyed by the user's secret when one is configured, else an
//! xxh3-64 checksum with a fixed seed. The checksum only catches accidents (a truncated or
//! garbled value, a record copied under another namespace's key); anyone who can write to
//! the server can forge it, which is why a pickle (whose loading runs code) is written and
//! accepted only under an HMAC. xxh3 rather than the crate's ahash: ahash's output depends
//! on compile-time CPU features (see `hash.rs`), and Redis records are read by other hosts
//! and other builds.
//!
//! The namespace is hashed with its length first, so `("ab", record)` and `("a", "b" ...)`
//! never share a tag input. Records are the same size whatever the key hash: the stored key
//! is compared byte for byte with the expected one, so a 128-bit name collision or a record
//! moved from another key is a rejected record, never a foreign value.
#![forbid(unsafe_code)]

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Magic and format version of a record.
pub const MAGIC: [u8; 4] = *b"WCR\x01";
/// Flag: the value bytes are a pickle (loading them runs code).
pub const FLAG_PICKLE: u8 = 0b01;
/// Flag: the tag is an HMAC-SHA256 (32 bytes), not a checksum (8 bytes).
pub const FLAG_HMAC: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_PICKLE | FLAG_HMAC;

/// Tag lengths.
pub const HMAC_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 8;
/// Bytes of a record besides its key and value, before the tag.
const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + 4;

/// Fixed seed of the unsigned checksum ("wc-rec-1"): changing it invalidates every record.
const CHECKSUM_SEED: u64 = 0x7763_2d72_6563_2d31;

/// The user's secret for HMAC tags. Its bytes are never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes; an empty secret is refused (it would sign with a known key).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a record was not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeRefusal {
    /// The value is a pickle and no secret is configured: the caller stores nothing and
    /// counts it (an unsigned pickle in a shared server would let anyone who can write to it
    /// run code in every reader).
    UnsignedPickle,
    /// The key or the value is longer than a u32 length field holds.
    TooLarge,
}

/// Why a stored record was rejected. The caller deletes the Redis key and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than the fixed header, or a length field runs past the end.
    Truncated,
    /// Not this format (or another version of it).
    BadMagic,
    /// A flag bit this version does not know.
    UnknownFlags,
    /// Bytes left between the value and the tag, or the tag is cut short.
    BadLength,
    /// The record was signed and no secret is configured, or the reverse: a configured
    /// secret accepts signed records only, so a checksum cannot stand in for it.
    TagKindMismatch,
    /// The tag does not verify: garbled bytes, another secret or another namespace.
    TagMismatch,
    /// A checksummed record claims a pickle: never loaded without an HMAC.
    UnsignedPickle,
    /// A valid record of another key (a name collision, or a record moved).
    KeyMismatch,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::Truncated => "record truncated",
            RecordError::BadMagic => "not a warp_cache record of version 1",
            RecordError::UnknownFlags => "record has unknown flag bits",
            RecordError::BadLength => "record lengths are inconsistent",
            RecordError::TagKindMismatch => "record signed differently than configured",
            RecordError::TagMismatch => "record tag does not verify",
            RecordError::UnsignedPickle => "unsigned record claims a pickle",
            RecordError::KeyMismatch => "record holds another key",
        })
    }
}

impl std::error::Error for RecordError {}

/// A verified record: the value bytes and whether they are a pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub value: &'a [u8],
    pub is_pickle: bool,
}

/// Encodes a record of `key` (encoded key bytes) and `value` (codec output) for
/// `namespace`, tagged with `secret` when one is given.
pub fn encode(
    namespace: &str,
    key: &[u8],
    value: &[u8],
    is_pickle: bool,
    secret: Option<&Secret>,
) -> Result<Vec<u8>, EncodeRefusal> {
    if is_pickle && secret.is_none() {
        return Err(EncodeRefusal::UnsignedPickle);
    }
    let key_len = u32::try_from(key.len()).map_err(|_| EncodeRefusal::TooLarge)?;
    let value_len = u32::try_from(value.len()).map_err(|_| EncodeRefusal::TooLarge)?;
    let tag_len = if secret.is_some() {
        HMAC_LEN
    } else {
        CHECKSUM_LEN
    };
    let mut flags = 0;
    if is_pickle {
        flags |= FLAG_PICKLE;
    }
    if secret.is_some() {
        flags |= FLAG_HMAC;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + value.len() + tag_len);
    out.extend_from_slice(&MAGIC);
    out.push(flags);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(value);
    match secret {
        Some(secret) => {
            let tag = hmac_tag(secret, namespace, &out);
            out.extend_from_slice(&tag);
        }
        None => {
            let sum = checksum(namespace, &out);
            out.extend_from_slice(&sum.to_le_bytes());
        }
    }
    Ok(out)
}

/// Checks a record read from Redis and returns its value only if it is this format, its
/// tag verifies for `namespace` (and `secret`), and it holds exactly `expected_key`.
pub fn decode<'a>(
    bytes: &'a [u8],
    namespace: &str,
    expected_key: &[u8],
    secret: Option<&Secret>,
) -> Result<Decoded<'a>, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated);
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let flags = bytes[MAGIC.len()];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(RecordError::UnknownFlags);
    }
    let signed = flags & FLAG_HMAC != 0;
    let is_pickle = flags & FLAG_PICKLE != 0;
    if signed != secret.is_some() {
        return Err(RecordError::TagKindMismatch);
    }
    if is_pickle && !signed {
        return Err(RecordError::UnsignedPickle);
    }
    let tag_len = if signed { HMAC_LEN } else { CHECKSUM_LEN };

    // Lengths first, all in u64-free usize arithmetic with checked adds: nothing is sliced
    // before it is known to be in bounds.
    let mut at = MAGIC.len() + 1;
    let key_len = read_len(bytes, at)?;
    at += 4;
    let key_end = at.checked_add(key_len).ok_or(RecordError::Truncated)?;
    let value_len = read_len(bytes, key_end)?;
    let value_start = key_end + 4;
    let value_end = value_start
        .checked_add(value_len)
        .ok_or(RecordError::Truncated)?;
    if value_end > bytes.len() {
        return Err(RecordError::Truncated);
    }
    if bytes.len() - value_end != tag_len {
        return Err(RecordError::BadLength);
    }
    let (body, tag) = bytes.split_at(value_end);
    match secret {
        Some(secret) => {
            let mut mac = keyed_mac(secret, namespace);
            mac.update(body);
            // `verify_slice` compares in constant time.
            mac.verify_slice(tag)
                .map_err(|_| RecordError::TagMismatch)?;
        }
        None => {
            if tag != checksum(namespace, body).to_le_bytes() {
                return Err(RecordError::TagMismatch);
            }
        }
    }
    if &bytes[at..key_end] != expected_key {
        return Err(RecordError::KeyMismatch);
    }
    Ok(Decoded {
        value: &bytes[value_start..value_end],
        is_pickle,
    })
}

/// The u32 LE length at `at`, or `Truncated` if its 4 bytes are not all there.
fn read_len(bytes: &[u8], at: usize) -> Result<usize, RecordError> {
    let field = bytes
        .get(at..at.checked_add(4).ok_or(RecordError::Truncated)?)
        .ok_or(RecordError::Truncated)?;
    let len = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    usize::try_from(len).map_err(|_| RecordError::Truncated)
}

fn keyed_mac(secret: &Secret, namespace: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&namespace_len(namespace));
    mac.update(namespace.as_bytes());
    mac
}

fn hmac_tag(secret: &Secret, namespace: &str, body: &[u8]) -> [u8; HMAC_LEN] {
    let mut mac = keyed_mac(secret, namespace);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn checksum(namespace: &str, body: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(CHECKSUM_SEED);
    hasher.update(&namespace_len(namespace));
    hasher.update(namespace.as_bytes());
    hasher.update(body);
    hasher.digest()
}

/// The namespace's length as it prefixes the tag input (saturated: a namespace of 4 GiB is
/// not a real case, and saturating still binds the bytes that follow).
fn namespace_len(namespace: &str) -> [u8; 4] {
    u32::try_from(namespace.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
