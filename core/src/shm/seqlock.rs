//! The seqlock and the crash-safe writer lock, generic over where their two words live
//! ([`Word`]): `AtomicU64`s inside the mapped lock file in production, loom atomics in
//! `tests/rust/loom_seqlock.rs`, which runs *this* code under loom's model checker.
//!
//! # Protocol (INV-S3)
//!
//! * **Readers** take no lock: `s = read_begin()` (Acquire); if `s` is odd a write is in
//!   progress, retry; otherwise copy the data out with relaxed atomic loads, then
//!   `read_validate(s)` (Acquire fence, reload): if the sequence moved, discard the copy.
//! * **Writers** hold the lock word, then `write_begin()` makes the sequence odd (Release
//!   fence after it), write with relaxed atomic stores, `write_end()` makes it even (Release).
//! * **Owner** of the lock word: pid in the low 32 bits, a start token (low 32 bits of the
//!   process start time in clock ticks, `/proc/<pid>/stat` field 22) in the high 32 bits, so a
//!   reused pid is not mistaken for the dead owner. 0 = free.
//! * **Recovery** (INV-8): a waiter that finds the owner dead (no such pid, a zombie, or a different
//!   start token) takes the lock over with a compare-exchange on the exact dead owner word; a
//!   write section that starts on an odd sequence was interrupted by a crash, and the caller
//!   must reset the protected data before ending the section (INV-S4).
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A 64-bit atomic word plus the matching fence: implemented for std's `AtomicU64` (the
/// mapping) and, under `cfg(loom)`, for loom's.
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

impl Word for std::sync::atomic::AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        std::sync::atomic::AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        std::sync::atomic::AtomicU64::store(self, value, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        std::sync::atomic::AtomicU64::compare_exchange(self, current, new, success, failure)
    }
    #[inline]
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        std::sync::atomic::AtomicU64::fetch_add(self, value, order)
    }
    #[inline]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order)
    }
}

#[cfg(loom)]
impl Word for loom::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        loom::sync::atomic::AtomicU64::store(self, value, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        loom::sync::atomic::AtomicU64::compare_exchange(self, current, new, success, failure)
    }
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::fetch_add(self, value, order)
    }
    fn fence(order: Ordering) {
        loom::sync::atomic::fence(order)
    }
}

/// An open write section: the odd sequence value it set, and whether the previous writer
/// died inside its own section (the sequence was already odd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "end the section with write_end"]
pub struct WriteSection {
    odd: u64,
    /// The sequence was odd at `write_begin`: a writer crashed mid-write, the protected data
    /// may be torn and must be reset before `write_end` (INV-S4).
    pub interrupted: bool,
}

/// The seqlock and writer lock over a sequence word and an owner word.
#[derive(Debug)]
pub struct SeqLock<'a, W: Word> {
    seq: &'a W,
    owner: &'a W,
}

impl<W: Word> Clone for SeqLock<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word> Copy for SeqLock<'_, W> {}

impl<'a, W: Word> SeqLock<'a, W> {
    pub fn new(seq: &'a W, owner: &'a W) -> Self {
        SeqLock { seq, owner }
    }

    // --- optimistic readers ---

    /// Starts a read. An odd result means a write is in progress: do not trust anything read
    /// until a later `read_begin` returns an even value.
    #[inline]
    pub fn read_begin(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Ends a read started at `start`: true only if `start` was even and no write section
    /// began since, so every relaxed load in between saw one consistent state.
    #[inline]
    pub fn read_validate(&self, start: u64) -> bool {
        W::fence(Ordering::Acquire);
        start & 1 == 0 && self.seq.load(Ordering::Relaxed) == start
    }

    /// The current sequence (diagnostics, validation).
    pub fn sequence(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    // --- writer lock ---

    /// The owner word (0 = free).
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Relaxed)
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self, me: u64) -> bool {
        me != 0
            && self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes the lock from `dead_owner` if it still holds it (exact compare-exchange, so two
    /// waiters cannot both take over).
    pub fn take_over(&self, dead_owner: u64, me: u64) -> bool {
        dead_owner != 0
            && me != 0
            && self
                .owner
                .compare_exchange(dead_owner, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Releases the lock if `me` holds it; false if someone took it over (we were judged dead).
    pub fn unlock(&self, me: u64) -> bool {
        self.owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
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

    /// Makes the sequence odd. If it already was, the previous writer died mid-write:
    /// `interrupted` is set and the caller must reset the data before [`Self::write_end`].
    pub fn write_begin(&self) -> WriteSection {
        let current = self.seq.load(Ordering::Relaxed);
        let interrupted = current & 1 == 1;
        // Always move to a fresh odd value so no reader can validate across this section.
        let odd = if interrupted {
            current.wrapping_add(2)
        } else {
            current.wrapping_add(1)
        };
        self.seq.store(odd, Ordering::Relaxed);
        W::fence(Ordering::Release);
        WriteSection { odd, interrupted }
    }

    /// Makes the sequence even again, publishing the section's writes.
    pub fn write_end(&self, section: WriteSection) {
        self.seq
            .store(section.odd.wrapping_add(1), Ordering::Release);
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

/// Owner word of a process.
pub fn owner_word(pid: u32, start_token: u32) -> u64 {
    (u64::from(start_token) << 32) | u64::from(pid)
}

pub fn owner_pid(owner: u64) -> u32 {
    owner as u32
}

pub fn owner_token(owner: u64) -> u32 {
    (owner >> 32) as u32
}

/// State and start time of a process from `/proc/<pid>/stat` (fields 3 and 22).
#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may contain anything: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was `state`; field 22 is 19 further on.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some((state, start_ticks))
}

#[cfg(not(target_os = "linux"))]
fn proc_stat(_pid: u32) -> Option<(char, u64)> {
    None
}

/// The lock owner word of the calling process (recomputed after a fork: the pid is not cached).
pub fn current_owner() -> u64 {
    use std::sync::atomic::AtomicU64;
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let pid = super::raw::current_pid();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 && owner_pid(cached) == pid {
        return cached;
    }
    let token = proc_stat(pid).map_or(0, |(_, start)| start as u32);
    let word = owner_word(pid, token);
    CACHE.store(word, Ordering::Relaxed);
    word
}

/// Liveness from the operating system: `kill(pid, 0)`, then (Linux) the process state and
/// start time, so zombies and reused pids count as dead.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLiveness;

impl Liveness for ProcessLiveness {
    fn owner_alive(&self, owner: u64) -> bool {
        if owner == 0 {
            return false;
        }
        let pid = owner_pid(owner);
        if super::raw::pid_status(pid) == super::raw::PidStatus::Gone {
            return false;
        }
        match proc_stat(pid) {
            // A zombie (killed, not yet reaped) or dead task holds nothing.
            Some(('Z' | 'X' | 'x', _)) => false,
            Some((_, start)) => owner_token(owner) == 0 || start as u32 == owner_token(owner),
            // No /proc (macOS) or not readable: trust kill().
            None => true,
        }
    }
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
        let (seq, owner) = (AtomicU64::new(0), AtomicU64::new(0));
        let lock = SeqLock::new(&seq, &owner);
        let start = lock.read_begin();
        assert!(lock.read_validate(start));
        assert!(lock.try_lock(7));
        assert!(!lock.try_lock(8), "mutual exclusion");
        let section = lock.write_begin();
        assert!(!section.interrupted);
        assert_eq!(lock.read_begin() & 1, 1, "odd during the write");
        lock.write_end(section);
        assert!(lock.unlock(7));
        assert!(
            !lock.read_validate(start),
            "a read spanning the write is rejected"
        );
        assert!(lock.read_validate(lock.read_begin()));
    }

    #[test]
    fn an_interrupted_section_is_reported() {
        let (seq, owner) = (AtomicU64::new(0), AtomicU64::new(0));
        let lock = SeqLock::new(&seq, &owner);
        assert!(lock.try_lock(5));
        let _abandoned = lock.write_begin(); // the writer "dies" here
        let odd = lock.sequence();
        assert!(!lock.read_validate(odd), "odd sequences never validate");
        // A waiter finds the owner dead and takes over.
        assert_eq!(
            lock.acquire(9, Duration::from_secs(1), &Fixed(false)),
            Acquire::TookOver { dead_owner: 5 }
        );
        assert!(!lock.unlock(5), "the dead owner no longer holds it");
        let section = lock.write_begin();
        assert!(section.interrupted);
        lock.write_end(section);
        assert_eq!(lock.sequence() & 1, 0);
        assert!(lock.sequence() > odd);
        assert!(lock.unlock(9));
    }

    #[test]
    fn a_live_owner_makes_waiters_give_up_in_bounded_time() {
        let (seq, owner) = (AtomicU64::new(0), AtomicU64::new(0));
        let lock = SeqLock::new(&seq, &owner);
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
        let words = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let handles: Vec<_> = (1..=4u64)
            .map(|me| {
                let words = Arc::clone(&words);
                std::thread::spawn(move || {
                    let lock = SeqLock::new(&words[0], &words[1]);
                    for _ in 0..2000 {
                        let got = lock.acquire(me, Duration::from_secs(10), &Fixed(true));
                        assert_eq!(got, Acquire::Acquired);
                        let section = lock.write_begin();
                        let v = words[2].load(Ordering::Relaxed);
                        words[2].store(v + 1, Ordering::Relaxed);
                        lock.write_end(section);
                        assert!(lock.unlock(me));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(words[2].load(Ordering::Relaxed), 8000);
        assert_eq!(words[0].load(Ordering::Relaxed), 16000);
    }

    #[test]
    fn process_liveness_knows_this_process_and_rejects_strangers() {
        let me = current_owner();
        assert_eq!(owner_pid(me), std::process::id());
        assert!(ProcessLiveness.owner_alive(me));
        assert!(!ProcessLiveness.owner_alive(0));
        if cfg!(target_os = "linux") {
            assert_ne!(owner_token(me), 0, "start token read from /proc");
            // Same pid, wrong start time: a reused pid is not the owner.
            let wrong = owner_word(owner_pid(me), owner_token(me).wrapping_add(1));
            assert!(!ProcessLiveness.owner_alive(wrong));
        }
        assert!(!ProcessLiveness.owner_alive(owner_word((1 << 22) + 77, 1)));
    }

    #[test]
    fn a_killed_unreaped_child_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let token = proc_stat(pid).map_or(0, |(_, start)| start as u32);
        let word = owner_word(pid, token);
        assert!(ProcessLiveness.owner_alive(word));
        child.kill().unwrap();
        // Not reaped yet: a zombie. Give the kernel a moment to deliver the signal.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ProcessLiveness.owner_alive(word) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!ProcessLiveness.owner_alive(word), "zombie counted as dead");
        child.wait().unwrap();
        assert!(!ProcessLiveness.owner_alive(word));
    }
}
