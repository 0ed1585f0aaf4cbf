//! Checks of decoration parameters shared by both backends.

use pyo3::prelude::*;
use warp_cache_core::clock::ttl_seconds_to_ns;
use warp_cache_core::Error;

use crate::errors::to_py;

/// `ttl` in seconds (`None`, or finite and >= 0) to nanoseconds; a positive ttl is at least
/// 1 ns so that only `ttl=0` means "store nothing".
pub(crate) fn ttl_ns_of(ttl: Option<f64>) -> PyResult<Option<u64>> {
    match ttl {
        None => Ok(None),
        Some(seconds) if !seconds.is_finite() || seconds < 0.0 => {
            Err(to_py(Error::invalid_argument(format!(
                "ttl must be a finite number of seconds >= 0 or None, got {seconds}"
            ))))
        }
        Some(0.0) => Ok(Some(0)),
        Some(seconds) => Ok(Some(ttl_seconds_to_ns(seconds).max(1))),
    }
}
