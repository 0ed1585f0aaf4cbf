//! Shuttle tests of the seqlock protocol logic: the production
//! `warp_cache_core::shm::seqlock::SeqLock` (generic over its words) over shuttle's atomics, so
//! every atomic operation is a scheduling point. Shuttle explores interleavings under
//! sequential consistency (the protocol's logic: mutual exclusion, validation, take-over,
//! interrupted sections); loom (`loom_seqlock.rs`) checks the memory orderings.
//!
//! Run: `cargo test -p warp-cache-tests --features shuttle --release --test shuttle_seqlock`
//! (see `shuttle_util.rs` for `SHUTTLE_SEED` / `SHUTTLE_SCHEDULE` replay).
#![cfg(feature = "shuttle")]

#[path = "shuttle_util.rs"]
mod shuttle_util;

use std::sync::atomic::Ordering;
use std::time::Duration;

use shuttle::sync::atomic::{AtomicBool, AtomicUsize};
use shuttle::sync::{Arc, Condvar, Mutex};
use shuttle::thread;
use warp_cache_core::shm::seqlock::{Acquire, Liveness, SeqLock, Word};
// The core's sync shim: shuttle's atomics under `--features shuttle`.
use warp_cache_core::sync::AtomicU64 as ShuttleU64;

/// A lock word in a heap atomic from the core's sync shim (shuttle's under this feature),
/// with a model of the kernel's futex on its high half (`futex.rs`).
struct W {
    word: ShuttleU64,
    futex: Mutex<()>,
    sleepers: Condvar,
}

impl W {
    fn new(value: u64) -> W {
        W {
            word: ShuttleU64::new(value),
            futex: Mutex::new(()),
            sleepers: Condvar::new(),
        }
    }
}

impl Word for W {
    fn load(&self, order: Ordering) -> u64 {
        self.word.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.word.store(value, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.word.compare_exchange(current, new, success, failure)
    }
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        self.word.fetch_add(value, order)
    }
    fn fence(order: Ordering) {
        warp_cache_core::sync::fence(order)
    }
    /// FUTEX_WAIT, modelled strictly: the value check and the sleep are atomic with respect
    /// to a wake (both under `futex`, as under the kernel's queue lock), and there is no
    /// timeout, so an unlock that fails to wake a sleeper blocks it for good and shuttle
    /// reports the deadlock (production sleepers would only lose their timeout's worth).
    fn wait_while_high(&self, expected: u32, _timeout: Duration) {
        let guard = self.futex.lock().unwrap();
        if (self.word.load(Ordering::SeqCst) >> 32) as u32 == expected {
            drop(self.sleepers.wait(guard).unwrap());
        }
    }
    fn wake_one(&self) {
        let _queue = self.futex.lock().unwrap();
        self.sleepers.notify_one();
    }
}

const WORDS: usize = 3;

/// The lock words plus a protected value of three words that writers keep equal.
struct Shared {
    state: W,
    /// The count of sleeping waiters (`LockFile::lock_waiters`).
    waiters: W,
    data: [ShuttleU64; WORDS],
    /// Set while some thread is inside a write section (mutual exclusion check).
    in_section: AtomicBool,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: W::new(0),
            waiters: W::new(0),
            data: std::array::from_fn(|_| ShuttleU64::new(0)),
            in_section: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> SeqLock<'_, W> {
        SeqLock::with_waiters(&self.state, &self.waiters)
    }

    /// Inside a lock held by `me`: a write section storing `value` in every word (each store
    /// is a scheduling point, so readers can interleave mid-write). Returns `interrupted`.
    fn write_section(&self, me: u64, value: u64, reset_if_interrupted: bool) -> bool {
        let lock = self.lock();
        let section = lock.write_begin(me).expect("the holder begins its section");
        assert!(
            !self.in_section.swap(true, Ordering::SeqCst),
            "two write sections overlap"
        );
        if section.interrupted && reset_if_interrupted {
            for w in &self.data {
                w.store(0, Ordering::Relaxed);
            }
        }
        for w in &self.data {
            w.store(value, Ordering::Relaxed);
        }
        self.in_section.store(false, Ordering::SeqCst);
        assert!(lock.write_end(section), "the holder ends its section");
        section.interrupted
    }

    /// One optimistic read (the store's read loop, INV-S3): `Some` only if validated.
    fn read(&self) -> Option<[u64; WORDS]> {
        let lock = self.lock();
        let start = lock.read_begin();
        if start & 1 == 1 {
            return None;
        }
        let copy: [u64; WORDS] = std::array::from_fn(|i| self.data[i].load(Ordering::Relaxed));
        lock.read_validate(start).then_some(copy)
    }
}

fn assert_consistent(copy: [u64; WORDS], allowed: &[u64]) {
    assert!(
        copy.iter().all(|&w| w == copy[0]),
        "a torn copy was validated: {copy:?}"
    );
    assert!(allowed.contains(&copy[0]), "never written: {copy:?}");
}

/// Every owner is alive (the normal case: `acquire` only waits).
struct AllAlive;
impl Liveness for AllAlive {
    fn owner_alive(&self, _owner: u64) -> bool {
        true
    }
}

/// Two writers through the production `acquire` (spin, then yield) and two optimistic readers:
/// writers never overlap, no validated read is torn, the sequence counts every section.
#[test]
fn writers_exclude_each_other_and_readers_never_validate_a_torn_copy() {
    shuttle_util::check(
        "shuttle_seqlock",
        "writers_exclude_each_other_and_readers_never_validate_a_torn_copy",
        100000,
        || {
            let shared = Shared::new();
            let validated = Arc::new(AtomicUsize::new(0));
            let mut threads = Vec::new();
            for me in 1..=2u64 {
                let shared = Arc::clone(&shared);
                threads.push(thread::spawn(move || {
                    for round in 0..2u64 {
                        let lock = shared.lock();
                        let got = lock.acquire(me, Duration::from_secs(3600), &AllAlive);
                        assert_eq!(got, Acquire::Acquired);
                        assert!(!shared.write_section(me, me * 10 + round, false));
                        assert!(lock.unlock(me), "lock lost");
                    }
                }));
            }
            for _ in 0..2 {
                let shared = Arc::clone(&shared);
                let validated = Arc::clone(&validated);
                threads.push(thread::spawn(move || {
                    for _ in 0..3 {
                        if let Some(copy) = shared.read() {
                            assert_consistent(copy, &[0, 10, 11, 20, 21]);
                            validated.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(shared.lock().sequence(), 8, "4 sections, 2 steps each");
            assert_eq!(shared.lock().owner(), 0);
            let last = shared.read().expect("quiescent read validates");
            assert_consistent(last, &[11, 21]);
        },
    );
}

/// Owner 7 "dies" inside its write section (lock held, sequence odd, one word torn). Two
/// recoverers (the store's paths: a waiter that checks liveness, a reader that recovers)
/// take the lock over by compare-exchange on the dead owner: exactly one wins each time,
/// exactly one section reports `interrupted` (and resets), sections never overlap, readers
/// never validate during the abandoned section, and the sequence ends even.
#[test]
fn a_dead_writer_is_taken_over_once_and_its_section_reset() {
    shuttle_util::check(
        "shuttle_seqlock",
        "a_dead_writer_is_taken_over_once_and_its_section_reset",
        100000,
        || {
            const DEAD: u64 = 7;
            let shared = Shared::new();
            let dead_held = Arc::new(AtomicBool::new(false));
            // Liveness is truthful, as in production: "dead" only once the thread has ended.
            let dead_gone = Arc::new(AtomicBool::new(false));
            let interrupted_seen = Arc::new(AtomicUsize::new(0));
            let mut threads = Vec::new();
            {
                let shared = Arc::clone(&shared);
                let dead_held = Arc::clone(&dead_held);
                let dead_gone = Arc::clone(&dead_gone);
                threads.push(thread::spawn(move || {
                    let lock = shared.lock();
                    if lock.try_lock(DEAD) {
                        dead_held.store(true, Ordering::SeqCst);
                        let _abandoned = lock.write_begin(DEAD).unwrap();
                        shared.data[0].store(99, Ordering::Relaxed); // torn, then "killed"
                    }
                    dead_gone.store(true, Ordering::SeqCst);
                }));
            }
            for me in [21u64, 22] {
                let shared = Arc::clone(&shared);
                let interrupted_seen = Arc::clone(&interrupted_seen);
                let dead_gone = Arc::clone(&dead_gone);
                threads.push(thread::spawn(move || {
                    let lock = shared.lock();
                    loop {
                        let owner = lock.owner();
                        let mine = if owner == 0 {
                            lock.try_lock(me)
                        } else if owner == DEAD && dead_gone.load(Ordering::SeqCst) {
                            lock.take_over(DEAD, me)
                        } else {
                            thread::yield_now();
                            false
                        };
                        if mine {
                            break;
                        }
                    }
                    if shared.write_section(me, me, true) {
                        interrupted_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(lock.unlock(me), "the lock was taken from a live owner");
                }));
            }
            {
                let shared = Arc::clone(&shared);
                threads.push(thread::spawn(move || {
                    for _ in 0..4 {
                        if let Some(copy) = shared.read() {
                            assert_consistent(copy, &[0, 21, 22]);
                        }
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
            // The doomed writer may have taken the lock after both recoverers were done: a
            // later process (here, the main thread) recovers as they would have.
            let lock = shared.lock();
            if lock.owner() == DEAD {
                assert!(lock.take_over(DEAD, 30));
                assert!(
                    shared.write_section(30, 30, true),
                    "the abandoned section is reported"
                );
                interrupted_seen.fetch_add(1, Ordering::SeqCst);
                assert!(lock.unlock(30));
            }
            let expected = usize::from(dead_held.load(Ordering::SeqCst));
            assert_eq!(
                interrupted_seen.load(Ordering::SeqCst),
                expected,
                "sections reporting the interrupted write"
            );
            assert_eq!(lock.sequence() & 1, 0, "sequence left odd");
            assert_eq!(lock.owner(), 0);
            assert!(!lock.unlock(DEAD), "the dead owner holds nothing");
            let last = shared.read().expect("quiescent read validates");
            assert_consistent(last, &[21, 22, 30]);
        },
    );
}

/// The futex protocol (`SeqLock::unlock` / the waiter's count, look, sleep): the holder
/// unlocks only once the waiter has counted itself as a sleeper, so every interleaving of
/// that count, the waiter's look at the owner, its sleep and the unlock is explored; an
/// unlock that failed to wake a sleeper would block it for good (the strict futex model of
/// `W`), and shuttle would report the deadlock.
#[test]
fn an_unlock_always_wakes_a_counted_sleeper() {
    shuttle_util::check(
        "shuttle_seqlock",
        "an_unlock_always_wakes_a_counted_sleeper",
        20000,
        || {
            let shared = Shared::new();
            assert!(shared.lock().try_lock(1));
            let waiter = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let lock = shared.lock();
                    let got = lock.acquire(2, Duration::from_secs(3600), &AllAlive);
                    assert_eq!(got, Acquire::Acquired);
                    assert!(lock.unlock(2));
                })
            };
            while shared.waiters.load(Ordering::SeqCst) == 0 {
                thread::yield_now();
            }
            assert!(shared.lock().unlock(1));
            waiter.join().unwrap();
            assert_eq!(shared.waiters.load(Ordering::SeqCst), 0, "uncounted");
            assert_eq!(shared.lock().owner(), 0);
        },
    );
}
