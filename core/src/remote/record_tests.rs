use proptest::prelude::*;

use super::*;

const NS: &str = "mod.f:0123abcd";
const KEY: &[u8] = b"\x08\x01\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x00";

fn secret() -> Secret {
    Secret::new(b"correct horse".to_vec()).unwrap()
}

fn signed(is_pickle: bool) -> Vec<u8> {
    encode(NS, KEY, b"value bytes", is_pickle, Some(&secret())).unwrap()
}

fn unsigned() -> Vec<u8> {
    encode(NS, KEY, b"value bytes", false, None).unwrap()
}

#[test]
fn both_kinds_round_trip() {
    let s = secret();
    let rec = signed(true);
    assert_eq!(rec.len(), HEADER_LEN + KEY.len() + 11 + HMAC_LEN);
    let got = decode(&rec, NS, KEY, Some(&s)).unwrap();
    assert_eq!(got.value, b"value bytes");
    assert!(got.is_pickle);
    let rec = unsigned();
    assert_eq!(rec.len(), HEADER_LEN + KEY.len() + 11 + CHECKSUM_LEN);
    let got = decode(&rec, NS, KEY, None).unwrap();
    assert_eq!(
        got,
        Decoded {
            value: b"value bytes",
            is_pickle: false
        }
    );
}

#[test]
fn an_empty_secret_is_refused() {
    assert!(Secret::new(Vec::new()).is_none());
    assert_eq!(format!("{:?}", secret()), "Secret(13 bytes)");
}

#[test]
fn pickle_without_a_secret_is_refused_at_encode() {
    assert_eq!(
        encode(NS, KEY, b"p", true, None),
        Err(EncodeRefusal::UnsignedPickle)
    );
}

#[test]
fn an_unsigned_record_claiming_pickle_is_rejected() {
    // Build what an attacker without the secret could write: a valid checksum over a
    // pickle-flagged body. The checksum is right; the record must still be refused.
    let mut body = unsigned();
    body.truncate(body.len() - CHECKSUM_LEN);
    body[MAGIC.len()] |= FLAG_PICKLE;
    let sum = checksum(NS, &body);
    body.extend_from_slice(&sum.to_le_bytes());
    assert_eq!(
        decode(&body, NS, KEY, None),
        Err(RecordError::UnsignedPickle)
    );
}

#[test]
fn a_wrong_hmac_or_secret_is_rejected() {
    let mut rec = signed(false);
    let last = rec.len() - 1;
    rec[last] ^= 1;
    assert_eq!(
        decode(&rec, NS, KEY, Some(&secret())),
        Err(RecordError::TagMismatch)
    );
    let other = Secret::new(b"correct horsf".to_vec()).unwrap();
    assert_eq!(
        decode(&signed(true), NS, KEY, Some(&other)),
        Err(RecordError::TagMismatch)
    );
}

#[test]
fn tag_kinds_must_match_the_configuration() {
    // A secret accepts only HMAC records (no downgrade to a forgeable checksum), and without
    // a secret an HMAC record cannot be verified.
    assert_eq!(
        decode(&unsigned(), NS, KEY, Some(&secret())),
        Err(RecordError::TagKindMismatch)
    );
    assert_eq!(
        decode(&signed(false), NS, KEY, None),
        Err(RecordError::TagKindMismatch)
    );
}

#[test]
fn another_namespace_is_rejected() {
    for (rec, s) in [(signed(false), Some(secret())), (unsigned(), None)] {
        assert_eq!(
            decode(&rec, "mod.g:0123abcd", KEY, s.as_ref()),
            Err(RecordError::TagMismatch)
        );
        // Length-prefixed: moving bytes between namespace and record changes the tag input.
        assert_eq!(
            decode(&rec, "mod.f:0123abc", KEY, s.as_ref()),
            Err(RecordError::TagMismatch)
        );
    }
}

#[test]
fn another_key_is_rejected() {
    for (rec, s) in [(signed(false), Some(secret())), (unsigned(), None)] {
        assert_eq!(
            decode(&rec, NS, b"other key", s.as_ref()),
            Err(RecordError::KeyMismatch)
        );
        assert_eq!(
            decode(&rec, NS, &KEY[..KEY.len() - 1], s.as_ref()),
            Err(RecordError::KeyMismatch)
        );
    }
}

#[test]
fn every_truncation_is_rejected() {
    for (rec, s) in [(signed(true), Some(secret())), (unsigned(), None)] {
        for cut in 0..rec.len() {
            let err = decode(&rec[..cut], NS, KEY, s.as_ref()).unwrap_err();
            assert!(
                matches!(err, RecordError::Truncated | RecordError::BadLength),
                "cut {cut}: {err:?}"
            );
        }
        // And a trailing byte.
        let mut longer = rec.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, NS, KEY, s.as_ref()),
            Err(RecordError::BadLength)
        );
    }
}

#[test]
fn every_flipped_bit_is_rejected() {
    for (rec, s) in [(signed(true), Some(secret())), (unsigned(), None)] {
        for byte in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad, NS, KEY, s.as_ref()).is_err(),
                    "flip of bit {bit} of byte {byte} accepted"
                );
            }
        }
    }
}

#[test]
fn header_errors_are_named() {
    let mut rec = unsigned();
    rec[3] = 2;
    assert_eq!(decode(&rec, NS, KEY, None), Err(RecordError::BadMagic));
    let mut rec = unsigned();
    rec[MAGIC.len()] |= 0x80;
    assert_eq!(decode(&rec, NS, KEY, None), Err(RecordError::UnknownFlags));
    // A key length of u32::MAX runs past the end: truncated, no allocation, no overflow.
    let mut rec = unsigned();
    rec[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&rec, NS, KEY, None), Err(RecordError::Truncated));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn records_round_trip(
        ns in ".{0,24}",
        key in proptest::collection::vec(any::<u8>(), 0..64),
        value in proptest::collection::vec(any::<u8>(), 0..256),
        is_pickle in any::<bool>(),
        with_secret in any::<bool>(),
    ) {
        let s = with_secret.then(secret);
        match encode(&ns, &key, &value, is_pickle, s.as_ref()) {
            Ok(rec) => {
                let got = decode(&rec, &ns, &key, s.as_ref()).unwrap();
                prop_assert_eq!(got.value, &value[..]);
                prop_assert_eq!(got.is_pickle, is_pickle);
            }
            Err(refusal) => {
                prop_assert!(is_pickle && !with_secret);
                prop_assert_eq!(refusal, EncodeRefusal::UnsignedPickle);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        with_secret in any::<bool>(),
        magic in any::<bool>(),
    ) {
        // Half the inputs start with the magic so the length and tag paths are reached.
        let mut bytes = bytes;
        if magic && bytes.len() >= MAGIC.len() {
            bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
        }
        let s = with_secret.then(secret);
        // A random byte string never carries a valid tag (2^-64 at best).
        prop_assert!(decode(&bytes, NS, KEY, s.as_ref()).is_err());
    }
}
