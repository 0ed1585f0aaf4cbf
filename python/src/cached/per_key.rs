//! The memory backend's per-key methods (`cache_peek`, `cache_invalidate`, `cache_set`):
//! the key of a call, found with the same comparisons as a lookup, without calling the
//! function.
//!
//! As everywhere in this backend, a key's `__eq__` runs with the store released, and removed
//! keys and values are dropped after the store's borrow ends (INV-3).

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use warp_cache_core::mem::{Hit, SlotRef};

use super::{clock, with_call_key, CachedFunction};
use crate::key::{self, KeyView, Quick, StoredKey};

impl CachedFunction {
    /// The slot holding the key `probe` describes, if any (fresh or not).
    fn slot_of(&self, py: Python<'_>, probe: KeyView<'_>) -> PyResult<Option<SlotRef>> {
        // Declared before the borrow so that it is dropped after it (INV-3).
        let mut pending: Vec<(SlotRef, StoredKey)> = Vec::new();
        {
            let store = self.store.read(py)?;
            for (at, stored) in store.candidates(probe.hash()) {
                match key::quick_eq(stored, probe) {
                    Quick::Equal => return Ok(Some(at)),
                    Quick::NotEqual => {}
                    Quick::Unknown => pending.push((at, stored.clone_ref(py))),
                }
            }
        }
        for (at, stored) in &pending {
            // Runs Python code: the store is not borrowed here.
            if key::slow_eq(py, stored, probe)? {
                return Ok(Some(*at));
            }
        }
        Ok(None)
    }

    /// `cache_peek`: the fresh value cached for these arguments, or `KeyError`. Counts
    /// nothing and leaves the visited bit alone; an expired entry is absent (and removed).
    pub(super) fn peek_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        with_call_key(py, self.typed, args, kwargs, |key| {
            if let Some(at) = self.slot_of(py, key.view())? {
                let store = self.store.read(py)?;
                match store.peek(at, clock(&store)) {
                    Hit::Fresh(value) => return Ok(value.clone_ref(py)),
                    Hit::Expired => {
                        drop(store);
                        self.remove_if_expired(py, at)?;
                    }
                    // Removed or evicted while `__eq__` ran.
                    Hit::Gone => {}
                }
            }
            Err(PyKeyError::new_err(args.clone().unbind()))
        })
    }

    /// `cache_invalidate`: removes the entry of these arguments; whether a fresh one was
    /// there. The SIEVE hand is repaired as libCacheSim's `Sieve_remove_obj` does.
    pub(super) fn invalidate_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        with_call_key(py, self.typed, args, kwargs, |key| {
            let Some(at) = self.slot_of(py, key.view())? else {
                return Ok(false);
            };
            let (was_fresh, removed) = {
                let mut store = self.store.write(py)?;
                let now_ns = clock(&store);
                let was_fresh = store.is_fresh_at(at, now_ns) == Some(true);
                (was_fresh, store.remove(at))
            };
            // Dropped after the borrow: a key's or value's `__del__` may call this cache.
            let found = removed.is_some();
            drop(removed);
            Ok(found && was_fresh)
        })
    }

    /// `cache_set`: stores `value` as the result for these arguments. A present entry is
    /// updated in place (its position and visited bit kept, its TTL restarted), as a miss
    /// that found the key already stored does. False only when nothing is ever stored
    /// (`ttl=0`).
    pub(super) fn set_call(
        &self,
        py: Python<'_>,
        value: Py<PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        if self.ttl_ns == Some(0) {
            return Ok(false);
        }
        with_call_key(py, self.typed, args, kwargs, |key| {
            self.store_value(py, key.view(), || key.to_stored(py), value, None)?;
            Ok(true)
        })
    }
}
