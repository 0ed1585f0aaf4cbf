//! Cache keys of the memory backend: built from a call's arguments, hashed and compared
//! through the C API without building an argument tuple on the lookup path. This is the
//! "Python FFI key path" where `unsafe` is allowed (design brief, convention 2).
//!
//! Key forms (`kind`), kept apart so no two kinds ever compare equal:
//! * [`KIND_SINGLE`]: one positional argument of exact type `int` or `str` and no keywords:
//!   the argument itself is the key (as `functools.lru_cache` does);
//! * [`KIND_ARGS`]: positional arguments only: the tuple of them;
//! * [`KIND_KW`]: with keywords: `(*args, MARK, name1, value1, name2, value2, ...)` with the
//!   keywords sorted by name, so `f(a=1, b=2)` and `f(b=2, a=1)` share an entry, and `MARK`
//!   is a private object, so `f(x=1)` never shares one with `f(MARK, "x", 1)`-like calls.
//!
//! Equality is tuple equality, item by item in order (identity first, then `==`). The lookup
//! first tries [`quick_eq`], which runs no Python code (identity, plain builtin scalars, exact
//! tuples of them); anything else is compared by [`slow_eq`] *after* the store's borrow has
//! been released (INV-3).

// `unsafe` allowed: keys are built, hashed and compared through the C API.
#![allow(unsafe_code)]

use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::slice;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

pub const KIND_SINGLE: u8 = 0;
pub const KIND_ARGS: u8 = 1;
pub const KIND_KW: u8 = 2;

/// Separates positional arguments from keywords in [`KIND_KW`] keys.
static KW_MARK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Creates the keyword marker (module initialisation).
pub fn init(py: Python<'_>) -> PyResult<()> {
    let object = py.import("builtins")?.getattr("object")?.call0()?.unbind();
    let _ = KW_MARK.set(py, object);
    Ok(())
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_ITEMS: [u64; 3] = [0x0, 0x1405_7b7e_f767_814f, 0x2545_f491_4f6c_dd1d];

/// Folds the high bits of a multi-item key's mixed hash into the low bits (where the store's
/// index picks the home bucket).
#[inline(always)]
fn finish(h: u64) -> u64 {
    h ^ (h >> 32)
}

/// log2 of the keys per hash block of [`hash_single`]: 16 consecutive ints share one random
/// spot of the index (16 control bytes, 16 8-byte slot entries: two cache lines). The block
/// size was chosen on the 1e6-entry miss benchmark (docs/performance.md, "The miss path at a
/// million entries").
const BLOCK_BITS: u32 = 4;
const SEED_BLOCK: u64 = 0x5851_f42d_4c95_7f2d;

/// The hash of a single exact `int`/`str` key. Python hashes an int to itself; this keeps
/// blocks of 16 consecutive ints together: the block (`hash >> 4`) is mixed to pick a random
/// spot in the table, the low 4 bits stay as they are, so 16 consecutive keys sit in 16
/// consecutive buckets. A million-entry cache filled and evicted in int order then touches a
/// new random index line every 16 keys instead of on every key, as `functools.lru_cache`'s
/// dict does (its probe starts at `hash & mask`), without that layout's weakness in
/// hashbrown: blocks land at random, so dense ranges of ints never form long runs of full
/// buckets (hashbrown's probe would crawl through them when two dense ranges overlap:
/// docs/performance.md). Random keys stay random.
/// The store's index positions an entry by the hash's low 32 bits (its check word, INV-M4,
/// from which it also derives hashbrown's tag), so the block layout holds for tables of up to
/// 2^32 buckets; the bits above only sharpen the full-hash compare.
#[inline(always)]
fn hash_single(py_hash: ffi::Py_hash_t) -> u64 {
    let x = py_hash as u64;
    let block = finish(((x >> BLOCK_BITS) ^ SEED_BLOCK).wrapping_mul(MIX));
    (block << BLOCK_BITS) | (x & ((1 << BLOCK_BITS) - 1))
}

/// For an exact `int` `x` that starts a block (`x % 16 == 0`): the hash [`hash_single`] gives
/// `x + 16`, the first key of the next block; `None` for any other object. A miss on `x`
/// prefetches that block's index lines (the store's `prefetch_home`), for the new key and for
/// the evicted one, so that a loop over consecutive ints finds each new block in cache, as the
/// hardware prefetcher serves `lru_cache`'s dict (docs/performance.md). Once per block, not
/// per key: a prefetch that misses the TLB is not free.
///
/// # Safety
/// `object` is a live object; the thread is attached.
#[inline]
unsafe fn next_block_hash(object: *mut ffi::PyObject) -> Option<u64> {
    // SAFETY: live object (function contract); an exact int's hash runs no Python code and
    // cannot fail.
    let py_hash = unsafe {
        if ffi::PyLong_CheckExact(object) == 0 {
            return None;
        }
        ffi::PyObject_Hash(object)
    };
    let block_start = py_hash & ((1 << BLOCK_BITS) - 1) == 0;
    block_start.then(|| hash_single(py_hash.wrapping_add(1 << BLOCK_BITS)))
}

/// Hashes items in order with `hash()`; may run Python code (`__hash__`). On failure the
/// Python error indicator is set and `Err(())` returned.
///
/// # Safety
/// Every pointer in `items` is a live object; the thread is attached and no store borrow is
/// held (INV-3).
unsafe fn hash_items_raw(kind: u8, items: &[*mut ffi::PyObject]) -> Result<u64, ()> {
    let mut h = SEED_ITEMS[kind as usize] ^ items.len() as u64;
    for &item in items {
        // SAFETY: function contract.
        let item_hash = unsafe { ffi::PyObject_Hash(item) };
        if item_hash == -1 {
            return Err(());
        }
        h = (h.rotate_left(26) ^ item_hash as u64).wrapping_mul(MIX);
    }
    Ok(finish(h))
}

/// The items of a tuple.
///
/// # Safety
/// `tuple` is a live `tuple` (or subclass: same item layout) that outlives `'a`. Tuples are
/// immutable, so the slice stays valid for as long as the tuple lives.
#[inline]
pub unsafe fn tuple_items<'a>(tuple: *mut ffi::PyObject) -> &'a [*mut ffi::PyObject] {
    // SAFETY: caller contract; `ob_item` holds `ob_size` initialised pointers.
    unsafe {
        let len = ffi::PyTuple_GET_SIZE(tuple) as usize;
        let first = (*tuple.cast::<ffi::PyTupleObject>()).ob_item.as_ptr();
        slice::from_raw_parts(first, len)
    }
}

/// The order of a call's keywords in its key: sorted by name, so `f(a=1, b=2)` and
/// `f(b=2, a=1)` give one key. Both backends build their keys in this order (the shared
/// backend encodes the same logical key as bytes: `convert::encode_key`). On failure (a name that
/// is not a string) the Python error indicator is set.
///
/// # Safety
/// Every pointer in `kw_names` is a live object; the thread is attached.
pub unsafe fn keyword_order(kw_names: &[*mut ffi::PyObject]) -> Result<Vec<usize>, ()> {
    // Names are distinct strings; a failed comparison is reported after the sort.
    let mut order: Vec<usize> = (0..kw_names.len()).collect();
    let mut compare_failed = false;
    if order.len() > 1 {
        order.sort_by(|&a, &b| {
            // SAFETY: names are live objects (caller contract); comparing two strings runs
            // no Python code; a non-string sets the error indicator.
            let c = unsafe { ffi::PyUnicode_Compare(kw_names[a], kw_names[b]) };
            // SAFETY: attached thread; reads the error indicator only.
            if c == -1 && unsafe { !ffi::PyErr_Occurred().is_null() } {
                compare_failed = true;
                return std::cmp::Ordering::Equal;
            }
            c.cmp(&0)
        });
    }
    if compare_failed {
        return Err(());
    }
    Ok(order)
}

/// An owned reference to a tuple this module built, released with a plain `Py_DECREF`.
/// Keys only exist on attached threads, so this is what pyo3's `Py` drop would do, without
/// its bookkeeping: the hit path never touches pyo3's deferred-release pool.
struct OwnedTuple(NonNull<ffi::PyObject>);

impl OwnedTuple {
    fn as_ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }
}

impl Drop for OwnedTuple {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a live tuple and the thread is attached (above).
        unsafe { ffi::Py_DECREF(self.0.as_ptr()) }
    }
}

/// A new tuple holding `items` (each gets a new reference); on failure the error indicator is
/// set. Allocates: may run the garbage collector, so never call it with the store borrowed.
///
/// # Safety
/// Every pointer in `items` is a live object; the thread is attached.
unsafe fn new_tuple_raw(items: &[*mut ffi::PyObject]) -> Result<OwnedTuple, ()> {
    // SAFETY: PyTuple_New returns a new reference or NULL with an exception set.
    let tuple = unsafe { ffi::PyTuple_New(items.len() as ffi::Py_ssize_t) };
    let tuple = NonNull::new(tuple).ok_or(())?;
    for (index, &item) in items.iter().enumerate() {
        // SAFETY: `tuple` is brand new with `items.len()` empty places; each item is live and
        // gets the new reference the tuple steals.
        unsafe {
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple.as_ptr(), index as ffi::Py_ssize_t, item);
        }
    }
    Ok(OwnedTuple(tuple))
}

/// A new tuple of `len` items taken from `items` (each gets a new reference), without an
/// intermediate buffer; on failure the error indicator is set. Allocates: may run the garbage
/// collector, so never call it with the store borrowed.
///
/// # Safety
/// `items` yields exactly `len` live objects; the thread is attached.
unsafe fn new_tuple_from(
    len: usize,
    items: impl Iterator<Item = *mut ffi::PyObject>,
) -> Result<OwnedTuple, ()> {
    // SAFETY: PyTuple_New returns a new reference or NULL with an exception set.
    let tuple = unsafe { ffi::PyTuple_New(len as ffi::Py_ssize_t) };
    let tuple = OwnedTuple(NonNull::new(tuple).ok_or(())?);
    for (index, item) in items.take(len).enumerate() {
        // SAFETY: `tuple` is brand new with `len` empty places (`take` keeps `index` below
        // it); each item is live and gets the new reference the tuple steals.
        unsafe {
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple.as_ptr(), index as ffi::Py_ssize_t, item);
        }
    }
    Ok(tuple)
}

/// Keyword counts up to which [`CallKey::from_parts`] sorts on the stack.
const SMALL_KEYWORDS: usize = 8;

/// Writes into `order` (as long as `names`) the indices of `names` sorted like
/// [`keyword_order`] does (insertion sort, no allocation). On failure (a name that is not a
/// string) the error indicator is set.
///
/// # Safety
/// Every pointer in `names` is a live object; the thread is attached.
unsafe fn sort_small(names: &[*mut ffi::PyObject], order: &mut [usize]) -> Result<(), ()> {
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i;
    }
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 {
            // SAFETY: live names (caller contract); comparing strings runs no Python code.
            let c = unsafe { ffi::PyUnicode_Compare(names[order[j - 1]], names[order[j]]) };
            // SAFETY: attached thread; reads the error indicator only.
            if c == -1 && unsafe { !ffi::PyErr_Occurred().is_null() } {
                return Err(());
            }
            if c <= 0 {
                break;
            }
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    Ok(())
}

/// [`new_tuple_raw`] as a `Py`.
///
/// # Safety
/// As [`new_tuple_raw`].
unsafe fn new_tuple(py: Python<'_>, items: &[*mut ffi::PyObject]) -> PyResult<Py<PyTuple>> {
    // SAFETY: caller contract.
    let tuple = unsafe { new_tuple_raw(items) }.map_err(|()| PyErr::fetch(py))?;
    let tuple = std::mem::ManuallyDrop::new(tuple);
    // SAFETY: `tuple` is an owned, fully initialised tuple; ownership moves to the `Py`.
    Ok(unsafe { Py::from_owned_ptr(py, tuple.as_ptr()) })
}

/// A key as stored in the cache.
pub struct StoredKey {
    kind: u8,
    /// [`KIND_SINGLE`]: the argument; otherwise an exact tuple built by this module.
    object: Py<PyAny>,
}

impl StoredKey {
    #[inline]
    pub fn next_block_hash(&self) -> Option<u64> {
        if self.kind != KIND_SINGLE {
            return None;
        }
        // SAFETY: `object` is a live object we hold a reference to.
        unsafe { next_block_hash(self.object.as_ptr()) }
    }

    pub fn clone_ref(&self, py: Python<'_>) -> StoredKey {
        StoredKey {
            kind: self.kind,
            object: self.object.clone_ref(py),
        }
    }

    pub fn object(&self) -> &Py<PyAny> {
        &self.object
    }

    /// Gives up the key's reference: the caller releases it (with `Py_DECREF` on paths that
    /// run outside pyo3's bookkeeping, where dropping a `Py` would be deferred).
    pub fn into_ptr(self) -> *mut ffi::PyObject {
        self.object.into_ptr()
    }

    fn items(&self) -> &[*mut ffi::PyObject] {
        if self.kind == KIND_SINGLE {
            // SAFETY: `Py<PyAny>` is `repr(transparent)` over `NonNull<ffi::PyObject>`, which has
            // the layout of `*mut ffi::PyObject`; the slice borrows `self.object`.
            unsafe { slice::from_raw_parts(ptr::from_ref(&self.object).cast(), 1) }
        } else {
            // SAFETY: for the other kinds `object` is an exact tuple this module built, kept
            // alive by `self`.
            unsafe { tuple_items(self.object.as_ptr()) }
        }
    }

    /// This key as a probe (for lookups by a stored key: async misses).
    pub fn view(&self, hash: u64) -> KeyView<'_> {
        KeyView {
            kind: self.kind,
            items: self.items(),
            hash,
        }
    }
}

/// A key as compared: its kind, the objects compared pairwise and its hash. Only this
/// module creates one (from a [`CallKey`] or a [`StoredKey`]), so its item pointers are live
/// objects for `'a`: that is what makes [`quick_eq`] and [`slow_eq`] sound.
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    kind: u8,
    items: &'a [*mut ffi::PyObject],
    hash: u64,
}

impl KeyView<'_> {
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// Items of a [`KIND_KW`] key of up to this many items are kept in a [`KwItems`] buffer on
/// the caller's stack: a hit with keywords then builds no tuple (the tuple is made on a miss,
/// to be stored).
pub const INLINE_KW_ITEMS: usize = 16;

/// Stack room for the items of a keyword call's key (borrowed pointers: positional arguments,
/// the marker, then name/value pairs in name order). The caller declares one and lends it to
/// [`CallKey::from_parts`] for as long as the key lives.
pub struct KwItems {
    items: [*mut ffi::PyObject; INLINE_KW_ITEMS],
}

impl KwItems {
    #[inline(always)]
    pub fn new() -> Self {
        KwItems {
            items: [ptr::null_mut(); INLINE_KW_ITEMS],
        }
    }
}

impl Default for KwItems {
    fn default() -> Self {
        Self::new()
    }
}

/// The key of one call, borrowed from its arguments where possible.
pub struct CallKey<'a> {
    kind: u8,
    /// Positional arguments, borrowed from the caller; for a [`KIND_KW`] key of up to
    /// [`INLINE_KW_ITEMS`] items, all its items, in the caller's [`KwItems`] buffer.
    args: &'a [*mut ffi::PyObject],
    /// The caller's argument tuple when the call came with one (reused as the stored key).
    args_tuple: *mut ffi::PyObject,
    /// [`KIND_KW`] with more than [`INLINE_KW_ITEMS`] items: the key tuple.
    built: Option<OwnedTuple>,
    pub hash: u64,
}

impl<'a> CallKey<'a> {
    /// Builds and hashes the key of a call. Runs `__hash__` of the arguments (Python code), so
    /// the store must not be borrowed.
    ///
    /// # Safety
    /// * every pointer in `args`, `kw_names` and `kw_values` is a live object for `'a`, and
    ///   `kw_names` (all `str`) and `kw_values` have the same length;
    /// * `args_tuple` is null or an exact tuple whose items are exactly `args`, alive for `'a`.
    pub unsafe fn build(
        py: Python<'_>,
        args: &'a [*mut ffi::PyObject],
        args_tuple: *mut ffi::PyObject,
        kw_names: &'a [*mut ffi::PyObject],
        kw_values: &'a [*mut ffi::PyObject],
        buffer: &'a mut KwItems,
    ) -> PyResult<Self> {
        // SAFETY: caller contract.
        let mut key = unsafe { Self::from_parts(py, args, kw_names, kw_values, buffer) }
            .map_err(|()| PyErr::fetch(py))?;
        key.args_tuple = args_tuple;
        Ok(key)
    }

    /// [`CallKey::build`] without a `PyErr`: on failure the error indicator is set. Holds no
    /// pyo3 reference, so it is usable on the hit path.
    ///
    /// # Safety
    /// As [`CallKey::build`] (without `args_tuple`); the thread is attached.
    #[inline]
    pub unsafe fn from_parts(
        py: Python<'_>,
        args: &'a [*mut ffi::PyObject],
        kw_names: &'a [*mut ffi::PyObject],
        kw_values: &'a [*mut ffi::PyObject],
        buffer: &'a mut KwItems,
    ) -> Result<Self, ()> {
        if kw_values.is_empty() {
            // SAFETY: caller contract.
            return unsafe { Self::positional(args) };
        }
        // Up to SMALL_KEYWORDS keywords are ordered in a stack array (no allocation on the
        // hit path); the order is `keyword_order`'s (names are distinct: one sorted order).
        let mut small = [0usize; SMALL_KEYWORDS];
        let heap;
        let order: &[usize] = if kw_names.len() <= SMALL_KEYWORDS {
            // SAFETY: caller contract (live names, attached thread).
            unsafe { sort_small(kw_names, &mut small[..kw_names.len()]) }?;
            &small[..kw_names.len()]
        } else {
            // SAFETY: caller contract (live names, attached thread).
            heap = unsafe { keyword_order(kw_names) }?;
            &heap
        };
        let Some(mark) = KW_MARK.get(py) else {
            // SAFETY: attached thread.
            unsafe {
                ffi::PyErr_SetString(
                    ffi::PyExc_RuntimeError,
                    c"warp_cache: module not initialised".as_ptr(),
                )
            };
            return Err(());
        };
        let len = args.len() + 1 + 2 * order.len();
        if len <= INLINE_KW_ITEMS {
            let items = &mut buffer.items[..len];
            let (positional, rest) = items.split_at_mut(args.len());
            positional.copy_from_slice(args);
            rest[0] = mark.as_ptr();
            for (pair, &index) in rest[1..].chunks_exact_mut(2).zip(order) {
                pair[0] = kw_names[index];
                pair[1] = kw_values[index];
            }
            let kw_items = &buffer.items[..len];
            // SAFETY: live items (caller contract, marker held by a static); attached thread,
            // no borrow.
            let hash = unsafe { hash_items_raw(KIND_KW, kw_items) }?;
            return Ok(CallKey {
                kind: KIND_KW,
                args: kw_items,
                args_tuple: ptr::null_mut(),
                built: None,
                hash,
            });
        }
        let keywords = order
            .iter()
            .flat_map(|&index| [kw_names[index], kw_values[index]]);
        let items = args.iter().copied().chain([mark.as_ptr()]).chain(keywords);
        // SAFETY: every item is live (caller contract; the marker is held by a static).
        let built = unsafe { new_tuple_from(len, items)? };
        // SAFETY: `built` is an exact tuple we own, its items live; attached thread, no borrow.
        let hash = unsafe { hash_items_raw(KIND_KW, tuple_items(built.as_ptr())) }?;
        Ok(CallKey {
            kind: KIND_KW,
            args,
            args_tuple: ptr::null_mut(),
            built: Some(built),
            hash,
        })
    }

    /// The key of a call with positional arguments only; allocates nothing and holds no
    /// reference, so it is usable before pyo3's attach bookkeeping. On failure (a `__hash__`
    /// raised) the Python error indicator is set and `Err(())` returned.
    ///
    /// # Safety
    /// Every pointer in `args` is a live object for `'a`; the thread is attached.
    #[inline(always)]
    pub unsafe fn positional(args: &'a [*mut ffi::PyObject]) -> Result<Self, ()> {
        if let [single] = args {
            // SAFETY: `single` is live (caller contract).
            let plain = unsafe {
                ffi::PyLong_CheckExact(*single) != 0 || ffi::PyUnicode_CheckExact(*single) != 0
            };
            if plain {
                // SAFETY: live exact int or str; their hash runs no Python code.
                let py_hash = unsafe { ffi::PyObject_Hash(*single) };
                if py_hash == -1 {
                    return Err(());
                }
                return Ok(CallKey {
                    kind: KIND_SINGLE,
                    args,
                    args_tuple: ptr::null_mut(),
                    built: None,
                    hash: hash_single(py_hash),
                });
            }
        }
        Ok(CallKey {
            kind: KIND_ARGS,
            args,
            args_tuple: ptr::null_mut(),
            built: None,
            // SAFETY: caller contract (live arguments, attached thread, no borrow).
            hash: unsafe { hash_items_raw(KIND_ARGS, args) }?,
        })
    }

    #[inline]
    pub fn view(&self) -> KeyView<'_> {
        let items = match &self.built {
            // SAFETY: `built` is an exact tuple owned by `self`.
            Some(built) => unsafe { tuple_items(built.as_ptr()) },
            None => self.args,
        };
        KeyView {
            kind: self.kind,
            items,
            hash: self.hash,
        }
    }

    /// The key to store after a miss (allocates a tuple for positional calls that came
    /// without one).
    pub fn to_stored(&self, py: Python<'_>) -> PyResult<StoredKey> {
        let object = match (&self.built, self.kind) {
            // SAFETY: `built` is a live tuple we own; the `Py` takes a new reference.
            (Some(built), _) => unsafe { Py::from_borrowed_ptr(py, built.as_ptr()) },
            (None, KIND_SINGLE) => {
                // SAFETY: the single argument is live for `'a` (constructor contract).
                unsafe { Py::from_borrowed_ptr(py, self.args[0]) }
            }
            // SAFETY: the items are live for `'a` (constructor contract).
            (None, KIND_KW) => unsafe { new_tuple(py, self.args)? }.into_any(),
            (None, _) if !self.args_tuple.is_null() => {
                // SAFETY: `args_tuple` is a live exact tuple of these arguments.
                unsafe { Py::from_borrowed_ptr(py, self.args_tuple) }
            }
            // SAFETY: the arguments are live for `'a`.
            (None, _) => unsafe { new_tuple(py, self.args)? }.into_any(),
        };
        Ok(StoredKey {
            kind: self.kind,
            object,
        })
    }

    /// [`CallKey::to_stored`] without a `PyErr` (on failure, only possible when a tuple must be
    /// allocated, the Python error indicator is set): for the miss path that runs outside
    /// pyo3's bookkeeping.
    ///
    /// # Safety
    /// The thread is attached and no store borrow is held (allocating may run the collector).
    pub unsafe fn to_stored_raw(&self, py: Python<'_>) -> Result<StoredKey, ()> {
        let object = match (&self.built, self.kind) {
            (Some(built), _) => built.as_ptr(),
            (None, KIND_SINGLE) => self.args[0],
            (None, kind) if kind == KIND_ARGS && !self.args_tuple.is_null() => self.args_tuple,
            (None, _) => {
                // SAFETY: the items are live for `'a`; caller contract (attached, no borrow).
                // The new tuple's reference moves into the key.
                let built = std::mem::ManuallyDrop::new(unsafe { new_tuple_raw(self.args) }?);
                // SAFETY: an owned reference to a live tuple.
                let object = unsafe { Py::from_owned_ptr(py, built.as_ptr()) };
                return Ok(StoredKey {
                    kind: self.kind,
                    object,
                });
            }
        };
        Ok(StoredKey {
            kind: self.kind,
            // SAFETY: a live object (owned by `self`, or borrowed from the call for `'a`);
            // the key takes a new reference.
            object: unsafe { Py::from_borrowed_ptr(py, object) },
        })
    }
}

/// Outcome of a comparison that may not run Python code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quick {
    Equal,
    NotEqual,
    /// Needs Python's `==` (user `__eq__`): compare after releasing the store.
    Unknown,
}

/// Plain builtin scalars whose `==` is C code that calls no Python code and allocates no
/// garbage-collected object; `==` across classes is always `False` (bytes vs str is decided
/// here so that `python -b` never warns from inside a borrow).
#[derive(PartialEq, Eq)]
enum Class {
    Number,
    Str,
    Bytes,
    None,
    Other,
}

/// # Safety
/// `object` is live.
#[inline]
unsafe fn class_of(object: *mut ffi::PyObject) -> Class {
    // SAFETY: live object (caller contract); only its type pointer is read.
    unsafe {
        let ty = ffi::Py_TYPE(object);
        if ty == ptr::addr_of_mut!(ffi::PyLong_Type)
            || ty == ptr::addr_of_mut!(ffi::PyFloat_Type)
            || ty == ptr::addr_of_mut!(ffi::PyBool_Type)
        {
            Class::Number
        } else if ty == ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            Class::Str
        } else if ty == ptr::addr_of_mut!(ffi::PyBytes_Type) {
            Class::Bytes
        } else if object == ffi::Py_None() {
            Class::None
        } else {
            Class::Other
        }
    }
}

const QUICK_TUPLE_DEPTH: u32 = 4;

/// # Safety
/// `a` and `b` are live.
unsafe fn quick_object_eq(a: *mut ffi::PyObject, b: *mut ffi::PyObject, depth: u32) -> Quick {
    if a == b {
        return Quick::Equal;
    }
    // SAFETY: live objects (caller contract).
    let (class_a, class_b) = unsafe { (class_of(a), class_of(b)) };
    if class_a != Class::Other && class_b != Class::Other {
        if class_a != class_b || class_a == Class::None {
            // Different plain classes never compare equal; None is only equal to itself.
            return Quick::NotEqual;
        }
        // SAFETY: both are live plain builtins of one class: their comparison is pure C.
        return match unsafe { ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ) } {
            1 => Quick::Equal,
            0 => Quick::NotEqual,
            _ => {
                // Cannot happen for these types; leave the decision to the slow path.
                // SAFETY: attached thread; clears the indicator set by the failed call.
                unsafe { ffi::PyErr_Clear() };
                Quick::Unknown
            }
        };
    }
    // SAFETY: live objects.
    let both_tuples = unsafe { ffi::PyTuple_CheckExact(a) != 0 && ffi::PyTuple_CheckExact(b) != 0 };
    if both_tuples && depth < QUICK_TUPLE_DEPTH {
        // SAFETY: exact tuples, alive for this call.
        let (items_a, items_b) = unsafe { (tuple_items(a), tuple_items(b)) };
        if items_a.len() != items_b.len() {
            return Quick::NotEqual;
        }
        // SAFETY: tuple items are live while their tuples are.
        return unsafe { quick_items_eq(items_a, items_b, depth + 1) };
    }
    Quick::Unknown
}

/// Pairwise, in order, stopping at the first pair that is not plainly equal (so the answer
/// is the one tuple `==` would give, without skipping an `__eq__` it would have called).
///
/// # Safety
/// Every pointer is live.
unsafe fn quick_items_eq(a: &[*mut ffi::PyObject], b: &[*mut ffi::PyObject], depth: u32) -> Quick {
    for (&x, &y) in a.iter().zip(b) {
        // SAFETY: caller contract.
        match unsafe { quick_object_eq(x, y, depth) } {
            Quick::Equal => {}
            other => return other,
        }
    }
    Quick::Equal
}

/// Compares a stored key with a probe without running Python code. Safe to call with the
/// store borrowed.
#[inline(always)]
pub fn quick_eq(stored: &StoredKey, probe: KeyView<'_>) -> Quick {
    if stored.kind != probe.kind {
        return Quick::NotEqual;
    }
    if let (KIND_SINGLE, [probe_item]) = (probe.kind, probe.items) {
        let stored_item = stored.object.as_ptr();
        if stored_item == *probe_item {
            return Quick::Equal;
        }
        // SAFETY: the stored key is alive with `stored`, the probe's item for the probe's
        // lifetime.
        return unsafe { quick_object_eq(stored_item, *probe_item, 0) };
    }
    let items = stored.items();
    if items.len() != probe.items.len() {
        return Quick::NotEqual;
    }
    // SAFETY: stored items live as long as `stored`; probe items are live for the probe's
    // lifetime (borrowed from the call or from a key we hold).
    unsafe { quick_items_eq(items, probe.items, 0) }
}

/// Tuple equality with Python's `==` (identity first), in order. Runs arbitrary Python code:
/// never call it with the store borrowed (INV-3). The caller holds `stored` (a strong
/// reference), so nothing compared here can be freed during the comparison.
pub fn slow_eq(py: Python<'_>, stored: &StoredKey, probe: KeyView<'_>) -> PyResult<bool> {
    if stored.kind != probe.kind {
        return Ok(false);
    }
    let items = stored.items();
    if items.len() != probe.items.len() {
        return Ok(false);
    }
    for (&a, &b) in items.iter().zip(probe.items) {
        if a == b {
            continue;
        }
        // SAFETY: both live (see above); the thread is attached.
        let outcome: c_int = unsafe { ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ) };
        match outcome {
            1 => {}
            0 => return Ok(false),
            _ => return Err(PyErr::fetch(py)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
mod typed;
