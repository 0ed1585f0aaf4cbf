//! Codec properties: every flat value round-trips byte-exactly, encoding is canonical, and
//! decoding arbitrary bytes never panics (and re-encodes to the input when it succeeds).

use proptest::prelude::*;
use warp_cache_core::codec::{self, DecodeErrorKind, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
        prop_oneof![Just(0.0), Just(-0.0), Just(f64::NAN), Just(f64::INFINITY)]
            .prop_map(Value::Float),
        ".{0,40}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Pickle),
        Just(Value::KwargsMarker),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => proptest::collection::vec(scalar(), 0..12).prop_map(Value::Tuple),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn values_round_trip_byte_exactly(v in value()) {
        let bytes = codec::encode(&v).unwrap();
        prop_assert_eq!(codec::encoded_len(&v).unwrap(), bytes.len());
        let back = codec::decode(&bytes).unwrap();
        prop_assert!(back == v, "{:?} came back as {:?}", v, back);
        prop_assert_eq!(codec::encode(&back).unwrap(), bytes.clone());
        prop_assert!(codec::decode_ref(&bytes).unwrap().to_value() == v);
        // Appending keeps what was in the buffer.
        let mut out = vec![0xEE];
        codec::encode_into(&v, &mut out).unwrap();
        prop_assert_eq!(&out[1..], &bytes[..]);
    }

    #[test]
    fn equal_bytes_iff_equal_values(a in value(), b in value()) {
        let (ea, eb) = (codec::encode(&a).unwrap(), codec::encode(&b).unwrap());
        prop_assert_eq!(ea == eb, a == b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        codec::fuzz_decode(&bytes);
    }

    #[test]
    fn truncations_of_valid_encodings_are_typed_errors(v in value(), cut in any::<prop::sample::Index>()) {
        let bytes = codec::encode(&v).unwrap();
        let cut = cut.index(bytes.len());
        let err = codec::decode(&bytes[..cut]).unwrap_err();
        prop_assert!(matches!(
            err.kind,
            DecodeErrorKind::Empty | DecodeErrorKind::Truncated | DecodeErrorKind::LengthOverflow
        ), "{:?}", err);
        prop_assert!(err.offset <= cut);
    }

    #[test]
    fn structured_fuzz_body(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        codec::fuzz_roundtrip(&bytes);
    }
}

#[test]
fn nested_tuples_must_be_pickled_by_the_caller() {
    let nested = Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![])]);
    assert_eq!(codec::encode(&nested), Err(codec::EncodeError::NestedTuple));
}
