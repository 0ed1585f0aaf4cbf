//! The shared backend's vectorcall entry, in the shape of `call_shell.rs`.

// A part of shared/mod.rs, split out for size: it uses the module's items and imports.
use super::*;

/// The vectorcall entry of every `SharedCachedFunction`, in the shape of
/// `call_shell.rs`: [`begin_call`] serves hits of fast-path keys without pyo3's
/// bookkeeping and everything but a synchronous miss through it ([`attached`]); such a
/// miss calls the wrapped function from the small frame of [`call_pending`], and
/// [`finish_call`] stores the result. No panic escapes (INV-M4).
///
/// # Safety
/// Called by CPython per the vectorcall protocol: `callable` is a live
/// `SharedCachedFunction`, `args` holds `PyVectorcall_NARGS(nargsf)` positional arguments
/// followed by one value per name in `kwnames` (null or a tuple of str), all alive for the
/// call; the thread is attached.
pub(super) unsafe extern "C-unwind" fn vectorcall_entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: function contract, passed on.
    unsafe { call_shell::vectorcall(callable, args, nargsf, kwnames, begin_call, call_pending) }
}

/// The `SharedCachedFunction` inside `callable`.
///
/// # Safety
/// `callable` is a live `SharedCachedFunction`; the result is used while it is alive.
#[inline(always)]
unsafe fn function_of<'a>(callable: *mut ffi::PyObject) -> &'a SharedCachedFunction {
    // SAFETY: attached thread (callers' contract); only a token.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: function contract.
    let slf = unsafe { Borrowed::from_ptr(py, callable).cast_unchecked::<SharedCachedFunction>() };
    // SAFETY: the object outlives the call it is used for (function contract).
    unsafe { &*ptr::from_ref(slf.get()) }
}

thread_local! {
    /// This thread's synchronous misses whose wrapped function is running, innermost
    /// last.
    static PENDING: std::cell::RefCell<Vec<PendingMiss>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A decided synchronous miss: the function (alive: the caller holds it for the whole
/// call), the call to make, the buffers holding the encoded key, and its hash.
struct PendingMiss {
    this: *const SharedCachedFunction,
    call: call_shell::Call,
    scratch: Scratch,
    hash: u64,
}

/// The first half of a call, out of line so that its frame (and the quick path's
/// stack buffers) is not on the stack while the wrapped function runs.
///
/// # Safety
/// As [`vectorcall_entry`].
#[inline(never)]
unsafe fn begin_call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: function contract, passed on.
    unsafe { call_shell::contained(|| vectorcall_body(callable, args, nargsf, kwnames)) }
}

/// # Safety
/// As [`vectorcall_entry`].
#[inline(always)]
unsafe fn vectorcall_body(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: `callable` is a live SharedCachedFunction (function contract).
    let this = unsafe { function_of(callable) };
    // SAFETY: vectorcall protocol (function contract).
    let (positional, kw_names, kw_values) = unsafe { split_vector_args(args, nargsf, kwnames) };
    let call = CallArgs {
        positional,
        kw_names,
        kw_values,
    };
    // SAFETY: live arguments (vectorcall protocol), attached thread.
    let pending = match unsafe { this.quick(call) } {
        Ok(result) => return result,
        Err(pending) => pending,
    };
    // SAFETY: the thread is attached (vectorcall protocol).
    unsafe {
        attached(|py| {
            let invocation = Invocation::Vector {
                args,
                nargsf,
                kwnames,
            };
            match guard(|| this.decide(py, callable, call, &invocation, pending)) {
                Ok(Decided::Done(value)) => value.into_ptr(),
                Ok(Decided::CallFunction { scratch, hash }) => {
                    let pending = PendingMiss {
                        this,
                        call: call_shell::Call {
                            func: this.func.as_ptr(),
                            args,
                            nargsf,
                            kwnames,
                        },
                        scratch,
                        hash,
                    };
                    PENDING.with(|stack| stack.borrow_mut().push(pending));
                    call_shell::call_function()
                }
                Err(err) => {
                    err.restore(py);
                    ptr::null_mut()
                }
            }
        })
    }
}

/// Calls the function of the innermost pending miss, then [`finish_call`]s it: the frame
/// on the stack while the wrapped function runs (small: a cached recursion's C stack per
/// level).
///
/// # Safety
/// The thread is attached; the innermost pending miss of this thread was pushed by the
/// `begin_call` of the call being made.
#[inline(never)]
unsafe fn call_pending() -> *mut ffi::PyObject {
    let top = PENDING.with(|stack| stack.borrow().last().map(|top| top.call));
    // SAFETY: function contract; `finish_call` pops `top`.
    unsafe { call_shell::run_pending(top, finish_call) }
}

/// Stores `result` (a new reference, or NULL with an exception set) under the innermost
/// pending miss and returns it.
///
/// # Safety
/// The thread is attached; the innermost pending miss of this thread is the call that
/// produced `result`.
#[inline(never)]
unsafe fn finish_call(result: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let Some(PendingMiss {
        this,
        mut scratch,
        hash,
        ..
    }) = PENDING.with(|stack| stack.borrow_mut().pop())
    else {
        // SAFETY: attached thread; we own `result`.
        return unsafe { call_shell::unmatched_finish(result) };
    };
    // SAFETY: the caller holds the function for the whole call (recorded by `begin_call`).
    let this = unsafe { &*this };
    if result.is_null() {
        put_scratch(scratch);
        return result;
    }
    // SAFETY: the thread is attached (function contract).
    unsafe {
        attached(|py| {
            // SAFETY: `result` is a live object we own.
            let value = Bound::from_borrowed_ptr(py, result);
            let stored =
                guard(|| this.store_value(py, &scratch.key, hash, &value, &mut scratch.value));
            put_scratch(scratch);
            match stored {
                Ok(()) => result,
                Err(err) => {
                    ffi::Py_DECREF(result);
                    err.restore(py);
                    ptr::null_mut()
                }
            }
        })
    }
}

/// Gives `SharedCachedFunction` a vectorcall slot (as `cached::install_vectorcall` does
/// for the memory backend's type). `WARP_CACHE_NO_VECTORCALL=1` keeps plain `tp_call`.
pub fn install_vectorcall(py: Python<'_>) -> PyResult<bool> {
    let probe_store = ShmStore::over_memory(ShmConfig {
        dir: None,
        name: "probe".to_owned(),
        capacity: 1,
        key_bytes_max: 8,
        value_bytes_max: 8,
        ttl_ns: None,
    })
    .map_err(to_py)?;
    let probe = Py::new(
        py,
        SharedCachedFunction::new(py.None(), probe_store, String::new(), None),
    )?;
    let contents_offset = CONTENTS_OFFSET.measure(&probe)?;
    function_type::install_vectorcall::<SharedCachedFunction>(
        py,
        contents_offset,
        offset_of!(SharedCachedFunction, vectorcall),
    )
}
