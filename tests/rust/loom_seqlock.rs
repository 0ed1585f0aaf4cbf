//! The production seqlock (`warp_cache_core::shm::seqlock::SeqLock`, generic over its words)
//! under loom's model checker: a reader never accepts a torn pair, and two writers never
//! overlap. Run with:
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p warp-cache-tests --test loom_seqlock --release`
//!
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::Relaxed;
use warp_cache_core::shm::seqlock::SeqLock;

/// Two lock words plus a two-word "value" that writers keep equal.
struct Shared {
    seq: AtomicU64,
    owner: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            seq: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> SeqLock<'_, AtomicU64> {
        SeqLock::new(&self.seq, &self.owner)
    }

    /// The production write path: lock, odd, relaxed stores, even, unlock.
    fn write(&self, me: u64, value: u64) {
        let lock = self.lock();
        while !lock.try_lock(me) {
            thread::yield_now();
        }
        let section = lock.write_begin();
        assert!(!section.interrupted);
        self.a.store(value, Relaxed);
        self.b.store(value, Relaxed);
        lock.write_end(section);
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
                    let section = lock.write_begin();
                    // Read-modify-write under the lock: lost updates would show overlap.
                    let a = shared.a.load(Relaxed);
                    shared.a.store(a + 1, Relaxed);
                    lock.write_end(section);
                    assert!(lock.unlock(me));
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(shared.a.load(Relaxed), 2);
        assert_eq!(shared.seq.load(Relaxed), 4);
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
                let _abandoned = lock.write_begin();
                shared.a.store(1, Relaxed); // then "dies": no write_end, no unlock
            })
        };
        dead.join().unwrap();
        // A reader never validates during the abandoned section.
        assert_eq!(shared.read(), None);
        let lock = shared.lock();
        assert!(lock.take_over(7, 9));
        let section = lock.write_begin();
        assert!(section.interrupted);
        shared.a.store(0, Relaxed); // the "reset"
        shared.b.store(0, Relaxed);
        lock.write_end(section);
        assert!(lock.unlock(9));
        assert_eq!(shared.read(), Some((0, 0)));
    });
}
