//! The generations of a store: the append-only list of file pairs it moved through, and the
//! one in use, found by the hit path with one load.
#![allow(unsafe_code)] // One pointer to a set, never-moved `OnceLock` (see `current`).

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Acquire, Ordering::Relaxed};
use std::sync::OnceLock;

use super::files::Generation;

/// Generations a store can move through: [`CHUNKS`] x [`CHUNK`]. A store that would need
/// more stops caching (every call computes) instead of serving files it cannot follow.
const CHUNK: usize = 64;
const CHUNKS: usize = 64;

/// The generations of a store: an append-only list (a store may move through up to
/// `CHUNKS * CHUNK` pairs of files) and the index of the one in use.
pub struct Generations {
    chunks: [OnceLock<Box<[OnceLock<Generation>; CHUNK]>>; CHUNKS],
    current: AtomicUsize,
    /// The generation at `current`, for the hit path: one load instead of two chunk lookups.
    current_ptr: AtomicPtr<Generation>,
    len: AtomicUsize,
}

impl Generations {
    pub fn new(first: Generation) -> Generations {
        let generations = Generations {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            current: AtomicUsize::new(0),
            current_ptr: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
        };
        generations.push(first);
        generations
    }

    fn slot(&self, index: usize) -> Option<&OnceLock<Generation>> {
        let chunk = self
            .chunks
            .get(index / CHUNK)?
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        chunk.get(index % CHUNK)
    }

    fn get(&self, index: usize) -> Option<&Generation> {
        self.chunks
            .get(index / CHUNK)?
            .get()?
            .get(index % CHUNK)?
            .get()
    }

    /// The generation in use.
    #[inline(always)]
    pub fn current(&self) -> &Generation {
        let current = self.current_ptr.load(Acquire);
        // SAFETY: `current_ptr` is only ever set (by `push`, with Release, after the slot's
        // `OnceLock` was set) to a generation inside `self.chunks`, whose boxed chunks and
        // set `OnceLock`s are never replaced, moved or dropped before `self` is: the pointee
        // lives as long as `&self`, and is only ever read through shared references.
        // `new` pushes generation 0 before returning, so the pointer is never null here
        // (checked all the same: a null falls back to the indexed lookup).
        match unsafe { current.as_ref() } {
            Some(generation) => generation,
            None => self
                .get(self.current.load(Acquire))
                .or_else(|| self.get(0))
                .expect("generation 0 is set at construction"),
        }
    }

    /// The index of the generation in use.
    pub fn current_index(&self) -> usize {
        self.current.load(Acquire)
    }

    /// Every generation so far.
    pub fn all(&self) -> impl Iterator<Item = &Generation> {
        (0..self.len.load(Acquire)).filter_map(|i| self.get(i))
    }

    /// Appends `generation` and makes it current; the previous one is detached. The caller
    /// serializes calls. False (the generation dropped) when the list is full.
    pub fn push(&self, generation: Generation) -> bool {
        let index = self.len.load(Relaxed);
        let Some(slot) = self.slot(index) else {
            return false;
        };
        if slot.set(generation).is_err() {
            return false;
        }
        self.len
            .store(index + 1, std::sync::atomic::Ordering::Release);
        let Some(pushed) = slot.get() else {
            return false;
        };
        let previous = (index > 0).then(|| self.current());
        self.current
            .store(index, std::sync::atomic::Ordering::Release);
        self.current_ptr.store(
            std::ptr::from_ref(pushed).cast_mut(),
            std::sync::atomic::Ordering::Release,
        );
        if let Some(previous) = previous {
            previous.data.detach();
            previous.lock.detach();
        }
        true
    }

    /// Whether another generation can still be added.
    pub fn has_room(&self) -> bool {
        self.len.load(Relaxed) < CHUNK * CHUNKS
    }
}
