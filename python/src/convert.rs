//! Python objects <-> `warp_cache_core::codec` bytes, for the shared backend. Part of the
//! "Python FFI key path" where `unsafe` is allowed (design brief, convention 2).
//!
//! # The fast path and pickle
//!
//! Only objects whose type is *exactly* one the codec represents take the fast path:
//! `None`, `bool`, `int` that fits an i64, `float`, `str` that is valid UTF-8 (a `str` with a
//! lone surrogate is not), `bytes`. Everything else is pickled (protocol 5): subclasses
//! (`IntEnum`, named tuples, `str`/`int`/`float` subclasses), big ints, containers, custom
//! objects. So a value read back has exactly the type of the value stored (a hit returns what
//! the miss returned: INV-4), and a key's bytes never confuse two types (`1`, `1.0` and `True` are
//! three different keys; floats compare by their exact bits).
//!
//! * **Values**: an exact tuple whose elements all take the fast path is a codec tuple; any
//!   other value, including a tuple with one element that does not, is pickled *whole* (so
//!   shared references inside it survive the round trip).
//! * **Keys** ([`encode_key`]): always a codec tuple `(positional..., [MARK, name, value,
//!   ...])`: the same logical key as the memory backend's (`key.rs`), keywords in
//!   [`crate::key::keyword_order`], the codec's kwargs marker in place of the private marker
//!   object (INV-6). Each element takes the fast path or is pickled on its own. Keys are compared by
//!   their bytes and hashed by the core's fixed-seed hash: `hash()` and `PYTHONHASHSEED` never
//!   matter. A pickle that is not deterministic across processes (a set, a dict built in
//!   another order) can make two processes miss each other's entries, never hit a wrong one:
//!   equal bytes always unpickle to equal objects.

// `unsafe` allowed: objects are read and built through the C API on the shared backend's hit path.
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int};
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;
use warp_cache_core::codec::{self, EncodeError, ValueRef};

use crate::errors;

/// The pickle protocol of the shared backend (spec: protocol 5).
pub const PICKLE_PROTOCOL: i32 = 5;

struct Pickle {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    protocol: Py<PyAny>,
}

static PICKLE: PyOnceLock<Pickle> = PyOnceLock::new();

/// Imports `pickle` (module initialisation).
pub fn init(py: Python<'_>) -> PyResult<()> {
    pickle(py).map(|_| ())
}

fn pickle(py: Python<'_>) -> PyResult<&Pickle> {
    PICKLE.get_or_try_init(py, || {
        let module = py.import("pickle")?;
        Ok(Pickle {
            dumps: module.getattr("dumps")?.unbind(),
            loads: module.getattr("loads")?.unbind(),
            protocol: PICKLE_PROTOCOL.into_pyobject(py)?.into_any().unbind(),
        })
    })
}

/// Writes `object` with the codec if its type is exactly one of the fast types; `false` (and
/// nothing written, no error set) otherwise. Runs no Python code.
///
/// # Safety
/// `object` is live; the thread is attached.
#[inline]
unsafe fn write_fast(object: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    // SAFETY: live object (caller contract); only exact builtin types are read, through their
    // C accessors, none of which runs Python code.
    unsafe {
        // Exact ints first: the commonest key element.
        if ffi::PyLong_CheckExact(object) != 0 {
            return match exact_int_value(object) {
                Some(value) => {
                    codec::write_int(out, value);
                    true
                }
                None => false, // a big int: pickled
            };
        }
        if object == ffi::Py_None() {
            codec::write_none(out);
            return true;
        }
        if object == ffi::Py_True() || object == ffi::Py_False() {
            codec::write_bool(out, object == ffi::Py_True());
            return true;
        }
        if ffi::PyFloat_CheckExact(object) != 0 {
            codec::write_float(out, ffi::PyFloat_AS_DOUBLE(object));
            return true;
        }
        if ffi::PyUnicode_CheckExact(object) != 0 {
            let mut len: ffi::Py_ssize_t = 0;
            let data = ffi::PyUnicode_AsUTF8AndSize(object, &mut len);
            if data.is_null() {
                // Not encodable as UTF-8 (a lone surrogate): pickled, which keeps it exactly.
                ffi::PyErr_Clear();
                return false;
            }
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
            // Valid UTF-8 by construction (CPython's own encoder produced it).
            return codec::write_str(out, std::str::from_utf8_unchecked(bytes)).is_ok();
        }
        if ffi::PyBytes_CheckExact(object) != 0 {
            let data = ffi::PyBytes_AS_STRING(object).cast::<u8>();
            let len = ffi::Py_SIZE(object) as usize;
            return codec::write_bytes(out, std::slice::from_raw_parts(data, len)).is_ok();
        }
    }
    false
}

/// The value of an exact `int` that fits an i64 (`None`, no error set, for a bigger one).
///
/// # Safety
/// `object` is a live exact `int`; the thread is attached.
#[inline(always)]
unsafe fn exact_int_value(object: *mut ffi::PyObject) -> Option<i64> {
    // SAFETY: caller contract; the accessor runs no Python code.
    unsafe {
        let mut overflow: c_int = 0;
        let value = ffi::PyLong_AsLongLongAndOverflow(object, &mut overflow);
        if overflow != 0 {
            return None;
        }
        if value == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(value)
    }
}

/// The key of a call whose only argument is an exact `int` that fits an i64, as a fixed
/// array ([`codec::single_int_key`]: the bytes [`encode_key_fast`] writes for that call).
/// `None` for any other call.
///
/// # Safety
/// Every pointer in `positional` is live; the thread is attached.
#[inline(always)]
pub unsafe fn single_int_key(
    positional: &[*mut ffi::PyObject],
    kw_values: &[*mut ffi::PyObject],
) -> Option<[u8; codec::SINGLE_INT_KEY_BYTES]> {
    match (positional, kw_values) {
        // SAFETY: live object (caller contract); an exact int is checked first.
        ([object], []) if unsafe { ffi::PyLong_CheckExact(*object) } != 0 => {
            // SAFETY: as above.
            unsafe { exact_int_value(*object) }.map(codec::single_int_key)
        }
        _ => None,
    }
}

/// `pickle.dumps(object, 5)` appended as a codec pickle. Runs Python code (`__reduce__`...).
fn write_pickled(py: Python<'_>, object: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let pickle = pickle(py)?;
    let pickled = pickle
        .dumps
        .bind(py)
        .call1((object, pickle.protocol.bind(py)))?;
    let bytes = pickled
        .cast::<PyBytes>()
        .map_err(|_| errors::pickle_returned_no_bytes())?;
    codec::write_pickle(out, bytes.as_bytes()).map_err(errors::cannot_serialize)
}

/// Whether a cached value could be serialized (an unpicklable one is returned uncached:
/// nothing leaks from caching itself, spec "Shared backend").
pub enum Encoded {
    Done,
    Unpicklable,
}

/// Serializes a function's result into `out` (cleared first). `Err` only for a
/// `BaseException` that is not an `Exception` (`KeyboardInterrupt` in `__reduce__`...).
pub fn encode_value(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<Encoded> {
    out.clear();
    let object = value.as_ptr();
    // SAFETY: `value` is live; attached thread.
    unsafe {
        if write_fast(object, out) {
            return Ok(Encoded::Done);
        }
        if ffi::PyTuple_CheckExact(object) != 0 {
            let items = crate::key::tuple_items(object);
            if codec::write_tuple_header(out, items.len()).is_ok()
                && items.iter().all(|&item| write_fast(item, out))
            {
                return Ok(Encoded::Done);
            }
            out.clear();
        }
    }
    match write_pickled(py, value, out) {
        Ok(()) => Ok(Encoded::Done),
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyException>(py) => {
            out.clear();
            Ok(Encoded::Unpicklable)
        }
        Err(err) => Err(err),
    }
}

/// One element of a key: fast path or pickle. A pickling failure is a `TypeError` naming
/// the argument (arguments of a shared cached function must be serializable).
///
/// # Safety
/// `object` is live; the thread is attached.
unsafe fn write_key_element(
    py: Python<'_>,
    object: *mut ffi::PyObject,
    typed: bool,
    what: impl FnOnce() -> String,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    // SAFETY: caller contract.
    if unsafe { write_key_fast(object, typed, out) } {
        return Ok(());
    }
    // SAFETY: live object (caller contract).
    let bound = unsafe { Borrowed::from_ptr(py, object) };
    write_pickled(py, &bound, out).map_err(|cause| {
        // Only an `Exception` means "cannot be pickled"; `KeyboardInterrupt`, `SystemExit`,
        // `GeneratorExit`, `asyncio.CancelledError`... propagate unchanged.
        if !cause.is_instance_of::<pyo3::exceptions::PyException>(py) {
            return cause;
        }
        let type_name = bound
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |name| name.to_string());
        errors::unpicklable_argument(py, &what(), &type_name, cause)
    })
}

/// Which part of a call a key element comes from (for error messages).
#[derive(Clone, Copy)]
enum Part {
    Positional(usize),
    KeywordName,
    KeywordValue(*mut ffi::PyObject),
}

/// How [`encode_key_with`] writes each element of a key: [`FastOnly`] or [`Pickling`].
trait ElementWriter {
    type Error;

    /// The error of a key with more elements than the codec can count.
    fn too_many(&self, err: EncodeError) -> Self::Error;

    /// Writes one element, `part` of the call.
    ///
    /// # Safety
    /// `object` is live, and so is the name in a [`Part::KeywordValue`]; the thread is
    /// attached.
    unsafe fn write(
        &mut self,
        object: *mut ffi::PyObject,
        part: Part,
        out: &mut Vec<u8>,
    ) -> Result<(), Self::Error>;
}

/// `typed=False` keys: `True`/`False` and a float with an integral value in the i64 range are
/// written as the int they equal, so `f(1)`, `f(1.0)` and `f(True)` share an entry as they do
/// in `functools.lru_cache(typed=False)` (`-0.0` is `0`; NaN and infinities stay floats).
/// `false` (nothing written) for anything else. Runs no Python code.
///
/// # Safety
/// `object` is live; the thread is attached.
#[inline]
unsafe fn write_untyped_number(object: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    // SAFETY: live object (caller contract); only exact builtin types are read.
    unsafe {
        if object == ffi::Py_True() || object == ffi::Py_False() {
            codec::write_int(out, i64::from(object == ffi::Py_True()));
            return true;
        }
        if ffi::PyFloat_CheckExact(object) != 0 {
            let value = ffi::PyFloat_AS_DOUBLE(object);
            // 2^63 is exact as a float; every integral float in [-2^63, 2^63) is an i64.
            const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
            if value.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&value) {
                codec::write_int(out, value as i64);
                return true;
            }
        }
    }
    false
}

/// One key element without pickle: [`write_untyped_number`] unless `typed`, then
/// [`write_fast`], then [`write_flat_key_tuple`].
///
/// # Safety
/// `object` is live; the thread is attached.
#[inline]
unsafe fn write_key_fast(object: *mut ffi::PyObject, typed: bool, out: &mut Vec<u8>) -> bool {
    // SAFETY: caller contract.
    unsafe {
        (!typed && write_untyped_number(object, out))
            || write_fast(object, out)
            || write_flat_key_tuple(object, out)
    }
}

/// An exact tuple argument of fast-path scalars, as a codec tuple whose bools and integral
/// floats are written as the equal int *whatever `typed` is*: `typed=True` types only the
/// top-level arguments, as `functools.lru_cache` does (`f((1,))` and `f((True,))` share an
/// entry). `false` with nothing written for anything else (it is then pickled).
///
/// # Safety
/// `object` is live; the thread is attached.
unsafe fn write_flat_key_tuple(object: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    // SAFETY: live object (caller contract).
    if unsafe { ffi::PyTuple_CheckExact(object) } == 0 {
        return false;
    }
    // SAFETY: an exact tuple, alive for this call; its items are live while it is.
    let items = unsafe { crate::key::tuple_items(object) };
    let start = out.len();
    let written = codec::write_tuple_header(out, items.len()).is_ok()
        && items.iter().all(|&item| {
            // SAFETY: live item (see above); attached thread.
            unsafe { write_untyped_number(item, out) || write_fast(item, out) }
        });
    if !written {
        out.truncate(start);
    }
    written
}

/// Fast-path elements only; `Err(())` at the first element that needs pickle. The flag is
/// the function's `typed`.
struct FastOnly(bool);

impl ElementWriter for FastOnly {
    type Error = ();

    fn too_many(&self, _: EncodeError) {}

    #[inline]
    unsafe fn write(
        &mut self,
        object: *mut ffi::PyObject,
        _: Part,
        out: &mut Vec<u8>,
    ) -> Result<(), ()> {
        // SAFETY: caller contract.
        if unsafe { write_key_fast(object, self.0, out) } {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// The fast path, else pickle; an element that cannot be pickled is a `TypeError` naming it.
/// The flag is the function's `typed`.
struct Pickling<'py>(Python<'py>, bool);

impl ElementWriter for Pickling<'_> {
    type Error = PyErr;

    fn too_many(&self, err: EncodeError) -> PyErr {
        errors::cannot_serialize(err)
    }

    unsafe fn write(
        &mut self,
        object: *mut ffi::PyObject,
        part: Part,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let py = self.0;
        let describe = || match part {
            Part::Positional(index) => format!("positional argument {index}"),
            Part::KeywordName => "a keyword name".to_owned(),
            Part::KeywordValue(name) => {
                // SAFETY: the name is live (caller contract).
                let name = unsafe { Borrowed::from_ptr(py, name) };
                let name = name
                    .str()
                    .map_or_else(|_| "?".to_owned(), |s| s.to_string());
                format!("keyword argument '{name}'")
            }
        };
        // SAFETY: caller contract.
        unsafe { write_key_element(py, object, self.1, describe, out) }
    }
}

/// Writes the key tuple, each element through `writer`. The one layout of shared keys:
/// `(positional..., [MARK, name, value, ...])`, keywords in `order`.
///
/// # Safety
/// As [`encode_key`].
#[inline]
unsafe fn encode_key_with<W: ElementWriter>(
    positional: &[*mut ffi::PyObject],
    kw_names: &[*mut ffi::PyObject],
    kw_values: &[*mut ffi::PyObject],
    order: &[usize],
    out: &mut Vec<u8>,
    mut writer: W,
) -> Result<(), W::Error> {
    out.clear();
    let count = if kw_values.is_empty() {
        positional.len()
    } else {
        positional.len() + 1 + 2 * kw_values.len()
    };
    codec::write_tuple_header(out, count).map_err(|err| writer.too_many(err))?;
    // SAFETY (every `write` below): the elements and names are live, the thread is
    // attached (caller contract).
    for (index, &item) in positional.iter().enumerate() {
        // SAFETY: see above.
        unsafe { writer.write(item, Part::Positional(index), out) }?;
    }
    if !kw_values.is_empty() {
        codec::write_kwargs_marker(out);
        for &index in order {
            let name = kw_names[index];
            // SAFETY: see above.
            unsafe {
                writer.write(name, Part::KeywordName, out)?;
                writer.write(kw_values[index], Part::KeywordValue(name), out)?;
            }
        }
    }
    Ok(())
}

/// [`encode_key`] for keys made only of fast-path elements: runs no Python code and sets no
/// error. `false` (with `out` partly written) when an element needs pickle: use
/// [`encode_key`] then. Both write the same bytes for the same call.
///
/// # Safety
/// As [`encode_key`].
#[inline]
pub unsafe fn encode_key_fast(
    positional: &[*mut ffi::PyObject],
    kw_names: &[*mut ffi::PyObject],
    kw_values: &[*mut ffi::PyObject],
    order: &[usize],
    typed: bool,
    out: &mut Vec<u8>,
) -> bool {
    let writer = FastOnly(typed);
    // SAFETY: caller contract (every element is live).
    unsafe { encode_key_with(positional, kw_names, kw_values, order, out, writer) }.is_ok()
}

/// Encodes the key of a call into `out` (cleared first): a codec tuple of the positional
/// arguments, then, with keywords, the kwargs marker and `name, value` pairs in `order`
/// ([`crate::key::keyword_order`]). May run Python code (pickling arguments); an argument
/// that cannot be pickled is a `TypeError`.
///
/// # Safety
/// Every pointer in `positional`, `kw_names` and `kw_values` is live; `kw_names` and
/// `kw_values` have the same length and `order` is a permutation of their indexes; the
/// thread is attached.
pub unsafe fn encode_key(
    py: Python<'_>,
    positional: &[*mut ffi::PyObject],
    kw_names: &[*mut ffi::PyObject],
    kw_values: &[*mut ffi::PyObject],
    order: &[usize],
    typed: bool,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    let writer = Pickling(py, typed);
    // SAFETY: caller contract.
    unsafe { encode_key_with(positional, kw_names, kw_values, order, out, writer) }
}

/// Why stored bytes could not be turned back into an object (the caller treats it as a miss).
pub enum DecodeFailure {
    /// Not a valid codec value (a foreign or damaged entry).
    Codec,
    /// `pickle.loads` raised (e.g. a class that no longer exists), or an allocation failed.
    Python(PyErr),
}

/// A new reference to the scalar `value` describes, or NULL with the error indicator set.
///
/// # Safety
/// The thread is attached.
unsafe fn scalar_object(value: ValueRef<'_>) -> *mut ffi::PyObject {
    // SAFETY: attached thread (caller contract); each constructor returns a new reference or
    // NULL with an exception set; the singletons get the reference we return.
    unsafe {
        match value {
            ValueRef::None => {
                let none = ffi::Py_None();
                ffi::Py_INCREF(none);
                none
            }
            ValueRef::Bool(b) => {
                let object = if b { ffi::Py_True() } else { ffi::Py_False() };
                ffi::Py_INCREF(object);
                object
            }
            ValueRef::Int(i) => ffi::PyLong_FromLongLong(i),
            ValueRef::Float(f) => ffi::PyFloat_FromDouble(f),
            ValueRef::Str(s) => ffi::PyUnicode_FromStringAndSize(
                s.as_ptr().cast::<c_char>(),
                s.len() as ffi::Py_ssize_t,
            ),
            ValueRef::Bytes(b) => ffi::PyBytes_FromStringAndSize(
                b.as_ptr().cast::<c_char>(),
                b.len() as ffi::Py_ssize_t,
            ),
            ValueRef::Tuple(_) | ValueRef::Pickle(_) | ValueRef::KwargsMarker => {
                ffi::PyErr_SetString(
                    ffi::PyExc_ValueError,
                    c"warp_cache: unexpected element in a cached value".as_ptr(),
                );
                ptr::null_mut()
            }
        }
    }
}

/// Decodes stored value bytes that are not a pickle without running Python code (the hit
/// path). `Err(())` (nothing set) if the bytes are invalid or hold a pickle: use
/// [`decode_value`]. `Ok(NULL)` with the error indicator set if an allocation failed.
///
/// # Safety
/// The thread is attached.
#[inline(always)]
pub unsafe fn decode_value_raw(bytes: &[u8]) -> Result<*mut ffi::PyObject, ()> {
    // The commonest values first, straight from their fixed layout (the codec's table),
    // inlined into the caller; the rest in `decode_value_raw_other`.
    if let [codec::tag::INT, b0, b1, b2, b3, b4, b5, b6, b7] = *bytes {
        let value = i64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        // SAFETY: attached thread (caller contract); a new reference or NULL with an
        // exception set.
        return Ok(unsafe { ffi::PyLong_FromLongLong(value) });
    }
    // SAFETY: caller contract.
    unsafe { decode_value_raw_other(bytes) }
}

/// [`decode_value_raw`] of everything but an int.
///
/// # Safety
/// The thread is attached.
#[inline(never)]
unsafe fn decode_value_raw_other(bytes: &[u8]) -> Result<*mut ffi::PyObject, ()> {
    match *bytes {
        [codec::tag::NONE] | [codec::tag::TRUE] | [codec::tag::FALSE] => {
            let value = match bytes[0] {
                codec::tag::NONE => ValueRef::None,
                tag => ValueRef::Bool(tag == codec::tag::TRUE),
            };
            // SAFETY: attached thread (caller contract).
            return Ok(unsafe { scalar_object(value) });
        }
        _ => {}
    }
    let value = codec::decode_ref(bytes).map_err(|_| ())?;
    match value {
        ValueRef::Pickle(_) | ValueRef::KwargsMarker => Err(()),
        ValueRef::Tuple(items) => {
            // SAFETY: attached thread; a brand-new tuple of `len` empty places, each filled
            // exactly once with a new reference (stolen); on failure the partly filled tuple
            // is released (CPython handles NULL places in a dying tuple).
            unsafe {
                let tuple = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
                if tuple.is_null() {
                    return Ok(tuple);
                }
                let mut filled = 0usize;
                for item in items.iter() {
                    if matches!(item, ValueRef::Pickle(_) | ValueRef::KwargsMarker) {
                        break; // values with these are pickled whole: not ours to decode
                    }
                    let object = scalar_object(item);
                    if object.is_null() {
                        ffi::Py_DECREF(tuple);
                        return Ok(ptr::null_mut());
                    }
                    ffi::PyTuple_SET_ITEM(tuple, filled as ffi::Py_ssize_t, object);
                    filled += 1;
                }
                if filled != items.len() {
                    // Never hand out a tuple with empty places.
                    ffi::Py_DECREF(tuple);
                    return Err(());
                }
                Ok(tuple)
            }
        }
        // SAFETY: attached thread.
        scalar => Ok(unsafe { scalar_object(scalar) }),
    }
}

fn unpickle(py: Python<'_>, pickled: &[u8]) -> PyResult<Py<PyAny>> {
    let pickle = pickle(py)?;
    let data = PyBytes::new(py, pickled);
    Ok(pickle.loads.bind(py).call1((data,))?.unbind())
}

/// Turns stored value bytes back into the object that was stored.
pub fn decode_value(py: Python<'_>, bytes: &[u8]) -> Result<Py<PyAny>, DecodeFailure> {
    if let Ok(ValueRef::Pickle(pickled)) = codec::decode_ref(bytes) {
        return unpickle(py, pickled).map_err(DecodeFailure::Python);
    }
    // SAFETY: attached thread (we hold a `Python` token).
    let object = unsafe { decode_value_raw(bytes) }.map_err(|()| DecodeFailure::Codec)?;
    // SAFETY: a new reference or NULL with an exception set.
    unsafe { Py::from_owned_ptr_or_err(py, object) }.map_err(DecodeFailure::Python)
}

#[cfg(test)]
mod tests;
