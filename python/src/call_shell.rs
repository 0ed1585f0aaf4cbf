//! The shape of every cached call's vectorcall entry, shared by both backends:
//!
//! 1. `begin` (out of line, panics contained): build the key, look up; a hit, an error or a
//!    call that took the slow path returns its answer; a miss records what the insert will
//!    need (and the [`Call`] to make) on a per-thread stack and answers [`call_function`].
//! 2. The entry jumps to the backend's `call_pending`, which makes that call through
//!    [`crate::python_call::vectorcall`] (forced-unwind guard, recursion and stack checks);
//!    the hit path keeps nothing across `begin`, so it saves no registers.
//! 3. `finish` (out of line, panics contained) pops what `begin` recorded, stores the result
//!    and returns it.
//!
//! The entry's own frame holds only what the call needs, so each level of a cached recursion
//! costs little C stack (`begin` and `finish`, with their key buffers, are not on the stack
//! while the wrapped function runs), and no `catch_unwind` frame stands between the wrapped
//! function and CPython.

use std::any::Any;
use std::{ptr, slice};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::key;

use crate::errors::panic_message;

/// The wrapped function and the caller's vector, as `begin` recorded them for the entry.
#[derive(Clone, Copy)]
pub struct Call {
    pub func: *mut ffi::PyObject,
    pub args: *const *mut ffi::PyObject,
    pub nargsf: usize,
    pub kwnames: *mut ffi::PyObject,
}

impl Call {
    /// Calls it (guarded: `python_call.rs`).
    ///
    /// # Safety
    /// As [`crate::python_call::vectorcall`].
    #[inline(always)]
    pub unsafe fn run(self) -> *mut ffi::PyObject {
        // SAFETY: function contract.
        unsafe { crate::python_call::vectorcall(self.func, self.args, self.nargsf, self.kwnames) }
    }
}

/// The marker `begin` returns for "call the wrapped function, then `finish`" (never a real
/// object: the address of a private static).
#[inline(always)]
pub fn call_function() -> *mut ffi::PyObject {
    static MARKER: u8 = 0;
    ptr::addr_of!(MARKER).cast_mut().cast()
}

/// A contained panic as a `RuntimeError`, set with the raw C API (this must work even where
/// pyo3 refuses to attach, during finalization). Returns NULL.
///
/// # Safety
/// The thread is attached.
#[cold]
pub unsafe fn panic_result(payload: Box<dyn Any + Send>) -> *mut ffi::PyObject {
    let message = std::ffi::CString::new(panic_message(&*payload))
        .unwrap_or_else(|_| c"internal error in warp_cache (please report it)".to_owned());
    // SAFETY: attached thread (function contract); a valid C string.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_RuntimeError, message.as_ptr()) };
    ptr::null_mut()
}

/// A `finish` without a matching `begin` (an adapter bug): reported, the result released.
///
/// # Safety
/// The thread is attached; `result` is an owned reference or NULL.
#[cold]
pub unsafe fn unmatched_finish(result: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: function contract.
    unsafe {
        if !result.is_null() {
            ffi::Py_DECREF(result);
        }
        ffi::PyErr_SetString(
            ffi::PyExc_RuntimeError,
            c"internal error in warp_cache: a call finished that never began (please report it)"
                .as_ptr(),
        );
    }
    ptr::null_mut()
}

/// A vectorcall entry that may let a forced unwind through.
pub type Entry = unsafe extern "C-unwind" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    usize,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// `entry` as the value of a vectorcall slot (typed `extern "C"` by pyo3-ffi).
pub fn slot_of(entry: Entry) -> ffi::vectorcallfunc {
    // SAFETY: the two ABIs have the same calling convention; they differ only in whether an
    // unwind may leave the function, which CPython (C code with unwind tables) lets through.
    // Rust never calls through the slot; CPython does.
    unsafe { std::mem::transmute::<Entry, ffi::vectorcallfunc>(entry) }
}

pub(crate) fn into_result_ptr(py: Python<'_>, result: PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    match result {
        Ok(value) => value.into_ptr(),
        Err(err) => {
            err.restore(py);
            ptr::null_mut()
        }
    }
}

/// Runs `body` under pyo3's bookkeeping for a thread that is already attached, exactly as
/// pyo3's own slot trampolines do (so `Py` drops inside release at once), without
/// `Python::attach`'s `PyGILState_Ensure` round trip. The trampoline only forwards its first
/// argument to the callback, so it carries a pointer to the closure.
///
/// # Safety
/// The calling thread is attached to the interpreter.
pub(crate) unsafe fn attached<F>(body: F) -> *mut ffi::PyObject
where
    F: FnOnce(Python<'_>) -> *mut ffi::PyObject,
{
    /// # Safety
    /// `context` is the `Option<F>` passed by `attached`, alive for the call.
    unsafe fn run<F>(py: Python<'_>, context: *mut ffi::PyObject) -> PyResult<*mut ffi::PyObject>
    where
        F: FnOnce(Python<'_>) -> *mut ffi::PyObject,
    {
        // SAFETY: function contract: `context` points at `attached`'s live `Option<F>`.
        let body = unsafe { &mut *context.cast::<Option<F>>() };
        Ok(match body.take() {
            Some(body) => body(py),
            None => ptr::null_mut(),
        })
    }
    let mut body = Some(body);
    // SAFETY: the thread is attached (function contract); the trampoline passes the pointer
    // through untouched to `run::<F>`, which reads it while `body` is alive on this frame.
    unsafe {
        pyo3::impl_::trampoline::noargs(
            ptr::from_mut(&mut body).cast::<ffi::PyObject>(),
            ptr::null_mut(),
            run::<F>,
        )
    }
}

/// Positional arguments, keyword names and keyword values of a vectorcall.
///
/// # Safety
/// Vectorcall protocol: `args` has `PyVectorcall_NARGS(nargsf)` positional arguments then
/// one value per name in `kwnames` (null or a tuple of str), all alive for `'a`.
#[inline(always)]
pub(crate) unsafe fn split_vector_args<'a>(
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> (
    &'a [*mut ffi::PyObject],
    &'a [*mut ffi::PyObject],
    &'a [*mut ffi::PyObject],
) {
    // SAFETY: function contract.
    unsafe {
        let nargs = ffi::PyVectorcall_NARGS(nargsf) as usize;
        let kw_names = if kwnames.is_null() {
            &[][..]
        } else {
            key::tuple_items(kwnames)
        };
        let all = if nargs + kw_names.len() == 0 {
            &[][..]
        } else {
            slice::from_raw_parts(args, nargs + kw_names.len())
        };
        let (positional, kw_values) = all.split_at(nargs);
        (positional, kw_names, kw_values)
    }
}

/// The whole vectorcall entry of a backend: `begin`, then (on a decided miss) `call_pending`.
/// Inlined into each backend's entry, so its frame stays as small as the call needs.
///
/// # Safety
/// As the backends' entries (vectorcall protocol, attached thread); `begin` and
/// `call_pending` follow the protocol described at the top of this file.
#[inline(always)]
pub unsafe fn vectorcall(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
    begin: unsafe fn(
        *mut ffi::PyObject,
        *const *mut ffi::PyObject,
        usize,
        *mut ffi::PyObject,
    ) -> *mut ffi::PyObject,
    call_pending: unsafe fn() -> *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: function contract, passed on.
    let first = unsafe { begin(callable, args, nargsf, kwnames) };
    if first != call_function() {
        return first;
    }
    // SAFETY: attached thread; `begin` pushed this call's pending miss.
    unsafe { call_pending() }
}

/// Runs `body` with panics contained (a panic becomes a `RuntimeError` and NULL).
///
/// # Safety
/// The thread is attached.
#[inline(always)]
pub unsafe fn contained(body: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    // SAFETY: attached thread (function contract).
    outcome.unwrap_or_else(|payload| unsafe { panic_result(payload) })
}

/// Makes the innermost pending call (`top`, as the backend's stack holds it) and hands its
/// result to `finish`.
///
/// # Safety
/// The thread is attached; `top` is this thread's innermost pending miss, recorded by the
/// `begin` of the call being made, and `finish` pops it.
#[inline(always)]
pub unsafe fn run_pending(
    top: Option<Call>,
    finish: unsafe fn(*mut ffi::PyObject) -> *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let Some(call) = top else {
        // SAFETY: attached thread (function contract).
        return unsafe { unmatched_finish(ptr::null_mut()) };
    };
    // SAFETY: the caller's vector, alive for the call (recorded by `begin`).
    let result = unsafe { call.run() };
    // SAFETY: function contract.
    unsafe { finish(result) }
}
