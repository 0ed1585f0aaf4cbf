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
    /// Sleeps while the word's high 32 bits are `expected`, at most `timeout`; may return
    /// early (callers look again). A futex in the mapping (`futex.rs`); a yield under a
    /// model checker, whose scheduler must run the other threads.
    fn wait_while_high(&self, expected: u32, timeout: Duration);
    /// Wakes one sleeper of [`Word::wait_while_high`] on this word.
    fn wake_one(&self);
}

/// Implements [`Word`] for an atomic type by forwarding to its own methods and fence.
macro_rules! impl_word {
    ($atomic:ty, $fence:path, $wait:path, $wake:path) => {
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
            #[inline]
            fn wait_while_high(&self, expected: u32, timeout: Duration) {
                $wait(self, expected, timeout)
            }
            #[inline]
            fn wake_one(&self) {
                $wake(self)
            }
        }
    };
}

// The mapping's words: always std's atomics, whatever the build, because the kernel shares
// them between processes.
#[cfg(unix)]
impl_word!(
    std::sync::atomic::AtomicU64,
    std::sync::atomic::fence,
    super::futex::wait_while_high,
    super::futex::wake_one
);
#[cfg(not(unix))]
impl_word!(
    std::sync::atomic::AtomicU64,
    std::sync::atomic::fence,
    sleep_briefly,
    wake_nobody
);

// The sync shim's atomics, when they are a model checker's (loom or shuttle) rather than std's.
#[cfg(any(warp_loom, feature = "shuttle"))]
impl_word!(
    crate::sync::AtomicU64,
    crate::sync::fence,
    yield_to_the_model,
    wake_nobody
);

#[cfg(any(not(unix), warp_loom, feature = "shuttle"))]
fn wake_nobody<W>(_word: &W) {}

#[cfg(not(unix))]
fn sleep_briefly(_word: &std::sync::atomic::AtomicU64, _expected: u32, timeout: Duration) {
    std::thread::sleep(timeout.min(Duration::from_micros(50)));
}

#[cfg(any(warp_loom, feature = "shuttle"))]
fn yield_to_the_model(_word: &crate::sync::AtomicU64, _expected: u32, _timeout: Duration) {
    crate::sync::yield_now();
}

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
    /// The count of writers asleep on `state` (`LockFile::lock_waiters`), if there is one:
    /// without it, waiters yield and sleep in short steps instead.
    waiters: Option<&'a W>,
}

impl<W: Word> Clone for SeqLock<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word> Copy for SeqLock<'_, W> {}

impl<'a, W: Word> SeqLock<'a, W> {
    /// A lock over `state` whose waiters never sleep on it (readers' views, models).
    pub fn new(state: &'a W) -> Self {
        SeqLock {
            state,
            waiters: None,
        }
    }

    /// A lock whose waiters sleep on `state` and count themselves in `waiters`, so that an
    /// unlock wakes one of them (every writer of a lock file must use this one: an unlock
    /// through [`SeqLock::new`] wakes nobody, and sleepers then wait out their timeout).
    pub fn with_waiters(state: &'a W, waiters: &'a W) -> Self {
        SeqLock {
            state,
            waiters: Some(waiters),
        }
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
    /// Wakes one sleeping waiter if any counted itself.
    pub fn unlock(&self, me: u64) -> bool {
        // SeqCst with the waiter's count-then-look (`sleep_while_owner`): either this load
        // sees its count, or its look sees the lock free and it does not sleep.
        let released = me != 0 && self.swap_owner(me, 0, Ordering::SeqCst);
        if released {
            if let Some(waiters) = self.waiters {
                if waiters.load(Ordering::SeqCst) != 0 {
                    self.state.wake_one();
                }
            }
        }
        released
    }

    /// Sleeps up to `timeout` while `owner` holds the lock (or returns at once without a
    /// waiters word: the caller's own backoff applies).
    fn sleep_while_owner(&self, owner: u64, timeout: Duration) {
        let Some(waiters) = self.waiters else {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
            return;
        };
        waiters.fetch_add(1, Ordering::SeqCst);
        if owner_of(self.state.load(Ordering::SeqCst)) == owner {
            // The kernel compares the owner half again under its queue lock, so an unlock
            // between this look and the sleep makes the sleep return at once.
            self.state.wait_while_high(owner as u32, timeout);
        }
        waiters.fetch_add(u64::MAX, Ordering::SeqCst); // minus one, wrapping
    }

    /// Waits for the lock up to `max_wait`, taking it over from a dead owner (checked after
    /// [`OWNER_CHECK_AFTER`] of waiting and then every [`OWNER_CHECK_EVERY`]).
    pub fn acquire(&self, me: u64, max_wait: Duration, liveness: &impl Liveness) -> Acquire {
        self.acquire_with_patience(me, max_wait, max_wait, liveness)
    }

    /// [`SeqLock::acquire`] that also gives up ([`Acquire::Stalled`]) once one hold made no
    /// progress for `patience`: the same owner and sequence all along, the owner alive (it
    /// is checked then, and taken over if dead). A writer in its section changes the
    /// sequence within microseconds; one that did not for `patience` is descheduled or
    /// stopped, and every waiter behind it would wait its whole time slice or more (issue 12:
    /// a convoy of all writers behind one preempted holder). For inserts, which may skip.
    pub fn acquire_with_patience(
        &self,
        me: u64,
        max_wait: Duration,
        patience: Duration,
        liveness: &impl Liveness,
    ) -> Acquire {
        for _ in 0..SPINS_BEFORE_YIELD {
            if self.owner() == 0 && self.try_lock(me) {
                return Acquire::Acquired;
            }
            std::hint::spin_loop();
        }
        let start = Instant::now();
        let mut next_check = OWNER_CHECK_AFTER;
        let mut rounds = 0u32;
        // The hold being waited for (state word) and since when (elapsed time).
        let mut hold = (self.state.load(Ordering::Relaxed), Duration::ZERO);
        loop {
            let state = self.state.load(Ordering::Relaxed);
            let owner = owner_of(state);
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
            if state != hold.0 {
                hold = (state, waited);
            }
            let stalled = waited.saturating_sub(hold.1) >= patience;
            if waited >= next_check || stalled {
                next_check = waited + OWNER_CHECK_EVERY;
                if !liveness.owner_alive(owner) && self.take_over(owner, me) {
                    return Acquire::TookOver { dead_owner: owner };
                }
            }
            if waited >= max_wait {
                return Acquire::Busy { owner };
            }
            if stalled {
                return Acquire::Stalled { owner };
            }
            rounds += 1;
            if rounds < YIELDS_BEFORE_SLEEP {
                std::thread::yield_now();
            } else {
                // Until the holder unlocks, or the next liveness check, the end of the wait
                // or of the patience with this hold.
                let until = next_check.min(max_wait).min(hold.1 + patience);
                self.sleep_while_owner(owner, until.saturating_sub(waited).max(SLEEP_MIN));
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
    /// A live owner made no progress for the whole patience
    /// ([`SeqLock::acquire_with_patience`]).
    Stalled {
        owner: u64,
    },
}

impl Acquire {
    pub fn held(&self) -> bool {
        !matches!(self, Acquire::Busy { .. } | Acquire::Stalled { .. })
    }
}

const SPINS_BEFORE_YIELD: u32 = 256;
/// Yields before a waiter sleeps on the lock word: a holder that is running finishes a
/// write section in a few microseconds; one that was descheduled is better slept on.
const YIELDS_BEFORE_SLEEP: u32 = 8;
/// Shortest sleep (a liveness check or the deadline due now still sleeps this long).
const SLEEP_MIN: Duration = Duration::from_micros(20);
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
    #[cfg(target_os = "linux")]
    fn an_unlock_wakes_a_sleeping_waiter_and_no_wake_is_lost() {
        // Each round a waiter sleeps on owner 5 with a 30 s timeout while the holder unlocks
        // at a varying moment (before, during or after the waiter counts itself and sleeps).
        // A lost wake would sleep out the timeout: the bound below is a liveness check.
        let words = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        for round in 0..200u32 {
            let lock = SeqLock::with_waiters(&words[0], &words[1]);
            assert!(lock.try_lock(5));
            let sleeper = {
                let words = Arc::clone(&words);
                std::thread::spawn(move || {
                    let lock = SeqLock::with_waiters(&words[0], &words[1]);
                    let start = Instant::now();
                    while lock.owner() == 5 {
                        lock.sleep_while_owner(5, Duration::from_secs(30));
                    }
                    start.elapsed()
                })
            };
            for _ in 0..(round % 8) * 200 {
                std::hint::spin_loop();
            }
            if round % 16 == 0 {
                std::thread::sleep(Duration::from_millis(2)); // surely asleep by now
            }
            assert!(lock.unlock(5));
            let slept = sleeper.join().unwrap();
            assert!(
                slept < Duration::from_secs(10),
                "round {round}: slept {slept:?}"
            );
            assert_eq!(
                words[1].load(Ordering::SeqCst),
                0,
                "the waiter uncounted itself"
            );
        }
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
