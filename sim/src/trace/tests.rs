//! Tests of the trace readers: formats and their detection, compression, errors.

use super::*;
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn keys(bytes: &[u8], format: Format) -> Result<Vec<u64>, TraceError> {
    KeyReader::new(bytes, format, "fixture")?.collect()
}

#[test]
fn txt_skips_blank_and_checkpoint_lines_and_crlf() {
    let text = b"1\r\n*\n\n  22 \n*checkpoint\n18446744073709551615\n";
    assert_eq!(keys(text, Format::Txt).unwrap(), vec![1, 22, u64::MAX]);
    assert_eq!(
        keys(&gzip(text), Format::Txt).unwrap(),
        vec![1, 22, u64::MAX]
    );
    assert_eq!(keys(&xz(text), Format::Txt).unwrap(), vec![1, 22, u64::MAX]);
}

#[test]
fn txt_rejects_a_bad_line_with_its_number() {
    let err = keys(b"1\n2\nabc\n3\n", Format::Txt).unwrap_err();
    match &err {
        TraceError::BadLine {
            line_number, line, ..
        } => {
            assert_eq!(*line_number, 3);
            assert_eq!(line, "abc");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(keys(b"-5\n", Format::Txt).is_err(), "keys are unsigned");
    assert!(keys(b"+5\n", Format::Txt).is_err(), "digits only");
    let err = keys(b"1\n\xff\xfe\n", Format::Txt).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(
        keys(b"18446744073709551616\n", Format::Txt).is_err(),
        "above u64::MAX"
    );
}

#[test]
fn be32_and_be64_read_big_endian_unsigned() {
    let be32 = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
    assert_eq!(keys(&be32, Format::Be32).unwrap(), vec![1, 0xffff_fffe]);
    assert_eq!(
        keys(&xz(&be32), Format::Be32).unwrap(),
        vec![1, 0xffff_fffe]
    );
    let mut be64 = Vec::new();
    be64.extend_from_slice(&7u64.to_be_bytes());
    be64.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(keys(&gzip(&be64), Format::Be64).unwrap(), vec![7, u64::MAX]);
}

#[test]
fn binary_trace_with_a_partial_record_is_truncated() {
    let err = keys(&[0, 0, 0, 1, 0, 0], Format::Be32).unwrap_err();
    assert!(
        matches!(
            err,
            TraceError::Truncated {
                record_bytes: 4,
                trailing_bytes: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = keys(&[0u8; 30], Format::OracleGeneral).unwrap_err();
    assert!(matches!(err, TraceError::Truncated { .. }), "{err:?}");
}

#[test]
fn addr_takes_the_hex_address() {
    let text = b"l 0x1fffff50 1\ns 0X10 0\n";
    assert_eq!(
        keys(&gzip(text), Format::Addr).unwrap(),
        vec![0x1fff_ff50, 0x10]
    );
    assert!(keys(b"l 1234 1\n", Format::Addr).is_err());
}

#[test]
fn oracle_general_round_trips() {
    let input = [5u64, 9, 5, 0, u64::MAX];
    let bytes = encode_oracle_general(&input);
    assert_eq!(bytes.len(), 5 * ORACLE_GENERAL_RECORD_BYTES);
    // The first record: clock 0, id 5, size 1, next access at index 2.
    assert_eq!(&bytes[4..12], &5u64.to_le_bytes());
    assert_eq!(&bytes[12..16], &1u32.to_le_bytes());
    assert_eq!(&bytes[16..24], &2i64.to_le_bytes());
    assert_eq!(&bytes[40..48], &(-1i64).to_le_bytes());
    assert_eq!(keys(&bytes, Format::OracleGeneral).unwrap(), input.to_vec());
}

#[test]
fn zstd_is_refused_with_advice() {
    let err = keys(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], Format::Txt).unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
}

#[test]
fn corrupt_gzip_is_an_error_not_a_panic() {
    let mut bytes = gzip(b"1\n2\n3\n");
    let len = bytes.len();
    bytes[len / 2] ^= 0xff;
    bytes.truncate(len - 3);
    assert!(keys(&bytes, Format::Txt).is_err());
    let mut bytes = xz(&[0u8; 4096]);
    bytes.truncate(bytes.len() / 2);
    let err = keys(&bytes, Format::Be32).unwrap_err();
    assert!(matches!(err, TraceError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");
}

#[test]
fn format_from_path_follows_the_trace_readme() {
    let cases = [
        (
            "../shared/traces/libCacheSim/cloudPhysicsIO.txt",
            Some(Format::Txt),
        ),
        ("traces/caffeine/lirs/multi1.trace.gz", Some(Format::Txt)),
        ("caffeine/cache2k/web07.trace.xz", Some(Format::Be32)),
        ("caffeine/cloud_physics/w106.trace.xz", Some(Format::Be32)),
        ("caffeine/corda/trace_vaultservice.gz", Some(Format::Be64)),
        ("caffeine/scarab/scarab-recs.trace.xz", Some(Format::Be64)),
        ("caffeine/address/gcc.trace.gz", Some(Format::Addr)),
        ("x/cluster52.oracleGeneral.bin", Some(Format::OracleGeneral)),
        ("corpora/traces/zipf-0.8.txt.gz", Some(Format::Txt)),
        ("somewhere/unknown.bin", None),
    ];
    for (path, expected) in cases {
        assert_eq!(format_from_path(Path::new(path)), expected, "{path}");
    }
}

#[test]
fn format_from_content_tells_text_kinds_apart() {
    assert_eq!(format_from_content(b"1\n2\n*\n3"), Some(Format::Txt));
    assert_eq!(
        format_from_content(b"l 0x10 1\ns 0x20 2\n"),
        Some(Format::Addr)
    );
    assert_eq!(format_from_content(&[0, 0, 0, 1, 0, 0, 0, 2]), None);
    assert_eq!(format_from_content(b""), None);
}

#[test]
fn missing_file_names_the_path() {
    let err = read_trace(Path::new("/nonexistent/trace.txt"), None).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("/nonexistent/trace.txt"), "{message}");
    assert!(message.contains("--trace"), "{message}");
}

#[test]
fn empty_trace_is_an_error() {
    let err = read_bytes(b"*\n\n", Format::Txt, "empty").unwrap_err();
    assert!(matches!(err, TraceError::Empty { .. }), "{err:?}");
}

#[test]
fn format_names_parse_back() {
    for format in Format::ALL {
        assert_eq!(format.name().parse::<Format>(), Ok(format));
    }
    assert!("csv"
        .parse::<Format>()
        .unwrap_err()
        .contains("oracle-general"));
}
