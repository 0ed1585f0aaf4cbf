//! The memory backend's synchronous miss, split around the call of the wrapped function (see
//! `call_shell.rs`): [`push`] records what the insert needs when the quick path decides a
//! miss, [`finish`] stores the function's result once it returned.
//!
//! No `Py` is dropped on this path outside pyo3's bookkeeping except with a plain
//! `Py_DECREF` (a deferred drop would keep evicted objects alive: INV-M6); displaced objects
//! are released after the store's borrow ends (INV-M2).

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;

use super::{clock, release_displaced, CachedFunction, MissAt};
use crate::call_shell;
use crate::call_shell::attached;
use crate::errors::guard;
use crate::key::StoredKey;
use crate::prefetch;

/// What a decided miss needs for its insert.
struct Pending {
    /// The function called (alive: the caller holds it for the whole call).
    this: *const CachedFunction,
    call: call_shell::Call,
    /// The key to store (`None`: nothing is stored, `ttl=0`). `ManuallyDrop`: released only
    /// by [`finish`], with a plain `Py_DECREF`; a thread ended mid-call leaks it.
    stored: ManuallyDrop<Option<StoredKey>>,
    hash: u64,
    miss: MissAt,
}

thread_local! {
    /// This thread's misses whose wrapped function is running, innermost last (calls nest,
    /// so `finish` always pops its own `push`).
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Records a decided miss of `stored` (hash `hash`, decided at `miss`) of `this`, whose
/// function the entry is to call with `call`.
pub(super) fn push(
    this: &CachedFunction,
    call: call_shell::Call,
    stored: Option<StoredKey>,
    hash: u64,
    miss: MissAt,
) {
    PENDING.with(|pending| {
        pending.borrow_mut().push(Pending {
            this,
            call,
            stored: ManuallyDrop::new(stored),
            hash,
            miss,
        })
    });
}

/// Calls the function of the innermost pending miss, then [`finish`]es it. The frame that is
/// on the stack while the wrapped function runs: small (a cached recursion's C stack per
/// level), and the only one between the function and CPython besides the entry.
///
/// # Safety
/// The thread is attached; the innermost pending miss of this thread was pushed by the
/// `begin` of the call being made.
#[inline(never)]
pub(super) unsafe fn call_pending() -> *mut ffi::PyObject {
    let top = PENDING.with(|pending| pending.borrow().last().map(|top| top.call));
    // SAFETY: function contract; `finish` pops `top`.
    unsafe { call_shell::run_pending(top, finish) }
}

/// Stores `result` (a new reference, or NULL with an exception set) under the innermost
/// pending miss and returns it.
///
/// # Safety
/// The thread is attached; the innermost pending miss of this thread is the call that
/// produced `result`.
#[inline(never)]
unsafe fn finish(result: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let Some(pending) = PENDING.with(|pending| pending.borrow_mut().pop()) else {
        // SAFETY: attached thread; we own `result`.
        return unsafe { call_shell::unmatched_finish(result) };
    };
    // SAFETY: the caller holds the function for the whole call (recorded by `begin`).
    let this = unsafe { &*pending.this };
    // SAFETY: function contract, passed on.
    unsafe { call_shell::contained(|| store(this, pending, result)) }
}

/// # Safety
/// As [`finish`].
unsafe fn store(
    this: &CachedFunction,
    pending: Pending,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let Pending {
        stored, hash, miss, ..
    } = pending;
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
            match stored_value {
                Ok(()) => result,
                Err(err) => {
                    // SAFETY: we own `result`.
                    ffi::Py_DECREF(result);
                    err.restore(py);
                    ptr::null_mut()
                }
            }
        })
    }
}
