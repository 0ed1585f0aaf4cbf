//! The Python methods both cached-function types (`CachedFunction`, `SharedCachedFunction`)
//! have alike, written once: [`cached_function_pymethods!`] writes a type's `#[pymethods]`
//! block from these and the methods the backend adds (its `__call__`, `cache_info`, ...).
//! A macro rather than a trait or a helper type, so that each method is an ordinary method of
//! the pyclass (no indirection, nothing on the call path: calls enter through vectorcall).
//!
//! `tp_call`'s keyword handling, shared by both `__call__`s, is [`TupleCallKeywords`].

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, Bound};

use crate::errors;

/// `#[pymethods] impl $type { common methods; $own methods }`, invoked as
/// `cached_function_pymethods! { #[pymethods] impl Type, "kind" { own methods } }`. `$type`
/// has an inherent `fn tp_call(slf, args, kwargs)` (its `__call__`), the per-key methods
/// `peek_call`, `invalidate_call` and `set_call`, and the fields
/// `func: Py<PyAny>` (the wrapped function) and `async_state: Option<_>` (set for a
/// coroutine function); `$kind` names it in the repr (`<warp_cache {kind} {qualname}>`).
macro_rules! cached_function_pymethods {
    (# $pymethods:tt impl $type:ident, $kind:literal { $($own:tt)* }) => {
        // The attribute comes from the invocation: pyo3's generated locals (of a
        // `signature = (*args, **kwargs)`, say) then share the hygiene of `$own`.
        # $pymethods
        impl $type {
            /// A call through `tp_call` (a caller that built a tuple): the backend's
            /// `tp_call`. Calls through vectorcall do not come here.
            #[pyo3(signature = (*args, **kwargs))]
            fn __call__(
                slf: &::pyo3::Bound<'_, Self>,
                args: &::pyo3::Bound<'_, ::pyo3::types::PyTuple>,
                kwargs: Option<&::pyo3::Bound<'_, ::pyo3::types::PyDict>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                Self::tp_call(slf, args, kwargs)
            }

            /// The parameters this function was decorated with, as a new dict (as
            /// `functools.lru_cache`'s `cache_parameters()`): `max_size`, `ttl`, `typed`,
            /// `backend`, the shared limits and `fallback`, recorded by `@cache`.
            fn cache_parameters(
                slf: &::pyo3::Bound<'_, Self>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::types::PyDict>> {
                use ::pyo3::types::{PyAnyMethods, PyDictMethods};
                $crate::errors::guard(|| {
                    let recorded = slf.getattr(::pyo3::intern!(slf.py(), "_warp_parameters"))?;
                    Ok(recorded.cast::<::pyo3::types::PyDict>()?.copy()?.unbind())
                })
            }

            /// The cached value for these arguments, without calling the function;
            /// `KeyError` if there is none (an expired entry is absent). Counts neither a hit
            /// nor a miss, and is not an access for SIEVE.
            #[pyo3(signature = (*args, **kwargs))]
            fn cache_peek(
                &self,
                py: ::pyo3::Python<'_>,
                args: &::pyo3::Bound<'_, ::pyo3::types::PyTuple>,
                kwargs: Option<&::pyo3::Bound<'_, ::pyo3::types::PyDict>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                $crate::errors::guard(|| self.peek_call(py, args, kwargs))
            }

            /// Removes the entry a call with these arguments would use; True if a fresh one
            /// was there.
            #[pyo3(signature = (*args, **kwargs))]
            fn cache_invalidate(
                &self,
                py: ::pyo3::Python<'_>,
                args: &::pyo3::Bound<'_, ::pyo3::types::PyTuple>,
                kwargs: Option<&::pyo3::Bound<'_, ::pyo3::types::PyDict>>,
            ) -> ::pyo3::PyResult<bool> {
                $crate::errors::guard(|| self.invalidate_call(py, args, kwargs))
            }

            /// Stores `value` as the result for these arguments; False if it was not
            /// stored (the backend's rules for what it caches).
            #[pyo3(signature = (value, /, *args, **kwargs))]
            fn cache_set(
                &self,
                py: ::pyo3::Python<'_>,
                value: ::pyo3::Py<::pyo3::PyAny>,
                args: &::pyo3::Bound<'_, ::pyo3::types::PyTuple>,
                kwargs: Option<&::pyo3::Bound<'_, ::pyo3::types::PyDict>>,
            ) -> ::pyo3::PyResult<bool> {
                $crate::errors::guard(|| self.set_call(py, value, args, kwargs))
            }

            /// Calls the function, stores and returns its fresh result (for an async
            /// function: an awaitable that does so).
            #[pyo3(signature = (*args, **kwargs))]
            fn cache_refresh(
                slf: &::pyo3::Bound<'_, Self>,
                args: &::pyo3::Bound<'_, ::pyo3::types::PyTuple>,
                kwargs: Option<&::pyo3::Bound<'_, ::pyo3::types::PyDict>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                use ::pyo3::types::PyAnyMethods;
                $crate::errors::guard(|| {
                    let py = slf.py();
                    let this = slf.get();
                    // The guarded call (recursion and C-stack checks, forced unwind at exit).
                    let result = $crate::function_type::Invocation::of_tuple_call(args, kwargs)
                        .call(py, &this.func)?
                        .into_bound(py);
                    if this.async_state.is_some() {
                        let refresh = py.import("warp_cache._async")?.getattr("refresh")?;
                        return Ok(refresh.call1((slf, result, args, kwargs))?.unbind());
                    }
                    this.set_call(py, result.clone().unbind(), args, kwargs)?;
                    Ok(result.unbind())
                })
            }

            /// Binds to an instance like a function (and `functools.lru_cache`) does.
            fn __get__(
                slf: &::pyo3::Bound<'_, Self>,
                instance: Option<&::pyo3::Bound<'_, ::pyo3::PyAny>>,
                owner: Option<&::pyo3::Bound<'_, ::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                let _ = owner;
                $crate::function_type::bind_to_instance(slf.as_any(), instance)
            }

            /// Pickles by reference, like `functools.lru_cache`: the qualified name.
            fn __reduce__<'py>(
                slf: &::pyo3::Bound<'py, Self>,
            ) -> ::pyo3::PyResult<::pyo3::Bound<'py, ::pyo3::PyAny>> {
                $crate::errors::guard(|| slf.getattr("__qualname__"))
            }

            fn __copy__(slf: ::pyo3::Bound<'_, Self>) -> ::pyo3::Bound<'_, Self> {
                slf
            }

            fn __deepcopy__<'py>(
                slf: ::pyo3::Bound<'py, Self>,
                _memo: &::pyo3::Bound<'py, ::pyo3::PyAny>,
            ) -> ::pyo3::Bound<'py, Self> {
                slf
            }

            fn __repr__(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<String> {
                $crate::function_type::repr(slf.as_any(), &slf.get().func, $kind)
            }

            /// The wrapped function, as given to the decorator.
            #[getter]
            fn _func(&self, py: ::pyo3::Python<'_>) -> ::pyo3::Py<::pyo3::PyAny> {
                self.func.clone_ref(py)
            }

            /// Whether calls return awaitables (the wrapped function is a coroutine function).
            #[getter]
            fn _is_async(&self) -> bool {
                self.async_state.is_some()
            }

            $($own)*
        }
    };
}

pub(crate) use cached_function_pymethods;

/// The keywords of a `tp_call` (`__call__`), as the key builders take them: parallel arrays of
/// names and values. Holds strong references, so the dict's contents outlive the key even if
/// Python code (a `__hash__`) changes the dict.
pub struct TupleCallKeywords<'py> {
    _held: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    pub names: Vec<*mut ffi::PyObject>,
    pub values: Vec<*mut ffi::PyObject>,
}

impl<'py> TupleCallKeywords<'py> {
    /// The keywords of `kwargs` (none for `None` or an empty dict); a name that is not a
    /// `str` is a `TypeError`.
    pub fn of(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        let held: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = match kwargs {
            Some(kwargs) if !kwargs.is_empty() => kwargs.iter().collect(),
            _ => Vec::new(),
        };
        if held
            .iter()
            .any(|(name, _)| !name.is_instance_of::<PyString>())
        {
            return Err(errors::keywords_must_be_strings());
        }
        Ok(TupleCallKeywords {
            names: held.iter().map(|(name, _)| name.as_ptr()).collect(),
            values: held.iter().map(|(_, value)| value.as_ptr()).collect(),
            _held: held,
        })
    }
}
