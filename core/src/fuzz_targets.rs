//! Bodies of the cargo-fuzz targets in `fuzz/` (one function per target), kept here so that
//! `cargo test` replays every committed seed and crash reproducer through exactly the code the
//! fuzzer ran (`tests/rust/fuzz_regressions.rs`). Each body panics on a violated property;
//! returning is a pass.
//!
//! | target   | input                                   | checks                                     |
//! |----------|-----------------------------------------|--------------------------------------------|
//! | `codec`  | arbitrary bytes                         | decode never panics, decoders agree, canonical; structured values round-trip byte-exactly, the key builder's `write_*` equal `encode`, every strict prefix and any trailing byte is rejected |
//! | `arena`  | operation script (get / insert / remove / clear / clock / oversize), values of every length up to the limit | run twice. Default budget: the shm table + arena + extent heap + SIEVE over a heap region agree with [`crate::model::SieveModel`] after every step (same hits, values, victims, size, counters) and `validate()` passes. Small byte budget (`max_bytes`, from the parameter bytes): evictions by bytes, compaction and entries larger than the heap happen; every hit returns the value last stored for its key and is fresh, the counters are exact, `validate()` passes |
//! | `region` | raw bytes of a whole data file (its own `max_bytes` budget if small) | a hostile file that passes the header check never panics, hangs or serves a value over the limit; a successful insert is read back exactly; after `clear()` the store validates and works |
//!
//! Invariants exercised: INV-1 (one SIEVE), INV-5 (one freshness rule), INV-7 (hostile
//! mapping), INV-S4 (corruption under the lock resets), INV-S5 (probe runs contiguous).
#![forbid(unsafe_code)]

use crate::codec::{self, Value};

/// Reads the input one byte at a time; `None` at the end (scripts stop there). The one byte
/// reader of every fuzz body (this module's, `codec`'s and `shm::fuzz`'s).
pub(crate) struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    pub(crate) fn next(&mut self) -> Option<u8> {
        let b = self.data.get(self.at).copied();
        self.at = self.at.saturating_add(1);
        b
    }

    /// The next byte, or 0 past the end (parameters and operands).
    pub(crate) fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

// ------------------------------------------------------------------------------------------
// codec

/// The `codec` target: `data` is decoded as hostile bytes ([`codec::fuzz_decode`]), then read
/// as a script that builds a structured [`Value`] whose encoding must round-trip.
pub fn codec(data: &[u8]) {
    codec::fuzz_decode(data);
    codec::fuzz_roundtrip(data);
    let value = value_from(&mut Input::new(data), 0);
    check_encoding(&value);
}

/// A byte-driven value generator (independent of the codec's own), covering every variant,
/// empty and long payloads, non-ASCII text, special floats and flat tuples.
fn value_from(input: &mut Input<'_>, depth: u8) -> Value {
    let choice = input.byte() % if depth == 0 { 10 } else { 9 };
    let len = |input: &mut Input<'_>| match input.byte() {
        b @ 0..=239 => usize::from(b % 40),
        b => 200 + usize::from(b) * 3, // a few long payloads (crossing 255/256 bytes)
    };
    match choice {
        0 => Value::None,
        1 => Value::Bool(input.byte() & 1 == 1),
        2 => Value::Int(match input.byte() % 4 {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => input.u64() as i64,
        }),
        3 => Value::Float(match input.byte() % 6 {
            0 => f64::NAN,
            1 => -0.0,
            2 => f64::INFINITY,
            3 => f64::from_bits(0x7ff8_dead_beef_0001), // a NaN with a payload
            _ => f64::from_bits(input.u64()),
        }),
        4 => {
            let n = len(input);
            let raw = input.take(n);
            // Mix in multi-byte characters so UTF-8 lengths differ from char counts.
            let text: String = raw
                .iter()
                .map(|&b| match b % 4 {
                    0 => char::from(b'a' + b % 26),
                    1 => 'é',
                    2 => '\u{1F600}',
                    _ => char::from_u32(u32::from(b) * 97).unwrap_or('?'),
                })
                .collect();
            Value::Str(text)
        }
        5 => {
            let n = len(input);
            Value::Bytes(input.take(n))
        }
        6 => {
            let n = len(input);
            Value::Pickle(input.take(n))
        }
        7 => Value::KwargsMarker,
        8 => Value::Str(String::new()),
        _ => {
            let count = usize::from(input.byte() % 12);
            Value::Tuple((0..count).map(|_| value_from(input, depth + 1)).collect())
        }
    }
}

/// Encodes `value` with the key builder's `write_*` functions (how the Python adapter builds
/// keys without a `Value`).
fn build_with_writers(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::None => codec::write_none(out),
        Value::Bool(b) => codec::write_bool(out, *b),
        Value::Int(i) => codec::write_int(out, *i),
        Value::Float(f) => codec::write_float(out, *f),
        Value::Str(s) => codec::write_str(out, s).expect("short str"),
        Value::Bytes(b) => codec::write_bytes(out, b).expect("short bytes"),
        Value::Pickle(p) => codec::write_pickle(out, p).expect("short pickle"),
        Value::KwargsMarker => codec::write_kwargs_marker(out),
        Value::Tuple(elements) => {
            codec::write_tuple_header(out, elements.len()).expect("short tuple");
            for element in elements {
                build_with_writers(element, out);
            }
        }
    }
}

fn check_encoding(value: &Value) {
    let bytes = codec::encode(value).expect("generated values are flat and short");
    assert_eq!(codec::encoded_len(value), Ok(bytes.len()), "encoded_len");
    let mut built = Vec::new();
    build_with_writers(value, &mut built);
    assert_eq!(built, bytes, "write_* and encode differ for {value:?}");
    let decoded = codec::decode(&bytes).expect("an encoding decodes");
    assert!(
        decoded == *value,
        "round trip changed {value:?} to {decoded:?}"
    );
    let borrowed = codec::decode_ref(&bytes).expect("an encoding decodes by reference");
    assert!(borrowed.to_value() == *value, "decode_ref differs");
    // Self-delimiting: no strict prefix decodes, and a trailing byte is rejected.
    let step = (bytes.len() / 64).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        assert!(
            codec::decode(&bytes[..cut]).is_err(),
            "prefix of {cut} of {} bytes decoded",
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0x01);
    assert!(
        codec::decode(&longer).is_err(),
        "a trailing byte was accepted"
    );
}

// ------------------------------------------------------------------------------------------
// shm: arena (operation scripts) and region (hostile files)

#[cfg(unix)]
pub use shm_targets::{
    arena, arena_budget, arena_model, region, region_seed, region_seed_with_budget,
    region_through_files, BudgetStats,
};

#[cfg(unix)]
mod shm_targets {
    use std::collections::HashMap;
    use std::mem::offset_of;
    use std::path::Path;

    use super::Input;
    use crate::clock::is_fresh;
    use crate::model::SieveModel;
    use crate::shm::heap::{class_bytes, class_of, entry_bytes, GRANULE_BYTES};
    use crate::shm::layout::{
        DataHeader, Geometry, LockFile, ENDIAN_MARK, FORMAT_VERSION, LOCK_FILE_WORDS, LOCK_MAGIC,
        WORD_BYTES,
    };
    use crate::shm::{hash_algo_id, key_hash, InsertOutcome, ShmConfig, ShmStore, SkipReason};

    /// How the `arena` script hashes keys: the real hash, or degenerate ones that force
    /// collisions the real hash almost never produces.
    #[derive(Debug, Clone, Copy)]
    enum Hashing {
        Real,
        /// Every key has the same 64-bit hash: only key bytes tell entries apart.
        Constant,
        /// Same low 32 bits (same home bucket and bucket tag), different full hashes.
        SameLow,
        /// Only 4 distinct hashes.
        Few,
    }

    impl Hashing {
        fn from_byte(b: u8) -> Hashing {
            match b % 6 {
                0..=2 => Hashing::Real,
                3 => Hashing::Constant,
                4 => Hashing::SameLow,
                _ => Hashing::Few,
            }
        }

        fn hash(self, key: &[u8]) -> u64 {
            let real = key_hash(key);
            match self {
                Hashing::Real => real,
                Hashing::Constant => 0x9e37_79b9_7f4a_7c15,
                Hashing::SameLow => (real & !0xffff_ffff) | 0x0000_0007,
                Hashing::Few => (real & 3).wrapping_mul(0x0001_0000_0001_0001),
            }
        }
    }

    /// Keys 0..40: lengths 1, 4, 7, 10, 13 (by `id / 8`) over eight contents, so keys of the
    /// same content and different lengths are prefixes of each other.
    fn key_of(id: u8) -> Vec<u8> {
        let id = id % 40;
        let len = 1 + usize::from(id / 8) * 3;
        let content = id % 8;
        (0..len)
            .map(|i| content.wrapping_mul(i as u8 + 1))
            .collect()
    }

    /// A value unique to one insert (`serial`), so a stale or foreign value is detected.
    fn value_of(serial: u32, len: usize) -> Vec<u8> {
        let s = serial.to_le_bytes();
        (0..len)
            .map(|i| s[i % 4] ^ (i as u8).wrapping_mul(31))
            .collect()
    }

    /// The parameters of an `arena` script (its first bytes).
    struct ArenaParams {
        capacity: u32,
        key_bytes_max: u32,
        value_bytes_max: u32,
        ttl_ns: Option<u64>,
        hashing: Hashing,
        /// 0..8: the small byte budget of [`arena_budget`] (eighths of the heap that
        /// `capacity` entries at both limits need; 0 is one granule).
        budget_eighths: u64,
    }

    impl ArenaParams {
        /// Script: 5 parameter bytes (capacity, key limit, value limit, ttl (+ 1 byte for a
        /// nonzero ttl), hashing), then operations of one opcode byte and operand bytes.
        fn read(input: &mut Input<'_>) -> ArenaParams {
            let capacity_byte = input.byte();
            let capacity = match capacity_byte {
                b @ 240..=255 => 17 + u32::from(b % 48),
                b => 1 + u32::from(b % 12),
            };
            let key_byte = input.byte();
            let value_byte = input.byte();
            let key_bytes_max = 1 + u32::from(key_byte % 12);
            let value_bytes_max = 1 + u32::from(value_byte % 24);
            let ttl_ns = match input.byte() % 6 {
                0..=2 => None,
                3 => Some(0),
                4 => Some(1 + u64::from(input.byte() % 8)),
                _ => Some(1 + u64::from(input.byte()) * 16),
            };
            let hashing_byte = input.byte();
            // Bits the other parameters do not read (so the seeds keep their meaning), mixed
            // with them so the seeds spread over the budgets.
            let budget_eighths = u64::from(
                (capacity_byte / 12) ^ (key_byte / 12) ^ (value_byte / 24) ^ (hashing_byte / 6),
            ) % 8;
            ArenaParams {
                capacity,
                key_bytes_max,
                value_bytes_max,
                ttl_ns,
                hashing: Hashing::from_byte(hashing_byte),
                budget_eighths,
            }
        }

        fn config(&self, max_bytes: Option<u64>) -> ShmConfig {
            ShmConfig {
                dir: None,
                name: "fuzz-arena".into(),
                capacity: self.capacity,
                key_bytes_max: self.key_bytes_max,
                value_bytes_max: self.value_bytes_max,
                ttl_ns: self.ttl_ns,
                max_bytes,
            }
        }

        /// A byte budget under which entries are evicted by bytes before the count binds
        /// (and, at 0 eighths, most entries are larger than the whole heap).
        fn small_budget(&self) -> u64 {
            let fixed = Geometry::new(
                self.capacity,
                self.key_bytes_max,
                self.value_bytes_max,
                None,
            )
            .expect("valid parameters")
            .fixed_bytes;
            let largest = class_of(entry_bytes(self.key_bytes_max, self.value_bytes_max))
                .map_or(GRANULE_BYTES, class_bytes);
            let heap = (largest * u64::from(self.capacity) * self.budget_eighths / 8)
                .max(GRANULE_BYTES)
                .next_multiple_of(GRANULE_BYTES);
            fixed + heap
        }
    }

    /// The `arena` target: [`arena_model`], then [`arena_budget`] on the same script.
    pub fn arena(data: &[u8]) {
        arena_model(data);
        arena_budget(data);
    }

    /// An operation script over a heap-backed [`ShmStore`] (the real table, arena, extent
    /// heap and SIEVE on the real layout) with the default byte budget, under which SIEVE
    /// evicts by count only, run in lockstep with [`SieveModel`].
    pub fn arena_model(data: &[u8]) {
        let mut input = Input::new(data);
        let params = ArenaParams::read(&mut input);
        let (capacity, key_bytes_max, value_bytes_max, ttl_ns, hashing) = (
            params.capacity,
            params.key_bytes_max,
            params.value_bytes_max,
            params.ttl_ns,
            params.hashing,
        );
        let store = ShmStore::over_memory(params.config(None)).expect("valid parameters");
        let mut model: SieveModel<Vec<u8>, Vec<u8>> =
            SieveModel::with_ttl(capacity as usize, ttl_ns);
        let mut now_ns = 0u64;
        let mut out = Vec::new();
        let (mut hits, mut misses, mut oversize) = (0u64, 0u64, 0u64);
        let mut serial = 0u32;
        let fits_key = |key: &[u8]| key.len() <= key_bytes_max as usize;

        // One lookup on both sides; returns whether it hit.
        let mut lookup = |store: &ShmStore,
                          model: &mut SieveModel<Vec<u8>, Vec<u8>>,
                          key: &[u8],
                          now_ns: u64,
                          hits: &mut u64,
                          misses: &mut u64| {
            let hit = store
                .get_hashed(key, hashing.hash(key), now_ns, &mut out)
                .expect("heap get");
            let expected = model.get(&key.to_vec(), now_ns);
            assert_eq!(hit, expected.is_some(), "get {key:?} at {now_ns}");
            match expected {
                Some(value) => {
                    assert_eq!(out, value, "value of {key:?}");
                    *hits += 1;
                }
                None => {
                    assert!(out.is_empty(), "a miss left bytes in the output");
                    *misses += 1;
                }
            }
            hit
        };

        while let Some(op) = input.next() {
            match op % 16 {
                // get (the most common operation, as in a cache)
                0..=4 => {
                    let key = key_of(input.byte());
                    lookup(&store, &mut model, &key, now_ns, &mut hits, &mut misses);
                }
                // insert (update in place, or new with a possible eviction)
                5..=8 => {
                    let key = key_of(input.byte());
                    let len = usize::from(input.byte()) % (value_bytes_max as usize + 4);
                    serial += 1;
                    let value = value_of(serial, len);
                    let outcome = store
                        .insert_hashed(&key, hashing.hash(&key), &value, now_ns)
                        .expect("heap insert");
                    if !fits_key(&key) || value.len() > value_bytes_max as usize {
                        assert_eq!(outcome, InsertOutcome::Skipped(SkipReason::Oversize));
                        oversize += 1;
                        check_step(&store, hashing, &model, hits, misses, oversize);
                        continue;
                    }
                    let was_present = model.contains(&key);
                    let evicted = model.insert(key.clone(), value, now_ns);
                    match outcome {
                        InsertOutcome::Updated => assert!(was_present, "updated an absent key"),
                        InsertOutcome::Inserted {
                            evicted: store_evicted,
                        } => {
                            assert!(!was_present, "inserted a present key");
                            assert_eq!(store_evicted, evicted.is_some(), "eviction differs");
                        }
                        InsertOutcome::Skipped(SkipReason::ZeroTtl) => {
                            assert_eq!(ttl_ns, Some(0))
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    // The model's victim must be gone from the store too (same victim).
                    if let Some(victim) = evicted {
                        let hit =
                            lookup(&store, &mut model, &victim, now_ns, &mut hits, &mut misses);
                        assert!(!hit, "victim {victim:?} still served");
                    }
                }
                // remove (its hash is always the real one, so only with real hashing)
                9 => {
                    let key = key_of(input.byte());
                    if matches!(hashing, Hashing::Real) {
                        let removed = store.remove(&key).expect("heap remove");
                        assert_eq!(removed, model.remove(&key).is_some(), "remove {key:?}");
                    } else {
                        lookup(&store, &mut model, &key, now_ns, &mut hits, &mut misses);
                    }
                }
                // clock: small steps, or a jump across a whole ttl
                10 | 11 => {
                    let step = input.byte();
                    now_ns += if step >= 250 {
                        ttl_ns.unwrap_or(1000) + u64::from(step & 3)
                    } else {
                        u64::from(step % 8)
                    };
                }
                // an oversize result recorded by the adapter
                12 => {
                    store.record_oversize_skip();
                    oversize += 1;
                }
                // clear (rarely: it wipes the state the script built)
                13 => {
                    if input.byte() % 8 == 0 {
                        store.clear().expect("heap clear");
                        model.clear();
                        hits = 0;
                        misses = 0;
                        oversize = 0;
                    }
                }
                // re-read every key of the model (a full-content comparison)
                _ => {
                    for key in model.keys_from_head() {
                        lookup(&store, &mut model, &key, now_ns, &mut hits, &mut misses);
                    }
                }
            }
            check_step(&store, hashing, &model, hits, misses, oversize);
        }
        for key in model.keys_from_head() {
            lookup(&store, &mut model, &key, now_ns, &mut hits, &mut misses);
        }
        check_step(&store, hashing, &model, hits, misses, oversize);
    }

    /// What one [`arena_budget`] run reached (the unit tests check the fuzz body gets there).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct BudgetStats {
        /// Inserts that evicted while fewer than `capacity` entries were stored (by bytes).
        pub byte_evictions: u64,
        /// Compactions of the heap.
        pub compactions: u64,
        /// Inserts skipped because the entry is larger than the whole heap budget.
        pub too_big: u64,
        /// Updates whose new value did not fit the old extent (a new extent was taken).
        pub regrown_updates: u64,
    }

    /// The script of [`arena_model`] over a store with a small byte budget
    /// ([`ArenaParams::small_budget`]): the budget evicts earlier than the count-based
    /// model would, so the checks are weaker but real: every hit returns the value last
    /// stored for its key and is fresh, a miss leaves no bytes, an insert is skipped as
    /// oversize exactly when the entry is over a limit or larger than the whole heap, a
    /// successful insert is found right after (when the script asks), the size never exceeds
    /// the keys stored or the capacity, the counters are exact, the heap stays inside the
    /// budget, and `validate()` passes after every step.
    pub fn arena_budget(data: &[u8]) -> BudgetStats {
        let mut input = Input::new(data);
        let params = ArenaParams::read(&mut input);
        let (capacity, key_bytes_max, value_bytes_max, ttl_ns, hashing) = (
            params.capacity,
            params.key_bytes_max,
            params.value_bytes_max,
            params.ttl_ns,
            params.hashing,
        );
        let max_bytes = params.small_budget();
        let store =
            ShmStore::over_memory(params.config(Some(max_bytes))).expect("valid parameters");
        let heap_budget = store.region_bytes() - store.fixed_bytes();
        // Key -> (value last stored, when). A key absent here is never served.
        let mut stored: HashMap<Vec<u8>, (Vec<u8>, u64)> = HashMap::new();
        let mut stats = BudgetStats::default();
        let mut now_ns = 0u64;
        let mut out = Vec::new();
        let (mut hits, mut misses, mut oversize) = (0u64, 0u64, 0u64);
        let mut serial = 0u32;

        let mut lookup = |store: &ShmStore,
                          stored: &HashMap<Vec<u8>, (Vec<u8>, u64)>,
                          key: &[u8],
                          now_ns: u64,
                          hits: &mut u64,
                          misses: &mut u64|
         -> bool {
            let hit = store
                .get_hashed(key, hashing.hash(key), now_ns, &mut out)
                .expect("heap get");
            if hit {
                let (value, at) = stored
                    .get(key)
                    .unwrap_or_else(|| panic!("served {key:?}, never stored (or removed)"));
                assert_eq!(&out, value, "value of {key:?} is not the one last stored");
                assert!(is_fresh(*at, now_ns, ttl_ns), "served {key:?} expired");
                *hits += 1;
            } else {
                assert!(out.is_empty(), "a miss left bytes in the output");
                *misses += 1;
            }
            hit
        };

        while let Some(op) = input.next() {
            match op % 16 {
                0..=4 => {
                    let key = key_of(input.byte());
                    lookup(&store, &stored, &key, now_ns, &mut hits, &mut misses);
                }
                5..=8 => {
                    let key = key_of(input.byte());
                    let len = usize::from(input.byte()) % (value_bytes_max as usize + 4);
                    serial += 1;
                    let value = value_of(serial, len);
                    let size_before = store.info().expect("info").current_size;
                    let outcome = store
                        .insert_hashed(&key, hashing.hash(&key), &value, now_ns)
                        .expect("heap insert");
                    let over_limit = key.len() > key_bytes_max as usize
                        || value.len() > value_bytes_max as usize;
                    let too_big = !over_limit
                        && class_of(entry_bytes(key.len() as u32, value.len() as u32))
                            .is_none_or(|class| class_bytes(class) > heap_budget);
                    if over_limit || too_big {
                        assert_eq!(outcome, InsertOutcome::Skipped(SkipReason::Oversize));
                        oversize += 1;
                        stats.too_big += u64::from(too_big);
                        check_budget_step(&store, hashing, &stored, hits, misses, oversize);
                        continue;
                    }
                    match outcome {
                        InsertOutcome::Updated => {
                            assert!(stored.contains_key(&key), "updated a key never stored");
                            let old_len = stored.get(&key).map_or(0, |(v, _)| v.len());
                            let class =
                                |len: usize| class_of(entry_bytes(key.len() as u32, len as u32));
                            stats.regrown_updates += u64::from(class(len) > class(old_len));
                        }
                        InsertOutcome::Inserted { evicted } => {
                            if evicted && size_before < u64::from(capacity) {
                                stats.byte_evictions += 1;
                            }
                        }
                        InsertOutcome::Skipped(SkipReason::ZeroTtl) => {
                            assert_eq!(ttl_ns, Some(0));
                            check_budget_step(&store, hashing, &stored, hits, misses, oversize);
                            continue;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    stored.insert(key.clone(), (value, now_ns));
                    if op & 0x80 != 0 {
                        let hit = lookup(&store, &stored, &key, now_ns, &mut hits, &mut misses);
                        assert!(
                            hit || !is_fresh(now_ns, now_ns, ttl_ns),
                            "{key:?} just stored is not found"
                        );
                    }
                }
                9 => {
                    let key = key_of(input.byte());
                    if matches!(hashing, Hashing::Real) {
                        let removed = store.remove(&key).expect("heap remove");
                        let known = stored.remove(&key).is_some();
                        assert!(known || !removed, "removed {key:?}, never stored");
                    } else {
                        lookup(&store, &stored, &key, now_ns, &mut hits, &mut misses);
                    }
                }
                10 | 11 => {
                    let step = input.byte();
                    now_ns += if step >= 250 {
                        ttl_ns.unwrap_or(1000) + u64::from(step & 3)
                    } else {
                        u64::from(step % 8)
                    };
                }
                12 => {
                    store.record_oversize_skip();
                    oversize += 1;
                }
                13 => {
                    if input.byte() % 8 == 0 {
                        stats.compactions += store.info().expect("info").heap_compactions;
                        store.clear().expect("heap clear");
                        stored.clear();
                        hits = 0;
                        misses = 0;
                        oversize = 0;
                    }
                }
                _ => {
                    let mut keys: Vec<Vec<u8>> = stored.keys().cloned().collect();
                    keys.sort();
                    for key in keys {
                        lookup(&store, &stored, &key, now_ns, &mut hits, &mut misses);
                    }
                }
            }
            check_budget_step(&store, hashing, &stored, hits, misses, oversize);
        }
        stats.compactions += store.info().expect("info").heap_compactions;
        stats
    }

    /// After every step of [`arena_budget`]: exact counters, a size within the keys stored
    /// and the capacity, a heap within its budget, every structure valid.
    fn check_budget_step(
        store: &ShmStore,
        hashing: Hashing,
        stored: &HashMap<Vec<u8>, (Vec<u8>, u64)>,
        hits: u64,
        misses: u64,
        oversize: u64,
    ) {
        let info = store.info().expect("info");
        assert!(
            info.current_size <= (stored.len() as u64).min(u64::from(info.capacity)),
            "size {} with {} keys stored (capacity {})",
            info.current_size,
            stored.len(),
            info.capacity
        );
        assert_eq!(
            (
                info.hits,
                info.misses,
                info.oversize_skips,
                info.space_skips
            ),
            (hits, misses, oversize, 0),
            "counters differ"
        );
        assert_eq!(info.resets, 0, "a valid store was reset");
        let heap_budget = store.region_bytes() - store.fixed_bytes();
        assert!(info.heap_bump_bytes <= heap_budget, "bump past the budget");
        assert!(
            info.heap_committed_bytes <= heap_budget,
            "committed past the budget"
        );
        if let Err(e) = store.validate() {
            let expected = !matches!(hashing, Hashing::Real)
                && matches!(e, crate::corruption::Corruption::KeyHash { .. });
            assert!(expected, "validate: {e}");
        }
    }

    /// After every step: same size and counters as the model, and every structure valid.
    fn check_step(
        store: &ShmStore,
        hashing: Hashing,
        model: &SieveModel<Vec<u8>, Vec<u8>>,
        hits: u64,
        misses: u64,
        oversize: u64,
    ) {
        let info = store.info().expect("info");
        assert_eq!(info.current_size, model.len() as u64, "size differs");
        assert_eq!(
            (info.hits, info.misses, info.oversize_skips),
            (hits, misses, oversize),
            "counters differ"
        );
        assert_eq!(info.resets, 0, "a valid store was reset");
        if let Err(e) = store.validate() {
            // Degenerate hashes break one rule on purpose (stored hash = key_hash(key)):
            // that check comes after every structural one (table reachability included).
            let expected = !matches!(hashing, Hashing::Real)
                && matches!(e, crate::corruption::Corruption::KeyHash { .. });
            assert!(expected, "validate: {e}");
        }
    }

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
            if (1..=64).contains(&capacity) && (1..=64).contains(&key) && (1..=64).contains(&value)
            {
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
            .and_then(|_| {
                Geometry::new(capacity, key_bytes_max, value_bytes_max, Some(budget)).ok()
            })
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic bytes for the fuzz bodies' unit tests (xorshift; `seed` picks the stream).
    pub(crate) fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn codec_body_on_pseudo_random_inputs() {
        for seed in 0..500 {
            codec(&pseudo_random(seed, (seed % 97) as usize));
        }
    }

    #[cfg(unix)]
    #[test]
    fn arena_body_on_pseudo_random_scripts() {
        for seed in 0..300 {
            arena(&pseudo_random(seed, 600));
        }
    }

    /// The budget-bound pass reaches what a small `max_bytes` is for: evictions by bytes
    /// (before the count binds), compactions, entries larger than the whole heap, and
    /// updates that need a larger extent.
    #[cfg(unix)]
    #[test]
    fn arena_budget_body_reaches_byte_evictions_and_compaction() {
        let mut total = BudgetStats::default();
        for seed in 0..300 {
            let stats = arena_budget(&pseudo_random(seed, 600));
            total.byte_evictions += stats.byte_evictions;
            total.compactions += stats.compactions;
            total.too_big += stats.too_big;
            total.regrown_updates += stats.regrown_updates;
        }
        assert!(total.byte_evictions > 0, "no eviction by bytes: {total:?}");
        assert!(total.compactions > 0, "no compaction: {total:?}");
        assert!(
            total.too_big > 0,
            "no entry larger than the heap: {total:?}"
        );
        assert!(
            total.regrown_updates > 0,
            "no update to a larger class: {total:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn region_body_loads_small_budget_seeds() {
        let fixed = crate::shm::layout::Geometry::new(8, 16, 24, None)
            .unwrap()
            .fixed_bytes;
        for heap in [16, 96, 256] {
            let seed = region_seed_with_budget(8, 16, 24, 12, Some(fixed + heap));
            assert_eq!(seed.len() as u64, fixed + heap, "the image is the budget");
            for n in 0..50u64 {
                let mut data = seed.clone();
                let nonce = std::mem::offset_of!(crate::shm::layout::DataHeader, creation_nonce);
                data[nonce..nonce + 8].copy_from_slice(&n.to_ne_bytes()); // every ttl
                assert!(region(&data), "a small-budget file loads");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn region_body_loads_seeds_and_survives_flipped_bytes() {
        let seed = region_seed(4, 8, 8, 4); // creation nonce 4: no ttl
        assert!(region(&seed), "a well-formed file loads");
        let mut loaded = 0;
        for n in 0..200u64 {
            let mut data = seed.clone();
            for (i, b) in pseudo_random(n, 24).chunks(3).enumerate() {
                // Past the parameter block: the SIEVE words, counters, buckets and slots.
                let at = 256
                    + (usize::from(b[0]) << 8 | usize::from(b[1])) * (i + 1) % (data.len() - 256);
                data[at] ^= b[2] | 1;
            }
            loaded += usize::from(region(&data));
        }
        assert_eq!(
            loaded, 200,
            "flips past the parameter block keep the header valid"
        );
        assert!(!region(&seed[..seed.len() - 8]), "a short file is rejected");
        assert!(!region(&[]), "an empty file is rejected");
    }
}
