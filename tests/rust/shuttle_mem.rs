//! Shuttle tests of the in-process store's locking (`SyncMemStore`: one `crate::sync::RwLock`
//! around one `MemStore`, INV-M2), running the production code with its locks and atomics
//! swapped for shuttle's (`--features shuttle` forwards to `warp-cache-core/shuttle`).
//!
//! What is checked under random schedules: concurrent hits, misses, evictions, removals,
//! expiry and clear; every value returned belongs to its key (and is fresh); the size never
//! exceeds `max_size`; counters are exact; `validate()` passes at the end; and the raw-API
//! protocol the free-threaded Python adapter uses (compare outside the lock, re-check the
//! `SlotRef` generation, version-checked inserts) never serves a stale or foreign entry, and a
//! `clear()` that returned has taken effect for references taken before it.
//!
//! Run: `cargo test -p warp-cache-tests --features shuttle --release --test shuttle_mem`
//! (see `shuttle_util.rs` for `SHUTTLE_SEED` / `SHUTTLE_SCHEDULE` replay).
#![cfg(feature = "shuttle")]

#[path = "shuttle_util.rs"]
mod shuttle_util;

use shuttle::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use shuttle::sync::Arc;
use shuttle::thread;
use warp_cache_core::clock::is_fresh;
use warp_cache_core::mem::{Displaced, Hit, SlotRef, SyncMemStore};

/// The only value ever stored for `key` in the value-correctness tests.
fn value_of(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9) ^ 0xabcd
}

/// Hits, misses, evictions and removals from three threads over a store smaller than the key
/// set: values belong to their keys, the bound holds after every operation, counters are
/// exact, and the store validates.
#[test]
fn typed_api_is_exact_bounded_and_correct() {
    shuttle_util::check(
        "shuttle_mem",
        "typed_api_is_exact_bounded_and_correct",
        50000,
        || {
            const MAX_SIZE: u32 = 3;
            let store = Arc::new(SyncMemStore::<u64, u64>::new(MAX_SIZE, None).unwrap());
            let gets = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..3u64)
                .map(|t| {
                    let store = Arc::clone(&store);
                    let gets = Arc::clone(&gets);
                    thread::spawn(move || {
                        for i in 0..6u64 {
                            let key = (t * 2 + i * 3) % 5;
                            gets.fetch_add(1, SeqCst);
                            match store.get_value(&key, 0) {
                                Some(value) => assert_eq!(value, value_of(key), "key {key}"),
                                None => {
                                    if let Some(evicted) = store.insert_value(key, value_of(key), 0)
                                    {
                                        assert!(evicted < 5 && evicted != key);
                                    }
                                }
                            }
                            if t == 2 && i % 3 == 2 {
                                if let Some(value) = store.remove_value(&((i + 1) % 5)) {
                                    assert_eq!(value, value_of((i + 1) % 5));
                                }
                            }
                            assert!(store.len() <= MAX_SIZE as usize, "bound exceeded");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            store.validate().unwrap();
            let stats = store.stats();
            assert_eq!(stats.hits + stats.misses, gets.load(SeqCst), "counters");
            assert!(store.len() <= MAX_SIZE as usize);
        },
    );
}

/// A shared clock advanced by the threads, a ttl, and a concurrent clear: a value served was
/// stored for that key and is fresh at the lookup's time; the bound holds; the store validates.
/// (Covers the expired-entry path of `get_value`: read lock, then write lock, re-check.)
#[test]
fn ttl_expiry_and_clear_never_serve_stale_or_foreign_values() {
    shuttle_util::check(
        "shuttle_mem",
        "ttl_expiry_and_clear_never_serve_stale_or_foreign_values",
        50000,
        || {
            const MAX_SIZE: u32 = 2;
            const TTL_NS: u64 = 3;
            let store = Arc::new(SyncMemStore::<u64, u64>::new(MAX_SIZE, Some(TTL_NS)).unwrap());
            let clock = Arc::new(AtomicU64::new(0));
            let mut threads: Vec<_> = (0..2u64)
                .map(|t| {
                    let store = Arc::clone(&store);
                    let clock = Arc::clone(&clock);
                    thread::spawn(move || {
                        for i in 0..6u64 {
                            let key = (t + i) % 3;
                            let now = clock.fetch_add(1, SeqCst);
                            match store.get_value(&key, now) {
                                Some(value) => {
                                    let (stored_key, stamp) = (value >> 32, value & 0xffff_ffff);
                                    assert_eq!(stored_key, key, "foreign value");
                                    assert!(
                                        is_fresh(stamp, now, Some(TTL_NS)),
                                        "stale value stamped {stamp} served at {now}"
                                    );
                                }
                                None => {
                                    let _ = store.insert_value(key, key << 32 | now, now);
                                }
                            }
                            assert!(store.len() <= MAX_SIZE as usize);
                        }
                    })
                })
                .collect();
            threads.push({
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for _ in 0..2 {
                        let dropped = store.clear();
                        assert!(dropped.len() <= MAX_SIZE as usize);
                        thread::yield_now();
                    }
                })
            });
            for t in threads {
                t.join().unwrap();
            }
            store.validate().unwrap();
        },
    );
}

// ------------------------------------------------------------------------------------------
// The free-threaded adapter's raw-API protocol (python/src/cached.rs), with keys whose
// comparison "runs Python code" (a scheduling point with no lock held).

/// A key comparison outside the store's lock: any other thread may run meanwhile. With
/// `reenter`, the comparison also does what a user `__eq__` may do: call the cached function
/// (a nested lookup and store of another key) or `cache_clear()`. The adapter holds no guard
/// here (INV-3), so nothing may deadlock (shuttle fails a run where every thread blocks).
fn slow_eq(store: &SyncMemStore<u64, u64>, stored: u64, probe: u64, reenter: bool) -> bool {
    thread::yield_now();
    if reenter {
        match (stored + probe) % 3 {
            0 => {
                const NESTED: u64 = 5;
                match adapter_lookup(store, NESTED, hash_of(NESTED), 0, false) {
                    Found::Hit(value) => assert_eq!(value >> 32, NESTED, "foreign value (nested)"),
                    Found::Miss(at) => {
                        adapter_store(store, NESTED, hash_of(NESTED), NESTED << 32, 0, false, at)
                    }
                }
            }
            1 => drop(store.clear()),
            _ => {}
        }
    }
    stored == probe
}

/// Result of [`adapter_lookup`].
enum Found {
    Hit(u64),
    /// A miss; `Some(version)` if it was decided in one borrow (no candidate at all): the
    /// store's version then, which lets the insert skip its scan if nothing changed since.
    Miss(Option<u64>),
}

/// `lookup_full`'s slow path: candidates under the read lock, compare with no lock held, then
/// `hit` the reference under the read lock again (stale references are `Gone`: a miss).
/// Expired entries are removed under the write lock if still there and still expired.
fn adapter_lookup(
    store: &SyncMemStore<u64, u64>,
    key: u64,
    hash: u64,
    now: u64,
    reenter: bool,
) -> Found {
    let pending: Vec<(SlotRef, u64)> = {
        let guard = store.read();
        let pending: Vec<(SlotRef, u64)> = guard.candidates(hash).map(|(at, &k)| (at, k)).collect();
        if pending.is_empty() {
            guard.counters().record_miss();
            return Found::Miss(Some(guard.version()));
        }
        pending
    };
    for (at, stored) in pending {
        if !slow_eq(store, stored, key, reenter) {
            continue;
        }
        let expired = {
            let guard = store.read();
            match guard.hit(at, now) {
                Hit::Fresh(&value) => {
                    guard.counters().record_hit();
                    return Found::Hit(value);
                }
                Hit::Expired => true,
                Hit::Gone => false,
            }
        };
        if expired {
            // Still there and still expired under the write lock: remove it (the adapter
            // drops the removed key and value after releasing the lock).
            let mut guard = store.write();
            if guard.is_fresh_at(at, now) == Some(false) {
                let removed = guard.remove(at);
                assert_eq!(removed.map(|(k, _)| k), Some(key), "removed another key");
            }
        }
        break;
    }
    store.read().counters().record_miss();
    Found::Miss(None)
}

/// `store_value`: if the lookup decided the miss at a version the store still has, the key
/// is still absent: insert at once. Otherwise scan candidates under the write lock;
/// comparisons that need "Python" run with the lock released and the scan is redone if the
/// store changed (version), up to 4 attempts, then the value is placed as a new entry.
fn adapter_store(
    store: &SyncMemStore<u64, u64>,
    key: u64,
    hash: u64,
    value: u64,
    now: u64,
    reenter: bool,
    miss_version: Option<u64>,
) {
    if let Some(version) = miss_version {
        let mut guard = store.write();
        if guard.version() == version {
            let displaced = guard.insert_new(hash, key, value, now);
            drop(guard);
            drop(displaced);
            return;
        }
    }
    for attempt in 1..=4 {
        let (pending, version): (Vec<(SlotRef, u64)>, u64) = {
            let mut guard = store.write();
            let pending: Vec<(SlotRef, u64)> =
                guard.candidates(hash).map(|(at, &k)| (at, k)).collect();
            if pending.is_empty() || attempt == 4 {
                // Like the adapter: the last attempt places without comparing (a duplicate
                // of an equal key is possible and harmless; SIEVE evicts it in time).
                let displaced = place(&mut guard, None, hash, key, value, now);
                drop(guard);
                drop(displaced);
                return;
            }
            (pending, guard.version())
        };
        let equal = pending
            .iter()
            .find(|(_, stored)| slow_eq(store, *stored, key, reenter))
            .map(|(at, _)| *at);
        let mut guard = store.write();
        if guard.version() != version {
            continue;
        }
        let displaced = place(&mut guard, equal, hash, key, value, now);
        drop(guard);
        drop(displaced);
        return;
    }
}

fn place(
    store: &mut warp_cache_core::mem::MemStore<u64, u64>,
    equal: Option<SlotRef>,
    hash: u64,
    key: u64,
    value: u64,
    now: u64,
) -> Displaced<u64, u64> {
    match equal {
        Some(at) => match store.replace_at(at, value, now) {
            Ok(old) => Displaced::Replaced(old),
            Err(value) => store.insert_new(hash, key, value, now),
        },
        None => store.insert_new(hash, key, value, now),
    }
}

/// Keys share a few hashes (as Python objects with colliding `__hash__` do), so candidates
/// hold several keys and references are taken, released and re-checked constantly.
fn hash_of(key: u64) -> u64 {
    key % 2
}

/// Two callers run lookup-miss-store on overlapping keys (evictions reuse slots while
/// comparisons run unlocked) while a third clears; with a ttl, a shared clock advances and the
/// expired-entry removal path runs too. Every hit is the caller's key's value (and fresh at
/// the lookup's time), the bound holds, the store validates. A duplicate of an equal key is
/// allowed (the adapter's documented last-attempt fallback) but never a foreign value.
fn adapter_protocol_run(ttl_ns: Option<u64>, reenter: bool) {
    const MAX_SIZE: u32 = 2;
    let store = Arc::new(SyncMemStore::<u64, u64>::new(MAX_SIZE, ttl_ns).unwrap());
    let clock = Arc::new(AtomicU64::new(0));
    let mut threads: Vec<_> = (0..2u64)
        .map(|t| {
            let store = Arc::clone(&store);
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                for i in 0..4u64 {
                    let key = (t + i * 2) % 4;
                    let now = if ttl_ns.is_some() {
                        clock.fetch_add(1, SeqCst)
                    } else {
                        0
                    };
                    match adapter_lookup(&store, key, hash_of(key), now, reenter) {
                        Found::Hit(value) => {
                            let (stored_key, stamp) = (value >> 32, value & 0xffff_ffff);
                            assert_eq!(stored_key, key, "foreign value");
                            assert!(
                                is_fresh(stamp, now, ttl_ns),
                                "stale value stamped {stamp} served at {now}"
                            );
                        }
                        Found::Miss(at) => {
                            let value = key << 32 | now;
                            adapter_store(&store, key, hash_of(key), value, now, reenter, at)
                        }
                    }
                    assert!(store.len() <= MAX_SIZE as usize, "bound exceeded");
                }
            })
        })
        .collect();
    threads.push({
        let store = Arc::clone(&store);
        thread::spawn(move || {
            thread::yield_now();
            drop(store.clear());
        })
    });
    for t in threads {
        t.join().unwrap();
    }
    store.validate().unwrap();
}

#[test]
fn adapter_protocol_never_serves_a_foreign_entry() {
    shuttle_util::check(
        "shuttle_mem",
        "adapter_protocol_never_serves_a_foreign_entry",
        50000,
        || adapter_protocol_run(None, false),
    );
}

#[test]
fn adapter_protocol_with_ttl_never_serves_stale_or_foreign_entries() {
    shuttle_util::check(
        "shuttle_mem",
        "adapter_protocol_with_ttl_never_serves_stale_or_foreign_entries",
        50000,
        || adapter_protocol_run(Some(3), false),
    );
}

/// Reentrancy: key comparisons that call the cached function or `cache_clear()` while the
/// store is released (a user `__eq__` doing so) neither deadlock nor make anyone serve a
/// wrong value.
#[test]
fn reentrant_comparisons_neither_deadlock_nor_serve_wrong_values() {
    shuttle_util::check(
        "shuttle_mem",
        "reentrant_comparisons_neither_deadlock_nor_serve_wrong_values",
        50000,
        || adapter_protocol_run(None, true),
    );
}

/// "A clear that returned has taken effect": references taken before a clear are stale after
/// it, even when their slots were reused by other keys. Keys 0..3 are stored first; a reader
/// compares them with no lock held while one thread clears and another stores other keys
/// (reusing the slots). Once the reader has seen the clear return, none of keys 0..3 may be
/// served (nobody stores them again), and nothing foreign is ever served.
#[test]
fn a_returned_clear_invalidates_references_taken_before_it() {
    shuttle_util::check(
        "shuttle_mem",
        "a_returned_clear_invalidates_references_taken_before_it",
        50000,
        || {
            let store = Arc::new(SyncMemStore::<u64, u64>::new(4, None).unwrap());
            for key in 0..4u64 {
                drop(
                    store
                        .write()
                        .insert_new(hash_of(key), key, value_of(key), 0),
                );
            }
            let cleared = Arc::new(AtomicBool::new(false));
            let reader = {
                let store = Arc::clone(&store);
                let cleared = Arc::clone(&cleared);
                thread::spawn(move || {
                    for key in [0u64, 1, 2, 3] {
                        let hash = hash_of(key);
                        let pending: Vec<(SlotRef, u64)> = {
                            let guard = store.read();
                            guard.candidates(hash).map(|(at, &k)| (at, k)).collect()
                        };
                        for (at, stored) in pending {
                            if !slow_eq(&store, stored, key, false) {
                                continue;
                            }
                            let clear_returned = cleared.load(SeqCst);
                            let guard = store.read();
                            if let Hit::Fresh(&value) = guard.hit(at, 0) {
                                assert_eq!(value, value_of(key), "a reused slot served");
                                assert!(!clear_returned, "key {key} served after clear returned");
                            }
                        }
                    }
                })
            };
            let clearer = {
                let store = Arc::clone(&store);
                let cleared = Arc::clone(&cleared);
                thread::spawn(move || {
                    drop(store.clear());
                    cleared.store(true, SeqCst);
                })
            };
            let refiller = {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for key in 10..14u64 {
                        adapter_store(&store, key, hash_of(key), value_of(key), 0, false, None);
                    }
                })
            };
            for t in [reader, clearer, refiller] {
                t.join().unwrap();
            }
            store.validate().unwrap();
            assert!(store.len() <= 4);
        },
    );
}

/// Counters under concurrency: every lookup counts exactly once (hits and misses are atomic
/// read-modify-writes), whatever the interleaving.
#[test]
fn counters_are_exact_under_concurrent_lookups() {
    shuttle_util::check(
        "shuttle_mem",
        "counters_are_exact_under_concurrent_lookups",
        20000,
        || {
            let store = Arc::new(SyncMemStore::<u64, u64>::new(8, None).unwrap());
            let lookups = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..3u64)
                .map(|t| {
                    let store = Arc::clone(&store);
                    let lookups = Arc::clone(&lookups);
                    thread::spawn(move || {
                        for i in 0..4u64 {
                            let key = (t + i) % 3;
                            lookups.fetch_add(1, SeqCst);
                            if store.get_value(&key, 0).is_none() {
                                let _ = store.insert_value(key, value_of(key), 0);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let stats = store.stats();
            assert_eq!((stats.hits + stats.misses) as usize, lookups.load(SeqCst));
            // Three keys, so at most three misses per key can race; at least 3 misses total.
            assert!(stats.misses >= 3);
            store.validate().unwrap();
        },
    );
}
