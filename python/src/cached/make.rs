//! Creating a memory-backend cached function from Python, and giving its type a vectorcall
//! slot.

// A part of cached.rs, split out for size: it uses the module's items and imports.
use super::*;

/// Gives `CachedFunction` a vectorcall slot: pyo3 0.27 has no `#[pyclass]` option for it,
/// so after the type is created its `tp_vectorcall_offset` is pointed at the `vectorcall`
/// field and `Py_TPFLAGS_HAVE_VECTORCALL` is set. Returns whether it was installed
/// (`WARP_CACHE_NO_VECTORCALL=1` keeps plain `tp_call`, for measurements).
pub fn install_vectorcall(py: Python<'_>) -> PyResult<bool> {
    let probe = Py::new(
        py,
        CachedFunction::new(
            py.None(),
            MemStore::new(1, None).map_err(to_py)?,
            false,
            None,
            None,
        ),
    )?;
    let contents_offset = CONTENTS_OFFSET.measure(&probe)?;
    function_type::install_vectorcall::<CachedFunction>(
        py,
        contents_offset,
        offset_of!(CachedFunction, vectorcall),
    )
}

/// `max_size` for the memory backend: a positive int up to [`MAX_SIZE_LIMIT`].
fn memory_max_size(max_size: &Bound<'_, PyAny>) -> PyResult<u32> {
    if max_size.is_instance_of::<PyBool>() || !max_size.is_instance_of::<pyo3::types::PyInt>() {
        return Err(errors::size_not_an_int("max_size", "", max_size.repr()?));
    }
    match max_size.extract::<i128>() {
        Ok(n) if n < 1 => Err(errors::size_not_positive("max_size", "", n)),
        Ok(n) if n <= i128::from(MAX_SIZE_LIMIT) => Ok(n as u32),
        _ => Err(errors::size_too_large(
            "max_size",
            MAX_SIZE_LIMIT,
            "memory",
            max_size.repr()?,
        )),
    }
}

/// Creates the memory-backend wrapper of `func` (the Python layer has validated the
/// arguments; they are checked again here).
#[pyfunction]
#[pyo3(
    name = "_make_memory",
    signature = (func, max_size, ttl, async_helper = None, typed = false, single_flight = None)
)]
pub fn make_memory(
    py: Python<'_>,
    func: Py<PyAny>,
    max_size: &Bound<'_, PyAny>,
    ttl: Option<f64>,
    async_helper: Option<Py<PyAny>>,
    typed: bool,
    single_flight: Option<f64>,
) -> PyResult<Py<CachedFunction>> {
    guard(|| {
        if !func.bind(py).is_callable() {
            return Err(errors::not_callable());
        }
        let store = MemStore::new(memory_max_size(max_size)?, ttl_ns_of(ttl)?).map_err(to_py)?;
        let async_state = async_helper.map(|helper| AsyncState::new(py, helper));
        // `ttl=0` stores nothing: nothing for a waiter to wait for.
        let flights = match ttl_ns_of(ttl)? {
            Some(0) => None,
            _ => single_flight_of(single_flight)?,
        };
        Py::new(
            py,
            CachedFunction::new(func, store, typed, flights, async_state),
        )
    })
}
