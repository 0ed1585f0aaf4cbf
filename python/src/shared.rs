//! `SharedCachedFunction`: what `@cache(backend="shared")` returns. The cache lives in two
//! memory-mapped files managed by `warp_cache_core::shm::ShmStore`; this file only turns
//! calls into key bytes and bytes back into objects (`convert.rs`).
//!
//! A hit is one Rust call without Python code: encode the key into a per-thread reusable
//! buffer (exact `None/bool/int/float/str/bytes` arguments; anything else is pickled on the
//! slow path), one fixed-seed hash, one lock-free seqlock read that copies the value bytes
//! out once, one decode. It runs before pyo3's attach bookkeeping (it creates no `Py`), like
//! the memory backend's quick path; everything else (pickling, misses, async) runs through
//! it ([`crate::cached::attached`]).
//!
//! Rules of the shared backend (issue 3; tests in `tests/python/test_shared_*.py`):
//! * a hit returns exactly the type the miss returned (`convert.rs`, INV-4);
//! * a result that cannot be pickled, or whose key or value is larger than `max_key_size` /
//!   `max_value_size`, is returned and not cached (oversize ones are counted in
//!   `cache_info().oversize_skips`); failures of the cache itself never replace the result
//!   (an insert that fails warns once per function);
//! * stored bytes that do not decode (damaged, or a pickle whose class is gone) are a miss;
//! * `ttl` is this process's own (`ShmConfig::ttl_ns`); `ttl=0` never serves nor stores.
//!
//! The Python layer (`_shared.py`) derives the cache name that identifies the function across
//! processes; the store sanitizes it into file names.

pub use imp::{after_fork_in_child, make_shared, set_failpoint, FAILPOINTS};
#[cfg(unix)]
pub use imp::{install_vectorcall, SharedCachedFunction};

#[cfg(unix)]
mod imp {
    use std::mem::offset_of;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::ptr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
    use pyo3::ffi;
    use pyo3::gc::PyVisit;
    use pyo3::prelude::*;
    use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyTuple};
    use pyo3::PyTraverseError;
    use warp_cache_core::clock::monotonic_now_ns;
    use warp_cache_core::codec;
    use warp_cache_core::shm::arena::SmallValue;
    use warp_cache_core::shm::{failpoint, key_hash, ShmConfig, ShmStore};
    use warp_cache_core::Error;

    use crate::awaitable::Ready;
    use crate::cached::{attached, split_vector_args, ttl_ns_of};
    use crate::call_shell;
    use crate::convert::{self, DecodeFailure, Encoded};
    use crate::errors::{guard, to_py};
    use crate::function_type::{self, ContentsOffset, Invocation};
    use crate::info::CacheInfo;
    use crate::key;

    /// Whether the core's test-only failpoints are compiled in (cargo feature `failpoints`).
    pub const FAILPOINTS: bool = failpoint::ENABLED;

    /// Buffers larger than this are not kept for the next call.
    const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

    /// Offset of the Rust struct inside the Python object, measured once at module init.
    static CONTENTS_OFFSET: ContentsOffset = ContentsOffset::new();

    /// Buffers for the encoded key and the value bytes, reused across calls. A call takes
    /// them and gives them back when done; a call made meanwhile (reentrant, from pickling
    /// code or the wrapped function, or from another thread while this one runs Python code)
    /// gets fresh ones (`owned == false`), dropped when it is done.
    #[derive(Default)]
    struct Scratch {
        key: Vec<u8>,
        value: Vec<u8>,
        owned: bool,
    }

    #[cfg(not(Py_GIL_DISABLED))]
    mod scratch_slot {
        use std::cell::{Cell, UnsafeCell};

        use warp_cache_core::shm::store::StripeHint;

        use super::Scratch;

        /// One slot for the whole interpreter: the GIL serializes every caller.
        pub struct Slot {
            busy: Cell<bool>,
            buffers: UnsafeCell<(Vec<u8>, Vec<u8>)>,
            /// The counter-stripe hint of whichever thread holds the GIL: threads run one
            /// at a time, so one hint per process spreads processes over stripes as one per
            /// thread would, without a thread-local lookup per hit.
            hint: Cell<StripeHint>,
        }

        // SAFETY: only `take`/`put`/`stripe`/`reset_after_fork` touch the slot, and they are
        // only called by threads that hold the GIL (every caller is a call from Python on a
        // GIL-enabled interpreter, and none of them releases it), so no two threads ever
        // access it at once.
        unsafe impl Sync for Slot {}

        pub static SLOT: Slot = Slot {
            busy: Cell::new(false),
            buffers: UnsafeCell::new((Vec::new(), Vec::new())),
            hint: Cell::new(StripeHint::new()),
        };

        impl Slot {
            #[inline(always)]
            pub fn take(&self) -> Scratch {
                if self.busy.replace(true) {
                    return Scratch::default();
                }
                // SAFETY: GIL held and `busy` was false: nobody else holds the buffers.
                let (key, value) = unsafe { std::mem::take(&mut *self.buffers.get()) };
                Scratch {
                    key,
                    value,
                    owned: true,
                }
            }

            #[inline(always)]
            pub fn put(&self, scratch: Scratch) {
                if scratch.owned {
                    // SAFETY: GIL held; we own the slot (`busy` is ours until reset below).
                    let (key, value) = unsafe {
                        std::mem::replace(&mut *self.buffers.get(), (scratch.key, scratch.value))
                    };
                    // What `take` left: empty, normally. Checked inline, not by an
                    // out-of-line drop call on every hit.
                    if key.capacity() != 0 || value.capacity() != 0 {
                        drop((key, value));
                    } else {
                        std::mem::forget((key, value));
                    }
                    self.busy.set(false);
                }
            }

            /// Runs `f` on the buffers in place (the hit path: nothing moved in or out), or
            /// on fresh ones if they are in use. When `f` fails, the buffers go with the
            /// error, as a [`Scratch`] for the full path (owned, and the slot kept busy until
            /// [`Slot::put`], if they were the slot's).
            #[inline(always)]
            pub fn with_buffers<T, E>(
                &self,
                f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> Result<T, E>,
            ) -> Result<T, (E, Scratch)> {
                if self.busy.replace(true) {
                    let (mut key, mut value) = (Vec::new(), Vec::new());
                    return f(&mut key, &mut value).map_err(|e| {
                        (
                            e,
                            Scratch {
                                key,
                                value,
                                owned: false,
                            },
                        )
                    });
                }
                // SAFETY: GIL held and `busy` was false: nobody else holds the buffers until
                // `busy` is reset (below on success, by `put` after a failure). A reentrant
                // call made while `f` runs (from a finalizer during an allocation) sees `busy`
                // and uses fresh buffers.
                let (key, value) = unsafe { &mut *self.buffers.get() };
                match f(key, value) {
                    Ok(result) => {
                        super::trim(key);
                        super::trim(value);
                        self.busy.set(false);
                        Ok(result)
                    }
                    Err(e) => Err((
                        e,
                        Scratch {
                            key: std::mem::take(key),
                            value: std::mem::take(value),
                            owned: true,
                        },
                    )),
                }
            }

            /// The stripe hint for one counted lookup (`None`: the store's own per-thread
            /// hint).
            #[inline(always)]
            pub fn stripe(&self) -> Option<u32> {
                let mut hint = self.hint.get();
                let stripe = hint.stripe();
                self.hint.set(hint);
                Some(stripe)
            }

            /// In a child right after `fork`: the thread that held the slot (if any) does
            /// not exist here, so the slot is free; the stripe hint is sampled afresh (the
            /// child runs on a CPU of its own). Called with the GIL held.
            pub fn reset_after_fork(&self) {
                self.busy.set(false);
                self.hint.set(StripeHint::new());
            }
        }
    }

    #[cfg(Py_GIL_DISABLED)]
    mod scratch_slot {
        use std::cell::Cell;

        use super::Scratch;

        thread_local! {
            static BUFFERS: Cell<(Vec<u8>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
        }

        /// Free-threaded: one slot per thread.
        pub struct Slot;

        pub static SLOT: Slot = Slot;

        impl Slot {
            #[inline(always)]
            pub fn take(&self) -> Scratch {
                match BUFFERS.try_with(Cell::take) {
                    Ok((key, value)) => Scratch {
                        key,
                        value,
                        owned: true,
                    },
                    Err(_) => Scratch::default(),
                }
            }

            #[inline(always)]
            pub fn put(&self, scratch: Scratch) {
                if scratch.owned {
                    let _ = BUFFERS.try_with(|cell| cell.set((scratch.key, scratch.value)));
                }
            }

            /// Runs `f` on this thread's buffers (taken out and put back), as the GIL
            /// build's `Slot::with_buffers`.
            #[inline(always)]
            pub fn with_buffers<T, E>(
                &self,
                f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> Result<T, E>,
            ) -> Result<T, (E, Scratch)> {
                let mut scratch = self.take();
                match f(&mut scratch.key, &mut scratch.value) {
                    Ok(result) => {
                        super::put_scratch(scratch);
                        Ok(result)
                    }
                    Err(e) => Err((e, scratch)),
                }
            }

            /// The store's own per-thread hint.
            #[inline(always)]
            pub fn stripe(&self) -> Option<u32> {
                None
            }

            /// Per-thread slots need nothing after `fork`.
            pub fn reset_after_fork(&self) {}
        }
    }

    /// Takes the reusable buffers (or fresh ones if they are in use). Attached thread only.
    #[inline(always)]
    fn take_scratch() -> Scratch {
        scratch_slot::SLOT.take()
    }

    /// Drops a buffer too large to keep for the next call.
    #[inline(always)]
    fn trim(buffer: &mut Vec<u8>) {
        if buffer.capacity() > SCRATCH_KEEP_BYTES {
            *buffer = Vec::new();
        }
    }

    /// Gives the buffers back (very large ones are not kept). Attached thread only.
    #[inline(always)]
    fn put_scratch(mut scratch: Scratch) {
        trim(&mut scratch.key);
        trim(&mut scratch.value);
        scratch_slot::SLOT.put(scratch);
    }

    /// What the quick path found out before handing over to the full path.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Looked {
        /// Key not encoded yet (it needs pickle) or not looked up.
        Nothing,
        /// Key encoded into `scratch.key`, hashed, looked up and missed (miss counted).
        Miss,
        /// Hit counted; the value bytes are in `scratch.value`.
        Hit,
    }

    struct Pending {
        scratch: Scratch,
        hash: u64,
        looked: Looked,
    }

    /// What the full path decided.
    enum Decided {
        /// The call's answer (a hit, or the awaitable of an async miss).
        Done(Py<PyAny>),
        /// A synchronous miss: call the function, then store under `scratch.key`.
        CallFunction { scratch: Scratch, hash: u64 },
    }

    struct AsyncState {
        /// `warp_cache._async.async_miss`: the single-flight miss coroutine.
        helper: Py<PyAny>,
        /// In-flight misses: `(event loop, key bytes) -> future`.
        inflight: Py<PyDict>,
    }

    /// The arguments of one call, as borrowed object pointers.
    #[derive(Clone, Copy)]
    struct CallArgs<'a> {
        positional: &'a [*mut ffi::PyObject],
        kw_names: &'a [*mut ffi::PyObject],
        kw_values: &'a [*mut ffi::PyObject],
    }

    /// A function cached in shared memory (`backend="shared"`).
    #[pyclass(
        frozen,
        dict,
        weakref,
        module = "warp_cache",
        name = "SharedCachedFunction"
    )]
    pub struct SharedCachedFunction {
        /// This instance's vectorcall entry; CPython reads it at `tp_vectorcall_offset`.
        vectorcall: ffi::vectorcallfunc,
        func: Py<PyAny>,
        store: ShmStore,
        /// The name the files were derived from (module, qualname, fingerprint).
        name: String,
        async_state: Option<AsyncState>,
        /// Set once an insert failed and a warning was issued.
        warned: AtomicBool,
    }

    impl SharedCachedFunction {
        fn new(
            func: Py<PyAny>,
            store: ShmStore,
            name: String,
            async_state: Option<AsyncState>,
        ) -> Self {
            SharedCachedFunction {
                vectorcall: call_shell::slot_of(vectorcall_entry),
                func,
                store,
                name,
                async_state,
                warned: AtomicBool::new(false),
            }
        }

        #[inline(always)]
        fn read_clock(&self) -> u64 {
            // Without a ttl freshness ignores the clock (INV-5): skip reading it on hits.
            if self.store.ttl_ns().is_some() {
                monotonic_now_ns()
            } else {
                0
            }
        }

        /// The hit path: no Python code, no `Py` created or dropped. `Err` hands the call
        /// to the full path with what was learnt (a counted miss or hit is never repeated).
        ///
        /// # Safety
        /// Every pointer in `call` is live; the thread is attached.
        #[inline(always)]
        unsafe fn quick(&self, call: CallArgs<'_>) -> Result<*mut ffi::PyObject, Pending> {
            let nothing = |scratch| Pending {
                scratch,
                hash: 0,
                looked: Looked::Nothing,
            };
            let order = if call.kw_values.is_empty() {
                Vec::new()
            } else {
                // SAFETY: live names (caller contract); on failure the full path reports it.
                match unsafe { key::keyword_order(call.kw_names) } {
                    Ok(order) => order,
                    Err(()) => {
                        // SAFETY: attached thread; the full path recomputes and reports it.
                        unsafe { ffi::PyErr_Clear() };
                        return Err(nothing(take_scratch()));
                    }
                }
            };
            // The buffers stay in their slot on a hit; anything else hands them (with the
            // encoded key, its hash and what the lookup found) to the full path.
            let outcome = scratch_slot::SLOT.with_buffers(|key, out| {
                // One exact int argument (the commonest call): its key is a fixed array on
                // the stack, hashed and compared without a trip through the key buffer; it
                // is copied there only for the full path.
                // SAFETY: live arguments, attached thread (caller contract).
                let int_key = unsafe { convert::single_int_key(call.positional, call.kw_values) };
                if let Some(int_key) = int_key {
                    // SAFETY: attached thread (caller contract).
                    let found = unsafe { self.quick_lookup(&int_key, out) };
                    if found.is_err() {
                        key.clear();
                        key.extend_from_slice(&int_key);
                    }
                    return found;
                }
                // SAFETY: caller contract.
                let encoded = unsafe {
                    convert::encode_key_fast(
                        call.positional,
                        call.kw_names,
                        call.kw_values,
                        &order,
                        key,
                    )
                };
                if !encoded {
                    return Err((0, Looked::Nothing));
                }
                // SAFETY: attached thread (caller contract).
                unsafe { self.quick_lookup(key, out) }
            });
            outcome.map_err(|((hash, looked), scratch)| Pending {
                scratch,
                hash,
                looked,
            })
        }

        /// The quick path's lookup of an encoded key: the object on a hit of a value that
        /// decodes without Python code, else `Err((hash, what the lookup found))` with the
        /// value bytes (if any) left in `out` for the full path. Counts a hit or a miss
        /// unless the key is too long (`Looked::Nothing`: not looked up).
        ///
        /// # Safety
        /// The thread is attached.
        #[inline(always)]
        unsafe fn quick_lookup(
            &self,
            key: &[u8],
            out: &mut Vec<u8>,
        ) -> Result<*mut ffi::PyObject, (u64, Looked)> {
            if key.len() > self.store.key_bytes_max() as usize {
                return Err((0, Looked::Nothing));
            }
            let hash = key_hash(key);
            let now_ns = self.read_clock();
            // Small values are copied to the stack, larger ones into `out`.
            let mut value = SmallValue::new(out);
            let found = match scratch_slot::SLOT.stripe() {
                Some(stripe) => self
                    .store
                    .get_hashed_on_stripe(key, hash, now_ns, &mut value, stripe),
                None => self.store.get_hashed(key, hash, now_ns, value.spill_mut()),
            };
            let looked = match found {
                Ok(true) => Looked::Hit,
                Ok(false) | Err(_) => Looked::Miss,
            };
            let bytes = value.bytes();
            if looked != Looked::Hit
                || self.async_state.is_some()
                || bytes.first() == Some(&codec::tag::PICKLE)
            {
                value.settle(); // the full path reads the value from `out`
                return Err((hash, looked));
            }
            // Only scalars and flat tuples of scalars here: no Python code runs (but an
            // allocation may run the collector: a reentrant call finds the buffers busy).
            // SAFETY: attached thread (caller contract).
            match unsafe { convert::decode_value_raw(bytes) } {
                // NULL with the error set if an allocation failed.
                Ok(object) => Ok(object),
                Err(()) => {
                    value.settle();
                    Err((hash, looked)) // invalid bytes: the full path makes it a miss
                }
            }
        }

        /// The full path for `tp_call`: [`Self::decide`], then on a miss computes and stores.
        fn call_full(
            &self,
            py: Python<'_>,
            slf: *mut ffi::PyObject,
            call: CallArgs<'_>,
            invocation: Invocation<'_, '_>,
            pending: Pending,
        ) -> PyResult<Py<PyAny>> {
            let (mut scratch, hash) = match self.decide(py, slf, call, &invocation, pending)? {
                Decided::Done(value) => return Ok(value),
                Decided::CallFunction { scratch, hash } => (scratch, hash),
            };
            let result = invocation.call(py, &self.func).and_then(|value| {
                self.store_value(py, &scratch.key, hash, value.bind(py), &mut scratch.value)?;
                Ok(value)
            });
            put_scratch(scratch);
            result
        }

        /// The full path's decision: encodes what the quick path could not, looks up unless
        /// it already did; answers a hit (or the async miss it starts), or hands back the
        /// buffers of a synchronous miss for the call and the store.
        fn decide(
            &self,
            py: Python<'_>,
            slf: *mut ffi::PyObject,
            call: CallArgs<'_>,
            invocation: &Invocation<'_, '_>,
            pending: Pending,
        ) -> PyResult<Decided> {
            let Pending {
                mut scratch,
                mut hash,
                mut looked,
            } = pending;
            let result = (|| {
                if looked == Looked::Nothing {
                    // SAFETY: live arguments (caller contract), attached thread.
                    unsafe {
                        let order =
                            key::keyword_order(call.kw_names).map_err(|()| PyErr::fetch(py))?;
                        convert::encode_key(
                            py,
                            call.positional,
                            call.kw_names,
                            call.kw_values,
                            &order,
                            &mut scratch.key,
                        )?;
                    }
                    // Oversize keys miss (counted) without being hashed.
                    if scratch.key.len() <= self.store.key_bytes_max() as usize {
                        hash = key_hash(&scratch.key);
                    }
                    let now_ns = self.read_clock();
                    looked =
                        match self
                            .store
                            .get_hashed(&scratch.key, hash, now_ns, &mut scratch.value)
                        {
                            Ok(true) => Looked::Hit,
                            Ok(false) | Err(_) => Looked::Miss,
                        };
                }
                if looked == Looked::Hit {
                    if let Some(value) = self.decode_hit(py, &scratch.value)? {
                        return self.hit_result(py, value).map(Some);
                    }
                }
                match &self.async_state {
                    None => Ok(None),
                    Some(state) => {
                        let handle = PyBytes::new(py, &scratch.key);
                        let (args, kwargs) = invocation.pack(py)?;
                        // SAFETY: `slf` is the live object this call was made on.
                        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
                        Ok(state
                            .helper
                            .bind(py)
                            .call1((
                                slf,
                                self.func.bind(py),
                                state.inflight.bind(py),
                                handle,
                                args,
                                kwargs,
                            ))
                            .map(|value| Some(value.unbind()))?)
                    }
                }
            })();
            match result {
                Ok(None) => Ok(Decided::CallFunction { scratch, hash }),
                Ok(Some(value)) => {
                    put_scratch(scratch);
                    Ok(Decided::Done(value))
                }
                Err(err) => {
                    put_scratch(scratch);
                    Err(err)
                }
            }
        }

        /// [`decode_or_miss`] of a counted hit: a value that cannot be decoded is recomputed,
        /// so the hit becomes a miss in the counters.
        fn decode_hit(&self, py: Python<'_>, bytes: &[u8]) -> PyResult<Option<Py<PyAny>>> {
            let decoded = decode_or_miss(py, bytes);
            if !matches!(decoded, Ok(Some(_))) {
                self.store.record_decode_failure();
            }
            decoded
        }

        fn hit_result(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
            match self.async_state {
                None => Ok(value),
                Some(_) => Ok(Py::new(py, Ready::new(value))?.into_any()),
            }
        }

        /// Stores a computed value under `key` (encoded bytes, `hash` from [`key_hash`]).
        /// Never fails because of the cache: an unpicklable or oversize value is skipped,
        /// a store error warns once. `Err` only for an exception raised by the warning
        /// machinery (warnings turned into errors) or a `BaseException` while pickling.
        fn store_value(
            &self,
            py: Python<'_>,
            key: &[u8],
            hash: u64,
            value: &Bound<'_, PyAny>,
            buffer: &mut Vec<u8>,
        ) -> PyResult<()> {
            if self.store.ttl_ns() == Some(0) {
                return Ok(());
            }
            if key.len() > self.store.key_bytes_max() as usize {
                self.store.record_oversize_skip();
                return Ok(());
            }
            match convert::encode_value(py, value, buffer)? {
                Encoded::Done => {}
                Encoded::Unpicklable => return Ok(()),
            }
            // Oversize values are counted by the store.
            match self
                .store
                .insert_hashed(key, hash, buffer, monotonic_now_ns())
            {
                Ok(_) => Ok(()),
                Err(err) => self.warn_once(py, &err),
            }
        }

        fn warn_once(&self, py: Python<'_>, err: &Error) -> PyResult<()> {
            if self.warned.swap(true, Ordering::Relaxed) {
                return Ok(());
            }
            let message = format!(
                "warp_cache: the shared cache {:?} could not store a result ({}); results are \
                 still returned, but may not be cached",
                self.name, err.message
            );
            let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            let message = std::ffi::CString::new(message)
                .unwrap_or_else(|_| c"warp_cache: a shared cache could not store a result".into());
            PyErr::warn(py, &category, &message, 1)
        }

        /// The instance `__dict__` slot (pyo3 does not traverse it; we must, or cycles
        /// through `__wrapped__` would never be collected).
        ///
        /// # Safety
        /// `self` is the contents of a live `SharedCachedFunction` object.
        unsafe fn instance_dict_slot(&self) -> Option<&Option<Py<PyAny>>> {
            // SAFETY: function contract; CONTENTS_OFFSET was measured for this type.
            unsafe { CONTENTS_OFFSET.instance_dict_slot(self) }
        }
    }

    /// Decodes a hit; `None` (a miss) when the bytes are not a valid value or unpickling
    /// raised an `Exception` (e.g. the class of a pickled object no longer exists).
    fn decode_or_miss(py: Python<'_>, bytes: &[u8]) -> PyResult<Option<Py<PyAny>>> {
        match convert::decode_value(py, bytes) {
            Ok(value) => Ok(Some(value)),
            Err(DecodeFailure::Codec) => Ok(None),
            Err(DecodeFailure::Python(err))
                if err.is_instance_of::<pyo3::exceptions::PyException>(py) =>
            {
                Ok(None)
            }
            Err(DecodeFailure::Python(err)) => Err(err),
        }
    }

    #[pymethods]
    impl SharedCachedFunction {
        #[pyo3(signature = (*args, **kwargs))]
        fn __call__(
            slf: &Bound<'_, Self>,
            args: &Bound<'_, PyTuple>,
            kwargs: Option<&Bound<'_, PyDict>>,
        ) -> PyResult<Py<PyAny>> {
            guard(|| {
                let py = slf.py();
                // Strong references: the dict's contents must outlive the key.
                let (names, values): (Vec<Bound<'_, PyAny>>, Vec<Bound<'_, PyAny>>) = match kwargs {
                    Some(kwargs) if !kwargs.is_empty() => kwargs.iter().unzip(),
                    _ => (Vec::new(), Vec::new()),
                };
                for name in &names {
                    if !name.is_instance_of::<pyo3::types::PyString>() {
                        return Err(PyTypeError::new_err("keywords must be strings"));
                    }
                }
                let name_ptrs: Vec<*mut ffi::PyObject> = names.iter().map(Bound::as_ptr).collect();
                let value_ptrs: Vec<*mut ffi::PyObject> =
                    values.iter().map(Bound::as_ptr).collect();
                // SAFETY: `args` is a tuple alive for this call.
                let positional = unsafe { key::tuple_items(args.as_ptr()) };
                let call = CallArgs {
                    positional,
                    kw_names: &name_ptrs,
                    kw_values: &value_ptrs,
                };
                let pending = Pending {
                    scratch: take_scratch(),
                    hash: 0,
                    looked: Looked::Nothing,
                };
                slf.get().call_full(
                    py,
                    slf.as_ptr(),
                    call,
                    Invocation::Tuple {
                        args,
                        kwargs: kwargs.filter(|kwargs| !kwargs.is_empty()),
                    },
                    pending,
                )
            })
        }

        /// Binds to an instance like a function (and `functools.lru_cache`) does.
        fn __get__(
            slf: &Bound<'_, Self>,
            instance: Option<&Bound<'_, PyAny>>,
            owner: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            let _ = owner;
            function_type::bind_to_instance(slf.as_any(), instance)
        }

        /// `CacheInfo(hits=, misses=, max_size=, current_size=, oversize_skips=)`, counted by
        /// every process using the cache.
        fn cache_info(&self, py: Python<'_>) -> PyResult<CacheInfo> {
            guard(|| {
                let info = py.detach(|| self.store.info()).map_err(to_py)?;
                Ok(CacheInfo::new(
                    info.hits,
                    info.misses,
                    u64::from(info.capacity),
                    info.current_size,
                    Some(info.oversize_skips),
                ))
            })
        }

        /// Removes every entry and resets the counters, for every process using the cache.
        fn cache_clear(&self, py: Python<'_>) -> PyResult<()> {
            guard(|| py.detach(|| self.store.clear()).map_err(to_py))
        }

        /// Pickles by reference, like `functools.lru_cache`: the qualified name.
        fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
            guard(|| slf.getattr("__qualname__"))
        }

        fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
            slf
        }

        fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
            slf
        }

        fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
            function_type::repr(slf.as_any(), &slf.get().func, "shared cached function")
        }

        /// The wrapped function, as given to the decorator.
        #[getter]
        fn _func(&self, py: Python<'_>) -> Py<PyAny> {
            self.func.clone_ref(py)
        }

        /// Whether calls return awaitables (the wrapped function is a coroutine function).
        #[getter]
        fn _is_async(&self) -> bool {
            self.async_state.is_some()
        }

        /// The name that identifies this function's cache across processes.
        #[getter]
        fn _shared_name(&self) -> &str {
            &self.name
        }

        /// `{"dir", "data", "lock", "stem"}`: where the cache lives (tests, diagnostics).
        fn _shared_files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
            let dict = PyDict::new(py);
            if let Some(paths) = self.store.paths() {
                dict.set_item("dir", paths.dir)?;
                dict.set_item("data", paths.data)?;
                dict.set_item("lock", paths.lock)?;
            }
            dict.set_item("stem", self.store.file_stem())?;
            dict.set_item("region_bytes", self.store.region_bytes())?;
            Ok(dict)
        }

        /// Checks every invariant of the shared table under the writer lock (tests):
        /// `RuntimeError` describing the first violation.
        fn _shared_validate(&self, py: Python<'_>) -> PyResult<()> {
            guard(|| {
                py.detach(|| self.store.validate())
                    .map_err(PyRuntimeError::new_err)
            })
        }

        /// `{"resets", "last_reset_reason"}`: crash/corruption recoveries (diagnostics).
        fn _shared_diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
            guard(|| {
                let info = py.detach(|| self.store.info()).map_err(to_py)?;
                let dict = PyDict::new(py);
                dict.set_item("resets", info.resets)?;
                dict.set_item("last_reset_reason", self.store.last_reset_reason())?;
                Ok(dict)
            })
        }

        /// Async misses: looks a key up again without counting. `(True, value)` or
        /// `(False, None)`.
        fn _lookup_handle(
            &self,
            py: Python<'_>,
            handle: &Bound<'_, PyBytes>,
        ) -> PyResult<(bool, Py<PyAny>)> {
            guard(|| {
                let key = handle.as_bytes();
                let mut scratch = take_scratch();
                let found = key.len() <= self.store.key_bytes_max() as usize
                    && self
                        .store
                        .peek_hashed(key, key_hash(key), self.read_clock(), &mut scratch.value)
                        .unwrap_or(false);
                let value = if found {
                    decode_or_miss(py, &scratch.value)
                } else {
                    Ok(None)
                };
                put_scratch(scratch);
                Ok(match value? {
                    Some(value) => (true, value),
                    None => (false, py.None()),
                })
            })
        }

        /// Async misses: stores the computed value under a handle's key.
        fn _store_handle(
            &self,
            py: Python<'_>,
            handle: &Bound<'_, PyBytes>,
            value: &Bound<'_, PyAny>,
        ) -> PyResult<()> {
            guard(|| {
                let key = handle.as_bytes();
                let mut scratch = take_scratch();
                let hash = if key.len() <= self.store.key_bytes_max() as usize {
                    key_hash(key)
                } else {
                    0
                };
                let result = self.store_value(py, key, hash, value, &mut scratch.value);
                put_scratch(scratch);
                result
            })
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            visit.call(&self.func)?;
            if let Some(state) = &self.async_state {
                visit.call(&state.helper)?;
                visit.call(&state.inflight)?;
            }
            // SAFETY: `self` is the contents of a live object (the collector traverses it).
            if let Some(dict) = unsafe { self.instance_dict_slot() } {
                visit.call(dict)?;
            }
            Ok(())
        }

        fn __clear__(&self) {
            // A panic here could only be a bug; the collector gets on either way.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                if let Some(state) = &self.async_state {
                    Python::attach(|py| state.inflight.bind(py).clear());
                }
            }));
        }
    }

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
    unsafe extern "C-unwind" fn vectorcall_entry(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: function contract, passed on.
        let first = unsafe { begin_call(callable, args, nargsf, kwnames) };
        if first != call_shell::call_function() {
            return first;
        }
        // SAFETY: attached thread; `begin_call` pushed this call's pending miss.
        unsafe { call_pending() }
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
        let slf =
            unsafe { Borrowed::from_ptr(py, callable).cast_unchecked::<SharedCachedFunction>() };
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
        let outcome = catch_unwind(AssertUnwindSafe(|| unsafe {
            vectorcall_body(callable, args, nargsf, kwnames)
        }));
        // SAFETY: attached thread (function contract).
        outcome.unwrap_or_else(|payload| unsafe { call_shell::panic_result(payload) })
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
        let call = PENDING.with(|stack| stack.borrow().last().map(|top| top.call));
        let Some(call) = call else {
            // SAFETY: attached thread (function contract).
            return unsafe { call_shell::unmatched_finish(ptr::null_mut()) };
        };
        // SAFETY: the caller's vector, alive for the call (recorded by `begin_call`).
        let result = unsafe { call.run() };
        // SAFETY: function contract.
        unsafe { finish_call(result) }
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

    /// A positive int that fits a u32, or the error the user needs (`what` names it).
    fn u32_param(what: &str, value: &Bound<'_, PyAny>) -> PyResult<u32> {
        let unit = if what == "max_size" { "" } else { " (bytes)" };
        if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "{what} must be a positive int{unit}, got {}",
                value.repr()?
            )));
        }
        match value.extract::<i128>() {
            Ok(n) if n < 1 => Err(PyValueError::new_err(format!(
                "{what} must be a positive int{unit}, got {n}"
            ))),
            Ok(n) if n <= i128::from(u32::MAX) => Ok(n as u32),
            _ => Err(PyValueError::new_err(format!(
                "{what} must be at most {} for the shared backend, got {}",
                u32::MAX,
                value.repr()?
            ))),
        }
    }

    /// Creates the shared-backend wrapper of `func` under the cache name `name` (from
    /// `warp_cache._shared.cache_name`). Parameters are checked again here; files are opened
    /// (created, or replaced if their parameters differ) now, so space and permission
    /// problems are errors at decoration time.
    #[pyfunction]
    #[pyo3(
        name = "_make_shared",
        signature = (func, name, max_size, ttl, max_key_size, max_value_size, async_helper = None)
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn make_shared(
        py: Python<'_>,
        func: Py<PyAny>,
        name: String,
        max_size: &Bound<'_, PyAny>,
        ttl: Option<f64>,
        max_key_size: &Bound<'_, PyAny>,
        max_value_size: &Bound<'_, PyAny>,
        async_helper: Option<Py<PyAny>>,
    ) -> PyResult<Py<SharedCachedFunction>> {
        guard(|| {
            if !func.bind(py).is_callable() {
                return Err(PyTypeError::new_err("cache() needs a callable"));
            }
            let config = ShmConfig {
                dir: None,
                name: name.clone(),
                capacity: u32_param("max_size", max_size)?,
                key_bytes_max: u32_param("max_key_size", max_key_size)?,
                value_bytes_max: u32_param("max_value_size", max_value_size)?,
                ttl_ns: ttl_ns_of(ttl)?,
            };
            let store = py.detach(|| ShmStore::open(config)).map_err(to_py)?;
            let async_state = async_helper.map(|helper| AsyncState {
                helper,
                inflight: PyDict::new(py).unbind(),
            });
            Py::new(
                py,
                SharedCachedFunction::new(func, store, name, async_state),
            )
        })
    }

    /// Frees the reusable buffers in a child after `os.fork` (registered by the Python
    /// package with `os.register_at_fork`): a thread that held them in the parent does not
    /// exist in the child.
    #[pyfunction]
    #[pyo3(name = "_after_fork_in_child")]
    pub fn after_fork_in_child(py: Python<'_>) {
        let _ = py;
        scratch_slot::SLOT.reset_after_fork();
    }

    /// Arms the core's failpoints (`None` disarms): test builds only (cargo feature
    /// `failpoints`); otherwise a `RuntimeError`.
    #[pyfunction]
    #[pyo3(name = "_set_failpoint", signature = (spec = None))]
    pub fn set_failpoint(spec: Option<&str>) -> PyResult<()> {
        failpoint::set(spec).map_err(PyRuntimeError::new_err)
    }
}

#[cfg(not(unix))]
mod imp {
    use pyo3::exceptions::PyRuntimeError;
    use pyo3::prelude::*;

    pub const FAILPOINTS: bool = false;

    /// The shared backend needs POSIX shared memory: on this platform decoration fails.
    #[pyfunction]
    #[pyo3(
        name = "_make_shared",
        signature = (func, name, max_size, ttl, max_key_size, max_value_size, async_helper = None)
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn make_shared(
        func: Py<PyAny>,
        name: String,
        max_size: &Bound<'_, PyAny>,
        ttl: Option<f64>,
        max_key_size: &Bound<'_, PyAny>,
        max_value_size: &Bound<'_, PyAny>,
        async_helper: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = (
            func,
            name,
            max_size,
            ttl,
            max_key_size,
            max_value_size,
            async_helper,
        );
        Err(PyRuntimeError::new_err(
            "backend='shared' is not available on this platform (it needs POSIX shared memory: \
             Linux or macOS); use backend='memory'",
        ))
    }

    #[pyfunction]
    #[pyo3(name = "_after_fork_in_child")]
    pub fn after_fork_in_child() {}

    #[pyfunction]
    #[pyo3(name = "_set_failpoint", signature = (spec = None))]
    pub fn set_failpoint(spec: Option<&str>) -> PyResult<()> {
        let _ = spec;
        Err(PyRuntimeError::new_err(
            "failpoints are not available on this platform",
        ))
    }
}
