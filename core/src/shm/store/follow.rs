//! Following the files (INV-S9): the per-read countdown, the rate-limited name check and the move to a new generation.

use super::{ShmStore, FILE_CHECK_READS};
use std::sync::atomic::Ordering::Relaxed;

use super::super::files::{self, len_if_same, open_generation, Files, FILE_CHECK_EVERY_NS};
use super::super::layout::{word, DataHeader};
use super::super::liveness::{self};
use super::super::raw;
use super::super::region::FileId;
use crate::error::{Error, ErrorKind, Result};

impl ShmStore {
    // ----------------------------------------------------------------------------------------
    // Files

    /// Every read counts down to a look at the coarse clock (the rate-limited name check of
    /// [`ShmStore::check_files`]); a retired generation (another process replaced or removed
    /// the files and said so) is followed at once. No system call on the way.
    #[inline(always)]
    pub(super) fn follow_files_on_read(&self) {
        let countdown = self.reads_until_check.load(Relaxed);
        if countdown != 0 && !self.generation().retired() {
            self.reads_until_check.store(countdown - 1, Relaxed);
            return;
        }
        self.follow_files_slow();
    }

    #[cold]
    #[inline(never)]
    pub(super) fn follow_files_slow(&self) {
        self.reads_until_check.store(FILE_CHECK_READS, Relaxed);
        let _ = self.check_files(false);
    }

    /// Whether the store gave up following its files (every call computes).
    #[inline(always)]
    pub(super) fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    /// Slow-path file checks, at most every [`FILE_CHECK_EVERY_NS`] (coarse clock) unless
    /// `force`, the generation was retired, or the SIGBUS safety net flagged it: our files
    /// were truncated (a foreign process broke INV-9), or the names now point at other files
    /// or none (replaced, removed, the directory itself removed and made again). Moves to a
    /// fresh generation when needed: truncated files are replaced; replaced or removed ones
    /// are followed only to files with our parameters (or recreated), never fought over.
    #[inline]
    pub(super) fn check_files(&self, force: bool) -> Result<()> {
        if self.files.is_none() {
            return Ok(());
        }
        let generation = self.generation();
        let now = crate::clock::coarse_now_ns();
        let due = force
            || generation.retired()
            || generation.faulted()
            || now.saturating_sub(self.last_file_check_ns.load(Relaxed)) >= FILE_CHECK_EVERY_NS;
        if !due {
            return Ok(());
        }
        self.check_files_due(force, now)
    }

    /// [`ShmStore::check_files`] past its cheap test: a check may be due.
    #[cold]
    #[inline(never)]
    fn check_files_due(&self, force: bool, now: u64) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let generation = self.generation();
        let index = self.generations.current_index();
        let last = self.last_file_check_ns.load(Relaxed);
        let faulted = generation.faulted();
        // A retired generation we already failed to leave waits for the rate limit.
        let retired = generation.retired() && self.unfollowable.load(Relaxed) != index + 1;
        let due = force || faulted || retired || now.saturating_sub(last) >= FILE_CHECK_EVERY_NS;
        if !due {
            return Ok(());
        }
        self.last_file_check_ns.store(now, Relaxed);
        let dir = match files.open_dir() {
            Ok(dir) => dir,
            Err(e) if faulted => return Err(e),
            Err(_) => return Ok(()),
        };
        liveness::revalidate(&dir);
        let dir_moved = dir.id().ok() != generation.dir_id;
        let shrunk = |name: &str, backing: &files::Backing, needed: u64| {
            len_if_same(&dir, name, backing.file_id()).is_some_and(|len| len < needed)
        };
        // The data file is mapped up to its budget but holds only the fixed part and the
        // heap made real so far (format 4): shorter than that is a truncation.
        let committed = generation
            .data
            .words()
            .get(word!(DataHeader, heap_committed))
            .map_or(0, |w| w.load(Relaxed))
            .min(self.geometry.region_bytes - self.geometry.fixed_bytes);
        let data_needed = match generation.data {
            files::Backing::Mapped(_) => self.geometry.fixed_bytes + committed,
            files::Backing::Heap(_) => 0,
        };
        let truncated = faulted
            || shrunk(&files.data_name, &generation.data, data_needed)
            || shrunk(
                &files.lock_name,
                &generation.lock,
                generation.lock.mapped_bytes(),
            );
        // A name that cannot be checked (e.g. a permission change) counts as unchanged.
        let moved_from =
            |name: &str, ours: Option<FileId>| dir.file_id(name).is_ok_and(|found| found != ours);
        let moved = dir_moved
            || moved_from(&files.data_name, generation.data.file_id())
            || moved_from(&files.lock_name, generation.lock.file_id());
        if !truncated && !moved {
            if retired {
                // Retired, but the names still point at it: nothing to move to yet.
                self.unfollowable.store(index + 1, Relaxed);
            }
            return Ok(());
        }
        let Ok(_refreshing) = self.refresh.try_lock() else {
            return if truncated {
                Err(truncated_error(files))
            } else {
                Ok(())
            };
        };
        if !std::ptr::eq(generation, self.generation()) {
            return Ok(()); // another thread already moved on
        }
        if !self.generations.has_room() {
            self.disabled.store(true, Relaxed);
            return Ok(());
        }
        let me = liveness::owner_word(&dir)?;
        match open_generation(files, &dir, &self.geometry, truncated, me) {
            Ok(fresh) => {
                if !self.generations.push(fresh) {
                    self.disabled.store(true, Relaxed);
                }
                generation.unregister_mapper(self.me.load(Relaxed));
                // Our id may differ in a new directory.
                self.me.store(me, Relaxed);
                self.me_fork_generation
                    .store(raw::fork_generation() + 1, Relaxed);
                Ok(())
            }
            Err(e) if truncated => Err(e),
            Err(_) => {
                self.unfollowable.store(index + 1, Relaxed);
                Ok(())
            }
        }
    }
}

pub(super) fn truncated_error(files: &Files) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "shared cache file {} was truncated by another process and could not be replaced",
            files.dir_path.join(&files.data_name).display()
        ),
    )
}
