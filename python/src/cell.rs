//! Access to the store of one cached function, chosen at compile time:
//!
//! * GIL-enabled CPython: [`StoreCell`] is a cell with a borrow flag and no lock and no atomic
//!   read-modify-write. The GIL serializes every access, and the adapter never runs Python code
//!   while it holds a borrow (INV-3), so the flag only catches adapter bugs.
//! * free-threaded CPython (`Py_GIL_DISABLED`): a [`SyncMemStore`] (one `RwLock` around one
//!   store, INV-M2): hits under the read lock, everything else under the write lock.
//!
//! Both hand out guards that dereference to the [`MemStore`], so the call path is written
//! once.

// `unsafe` allowed: the cell lends its store out itself (under the GIL or its lock).
#![allow(unsafe_code)]

use pyo3::prelude::*;
use warp_cache_core::mem::MemStore;

use crate::key::StoredKey;

/// What one cached function stores: keys built from the call, the returned objects.
pub type Store = MemStore<StoredKey, Py<PyAny>>;

#[cfg(Py_GIL_DISABLED)]
pub use free_threaded::StoreCell;
#[cfg(not(Py_GIL_DISABLED))]
pub use gil::StoreCell;

#[cfg(not(Py_GIL_DISABLED))]
mod gil {
    use std::cell::{Cell, UnsafeCell};
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};

    use pyo3::prelude::*;

    use super::Store;
    use crate::errors::store_busy;

    /// A cell whose only synchronisation is the GIL.
    pub struct StoreCell {
        borrowed: Cell<bool>,
        store: UnsafeCell<Store>,
    }

    // SAFETY: every access to `borrowed` and `store` goes through `borrow`, which requires a
    // `Python` token: on a GIL-enabled interpreter the calling thread holds the GIL for as long
    // as the token (and so the guard) lives, and the guard never runs code that could release
    // it (INV-3), so no two threads ever touch the cell at once. `gc_view` is only called by
    // the garbage collector, which also runs with the GIL held.
    unsafe impl Sync for StoreCell {}

    /// Exclusive access to the store for the life of the guard.
    pub struct Guard<'a> {
        cell: &'a StoreCell,
        /// The guard must stay on the thread that holds the GIL.
        _not_send: PhantomData<*const ()>,
    }

    impl StoreCell {
        pub fn new(store: Store) -> Self {
            StoreCell {
                borrowed: Cell::new(false),
                store: UnsafeCell::new(store),
            }
        }

        fn borrow<'a>(&'a self, _py: Python<'a>) -> PyResult<Guard<'a>> {
            if self.borrowed.replace(true) {
                return Err(store_busy());
            }
            Ok(Guard {
                cell: self,
                _not_send: PhantomData,
            })
        }

        /// Access for the quick hit path, or `None` if the store is borrowed (then the caller
        /// takes the full path, which reports it).
        #[inline]
        pub fn try_read<'a>(&'a self, _py: Python<'a>) -> Option<Guard<'a>> {
            if self.borrowed.replace(true) {
                return None;
            }
            Some(Guard {
                cell: self,
                _not_send: PhantomData,
            })
        }

        /// Access for the quick miss path's insert, or `None` if the store is borrowed.
        #[inline]
        pub fn try_write<'a>(&'a self, py: Python<'a>) -> Option<Guard<'a>> {
            self.try_read(py)
        }

        /// Access for lookups (exclusive under the GIL).
        #[inline]
        pub fn read<'a>(&'a self, py: Python<'a>) -> PyResult<Guard<'a>> {
            self.borrow(py)
        }

        /// Access for inserts, removals and clear.
        #[inline]
        pub fn write<'a>(&'a self, py: Python<'a>) -> PyResult<Guard<'a>> {
            self.borrow(py)
        }

        /// The store for the garbage collector's traversal, unless it is borrowed (then the
        /// traversal skips it: the collector merely keeps the entries alive this round).
        ///
        /// # Safety
        /// Only from `__traverse__`, which the collector calls with the GIL held.
        pub unsafe fn gc_view(&self) -> Option<&Store> {
            if self.borrowed.get() {
                return None;
            }
            // SAFETY: the GIL is held (caller contract) and no guard exists (flag clear), so
            // nothing mutates the store while the collector reads it.
            Some(unsafe { &*self.store.get() })
        }
    }

    impl Deref for Guard<'_> {
        type Target = Store;
        #[inline]
        fn deref(&self) -> &Store {
            // SAFETY: this guard is the only one (flag set in `borrow`) and the GIL is held.
            unsafe { &*self.cell.store.get() }
        }
    }

    impl DerefMut for Guard<'_> {
        #[inline]
        fn deref_mut(&mut self) -> &mut Store {
            // SAFETY: as in `deref`; `&mut self` makes this the only live reference.
            unsafe { &mut *self.cell.store.get() }
        }
    }

    impl Drop for Guard<'_> {
        #[inline]
        fn drop(&mut self) {
            self.cell.borrowed.set(false);
        }
    }

    /// Counts a hit: increments are serialized by the GIL, so no locked instruction.
    #[inline]
    pub fn count_hit(store: &Store) {
        store.counters().record_hit_serialized();
    }

    #[inline]
    pub fn count_miss(store: &Store) {
        store.counters().record_miss_serialized();
    }
}

#[cfg(not(Py_GIL_DISABLED))]
pub use gil::{count_hit, count_miss};

#[cfg(Py_GIL_DISABLED)]
mod free_threaded {
    use pyo3::prelude::*;
    use warp_cache_core::mem::SyncMemStore;
    use warp_cache_core::sync::{ReadGuard, WriteGuard};

    use super::Store;
    use crate::key::StoredKey;

    /// One lock around one store: exact SIEVE and the bound hold under any interleaving.
    pub struct StoreCell {
        store: SyncMemStore<StoredKey, Py<PyAny>>,
    }

    impl StoreCell {
        pub fn new(store: Store) -> Self {
            let max_size = store.max_size();
            let ttl_ns = store.ttl_ns();
            StoreCell {
                store: SyncMemStore::new(max_size, ttl_ns)
                    .expect("parameters already accepted by MemStore::new"),
            }
        }

        #[inline]
        pub fn try_read<'a>(&'a self, _py: Python<'a>) -> Option<ReadGuard<'a, Store>> {
            Some(self.store.read())
        }

        #[inline]
        pub fn try_write<'a>(&'a self, _py: Python<'a>) -> Option<WriteGuard<'a, Store>> {
            Some(self.store.write())
        }

        #[inline]
        pub fn read<'a>(&'a self, _py: Python<'a>) -> PyResult<ReadGuard<'a, Store>> {
            Ok(self.store.read())
        }

        #[inline]
        pub fn write<'a>(&'a self, _py: Python<'a>) -> PyResult<WriteGuard<'a, Store>> {
            Ok(self.store.write())
        }

        /// # Safety
        /// Only from `__traverse__`. The collector stops the world first; a thread holding this
        /// lock is inside a Rust-only critical section that never waits for the interpreter
        /// (INV-3), so it releases the lock before it can stop and this never deadlocks.
        pub unsafe fn gc_view(&self) -> Option<ReadGuard<'_, Store>> {
            Some(self.store.read())
        }
    }

    #[inline]
    pub fn count_hit(store: &Store) {
        store.counters().record_hit();
    }

    #[inline]
    pub fn count_miss(store: &Store) {
        store.counters().record_miss();
    }
}

#[cfg(Py_GIL_DISABLED)]
pub use free_threaded::{count_hit, count_miss};
