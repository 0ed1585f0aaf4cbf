//! The shared backend's vectorcall entry, in the shape of `call_shell.rs`.

// A part of shared/mod.rs, split out for size: it uses the module's items and imports.
use super::*;
use std::mem::MaybeUninit;

/// The vectorcall entry of every `SharedCachedFunction`, in the shape of
/// `call_shell.rs`: its `begin` ([`vectorcall_body`]) serves hits of fast-path keys without
/// pyo3's bookkeeping and everything but a synchronous miss through it ([`attached`]); such
/// a miss calls the wrapped function from this entry's small frame, and [`finish_call`]
/// stores the result. No panic escapes (INV-M3).
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
    unsafe { call_shell::vectorcall::<SharedCachedFunction>(callable, args, nargsf, kwnames) }
}

/// A decided synchronous miss: the buffers holding the encoded key, and its hash. Boxed in
/// the entry's frame (which is part of each level of a cached recursion), since a shared miss
/// costs far more than the allocation.
pub(crate) struct PendingMiss {
    scratch: Scratch,
    hash: u64,
    flight: Flight,
}

impl call_shell::Backend for SharedCachedFunction {
    type Pending = Box<PendingMiss>;

    #[inline(always)]
    unsafe fn begin(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
        pending: &mut MaybeUninit<Box<PendingMiss>>,
    ) -> *mut ffi::PyObject {
        // SAFETY: function contract, passed on.
        unsafe { vectorcall_body(callable, args, nargsf, kwnames, pending) }
    }

    #[inline(always)]
    fn wrapped(&self) -> &Py<PyAny> {
        &self.func
    }

    #[inline(always)]
    unsafe fn store(
        &self,
        pending: Box<PendingMiss>,
        result: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: function contract, passed on.
        unsafe { finish_call(self, *pending, result) }
    }
}

/// The shared backend's `begin`: a decided synchronous miss writes `pending`.
///
/// # Safety
/// As [`vectorcall_entry`].
#[inline(always)]
unsafe fn vectorcall_body(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
    out: &mut MaybeUninit<Box<PendingMiss>>,
) -> *mut ffi::PyObject {
    // SAFETY: `callable` is a live SharedCachedFunction (function contract).
    let this = unsafe { call_shell::contents_of::<SharedCachedFunction>(callable) };
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
                Ok(Decided::CallFunction {
                    scratch,
                    hash,
                    flight,
                }) => {
                    out.write(Box::new(PendingMiss {
                        scratch,
                        hash,
                        flight,
                    }));
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

/// Stores `result` (a new reference, or NULL with an exception set) under `pending` and
/// returns it; then ends its flight.
///
/// # Safety
/// As [`call_shell::Backend::finish`].
unsafe fn finish_call(
    this: &SharedCachedFunction,
    pending: PendingMiss,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let PendingMiss {
        mut scratch,
        hash,
        flight,
    } = pending;
    if result.is_null() {
        flight.end(this);
        put_scratch(scratch);
        return result;
    }
    // SAFETY: the thread is attached (function contract).
    unsafe {
        attached(|py| {
            // SAFETY: `result` is a live object we own.
            let value = Bound::from_borrowed_ptr(py, result);
            let stored = guard(|| {
                this.store_value(py, &scratch.key, hash, &value, &mut scratch.value)
                    .map(drop)
            });
            // After the store: the waiters find the value.
            flight.end(this);
            put_scratch(scratch);
            // SAFETY: we own `result`, a live object.
            call_shell::result_after_store(py, result, stored)
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
        max_bytes: None,
    })
    .map_err(to_py)?;
    let probe = Py::new(
        py,
        SharedCachedFunction::new(py.None(), probe_store, String::new(), false, None, None),
    )?;
    let contents_offset = CONTENTS_OFFSET.measure(&probe)?;
    function_type::install_vectorcall::<SharedCachedFunction>(
        py,
        contents_offset,
        offset_of!(SharedCachedFunction, vectorcall),
    )
}
