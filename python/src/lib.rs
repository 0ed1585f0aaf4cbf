//! Python adapter of warp_cache (module `warp_cache._warp_cache`): the memory backend's
//! cached-function type, `CacheInfo`, and the async helpers. Everything algorithmic lives in
//! `warp-cache-core`; this crate builds keys from Python calls and maps errors.
//!
//! `unsafe` is denied here and allowed, each with its reason, only in the modules that work
//! through the C API (see each file's first lines).

#![deny(unsafe_code)]

mod async_state;
mod awaitable;
mod cached;
mod callable_methods;
// The C-level call entry (raw vectorcall arguments, the pending-call frame).
#[allow(unsafe_code)]
mod call_shell;
mod cell;
#[cfg(unix)]
mod convert;
mod errors;
mod function_type;
mod info;
mod key;
mod params;
mod prefetch;
// Calls the wrapped function through the C API (vectorcall, recursion guard).
#[allow(unsafe_code)]
mod python_call;
#[cfg(unix)]
mod shared;
mod single_flight;

use pyo3::prelude::*;

pub use errors::{guard, panic_message, panic_to_py, to_py};
pub use info::CacheInfo;

#[pymodule(gil_used = false)]
fn _warp_cache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    key::init(py)?;
    m.add_class::<cached::CachedFunction>()?;
    m.add_class::<awaitable::Ready>()?;
    m.add_class::<awaitable::KeyHandle>()?;
    m.add_function(wrap_pyfunction!(cached::make_memory, m)?)?;
    m.add(
        "MEMORY_MAX_SIZE_LIMIT",
        warp_cache_core::mem::MAX_SIZE_LIMIT,
    )?;
    awaitable::install_ready_iternext(py);
    let vectorcall = cached::install_vectorcall(py)?;
    m.add("VECTORCALL", vectorcall)?;
    // The shared backend (`shared/`), on POSIX platforms only: without it the module has no
    // `SharedCachedFunction` and `_make_shared`, and the Python layer says so at decoration.
    #[cfg(not(unix))]
    m.add("FAILPOINTS", false)?;
    #[cfg(unix)]
    {
        m.add_function(wrap_pyfunction!(shared::make_shared, m)?)?;
        m.add_function(wrap_pyfunction!(shared::set_failpoint, m)?)?;
        m.add_function(wrap_pyfunction!(shared::after_fork_in_child, m)?)?;
        m.add("FAILPOINTS", shared::FAILPOINTS)?;
        // `python -m warp_cache` (`__main__.py`): read-only inspection, clear, stale removal.
        m.add_function(wrap_pyfunction!(shared::inspect::shm_cache_dir, m)?)?;
        m.add_function(wrap_pyfunction!(shared::inspect::shm_stems, m)?)?;
        m.add_function(wrap_pyfunction!(shared::inspect::shm_inspect, m)?)?;
        m.add_function(wrap_pyfunction!(shared::inspect::shm_clear, m)?)?;
        m.add_function(wrap_pyfunction!(shared::inspect::shm_remove_stale, m)?)?;
        convert::init(py)?;
        m.add_class::<shared::SharedCachedFunction>()?;
        shared::install_vectorcall(py)?;
    }
    Ok(())
}
