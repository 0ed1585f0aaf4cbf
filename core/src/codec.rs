//! Codec: [`Value`] <-> bytes, the shared backend's serialization (spec "Shared backend
//! serialization").
//!
//! # Wire format (format version [`CODEC_VERSION`])
//!
//! | value            | bytes                                              |
//! |------------------|----------------------------------------------------|
//! | `None`           | `0x01`                                             |
//! | `False` / `True` | `0x02` / `0x03`                                    |
//! | `int` (i64)      | `0x04` + 8 bytes little-endian two's complement    |
//! | `float` (f64)    | `0x05` + 8 bytes little-endian IEEE 754 bits       |
//! | `str`            | `0x06` + u32 LE byte length + UTF-8 bytes          |
//! | `bytes`          | `0x07` + u32 LE length + bytes                     |
//! | flat tuple       | `0x08` + u32 LE element count + elements           |
//! | pickle           | `0x09` + u32 LE length + pickle bytes (opaque)     |
//! | kwargs marker    | `0x0A`                                             |
//!
//! Tag `0x00` is never valid, so zero-filled memory never decodes.
//!
//! * **Flat tuples only.** A tuple element is a scalar, a pickle or the kwargs marker; a tuple
//!   inside a tuple is an [`EncodeError`] (the Python layer pickles nested structures), and a
//!   decoder meeting one reports [`DecodeErrorKind::NestedTuple`].
//! * **Canonical.** Every value has exactly one encoding and decoding is strict (no trailing
//!   bytes, no alternative forms), so `decode(b) == Ok(v)` implies `encode(v) == b`, and equal
//!   values give equal bytes. Floats are compared and encoded **by their exact bits**:
//!   `-0.0` and `0.0` are different values (different keys), and every NaN payload is kept
//!   as is (a NaN key equals itself bit for bit, unlike Python's `==`). [`Value`]'s
//!   `PartialEq` follows the same rule.
//! * **Kwargs marker.** A one-byte value used only by the key builder: a call's key is the
//!   tuple `(positional..., KwargsMarker, name1, value1, name2, value2, ...)` with names
//!   sorted, so `f(x=1)` can never produce the bytes of a positional call.
//! * **Decoding never panics** and never allocates more than the input justifies: every
//!   length and count is checked against the remaining input before anything is allocated.
//!   Errors are typed ([`DecodeError`]: what was wrong and at which byte offset).
#![forbid(unsafe_code)]

use std::fmt;

/// Version of the wire format above. Recorded in the shared-memory header so processes with
/// different codecs never share a file.
pub const CODEC_VERSION: u32 = 1;

/// Tag bytes of the wire format.
pub mod tag {
    pub const NONE: u8 = 0x01;
    pub const FALSE: u8 = 0x02;
    pub const TRUE: u8 = 0x03;
    pub const INT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const STR: u8 = 0x06;
    pub const BYTES: u8 = 0x07;
    pub const TUPLE: u8 = 0x08;
    pub const PICKLE: u8 = 0x09;
    pub const KWARGS_MARKER: u8 = 0x0A;
}

/// Largest length or count the 4-byte length fields can hold.
pub const MAX_LEN: usize = u32::MAX as usize;

/// An owned value.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Compared and encoded by exact bits (see the module docs).
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Flat: elements are scalars, `Pickle` or `KwargsMarker`, never `Tuple`.
    Tuple(Vec<Value>),
    /// Opaque pickled bytes (protocol 5, produced and read by the Python layer).
    Pickle(Vec<u8>),
    /// Separates positional arguments from sorted keyword arguments in a key.
    KwargsMarker,
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Pickle(a), Value::Pickle(b)) => a == b,
            (Value::KwargsMarker, Value::KwargsMarker) => true,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// A value borrowing from the encoded bytes (zero-copy decode).
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Tuple(TupleRef<'a>),
    Pickle(&'a [u8]),
    KwargsMarker,
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueRef::None, ValueRef::None) => true,
            (ValueRef::Bool(a), ValueRef::Bool(b)) => a == b,
            (ValueRef::Int(a), ValueRef::Int(b)) => a == b,
            (ValueRef::Float(a), ValueRef::Float(b)) => a.to_bits() == b.to_bits(),
            (ValueRef::Str(a), ValueRef::Str(b)) => a == b,
            (ValueRef::Bytes(a), ValueRef::Bytes(b)) => a == b,
            (ValueRef::Tuple(a), ValueRef::Tuple(b)) => a.iter().eq(b.iter()),
            (ValueRef::Pickle(a), ValueRef::Pickle(b)) => a == b,
            (ValueRef::KwargsMarker, ValueRef::KwargsMarker) => true,
            _ => false,
        }
    }
}

/// The elements of a decoded tuple, already validated; iterate with [`TupleRef::iter`].
#[derive(Debug, Clone, Copy)]
pub struct TupleRef<'a> {
    count: u32,
    /// Exactly the encoded elements.
    body: &'a [u8],
}

impl<'a> TupleRef<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> TupleIter<'a> {
        TupleIter {
            remaining: self.count,
            body: self.body,
            position: 0,
        }
    }
}

/// Iterator over a [`TupleRef`]'s elements.
#[derive(Debug, Clone)]
pub struct TupleIter<'a> {
    remaining: u32,
    body: &'a [u8],
    position: usize,
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = ValueRef<'a>;

    fn next(&mut self) -> Option<ValueRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // The body was validated when the tuple was decoded, so this cannot fail; if it ever
        // did, the iteration just ends (never a panic).
        match decode_element(self.body, self.position, 0) {
            Ok((value, next)) => {
                self.remaining -= 1;
                self.position = next;
                Some(value)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

impl<'a> ValueRef<'a> {
    /// Copies into an owned [`Value`].
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::None => Value::None,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::Tuple(t) => Value::Tuple(t.iter().map(|v| v.to_value()).collect()),
            ValueRef::Pickle(p) => Value::Pickle(p.to_vec()),
            ValueRef::KwargsMarker => Value::KwargsMarker,
        }
    }
}

impl Value {
    /// Short name of the variant, for messages.
    fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::Pickle(_) => "pickle",
            Value::KwargsMarker => "kwargs marker",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A tuple element is itself a tuple: the caller must pickle nested structures.
    NestedTuple,
    /// A str/bytes/pickle length or a tuple count does not fit the 4-byte length field.
    TooLong { len: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::NestedTuple => {
                f.write_str("a tuple element is a tuple: pickle nested structures instead")
            }
            EncodeError::TooLong { len } => write!(
                f,
                "length {len} does not fit the codec's 4-byte length field (max {MAX_LEN})"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// What was wrong with encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input (or a tuple element position) is empty where a value was expected.
    Empty,
    /// A tag byte that is not in the table.
    UnknownTag(u8),
    /// A fixed-size field (8-byte number, 4-byte length) runs past the end of the input.
    Truncated,
    /// A declared length or element count is larger than the remaining input can hold.
    LengthOverflow,
    /// `str` data that is not valid UTF-8.
    InvalidUtf8,
    /// A tuple inside a tuple.
    NestedTuple,
    /// Bytes left over after one complete value.
    TrailingBytes,
}

/// A decode failure: what and where (byte offset into the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub offset: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DecodeErrorKind::Empty => "missing value (input ended)".to_owned(),
            DecodeErrorKind::UnknownTag(tag) => format!("unknown tag 0x{tag:02x}"),
            DecodeErrorKind::Truncated => "truncated fixed-size field".to_owned(),
            DecodeErrorKind::LengthOverflow => {
                "declared length or count exceeds the remaining input".to_owned()
            }
            DecodeErrorKind::InvalidUtf8 => "str data is not valid UTF-8".to_owned(),
            DecodeErrorKind::NestedTuple => "tuple nested inside a tuple".to_owned(),
            DecodeErrorKind::TrailingBytes => "trailing bytes after the value".to_owned(),
        };
        write!(f, "cannot decode value: {what} at byte {}", self.offset)
    }
}

impl std::error::Error for DecodeError {}

fn err(kind: DecodeErrorKind, offset: usize) -> DecodeError {
    DecodeError { kind, offset }
}

// ---------------------------------------------------------------------------------------------
// Encoding: low-level writers (the Python key builder uses these directly, without building a
// `Value`) and the `Value` encoder.

fn len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong { len })
}

pub fn write_none(out: &mut Vec<u8>) {
    out.push(tag::NONE);
}

pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { tag::TRUE } else { tag::FALSE });
}

pub fn write_int(out: &mut Vec<u8>, value: i64) {
    // One append (one capacity check) for the tag and the 8 bytes: keys are mostly ints.
    let mut bytes = [tag::INT; 9];
    bytes[1..].copy_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Writes the exact bits of `value` (NaN payloads and the sign of zero are kept).
pub fn write_float(out: &mut Vec<u8>, value: f64) {
    out.push(tag::FLOAT);
    out.extend_from_slice(&value.to_bits().to_le_bytes());
}

fn write_blob(out: &mut Vec<u8>, tag: u8, data: &[u8]) -> Result<(), EncodeError> {
    let len = len_u32(data.len())?;
    out.reserve(5 + data.len());
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
    Ok(())
}

pub fn write_str(out: &mut Vec<u8>, value: &str) -> Result<(), EncodeError> {
    write_blob(out, tag::STR, value.as_bytes())
}

pub fn write_bytes(out: &mut Vec<u8>, value: &[u8]) -> Result<(), EncodeError> {
    write_blob(out, tag::BYTES, value)
}

pub fn write_pickle(out: &mut Vec<u8>, pickled: &[u8]) -> Result<(), EncodeError> {
    write_blob(out, tag::PICKLE, pickled)
}

pub fn write_kwargs_marker(out: &mut Vec<u8>) {
    out.push(tag::KWARGS_MARKER);
}

/// Writes a tuple header for `count` elements; the caller then writes exactly `count` flat
/// elements (scalars, pickles or the kwargs marker).
pub fn write_tuple_header(out: &mut Vec<u8>, count: usize) -> Result<(), EncodeError> {
    let count = len_u32(count)?;
    let mut bytes = [tag::TUPLE; 5];
    bytes[1..].copy_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Length of [`single_int_key`]'s encoding: tuple header (5) + int (9).
pub const SINGLE_INT_KEY_BYTES: usize = 14;

/// The encoding of the one-element tuple `(value,)` (a call with one int argument), built in
/// a fixed array: the same bytes as [`write_tuple_header`] + [`write_int`] (tested), without
/// a `Vec`, so a hit path can hash and compare it straight from registers and the stack.
#[inline]
pub fn single_int_key(value: i64) -> [u8; SINGLE_INT_KEY_BYTES] {
    let mut key = [0u8; SINGLE_INT_KEY_BYTES];
    key[0] = tag::TUPLE;
    key[1..5].copy_from_slice(&1u32.to_le_bytes());
    key[5] = tag::INT;
    key[6..].copy_from_slice(&value.to_le_bytes());
    key
}

fn encode_scalar(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match value {
        Value::None => write_none(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_str(out, s)?,
        Value::Bytes(b) => write_bytes(out, b)?,
        Value::Pickle(p) => write_pickle(out, p)?,
        Value::KwargsMarker => write_kwargs_marker(out),
        Value::Tuple(_) => return Err(EncodeError::NestedTuple),
    }
    Ok(())
}

/// Appends the encoding of `value` to `out`. On error `out` is left as it was.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = match value {
        Value::Tuple(elements) => write_tuple_header(out, elements.len()).and_then(|()| {
            elements
                .iter()
                .try_for_each(|element| encode_scalar(element, out))
        }),
        scalar => encode_scalar(scalar, out),
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The encoding of `value` in a new vector.
pub fn encode(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(encoded_len(value)?);
    encode_into(value, &mut out)?;
    Ok(out)
}

fn scalar_len(value: &Value) -> Result<usize, EncodeError> {
    Ok(match value {
        Value::None | Value::Bool(_) | Value::KwargsMarker => 1,
        Value::Int(_) | Value::Float(_) => 9,
        Value::Str(s) => 5 + len_u32(s.len())? as usize,
        Value::Bytes(b) | Value::Pickle(b) => 5 + len_u32(b.len())? as usize,
        Value::Tuple(_) => return Err(EncodeError::NestedTuple),
    })
}

/// Exact number of bytes [`encode_into`] appends for `value`.
pub fn encoded_len(value: &Value) -> Result<usize, EncodeError> {
    match value {
        Value::Tuple(elements) => {
            len_u32(elements.len())?;
            elements.iter().try_fold(5usize, |total, element| {
                let len = scalar_len(element)?;
                total
                    .checked_add(len)
                    .ok_or(EncodeError::TooLong { len: usize::MAX })
            })
        }
        scalar => scalar_len(scalar),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn read_array<const N: usize>(input: &[u8], at: usize) -> Result<[u8; N], DecodeError> {
    input
        .get(at..)
        .and_then(|rest| rest.get(..N))
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(err(DecodeErrorKind::Truncated, at))
}

/// Reads a 4-byte length at `at` and returns (length, offset of the data) after checking that
/// `length * unit` bytes remain (`unit` = minimum encoded size of one item).
fn read_len(input: &[u8], at: usize, unit: usize) -> Result<(usize, usize), DecodeError> {
    let len = u32::from_le_bytes(read_array::<4>(input, at)?) as usize;
    let data = at + 4;
    let remaining = input.len() - data;
    match len.checked_mul(unit) {
        Some(needed) if needed <= remaining => Ok((len, data)),
        _ => Err(err(DecodeErrorKind::LengthOverflow, at)),
    }
}

/// Decodes one value starting at `at`; `depth` 1 means "inside a tuple" (tuples rejected).
/// Returns the value and the offset just past it.
fn decode_element(
    input: &[u8],
    at: usize,
    depth: u8,
) -> Result<(ValueRef<'_>, usize), DecodeError> {
    let Some(&tag_byte) = input.get(at) else {
        return Err(err(DecodeErrorKind::Empty, at));
    };
    let body = at + 1;
    Ok(match tag_byte {
        tag::NONE => (ValueRef::None, body),
        tag::FALSE => (ValueRef::Bool(false), body),
        tag::TRUE => (ValueRef::Bool(true), body),
        tag::KWARGS_MARKER => (ValueRef::KwargsMarker, body),
        tag::INT => (
            ValueRef::Int(i64::from_le_bytes(read_array::<8>(input, body)?)),
            body + 8,
        ),
        tag::FLOAT => (
            ValueRef::Float(f64::from_bits(u64::from_le_bytes(read_array::<8>(
                input, body,
            )?))),
            body + 8,
        ),
        tag::STR | tag::BYTES | tag::PICKLE => {
            let (len, data) = read_len(input, body, 1)?;
            let bytes = &input[data..data + len];
            let value = match tag_byte {
                tag::STR => ValueRef::Str(
                    std::str::from_utf8(bytes)
                        .map_err(|e| err(DecodeErrorKind::InvalidUtf8, data + e.valid_up_to()))?,
                ),
                tag::BYTES => ValueRef::Bytes(bytes),
                _ => ValueRef::Pickle(bytes),
            };
            (value, data + len)
        }
        tag::TUPLE => {
            if depth > 0 {
                return Err(err(DecodeErrorKind::NestedTuple, at));
            }
            // Every element takes at least one byte.
            let (count, first) = read_len(input, body, 1)?;
            let mut cursor = first;
            for _ in 0..count {
                let (_, next) = decode_element(input, cursor, depth + 1)?;
                cursor = next;
            }
            (
                ValueRef::Tuple(TupleRef {
                    count: count as u32,
                    body: &input[first..cursor],
                }),
                cursor,
            )
        }
        other => return Err(err(DecodeErrorKind::UnknownTag(other), at)),
    })
}

/// Decodes exactly one value spanning all of `input`, borrowing from it.
pub fn decode_ref(input: &[u8]) -> Result<ValueRef<'_>, DecodeError> {
    let (value, end) = decode_element(input, 0, 0)?;
    if end != input.len() {
        return Err(err(DecodeErrorKind::TrailingBytes, end));
    }
    Ok(value)
}

/// Decodes exactly one value spanning all of `input`.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    decode_ref(input).map(|value| value.to_value())
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Tuple(elements) => write!(f, "tuple of {} elements", elements.len()),
            other => f.write_str(other.kind_name()),
        }
    }
}

// Fuzz target bodies: the `codec` target's (crate::fuzz_targets::codec) and the tests'.
#[cfg(any(test, fuzzing, feature = "testkit"))]
mod fuzz;
#[cfg(any(test, fuzzing, feature = "testkit"))]
pub use fuzz::{fuzz_decode, fuzz_roundtrip};

#[cfg(test)]
mod tests;
