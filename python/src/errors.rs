//! The one mapping from core errors (and Rust panics) to Python exceptions.

use std::any::Any;
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
