//! The shared store's files under hostile conditions, in one process (several `ShmStore`s on
//! the same files behave like several processes): reopening, parameter mismatches, garbage
//! and truncation under a live store, a full filesystem, security rules, concurrent opens,
//! torn-value checks with threads, and resident bytes per entry.

#[path = "shm_util.rs"]
mod shm_util;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_util::{int_key, int_value, TestDir};
use warp_cache_core::shm::layout::MAX_CAPACITY;
use warp_cache_core::shm::{InsertOutcome, ShmConfig, ShmStore};
use warp_cache_core::ErrorKind;

fn ino(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn reopening_shares_entries_and_files_are_private() {
    let dir = TestDir::new("reopen");
    let a = ShmStore::open(dir.config("mod.f", 16)).unwrap();
    a.insert(&int_key(1), &int_value(10), 0).unwrap();
    let b = ShmStore::open(dir.config("mod.f", 16)).unwrap();
    let mut out = Vec::new();
    assert!(b.get(&int_key(1), 0, &mut out).unwrap());
    assert_eq!(out, int_value(10));
    let paths = a.paths().unwrap();
    assert_eq!(paths, b.paths().unwrap());
    assert_eq!(paths.data, dir.path.join("mod.f.data"));
    assert_eq!(paths.lock, dir.path.join("mod.f.lock"));
    for file in [&paths.data, &paths.lock] {
        assert_eq!(std::fs::metadata(file).unwrap().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::metadata(&dir.path).unwrap().mode() & 0o777, 0o700);
    // Counters are shared: one hit seen by both.
    assert_eq!(a.info().unwrap().hits, 1);
    // Only the two files and this process's presence file exist (temporary files were
    // cleaned up).
    let mut names: Vec<String> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].starts_with(".live."), "{names:?}");
    assert_eq!(&names[1..], ["mod.f.data", "mod.f.lock"]);
}

#[test]
fn hostile_and_long_names_stay_inside_the_directory() {
    let dir = TestDir::new("names");
    for name in [
        "../../escape",
        "/etc/passwd",
        "..",
        "a/b",
        "<lambda>",
        &"x".repeat(400),
        "ünïcödé.qualname",
    ] {
        let store = ShmStore::open(dir.config(name, 4)).unwrap();
        let paths = store.paths().unwrap();
        assert_eq!(paths.data.parent().unwrap(), dir.path, "{name:?}");
        let stem = store.file_stem().unwrap();
        assert!(stem.len() <= 100 && !stem.contains('/') && !stem.starts_with('.'));
    }
    // Distinct names never share files.
    let a = ShmStore::open(dir.config(&"y".repeat(300), 4)).unwrap();
    let b = ShmStore::open(dir.config(&"y".repeat(301), 4)).unwrap();
    assert_ne!(a.paths(), b.paths());
}

#[test]
fn a_parameter_mismatch_makes_a_new_file_and_old_users_keep_working() {
    let dir = TestDir::new("mismatch");
    let old = ShmStore::open(dir.config("f", 8)).unwrap();
    let data = old.paths().unwrap().data;
    old.insert(b"k1", b"old", 0).unwrap();
    let old_inode = ino(&data);
    // Another process declares other parameters: a new file (new inode), never truncated.
    let other = ShmStore::open(dir.config("f", 16)).unwrap();
    assert_ne!(ino(&data), old_inode);
    let mut out = Vec::new();
    assert!(!other.get(b"k1", 0, &mut out).unwrap());
    // The old user keeps its mapping and entries, and does not fight the other parameters.
    assert!(old.get(b"k1", 0, &mut out).unwrap());
    assert_eq!(out, b"old");
    old.insert(b"k2", b"v", 0).unwrap();
    old.validate().unwrap();
    assert!(old.get(b"k2", 0, &mut out).unwrap());
    // A third process with the original parameters replaces the file again; the old user
    // notices (validate forces the check) and moves to it.
    let third = ShmStore::open(dir.config("f", 8)).unwrap();
    third.insert(b"k3", b"third", 0).unwrap();
    old.validate().unwrap();
    assert!(
        old.get(b"k3", 0, &mut out).unwrap(),
        "old user followed the new file"
    );
    assert_eq!(out, b"third");
    assert!(!old.get(b"k1", 0, &mut out).unwrap());
}

#[test]
fn a_garbage_header_under_a_live_store_is_replaced_and_followed() {
    let dir = TestDir::new("garbage_header");
    let live = ShmStore::open(dir.config("g", 8)).unwrap();
    live.insert(b"k", b"v", 0).unwrap();
    let data = live.paths().unwrap().data;
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.write_all_at(&[0xA5; 256], 0).unwrap();
    // The live store's hot paths use its own geometry: still fine.
    let mut out = Vec::new();
    assert!(live.get(b"k", 0, &mut out).unwrap());
    live.insert(b"k2", b"v2", 0).unwrap();
    assert!(live.validate().is_err(), "validate sees the header damage");
    // A newcomer rebuilds; the live store then follows it.
    let newcomer = ShmStore::open(dir.config("g", 8)).unwrap();
    newcomer.insert(b"n", b"new", 0).unwrap();
    live.validate().unwrap();
    assert!(live.get(b"n", 0, &mut out).unwrap());
    assert_eq!(out, b"new");
}

#[test]
fn garbage_over_the_whole_table_and_arena_never_panics_or_hangs() {
    let dir = TestDir::new("garbage_all");
    let live = ShmStore::open(dir.config("g", 64)).unwrap();
    for k in 0..64 {
        live.insert(&int_key(k), &int_value(k), 0).unwrap();
    }
    let data = live.paths().unwrap().data;
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    let mut state = 0x1234_5678_9abc_def1u64;
    let garbage: Vec<u8> = (0..len - 256)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // Everything after the parameter block: SIEVE words, counters, buckets, slots.
    file.write_all_at(&garbage, 256).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    for k in 0..200 {
        let _ = live.get(&int_key(k), 0, &mut out).unwrap();
        assert!(out.len() <= 4096);
        let _ = live.insert(&int_key(k + 1000), &int_value(k), 0).unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bounded work on garbage"
    );
    let _ = live.info().unwrap();
    // Writers reset the structures when they meet the corruption; clear always restores.
    live.clear().unwrap();
    live.validate().unwrap();
    live.insert(b"k", b"v", 0).unwrap();
    assert!(live.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v");
}

#[test]
fn a_truncated_data_file_is_replaced_by_the_next_insert() {
    let dir = TestDir::new("truncate_data");
    let live = ShmStore::open(dir.config("t", 8)).unwrap();
    live.insert(b"k", b"v", 0).unwrap();
    let data = live.paths().unwrap().data;
    let old_inode = ino(&data);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(100)
        .unwrap();
    // The insert notices the shrink (its periodic fstat check, or the SIGBUS safety net the
    // moment it touches a page past the new end, INV-S6) and moves to a fresh file; the
    // mapping of the short file is never used again.
    assert_eq!(
        live.insert(b"k2", b"v2", 0).unwrap(),
        InsertOutcome::Inserted { evicted: false }
    );
    assert_ne!(ino(&data), old_inode);
    let mut out = Vec::new();
    assert!(live.get(b"k2", 0, &mut out).unwrap());
    assert!(
        !live.get(b"k", 0, &mut out).unwrap(),
        "entries of the old file are gone"
    );
    live.validate().unwrap();
    let other = ShmStore::open(dir.config("t", 8)).unwrap();
    assert!(other.get(b"k2", 0, &mut out).unwrap());
    // A newcomer finding a short file replaces it too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(0)
        .unwrap();
    let third = ShmStore::open(dir.config("t", 8)).unwrap();
    assert!(!third.get(b"k2", 0, &mut out).unwrap());
    third.validate().unwrap();
}

#[test]
fn a_truncated_or_garbage_lock_file_is_survived() {
    let dir = TestDir::new("lockfile");
    let live = ShmStore::open(dir.config("l", 8)).unwrap();
    live.insert(b"k", b"v", 0).unwrap();
    let lock = live.paths().unwrap().lock;
    // Garbage: odd sequence, owner word naming no process, broken magic.
    let file = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    file.write_all_at(&[0xFF; 384], 0).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    // Reads never touch the lock file's sequence: a hit is validated by its slot alone
    // (consistent, so served) and a miss by its probe run; neither spins on the odd sequence
    // whose writer does not exist. The next writer takes that lock over and resets.
    assert!(live.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v");
    assert!(!live.get(b"absent", 0, &mut out).unwrap());
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(live.info().unwrap().resets, 0);
    live.insert(b"absent", b"a", 0).unwrap();
    assert_eq!(live.info().unwrap().resets, 1, "the writer recovered");
    assert!(!live.get(b"k", 0, &mut out).unwrap(), "the reset dropped k");
    assert!(start.elapsed() < Duration::from_secs(1));
    live.insert(b"k", b"v2", 0).unwrap();
    assert!(live.get(b"k", 0, &mut out).unwrap());
    assert_eq!(out, b"v2");
    // A newcomer replaces the bad lock file and, to keep the pairing, the data file.
    let newcomer = ShmStore::open(dir.config("l", 8)).unwrap();
    assert!(!newcomer.get(b"k", 0, &mut out).unwrap());
    newcomer.insert(b"n", b"1", 0).unwrap();
    live.validate().unwrap(); // forces the file check: follows the new pair
    assert!(live.get(b"n", 0, &mut out).unwrap());
    // Truncation of the lock file: the next insert moves to fresh files.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_len(8)
        .unwrap();
    live.insert(b"after", b"x", 0).unwrap();
    assert!(live.get(b"after", 0, &mut out).unwrap());
    live.validate().unwrap();
}

#[test]
fn files_unlinked_under_a_live_store_are_recreated_and_followed() {
    let dir = TestDir::new("unlink");
    let live = ShmStore::open(dir.config("u", 8)).unwrap();
    live.insert(b"k", b"v", 0).unwrap();
    let paths = live.paths().unwrap();
    std::fs::remove_file(&paths.data).unwrap();
    std::fs::remove_file(&paths.lock).unwrap();
    // The live store keeps its (now nameless) mapping.
    let mut out = Vec::new();
    assert!(live.get(b"k", 0, &mut out).unwrap());
    // A newcomer creates fresh files; the live store notices on its next insert after the
    // check interval (100 ms) and moves to them.
    let newcomer = ShmStore::open(dir.config("u", 8)).unwrap();
    newcomer.insert(b"n", b"1", 0).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    live.insert(b"from_live", b"2", 0).unwrap();
    assert!(newcomer.get(b"from_live", 0, &mut out).unwrap());
    assert!(live.get(b"n", 0, &mut out).unwrap());
    // Deleted with no newcomer: the live store recreates them itself (clear forces the check).
    std::fs::remove_file(&paths.data).unwrap();
    std::fs::remove_file(&paths.lock).unwrap();
    live.clear().unwrap();
    assert!(paths.data.exists() && paths.lock.exists());
    live.insert(b"again", b"3", 0).unwrap();
    let third = ShmStore::open(dir.config("u", 8)).unwrap();
    assert!(third.get(b"again", 0, &mut out).unwrap());
}

#[test]
fn a_cache_larger_than_the_filesystem_is_no_space_at_open() {
    let dir = TestDir::new("nospace");
    // ~960 GB: below the 1 TiB sanity limit, above any test machine's free space.
    let config = ShmConfig {
        key_bytes_max: 128,
        value_bytes_max: 256,
        ..dir.config("huge", MAX_CAPACITY)
    };
    let err = ShmStore::open(config).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoSpace, "{}", err.message);
    assert!(err.message.contains("not enough space"), "{}", err.message);
    let leftovers: Vec<_> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("huge"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn unaddressable_parameters_are_invalid_arguments() {
    let dir = TestDir::new("invalid");
    for (capacity, key, value) in [
        (0, 512, 4096),
        (MAX_CAPACITY + 1, 8, 8),
        (16, 0, 4096),
        (16, 512, 0),
        (u32::MAX, u32::MAX, u32::MAX),
    ] {
        let config = ShmConfig {
            key_bytes_max: key,
            value_bytes_max: value,
            ..dir.config("bad", capacity)
        };
        let err = ShmStore::open(config).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
    }
}

#[test]
fn unsafe_directories_and_files_are_refused() {
    let dir = TestDir::new("security");
    ShmStore::open(dir.config("s", 4)).unwrap();
    // A symlink as the directory.
    let link = dir.path.with_extension("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&dir.path, &link).unwrap();
    let err = ShmStore::open(ShmConfig {
        dir: Some(link.clone()),
        ..dir.config("s", 4)
    })
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("symlink"), "{}", err.message);
    std::fs::remove_file(&link).unwrap();
    // A symlink as the data file.
    std::os::unix::fs::symlink("/etc/hostname", dir.path.join("sym.data")).unwrap();
    let err = ShmStore::open(dir.config("sym", 4)).unwrap_err();
    assert!(err.message.contains("symlink"), "{}", err.message);
    // A group-writable data file.
    let store = ShmStore::open(dir.config("w", 4)).unwrap();
    let data = store.paths().unwrap().data;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o660)).unwrap();
    let err = ShmStore::open(dir.config("w", 4)).unwrap_err();
    assert!(err.message.contains("writable"), "{}", err.message);
    // A world-writable directory.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ShmStore::open(dir.config("s", 4)).unwrap_err();
    assert!(err.message.contains("writable"), "{}", err.message);
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn threads_opening_at_once_agree_on_one_file() {
    let dir = TestDir::new("threads_open");
    let dir_path = dir.path.clone();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8i64)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            let config = ShmConfig {
                dir: Some(dir_path.clone()),
                name: "cold".into(),
                capacity: 64,
                key_bytes_max: 64,
                value_bytes_max: 64,
                ttl_ns: None,
                max_bytes: None,
            };
            std::thread::spawn(move || {
                barrier.wait();
                let store = ShmStore::open(config).unwrap();
                store.insert(&int_key(t), &int_value(t), 0).unwrap();
                store
            })
        })
        .collect();
    let stores: Vec<ShmStore> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut out = Vec::new();
    for store in &stores {
        for t in 0..8 {
            assert!(store.get(&int_key(t), 0, &mut out).unwrap(), "key {t}");
        }
    }
    stores[0].validate().unwrap();
}

#[test]
fn threads_never_read_torn_values() {
    let dir = TestDir::new("torn_threads");
    let store = Arc::new(ShmStore::open(dir.config("torn", 16)).unwrap());
    let deadline = Instant::now() + Duration::from_millis(700);
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let (mut hits, mut i) = (0u64, 0usize);
                while Instant::now() < deadline {
                    i += 1;
                    let key = [(i % 24) as u8];
                    if (i + t as usize) % 3 == 0 {
                        // Self-describing values of varying length: every byte is the key.
                        let len = 1 + (i * 131 + t as usize * 17) % 4000;
                        store.insert(&key, &vec![key[0]; len], 0).unwrap();
                    } else if store.get(&key, 0, &mut out).unwrap() {
                        hits += 1;
                        assert!(!out.is_empty() && out.iter().all(|&b| b == key[0]), "torn");
                    }
                }
                hits
            })
        })
        .collect();
    let hits: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(hits > 100, "the test exercised hits ({hits})");
    store.validate().unwrap();
}

#[test]
fn resident_bytes_per_entry() {
    let dir = TestDir::new("resident");
    for (key, value) in [(512u32, 4096u32), (64, 64), (32, 16)] {
        let capacity = 10_000;
        let store = ShmStore::open(ShmConfig {
            key_bytes_max: key,
            value_bytes_max: value,
            ..dir.config(&format!("r{key}_{value}"), capacity)
        })
        .unwrap();
        for k in 0..100 {
            store.insert(&int_key(k), &int_value(k), 0).unwrap();
        }
        let meta = std::fs::metadata(store.paths().unwrap().data).unwrap();
        let resident = meta.blocks() * 512;
        // Format 4: the fixed part (header, table, slots) is made real at creation, the heap
        // as it fills, in steps of 64 KiB (+ a page of rounding): 100 small entries take one
        // step, whatever the limits. The limits reserve nothing (the budget is larger).
        assert!(
            resident >= store.fixed_bytes() && resident <= store.fixed_bytes() + (64 << 10) + 4096,
            "{resident} bytes resident, fixed part {}",
            store.fixed_bytes()
        );
        assert!(
            store.region_bytes() > resident,
            "the budget is not reserved"
        );
        println!(
            "limits key={key} value={value}: slot {} B, file {} B for {capacity} entries, \
             resident {:.0} B/entry",
            store.slot_bytes(),
            store.region_bytes(),
            resident as f64 / f64::from(capacity)
        );
    }
}

/// Format 4 files are shorter than their mapping (the heap grows as entries arrive): the
/// periodic name check must not take that for a truncation and move to fresh files.
#[test]
fn a_growing_file_is_not_taken_for_a_truncated_one() {
    let dir = TestDir::new("growing");
    let store = ShmStore::open(dir.config("g", 1000)).unwrap();
    let paths = store.paths().unwrap();
    let before = std::fs::metadata(&paths.data).unwrap().ino();
    for k in 0..200 {
        store.insert(&int_key(k), &int_value(k), 0).unwrap();
    }
    assert!(std::fs::metadata(&paths.data).unwrap().len() < store.region_bytes());
    let mut out = Vec::new();
    for round in 0..4 {
        // Past the check interval, then enough reads for the store to look at the names.
        std::thread::sleep(Duration::from_millis(120));
        for k in 0..200 {
            assert!(
                store.get(&int_key(k), 0, &mut out).unwrap(),
                "round {round}: key {k} lost"
            );
        }
    }
    assert_eq!(
        std::fs::metadata(&paths.data).unwrap().ino(),
        before,
        "same file"
    );
    assert_eq!(store.moves(), 0, "never remapped");
    assert_eq!(store.info().unwrap().resets, 0);
}
