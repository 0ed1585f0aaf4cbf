//! The shape of every cached call's vectorcall entry, shared by both backends (a
//! [`Backend`]):
//!
//! 1. `begin` (out of line, panics contained): build the key, look up; a hit, an error or a
//!    call that took the slow path returns its answer; a decided miss writes what the insert
//!    will need into the entry's frame and answers [`call_function`].
//! 2. The entry then makes that call through [`crate::python_call::vectorcall`]
//!    (forced-unwind guard, recursion and stack checks).
//! 3. `finish` (out of line, panics contained) takes what `begin` wrote, stores the result and
//!    returns it.
//!
//! The entry's own frame holds only the pending miss, so each level of a cached recursion
//! costs little C stack (`begin` and `finish`, with their key buffers, are not on the stack
//! while the wrapped function runs), and no `catch_unwind` frame stands between the wrapped
//! function and CPython. The pending miss lives in the frame rather than in a per-thread
//! stack: nothing to push, pop or match up, and a call can only finish what it began.

use std::any::Any;
use std::mem::MaybeUninit;
use std::{ptr, slice};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::key;

use crate::errors::panic_message;

/// The wrapped function and the caller's vector.
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

/// The Rust contents of `callable`, a live `T` (the entries' way from the raw object to their
/// function, without pyo3's checks: only `T`'s type has the entry).
///
/// # Safety
/// Attached thread; `callable` is a live `T`; the result is used while it is alive.
#[inline(always)]
pub(crate) unsafe fn contents_of<'a, T>(callable: *mut ffi::PyObject) -> &'a T
where
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    // SAFETY: attached thread (function contract); only a token.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: function contract.
    let object = unsafe { pyo3::Borrowed::from_ptr(py, callable).cast_unchecked::<T>() };
    // SAFETY: the object outlives the use of the result (function contract).
    unsafe { &*ptr::from_ref(object.get()) }
}

/// What a backend's entry does around the shared shape (see the top of this file).
pub(crate) trait Backend:
    pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync
{
    /// What a decided miss needs for its insert, kept in the entry's frame during the call
    /// (small: it is part of each level of a cached recursion).
    type Pending;

    /// Builds the key and looks up. Answers the call (a new reference, or NULL with an
    /// exception set), or writes `pending` and answers [`call_function`].
    ///
    /// # Safety
    /// Vectorcall protocol (`callable` is a live object of the backend's type, the arguments
    /// are alive for the call), attached thread.
    unsafe fn begin(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
        pending: &mut MaybeUninit<Self::Pending>,
    ) -> *mut ffi::PyObject;

    /// The wrapped function.
    fn wrapped(&self) -> &Py<PyAny>;

    /// Stores `result` (a new reference, or NULL with an exception set) under `pending` and
    /// returns it.
    ///
    /// # Safety
    /// Attached thread; `pending` was written by the `begin` of the call of `self` that
    /// produced `result`.
    unsafe fn store(
        &self,
        pending: Self::Pending,
        result: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;

    /// The wrapped function of `callable` (borrowed).
    ///
    /// # Safety
    /// `callable` is a live object of the backend's type.
    #[inline(always)]
    unsafe fn function(callable: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: function contract.
        unsafe { contents_of::<Self>(callable) }.wrapped().as_ptr()
    }

    /// [`Backend::store`] on the object `callable`.
    ///
    /// # Safety
    /// As [`Backend::store`], with `callable` still alive.
    #[inline(always)]
    unsafe fn finish(
        callable: *mut ffi::PyObject,
        pending: Self::Pending,
        result: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: `callable` is alive (function contract).
        let this = unsafe { contents_of::<Self>(callable) };
        // SAFETY: function contract, passed on.
        unsafe { this.store(pending, result) }
    }
}

/// The whole vectorcall entry of backend `B`. Inlined into each backend's entry, so its frame
/// holds only the pending miss and the caller's arguments.
///
/// # Safety
/// As [`Backend::begin`].
#[inline(always)]
pub(crate) unsafe fn vectorcall<B: Backend>(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let mut pending = MaybeUninit::<B::Pending>::uninit();
    // SAFETY: function contract, passed on.
    let first = unsafe { begin::<B>(callable, args, nargsf, kwnames, &mut pending) };
    if first != call_function() {
        return first;
    }
    let call = Call {
        // SAFETY: `callable` is live (function contract).
        func: unsafe { B::function(callable) },
        args,
        nargsf,
        kwnames,
    };
    // SAFETY: the caller's vector, alive for the call; attached thread.
    let result = unsafe { call.run() };
    // SAFETY: attached thread; `begin` answered `call_function`, which it does only after
    // writing `pending`; it is read once, there (by reference: one copy of it in this frame).
    unsafe { finish::<B>(callable, &mut pending, result) }
}

/// `B::begin`, out of line so that its frame is not on the stack while the wrapped function
/// runs, with panics contained.
///
/// # Safety
/// As [`Backend::begin`].
#[inline(never)]
unsafe fn begin<B: Backend>(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
    pending: &mut MaybeUninit<B::Pending>,
) -> *mut ffi::PyObject {
    // SAFETY: function contract, passed on.
    unsafe { contained(|| B::begin(callable, args, nargsf, kwnames, pending)) }
}

/// `B::finish`, out of line (the entry's frame stays small), with panics contained.
///
/// # Safety
/// As [`Backend::finish`], with `pending` written by `begin` and not read since.
#[inline(never)]
unsafe fn finish<B: Backend>(
    callable: *mut ffi::PyObject,
    pending: &mut MaybeUninit<B::Pending>,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: written and not read since (function contract); never read again.
    let pending = unsafe { pending.assume_init_read() };
    // SAFETY: function contract, passed on.
    unsafe { contained(|| B::finish(callable, pending, result)) }
}

/// `result` once its store is done: itself, or if the store raised (an exception the caller
/// must see: from a key's `__eq__`, from pickling, or a warning turned into an error), NULL
/// with that exception set and `result` released.
///
/// # Safety
/// Attached thread; `result` is a live object whose reference the caller owns (and gives up).
pub(crate) unsafe fn result_after_store(
    py: Python<'_>,
    result: *mut ffi::PyObject,
    stored: PyResult<()>,
) -> *mut ffi::PyObject {
    match stored {
        Ok(()) => result,
        Err(err) => {
            // SAFETY: function contract: we own `result`.
            unsafe { ffi::Py_DECREF(result) };
            err.restore(py);
            ptr::null_mut()
        }
    }
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
