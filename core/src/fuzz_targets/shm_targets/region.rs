//! The `region` target: hostile data files opened as a store (`region.rs`'s checks, the
//! header check, every operation on garbage).

use super::*;

const REGION_DEFAULT: (u32, u32, u32) = (4, 8, 8);

fn header_word(data: &[u8], byte_offset: usize) -> u64 {
    data.get(byte_offset..byte_offset + WORD_BYTES)
        .map_or(0, |w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])))
}

fn set_word(bytes: &mut [u8], byte_offset: usize, value: u64) {
    if let Some(w) = bytes.get_mut(byte_offset..byte_offset + WORD_BYTES) {
        w.copy_from_slice(&value.to_ne_bytes());
    }
}

/// The parameters the opening process uses: the file's own if they are small (so seeds
/// of several geometries load), else a fixed small set (the file is then a mismatch).
/// The ttl is the opener's choice, taken from the creation nonce (a field no check reads).
fn region_config(data: &[u8]) -> ShmConfig {
    let word = |offset| header_word(data, offset);
    let capacity = word(offset_of!(DataHeader, capacity));
    let key = word(offset_of!(DataHeader, key_bytes_max));
    let value = word(offset_of!(DataHeader, value_bytes_max));
    let (capacity, key_bytes_max, value_bytes_max) =
        if (1..=64).contains(&capacity) && (1..=64).contains(&key) && (1..=64).contains(&value) {
            (capacity as u32, key as u32, value as u32)
        } else {
            REGION_DEFAULT
        };
    let ttl_ns = match word(offset_of!(DataHeader, creation_nonce)) % 4 {
        0 | 1 => None,
        2 => Some(0),
        _ => Some(1_000),
    };
    // The file's own byte budget if it is one these parameters allow and at most the
    // default (small budgets: evictions by bytes and compaction), else the default.
    let budget = word(offset_of!(DataHeader, budget_bytes));
    let max_bytes = Geometry::new(capacity, key_bytes_max, value_bytes_max, None)
        .ok()
        .filter(|default| budget < default.region_bytes)
        .and_then(|_| Geometry::new(capacity, key_bytes_max, value_bytes_max, Some(budget)).ok())
        .map(|_| budget);
    ShmConfig {
        dir: None,
        name: "fuzz-region".into(),
        capacity,
        key_bytes_max,
        value_bytes_max,
        ttl_ns,
        max_bytes,
    }
}

/// The data image as the opener sees it: the file's bytes, with the hash-algorithm id of
/// this build (a file from another build is just a mismatch, not an interesting input).
fn region_image(data: &[u8]) -> Vec<u8> {
    let mut image = data.to_vec();
    set_word(
        &mut image,
        offset_of!(DataHeader, hash_algo_id),
        hash_algo_id(),
    );
    image
}

/// A clean lock file paired with the data file (same nonce, free lock, even sequence).
fn lock_image_for(data: &[u8]) -> Vec<u8> {
    let mut lock = vec![0u8; LOCK_FILE_WORDS * WORD_BYTES];
    set_word(&mut lock, offset_of!(LockFile, magic), LOCK_MAGIC);
    set_word(&mut lock, offset_of!(LockFile, endian), ENDIAN_MARK);
    set_word(
        &mut lock,
        offset_of!(LockFile, format_version),
        FORMAT_VERSION,
    );
    let nonce = header_word(data, offset_of!(DataHeader, lock_nonce));
    set_word(&mut lock, offset_of!(LockFile, nonce), nonce);
    lock
}

/// The `region` target: `data` is the whole data file as found in the cache directory
/// (possibly written by a buggy, crashed or malicious process). Returns whether it got
/// past the header check (the store loaded it); a mismatch is a pass (`open` replaces
/// such a file).
pub fn region(data: &[u8]) -> bool {
    let config = region_config(data);
    let image = region_image(data);
    let lock = lock_image_for(&image);
    match ShmStore::from_image(config.clone(), &image, &lock) {
        Ok(store) => {
            exercise_hostile(&store, &config);
            true
        }
        Err(e) => {
            assert_eq!(e.kind, crate::ErrorKind::Corrupt, "rejection kind: {e}");
            false
        }
    }
}

/// The same input through real files: a store is created in `dir`, its data file is
/// overwritten with the input (lock file paired) and opened again by [`ShmStore::open`],
/// which maps it. For replaying the corpus through `region.rs`'s checks and a real
/// mapping (tests; too slow for the fuzzer). Returns whether the mapped file was kept.
pub fn region_through_files(data: &[u8], dir: &Path) -> bool {
    let config = ShmConfig {
        dir: Some(dir.to_owned()),
        ..region_config(data)
    };
    let first = ShmStore::open(config.clone()).expect("create the cache files");
    let paths = first.paths().expect("a file-backed store has paths");
    drop(first);
    let image = region_image(data);
    std::fs::write(&paths.data, &image).expect("write the hostile data file");
    std::fs::write(&paths.lock, lock_image_for(&image)).expect("write the lock file");
    let store = ShmStore::open(config.clone()).expect("open over a hostile file");
    // Kept if the mapped file still holds the input's header (not replaced).
    let kept = std::fs::read(&paths.data)
        .map(|now| now.len() >= 256 && image.len() >= 256 && now[..256] == image[..256])
        .unwrap_or(false);
    exercise_hostile(&store, &config);
    kept
}

/// Operations on a store whose memory may be garbage: nothing may panic or hang; nothing
/// longer than the value limit is served; a key just stored reads back exactly; after
/// `clear()` everything is valid and works.
fn exercise_hostile(store: &ShmStore, config: &ShmConfig) {
    let value_max = config.value_bytes_max as usize;
    let key_max = config.key_bytes_max as usize;
    let stores = config.ttl_ns != Some(0);
    let heap_budget = store.region_bytes() - store.fixed_bytes();
    let mut out = Vec::new();
    let _ = store.validate();
    for k in 0..6u8 {
        // Keys of every length up to the limit (one of them may be in the file).
        let key: Vec<u8> = (0..(usize::from(k) % key_max) + 1)
            .map(|i| k ^ i as u8)
            .collect();
        if let Ok(hit) = store.get(&key, 0, &mut out) {
            assert!(out.len() <= value_max, "served a value over the limit");
            assert!(hit || out.is_empty(), "a miss left bytes in the output");
        }
        let value: Vec<u8> = (0..(usize::from(k) * 3) % value_max + 1)
            .map(|i| 0xA0 ^ k ^ i as u8)
            .collect();
        match store.insert(&key, &value, 0) {
            Ok(InsertOutcome::Inserted { .. } | InsertOutcome::Updated) => {
                assert!(stores);
                let hit = store.get(&key, 0, &mut out).expect("get after insert");
                assert!(hit, "a key just stored in a loaded file was not found");
                assert_eq!(out, value, "a key just stored reads back another value");
            }
            Ok(InsertOutcome::Skipped(reason)) => {
                // Oversize only for an entry larger than the whole heap (a small budget).
                let too_big = class_of(entry_bytes(key.len() as u32, value.len() as u32))
                    .is_none_or(|class| class_bytes(class) > heap_budget);
                assert!(
                    matches!(reason, SkipReason::ZeroTtl | SkipReason::Corrupt)
                        || (reason == SkipReason::Oversize && too_big),
                    "unexpected skip {reason:?}"
                );
            }
            Err(e) => panic!("insert on a loaded heap image failed: {e}"),
        }
        if k % 2 == 0 {
            let _ = store.remove(&key);
        }
    }
    if let Ok(info) = store.info() {
        assert!(info.current_size <= u64::from(config.capacity));
    }
    let _ = store.validate();
    store.clear().expect("clear");
    store.validate().expect("a cleared store is valid");
    let info = store.info().expect("info");
    assert_eq!(info.current_size, 0);
    assert_eq!((info.hits, info.misses, info.oversize_skips), (0, 0, 0));
    if stores {
        assert!(matches!(
            store.insert(b"k", b"v", 0),
            Ok(InsertOutcome::Inserted { evicted: false })
        ));
        assert!(store.get(b"k", 0, &mut out).expect("get"));
        assert_eq!(out, b"v");
    }
    store.validate().expect("valid after use");
}

/// A well-formed data file (for seeds): a store of the given parameters after
/// `entries` inserts (keys `[i]`, values `[i; 3]`), its lock nonce included.
pub fn region_seed(
    capacity: u32,
    key_bytes_max: u32,
    value_bytes_max: u32,
    entries: u8,
) -> Vec<u8> {
    region_seed_with_budget(capacity, key_bytes_max, value_bytes_max, entries, None)
}

/// [`region_seed`] with a byte budget (`max_bytes`): values of `1 + i % value limit`
/// bytes (keys `[i]`), so that a small budget evicts by bytes and leaves extents of
/// several classes on the free lists.
pub fn region_seed_with_budget(
    capacity: u32,
    key_bytes_max: u32,
    value_bytes_max: u32,
    entries: u8,
    max_bytes: Option<u64>,
) -> Vec<u8> {
    let store = ShmStore::over_memory(ShmConfig {
        dir: None,
        name: "seed".into(),
        capacity,
        key_bytes_max,
        value_bytes_max,
        ttl_ns: None,
        max_bytes,
    })
    .expect("valid seed parameters");
    for i in 0..entries {
        let len = match max_bytes {
            None => 3,
            Some(_) => 1 + usize::from(i) % value_bytes_max as usize,
        };
        let _ = store.insert(&[i], &vec![i; len], u64::from(i));
    }
    let mut out = Vec::new();
    for i in (0..entries).step_by(2) {
        let _ = store.get(&[i], 0, &mut out); // some visited bits
    }
    let (mut data, _lock) = store.image();
    // Deterministic nonces: the lock nonce (the region body pairs a lock file with
    // whatever the data file names) and the creation nonce (no check reads it; it picks
    // the opener's ttl).
    set_word(
        &mut data,
        offset_of!(DataHeader, lock_nonce),
        0x5EED_0000_0000_0001,
    );
    set_word(
        &mut data,
        offset_of!(DataHeader, creation_nonce),
        u64::from(entries),
    );
    data
}
