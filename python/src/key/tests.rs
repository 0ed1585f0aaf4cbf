//! Unit tests of the memory backend's keys: what makes two calls one cache entry.

use std::ffi::CString;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::types::{PyDict, PyString};

use super::*;

/// Evaluates `source` with the helpers of these tests in scope.
fn eval<'py>(py: Python<'py>, source: &str) -> Bound<'py, PyAny> {
    let globals = PyDict::new(py);
    py.run(
        c"class AlwaysEqual:\n\
          \x20   def __hash__(self): return 1\n\
          \x20   def __eq__(self, other): return True\n\
          class RaisingEq:\n\
          \x20   def __hash__(self): return 1\n\
          \x20   def __eq__(self, other): raise ValueError('no comparing')\n\
          def big(n): return 10**20 + n\n",
        Some(&globals),
        None,
    )
    .unwrap();
    py.eval(&CString::new(source).unwrap(), Some(&globals), None)
        .unwrap()
}

/// A call's key, built through the `tp_call` path (`build` + `to_stored`).
struct Built {
    kind: u8,
    hash: u64,
    stored: StoredKey,
}

impl Built {
    fn view(&self) -> KeyView<'_> {
        self.stored.view(self.hash)
    }
}

/// The key of `f(*args, **kwargs)` (arguments and keyword values as Python sources).
fn key(py: Python<'_>, args: &[&str], kwargs: &[(&str, &str)]) -> Built {
    try_key(py, args, kwargs).unwrap()
}

fn try_key(py: Python<'_>, args: &[&str], kwargs: &[(&str, &str)]) -> PyResult<Built> {
    init(py).unwrap();
    let args: Vec<Bound<'_, PyAny>> = args.iter().map(|source| eval(py, source)).collect();
    let names: Vec<Bound<'_, PyAny>> = kwargs
        .iter()
        .map(|(name, _)| PyString::new(py, name).into_any())
        .collect();
    let values: Vec<Bound<'_, PyAny>> = kwargs.iter().map(|(_, source)| eval(py, source)).collect();
    let positional: Vec<*mut ffi::PyObject> = args.iter().map(Bound::as_ptr).collect();
    let name_ptrs: Vec<*mut ffi::PyObject> = names.iter().map(Bound::as_ptr).collect();
    let value_ptrs: Vec<*mut ffi::PyObject> = values.iter().map(Bound::as_ptr).collect();
    let mut buffer = KwItems::new();
    // SAFETY: every pointer is held by the vectors above for the key's life; names are
    // str and as many as the values; no args tuple.
    let key = unsafe {
        CallKey::build(
            py,
            &positional,
            ptr::null_mut(),
            &name_ptrs,
            &value_ptrs,
            &mut buffer,
        )
    }?;
    let stored = key.to_stored(py)?;
    // The vectorcall path builds the same key (same kind, hash and items).
    // SAFETY: as above; the thread is attached and no store is borrowed.
    let raw = unsafe {
        let mut buffer = KwItems::new();
        let raw =
            CallKey::from_parts(py, &positional, &name_ptrs, &value_ptrs, &mut buffer).unwrap();
        assert_eq!((raw.kind, raw.hash), (key.kind, key.hash));
        raw.to_stored_raw(py).unwrap()
    };
    assert_eq!(quick_eq(&raw, key.view()), Quick::Equal);
    Ok(Built {
        kind: key.kind,
        hash: key.hash,
        stored,
    })
}

/// Whether two keys are one cache entry: the store compares by hash, then `quick_eq`,
/// then (when that cannot decide) `slow_eq`.
fn same_entry(py: Python<'_>, a: &Built, b: &Built) -> bool {
    let equal = match quick_eq(&a.stored, b.view()) {
        Quick::Equal => true,
        Quick::NotEqual => false,
        Quick::Unknown => slow_eq(py, &a.stored, b.view()).unwrap(),
    };
    // Keys that are equal hash alike (else the store could not find one by the other).
    assert!(
        !equal || a.hash == b.hash,
        "equal keys with different hashes"
    );
    // Symmetric.
    assert_eq!(
        equal,
        match quick_eq(&b.stored, a.view()) {
            Quick::Equal => true,
            Quick::NotEqual => false,
            Quick::Unknown => slow_eq(py, &b.stored, a.view()).unwrap(),
        }
    );
    equal
}

#[test]
fn equal_arguments_give_one_key() {
    Python::attach(|py| {
        // `big(n)` makes a new int object each time: equal, not identical.
        let a = key(
            py,
            &["big(1)", "'a'", "2.5", "None", "b'x'", "(1, 'b')"],
            &[],
        );
        let b = key(
            py,
            &["big(1)", "'a'", "2.5", "None", "b'x'", "(1, 'b')"],
            &[],
        );
        assert_eq!(a.kind, KIND_ARGS);
        assert_eq!(quick_eq(&a.stored, b.view()), Quick::Equal);
        assert!(same_entry(py, &a, &b));
        let c = key(
            py,
            &["big(2)", "'a'", "2.5", "None", "b'x'", "(1, 'b')"],
            &[],
        );
        assert!(!same_entry(py, &a, &c));
        let fewer = key(py, &["big(1)", "'a'"], &[]);
        assert!(!same_entry(py, &a, &fewer));
    });
}

#[test]
fn a_single_int_or_str_is_its_own_key() {
    Python::attach(|py| {
        for source in ["big(3)", "'text'"] {
            let argument = eval(py, source);
            let positional = [argument.as_ptr()];
            // SAFETY: `argument` is live for the key; attached thread.
            let call = unsafe { CallKey::positional(&positional) }.unwrap();
            assert_eq!(call.kind, KIND_SINGLE);
            let stored = call.to_stored(py).unwrap();
            assert!(stored.object().is(&argument));
            assert_eq!(key(py, &[source], &[]).kind, KIND_SINGLE);
        }
        // Anything else is a tuple of the arguments, as in `functools.lru_cache`.
        for source in ["1.0", "True", "None", "b'x'", "(1,)"] {
            assert_eq!(key(py, &[source], &[]).kind, KIND_ARGS, "{source}");
        }
    });
}

#[test]
fn numbers_mix_like_lru_cache_untyped() {
    Python::attach(|py| {
        // Several arguments: tuple equality, so 1 == 1.0 == True.
        let int = key(py, &["1", "2"], &[]);
        let float = key(py, &["1.0", "2"], &[]);
        let boolean = key(py, &["True", "2"], &[]);
        assert!(same_entry(py, &int, &float));
        assert!(same_entry(py, &int, &boolean));
        // One argument: `f(1)` is keyed by the int itself, `f(1.0)` and `f(True)` by a
        // tuple, so they are different entries, exactly as in `functools.lru_cache`.
        let int = key(py, &["1"], &[]);
        let float = key(py, &["1.0"], &[]);
        let boolean = key(py, &["True"], &[]);
        assert!(!same_entry(py, &int, &float));
        assert!(!same_entry(py, &int, &boolean));
        assert!(same_entry(py, &float, &boolean));
        // `f(1)` and `f((1,))` are different calls.
        assert!(!same_entry(py, &key(py, &["(1,)"], &[]), &float));
    });
}

#[test]
fn other_plain_types_never_mix() {
    Python::attach(|py| {
        let pairs = [
            ("'a'", "b'a'"),
            ("None", "0"),
            ("None", "''"),
            ("0", "''"),
            ("1", "'1'"),
            ("(1, 2)", "(1, 3)"),
            ("(1, 2)", "(1, 2, 3)"),
        ];
        for (a, b) in pairs {
            let a_key = key(py, &[a, "0"], &[]);
            let b_key = key(py, &[b, "0"], &[]);
            // Decided without Python code (no `python -b` warning for str vs bytes).
            assert_eq!(
                quick_eq(&a_key.stored, b_key.view()),
                Quick::NotEqual,
                "{a} {b}"
            );
            assert!(!same_entry(py, &a_key, &b_key));
        }
        let nested = key(py, &["((1, 'a'), (None, b'b'))", "0"], &[]);
        let again = key(py, &["((1, 'a'), (None, b'b'))", "0"], &[]);
        assert_eq!(quick_eq(&nested.stored, again.view()), Quick::Equal);
    });
}

#[test]
fn keyword_order_does_not_matter() {
    Python::attach(|py| {
        let ab = key(py, &[], &[("a", "1"), ("b", "2")]);
        let ba = key(py, &[], &[("b", "2"), ("a", "1")]);
        assert_eq!(ab.kind, KIND_KW);
        assert!(same_entry(py, &ab, &ba));
        let with_positional = key(py, &["0"], &[("b", "2"), ("a", "1")]);
        assert!(!same_entry(py, &ab, &with_positional));
        assert!(same_entry(
            py,
            &with_positional,
            &key(py, &["0"], &[("a", "1"), ("b", "2")])
        ));
        // Names and values pair up: swapping the values is another call.
        assert!(!same_entry(
            py,
            &ab,
            &key(py, &[], &[("a", "2"), ("b", "1")])
        ));
        assert!(!same_entry(
            py,
            &ab,
            &key(py, &[], &[("a", "1"), ("c", "2")])
        ));
    });
}

#[test]
fn keywords_and_positionals_are_different_calls() {
    Python::attach(|py| {
        let keyword = key(py, &[], &[("x", "1")]);
        for positional in [&["1"][..], &["'x'", "1"], &["1", "'x'"]] {
            let other = key(py, positional, &[]);
            assert!(!same_entry(py, &keyword, &other), "{positional:?}");
        }
        let mixed = key(py, &["1"], &[("x", "2")]);
        assert!(!same_entry(py, &mixed, &key(py, &["1", "2"], &[])));
        assert!(!same_entry(py, &mixed, &key(py, &["1", "'x'", "2"], &[])));
    });
}

#[test]
fn many_keywords_sort_the_same_way() {
    Python::attach(|py| {
        // More than SMALL_KEYWORDS names (sorted on the heap) and more than
        // INLINE_KW_ITEMS items (the key is a built tuple).
        let names: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();
        let forward: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "big(0)")).collect();
        let mut backward = forward.clone();
        backward.reverse();
        let a = key(py, &["1", "2"], &forward);
        let b = key(py, &["1", "2"], &backward);
        assert_eq!(a.kind, KIND_KW);
        assert!(same_entry(py, &a, &b));
        let mut changed = forward.clone();
        changed[7].1 = "big(1)";
        assert!(!same_entry(py, &a, &key(py, &["1", "2"], &changed)));
        // Few enough to sort on the stack, but too many items for the inline buffer.
        let few: Vec<(&str, &str)> = forward[..4].to_vec();
        let mut few_backward = few.clone();
        few_backward.reverse();
        let args = ["0"; 10];
        assert!(same_entry(
            py,
            &key(py, &args, &few),
            &key(py, &args, &few_backward)
        ));
    });
}

#[test]
fn user_equality_is_asked_outside_the_quick_path() {
    Python::attach(|py| {
        let a = key(py, &["AlwaysEqual()", "1"], &[]);
        let b = key(py, &["AlwaysEqual()", "1"], &[]);
        assert_eq!(quick_eq(&a.stored, b.view()), Quick::Unknown);
        assert!(slow_eq(py, &a.stored, b.view()).unwrap());
        // Items before the user object are compared first: a plain difference decides.
        let c = key(py, &["2", "AlwaysEqual()"], &[]);
        let d = key(py, &["3", "AlwaysEqual()"], &[]);
        assert_eq!(quick_eq(&c.stored, d.view()), Quick::NotEqual);
        // An `__eq__` that raises is the lookup's error.
        let e = key(py, &["RaisingEq()"], &[]);
        let f = key(py, &["RaisingEq()"], &[]);
        assert_eq!(quick_eq(&e.stored, f.view()), Quick::Unknown);
        let err = slow_eq(py, &e.stored, f.view()).unwrap_err();
        assert!(err.is_instance_of::<PyValueError>(py));
        // The same object is equal without asking it.
        assert!(slow_eq(py, &e.stored, e.view()).unwrap());
    });
}

#[test]
fn unhashable_arguments_and_bad_keyword_names_are_type_errors() {
    Python::attach(|py| {
        let err = try_key(py, &["[1]"], &[]).map(|_| ()).unwrap_err();
        assert!(err.is_instance_of::<PyTypeError>(py));
        assert_eq!(err.value(py).to_string(), "unhashable type: 'list'");
        let err = try_key(py, &[], &[("a", "{}")]).map(|_| ()).unwrap_err();
        assert!(err.is_instance_of::<PyTypeError>(py));
        // A keyword name that is not a str fails the sort (both sorts).
        for count in [2, SMALL_KEYWORDS + 1] {
            let names: Vec<Bound<'_, PyAny>> = (0..count)
                .map(|i| i.into_pyobject(py).unwrap().into_any())
                .collect();
            let name_ptrs: Vec<*mut ffi::PyObject> = names.iter().map(Bound::as_ptr).collect();
            let mut buffer = KwItems::new();
            // SAFETY: live names and values (the same objects); attached thread.
            let built = unsafe {
                CallKey::build(
                    py,
                    &[],
                    ptr::null_mut(),
                    &name_ptrs,
                    &name_ptrs,
                    &mut buffer,
                )
            };
            let Err(err) = built else {
                panic!("a key with names that are not str");
            };
            assert!(err.is_instance_of::<PyTypeError>(py));
        }
    });
}

#[test]
fn an_exact_argument_tuple_is_reused_as_the_stored_key() {
    Python::attach(|py| {
        let args = eval(py, "(big(1), 'x')");
        // SAFETY: `args` is a live exact tuple.
        let items = unsafe { tuple_items(args.as_ptr()) };
        let mut buffer = KwItems::new();
        // SAFETY: the items are those of `args`, live for the key.
        let call =
            unsafe { CallKey::build(py, items, args.as_ptr(), &[], &[], &mut buffer) }.unwrap();
        assert!(call.to_stored(py).unwrap().object().is(&args));
        // SAFETY: attached thread, no store borrowed.
        let raw = unsafe { call.to_stored_raw(py) }.unwrap();
        assert!(raw.object().is(&args));
    });
}

#[test]
fn consecutive_ints_hash_into_blocks_of_sixteen() {
    let block = 1u64 << BLOCK_BITS;
    for start in [0i64, 16, 1 << 20, -32] {
        let first = hash_single(start as ffi::Py_hash_t);
        for offset in 0..block as i64 {
            let hash = hash_single((start + offset) as ffi::Py_hash_t);
            assert_eq!(hash & (block - 1), offset as u64 & (block - 1));
            assert_eq!(hash >> BLOCK_BITS, first >> BLOCK_BITS);
        }
        let next = hash_single((start + block as i64) as ffi::Py_hash_t);
        assert_ne!(next >> BLOCK_BITS, first >> BLOCK_BITS);
    }
    Python::attach(|py| {
        // A block's first int points at the next block; other keys at nothing.
        let at = |source: &str| key(py, &[source], &[]).stored.next_block_hash();
        assert_eq!(at("32"), Some(hash_single(48)));
        assert_eq!(at("33"), None);
        assert_eq!(at("'a'"), None);
        assert_eq!(key(py, &["32", "0"], &[]).stored.next_block_hash(), None);
    });
}
