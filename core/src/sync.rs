//! Lock and atomic shim: the stores import their synchronisation from here so that the same
//! production code runs on `std`/`parking_lot` normally, under shuttle's randomized scheduler
//! with `--features shuttle`, and under loom's model checker with `RUSTFLAGS="--cfg warp_loom"`.

#[cfg(all(feature = "shuttle", not(warp_loom)))]
pub use shuttle::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(warp_loom)]
pub use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(all(not(feature = "shuttle"), not(warp_loom)))]
pub use std::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// Lets the other threads run: the model checker's own yield under shuttle or loom (their
/// schedulers must see it), the OS's otherwise.
#[inline]
pub fn yield_now() {
    #[cfg(warp_loom)]
    loom::thread::yield_now();
    #[cfg(all(feature = "shuttle", not(warp_loom)))]
    shuttle::thread::yield_now();
    #[cfg(all(not(feature = "shuttle"), not(warp_loom)))]
    std::thread::yield_now();
}

/// A reader-writer lock with one API over parking_lot (normal builds) and shuttle (schedule
/// testing). Poisoning is ignored: the stores keep their invariants across panics by never
/// panicking while a guard is held.
pub struct RwLock<T> {
    #[cfg(not(feature = "shuttle"))]
    inner: parking_lot::RwLock<T>,
    #[cfg(feature = "shuttle")]
    inner: shuttle::sync::RwLock<T>,
}

#[cfg(not(feature = "shuttle"))]
pub type ReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
#[cfg(not(feature = "shuttle"))]
pub type WriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;
#[cfg(feature = "shuttle")]
pub type ReadGuard<'a, T> = shuttle::sync::RwLockReadGuard<'a, T>;
#[cfg(feature = "shuttle")]
pub type WriteGuard<'a, T> = shuttle::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    pub fn new(value: T) -> Self {
        RwLock {
            inner: Self::make(value),
        }
    }

    #[cfg(not(feature = "shuttle"))]
    fn make(value: T) -> parking_lot::RwLock<T> {
        parking_lot::RwLock::new(value)
    }
    #[cfg(feature = "shuttle")]
    fn make(value: T) -> shuttle::sync::RwLock<T> {
        shuttle::sync::RwLock::new(value)
    }

    pub fn read(&self) -> ReadGuard<'_, T> {
        #[cfg(not(feature = "shuttle"))]
        return self.inner.read();
        #[cfg(feature = "shuttle")]
        return self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    pub fn write(&self) -> WriteGuard<'_, T> {
        #[cfg(not(feature = "shuttle"))]
        return self.inner.write();
        #[cfg(feature = "shuttle")]
        return self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RwLock { .. }")
    }
}
