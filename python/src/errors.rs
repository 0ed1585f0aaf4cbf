//! The one mapping from core errors (and Rust panics) to Python exceptions, and every
//! exception the adapter raises itself: each is a named constructor here, so that the type
//! and the text Python sees are written in one place.

use std::any::Any;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyMemoryError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::PyErr;
use warp_cache_core::{Error, ErrorKind};

/// Converts a core error to the Python exception its kind calls for.
pub fn to_py(err: Error) -> PyErr {
    let message = err.message;
    match err.kind {
        ErrorKind::InvalidArgument => PyValueError::new_err(message),
        ErrorKind::InvalidType => PyTypeError::new_err(message),
        ErrorKind::Unsupported | ErrorKind::Corrupt => PyRuntimeError::new_err(message),
        ErrorKind::Io => match err.os_errno {
            Some(errno) => PyOSError::new_err((errno, message)),
            None => PyOSError::new_err(message),
        },
        ErrorKind::NoSpace => PyMemoryError::new_err(message),
    }
}

/// A Rust panic as a plain `RuntimeError` (never pyo3's `PanicException`, which derives from
/// `BaseException` and escapes `except Exception`).
pub fn panic_to_py(payload: Box<dyn Any + Send>) -> PyErr {
    PyRuntimeError::new_err(panic_message(&*payload))
}

/// The message of a panic turned into a Python exception.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("internal error in warp_cache (please report it): {detail}")
}

/// Runs `body`, turning a panic into a `RuntimeError`. Every entry point from Python goes
/// through this (or through the vectorcall entry, which does the same).
pub fn guard<T>(body: impl FnOnce() -> Result<T, PyErr>) -> Result<T, PyErr> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(panic_to_py(payload)))
}

/// The error for a store found borrowed when it should not be (an adapter bug: Python code
/// ran while the store was borrowed). Reported, never undefined behaviour.
#[cfg(not(Py_GIL_DISABLED))]
pub fn store_busy() -> PyErr {
    PyRuntimeError::new_err(
        "warp_cache: the cache was re-entered while it was being updated (please report it)",
    )
}

/// `TypeError`: a call's keyword names must be `str`.
pub fn keywords_must_be_strings() -> PyErr {
    PyTypeError::new_err("keywords must be strings")
}

/// `TypeError`: the decorated object is not callable.
pub fn not_callable() -> PyErr {
    PyTypeError::new_err("cache() needs a callable")
}

/// `TypeError`: the size parameter `what` (`unit` follows "positive int", e.g. " (bytes)") is
/// not an int; `got` is its repr.
pub fn size_not_an_int(what: &str, unit: &str, got: impl Display) -> PyErr {
    PyTypeError::new_err(format!("{what} must be a positive int{unit}, got {got}"))
}

/// `ValueError`: the size parameter `what` is an int below 1.
pub fn size_not_positive(what: &str, unit: &str, got: impl Display) -> PyErr {
    PyValueError::new_err(format!("{what} must be a positive int{unit}, got {got}"))
}

/// `ValueError`: the size parameter `what` is above what the `backend` (its name) can hold.
pub fn size_too_large(what: &str, limit: impl Display, backend: &str, got: impl Display) -> PyErr {
    PyValueError::new_err(format!(
        "{what} must be at most {limit} for the {backend} backend, got {got}"
    ))
}

/// `RuntimeError`: the failpoints could not be armed (`message` from the core).
#[cfg(unix)] // the shared backend
pub fn failpoint_refused(message: String) -> PyErr {
    PyRuntimeError::new_err(message)
}

/// `RuntimeError`: the shared table breaks an invariant (`message` describes the first).
#[cfg(unix)] // the shared backend
pub fn invalid_shared_table(message: String) -> PyErr {
    PyRuntimeError::new_err(message)
}

/// `ValueError`: a pyclass's Rust contents are not where its Python object says they are.
pub fn unexpected_pyclass_layout() -> PyErr {
    PyValueError::new_err("unexpected pyclass layout")
}

/// `TypeError`: an awaitable's `throw()` got something that is not an exception.
pub fn throw_needs_an_exception() -> PyErr {
    PyTypeError::new_err("throw() expects an exception type or instance")
}

/// `ValueError`: a value or key does not fit the shared cache's codec (`detail` says why).
#[cfg(unix)] // the shared backend
pub fn cannot_serialize(detail: impl Display) -> PyErr {
    PyValueError::new_err(format!("cannot serialize for the shared cache: {detail}"))
}

/// `TypeError`: `pickle.dumps` returned something other than bytes.
#[cfg(unix)] // the shared backend
pub fn pickle_returned_no_bytes() -> PyErr {
    PyTypeError::new_err("pickle.dumps did not return bytes (was the pickle module patched?)")
}

/// `TypeError` caused by `cause`: an argument of a shared cached function (`what`, of type
/// `type_name`) cannot be pickled.
#[cfg(unix)] // the shared backend
pub fn unpicklable_argument(
    py: pyo3::Python<'_>,
    what: &str,
    type_name: &str,
    cause: PyErr,
) -> PyErr {
    let err = PyTypeError::new_err(format!(
        "backend='shared' needs arguments it can serialize (pickle), and {what} (of type \
         {type_name}) cannot be pickled: {cause}"
    ));
    err.set_cause(py, Some(cause));
    err
}
