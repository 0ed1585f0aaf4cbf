//! The seqlock and the crash-safe writer lock, generic over where their two words live
//! ([`Word`]): `AtomicU64`s inside the mapped lock file in production, the model checker's
//! atomics of [`crate::sync`] in `tests/rust/loom_seqlock.rs` and `shuttle_seqlock.rs`, which
//! run *this* code under loom and shuttle.
//!
//! # Protocol (INV-S3)
//!
//! * **Readers** take no lock: `s = read_begin()` (Acquire); if `s` is odd a write is in
//!   progress, retry; otherwise copy the data out with relaxed atomic loads, then
//!   `read_validate(s)` (Acquire fence, reload): if the sequence moved, discard the copy.
//! * **Writers** hold the lock word, then `write_begin()` makes the sequence odd (Release
//!   fence after it), write with relaxed atomic stores, `write_end()` makes it even (Release).
//! * **Owner** of the lock word: the owner's liveness id (`liveness.rs`: a presence file the
//!   kernel unlocks when the process dies, in whatever PID namespace), 0 = free.
//! * **Recovery** (INV-8): a waiter that finds the owner dead ([`Liveness`]) takes the lock
//!   over with a compare-exchange on the exact dead owner word; a write section that starts on
//!   an odd sequence was interrupted by a crash, and the caller must reset the protected data
//!   before ending the section (INV-S4). The caller also fences the old owner (INV-S8): the
//!   store bumps its table epoch on every takeover, and `write_end` only ever moves the
//!   sequence from the odd value its own section set.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A 64-bit atomic word plus the matching fence: implemented for std's `AtomicU64` (the
/// mapping) and, under loom or shuttle, for the atomics of [`crate::sync`].
pub trait Word {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    /// An atomic fence of the same memory model as the word.
    fn fence(order: Ordering)
    where
        Self: Sized;
}

/// Implements [`Word`] for an atomic type by forwarding to its own methods and fence.
macro_rules! impl_word {
    ($atomic:ty, $fence:path) => {
        impl Word for $atomic {
            #[inline]
            fn load(&self, order: Ordering) -> u64 {
                <$atomic>::load(self, order)
            }
            #[inline]
            fn store(&self, value: u64, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
            #[inline]
            fn compare_exchange(
                &self,
                current: u64,
                new: u64,
                success: Ordering,
                failure: Ordering,
            ) -> Result<u64, u64> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
            #[inline]
            fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
                <$atomic>::fetch_add(self, value, order)
            }
            #[inline]
            fn fence(order: Ordering) {
                $fence(order)
            }
        }
    };
}

// The mapping's words: always std's atomics, whatever the build, because the kernel shares
// them between processes.
impl_word!(std::sync::atomic::AtomicU64, std::sync::atomic::fence);

// The sync shim's atomics, when they are a model checker's (loom or shuttle) rather than std's.
#[cfg(any(warp_loom, feature = "shuttle"))]
impl_word!(crate::sync::AtomicU64, crate::sync::fence);

/// An open write section: the odd sequence value it set, its holder, and whether the previous
/// writer died inside its own section (the sequence was already odd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "end the section with write_end"]
pub struct WriteSection {
    odd: u64,
    me: u64,
    /// The sequence was odd at `write_begin`: a writer crashed mid-write, the protected data
    /// may be torn and must be reset before `write_end` (INV-S4).
    pub interrupted: bool,
}

/// Largest owner id: ids share the state word with the 32-bit sequence.
pub const OWNER_MAX: u64 = u32::MAX as u64;
const SEQ_MASK: u64 = u32::MAX as u64;

#[inline(always)]
fn owner_of(state: u64) -> u64 {
    state >> 32
}

#[inline(always)]
fn seq_of(state: u64) -> u64 {
    state & SEQ_MASK
}

#[inline(always)]
fn pack(owner: u64, seq: u64) -> u64 {
    (owner << 32) | (seq & SEQ_MASK)
}

/// The seqlock and writer lock over one *state* word: the owner id (0 = free) in the high 32
/// bits, the sequence in the low 32. One word, so that every change of the sequence is a
/// compare-exchange that also checks who holds the lock: a writer whose lock was taken over
/// (judged dead while still running) can neither begin nor end a section (INV-S8).
#[derive(Debug)]
pub struct SeqLock<'a, W: Word> {
    state: &'a W,
}

impl<W: Word> Clone for SeqLock<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word> Copy for SeqLock<'_, W> {}

impl<'a, W: Word> SeqLock<'a, W> {
    pub fn new(state: &'a W) -> Self {
        SeqLock { state }
    }

    // --- optimistic readers ---

    /// Starts a read: the sequence. An odd result means a write is in progress: do not trust
    /// anything read until a later `read_begin` returns an even value.
    #[inline]
    pub fn read_begin(&self) -> u64 {
        seq_of(self.state.load(Ordering::Acquire))
    }

    /// Ends a read started at `start`: true only if `start` was even and no write section
    /// began since, so every relaxed load in between saw one consistent state. (Taking or
    /// releasing the lock alone changes nothing a reader copies: only the sequence counts.)
    #[inline]
    pub fn read_validate(&self, start: u64) -> bool {
        W::fence(Ordering::Acquire);
        start & 1 == 0 && seq_of(self.state.load(Ordering::Relaxed)) == start
    }

    /// The current sequence (diagnostics, validation).
    pub fn sequence(&self) -> u64 {
        seq_of(self.state.load(Ordering::Relaxed))
    }

    // --- writer lock ---

    /// The owner id (0 = free).
    pub fn owner(&self) -> u64 {
        owner_of(self.state.load(Ordering::Relaxed))
    }

    /// Replaces the owner `from` by `to`, keeping the sequence; false once the owner is no
    /// longer `from`.
    #[inline]
    fn swap_owner(&self, from: u64, to: u64, success: Ordering) -> bool {
        let mut current = self.state.load(Ordering::Relaxed);
        while owner_of(current) == from {
            match self.state.compare_exchange(
                current,
                pack(to, seq_of(current)),
                success,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Takes the lock if it is free. `me` is nonzero and at most [`OWNER_MAX`].
    #[inline]
    pub fn try_lock(&self, me: u64) -> bool {
        me != 0 && me <= OWNER_MAX && self.swap_owner(0, me, Ordering::Acquire)
    }

    /// Takes the lock from `dead_owner` if it still holds it (exact compare-exchange, so two
    /// waiters cannot both take over).
    pub fn take_over(&self, dead_owner: u64, me: u64) -> bool {
        dead_owner != 0
            && me != 0
            && me <= OWNER_MAX
            && self.swap_owner(dead_owner, me, Ordering::Acquire)
    }

    /// Releases the lock if `me` holds it; false if someone took it over (we were judged dead).
    pub fn unlock(&self, me: u64) -> bool {
        me != 0 && self.swap_owner(me, 0, Ordering::Release)
    }

    /// Waits for the lock up to `max_wait`, taking it over from a dead owner (checked after
    /// [`OWNER_CHECK_AFTER`] of waiting and then every [`OWNER_CHECK_EVERY`]).
    pub fn acquire(&self, me: u64, max_wait: Duration, liveness: &impl Liveness) -> Acquire {
        for _ in 0..SPINS_BEFORE_YIELD {
            if self.owner() == 0 && self.try_lock(me) {
                return Acquire::Acquired;
            }
            std::hint::spin_loop();
        }
        let start = Instant::now();
        let mut next_check = OWNER_CHECK_AFTER;
        let mut rounds = 0u32;
        loop {
            let owner = self.owner();
            if owner == 0 {
                if self.try_lock(me) {
                    return Acquire::Acquired;
                }
                if me == 0 || me > OWNER_MAX {
                    return Acquire::Busy { owner };
                }
                continue;
            }
            let waited = start.elapsed();
            if waited >= next_check {
                next_check = waited + OWNER_CHECK_EVERY;
                if !liveness.owner_alive(owner) && self.take_over(owner, me) {
                    return Acquire::TookOver { dead_owner: owner };
                }
            }
            if waited >= max_wait {
                return Acquire::Busy { owner };
            }
            rounds += 1;
            if rounds < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    // --- write sections (the caller holds the lock) ---

    /// Makes the sequence odd, if `me` still holds the lock (`None`: it was taken over, write
    /// nothing). If the sequence already was odd, the previous writer died mid-write:
    /// `interrupted` is set and the caller must reset the data before [`Self::write_end`].
    pub fn write_begin(&self, me: u64) -> Option<WriteSection> {
        let current = self.state.load(Ordering::Relaxed);
        if me == 0 || owner_of(current) != me {
            return None;
        }
        let seq = seq_of(current);
        let interrupted = seq & 1 == 1;
        // Always move to a fresh odd value so no reader can validate across this section.
        let odd = seq_of(seq.wrapping_add(if interrupted { 2 } else { 1 }));
        self.state
            .compare_exchange(current, pack(me, odd), Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        W::fence(Ordering::Release);
        Some(WriteSection {
            odd,
            me,
            interrupted,
        })
    }

    /// Makes the sequence even again, publishing the section's writes; false (nothing done)
    /// if the lock was taken over meanwhile: the successor owns the sequence now (INV-S8).
    pub fn write_end(&self, section: WriteSection) -> bool {
        self.state
            .compare_exchange(
                pack(section.me, section.odd),
                pack(section.me, section.odd.wrapping_add(1)),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// Result of [`SeqLock::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Acquired,
    /// The previous owner was dead; the lock is ours now.
    TookOver {
        dead_owner: u64,
    },
    /// A live owner kept the lock for the whole wait.
    Busy {
        owner: u64,
    },
}

impl Acquire {
    pub fn held(&self) -> bool {
        !matches!(self, Acquire::Busy { .. })
    }
}

const SPINS_BEFORE_YIELD: u32 = 256;
/// Waiting this long for the lock makes a waiter check whether its owner is alive.
pub const OWNER_CHECK_AFTER: Duration = Duration::from_millis(2);
/// Then it re-checks this often, so a dead owner is replaced well within a second.
pub const OWNER_CHECK_EVERY: Duration = Duration::from_millis(20);

/// Decides whether a lock owner word names a live process.
pub trait Liveness {
    fn owner_alive(&self, owner: u64) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    struct Fixed(bool);
    impl Liveness for Fixed {
        fn owner_alive(&self, _owner: u64) -> bool {
            self.0
        }
    }

    #[test]
    fn a_write_invalidates_concurrent_reads() {
        let state = AtomicU64::new(0);
        let lock = SeqLock::new(&state);
        let start = lock.read_begin();
        assert!(lock.read_validate(start));
        assert!(lock.try_lock(7));
        assert!(!lock.try_lock(8), "mutual exclusion");
        assert!(
            lock.read_validate(start),
            "taking the lock alone changes no data"
        );
        let section = lock.write_begin(7).unwrap();
        assert!(!section.interrupted);
        assert_eq!(lock.read_begin() & 1, 1, "odd during the write");
        assert!(lock.write_end(section));
        assert!(lock.unlock(7));
        assert!(
            !lock.read_validate(start),
            "a read spanning the write is rejected"
        );
        assert!(lock.read_validate(lock.read_begin()));
        assert!(lock.write_begin(7).is_none(), "only the holder writes");
    }

    #[test]
    fn an_interrupted_section_is_reported() {
        let state = AtomicU64::new(0);
        let lock = SeqLock::new(&state);
        assert!(lock.try_lock(5));
        let _abandoned = lock.write_begin(5).unwrap(); // the writer "dies" here
        let odd = lock.sequence();
        assert!(!lock.read_validate(odd), "odd sequences never validate");
        // A waiter finds the owner dead and takes over.
        assert_eq!(
            lock.acquire(9, Duration::from_secs(1), &Fixed(false)),
            Acquire::TookOver { dead_owner: 5 }
        );
        assert!(!lock.unlock(5), "the dead owner no longer holds it");
        let section = lock.write_begin(9).unwrap();
        assert!(section.interrupted);
        assert!(lock.write_end(section));
        assert_eq!(lock.sequence() & 1, 0);
        assert!(lock.sequence() > odd);
        assert!(lock.unlock(9));
    }

    /// INV-S8: a writer judged dead while it still runs cannot begin a section after the
    /// takeover, nor end the one it was in, nor release its successor's lock.
    #[test]
    fn a_fenced_writer_can_neither_begin_nor_end_a_section() {
        let state = AtomicU64::new(0);
        let lock = SeqLock::new(&state);
        assert!(lock.try_lock(5));
        let stale = lock.write_begin(5).unwrap(); // writer 5 stalls here, judged dead
        assert!(lock.take_over(5, 9));
        let fresh = lock.write_begin(9).unwrap();
        assert!(fresh.interrupted);
        assert!(!lock.write_end(stale), "the fenced writer cannot publish");
        assert_eq!(
            lock.sequence() & 1,
            1,
            "still inside the successor's section"
        );
        assert!(lock.write_begin(5).is_none(), "nor begin another section");
        assert!(!lock.unlock(5), "nor release the lock");
        assert!(lock.write_end(fresh));
        assert!(!lock.write_end(stale));
        assert_eq!(lock.sequence() & 1, 0);
        assert_eq!(lock.owner(), 9);
        assert!(lock.unlock(9));
    }

    #[test]
    fn the_sequence_wraps_within_its_bits_and_owners_are_bounded() {
        let state = AtomicU64::new(u64::from(u32::MAX - 1));
        let lock = SeqLock::new(&state);
        assert!(!lock.try_lock(0));
        assert!(!lock.try_lock(OWNER_MAX + 1));
        assert!(lock.try_lock(OWNER_MAX));
        let section = lock.write_begin(OWNER_MAX).unwrap();
        assert_eq!(lock.sequence(), u64::from(u32::MAX));
        assert!(lock.write_end(section));
        assert_eq!(lock.sequence(), 0, "wrapped to an even value");
        assert_eq!(lock.owner(), OWNER_MAX);
    }

    #[test]
    fn a_live_owner_makes_waiters_give_up_in_bounded_time() {
        let state = AtomicU64::new(0);
        let lock = SeqLock::new(&state);
        assert!(lock.try_lock(5));
        let start = Instant::now();
        assert_eq!(
            lock.acquire(9, Duration::from_millis(30), &Fixed(true)),
            Acquire::Busy { owner: 5 }
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn threads_never_overlap_in_write_sections() {
        let words = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let handles: Vec<_> = (1..=4u64)
            .map(|me| {
                let words = Arc::clone(&words);
                std::thread::spawn(move || {
                    let lock = SeqLock::new(&words[0]);
                    for _ in 0..2000 {
                        let got = lock.acquire(me, Duration::from_secs(10), &Fixed(true));
                        assert_eq!(got, Acquire::Acquired);
                        let section = lock.write_begin(me).unwrap();
                        let v = words[1].load(Ordering::Relaxed);
                        words[1].store(v + 1, Ordering::Relaxed);
                        assert!(lock.write_end(section));
                        assert!(lock.unlock(me));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(words[1].load(Ordering::Relaxed), 8000);
        assert_eq!(SeqLock::new(&words[0]).sequence(), 16000);
    }
}
