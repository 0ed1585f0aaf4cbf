//! The shared backend's reusable key and value buffers.

/// Buffers larger than this are not kept for the next call.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// Buffers for the encoded key and the value bytes, reused across calls. A call takes
/// them and gives them back when done; a call made meanwhile (reentrant, from pickling
/// code or the wrapped function, or from another thread while this one runs Python code)
/// gets fresh ones (`owned == false`), dropped when it is done.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) owned: bool,
}

#[cfg(not(Py_GIL_DISABLED))]
pub(super) mod scratch_slot {
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
pub(super) mod scratch_slot {
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
pub(super) fn take_scratch() -> Scratch {
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
pub(super) fn put_scratch(mut scratch: Scratch) {
    trim(&mut scratch.key);
    trim(&mut scratch.value);
    scratch_slot::SLOT.put(scratch);
}
