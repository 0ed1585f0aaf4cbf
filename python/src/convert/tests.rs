//! Unit tests of the shared backend's conversions: values and keys to bytes and back.

use std::ffi::CString;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::types::{PyDict, PyString};

use super::*;

fn eval<'py>(py: Python<'py>, source: &str) -> Bound<'py, PyAny> {
    py.eval(&CString::new(source).unwrap(), None, None).unwrap()
}

fn encoded(py: Python<'_>, value: &Bound<'_, PyAny>) -> Vec<u8> {
    let mut out = vec![0xAA]; // cleared first
    assert!(matches!(
        encode_value(py, value, &mut out).unwrap(),
        Encoded::Done
    ));
    out
}

/// The same type and the same repr (`repr` tells `-0.0` from `0.0`, and works for NaN).
fn assert_same(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) {
    assert!(a.get_type().is(b.get_type()), "{a} vs {b}");
    assert_eq!(a.repr().unwrap().to_string(), b.repr().unwrap().to_string());
    let _ = py;
}

const FAST: &[&str] = &[
    "None",
    "True",
    "False",
    "0",
    "-1",
    "2**63 - 1",
    "-2**63",
    "1.5",
    "-0.0",
    "float('inf')",
    "float('nan')",
    "''",
    "'h\\u00e9llo \\u2603'",
    "b''",
    "b'\\x00\\xff'",
    "()",
    "(1, 'a', None, 2.5, b'b', True)",
];

#[test]
fn fast_values_round_trip_without_pickle() {
    Python::attach(|py| {
        for source in FAST {
            let value = eval(py, source);
            let bytes = encoded(py, &value);
            assert_ne!(bytes[0], codec::tag::PICKLE, "{source}");
            let back = decode_value(py, &bytes).ok().unwrap();
            assert_same(py, &value, back.bind(py));
            // The hit path's decoder gives the same object.
            // SAFETY: attached thread.
            let raw = unsafe { decode_value_raw(&bytes) }.unwrap();
            // SAFETY: a new reference (not NULL: nothing failed to allocate).
            let raw = unsafe { Bound::from_owned_ptr(py, raw) };
            assert_same(py, &value, &raw);
        }
    });
}

#[test]
fn other_values_are_pickled_and_keep_their_type() {
    Python::attach(|py| {
        for source in [
            "2**64",
            "-2**70",
            "[1, 2]",
            "(1, [2])",
            "((1, 2),)",
            "{'a': 1}",
            "'\\ud800'",
            "__import__('fractions').Fraction(1, 3)",
            "__import__('decimal').Decimal('1.5')",
        ] {
            let value = eval(py, source);
            let bytes = encoded(py, &value);
            assert_eq!(bytes[0], codec::tag::PICKLE, "{source}");
            // SAFETY: attached thread.
            assert!(unsafe { decode_value_raw(&bytes) }.is_err());
            let back = decode_value(py, &bytes).ok().unwrap();
            assert_same(py, &value, back.bind(py));
            assert!(back.bind(py).eq(&value).unwrap());
        }
    });
}

#[test]
fn equal_values_of_different_types_encode_differently() {
    Python::attach(|py| {
        let sources = ["1", "1.0", "True", "'1'", "b'1'", "(1,)", "0.0", "-0.0"];
        let bytes: Vec<Vec<u8>> = sources.iter().map(|s| encoded(py, &eval(py, s))).collect();
        for (i, a) in bytes.iter().enumerate() {
            for (j, b) in bytes.iter().enumerate() {
                assert_eq!(i == j, a == b, "{} vs {}", sources[i], sources[j]);
            }
        }
    });
}

#[test]
fn unpicklable_values_are_not_cached() {
    Python::attach(|py| {
        let mut out = Vec::new();
        let value = eval(py, "lambda: 0");
        assert!(matches!(
            encode_value(py, &value, &mut out).unwrap(),
            Encoded::Unpicklable
        ));
        assert!(out.is_empty());
    });
}

#[test]
fn bytes_that_are_not_a_value_decode_to_a_failure() {
    Python::attach(|py| {
        for bytes in [
            &[][..],
            &[0xFF],
            &[codec::tag::INT, 1, 2],
            &[codec::tag::KWARGS_MARKER],
        ] {
            assert!(matches!(decode_value(py, bytes), Err(DecodeFailure::Codec)));
        }
        // A pickle of a class that cannot be found raises in `pickle.loads`.
        let mut bytes = Vec::new();
        codec::write_pickle(&mut bytes, b"cnowhere\nMissing\n.").unwrap();
        assert!(matches!(
            decode_value(py, &bytes),
            Err(DecodeFailure::Python(_))
        ));
    });
}

/// The key of `f(*args, **kwargs)` by both encoders for a `typed=True` function; `None` from
/// the fast one when an argument needs pickle.
fn key_bytes(
    py: Python<'_>,
    args: &[&str],
    kwargs: &[(&str, &str)],
) -> (Option<Vec<u8>>, PyResult<Vec<u8>>) {
    key_bytes_of(py, true, args, kwargs)
}

/// [`key_bytes`] with the function's `typed`.
fn key_bytes_of(
    py: Python<'_>,
    typed: bool,
    args: &[&str],
    kwargs: &[(&str, &str)],
) -> (Option<Vec<u8>>, PyResult<Vec<u8>>) {
    let args: Vec<Bound<'_, PyAny>> = args.iter().map(|s| eval(py, s)).collect();
    let names: Vec<Bound<'_, PyAny>> = kwargs
        .iter()
        .map(|(name, _)| PyString::new(py, name).into_any())
        .collect();
    let values: Vec<Bound<'_, PyAny>> = kwargs.iter().map(|(_, s)| eval(py, s)).collect();
    let positional: Vec<*mut ffi::PyObject> = args.iter().map(Bound::as_ptr).collect();
    let name_ptrs: Vec<*mut ffi::PyObject> = names.iter().map(Bound::as_ptr).collect();
    let value_ptrs: Vec<*mut ffi::PyObject> = values.iter().map(Bound::as_ptr).collect();
    // SAFETY: every pointer is held above; names are str, as many as the values; attached.
    unsafe {
        let order = crate::key::keyword_order(&name_ptrs).unwrap();
        let mut fast = Vec::new();
        let fast = encode_key_fast(
            &positional,
            &name_ptrs,
            &value_ptrs,
            &order,
            typed,
            &mut fast,
        )
        .then_some(fast);
        let mut full = Vec::new();
        let full = encode_key(
            py,
            &positional,
            &name_ptrs,
            &value_ptrs,
            &order,
            typed,
            &mut full,
        )
        .map(|()| full);
        (fast, full)
    }
}

#[test]
fn both_key_encoders_write_the_same_bytes() {
    Python::attach(|py| {
        for (args, kwargs) in [
            (&["1", "'a'", "None"][..], &[][..]),
            (&[], &[("b", "2.5"), ("a", "b'x'")]),
            (&["True"], &[("x", "-1")]),
        ] {
            let (fast, full) = key_bytes(py, args, kwargs);
            assert_eq!(fast.unwrap(), full.unwrap(), "{args:?} {kwargs:?}");
        }
        // An argument that needs pickle: only the full encoder takes it.
        let (fast, full) = key_bytes(py, &["[1]"], &[]);
        assert!(fast.is_none());
        assert!(full.is_ok());
    });
}

#[test]
fn untyped_keys_write_bools_and_integral_floats_as_the_equal_int() {
    Python::attach(|py| {
        let untyped = |args: &[&str], kwargs: &[(&str, &str)]| {
            let (fast, full) = key_bytes_of(py, false, args, kwargs);
            let full = full.unwrap();
            assert_eq!(fast.as_ref(), Some(&full), "{args:?}: both encoders agree");
            full
        };
        let typed = |args: &[&str]| key_bytes(py, args, &[]).1.unwrap();
        for (same, int) in [
            ("True", "1"),
            ("False", "0"),
            ("1.0", "1"),
            ("-0.0", "0"),
            ("-2.0**63", "-2**63"),
            ("3e15", "3000000000000000"),
        ] {
            assert_eq!(
                untyped(&[same], &[]),
                untyped(&[int], &[]),
                "{same} is {int}"
            );
            assert_eq!(untyped(&[], &[("k", same)]), untyped(&[], &[("k", int)]));
            assert_ne!(typed(&[same]), typed(&[int]), "typed: {same} is not {int}");
        }
        // Not the value of an i64, or not integral: stays a float.
        for float in ["1.5", "2.0**63", "float('nan')", "float('inf')"] {
            assert_eq!(untyped(&[float], &[]), typed(&[float]), "{float}");
        }
        // Flat tuple arguments: numbers inside are keyed by value even when typed (typed
        // applies to the top-level arguments, as in functools.lru_cache).
        for typed_flag in [false, true] {
            let key = |arg: &str| {
                let (fast, full) = key_bytes_of(py, typed_flag, &[arg], &[]);
                assert_eq!(fast.as_ref(), Some(full.as_ref().unwrap()), "{arg}: native");
                full.unwrap()
            };
            assert_eq!(key("(1, 'a')"), key("(True, 'a')"));
            assert_eq!(key("(1, 'a')"), key("(1.0, 'a')"));
            assert_ne!(key("(1, 'a')"), key("(1, 'b')"));
            let pickled = |arg: &str| key_bytes_of(py, typed_flag, &[arg], &[]).1.unwrap();
            // A tuple nested deeper is pickled whole: never the bytes of a flatter one.
            assert_ne!(key("(1, 2)"), pickled("(1, (2,))"));
            assert_ne!(pickled("((1, 2),)"), key("(1, 2)"));
        }
        // A tuple holding something that needs pickle is pickled whole.
        let (fast, full) = key_bytes_of(py, false, &["(1, [2])"], &[]);
        assert!(fast.is_none() && full.is_ok());
        // The single-int fast path writes what the encoder writes for True.
        assert_eq!(untyped(&["True"], &[]), codec::single_int_key(1).to_vec());
    });
}

#[test]
fn key_bytes_follow_the_memory_backend_rules() {
    Python::attach(|py| {
        let full = |args: &[&str], kwargs: &[(&str, &str)]| key_bytes(py, args, kwargs).1.unwrap();
        // Keyword order does not matter; names and values pair up.
        assert_eq!(
            full(&[], &[("a", "1"), ("b", "2")]),
            full(&[], &[("b", "2"), ("a", "1")])
        );
        assert_ne!(
            full(&[], &[("a", "1"), ("b", "2")]),
            full(&[], &[("a", "2"), ("b", "1")])
        );
        // A keyword is not a positional argument.
        assert_ne!(full(&[], &[("x", "1")]), full(&["'x'", "1"], &[]));
        // Unlike the memory backend, types never mix: 1, 1.0 and True are three keys.
        let one = full(&["1", "2"], &[]);
        assert_ne!(one, full(&["1.0", "2"], &[]));
        assert_ne!(one, full(&["True", "2"], &[]));
    });
}

#[test]
fn a_single_int_key_is_the_fast_key_of_that_call() {
    Python::attach(|py| {
        for source in ["0", "-7", "2**63 - 1"] {
            let value = eval(py, source);
            // SAFETY: live argument, attached thread.
            let single = unsafe { single_int_key(&[value.as_ptr()], &[]) }.unwrap();
            let (fast, _) = key_bytes(py, &[source], &[]);
            assert_eq!(single.as_slice(), fast.unwrap().as_slice());
        }
        for source in ["2**63", "1.0", "True", "'1'"] {
            let value = eval(py, source);
            // SAFETY: as above.
            assert!(unsafe { single_int_key(&[value.as_ptr()], &[]) }.is_none());
        }
        let value = eval(py, "1");
        // SAFETY: as above.
        assert!(unsafe { single_int_key(&[value.as_ptr()], &[value.as_ptr()]) }.is_none());
    });
}

#[test]
fn an_unpicklable_argument_is_a_type_error_naming_it() {
    Python::attach(|py| {
        let (_, positional) = key_bytes(py, &["1", "lambda: 0"], &[]);
        let err = positional.unwrap_err();
        assert!(err.is_instance_of::<PyTypeError>(py));
        let message = err.value(py).to_string();
        assert!(
            message.starts_with(
                "backend='shared' needs arguments it can serialize (pickle), and positional \
                 argument 1 (of type function) cannot be pickled: "
            ),
            "{message}"
        );
        assert!(err.cause(py).is_some());
        let (_, keyword) = key_bytes(py, &[], &[("callback", "lambda: 0")]);
        let message = keyword.unwrap_err().value(py).to_string();
        assert!(message.contains("and keyword argument 'callback' (of type function)"));
    });
}

#[test]
fn a_key_the_codec_cannot_count_is_a_value_error() {
    Python::attach(|py| {
        let err = Pickling(py, true).too_many(EncodeError::TooLong { len: usize::MAX });
        assert!(err.is_instance_of::<PyValueError>(py));
        assert_eq!(
            err.value(py).to_string(),
            format!(
                "cannot serialize for the shared cache: length {} does not fit the codec's \
                 4-byte length field (max {})",
                usize::MAX,
                codec::MAX_LEN
            )
        );
    });
}

/// A shared cached function with `max_key_size=max_key` and `max_value_size=max_value`,
/// wrapping `len` of its argument; its files are removed when `body` returns.
fn with_shared(py: Python<'_>, max_key: u32, max_value: u32, body: impl FnOnce(&Bound<'_, PyAny>)) {
    let int = |n: u32| n.into_pyobject(py).unwrap().into_any();
    let name = format!(
        "rust-test-convert-{}-{}",
        std::process::id(),
        warp_cache_core::clock::monotonic_now_ns()
    );
    let func = eval(py, "lambda x: x * 2").unbind();
    let cached = crate::shared::make_shared(
        py,
        func,
        name,
        &int(16),
        None,
        &int(max_key),
        &int(max_value),
        None,
        false,
        None,
        None,
    )
    .unwrap()
    .into_bound(py)
    .into_any();
    body(&cached);
    let files = cached.call_method0("_shared_files").unwrap();
    let files = files.cast::<PyDict>().unwrap();
    for part in ["data", "lock"] {
        if let Some(path) = files.get_item(part).unwrap() {
            let _ = std::fs::remove_file(path.str().unwrap().to_string());
        }
    }
}

fn info(cached: &Bound<'_, PyAny>) -> String {
    cached
        .call_method0("cache_info")
        .unwrap()
        .repr()
        .unwrap()
        .to_string()
}

#[cfg(unix)]
#[test]
fn oversize_keys_and_values_are_returned_but_not_cached() {
    Python::attach(|py| {
        with_shared(py, 64, 64, |cached| {
            let long_key = "k".repeat(100);
            for _ in 0..2 {
                let result = cached.call1((long_key.as_str(),)).unwrap();
                assert_eq!(result.str().unwrap().to_string(), long_key.repeat(2));
            }
            assert_eq!(
                info(cached),
                "CacheInfo(hits=0, misses=2, max_size=16, current_size=0, oversize_skips=2, space_skips=0, read_retries=0, lock_waits=0, lock_skips=0)"
            );
            // The key fits but the value (twice as long) does not.
            let long_value = "v".repeat(40);
            for _ in 0..2 {
                cached.call1((long_value.as_str(),)).unwrap();
            }
            assert_eq!(
                info(cached),
                "CacheInfo(hits=0, misses=4, max_size=16, current_size=0, oversize_skips=4, space_skips=0, read_retries=0, lock_waits=0, lock_skips=0)"
            );
            // What fits is cached.
            for _ in 0..2 {
                cached.call1(("short",)).unwrap();
            }
            assert_eq!(
                info(cached),
                "CacheInfo(hits=1, misses=5, max_size=16, current_size=1, oversize_skips=4, space_skips=0, read_retries=0, lock_waits=0, lock_skips=0)"
            );
        });
    });
}
