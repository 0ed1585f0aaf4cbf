//! Unit tests of the shared store.

use super::super::layout::{word, DataHeader};
use crate::policy;

use super::*;

fn config(capacity: u32) -> ShmConfig {
    ShmConfig {
        dir: None,
        name: "unit".into(),
        capacity,
        key_bytes_max: 64,
        value_bytes_max: 64,
        ttl_ns: None,
        max_bytes: None,
    }
}

#[test]
fn heap_store_basic_operations() {
    let store = ShmStore::over_memory(config(2)).unwrap();
    let mut out = Vec::new();
    assert!(!store.get(b"a", 0, &mut out).unwrap());
    assert_eq!(
        store.insert(b"a", b"1", 0).unwrap(),
        InsertOutcome::Inserted { evicted: false }
    );
    assert!(store.get(b"a", 0, &mut out).unwrap());
    assert_eq!(out, b"1");
    assert_eq!(
        store.insert(b"a", b"22", 0).unwrap(),
        InsertOutcome::Updated
    );
    store.insert(b"b", b"2", 0).unwrap();
    assert_eq!(
        store.insert(b"c", b"3", 0).unwrap(),
        InsertOutcome::Inserted { evicted: true }
    );
    // "a" was visited: "b" is the victim.
    assert!(store.get(b"a", 0, &mut out).unwrap());
    assert_eq!(out, b"22");
    assert!(!store.get(b"b", 0, &mut out).unwrap());
    assert!(out.is_empty());
    store.validate().unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses, info.current_size), (2, 2, 2));
    assert!(store.remove(b"a").unwrap());
    assert!(!store.remove(b"a").unwrap());
    store.validate().unwrap();
    // Format 4: the heap bytes made real stay real across a clear (the file does not
    // shrink); every other counter starts over.
    let committed = store.info().unwrap().heap_committed_bytes;
    assert!(committed > 0);
    store.clear().unwrap();
    assert_eq!(
        store.info().unwrap(),
        ShmInfo {
            capacity: 2,
            heap_committed_bytes: committed,
            ..ShmInfo::default()
        }
    );
    store.validate().unwrap();
}

#[test]
fn oversize_and_zero_ttl_are_skipped_and_counted() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    let big = vec![0u8; 65];
    assert_eq!(
        store.insert(&big, b"v", 0).unwrap(),
        InsertOutcome::Skipped(SkipReason::Oversize)
    );
    assert_eq!(
        store.insert(b"k", &big, 0).unwrap(),
        InsertOutcome::Skipped(SkipReason::Oversize)
    );
    store.record_oversize_skip();
    assert_eq!(store.info().unwrap().oversize_skips, 3);
    let mut out = Vec::new();
    assert!(!store.get(&big, 0, &mut out).unwrap());
    let zero = ShmStore::over_memory(ShmConfig {
        ttl_ns: Some(0),
        max_bytes: None,
        ..config(4)
    })
    .unwrap();
    assert_eq!(
        zero.insert(b"k", b"v", 0).unwrap(),
        InsertOutcome::Skipped(SkipReason::ZeroTtl)
    );
    assert!(!zero.get(b"k", 0, &mut out).unwrap());
}

#[test]
fn corruption_under_the_lock_resets_instead_of_failing() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    for k in 0..4u8 {
        store.insert(&[k], &[k], 0).unwrap();
    }
    let view = store.view().unwrap();
    // Break the SIEVE list: head points nowhere.
    view.header[word!(DataHeader, sieve_head)].store(1000, Relaxed);
    assert!(store.validate().is_err());
    assert_eq!(
        store.insert(b"new", b"v", 0).unwrap(),
        InsertOutcome::Inserted { evicted: false }
    );
    store.validate().unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.current_size, info.resets), (1, 1));
    let mut out = Vec::new();
    assert!(store.get(b"new", 0, &mut out).unwrap());
    assert!(!store.get(&[0], 0, &mut out).unwrap());
}

/// INV-S8: a writer whose lock was taken over while it still ran (judged dead) and that
/// then writes a whole, self-consistent entry and links it into the table is never served:
/// the takeover moved the table to a new epoch, and it cannot end its section.
#[test]
fn a_fenced_writer_is_never_served() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"old", b"v", 0).unwrap();
    let view = store.view().unwrap();
    const ZOMBIE: u64 = 0x2bad;
    assert!(view.lock.try_lock(ZOMBIE));
    let zombie_epoch = view.epoch();
    let section = view.lock.write_begin(ZOMBIE).unwrap();
    // The zombie stalls here; this process's insert finds it dead (heap stores know only
    // this process) and takes over: the odd sequence makes its section reset.
    assert!(matches!(
        store.insert(b"fresh", b"new", 0).unwrap(),
        InsertOutcome::Inserted { .. }
    ));
    let info = store.info().unwrap();
    assert_eq!((info.takeovers, info.resets), (1, 1));
    assert_ne!(view.epoch(), zombie_epoch);
    // The zombie goes on: a complete entry for "k" in a free slot, linked in the table.
    let hash = key_hash(b"k");
    let slot = view.arena.alloc().unwrap();
    view.arena.write_entry(
        slot,
        extent_for(&view, b"k", b"zombie"),
        hash,
        b"k",
        b"zombie",
        0,
        zombie_epoch,
        None,
    );
    view.table.insert(hash, slot).unwrap();
    assert!(!view.lock.write_end(section), "it cannot publish");
    assert!(view.lock.write_begin(ZOMBIE).is_none(), "nor begin again");
    assert!(!view.lock.unlock(ZOMBIE));
    let mut out = Vec::new();
    assert!(
        !store.get(b"k", 0, &mut out).unwrap(),
        "an entry written by a fenced writer was served: {out:?}"
    );
    assert!(out.is_empty());
    assert!(store.get(b"fresh", 0, &mut out).unwrap());
    assert_eq!(out, b"new");
    assert!(
        !store.get(b"old", 0, &mut out).unwrap(),
        "the torn table was reset"
    );
}

/// A takeover from a writer that died holding the lock but outside a section (nothing can
/// be torn) keeps the entries; the dead owner still cannot write afterwards.
#[test]
fn a_clean_takeover_keeps_the_entries_and_fences_the_old_owner() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"a", b"1", 0).unwrap();
    let view = store.view().unwrap();
    const DEAD: u64 = 0x0dead;
    assert!(view.lock.try_lock(DEAD));
    store.insert(b"b", b"2", 0).unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.takeovers, info.resets), (1, 0));
    let mut out = Vec::new();
    assert!(store.get(b"a", 0, &mut out).unwrap());
    assert!(store.get(b"b", 0, &mut out).unwrap());
    assert!(view.lock.write_begin(DEAD).is_none());
    store.validate().unwrap();
}

/// A writer that died inside a write section but outside every slot's section left each slot
/// consistent: readers hit it (per-slot validation, INV-S3) and misses do not wait; the next
/// writer resets (INV-S4), after which the entry is gone.
#[test]
fn an_interrupted_write_is_reset_by_the_next_writer() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"k", b"v", 0).unwrap();
    let view = store.view().unwrap();
    // A writer "died" inside a section: odd sequence, lock free (its guard unwound).
    let me = store.me().unwrap();
    assert!(view.lock.try_lock(me));
    let _abandoned = view.lock.write_begin(me).unwrap();
    assert!(view.lock.unlock(me)); // its guard unwound
    let mut out = Vec::new();
    assert!(
        store.get(b"k", 0, &mut out).unwrap(),
        "a consistent slot is served"
    );
    assert_eq!(out, b"v");
    assert_eq!(view.lock.sequence() & 1, 1, "a hit recovers nothing");
    // A miss never waits for a writer either (its probe run is walked twice).
    assert!(!store.get(b"other", 0, &mut out).unwrap());
    assert_eq!(
        store.info().unwrap().resets,
        0,
        "readers recover only odd slots"
    );
    // The next writer finds the odd sequence of a dead owner and resets.
    store.insert(b"other", b"o", 0).unwrap();
    assert_eq!(view.lock.sequence() & 1, 0);
    assert_eq!(store.info().unwrap().resets, 1);
    assert!(
        !store.get(b"k", 0, &mut out).unwrap(),
        "the reset dropped the entry"
    );
    store.insert(b"k", b"v2", 0).unwrap();
    assert!(store.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v2");
    store.validate().unwrap();
    assert_eq!(store.info().unwrap().resets, 1);
}

/// A writer that died inside a slot's section (the slot's sequence odd): a reader of that
/// slot waits, judges the owner dead, recovers (a reset, which settles the slot) and misses;
/// readers of other slots were never held up.
#[test]
fn a_writer_dead_inside_a_slot_section_is_recovered_by_that_slot_reader() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"k", b"v", 0).unwrap();
    store.insert(b"j", b"w", 0).unwrap();
    let view = store.view().unwrap();
    let slot = view
        .table
        .find(key_hash(b"k"), |s| {
            view.arena.key_matches(s, key_hash(b"k"), b"k")
        })
        .unwrap()
        .1;
    let me = store.me().unwrap();
    assert!(view.lock.try_lock(me));
    let _abandoned = view.lock.write_begin(me).unwrap();
    let seq = view.arena.seq(slot).unwrap();
    let _torn = seq.write_begin();
    assert!(view.lock.unlock(me));
    let mut out = Vec::new();
    assert!(
        store.get(b"j", 0, &mut out).unwrap(),
        "another slot is served"
    );
    assert_eq!(out, b"w");
    assert_eq!(store.info().unwrap().resets, 0);
    assert!(
        !store.get(b"k", 0, &mut out).unwrap(),
        "the odd slot is never served"
    );
    assert_eq!(store.info().unwrap().resets, 1, "its reader recovered");
    assert_eq!(seq.value() & 1, 0, "the reset settled the slot");
    assert_eq!(view.lock.sequence() & 1, 0);
    store.insert(b"k", b"v2", 0).unwrap();
    assert!(store.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v2");
    store.validate().unwrap();
}

/// INV-8: a reader's recovery takes the lock only from the owner it judged dead. Here the
/// reader judged `DEAD` dead (it died inside a section), then a live writer took the lock
/// over from `DEAD` and is inside its own section (resetting the torn table and writing slot
/// 0) when the reader's recovery runs: the recovery must leave that writer alone, not take
/// its lock and reset the table under it (the simulator's "SIEVE list corrupt at slot 0").
#[test]
fn a_reader_recovers_only_from_the_owner_it_judged_dead() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"a", b"1", 0).unwrap();
    let view = store.view().unwrap();
    const DEAD: u64 = 0x0dead;
    const LIVE: u64 = 0x11fe;
    assert!(view.lock.try_lock(DEAD));
    // DEAD dies inside its section; a reader sees the odd sequence and judges DEAD dead.
    let _abandoned = view.lock.write_begin(DEAD).unwrap();
    // A live writer takes over from DEAD first and starts its section.
    assert!(view.lock.take_over(DEAD, LIVE));
    let live = view.lock.write_begin(LIVE).unwrap();
    assert!(live.interrupted);
    let live_epoch = store.reset_structures(&view);
    let slot = view.arena.alloc().unwrap();
    assert_eq!(slot, 0);
    view.arena.write_entry(
        slot,
        extent_for(&view, b"b", b"2"),
        key_hash(b"b"),
        b"b",
        b"2",
        0,
        live_epoch,
        None,
    );
    // Now the reader's recovery from DEAD runs.
    store.recover_interrupted(&view, DEAD, None);
    assert_eq!(view.lock.owner(), LIVE, "the live writer keeps its lock");
    assert_eq!(
        store.info().unwrap().resets,
        1,
        "no reset under the live writer"
    );
    // The live writer finishes its insert and its section.
    policy::insert(&mut view.slots(), slot).unwrap();
    view.table.insert(key_hash(b"b"), slot).unwrap();
    assert!(view.lock.write_end(live), "the live writer's section ends");
    assert!(view.lock.unlock(LIVE));
    store.validate().unwrap();
    let mut out = Vec::new();
    assert!(store.get(b"b", 0, &mut out).unwrap());
    assert_eq!(out, b"2");
    assert_eq!(
        store.info().unwrap().takeovers,
        0,
        "the test's takeover is not counted"
    );
    // A reader that found the lock free (owner 0) does not take it from a writer that took
    // it since either.
    assert!(view.lock.try_lock(LIVE));
    let section = view.lock.write_begin(LIVE).unwrap();
    store.recover_interrupted(&view, 0, None);
    assert_eq!(view.lock.owner(), LIVE);
    assert!(view.lock.write_end(section));
    assert!(view.lock.unlock(LIVE));
    assert_eq!(store.info().unwrap().resets, 1);
    store.validate().unwrap();
}

#[test]
fn images_round_trip_and_mismatches_are_rejected() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"k", b"v", 0).unwrap();
    let (data, lock) = store.image();
    let copy = ShmStore::from_image(config(4), &data, &lock).unwrap();
    let mut out = Vec::new();
    assert!(copy.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v");
    assert_eq!(
        ShmStore::from_image(config(5), &data, &lock)
            .unwrap_err()
            .kind,
        ErrorKind::Corrupt
    );
    assert!(ShmStore::from_image(config(4), &data[..100], &lock).is_err());
    let mut bad_lock = lock.clone();
    bad_lock[0] ^= 1;
    assert!(ShmStore::from_image(config(4), &data, &bad_lock).is_err());
}

#[test]
fn a_hit_that_fails_to_decode_counts_as_a_miss() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"k", b"v", 0).unwrap();
    let mut out = Vec::new();
    assert!(store.get(b"k", 0, &mut out).unwrap());
    assert!(store.get(b"k", 0, &mut out).unwrap());
    store.record_decode_failure();
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses), (1, 1));
    store.clear().unwrap();
    store.record_decode_failure(); // a failure counted after a clear raced with its hit
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses), (0, 0));
}

#[test]
fn peek_does_not_count() {
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"k", b"v", 0).unwrap();
    let mut out = Vec::new();
    assert!(store
        .peek_hashed(b"k", key_hash(b"k"), 0, &mut out)
        .unwrap());
    assert_eq!(out, b"v");
    assert!(!store
        .peek_hashed(b"x", key_hash(b"x"), 0, &mut out)
        .unwrap());
    assert!(out.is_empty());
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses), (0, 0));
    assert!(store.get(b"k", 0, &mut out).unwrap());
    assert_eq!(store.info().unwrap().hits, 1);
}

#[test]
fn inspect_leaves_the_visited_bit_alone() {
    // Two slots: "a" then "b". SIEVE evicts the oldest unvisited entry, so an inspected "a"
    // is still the victim of the next insert, and a hit "a" would not be.
    for (look_with_get, evicted, kept) in [(false, b"a", b"b"), (true, b"b", b"a")] {
        let store = ShmStore::over_memory(config(2)).unwrap();
        store.insert(b"a", b"1", 0).unwrap();
        store.insert(b"b", b"2", 0).unwrap();
        let mut out = Vec::new();
        if look_with_get {
            assert!(store.get(b"a", 0, &mut out).unwrap());
        } else {
            assert!(store
                .inspect_hashed(b"a", key_hash(b"a"), 0, &mut out)
                .unwrap());
            assert_eq!(out, b"1");
            let info = store.info().unwrap();
            assert_eq!((info.hits, info.misses), (0, 0), "not counted");
        }
        store.insert(b"c", b"3", 0).unwrap();
        assert!(!store.get(evicted, 0, &mut out).unwrap());
        assert!(store.get(kept, 0, &mut out).unwrap());
        store.validate().unwrap();
    }
}

/// A file-backed store in `dir` holding `entries` entries, whose `victim` file ("data" or
/// "lock") was then truncated to zero bytes under it (as a foreign process could).
fn store_with_truncated_file(
    dir: &std::path::Path,
    name: &str,
    victim: &str,
    entries: u8,
) -> ShmStore {
    let store = ShmStore::open(ShmConfig {
        dir: Some(dir.to_path_buf()),
        name: name.to_owned(),
        ..config(64)
    })
    .unwrap();
    for k in 0..entries {
        store.insert(&[k], &[k; 40], 1).unwrap();
    }
    let paths = store.paths().unwrap();
    let path = if victim == "data" {
        &paths.data
    } else {
        &paths.lock
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
    store
}

/// A directory path no other test run uses (pid and clock in the name).
fn unique_temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "{tag}_{}_{}",
        std::process::id(),
        crate::clock::monotonic_now_ns()
    ))
}

#[test]
fn files_truncated_under_a_live_store_are_survived() {
    let dir = unique_temp_dir("warp_store_trunc");
    for victim in ["data", "lock"] {
        let store = store_with_truncated_file(&dir, &format!("trunc_{victim}"), victim, 40);
        let mut out = Vec::new();
        // No SIGBUS, never a value seen through zero pages: with the data file gone every
        // read misses. A hit never touches the lock file (per-slot validation), so with the
        // lock file gone a read serves the intact data file's own value, or misses once the
        // store has noticed and moved to fresh files.
        for k in 0..40u8 {
            let hit = store.get(&[k], 1, &mut out).unwrap();
            if victim == "data" {
                assert!(!hit, "{victim}: key {k}");
                assert!(out.is_empty());
            } else if hit {
                assert_eq!(out, [k; 40], "{victim}: key {k}");
            }
        }
        // Writers move to fresh files and the cache works again.
        store.insert(b"new", b"value", 1).unwrap();
        assert!(store.get(b"new", 1, &mut out).unwrap(), "{victim}");
        assert_eq!(out, b"value");
        store.validate().unwrap();
        let fresh = store.paths().unwrap();
        let len = std::fs::metadata(&fresh.data).unwrap().len();
        assert_eq!(len, store.region_bytes(), "{victim}: replaced, full size");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_insert_right_after_a_truncation_lands_in_fresh_files() {
    // Inserts no longer fstat the files each time (INV-S6 flags the truncation instead):
    // the first insert after one must still end up stored, in fresh full-size files.
    let dir = unique_temp_dir("warp_store_trunc_insert");
    for victim in ["data", "lock"] {
        let store = store_with_truncated_file(&dir, &format!("trunc_insert_{victim}"), victim, 8);
        assert!(matches!(
            store.insert(b"fresh", b"value", 1).unwrap(),
            InsertOutcome::Inserted { .. }
        ));
        let mut out = Vec::new();
        assert!(store.get(b"fresh", 1, &mut out).unwrap(), "{victim}");
        assert_eq!(out, b"value");
        assert!(
            !store.get(&[0], 1, &mut out).unwrap(),
            "{victim}: old entries gone"
        );
        assert_eq!(store.info().unwrap().current_size, 1, "{victim}");
        store.validate().unwrap();
        let fresh = store.paths().unwrap();
        let len = std::fs::metadata(&fresh.data).unwrap().len();
        assert_eq!(len, store.region_bytes(), "{victim}: replaced, full size");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ShmStore>();
}

/// A heap extent for an entry a test writes by hand (as `insert_locked` allocates it).
fn extent_for(view: &View<'_>, key: &[u8], value: &[u8]) -> u64 {
    use crate::shm::heap::{entry_bytes, Alloc};
    let heap = view.arena.heap();
    loop {
        match heap.alloc(entry_bytes(key.len() as u32, value.len() as u32)) {
            Alloc::Got(extent) => return extent,
            Alloc::Grow { committed_bytes } => heap.set_committed(committed_bytes),
            other => panic!("no extent: {other:?}"),
        }
    }
}

#[test]
fn a_slot_left_odd_outside_any_write_section_is_dropped_by_the_next_reader() {
    // Found by the region fuzzer: a hostile file's slot with an odd sequence, named by a
    // bucket ahead of the key's own slot, made every read of that key wait and miss for good.
    let store = ShmStore::over_memory(config(4)).unwrap();
    store.insert(b"a", b"1", 0).unwrap();
    store.insert(b"b", b"2", 0).unwrap();
    let view = store.view().unwrap();
    let hash_a = key_hash(b"a");
    let (_, slot_a) = view
        .table
        .find(hash_a, |s| view.arena.key_matches(s, hash_a, b"a"))
        .unwrap();
    // A section nobody will end (a fenced writer's, or a hostile file's); the lock is free.
    let _never_ended = view.arena.seq(slot_a).unwrap().write_begin();
    let mut out = Vec::new();
    assert!(
        !store.get(b"a", 0, &mut out).unwrap(),
        "never served while odd"
    );
    assert!(out.is_empty());
    assert_eq!(
        view.arena.seq(slot_a).unwrap().value() & 1,
        0,
        "the reader's recovery settled the slot"
    );
    assert!(store.get(b"b", 0, &mut out).unwrap(), "other entries stay");
    assert_eq!(out, b"2");
    assert!(matches!(
        store.insert(b"a", b"3", 0).unwrap(),
        InsertOutcome::Inserted { .. }
    ));
    assert!(
        store.get(b"a", 0, &mut out).unwrap(),
        "the key caches again"
    );
    assert_eq!(out, b"3");
    assert_eq!(
        store.info().unwrap().resets,
        0,
        "no reset for a listed entry"
    );
    store.validate().unwrap();
}
