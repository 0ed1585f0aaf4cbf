//! Stores over private copies of a file pair, for the read-only inspector (`shm/inspect.rs`):
//! the same views, counters and invariant check as a mapped store, over heap words that no
//! other process can see, so nothing is ever locked or written in the files themselves.

use std::sync::atomic::AtomicU64;

use super::super::header::{check_header, lock_nonce_of, lock_words_valid};
use super::super::layout::{Geometry, LOCK_FILE_WORDS};
use super::{ShmInfo, ShmStore};
use crate::corruption::Corruption;
use crate::policy;

impl ShmStore {
    /// A heap store over copies of a pair's words, laid out by `geometry` (computed by the
    /// caller from the copied header, then checked here with everything else). `None` when a
    /// copy is shorter than its layout.
    pub(crate) fn over_copies(
        geometry: Geometry,
        data: Box<[AtomicU64]>,
        lock: Box<[AtomicU64]>,
    ) -> Option<ShmStore> {
        (data.len() >= geometry.region_words() && lock.len() >= LOCK_FILE_WORDS)
            .then(|| Self::over_heap(geometry, None, data, lock))
    }

    /// [`ShmStore::validate`] of a private copy: the same header checks and the same invariant
    /// check, without the writer lock (nobody else uses a copy). An odd sequence is
    /// [`Corruption::InterruptedWrite`].
    pub(crate) fn validate_copy(&self) -> std::result::Result<(), Corruption> {
        let view = self.view()?;
        let header: Vec<u64> = view
            .header
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let lock_nonce = lock_nonce_of(view.lock_words);
        check_header(&header, &self.geometry, Some(lock_nonce)).map_err(Corruption::DataHeader)?;
        if !lock_words_valid(view.lock_words) {
            return Err(Corruption::LockHeader);
        }
        if view.lock.sequence() & 1 == 1 {
            return Err(Corruption::InterruptedWrite);
        }
        self.validate_locked(&view, view.epoch())
    }

    /// The counters of a copy, as [`ShmStore::info`] reports them.
    pub(crate) fn info_copy(&self) -> crate::error::Result<ShmInfo> {
        self.info_once()
    }

    /// Key plus value bytes of the entries of a copy (meaningful once it validated).
    pub(crate) fn payload_bytes_copy(&self) -> crate::error::Result<u64> {
        let view = self.view()?;
        let slots = view.slots();
        Ok(policy::order_from_head(&slots)
            .into_iter()
            .map(|slot| {
                let lens = view.arena.lens(slot);
                u64::from(lens.key) + u64::from(lens.value)
            })
            .sum())
    }
}
