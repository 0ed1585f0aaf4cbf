//! Checks of decoration parameters shared by both backends.

use pyo3::prelude::*;
use warp_cache_core::clock::ttl_seconds_to_ns;
use warp_cache_core::Error;

use std::time::Duration;

use crate::errors::to_py;
use crate::single_flight::SingleFlight;

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

/// The single flight of a function whose waiters wait at most `wait_seconds` (`None`: no
/// single flight). The Python layer turns `single_flight=True` into its default bound.
pub(crate) fn single_flight_of(wait_seconds: Option<f64>) -> PyResult<Option<SingleFlight>> {
    match wait_seconds {
        None => Ok(None),
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(Some(SingleFlight::new(
            Duration::from_secs_f64(seconds.min(MAX_SINGLE_FLIGHT_WAIT_SECONDS)),
        ))),
        Some(seconds) => Err(to_py(Error::invalid_argument(format!(
            "single_flight must be True, False or a wait bound in seconds > 0, got {seconds}"
        )))),
    }
}

/// Longest single-flight wait (a day): larger bounds are this.
const MAX_SINGLE_FLIGHT_WAIT_SECONDS: f64 = 86_400.0;

#[cfg(test)]
mod tests {
    use pyo3::exceptions::{PyTypeError, PyValueError};
    use pyo3::prelude::*;

    use super::ttl_ns_of;

    /// The message of `err`, checked to be an instance of `T`.
    fn message_of<T: pyo3::PyTypeInfo>(py: Python<'_>, err: PyErr) -> String {
        assert!(err.is_instance_of::<T>(py), "unexpected exception: {err}");
        err.value(py).to_string()
    }

    #[test]
    fn ttl_in_seconds_becomes_nanoseconds() {
        assert_eq!(ttl_ns_of(None).unwrap(), None);
        assert_eq!(ttl_ns_of(Some(0.0)).unwrap(), Some(0));
        assert_eq!(ttl_ns_of(Some(1.5)).unwrap(), Some(1_500_000_000));
        // A positive ttl never rounds down to 0 (that would mean "store nothing").
        assert_eq!(ttl_ns_of(Some(1e-12)).unwrap(), Some(1));
    }

    #[test]
    fn bad_ttl_is_a_value_error_naming_it() {
        Python::attach(|py| {
            for (ttl, shown) in [(-1.0, "-1"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
                let err = ttl_ns_of(Some(ttl)).unwrap_err();
                assert_eq!(
                    message_of::<PyValueError>(py, err),
                    format!("ttl must be a finite number of seconds >= 0 or None, got {shown}")
                );
            }
        });
    }

    /// `max_size` of the memory backend, through `_make_memory`.
    fn memory_error(py: Python<'_>, max_size: &str) -> PyErr {
        let func = py.eval(c"len", None, None).unwrap().unbind();
        let max_size = py
            .eval(&std::ffi::CString::new(max_size).unwrap(), None, None)
            .unwrap();
        crate::cached::make_memory(py, func, &max_size, None, None, false, None).unwrap_err()
    }

    #[test]
    fn bad_memory_max_size_messages() {
        Python::attach(|py| {
            let limit = warp_cache_core::mem::MAX_SIZE_LIMIT;
            assert_eq!(
                message_of::<PyTypeError>(py, memory_error(py, "True")),
                "max_size must be a positive int, got True"
            );
            assert_eq!(
                message_of::<PyTypeError>(py, memory_error(py, "1.5")),
                "max_size must be a positive int, got 1.5"
            );
            assert_eq!(
                message_of::<PyValueError>(py, memory_error(py, "0")),
                "max_size must be a positive int, got 0"
            );
            assert_eq!(
                message_of::<PyValueError>(py, memory_error(py, "-3")),
                "max_size must be a positive int, got -3"
            );
            assert_eq!(
                message_of::<PyValueError>(py, memory_error(py, "10**40")),
                format!(
                    "max_size must be at most {limit} for the memory backend, got 1{}",
                    "0".repeat(40)
                )
            );
            let func = py.eval(c"len", None, None).unwrap().unbind();
            let ok = 8i64.into_pyobject(py).unwrap().into_any();
            assert!(
                crate::cached::make_memory(py, func, &ok, Some(1.0), None, false, None).is_ok()
            );
        });
    }

    #[test]
    fn not_callable_is_a_type_error() {
        Python::attach(|py| {
            let max_size = 8i64.into_pyobject(py).unwrap().into_any();
            let err = crate::cached::make_memory(py, py.None(), &max_size, None, None, false, None)
                .unwrap_err();
            assert_eq!(
                message_of::<PyTypeError>(py, err),
                "cache() needs a callable"
            );
        });
    }

    /// The shared backend's integer parameters, through `_make_shared` (which checks them
    /// before any file is opened).
    #[cfg(unix)]
    #[test]
    fn bad_shared_parameter_messages() {
        Python::attach(|py| {
            let int = |source: &str| {
                py.eval(&std::ffi::CString::new(source).unwrap(), None, None)
                    .unwrap()
            };
            let good = int("64");
            let make =
                |max_size: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>| {
                    let func = py.eval(c"len", None, None).unwrap().unbind();
                    crate::shared::make_shared(
                        py,
                        func,
                        "rust-test-never-opened".to_owned(),
                        max_size,
                        None,
                        key,
                        value,
                        None,
                        false,
                        None,
                        None,
                    )
                    .map(|_| ())
                    .unwrap_err()
                };
            assert_eq!(
                message_of::<PyTypeError>(py, make(&int("None"), &good, &good)),
                "max_size must be a positive int, got None"
            );
            assert_eq!(
                message_of::<PyValueError>(py, make(&int("0"), &good, &good)),
                "max_size must be a positive int, got 0"
            );
            assert_eq!(
                message_of::<PyTypeError>(py, make(&good, &int("False"), &good)),
                "max_key_size must be a positive int (bytes), got False"
            );
            assert_eq!(
                message_of::<PyValueError>(py, make(&good, &good, &int("-1"))),
                "max_value_size must be a positive int (bytes), got -1"
            );
            assert_eq!(
                message_of::<PyValueError>(py, make(&good, &good, &int("2**32"))),
                "max_value_size must be at most 4294967295 for the shared backend, got 4294967296"
            );
            assert_eq!(
                message_of::<PyValueError>(py, make(&int("2**40"), &good, &good)),
                "max_size must be at most 4294967295 for the shared backend, got 1099511627776"
            );
        });
    }
}
