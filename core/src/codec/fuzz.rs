//! Fuzz target bodies of the codec (called by the `codec` target, `crate::fuzz_targets::codec`,
//! and by tests). Compiled only for them: feature `testkit`, `cfg(fuzzing)` or `cfg(test)`.

use super::{decode, decode_ref, encode, encoded_len, Value};
use crate::fuzz_targets::Input;

/// Arbitrary bytes: decoding must not panic; a successful decode must re-encode to exactly the
/// input (canonical form) and decode again to the same value.
pub fn fuzz_decode(data: &[u8]) {
    let borrowed = decode_ref(data);
    let owned = decode(data);
    match (borrowed, owned) {
        (Ok(borrowed), Ok(owned)) => {
            assert!(
                borrowed.to_value() == owned,
                "borrowed and owned decode differ"
            );
            let again = encode(&owned).expect("a decoded value re-encodes");
            assert_eq!(again, data, "decode is not canonical");
            assert_eq!(encoded_len(&owned), Ok(data.len()));
            assert!(decode(&again).expect("re-decode") == owned);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "borrowed and owned decode disagree"),
        (a, b) => panic!("decode_ref {a:?} and decode {b:?} disagree"),
    }
}

/// Structured values: builds a [`Value`] from `data` (a tiny byte-driven generator), checks
/// that encoding round-trips byte-exactly and that `encoded_len` is exact.
pub fn fuzz_roundtrip(data: &[u8]) {
    let value = value_from(&mut Input::new(data), 0);
    let bytes = encode(&value).expect("generated values are flat");
    assert_eq!(encoded_len(&value), Ok(bytes.len()));
    let decoded = decode(&bytes).expect("an encoded value decodes");
    assert!(
        decoded == value,
        "round trip changed {value:?} to {decoded:?}"
    );
    assert_eq!(encode(&decoded).expect("re-encode"), bytes);
    fuzz_decode(&bytes);
}

/// Byte-driven value generator for [`fuzz_roundtrip`]. Reads past the end as zeros.
fn value_from(input: &mut Input<'_>, depth: u8) -> Value {
    let choice = input.byte() % if depth == 0 { 9 } else { 8 };
    match choice {
        0 => Value::None,
        1 => Value::Bool(input.byte() & 1 == 1),
        2 => Value::Int(input.u64() as i64),
        3 => Value::Float(f64::from_bits(input.u64())),
        4 => {
            let len = usize::from(input.byte() % 24);
            Value::Str(String::from_utf8_lossy(&input.take(len)).into_owned())
        }
        5 => {
            let len = usize::from(input.byte() % 24);
            Value::Bytes(input.take(len))
        }
        6 => {
            let len = usize::from(input.byte() % 24);
            Value::Pickle(input.take(len))
        }
        7 => Value::KwargsMarker,
        _ => {
            let count = usize::from(input.byte() % 8);
            Value::Tuple((0..count).map(|_| value_from(input, depth + 1)).collect())
        }
    }
}
