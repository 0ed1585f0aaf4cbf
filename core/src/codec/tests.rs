use super::*;

fn bytes_of(value: &Value) -> Vec<u8> {
    encode(value).unwrap()
}

#[test]
fn a_single_int_key_is_the_one_tuple_encoding() {
    for value in [0, 1, -1, 42, -2, i64::MIN, i64::MAX, 1 << 40, -(1 << 33)] {
        let expected = bytes_of(&Value::Tuple(vec![Value::Int(value)]));
        assert_eq!(single_int_key(value).as_slice(), expected, "{value}");
        let mut written = Vec::new();
        write_tuple_header(&mut written, 1).unwrap();
        write_int(&mut written, value);
        assert_eq!(written, expected, "{value}");
    }
}

#[test]
fn scalars_match_the_spec_table() {
    assert_eq!(bytes_of(&Value::None), [0x01]);
    assert_eq!(bytes_of(&Value::Bool(false)), [0x02]);
    assert_eq!(bytes_of(&Value::Bool(true)), [0x03]);
    assert_eq!(
        bytes_of(&Value::Int(-2)),
        [0x04, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(
        bytes_of(&Value::Float(1.0)),
        [0x05, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]
    );
    assert_eq!(
        bytes_of(&Value::Str("hé".into())),
        [0x06, 3, 0, 0, 0, b'h', 0xc3, 0xa9]
    );
    assert_eq!(bytes_of(&Value::Bytes(vec![7])), [0x07, 1, 0, 0, 0, 7]);
    assert_eq!(
        bytes_of(&Value::Pickle(vec![0x80])),
        [0x09, 1, 0, 0, 0, 0x80]
    );
    assert_eq!(bytes_of(&Value::KwargsMarker), [0x0a]);
    assert_eq!(
        bytes_of(&Value::Tuple(vec![Value::Int(1), Value::None])),
        [0x08, 2, 0, 0, 0, 0x04, 1, 0, 0, 0, 0, 0, 0, 0, 0x01]
    );
}

#[test]
fn floats_are_exact_bits() {
    let neg_zero = bytes_of(&Value::Float(-0.0));
    let zero = bytes_of(&Value::Float(0.0));
    assert_ne!(neg_zero, zero, "-0.0 and 0.0 are distinct keys");
    assert!(Value::Float(-0.0) != Value::Float(0.0));
    let payload_nan = f64::from_bits(0x7ff8_0000_0000_1234);
    let round = decode(&bytes_of(&Value::Float(payload_nan))).unwrap();
    match round {
        Value::Float(f) => assert_eq!(f.to_bits(), 0x7ff8_0000_0000_1234),
        other => panic!("expected a float, got {other:?}"),
    }
    assert!(Value::Float(f64::NAN) == Value::Float(f64::NAN));
}

#[test]
fn kwargs_marker_separates_kwargs_from_positional_lookalikes() {
    // f(x=1) vs f("x", 1): the marker makes the encodings differ.
    let kw = Value::Tuple(vec![
        Value::KwargsMarker,
        Value::Str("x".into()),
        Value::Int(1),
    ]);
    let positional = Value::Tuple(vec![Value::Str("x".into()), Value::Int(1)]);
    assert_ne!(bytes_of(&kw), bytes_of(&positional));
    assert!(decode(&bytes_of(&kw)).unwrap() == kw);
}

#[test]
fn nested_tuples_are_rejected_both_ways() {
    let nested = Value::Tuple(vec![Value::Tuple(vec![])]);
    let mut out = vec![0xaa];
    assert_eq!(
        encode_into(&nested, &mut out),
        Err(EncodeError::NestedTuple)
    );
    assert_eq!(out, [0xaa], "a failed encode leaves the buffer unchanged");
    assert_eq!(encoded_len(&nested), Err(EncodeError::NestedTuple));
    let bytes = [0x08, 1, 0, 0, 0, 0x08, 0, 0, 0, 0];
    assert_eq!(
        decode(&bytes),
        Err(DecodeError {
            kind: DecodeErrorKind::NestedTuple,
            offset: 5
        })
    );
}

#[test]
fn decode_errors_name_the_problem_and_offset() {
    let cases: &[(&[u8], DecodeErrorKind, usize)] = &[
        (&[], DecodeErrorKind::Empty, 0),
        (&[0x00], DecodeErrorKind::UnknownTag(0), 0),
        (&[0xff], DecodeErrorKind::UnknownTag(0xff), 0),
        (&[0x04, 1, 2], DecodeErrorKind::Truncated, 1),
        (&[0x06, 1, 0], DecodeErrorKind::Truncated, 1),
        (
            &[0x06, 5, 0, 0, 0, b'a'],
            DecodeErrorKind::LengthOverflow,
            1,
        ),
        (
            &[0x06, 2, 0, 0, 0, 0xc3, 0x28],
            DecodeErrorKind::InvalidUtf8,
            5,
        ),
        (&[0x01, 0x01], DecodeErrorKind::TrailingBytes, 1),
        (
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0x01],
            DecodeErrorKind::LengthOverflow,
            1,
        ),
        (
            &[0x08, 2, 0, 0, 0, 0x01],
            DecodeErrorKind::LengthOverflow,
            1,
        ),
        (&[0x08, 2, 0, 0, 0, 0x04, 1], DecodeErrorKind::Truncated, 6),
        (
            &[0x08, 2, 0, 0, 0, 0x01, 0x00],
            DecodeErrorKind::UnknownTag(0),
            6,
        ),
    ];
    for &(input, kind, offset) in cases {
        assert_eq!(
            decode(input),
            Err(DecodeError { kind, offset }),
            "input {input:?}"
        );
        fuzz_decode(input);
    }
    let message = decode(&[0x42]).unwrap_err().to_string();
    assert!(
        message.contains("0x42") && message.contains("byte 0"),
        "{message}"
    );
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // A 4 GiB length with 3 bytes of data: rejected before any allocation.
    let input = [0x07, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    assert_eq!(
        decode(&input).unwrap_err().kind,
        DecodeErrorKind::LengthOverflow
    );
}

#[test]
fn borrowed_decode_is_zero_copy_and_iterates_tuples() {
    let value = Value::Tuple(vec![
        Value::Str("abc".into()),
        Value::Bytes(vec![1, 2]),
        Value::Float(2.5),
        Value::Pickle(vec![9]),
    ]);
    let bytes = bytes_of(&value);
    let ValueRef::Tuple(tuple) = decode_ref(&bytes).unwrap() else {
        panic!("expected a tuple");
    };
    assert_eq!(tuple.len(), 4);
    let items: Vec<ValueRef<'_>> = tuple.iter().collect();
    match items[0] {
        ValueRef::Str(s) => assert_eq!(s.as_ptr(), bytes[10..].as_ptr()),
        other => panic!("expected str, got {other:?}"),
    }
    assert!(items[2] == ValueRef::Float(2.5));
    assert!(decode_ref(&bytes).unwrap().to_value() == value);
}

#[test]
fn encoded_len_is_exact_and_writers_match_value_encoding() {
    let value = Value::Tuple(vec![
        Value::Int(5),
        Value::KwargsMarker,
        Value::Str("k".into()),
        Value::Bool(true),
    ]);
    let mut manual = Vec::new();
    write_tuple_header(&mut manual, 4).unwrap();
    write_int(&mut manual, 5);
    write_kwargs_marker(&mut manual);
    write_str(&mut manual, "k").unwrap();
    write_bool(&mut manual, true);
    assert_eq!(manual, bytes_of(&value));
    assert_eq!(encoded_len(&value).unwrap(), manual.len());
}

#[test]
fn roundtrip_fuzz_body_on_a_few_seeds() {
    for seed in 0u8..=255 {
        let data: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(seed))
            .collect();
        fuzz_roundtrip(&data);
        fuzz_decode(&data);
    }
}
