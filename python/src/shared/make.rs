//! Creating a shared cached function from Python, and the module-level helpers.

// A part of shared/mod.rs, split out for size: it uses the module's items and imports.
use super::*;

/// Whether the core's test-only failpoints are compiled in (cargo feature `failpoints`).
pub const FAILPOINTS: bool = failpoint::ENABLED;

/// A positive int that fits a u32, or the error the user needs (`what` names it).
fn u32_param(what: &str, value: &Bound<'_, PyAny>) -> PyResult<u32> {
    let unit = if what == "max_size" { "" } else { " (bytes)" };
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(errors::size_not_an_int(what, unit, value.repr()?));
    }
    match value.extract::<i128>() {
        Ok(n) if n < 1 => Err(errors::size_not_positive(what, unit, n)),
        Ok(n) if n <= i128::from(u32::MAX) => Ok(n as u32),
        _ => Err(errors::size_too_large(
            what,
            u32::MAX,
            "shared",
            value.repr()?,
        )),
    }
}

/// `max_bytes`: `None`, or a positive int (the layout checks its range against the table).
fn max_bytes_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(errors::size_not_an_int(
            "max_bytes",
            " (bytes)",
            value.repr()?,
        ));
    }
    match value.extract::<i128>() {
        Ok(n) if n < 1 => Err(errors::size_not_positive("max_bytes", " (bytes)", n)),
        Ok(n) => Ok(Some(u64::try_from(n).unwrap_or(u64::MAX))),
        Err(_) => Ok(Some(u64::MAX)),
    }
}

/// Creates the shared-backend wrapper of `func` under the cache name `name` (from
/// `warp_cache._shared.cache_name`). Parameters are checked again here; files are opened
/// (created, or replaced if their parameters differ) now, so space and permission
/// problems are errors at decoration time.
#[pyfunction]
#[pyo3(
    name = "_make_shared",
    signature = (
        func, name, max_size, ttl, max_key_size, max_value_size, async_helper = None,
        typed = false, single_flight = None, max_bytes = None
    )
)]
#[allow(clippy::too_many_arguments)]
pub fn make_shared(
    py: Python<'_>,
    func: Py<PyAny>,
    name: String,
    max_size: &Bound<'_, PyAny>,
    ttl: Option<f64>,
    max_key_size: &Bound<'_, PyAny>,
    max_value_size: &Bound<'_, PyAny>,
    async_helper: Option<Py<PyAny>>,
    typed: bool,
    single_flight: Option<f64>,
    max_bytes: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<SharedCachedFunction>> {
    guard(|| {
        if !func.bind(py).is_callable() {
            return Err(errors::not_callable());
        }
        let config = ShmConfig {
            dir: None,
            name: name.clone(),
            capacity: u32_param("max_size", max_size)?,
            key_bytes_max: u32_param("max_key_size", max_key_size)?,
            value_bytes_max: u32_param("max_value_size", max_value_size)?,
            ttl_ns: ttl_ns_of(ttl)?,
            max_bytes: max_bytes_of(max_bytes)?,
        };
        // `ttl=0` stores nothing: nothing for a waiter to wait for.
        let flights = match config.ttl_ns {
            Some(0) => None,
            _ => single_flight_of(single_flight)?,
        };
        let store = crate::python_call::detached(py, || ShmStore::open(config)).map_err(to_py)?;
        let async_state = async_helper.map(|helper| AsyncState::new(py, helper));
        Py::new(
            py,
            SharedCachedFunction::new(func, store, name, typed, flights, async_state),
        )
    })
}

/// Frees the reusable buffers in a child after `os.fork` (registered by the Python
/// package with `os.register_at_fork`): a thread that held them in the parent does not
/// exist in the child.
#[pyfunction]
#[pyo3(name = "_after_fork_in_child")]
pub fn after_fork_in_child(py: Python<'_>) {
    let _ = py;
    scratch_slot::SLOT.reset_after_fork();
}

/// Arms the core's failpoints (`None` disarms): test builds only (cargo feature
/// `failpoints`); otherwise a `RuntimeError`.
#[pyfunction]
#[pyo3(name = "_set_failpoint", signature = (spec = None))]
pub fn set_failpoint(spec: Option<&str>) -> PyResult<()> {
    failpoint::set(spec).map_err(errors::failpoint_refused)
}
