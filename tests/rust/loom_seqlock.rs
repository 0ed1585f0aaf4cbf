//! The production seqlock (`warp_cache_core::shm::seqlock::SeqLock`, generic over its words)
//! under loom's model checker: a reader never accepts a torn pair, and two writers never
//! overlap. Run with:
//!
//! `RUSTFLAGS="--cfg warp_loom" cargo test -p warp-cache-tests --test loom_seqlock --release`
//!
//! Without `--cfg warp_loom` this file compiles to nothing.
#![cfg(warp_loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::Relaxed;
use warp_cache_core::shm::seqlock::SeqLock;

/// The lock's state word plus a two-word "value" that writers keep equal.
struct Shared {
    state: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: AtomicU64::new(0),
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> SeqLock<'_, AtomicU64> {
        SeqLock::new(&self.state)
    }

    /// The production write path: lock, odd, relaxed stores, even, unlock.
    fn write(&self, me: u64, value: u64) {
        let lock = self.lock();
        while !lock.try_lock(me) {
            thread::yield_now();
        }
        let section = lock.write_begin(me).unwrap();
        assert!(!section.interrupted);
        self.a.store(value, Relaxed);
        self.b.store(value, Relaxed);
        assert!(lock.write_end(section));
        assert!(lock.unlock(me));
    }

    /// One optimistic read attempt; `Some` only if validated.
    fn read(&self) -> Option<(u64, u64)> {
        let lock = self.lock();
        let start = lock.read_begin();
        if start & 1 == 1 {
            return None;
        }
        let a = self.a.load(Relaxed);
        let b = self.b.load(Relaxed);
        lock.read_validate(start).then_some((a, b))
    }
}

#[test]
fn a_validated_read_is_never_torn() {
    loom::model(|| {
        let shared = Shared::new();
        let writer = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                shared.write(1, 1);
                shared.write(1, 2);
            })
        };
        for _ in 0..2 {
            if let Some((a, b)) = shared.read() {
                assert_eq!(a, b, "torn read accepted");
            }
        }
        writer.join().unwrap();
        assert_eq!(shared.read(), Some((2, 2)));
    });
}

#[test]
fn writers_exclude_each_other() {
    loom::model(|| {
        let shared = Shared::new();
        let writers: Vec<_> = (1..=2u64)
            .map(|me| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let lock = shared.lock();
                    while !lock.try_lock(me) {
                        thread::yield_now();
                    }
                    let section = lock.write_begin(me).unwrap();
                    // Read-modify-write under the lock: lost updates would show overlap.
                    let a = shared.a.load(Relaxed);
                    shared.a.store(a + 1, Relaxed);
                    assert!(lock.write_end(section));
                    assert!(lock.unlock(me));
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(shared.a.load(Relaxed), 2);
        assert_eq!(shared.lock().sequence(), 4);
    });
}

#[test]
fn a_section_abandoned_by_a_dead_writer_is_reported_to_the_next() {
    loom::model(|| {
        let shared = Shared::new();
        let dead = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let lock = shared.lock();
                assert!(lock.try_lock(7));
                let _abandoned = lock.write_begin(7).unwrap();
                shared.a.store(1, Relaxed); // then "dies": no write_end, no unlock
            })
        };
        dead.join().unwrap();
        // A reader never validates during the abandoned section.
        assert_eq!(shared.read(), None);
        let lock = shared.lock();
        assert!(lock.take_over(7, 9));
        let section = lock.write_begin(9).unwrap();
        assert!(section.interrupted);
        shared.a.store(0, Relaxed); // the "reset"
        shared.b.store(0, Relaxed);
        assert!(lock.write_end(section));
        assert!(lock.unlock(9));
        assert_eq!(shared.read(), Some((0, 0)));
    });
}

/// INV-S8 in every interleaving: a writer whose lock is taken over while it still runs (it
/// was judged dead) can neither end its section nor begin another, and the successor's
/// section ends even, owned by the successor.
#[test]
fn a_taken_over_writer_is_fenced_off() {
    loom::model(|| {
        let shared = Shared::new();
        let lock = shared.lock();
        assert!(lock.try_lock(7));
        let stale = lock.write_begin(7).unwrap();
        let zombie = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let lock = shared.lock();
                // Still running: tries to finish, then to write again.
                let ended = lock.write_end(stale);
                let began = lock.write_begin(7);
                (ended, began.is_some())
            })
        };
        let successor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let lock = shared.lock();
                if lock.take_over(7, 9) {
                    let section = lock.write_begin(9).unwrap();
                    assert!(lock.write_end(section));
                    assert!(lock.unlock(9));
                    true
                } else {
                    false
                }
            })
        };
        let (ended, began) = zombie.join().unwrap();
        let took_over = successor.join().unwrap();
        if took_over && !ended {
            // Taken over before the zombie ended: it never touched the sequence again.
            assert!(!began);
        }
        // Whoever won, the sequence ends even and no section is left open by the loser.
        let lock = shared.lock();
        if took_over {
            assert_eq!(lock.owner(), 0);
            assert_eq!(lock.sequence() & 1, 0);
        }
    });
}
