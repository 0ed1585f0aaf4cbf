//! Replays every committed fuzz input through the same bodies the cargo-fuzz targets run
//! (`warp_cache_core::fuzz_targets::{codec, arena, region}`):
//!
//! * `corpora/fuzz/<target>/`: seed inputs;
//! * `corpora/fuzz/regressions/<target>/`: crash reproducers (a file copied from
//!   `fuzz/artifacts/<target>/` after the bug it found was fixed).
//!
//! The `region` inputs are also replayed through real files (`ShmStore::open` over a hostile
//! data file in a private directory, mapped by `region.rs`).
//!
//! Seeds are regenerated (deterministically) with
//! `WARP_WRITE_SEEDS=1 cargo test -p warp-cache-tests --test fuzz_regressions -- --ignored write_seed_corpora`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use warp_cache_core::codec::{self, Value};
use warp_cache_core::fuzz_targets;
use warp_cache_core::shm::layout::{DataHeader, Geometry};
use warp_cache_core::shm::table::Table;
use warp_cache_tests::corpora_dir;

const TARGETS: [&str; 3] = ["codec", "arena", "region"];

fn run_body(target: &str, data: &[u8]) {
    match target {
        "codec" => fuzz_targets::codec(data),
        "arena" => fuzz_targets::arena(data),
        "region" => {
            fuzz_targets::region(data);
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Files directly under `dir` (sorted; none if the directory is missing).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn seed_dir(target: &str) -> PathBuf {
    corpora_dir().join("fuzz").join(target)
}

fn regression_dir(target: &str) -> PathBuf {
    corpora_dir().join("fuzz").join("regressions").join(target)
}

/// Runs `body` on every seed and reproducer of `target`; fails naming every input that
/// panicked. Returns how many inputs ran.
fn replay_with(target: &str, body: &dyn Fn(&[u8])) -> usize {
    let files: Vec<PathBuf> = inputs(&seed_dir(target))
        .into_iter()
        .chain(inputs(&regression_dir(target)))
        .collect();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs failed (reproduce one with `cargo +nightly fuzz run {target} FILE`):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    eprintln!("{target}: {} inputs replayed", files.len());
    files.len()
}

fn replay(target: &str) -> usize {
    replay_with(target, &|data| run_body(target, data))
}

#[test]
fn codec_seeds_and_regressions_pass() {
    assert!(replay("codec") >= 5, "codec seeds are missing");
}

#[test]
fn arena_seeds_and_regressions_pass() {
    assert!(replay("arena") >= 5, "arena seeds are missing");
}

#[test]
fn region_seeds_and_regressions_pass() {
    assert!(replay("region") >= 5, "region seeds are missing");
    // The seeds are well-formed files: every one must get past the header check (otherwise
    // the fuzzer would start from inputs that only exercise the rejection path).
    for file in inputs(&seed_dir("region")) {
        let data = std::fs::read(&file).unwrap();
        assert!(
            fuzz_targets::region(&data),
            "seed {} does not load",
            file.display()
        );
    }
}

/// A private directory under /dev/shm (or the temp dir), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> ScratchDir {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!("warp-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create scratch dir");
        // The cache directory must not be group/world-writable (region.rs refuses it).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn region_inputs_through_real_mapped_files() {
    let dir = ScratchDir::new("region-files");
    let kept = std::cell::Cell::new(0usize);
    let ran = replay_with("region", &|data| {
        kept.set(kept.get() + usize::from(fuzz_targets::region_through_files(data, &dir.0)));
    });
    // Every well-formed seed is kept (mapped as is), not replaced.
    let seeds = inputs(&seed_dir("region")).len();
    assert!(
        kept.get() >= seeds,
        "only {} of {ran} inputs were mapped as found ({seeds} seeds)",
        kept.get()
    );
}

/// Found by the `region` body (a flipped byte in a seed): a bucket whose slot part is 0 but
/// whose hash part is not (neither empty nor a valid entry). `find` used to stop at it as if
/// it were empty while `insert` probes past it, so a key stored behind it was never found
/// again, and every later miss stored the key once more (duplicate entries). Reproducer:
/// `corpora/fuzz/regressions/region/table-slot-part-zero-bucket`.
#[test]
fn a_garbage_bucket_with_slot_part_zero_does_not_hide_later_inserts() {
    let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
    let table = Table::new(&words, 4);
    // Home bucket of hash 2 is 2; put the garbage word there.
    words[2].store(0xe1_0000_0000, std::sync::atomic::Ordering::Relaxed);
    let index = table.insert(2, 1).expect("an empty bucket exists");
    assert_eq!(index, 3, "insert probes past the garbage bucket");
    assert_eq!(
        table.find(2, |slot| slot == 1),
        Some((3, 1)),
        "find must probe past it too"
    );
    assert!(table.remove(2, 1).is_ok());
    assert_eq!(words[3].load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn every_target_has_a_seed_directory() {
    for target in TARGETS {
        assert!(
            seed_dir(target).is_dir(),
            "corpora/fuzz/{target} is missing: cargo fuzz run {target} corpora/fuzz/{target} needs it"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Seed generation (deterministic; run on demand, see the module docs).

fn codec_seeds() -> Vec<(String, Vec<u8>)> {
    let values = [
        ("none", Value::None),
        ("true", Value::Bool(true)),
        ("int-neg", Value::Int(-2)),
        ("int-max", Value::Int(i64::MAX)),
        ("float-nan", Value::Float(f64::NAN)),
        ("float-neg-zero", Value::Float(-0.0)),
        ("str-utf8", Value::Str("héllo \u{1F600}".into())),
        ("bytes", Value::Bytes(vec![0, 1, 2, 255])),
        ("pickle", Value::Pickle(b"\x80\x04K\x01.".to_vec())),
        ("kwargs-marker", Value::KwargsMarker),
        (
            "tuple-key",
            Value::Tuple(vec![
                Value::Int(1),
                Value::Str("a".into()),
                Value::KwargsMarker,
                Value::Str("x".into()),
                Value::Int(2),
            ]),
        ),
        ("tuple-empty", Value::Tuple(vec![])),
        ("str-long", Value::Str("x".repeat(300))),
    ];
    values
        .into_iter()
        .map(|(name, value)| (name.to_owned(), codec::encode(&value).unwrap()))
        .collect()
}

fn arena_seeds() -> Vec<(String, Vec<u8>)> {
    // Parameter bytes: capacity, key limit, value limit, ttl, hashing (see fuzz_targets::arena).
    let mut seeds = Vec::new();
    // capacity 3 (b % 12 = 2), keys <= 8, values <= 8, no ttl, real hash: a get/insert loop
    // over 5 keys (evictions, hits that protect entries).
    let mut script = vec![2, 7, 7, 0, 0];
    for round in 0..4u8 {
        for key in [0u8, 1, 2, 3, 4, 0, 1] {
            script.extend([0, key]); // get
            script.extend([5, key, 3 + round]); // insert
        }
    }
    seeds.push(("evict-loop".to_owned(), script));
    // capacity 1: every new insert evicts.
    seeds.push((
        "capacity-one".to_owned(),
        vec![0, 3, 3, 0, 0, 5, 1, 2, 5, 2, 2, 0, 1, 0, 2, 5, 1, 1],
    ));
    // ttl 4 ns: inserts, clock steps, expiry on get, a jump across the ttl.
    seeds.push((
        "ttl".to_owned(),
        vec![
            3, 7, 7, 4, 3, 0, 5, 1, 2, 10, 2, 0, 1, 5, 2, 2, 10, 3, 0, 1, 0, 2, 10, 255, 0, 2, 14,
        ],
    ));
    // ttl 0: nothing stored.
    seeds.push(("ttl-zero".to_owned(), vec![3, 7, 7, 3, 0, 5, 1, 2, 0, 1]));
    // Constant hash: every key collides; removal is replaced by gets; full re-reads.
    let mut collide = vec![5, 11, 7, 0, 3];
    for key in 0..12u8 {
        collide.extend([6, key * 3, 4]);
        if key % 3 == 0 {
            collide.extend([15]);
        }
    }
    seeds.push(("hash-constant".to_owned(), collide.clone()));
    collide[4] = 4; // same low 32 bits
    seeds.push(("hash-same-low".to_owned(), collide.clone()));
    collide[4] = 5; // four distinct hashes
    seeds.push(("hash-few".to_owned(), collide));
    // Oversize keys and values, removes, the oversize counter and a clear.
    seeds.push((
        "oversize-remove-clear".to_owned(),
        vec![
            4, 3, 3, 0, 0, 5, 33, 2, 5, 1, 9, 5, 2, 2, 9, 1, 12, 0, 33, 13, 0, 0, 2, 5, 2, 1,
        ],
    ));
    // Larger capacity (b >= 240): long probe runs.
    let mut big = vec![250, 11, 23, 0, 0];
    for key in 0..40u8 {
        big.extend([7, key, key % 20]);
    }
    big.extend([15]);
    seeds.push(("capacity-large".to_owned(), big));
    seeds
}

fn region_seeds() -> Vec<(String, Vec<u8>)> {
    [
        (4u32, 8u32, 8u32, 6u8),
        (4, 8, 8, 0),
        (1, 1, 1, 1),
        (8, 16, 24, 3),
        (16, 8, 8, 16),
        (64, 16, 16, 40),
        (5, 64, 64, 2),
    ]
    .into_iter()
    .map(|(capacity, key, value, entries)| {
        (
            format!("cap{capacity}-key{key}-value{value}-entries{entries}"),
            fuzz_targets::region_seed(capacity, key, value, entries),
        )
    })
    .chain(
        // Small byte budgets (heap bytes past the fixed part): values of several lengths,
        // evicted by bytes, extents of several classes on the free lists.
        [
            (8u32, 16u32, 24u32, 12u8, 96u64),
            (4, 8, 8, 6, 48),
            (16, 8, 16, 24, 160),
        ]
        .into_iter()
        .map(|(capacity, key, value, entries, heap)| {
            let fixed = Geometry::new(capacity, key, value, None)
                .unwrap()
                .fixed_bytes;
            (
                format!("cap{capacity}-key{key}-value{value}-entries{entries}-heap{heap}"),
                fuzz_targets::region_seed_with_budget(
                    capacity,
                    key,
                    value,
                    entries,
                    Some(fixed + heap),
                ),
            )
        }),
    )
    .collect()
}

/// The reproducer of the table bug above: seed `cap4-key8-value8-entries6` with one bucket
/// replaced by `0xe1_0000_0000` (and no ttl).
fn region_reproducers() -> Vec<(String, Vec<u8>)> {
    let mut data = fuzz_targets::region_seed(4, 8, 8, 6);
    let geometry = Geometry::new(4, 8, 8, None).unwrap();
    let at = (geometry.table_word + 5) * 8;
    data[at..at + 8].copy_from_slice(&0xe1_0000_0000u64.to_ne_bytes());
    // Creation nonce 0: the opener has no ttl (so it stores, then reads back).
    let nonce = std::mem::offset_of!(DataHeader, creation_nonce);
    data[nonce..nonce + 8].copy_from_slice(&0u64.to_ne_bytes());
    vec![("table-slot-part-zero-bucket".to_owned(), data)]
}

#[test]
#[ignore = "writes corpora/fuzz/*: run on demand with WARP_WRITE_SEEDS=1"]
fn write_seed_corpora() {
    if std::env::var_os("WARP_WRITE_SEEDS").is_none() {
        eprintln!("set WARP_WRITE_SEEDS=1 to (re)write corpora/fuzz seeds");
        return;
    }
    let write = |dir: PathBuf, files: Vec<(String, Vec<u8>)>| {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    };
    write(seed_dir("codec"), codec_seeds());
    write(seed_dir("arena"), arena_seeds());
    write(seed_dir("region"), region_seeds());
    write(regression_dir("region"), region_reproducers());
}
