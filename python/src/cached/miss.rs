//! The memory backend's synchronous miss, split around the call of the wrapped function (the
//! [`call_shell::Backend`] of `CachedFunction`): the quick path writes a [`Pending`] when it
//! decides a miss, [`store`] stores the function's result once it returned.
//!
//! No `Py` is dropped on this path outside pyo3's bookkeeping except with a plain
//! `Py_DECREF` (a deferred drop would keep evicted objects alive: INV-M5); displaced objects
//! are released after the store's borrow ends (INV-3).

use std::mem::{ManuallyDrop, MaybeUninit};

use pyo3::ffi;
use pyo3::prelude::*;

use super::{clock, release_displaced, CachedFunction, MissAt};
use crate::call_shell;
use crate::call_shell::attached;
use crate::errors::guard;
use crate::key::StoredKey;
use crate::prefetch;

/// What a decided miss needs for its insert (three words: it is in the entry's frame, part of
/// each level of a cached recursion).
pub(crate) struct Pending {
    /// The key to store (`None`: nothing is stored, `ttl=0`). `ManuallyDrop`: released only
    /// by [`store`], with a plain `Py_DECREF`; a thread ended mid-call leaks it.
    stored: ManuallyDrop<Option<StoredKey>>,
    hash: u64,
    miss: MissAt,
}

impl Pending {
    /// A decided miss of `stored` (hash `hash`, decided at `miss`).
    pub(super) fn new(stored: Option<StoredKey>, hash: u64, miss: MissAt) -> Self {
        Pending {
            stored: ManuallyDrop::new(stored),
            hash,
            miss,
        }
    }
}

impl call_shell::Backend for CachedFunction {
    type Pending = Pending;

    #[inline(always)]
    unsafe fn begin(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
        pending: &mut MaybeUninit<Pending>,
    ) -> *mut ffi::PyObject {
        // SAFETY: function contract, passed on.
        unsafe { super::vectorcall_fast(callable, args, nargsf, kwnames, pending) }
    }

    #[inline(always)]
    fn wrapped(&self) -> &Py<PyAny> {
        &self.func
    }

    #[inline(always)]
    unsafe fn store(&self, pending: Pending, result: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: function contract, passed on.
        unsafe { store(self, pending, result) }
    }
}

/// Stores `result` (a new reference, or NULL with an exception set) under `pending` and
/// returns it.
///
/// # Safety
/// As [`call_shell::Backend::finish`].
unsafe fn store(
    this: &CachedFunction,
    pending: Pending,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let Pending { stored, hash, miss } = pending;
    let Some(stored) = ManuallyDrop::into_inner(stored) else {
        return result;
    };
    if result.is_null() {
        // SAFETY: attached thread; we own the key's reference.
        unsafe { ffi::Py_DECREF(stored.into_ptr()) };
        return result;
    }
    // SAFETY: the thread is attached (function contract); this is only a token.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `result` is a live object; the store takes a new reference.
    let value = unsafe { Py::<PyAny>::from_borrowed_ptr(py, result) };
    if let Some(mut store) = this.store.try_write(py) {
        if store.version() == miss.version {
            let now_ns = clock(&store);
            let next_block = stored.next_block_hash();
            let displaced = store.insert_new(hash, stored, value, now_ns);
            prefetch::after_miss(&store, next_block, &displaced);
            drop(store);
            // SAFETY: attached thread, the borrow has ended.
            unsafe { release_displaced(displaced) };
            return result;
        }
    }
    // The function changed the store (or it is busy): the full insert, under pyo3's
    // bookkeeping.
    // SAFETY: the thread is attached (function contract).
    unsafe {
        attached(|py| {
            let probe = stored.clone_ref(py);
            let stored_value =
                guard(|| this.store_value(py, probe.view(hash), move || Ok(stored), value, None));
            // SAFETY: we own `result`, a live object.
            call_shell::result_after_store(py, result, stored_value)
        })
    }
}
