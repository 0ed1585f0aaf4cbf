//! `typed=True` keys of the memory backend: the key of `f(1)` and of `f(1.0)` differ, as
//! `functools.lru_cache(typed=True)` makes them differ.
//!
//! A typed key is the untyped key's items followed by the type of each item (so two typed
//! keys are equal exactly when their items are equal pairwise *and* of the same types). One
//! exact `int` or `str` argument keeps its [`KIND_SINGLE`] form: the kind already fixes the
//! type (`True` and int subclasses are not exact ints, so they never take that form).
//!
//! This costs one tuple per call, hit or miss: `typed` is opt-in.

// `unsafe` allowed: the types are read through the C API (key-path module).
#![allow(unsafe_code)]

use pyo3::ffi;

use super::{finish, new_tuple_from, CallKey, KIND_SINGLE, MIX};

/// Mixed into a typed key's hash so that it differs from the untyped key of the same items.
const SEED_TYPED: u64 = 0x7c3b_1f0e_d2a9_4865;

impl CallKey<'_> {
    /// This key with the type of every item appended (see the module comment). On failure
    /// (no memory for the tuple) the error indicator is set.
    ///
    /// # Safety
    /// The thread is attached and no store borrow is held (allocating may run the collector).
    pub unsafe fn into_typed(self) -> Result<Self, ()> {
        if self.kind == KIND_SINGLE {
            return Ok(self);
        }
        let items = self.view().items;
        let types = items.iter().map(|&item| {
            // SAFETY: every item is live for the key's lifetime (constructor contract), and
            // so is its type (an object holds a reference to its type).
            unsafe { ffi::Py_TYPE(item) }.cast::<ffi::PyObject>()
        });
        // Types hash by identity: their addresses are mixed in directly, so `__hash__` of the
        // arguments still runs once per call (CPython's `test_lru_hash_only_once`).
        let hash = types.clone().fold(self.hash ^ SEED_TYPED, |h, ty| {
            (h.rotate_left(26) ^ ty as u64).wrapping_mul(MIX)
        });
        let len = 2 * items.len();
        // SAFETY: `len` live objects (the items and their types); attached thread, no
        // borrow (caller contract).
        let built = unsafe { new_tuple_from(len, items.iter().copied().chain(types)) }?;
        Ok(CallKey {
            kind: self.kind,
            args: self.args,
            args_tuple: std::ptr::null_mut(),
            built: Some(built),
            hash: finish(hash),
        })
    }
}
