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

    /// How far a script's clock operation moves time: small steps, or (for the top bytes) a
    /// jump across a whole ttl.
    fn clock_step(step: u8, ttl_ns: Option<u64>) -> u64 {
        if step >= 250 {
            ttl_ns.unwrap_or(1000) + u64::from(step & 3)
        } else {
            u64::from(step % 8)
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
                10 | 11 => now_ns += clock_step(input.byte(), ttl_ns),
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
                10 | 11 => now_ns += clock_step(input.byte(), ttl_ns),
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

    mod region;
    pub use region::{region, region_seed, region_seed_with_budget, region_through_files};
}

#[cfg(test)]
pub(crate) mod tests;
