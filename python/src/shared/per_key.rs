//! The shared backend's per-key methods (`cache_peek`, `cache_invalidate`, `cache_set`): the
//! encoded key of a call, looked up, removed or stored without calling the function.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::scratch::{put_scratch, take_scratch, Scratch};
use super::{decode_or_miss, CallArgs, SharedCachedFunction};
use crate::callable_methods::TupleCallKeywords;
use crate::errors::to_py;

impl SharedCachedFunction {
    /// Runs `body` with the reusable buffers, the key of a call with `args` and `kwargs`
    /// encoded in `scratch.key`, and its hash (`None`: over `max_key_size`, so never stored).
    fn with_encoded_key<R>(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        body: impl FnOnce(&mut Scratch, Option<u64>) -> PyResult<R>,
    ) -> PyResult<R> {
        let keywords = TupleCallKeywords::of(kwargs)?;
        let call = CallArgs::of_tuple_call(args, &keywords);
        let mut scratch = take_scratch();
        // SAFETY: the arguments are held by `args` and `keywords`; attached thread.
        let result = match unsafe { self.encode_call_key(py, call, &mut scratch.key) } {
            Ok(hash) => body(&mut scratch, hash),
            Err(err) => Err(err),
        };
        put_scratch(scratch);
        result
    }

    /// `cache_peek`: the fresh value cached for these arguments, or `KeyError`. Counts
    /// nothing and leaves the visited bit alone; an expired entry, or stored bytes that do
    /// not decode, are absent.
    pub(super) fn peek_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let found = self.with_encoded_key(py, args, kwargs, |scratch, hash| {
            let Some(hash) = hash else {
                return Ok(None);
            };
            let now_ns = self.read_clock();
            match self
                .store
                .inspect_hashed(&scratch.key, hash, now_ns, &mut scratch.value)
            {
                Ok(true) => decode_or_miss(py, &scratch.value),
                // A store that cannot be read holds nothing usable.
                Ok(false) | Err(_) => Ok(None),
            }
        })?;
        found.ok_or_else(|| PyKeyError::new_err(args.clone().unbind()))
    }

    /// `cache_invalidate`: removes the entry of these arguments (for every process);
    /// whether one was there. A writer lock held by a live process past the bound is an
    /// `OSError` (nothing removed), never a silent False.
    pub(super) fn invalidate_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        self.with_encoded_key(py, args, kwargs, |scratch, hash| {
            if hash.is_none() {
                return Ok(false);
            }
            let key = &scratch.key;
            crate::python_call::detached(py, || self.store.remove(key)).map_err(to_py)
        })
    }

    /// `cache_set`: stores `value` as the result for these arguments, by the backend's
    /// rules (False for an oversize key or value, an unpicklable value, `ttl=0`, or a store
    /// that could not take it). A present entry is updated in place (its position and
    /// visited bit kept, its TTL restarted).
    pub(super) fn set_call(
        &self,
        py: Python<'_>,
        value: Py<PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        self.with_encoded_key(py, args, kwargs, |scratch, hash| {
            let Scratch {
                key, value: buffer, ..
            } = scratch;
            self.store_value(py, key, hash.unwrap_or(0), value.bind(py), buffer)
        })
    }
}
