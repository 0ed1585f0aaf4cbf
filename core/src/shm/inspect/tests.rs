//! Unit tests of the inspector over real files in a temporary directory.

use super::*;
use crate::fuzz_targets::tests::pseudo_random;
use crate::shm::layout::{word, SlotMeta, HEADER_WORDS};
use crate::shm::store::ShmConfig;
use std::os::unix::fs::FileExt;

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "warp_inspect_{tag}_{}_{}",
        std::process::id(),
        crate::clock::monotonic_now_ns()
    ))
}

pub(crate) fn config(dir: &Path, name: &str) -> ShmConfig {
    ShmConfig {
        dir: Some(dir.to_owned()),
        name: name.into(),
        capacity: 4,
        key_bytes_max: 16,
        value_bytes_max: 16,
        ttl_ns: None,
        max_bytes: None,
    }
}

/// A cache with 3 entries, 2 hits and 4 misses (one of them for a key never stored).
pub(crate) fn filled(dir: &Path, name: &str) -> ShmStore {
    let store = ShmStore::open(config(dir, name)).unwrap();
    let mut out = Vec::new();
    for k in 0..3u8 {
        assert!(!store.get(&[k], 0, &mut out).unwrap());
        store.insert(&[k], &[k; 5], 0).unwrap();
    }
    assert!(!store.get(b"absent", 0, &mut out).unwrap());
    assert!(store.get(&[0], 0, &mut out).unwrap());
    assert!(store.get(&[1], 0, &mut out).unwrap());
    store
}

fn only(report: &DirReport) -> &CacheReport {
    assert_eq!(report.caches.len(), 1, "{report:?}");
    &report.caches[0]
}

fn write_word(path: &Path, index: usize, value: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_ne_bytes(), (index * WORD_BYTES) as u64)
        .unwrap();
}

#[test]
fn a_healthy_cache_reports_its_figures_and_who_maps_it() {
    let path = temp_dir("healthy");
    let store = filled(&path, "m.f.0123456789abcdef");
    let report = inspect_dir(&path, None).unwrap();
    assert!(report.exists);
    let cache = only(&report);
    assert_eq!(cache.stem, "m.f.0123456789abcdef");
    assert_eq!(cache.condition, Condition::Healthy);
    assert!(cache.validated);
    let info = cache.info.unwrap();
    assert_eq!((info.current_size, info.hits, info.misses), (3, 2, 4));
    assert_eq!(info, store.info().unwrap(), "the store's own figures");
    let params = cache.params.unwrap();
    assert_eq!((params.capacity, params.key_bytes_max), (4, 16));
    assert_eq!(cache.data_file_bytes, Some(store.region_bytes()));
    assert_eq!(cache.lock_file_bytes, Some(LOCK_FILE_BYTES));
    assert_eq!(cache.payload_bytes, Some(3 * (1 + 5)));
    assert_eq!(cache.format_version, Some(FORMAT_VERSION));
    assert_eq!(cache.lock_owner, None, "the lock is free");
    assert!(!cache.lock_held_by_dead());
    let me = liveness::owner_word(&CacheDir::open(&path).unwrap()).unwrap();
    assert_eq!(
        cache.mappers,
        vec![Process {
            liveness_id: me,
            state: OwnerState::Alive
        }]
    );
    assert_eq!(report.presence_files, 1);
    // Only the asked-for stem.
    assert!(inspect_dir(&path, Some("other")).unwrap().caches.is_empty());
    drop(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn inspecting_writes_nothing() {
    let path = temp_dir("readonly");
    let store = filled(&path, "ro");
    let data = path.join("ro.data");
    let lock = path.join("ro.lock");
    let before = (std::fs::read(&data).unwrap(), std::fs::read(&lock).unwrap());
    let names_before = std::fs::read_dir(&path).unwrap().count();
    for _ in 0..3 {
        assert!(only(&inspect_dir(&path, None).unwrap()).validated);
    }
    assert_eq!(
        before,
        (std::fs::read(&data).unwrap(), std::fs::read(&lock).unwrap())
    );
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), names_before);
    drop(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn a_missing_directory_is_reported_and_not_created() {
    let path = temp_dir("missing");
    let report = inspect_dir(&path, None).unwrap();
    assert!(!report.exists && report.caches.is_empty());
    assert!(!path.exists());
}

#[test]
fn damaged_entries_are_named_with_their_file() {
    let path = temp_dir("damaged");
    let store = filled(&path, "d");
    let geometry = Geometry::new(4, 16, 16, None).unwrap();
    drop(store);
    // Slot 0's stored hash no longer matches its key.
    let hash_word = geometry.arena_word + word!(SlotMeta, hash);
    let data = path.join("d.data");
    let file = std::fs::File::open(&data).unwrap();
    let mut old = [0u8; 8];
    file.read_exact_at(&mut old, (hash_word * WORD_BYTES) as u64)
        .unwrap();
    write_word(&data, hash_word, u64::from_ne_bytes(old) ^ 0x10);
    let cache = only(&inspect_dir(&path, None).unwrap()).clone();
    match &cache.condition {
        Condition::Corrupt { file, problem } => {
            assert_eq!(file, "d.data");
            assert!(problem.contains("fails its check"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!cache.validated);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn truncated_and_foreign_files_are_reported() {
    let path = temp_dir("truncated");
    drop(filled(&path, "t"));
    let data = path.join("t.data");
    let lock = path.join("t.lock");
    let full = std::fs::read(&data).unwrap();
    let lock_bytes = std::fs::read(&lock).unwrap();
    let condition = || only(&inspect_dir(&path, None).unwrap()).condition.clone();
    let corrupt_file = |expected: &str| match condition() {
        Condition::Corrupt { file, problem } => {
            assert_eq!(file, expected, "{problem}");
            problem
        }
        other => panic!("{other:?}"),
    };
    for len in [0, 7, 100, HEADER_WORDS * WORD_BYTES, full.len() - 1] {
        std::fs::write(&data, &full[..len]).unwrap();
        let problem = corrupt_file("t.data");
        assert!(problem.contains("truncated"), "{len}: {problem}");
    }
    std::fs::write(&data, &full).unwrap();
    assert_eq!(condition(), Condition::Healthy);
    // A parameter word that disagrees with the others.
    write_word(&data, word!(DataHeader, bucket_count), 1 << 20);
    assert!(corrupt_file("t.data").contains("bucket_count"));
    std::fs::write(&data, &full).unwrap();
    write_word(&data, word!(DataHeader, lock_nonce), 42);
    assert!(corrupt_file("t.data").contains("another lock file"));
    std::fs::write(&data, &full).unwrap();
    write_word(&data, word!(DataHeader, magic), 1);
    assert!(corrupt_file("t.data").contains("not a warp_cache data file"));
    std::fs::write(&data, &full).unwrap();
    // The lock file: truncated, garbage, another format version.
    std::fs::write(&lock, &lock_bytes[..300]).unwrap();
    assert!(corrupt_file("t.lock").contains("truncated"));
    std::fs::write(&lock, b"garbage").unwrap();
    assert!(corrupt_file("t.lock").contains("not a warp_cache lock file"));
    std::fs::write(&lock, &lock_bytes).unwrap();
    write_word(&lock, word!(LockFile, format_version), 1);
    assert!(matches!(condition(), Condition::Outdated(why) if why.contains("format version 1")));
    assert_eq!(
        only(&inspect_dir(&path, None).unwrap()).format_version,
        Some(1)
    );
    std::fs::remove_file(&lock).unwrap();
    assert!(corrupt_file("t.lock").contains("missing"));
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn an_odd_sequence_is_an_interrupted_write_or_a_busy_writer() {
    let path = temp_dir("odd");
    let store = filled(&path, "w");
    let lock = path.join("w.lock");
    let state = word!(LockFile, state);
    // Owner 0x1234 has no presence file: dead, inside a write section.
    write_word(&lock, state, (0x1234 << 32) | 7);
    let cache = only(&inspect_dir(&path, None).unwrap()).clone();
    assert!(cache.lock_held_by_dead());
    assert!(
        matches!(&cache.condition, Condition::Corrupt { problem, .. } if problem.contains("middle of a write")),
        "{:?}",
        cache.condition
    );
    // This process is alive: a busy writer, figures unchecked.
    let me = liveness::owner_word(&CacheDir::open(&path).unwrap()).unwrap();
    write_word(&lock, state, (me << 32) | 7);
    let cache = only(&inspect_dir(&path, None).unwrap()).clone();
    assert_eq!(cache.condition, Condition::Busy);
    assert!(!cache.validated && !cache.lock_held_by_dead());
    assert_eq!(cache.info.map(|i| i.current_size), Some(3));
    write_word(&lock, state, 8);
    assert_eq!(
        only(&inspect_dir(&path, None).unwrap()).condition,
        Condition::Healthy
    );
    drop(store);
    std::fs::remove_dir_all(&path).unwrap();
}

/// Hostile files, as the `region` fuzz body damages images: XOR pseudo-random masks into
/// copies of a valid pair (anywhere, header included) and cut them at random lengths. The
/// inspector must neither panic nor hang, and must never call a file healthy that the store's
/// own validator (over the same bytes, `ShmStore::from_image`) rejects.
#[test]
fn hostile_files_never_panic_and_agree_with_the_validator() {
    let path = temp_dir("hostile");
    drop(filled(&path, "h"));
    let data = path.join("h.data");
    let lock = path.join("h.lock");
    let (data_bytes, lock_bytes) = (std::fs::read(&data).unwrap(), std::fs::read(&lock).unwrap());
    let mut conditions = [0usize; 4];
    for seed in 0..400u64 {
        let noise = pseudo_random(seed, 48);
        let mut image = data_bytes.clone();
        let mut lock_image = lock_bytes.clone();
        for pair in noise.chunks_exact(3) {
            let spot = usize::from(pair[0]) * (image.len() / 256 + 1) + usize::from(pair[2]);
            if seed % 7 == 0 {
                // Lock words: the state, nonce and mapper table.
                let at = 24 + spot % (lock_image.len() - 24);
                lock_image[at] ^= pair[1];
            } else {
                let at = spot % image.len();
                image[at] ^= pair[1];
            }
        }
        if seed % 5 == 0 {
            image.truncate(usize::from(noise[0]) * image.len() / 256);
        }
        std::fs::write(&data, &image).unwrap();
        std::fs::write(&lock, &lock_image).unwrap();
        let started = std::time::Instant::now();
        let cache = only(&inspect_dir(&path, None).unwrap()).clone();
        assert!(started.elapsed() < Duration::from_secs(5), "seed {seed}");
        conditions[match &cache.condition {
            Condition::Healthy => 0,
            Condition::Busy => 1,
            Condition::Outdated(_) => 2,
            Condition::Corrupt { .. } => 3,
        }] += 1;
        if cache.condition == Condition::Healthy && cache.validated {
            let params = cache.params.unwrap();
            let config = ShmConfig {
                dir: None,
                name: "h".into(),
                capacity: params.capacity,
                key_bytes_max: params.key_bytes_max,
                value_bytes_max: params.value_bytes_max,
                ttl_ns: None,
                max_bytes: Some(params.region_bytes),
            };
            let store = ShmStore::from_image(config, &image, &lock_image)
                .unwrap_or_else(|e| panic!("seed {seed}: healthy but rejected: {e}"));
            // The copy's sequence is even (consistent): the validator's lock is ours.
            store
                .validate()
                .unwrap_or_else(|e| panic!("seed {seed}: healthy but invalid: {e}"));
        }
    }
    assert!(conditions[3] > 100, "{conditions:?}");
    assert!(conditions[0] > 10, "{conditions:?}");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn stems_pair_names_and_skip_presence_and_temporary_files() {
    let names: Vec<String> = [
        "a.data",
        "a.lock",
        "b.lock",
        ".live.0000abcd",
        ".tmp.0000abcd.c.data.1",
        "notes.txt",
        ".data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(stems(&names), vec!["a".to_owned(), "b".to_owned()]);
}
