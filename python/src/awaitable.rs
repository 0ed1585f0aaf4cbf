//! Objects of the async path: [`Ready`], the already-completed awaitable an async cached
//! function returns on a hit (awaiting it never suspends), and [`KeyHandle`], a stored key
//! carried through an async miss (hashable, for the single-flight table).

// `unsafe` allowed: the awaitable's `tp_iternext` slot and StopIteration use the C API.
#![allow(unsafe_code)]

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{PyTraverseError, PyTypeInfo};

use crate::key::{slow_eq, KeyView, StoredKey};

/// An awaitable that is already done: `await` gets the value at once, without suspending.
/// Implements the coroutine protocol (`send`, `throw`, `close`), so `asyncio.create_task`,
/// `ensure_future` and `gather` accept it too.
#[pyclass(frozen, module = "warp_cache", name = "_Ready")]
pub struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    pub fn new(value: Py<PyAny>) -> Self {
        Ready { value }
    }

    fn finish(&self, py: Python<'_>) -> PyErr {
        // `StopIteration((value,))` so that a tuple value is not unpacked into arguments.
        PyStopIteration::new_err((self.value.clone_ref(py),))
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Err(self.finish(py))
    }

    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.finish(py))
    }

    /// Raises what is thrown in (the awaitable has no frame that could handle it).
    #[pyo3(signature = (typ, val = None, _tb = None))]
    fn throw(
        &self,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = typ.py();
        let is_exception_type = typ
            .cast::<PyType>()
            .map(|t| {
                t.is_subclass_of::<pyo3::exceptions::PyBaseException>()
                    .unwrap_or(false)
            })
            .unwrap_or(false);
        let exception = match val {
            Some(val) if is_exception_type && !val.is_none() && !val.is_instance(typ)? => {
                typ.call1((val,))?
            }
            Some(val) if is_exception_type && !val.is_none() => val.clone(),
            _ if is_exception_type => typ.call0()?,
            _ => typ.clone(),
        };
        if !exception.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Err(crate::errors::throw_needs_an_exception());
        }
        let _ = py;
        Err(PyErr::from_value(exception))
    }

    fn close(&self) {}

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.value)
    }
}

/// Raises `StopIteration(value)` the way CPython's own generators do
/// (`_PyGen_SetStopIterationValue`): a plain value is set as is (no exception instance is
/// created where the interpreter can avoid it); a tuple or an exception instance is wrapped
/// first, so it is neither unpacked into arguments nor taken for the exception.
///
/// # Safety
/// The thread is attached and `value` is live.
unsafe fn set_stop_iteration(value: *mut ffi::PyObject) {
    // SAFETY: caller contract; every call below takes live objects and reports failure
    // through the error indicator.
    unsafe {
        if ffi::PyTuple_Check(value) != 0 || ffi::PyExceptionInstance_Check(value) != 0 {
            let exception = ffi::PyObject_CallOneArg(ffi::PyExc_StopIteration, value);
            if exception.is_null() {
                return;
            }
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, exception);
            ffi::Py_DECREF(exception);
        } else {
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, value);
        }
    }
}

/// `tp_iternext` of [`Ready`]: what `await` calls. Raw, to skip building a `PyErr`.
///
/// # Safety
/// Called by CPython with a live `Ready` on an attached thread.
unsafe extern "C" fn ready_iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: function contract; the token only witnesses attachment.
    unsafe {
        let py = Python::assume_attached();
        let ready = Borrowed::from_ptr(py, slf).cast_unchecked::<Ready>();
        set_stop_iteration(ready.get().value.as_ptr());
    }
    std::ptr::null_mut()
}

/// Points `Ready`'s `tp_iternext` at [`ready_iternext`] (same behaviour as `__next__`, which
/// stays for explicit calls, minus the `PyErr` round trip).
pub fn install_ready_iternext(py: Python<'_>) {
    let tp = Ready::type_object(py).as_type_ptr();
    // SAFETY: `tp` is our live heap type; the function has the `iternextfunc` signature and
    // the semantics of the slot it replaces. PyType_Modified drops cached lookups.
    unsafe {
        (*tp).tp_iternext = Some(ready_iternext);
        ffi::PyType_Modified(tp);
    }
}

/// A stored key carried through an async miss; hashable and comparable by key equality.
#[pyclass(frozen, module = "warp_cache", name = "_KeyHandle")]
pub struct KeyHandle {
    key: StoredKey,
    hash: u64,
}

impl KeyHandle {
    pub fn new(key: StoredKey, hash: u64) -> Self {
        KeyHandle { key, hash }
    }

    pub fn key(&self) -> &StoredKey {
        &self.key
    }

    pub fn view(&self) -> KeyView<'_> {
        self.key.view(self.hash)
    }
}

#[pymethods]
impl KeyHandle {
    fn __hash__(&self) -> u64 {
        self.hash
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        match other.cast::<KeyHandle>() {
            Ok(other) => {
                let other = other.get();
                Ok(other.hash == self.hash && slow_eq(py, &self.key, other.view())?)
            }
            Err(_) => Ok(false),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(self.key.object())
    }
}
