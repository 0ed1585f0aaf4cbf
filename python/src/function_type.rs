//! What both backends' cached-function types (`CachedFunction`, `SharedCachedFunction`) share
//! as Python callables: the two raw slots pyo3 0.27 does not manage for us (a vectorcall entry,
//! which has no `#[pyclass]` option, and the instance `__dict__`, which pyo3 does not traverse),
//! binding to an instance like a function, and the repr.
//!
//! The raw slots need the offset of the Rust contents inside the Python object, measured once
//! per type at module init on a probe instance ([`ContentsOffset::measure`]).

// `unsafe` allowed: the raw type slots (vectorcall offset, instance dict) pyo3 does not manage.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyClass;

use pyo3::types::{PyDict, PyTuple};

use crate::call_shell::split_vector_args;
use crate::errors::guard;
use crate::python_call;

extern "C" {
    /// `PyMethod_New` of the C API (a bound method), not declared by pyo3-ffi.
    fn PyMethod_New(func: *mut ffi::PyObject, self_: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `__get__`: binds `callable` to `instance` like a function (and `functools.lru_cache`)
/// does; on the class (no instance, or `None`) the callable itself.
pub fn bind_to_instance(
    callable: &Bound<'_, PyAny>,
    instance: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    guard(|| match instance {
        Some(instance) if !instance.is_none() => {
            // SAFETY: both objects are live; PyMethod_New returns a new reference or NULL
            // with an exception set.
            unsafe {
                Py::from_owned_ptr_or_err(
                    callable.py(),
                    PyMethod_New(callable.as_ptr(), instance.as_ptr()),
                )
            }
        }
        _ => Ok(callable.clone().unbind()),
    })
}

/// `__repr__`: `<warp_cache {kind} {qualname}>`, or the wrapped function's repr when the
/// callable has no `__qualname__`.
pub fn repr(callable: &Bound<'_, PyAny>, func: &Py<PyAny>, kind: &str) -> PyResult<String> {
    guard(|| {
        let name = match callable.getattr("__qualname__") {
            Ok(name) => name.str()?.to_string(),
            Err(_) => func.bind(callable.py()).repr()?.to_string(),
        };
        Ok(format!("<warp_cache {kind} {name}>"))
    })
}

/// Offset of a pyclass's Rust struct inside its Python object (one per type, set once).
pub struct ContentsOffset(OnceLock<usize>);

impl ContentsOffset {
    pub const fn new() -> Self {
        ContentsOffset(OnceLock::new())
    }

    /// Measures the offset on `probe`, a live instance of `T`, and remembers it.
    pub fn measure<T: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync>(
        &self,
        probe: &Py<T>,
    ) -> PyResult<usize> {
        let object_address = probe.as_ptr() as usize;
        let contents_address = ptr::from_ref(probe.get()) as usize;
        let offset = contents_address
            .checked_sub(object_address)
            .ok_or_else(crate::errors::unexpected_pyclass_layout)?;
        Ok(*self.0.get_or_init(|| offset))
    }

    /// The instance `__dict__` slot of the object whose contents are `contents`; `None` before
    /// [`ContentsOffset::measure`] or when the type has no dict.
    ///
    /// # Safety
    /// `contents` is the contents of a live Python object of the type this offset was
    /// measured for.
    pub unsafe fn instance_dict_slot<'a, T>(
        &self,
        contents: &'a T,
    ) -> Option<&'a Option<Py<PyAny>>> {
        let contents_offset = *self.0.get()?;
        // SAFETY: `contents` lives `contents_offset` bytes into its Python object (measured
        // at module init for this type); the type object is live while the instance is, and
        // `tp_dictoffset` is the offset pyo3 registered for the dict slot, which holds a
        // nullable owned pointer (the layout of `Option<Py<PyAny>>`).
        unsafe {
            let object = ptr::from_ref(contents)
                .cast::<u8>()
                .sub(contents_offset)
                .cast_mut()
                .cast::<ffi::PyObject>();
            let dict_offset = (*ffi::Py_TYPE(object)).tp_dictoffset;
            if dict_offset <= 0 {
                return None;
            }
            let slot = object
                .cast::<u8>()
                .offset(dict_offset)
                .cast::<Option<Py<PyAny>>>();
            Some(&*slot)
        }
    }
}

/// Gives the pyclass `T` a vectorcall slot: its `tp_vectorcall_offset` is pointed at the
/// `vectorcallfunc` field found `field_offset` bytes into the contents (at `contents_offset`
/// into the object), and `Py_TPFLAGS_HAVE_VECTORCALL` is set. Returns whether it was
/// installed: `WARP_CACHE_NO_VECTORCALL=1` keeps plain `tp_call`, for measurements.
///
/// Every instance of `T` must store its entry in that field when it is created (the types'
/// `new` does); the type keeps `tp_call` for callers that build a tuple.
pub fn install_vectorcall<T: PyClass>(
    py: Python<'_>,
    contents_offset: usize,
    field_offset: usize,
) -> PyResult<bool> {
    let disabled = std::env::var("WARP_CACHE_NO_VECTORCALL")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false);
    if disabled {
        return Ok(false);
    }
    let vectorcall_offset = contents_offset + field_offset;
    let type_object = T::type_object(py);
    let tp = type_object.as_type_ptr();
    // SAFETY: `tp` is our live heap type, created by pyo3 and not yet used to call anything;
    // every instance stores its vectorcall entry at `vectorcall_offset` (function contract);
    // the type keeps `tp_call` for non-vectorcall callers. PyType_Modified drops cached
    // lookups.
    unsafe {
        (*tp).tp_vectorcall_offset = vectorcall_offset as ffi::Py_ssize_t;
        #[cfg(not(Py_GIL_DISABLED))]
        {
            (*tp).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
        }
        #[cfg(Py_GIL_DISABLED)]
        {
            (*tp).tp_flags.fetch_or(
                ffi::Py_TPFLAGS_HAVE_VECTORCALL,
                std::sync::atomic::Ordering::SeqCst,
            );
        }
        ffi::PyType_Modified(tp);
    }
    Ok(true)
}

/// How to call the wrapped function on a miss: the way the call came in.
pub enum Invocation<'a, 'py> {
    /// Through our vectorcall entry: CPython's argument vector, alive for that call.
    Vector {
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    },
    /// Through `tp_call` (`__call__`): a tuple and an optional dict.
    Tuple {
        args: &'a Bound<'py, PyTuple>,
        kwargs: Option<&'a Bound<'py, PyDict>>,
    },
}

impl<'a, 'py> Invocation<'a, 'py> {
    /// A `tp_call` with `args` and `kwargs` (an empty dict is passed on as none).
    pub fn of_tuple_call(
        args: &'a Bound<'py, PyTuple>,
        kwargs: Option<&'a Bound<'py, PyDict>>,
    ) -> Self {
        Invocation::Tuple {
            args,
            kwargs: kwargs.filter(|kwargs| !kwargs.is_empty()),
        }
    }

    /// Calls `func` with these arguments, the way they came in (guarded: `python_call.rs`).
    pub fn call(&self, py: Python<'py>, func: &Py<PyAny>) -> PyResult<Py<PyAny>> {
        let result = match *self {
            Invocation::Vector {
                args,
                nargsf,
                kwnames,
            } => {
                // SAFETY: exactly the arguments CPython passed to our vectorcall entry, alive
                // for that call.
                unsafe { python_call::vectorcall(func.as_ptr(), args, nargsf, kwnames) }
            }
            // SAFETY: live tuple and dict (or null) borrowed from the caller.
            Invocation::Tuple { args, kwargs } => unsafe {
                python_call::call(
                    func.as_ptr(),
                    args.as_ptr(),
                    kwargs.map_or(ptr::null_mut(), |kwargs| kwargs.as_ptr()),
                )
            },
        };
        // SAFETY: a new reference, or NULL with an exception set.
        unsafe { Py::from_owned_ptr_or_err(py, result) }
    }

    /// The arguments as `(args, kwargs)`, for the async miss helper.
    pub fn pack(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        match *self {
            Invocation::Tuple { args, kwargs } => Ok((
                args.clone().into_any(),
                match kwargs {
                    Some(kwargs) => kwargs.copy()?,
                    None => PyDict::new(py),
                },
            )),
            Invocation::Vector {
                args,
                nargsf,
                kwnames,
            } => {
                // SAFETY: the vectorcall arguments are live for this call.
                let (positional, names, values) =
                    unsafe { split_vector_args(args, nargsf, kwnames) };
                // SAFETY: live objects borrowed from the call.
                let positional = PyTuple::new(
                    py,
                    positional
                        .iter()
                        .map(|&item| unsafe { Borrowed::from_ptr(py, item) }),
                )?;
                let kwargs = PyDict::new(py);
                for (&name, &value) in names.iter().zip(values) {
                    // SAFETY: live objects borrowed from the call.
                    unsafe {
                        kwargs.set_item(
                            Borrowed::from_ptr(py, name),
                            Borrowed::from_ptr(py, value),
                        )?;
                    }
                }
                Ok((positional.into_any(), kwargs))
            }
        }
    }
}
