//! What an async cached function keeps for its misses, one type for both backends: the
//! single-flight miss coroutine and its table of misses in flight.

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyTraverseError;

use crate::awaitable::Ready;
use crate::function_type::Invocation;

pub(crate) struct AsyncState {
    /// `warp_cache._async.async_miss`: the single-flight miss coroutine.
    helper: Py<PyAny>,
    /// In-flight misses: `(event loop, key handle) -> future` (the handle is the backend's:
    /// a `KeyHandle` in memory, the encoded key's bytes in shared memory).
    inflight: Py<PyDict>,
}

impl AsyncState {
    pub fn new(py: Python<'_>, helper: Py<PyAny>) -> Self {
        AsyncState {
            helper,
            inflight: PyDict::new(py).unbind(),
        }
    }

    /// The awaitable of a miss of `cached` (the cached function, `func` its wrapped
    /// function) under the key `handle`, called with `invocation`'s arguments.
    pub fn start_miss<'py>(
        &self,
        py: Python<'py>,
        cached: &Bound<'py, PyAny>,
        func: &Py<PyAny>,
        handle: Bound<'py, PyAny>,
        invocation: &Invocation<'_, 'py>,
    ) -> PyResult<Py<PyAny>> {
        let (args, kwargs) = invocation.pack(py)?;
        let arguments = (
            cached,
            func.bind(py),
            self.inflight.bind(py),
            handle,
            args,
            kwargs,
        );
        Ok(self.helper.bind(py).call1(arguments)?.unbind())
    }

    /// The collector's visit of the objects held here.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.helper)?;
        visit.call(&self.inflight)
    }

    /// Forgets the misses in flight (their futures stay with their awaiters).
    pub fn clear_inflight(&self, py: Python<'_>) {
        self.inflight.bind(py).clear();
    }
}

/// What a hit returns: the value, or for an async function (`state` is `Some`) an
/// already-completed awaitable of it.
#[inline(always)]
pub(crate) fn hit_result(
    state: Option<&AsyncState>,
    py: Python<'_>,
    value: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    match state {
        None => Ok(value),
        Some(_) => Ok(Py::new(py, Ready::new(value))?.into_any()),
    }
}
