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

/// What a decided miss needs for its insert (small: it is in the entry's frame, part of each
/// level of a cached recursion).
pub(crate) struct Pending {
    /// The key to store (`None`: nothing is stored, `ttl=0`). `ManuallyDrop`: released only
    /// by [`store`], with a plain `Py_DECREF`; a thread ended mid-call leaks it.
    stored: ManuallyDrop<Option<StoredKey>>,
    hash: u64,
    /// The store version of the miss ([`MissAt`]), with [`LED`] set when this call leads the
    /// single flight of `hash` ([`store`] ends it). One word, not two: this struct is part of
    /// every level of a cached recursion, and a word more per level cost about 6% of the
    /// depth (below `lru_cache`'s).
    version_led: u64,
}

/// The bit of [`Pending::version_led`] that says "leads the flight". Store versions count
/// structural changes from 0 and never reach it.
const LED: u64 = 1 << 63;

impl Pending {
    /// A decided miss of `stored` (hash `hash`, decided at `miss`; `led`: leading its flight).
    pub(super) fn new(stored: Option<StoredKey>, hash: u64, miss: MissAt, led: bool) -> Self {
        Pending {
            stored: ManuallyDrop::new(stored),
            hash,
            version_led: (miss.version & !LED) | if led { LED } else { 0 },
        }
    }

    fn led(&self) -> bool {
        self.version_led & LED != 0
    }

    fn miss(&self) -> MissAt {
        MissAt {
            version: self.version_led & !LED,
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
/// returns it; then ends the flight the call led, so its waiters find the value.
///
/// # Safety
/// As [`call_shell::Backend::finish`].
unsafe fn store(
    this: &CachedFunction,
    pending: Pending,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let (led, hash) = (pending.led(), pending.hash);
    // SAFETY: function contract, passed on.
    let result = unsafe { store_result(this, pending, result) };
    this.leave_flight(led, hash);
    result
}

/// [`store`] without the flight.
///
/// # Safety
/// As [`call_shell::Backend::finish`].
unsafe fn store_result(
    this: &CachedFunction,
    pending: Pending,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let miss = pending.miss();
    let Pending { stored, hash, .. } = pending;
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
