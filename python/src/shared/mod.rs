//! `SharedCachedFunction`: what `@cache(backend="shared")` returns. The cache lives in two
//! memory-mapped files managed by `warp_cache_core::shm::ShmStore`; this file only turns
//! calls into key bytes and bytes back into objects (`convert.rs`).
//!
//! A hit is one Rust call without Python code: encode the key into a per-thread reusable
//! buffer (exact `None/bool/int/float/str/bytes` arguments; anything else is pickled on the
//! slow path), one fixed-seed hash, one lock-free seqlock read that copies the value bytes
//! out once, one decode. It runs before pyo3's attach bookkeeping (it creates no `Py`), like
//! the memory backend's quick path; everything else (pickling, misses, async) runs through
//! it ([`crate::call_shell::attached`]).
//!
//! Rules of the shared backend (tests in `tests/python/test_shared_*.py`):
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

// `unsafe` allowed: the shared backend's call entry and hit path use raw C-API objects.
#![allow(unsafe_code)]

mod entry;
mod flight;
// The command line's inspection, clear and stale removal (`python -m warp_cache`).
pub mod inspect;
mod make;
mod per_key;
mod scratch;

pub use entry::install_vectorcall;
pub use make::{after_fork_in_child, make_shared, set_failpoint, FAILPOINTS};

use std::mem::offset_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyTuple};
use pyo3::PyTraverseError;
use warp_cache_core::clock::monotonic_now_ns;
use warp_cache_core::codec;
use warp_cache_core::shm::arena::SmallValue;
use warp_cache_core::shm::{failpoint, key_hash, InsertOutcome, ShmConfig, ShmStore};
use warp_cache_core::Error;

use crate::async_state::{self, AsyncState};
use crate::call_shell;
use crate::call_shell::{attached, split_vector_args};
use crate::callable_methods::{cached_function_pymethods, TupleCallKeywords};
use crate::convert::{self, DecodeFailure, Encoded};
use crate::errors::{self, guard, to_py};
use crate::function_type::{self, ContentsOffset, Invocation};
use crate::info::CacheInfo;
use crate::key;
use crate::params::{single_flight_of, ttl_ns_of};
use crate::single_flight::SingleFlight;

use entry::vectorcall_entry;
use flight::{Flight, Flown};
use scratch::{put_scratch, scratch_slot, take_scratch, Scratch};

/// Offset of the Rust struct inside the Python object, measured once at module init.
static CONTENTS_OFFSET: ContentsOffset = ContentsOffset::new();

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
    /// A synchronous miss: call the function, then store under `scratch.key` and end the
    /// flight.
    CallFunction {
        scratch: Scratch,
        hash: u64,
        flight: Flight,
    },
}

/// The arguments of one call, as borrowed object pointers.
#[derive(Clone, Copy)]
struct CallArgs<'a> {
    positional: &'a [*mut ffi::PyObject],
    kw_names: &'a [*mut ffi::PyObject],
    kw_values: &'a [*mut ffi::PyObject],
}

impl<'a> CallArgs<'a> {
    /// The arguments of a call through `tp_call`: `args`' items, then `keywords`.
    fn of_tuple_call(args: &'a Bound<'_, PyTuple>, keywords: &'a TupleCallKeywords<'_>) -> Self {
        CallArgs {
            // SAFETY: `args` is a tuple, alive (borrowed) for `'a`.
            positional: unsafe { key::tuple_items(args.as_ptr()) },
            kw_names: &keywords.names,
            kw_values: &keywords.values,
        }
    }
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
    /// `typed=False`: `True`/`False` and integral floats are keyed as the equal int
    /// (`convert::write_untyped_number`).
    typed: bool,
    /// Single flight of synchronous misses in this process (`None`: `single_flight=False`);
    /// its bound also bounds waits for other processes.
    flights: Option<SingleFlight>,
    async_state: Option<AsyncState>,
    /// Set once an insert failed and a warning was issued.
    warned: AtomicBool,
}

impl SharedCachedFunction {
    fn new(
        func: Py<PyAny>,
        store: ShmStore,
        name: String,
        typed: bool,
        flights: Option<SingleFlight>,
        async_state: Option<AsyncState>,
    ) -> Self {
        SharedCachedFunction {
            vectorcall: call_shell::slot_of(vectorcall_entry),
            func,
            store,
            name,
            typed,
            flights,
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
                    self.typed,
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
        let (mut scratch, hash, flight) = match self.decide(py, slf, call, &invocation, pending)? {
            Decided::Done(value) => return Ok(value),
            Decided::CallFunction {
                scratch,
                hash,
                flight,
            } => (scratch, hash, flight),
        };
        let result = invocation.call(py, &self.func).and_then(|value| {
            self.store_value(py, &scratch.key, hash, value.bind(py), &mut scratch.value)?;
            Ok(value)
        });
        flight.end(self);
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
                // Oversize keys miss (counted) without being hashed.
                // SAFETY: live arguments (caller contract), attached thread.
                if let Some(key_hash) = unsafe { self.encode_call_key(py, call, &mut scratch.key)? }
                {
                    hash = key_hash;
                }
                let now_ns = self.read_clock();
                looked = match self
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
                    let handle = PyBytes::new(py, &scratch.key).into_any();
                    // SAFETY: `slf` is the live object this call was made on.
                    let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
                    state
                        .start_miss(py, &slf, &self.func, handle, invocation)
                        .map(Some)
                }
            }
        })();
        // A synchronous miss goes through its flights (another computation may store it).
        let flown = match result {
            Ok(Some(value)) => Ok(Flown::Cached(value)),
            Ok(None) => self.fly(py, &mut scratch, hash),
            Err(err) => Err(err),
        };
        match flown {
            Ok(Flown::Compute(flight)) => Ok(Decided::CallFunction {
                scratch,
                hash,
                flight,
            }),
            Ok(Flown::Cached(value)) => {
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

    #[inline(always)]
    fn hit_result(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        async_state::hit_result(self.async_state.as_ref(), py, value)
    }

    /// Stores a computed value under `key` (encoded bytes, `hash` from [`key_hash`]);
    /// whether it was stored. Never fails because of the cache: an unpicklable or oversize
    /// value is skipped, a store error warns once. `Err` only for an exception raised by the
    /// warning machinery (warnings turned into errors) or a `BaseException` while pickling.
    fn store_value(
        &self,
        py: Python<'_>,
        key: &[u8],
        hash: u64,
        value: &Bound<'_, PyAny>,
        buffer: &mut Vec<u8>,
    ) -> PyResult<bool> {
        if self.store.ttl_ns() == Some(0) {
            return Ok(false);
        }
        if key.len() > self.store.key_bytes_max() as usize {
            self.store.record_oversize_skip();
            return Ok(false);
        }
        match convert::encode_value(py, value, buffer)? {
            Encoded::Done => {}
            Encoded::Unpicklable => return Ok(false),
        }
        // Oversize values are counted by the store.
        match self
            .store
            .insert_hashed(key, hash, buffer, monotonic_now_ns())
        {
            Ok(InsertOutcome::Inserted { .. } | InsertOutcome::Updated) => Ok(true),
            Ok(InsertOutcome::Skipped(_)) => Ok(false),
            Err(err) => self.warn_once(py, &err).map(|()| false),
        }
    }

    /// Encodes the key of `call` into `key`; its hash, or `None` for a key over
    /// `max_key_size` (never stored, so not hashed).
    ///
    /// # Safety
    /// The arguments of `call` are alive; attached thread.
    unsafe fn encode_call_key(
        &self,
        py: Python<'_>,
        call: CallArgs<'_>,
        key: &mut Vec<u8>,
    ) -> PyResult<Option<u64>> {
        // SAFETY: function contract.
        unsafe {
            let order = key::keyword_order(call.kw_names).map_err(|()| PyErr::fetch(py))?;
            convert::encode_key(
                py,
                call.positional,
                call.kw_names,
                call.kw_values,
                &order,
                self.typed,
                key,
            )?;
        }
        Ok((key.len() <= self.store.key_bytes_max() as usize).then(|| key_hash(key)))
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

impl SharedCachedFunction {
    /// `__call__` (see `callable_methods.rs`): a call that came with a tuple.
    fn tp_call(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let py = slf.py();
            let keywords = TupleCallKeywords::of(kwargs)?;
            let call = CallArgs::of_tuple_call(args, &keywords);
            let pending = Pending {
                scratch: take_scratch(),
                hash: 0,
                looked: Looked::Nothing,
            };
            slf.get().call_full(
                py,
                slf.as_ptr(),
                call,
                Invocation::of_tuple_call(args, kwargs),
                pending,
            )
        })
    }
}

cached_function_pymethods! {
    #[pymethods]
    impl SharedCachedFunction, "shared cached function" {
        /// `CacheInfo(hits=, misses=, max_size=, current_size=, oversize_skips=, space_skips=,
        /// read_retries=, lock_waits=, lock_skips=)`, counted by
        /// every process using the cache.
        fn cache_info(&self, py: Python<'_>) -> PyResult<CacheInfo> {
            guard(|| {
                let info = crate::python_call::detached(py, || self.store.info()).map_err(to_py)?;
                Ok(CacheInfo::from(info.cache_stats()))
            })
        }

        /// Removes every entry and resets the counters, for every process using the cache.
        fn cache_clear(&self, py: Python<'_>) -> PyResult<()> {
            guard(|| crate::python_call::detached(py, || self.store.clear()).map_err(to_py))
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
            dict.set_item("max_bytes", self.store.region_bytes())?;
            dict.set_item("fixed_bytes", self.store.fixed_bytes())?;
            Ok(dict)
        }

        /// Checks every invariant of the shared table under the writer lock (tests):
        /// `RuntimeError` describing the first violation.
        fn _shared_validate(&self, py: Python<'_>) -> PyResult<()> {
            guard(|| {
                crate::python_call::detached(py, || self.store.validate())
                    .map_err(|e| errors::invalid_shared_table(e.to_string()))
            })
        }

        /// `{"resets", "last_reset_reason", "heap_compactions", "heap_bump_bytes",
        /// "heap_committed_bytes"}`: crash/corruption recoveries and the extent heap
        /// (diagnostics).
        fn _shared_diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
            guard(|| {
                let info = crate::python_call::detached(py, || self.store.info()).map_err(to_py)?;
                let dict = PyDict::new(py);
                dict.set_item("resets", info.resets)?;
                dict.set_item("last_reset_reason", self.store.last_reset_reason())?;
                dict.set_item("heap_compactions", info.heap_compactions)?;
                dict.set_item("heap_bump_bytes", info.heap_bump_bytes)?;
                dict.set_item("heap_committed_bytes", info.heap_committed_bytes)?;
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
                result.map(drop)
            })
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            visit.call(&self.func)?;
            if let Some(state) = &self.async_state {
                state.traverse(&visit)?;
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
                    Python::attach(|py| state.clear_inflight(py));
                }
            }));
        }
    }
}
