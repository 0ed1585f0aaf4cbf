//! `CachedFunction`: what `@cache` returns for the memory backend. A call is one Rust call:
//! build the key from the arguments (no tuple for a single int/str argument or for positional
//! arguments on a hit), hash, look up, compare, return.
//!
//! Reentrancy (INV-3): the store is never borrowed while Python code runs. Python code runs
//! in `__hash__`, `__eq__` of user keys, the wrapped function, and `__del__` of dropped keys
//! and values (and in anything that allocates, through the garbage collector). So:
//! * keys are hashed before the store is borrowed;
//! * candidates that cannot be compared without Python code are cloned (a new reference),
//!   the borrow is released, they are compared, and the reference is re-checked by generation
//!   before use (a stale one is a miss: a miss is always a correct answer);
//! * displaced keys and values are dropped after the borrow is released;
//! * a `cache_clear()` that returned has taken effect: every reference taken before it is
//!   stale (generations), so a lookup mid-`__eq__` cannot serve a cleared entry.
//!
//! The call enters through vectorcall when the type could be given a vectorcall slot (see
//! [`install_vectorcall`]); `tp_call` (`__call__`) remains for callers that build a tuple.

// `unsafe` allowed: the memory backend's call entry and hit path use raw C-API objects.
#![allow(unsafe_code)]

use std::mem::{offset_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple};
use pyo3::PyTraverseError;
use warp_cache_core::clock::monotonic_now_ns;
use warp_cache_core::mem::{Displaced, Hit, Lookup, MemStore, SlotRef, MAX_SIZE_LIMIT};

use crate::async_state::{self, AsyncState};
use crate::awaitable::{KeyHandle, Ready};
use crate::call_shell::{self, attached, into_result_ptr, split_vector_args};
use crate::callable_methods::{cached_function_pymethods, TupleCallKeywords};
use crate::cell::{count_hit, count_miss, Store, StoreCell};
use crate::errors::{self, guard, to_py};
use crate::function_type::{self, ContentsOffset, Invocation};
use crate::info::CacheInfo;
use crate::key::{self, CallKey, KeyView, KwItems, Quick, StoredKey};
use crate::params::{single_flight_of, ttl_ns_of};
use crate::single_flight::{Entered, Leading, SingleFlight};

mod make;
mod miss;
mod per_key;

pub use make::{install_vectorcall, make_memory};

/// How many times an insert re-scans after Python code changed the store under it before it
/// inserts anyway (a duplicate of an equal key is then possible; it is harmless: it only
/// takes a slot until SIEVE evicts it).
const INSERT_ATTEMPTS: usize = 4;

/// Offset of the Rust struct inside the Python object, measured once at module init.
static CONTENTS_OFFSET: ContentsOffset = ContentsOffset::new();

/// A cached function (memory backend).
#[pyclass(frozen, dict, weakref, module = "warp_cache", name = "CachedFunction")]
pub struct CachedFunction {
    /// This instance's vectorcall entry; CPython reads it at `tp_vectorcall_offset`.
    vectorcall: ffi::vectorcallfunc,
    func: Py<PyAny>,
    ttl_ns: Option<u64>,
    /// `typed=True`: argument types are part of the key (`key/typed.rs`).
    typed: bool,
    /// Single flight of synchronous misses (`None`: `single_flight=False`).
    flights: Option<SingleFlight>,
    store: StoreCell,
    async_state: Option<AsyncState>,
}

/// Where a lookup decided that a key is absent: the store's version at that moment.
#[derive(Clone, Copy)]
struct MissAt {
    version: u64,
}

/// Outcome of the quick path.
enum QuickLookup {
    Hit(Py<PyAny>),
    /// No candidate is equal, and every comparison was decided without Python code.
    Miss(MissAt),
    /// Needs the full path (Python `__eq__`, an expired entry, a busy store).
    Undecided,
}

/// What a synchronous miss does after its single flight.
enum Flown<'a> {
    /// Another thread computed and stored it.
    Cached(Py<PyAny>),
    /// Compute it (ending the flight, if any, when the guard drops) and store it; `Some` when
    /// the store is unchanged since the miss was decided.
    Compute(Option<Leading<'a>>, Option<MissAt>),
}

/// Outcome of the full lookup.
enum Found {
    Hit(Py<PyAny>),
    /// `Some` when the miss was decided within one borrow of the store.
    Miss(Option<MissAt>),
}

#[inline]
fn clock(store: &Store) -> u64 {
    if store.needs_clock() {
        monotonic_now_ns()
    } else {
        0
    }
}

/// Puts a new value in: in place at `equal`, or as a new entry (evicting when full).
fn place(
    store: &mut Store,
    equal: Option<SlotRef>,
    hash: u64,
    key: StoredKey,
    value: Py<PyAny>,
    now_ns: u64,
) -> Displaced<StoredKey, Py<PyAny>> {
    match equal {
        Some(at) => match store.replace_at(at, value, now_ns) {
            Ok(old) => Displaced::Replaced(old),
            Err(value) => store.insert_new(hash, key, value, now_ns),
        },
        None => store.insert_new(hash, key, value, now_ns),
    }
}

impl CachedFunction {
    fn new(
        func: Py<PyAny>,
        store: Store,
        typed: bool,
        flights: Option<SingleFlight>,
        async_state: Option<AsyncState>,
    ) -> Self {
        CachedFunction {
            vectorcall: call_shell::slot_of(vectorcall_entry),
            func,
            ttl_ns: store.ttl_ns(),
            typed,
            flights,
            store: StoreCell::new(store),
            async_state,
        }
    }

    /// The hit path: decides what comparisons that run no Python code can decide. Drops no
    /// `Py`, so it needs none of pyo3's attach bookkeeping.
    #[inline(always)]
    fn quick_lookup(&self, py: Python<'_>, probe: KeyView<'_>) -> QuickLookup {
        let Some(store) = self.store.try_read(py) else {
            return QuickLookup::Undecided;
        };
        let now_ns = clock(&store);
        let mut undecided = false;
        let found = store.lookup(probe.hash(), now_ns, |stored| {
            match key::quick_eq(stored, probe) {
                Quick::Equal => true,
                Quick::NotEqual => false,
                Quick::Unknown => {
                    undecided = true;
                    false
                }
            }
        });
        match found {
            Lookup::Fresh(_, value) => {
                let value = value.clone_ref(py);
                count_hit(&store);
                QuickLookup::Hit(value)
            }
            Lookup::Absent if !undecided => {
                // Counted here, in the borrow the lookup already holds (before the wrapped
                // function runs, like `functools.lru_cache`); `call` does not count it again.
                count_miss(&store);
                QuickLookup::Miss(MissAt {
                    version: store.version(),
                })
            }
            Lookup::Absent | Lookup::Expired(_) => QuickLookup::Undecided,
        }
    }

    /// Looks `probe` up. A fresh hit returns a new reference to the value (and counts a hit
    /// when `count`); an expired entry is removed; anything else is a miss (`None`).
    fn lookup(
        &self,
        py: Python<'_>,
        probe: KeyView<'_>,
        count: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        Ok(match self.lookup_full(py, probe, count)? {
            Found::Hit(value) => Some(value),
            Found::Miss(_) => None,
        })
    }

    /// [`CachedFunction::lookup`], also telling when a miss was decided in one borrow (then
    /// the store's version at that moment lets the insert skip its duplicate scan).
    fn lookup_full(&self, py: Python<'_>, probe: KeyView<'_>, count: bool) -> PyResult<Found> {
        // Declared before the borrow so that it is dropped after it (INV-3).
        let mut pending: Vec<(SlotRef, StoredKey)> = Vec::new();
        let mut expired = None;
        let decided_at = {
            let store = self.store.read(py)?;
            let now_ns = clock(&store);
            for (at, stored) in store.candidates(probe.hash()) {
                match key::quick_eq(stored, probe) {
                    Quick::Equal => {
                        match store.hit(at, now_ns) {
                            Hit::Fresh(value) => {
                                let value = value.clone_ref(py);
                                if count {
                                    count_hit(&store);
                                }
                                return Ok(Found::Hit(value));
                            }
                            Hit::Expired => expired = Some(at),
                            Hit::Gone => {}
                        }
                        break;
                    }
                    Quick::NotEqual => {}
                    Quick::Unknown => pending.push((at, stored.clone_ref(py))),
                }
            }
            (pending.is_empty() && expired.is_none()).then(|| MissAt {
                version: store.version(),
            })
        };
        if let Some(miss) = decided_at {
            return Ok(Found::Miss(Some(miss)));
        }
        if let Some(at) = expired {
            self.remove_if_expired(py, at)?;
            return Ok(Found::Miss(None));
        }
        for (at, stored) in &pending {
            // Runs Python code: the store is not borrowed here.
            if !key::slow_eq(py, stored, probe)? {
                continue;
            }
            let store = self.store.read(py)?;
            let now_ns = clock(&store);
            return match store.hit(*at, now_ns) {
                Hit::Fresh(value) => {
                    let value = value.clone_ref(py);
                    if count {
                        count_hit(&store);
                    }
                    Ok(Found::Hit(value))
                }
                Hit::Expired => {
                    drop(store);
                    self.remove_if_expired(py, *at)?;
                    Ok(Found::Miss(None))
                }
                // Removed, evicted or cleared while `__eq__` ran: a miss.
                Hit::Gone => Ok(Found::Miss(None)),
            };
        }
        Ok(Found::Miss(None))
    }

    /// Removes the entry at `at` if it is still there and still expired.
    fn remove_if_expired(&self, py: Python<'_>, at: SlotRef) -> PyResult<()> {
        let removed = {
            let mut store = self.store.write(py)?;
            let now_ns = clock(&store);
            match store.is_fresh_at(at, now_ns) {
                Some(false) => store.remove(at),
                _ => None,
            }
        };
        // Dropped after the borrow: a key's or value's `__del__` may call this cache.
        drop(removed);
        Ok(())
    }

    /// Stores `value` under the key `probe` describes (`make_key` builds the stored form).
    /// A present equal key is updated in place; comparisons that need Python code run with
    /// the store released, and the scan is redone if the store changed meanwhile.
    ///
    /// `miss` is where a lookup decided the key was absent: if the store has not changed
    /// structurally since (same version), the key is still absent and the scan is skipped.
    fn store_value(
        &self,
        py: Python<'_>,
        probe: KeyView<'_>,
        make_key: impl FnOnce() -> PyResult<StoredKey>,
        value: Py<PyAny>,
        miss: Option<MissAt>,
    ) -> PyResult<()> {
        if self.ttl_ns == Some(0) {
            return Ok(());
        }
        let stored = make_key()?;
        if let Some(miss) = miss {
            let mut store = self.store.write(py)?;
            if store.version() == miss.version {
                let now_ns = clock(&store);
                let displaced = store.insert_new(probe.hash(), stored, value, now_ns);
                drop(store);
                drop(displaced);
                return Ok(());
            }
        }
        for attempt in 1..=INSERT_ATTEMPTS {
            let mut pending: Vec<(SlotRef, StoredKey)> = Vec::new();
            let version = {
                let mut store = self.store.write(py)?;
                let mut equal = None;
                for (at, candidate) in store.candidates(probe.hash()) {
                    match key::quick_eq(candidate, probe) {
                        Quick::Equal => {
                            equal = Some(at);
                            break;
                        }
                        Quick::NotEqual => {}
                        Quick::Unknown => pending.push((at, candidate.clone_ref(py))),
                    }
                }
                if equal.is_some() || pending.is_empty() || attempt == INSERT_ATTEMPTS {
                    let now_ns = clock(&store);
                    let displaced = place(&mut store, equal, probe.hash(), stored, value, now_ns);
                    drop(store);
                    drop(displaced);
                    return Ok(());
                }
                store.version()
            };
            let mut equal = None;
            for (at, candidate) in &pending {
                if key::slow_eq(py, candidate, probe)? {
                    equal = Some(*at);
                    break;
                }
            }
            let mut store = self.store.write(py)?;
            if store.version() != version {
                continue;
            }
            let now_ns = clock(&store);
            let displaced = place(&mut store, equal, probe.hash(), stored, value, now_ns);
            drop(store);
            drop(displaced);
            return Ok(());
        }
        Ok(())
    }

    /// One call: lookup, then (on a miss) compute and store, or start the async miss.
    /// `known_miss`: the quick path already decided this call is a miss.
    fn call(
        &self,
        py: Python<'_>,
        slf: *mut ffi::PyObject,
        key: CallKey<'_>,
        invocation: Invocation<'_, '_>,
        known_miss: Option<MissAt>,
    ) -> PyResult<Py<PyAny>> {
        let view = key.view();
        let miss = match known_miss {
            // Counted by the quick path.
            Some(miss) => Some(miss),
            None => {
                let miss = match self.lookup_full(py, view, true)? {
                    Found::Hit(value) => return self.hit_result(py, value),
                    Found::Miss(miss) => miss,
                };
                count_miss(&*self.store.read(py)?);
                miss
            }
        };
        match &self.async_state {
            None => {
                let (leading, miss) = match self.lead_or_wait(py, view, miss)? {
                    Flown::Cached(value) => return Ok(value),
                    Flown::Compute(leading, miss) => (leading, miss),
                };
                let value = invocation.call(py, &self.func)?;
                self.store_value(py, view, || key.to_stored(py), value.clone_ref(py), miss)?;
                drop(leading);
                Ok(value)
            }
            Some(state) => {
                let handle = Py::new(py, KeyHandle::new(key.to_stored(py)?, key.hash))?;
                // SAFETY: `slf` is the live object this call was made on.
                let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
                state.start_miss(
                    py,
                    &slf,
                    &self.func,
                    handle.into_bound(py).into_any(),
                    &invocation,
                )
            }
        }
    }

    #[inline(always)]
    fn hit_result(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        async_state::hit_result(self.async_state.as_ref(), py, value)
    }

    /// Ends the flight this call leads (`led`) on `hash`.
    #[inline]
    fn leave_flight(&self, led: bool, hash: u64) {
        if let (true, Some(flights)) = (led, &self.flights) {
            flights.leave(hash);
        }
    }

    /// The quick path's single flight of a decided miss: `Some(led)` to compute now (`led`:
    /// this call leads a flight that `miss::store` ends), `None` when another thread computes
    /// the key (the full path waits for it).
    #[inline(always)]
    fn lead_quick(&self, hash: u64) -> Option<bool> {
        match self.flights.as_ref().map(|flights| flights.enter(hash)) {
            None | Some(Entered::Reentrant) => Some(false),
            Some(Entered::Lead) => Some(true),
            Some(Entered::Busy) => None,
        }
    }

    /// The full path's single flight of a counted miss: waits (once, bounded) while another
    /// thread computes the key, then serves what it stored (not counted again: the miss
    /// was), or computes (leading the flight unless another thread or this one does).
    fn lead_or_wait(
        &self,
        py: Python<'_>,
        probe: KeyView<'_>,
        miss: Option<MissAt>,
    ) -> PyResult<Flown<'_>> {
        let Some(flights) = &self.flights else {
            return Ok(Flown::Compute(None, miss));
        };
        let hash = probe.hash();
        match flights.enter(hash) {
            Entered::Lead => Ok(Flown::Compute(Some(Leading::new(flights, hash)), miss)),
            Entered::Reentrant => Ok(Flown::Compute(None, miss)),
            Entered::Busy => {
                let entered = flights.wait_then_enter(py, hash, flights.deadline())?;
                let leading = (entered == Entered::Lead).then(|| Leading::new(flights, hash));
                // The store changed meanwhile: an insert must scan for the key.
                Ok(match self.lookup(py, probe, false)? {
                    Some(value) => Flown::Cached(value),
                    None => Flown::Compute(leading, None),
                })
            }
        }
    }

    /// The instance `__dict__` slot (pyo3 does not traverse it; we must, or cycles through
    /// `__wrapped__` and friends would never be collected).
    ///
    /// # Safety
    /// `self` is the contents of a live `CachedFunction` object.
    unsafe fn instance_dict_slot(&self) -> Option<&Option<Py<PyAny>>> {
        // SAFETY: function contract; CONTENTS_OFFSET was measured for this type.
        unsafe { CONTENTS_OFFSET.instance_dict_slot(self) }
    }
}

impl CachedFunction {
    /// `__call__` (see `callable_methods.rs`): a call that came with a tuple.
    fn tp_call(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let py = slf.py();
            with_call_key(py, slf.get().typed, args, kwargs, |key| {
                slf.get().call(
                    py,
                    slf.as_ptr(),
                    key,
                    Invocation::of_tuple_call(args, kwargs),
                    None,
                )
            })
        })
    }
}

/// Runs `body` with the key of a call with `args` and `kwargs` (the key a call through
/// `tp_call` uses, and the per-key methods); `typed` as the function's parameter.
fn with_call_key<R>(
    py: Python<'_>,
    typed: bool,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    body: impl FnOnce(CallKey<'_>) -> PyResult<R>,
) -> PyResult<R> {
    let keywords = TupleCallKeywords::of(kwargs)?;
    // Reused as the stored key only if it is an exact tuple.
    let args_tuple = if args.is_exact_instance_of::<PyTuple>() {
        args.as_ptr()
    } else {
        ptr::null_mut()
    };
    let mut kw_buffer = KwItems::new();
    // SAFETY: `args` is a tuple (a subclass has the same item layout), alive for this
    // call; names and values are held by `keywords`.
    let key = unsafe {
        let positional = key::tuple_items(args.as_ptr());
        CallKey::build(
            py,
            positional,
            args_tuple,
            &keywords.names,
            &keywords.values,
            &mut kw_buffer,
        )?
    };
    let key = if typed {
        // SAFETY: attached thread, no store borrow.
        unsafe { key.into_typed() }.map_err(|()| PyErr::fetch(py))?
    } else {
        key
    };
    body(key)
}

cached_function_pymethods! {
    #[pymethods]
    impl CachedFunction, "cached function" {
        /// `CacheInfo(hits=, misses=, max_size=, current_size=)`.
        fn cache_info(&self, py: Python<'_>) -> PyResult<CacheInfo> {
            guard(|| Ok(CacheInfo::from(self.store.read(py)?.cache_stats())))
        }

        /// Removes every entry and resets the counters. When this returns, no entry stored
        /// before it can be served, even to a lookup that was comparing keys meanwhile.
        fn cache_clear(&self, py: Python<'_>) -> PyResult<()> {
            guard(|| {
                let drained = {
                    let mut store = self.store.write(py)?;
                    store.counters().reset();
                    store.clear()
                };
                drop(drained);
                Ok(())
            })
        }

        /// Async misses: looks a handle's key up without counting. `(True, value)` or
        /// `(False, None)`.
        fn _lookup_handle(
            &self,
            py: Python<'_>,
            handle: &Bound<'_, KeyHandle>,
        ) -> PyResult<(bool, Py<PyAny>)> {
            guard(|| {
                let handle = handle.get();
                Ok(match self.lookup(py, handle.view(), false)? {
                    Some(value) => (true, value),
                    None => (false, py.None()),
                })
            })
        }

        /// Async misses: stores the computed value under a handle's key.
        fn _store_handle(
            &self,
            py: Python<'_>,
            handle: &Bound<'_, KeyHandle>,
            value: Py<PyAny>,
        ) -> PyResult<()> {
            guard(|| {
                let handle = handle.get();
                self.store_value(
                    py,
                    handle.view(),
                    || Ok(handle.key().clone_ref(py)),
                    value,
                    None,
                )
            })
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            visit.call(&self.func)?;
            if let Some(state) = &self.async_state {
                state.traverse(&visit)?;
            }
            // SAFETY: we are in `__traverse__` (GIL held / world stopped).
            if let Some(store) = unsafe { self.store.gc_view() } {
                for (stored, value) in store.iter() {
                    visit.call(stored.object())?;
                    visit.call(value)?;
                }
            }
            // SAFETY: `self` is the contents of a live object (the collector is traversing it).
            if let Some(dict) = unsafe { self.instance_dict_slot() } {
                visit.call(dict)?;
            }
            Ok(())
        }

        fn __clear__(&self) {
            // A panic here could only be a bug; the collector gets on either way.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                self.clear_for_gc();
            }));
        }
    }
}

impl CachedFunction {
    fn clear_for_gc(&self) {
        Python::attach(|py| {
            let drained = match self.store.write(py) {
                Ok(mut store) => store.clear(),
                Err(_) => Vec::new(),
            };
            drop(drained);
            if let Some(state) = &self.async_state {
                state.clear_inflight(py);
            }
        });
    }
}

/// The vectorcall entry of every `CachedFunction` (installed by [`install_vectorcall`]), in
/// the shape of `call_shell.rs`: its `begin` ([`vectorcall_fast`]) serves hits (without pyo3's
/// trampoline: no `Py` is dropped on that path, so pyo3's attach bookkeeping is not needed)
/// and everything but a decided synchronous miss; such a miss calls the wrapped function from
/// this entry's small frame, then `cached/miss.rs` stores the result. No panic escapes
/// (INV-M3).
///
/// # Safety
/// Called by CPython per the vectorcall protocol: `callable` is a live `CachedFunction`,
/// `args` holds `PyVectorcall_NARGS(nargsf)` positional arguments followed by one value per
/// name in `kwnames` (null or a tuple of str), all alive for the call; the thread is attached.
unsafe extern "C-unwind" fn vectorcall_entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: function contract, passed on.
    unsafe { call_shell::vectorcall::<CachedFunction>(callable, args, nargsf, kwnames) }
}

/// Releases what an insert displaced with plain `Py_DECREF`s (a `__del__` may run and call
/// back into the cache: the store is not borrowed).
///
/// # Safety
/// The thread is attached and no borrow of the store is held.
unsafe fn release_displaced(displaced: Displaced<StoredKey, Py<PyAny>>) {
    let (key, value) = match displaced {
        Displaced::Nothing => return,
        Displaced::Replaced(value) => (None, value),
        Displaced::Evicted(key, value) | Displaced::Refused(key, value) => (Some(key), value),
    };
    // SAFETY: we own one reference to each; attached thread (function contract).
    unsafe {
        if let Some(key) = key {
            ffi::Py_DECREF(key.into_ptr());
        }
        ffi::Py_DECREF(value.into_ptr());
    }
}

/// The memory backend's `begin`: a decided synchronous miss writes `pending`.
///
/// # Safety
/// As [`vectorcall_entry`].
#[inline(always)]
unsafe fn vectorcall_fast(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
    pending: &mut MaybeUninit<miss::Pending>,
) -> *mut ffi::PyObject {
    // SAFETY: the thread is attached (vectorcall protocol); this is only a token.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `callable` is a live CachedFunction (only its type has this entry).
    let this = unsafe { call_shell::contents_of::<CachedFunction>(callable) };
    // SAFETY: vectorcall protocol (function contract).
    let (positional, kw_names, kw_values) = unsafe { split_vector_args(args, nargsf, kwnames) };
    // Room for a keyword call's key items (only initialised for such calls).
    let mut kw_buffer;
    // SAFETY: live arguments; on error the indicator is set and NULL is the answer. Calls
    // without keywords take the inlined positional builder (no call, no frame).
    let key = unsafe {
        if kw_values.is_empty() {
            CallKey::positional(positional)
        } else {
            kw_buffer = KwItems::new();
            CallKey::from_parts(py, positional, kw_names, kw_values, &mut kw_buffer)
        }
    };
    let Ok(mut key) = key else {
        return ptr::null_mut();
    };
    if this.typed {
        // SAFETY: attached thread, no store borrow; on failure the indicator is set.
        match unsafe { key.into_typed() } {
            Ok(typed) => key = typed,
            Err(()) => return ptr::null_mut(),
        }
    }
    let known_miss = match this.quick_lookup(py, key.view()) {
        QuickLookup::Hit(value) if this.async_state.is_none() => return value.into_ptr(),
        QuickLookup::Hit(value) => {
            return match Py::new(py, Ready::new(value)) {
                Ok(ready) => ready.into_ptr(),
                Err(err) => {
                    err.restore(py);
                    ptr::null_mut()
                }
            }
        }
        QuickLookup::Miss(miss) if this.async_state.is_none() => match this.lead_quick(key.hash) {
            Some(led) => {
                let stored = if this.ttl_ns == Some(0) {
                    None
                } else {
                    // SAFETY: attached thread, no borrow held (allocating a key tuple may run
                    // Python code).
                    match unsafe { key.to_stored_raw(py) } {
                        Ok(stored) => Some(stored),
                        Err(()) => {
                            this.leave_flight(led, key.hash);
                            return ptr::null_mut();
                        }
                    }
                };
                pending.write(miss::Pending::new(stored, key.hash, miss, led));
                return call_shell::call_function();
            }
            // Another thread computes it: the full path waits.
            None => Some(miss),
        },
        QuickLookup::Miss(miss) => Some(miss),
        QuickLookup::Undecided => None,
    };
    // SAFETY: the thread is attached (vectorcall protocol).
    unsafe {
        attached(|py| {
            let result = guard(|| {
                this.call(
                    py,
                    callable,
                    key,
                    Invocation::Vector {
                        args,
                        nargsf,
                        kwnames,
                    },
                    known_miss,
                )
            });
            into_result_ptr(py, result)
        })
    }
}
