use super::*;
use crate::policy;
use crate::shm::layout::HEADER_WORDS;

struct Heap {
    header: Vec<AtomicU64>,
    heads: Vec<AtomicU64>,
    words: Vec<AtomicU64>,
    slots: Vec<AtomicU64>,
    geometry: Geometry,
}

fn zeros(count: usize) -> Vec<AtomicU64> {
    (0..count).map(|_| AtomicU64::new(0)).collect()
}

impl Heap {
    fn new(capacity: u32, key_max: u32, value_max: u32) -> Heap {
        // A roomy budget: these tests write extents by hand, without compaction.
        let fixed = Geometry::new(capacity, key_max, value_max, None)
            .unwrap()
            .fixed_bytes;
        let geometry =
            Geometry::new(capacity, key_max, value_max, Some(fixed + (1 << 16))).unwrap();
        let heap = Heap {
            header: zeros(HEADER_WORDS),
            heads: zeros(crate::shm::heap::CLASS_COUNT),
            words: zeros(geometry.heap_words),
            slots: zeros(capacity as usize * geometry.slot_words),
            geometry,
        };
        heap.arena().reset();
        heap.arena()
            .heap()
            .set_committed(geometry.heap_words as u64 * 8);
        heap
    }
    fn arena(&self) -> Arena<'_> {
        let heap = super::Heap::new(&self.header, &self.heads, &self.words);
        Arena::new(&self.header, &self.slots, heap, &self.geometry)
    }
    /// Writes an entry into a fresh extent of `slot` (the old one is freed).
    fn put(&self, slot: u32, hash: u64, key: &[u8], value: &[u8], stored_at_ns: u64) {
        let arena = self.arena();
        arena.heap().free(arena.extent(slot));
        let bytes = entry_bytes(key.len() as u32, value.len() as u32);
        let crate::shm::heap::Alloc::Got(extent) = arena.heap().alloc(bytes) else {
            panic!("no extent for {bytes} bytes");
        };
        arena.write_entry(slot, extent, hash, key, value, stored_at_ns, 1, None);
    }
}

#[test]
fn keys_of_every_length_match_only_themselves() {
    // The last word is compared through a shifted load of the key's last 8 bytes (keys
    // of 8 bytes or more) or byte by byte (shorter): every tail length, both ways.
    let heap = Heap::new(2, 24, 8);
    let arena = heap.arena();
    let slot = arena.alloc().unwrap();
    for len in 0..=24usize {
        let key: Vec<u8> = (0..len).map(|i| 0xA0 ^ (i as u8 * 7)).collect();
        heap.put(slot, 5, &key, b"v", 1);
        let words = arena.slot(slot).unwrap();
        assert!(words.key_matches(5, &key), "len {len}");
        assert!(arena.key_matches(slot, 5, &key), "len {len}");
        for i in 0..len {
            let mut other = key.clone();
            other[i] ^= 0x01;
            assert!(!words.key_matches(5, &other), "len {len}, byte {i} differs");
        }
        // Same bytes plus a zero (what the padding holds), or one byte fewer.
        let mut longer = key.clone();
        longer.push(0);
        assert!(!words.key_matches(5, &longer), "len {len} + zero byte");
        if len > 0 {
            assert!(!words.key_matches(5, &key[..len - 1]), "len {len} - 1");
        }
    }
    assert!(arena.slot(2).is_none(), "out-of-range slot");
}

#[test]
fn small_values_stay_inline_and_large_ones_spill() {
    let heap = Heap::new(1, 8, 100);
    let arena = heap.arena();
    let slot = arena.alloc().unwrap();
    for len in [
        0usize,
        1,
        7,
        8,
        9,
        47,
        SMALL_VALUE_BYTES,
        SMALL_VALUE_BYTES + 1,
        100,
    ] {
        let value: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5C).collect();
        heap.put(slot, 1, b"k", &value, 1);
        let mut spill = vec![0xEE; 3];
        let mut small = SmallValue::new(&mut spill);
        small.clear();
        arena.copy_value(slot, len as u32, &mut small);
        assert_eq!(small.bytes(), &value[..], "len {len}");
        small.settle();
        assert_eq!(small.bytes(), &value[..], "len {len}, settled");
        assert_eq!(spill, value, "len {len}: settled into the spill Vec");
    }
    // A cleared sink forgets a spilled value.
    let mut spill = Vec::new();
    let mut small = SmallValue::new(&mut spill);
    arena.copy_value(slot, 100, &mut small);
    assert_eq!(small.bytes().len(), 100);
    small.clear();
    assert!(small.bytes().is_empty());
    assert!(small.spill_mut().len() == 100, "spill_mut exposes the Vec");
}

#[test]
fn entries_round_trip_through_words() {
    let heap = Heap::new(4, 13, 20);
    let arena = heap.arena();
    let slot = arena.alloc().unwrap();
    let key = b"thirteen byte";
    heap.put(slot, 99, key, b"0123456789abcdefghi", 5);
    assert!(arena.key_matches(slot, 99, key));
    assert!(!arena.key_matches(slot, 98, key), "hash differs");
    assert!(!arena.key_matches(slot, 99, b"thirteen bytE"));
    assert!(
        !arena.key_matches(slot, 99, b"thirteen byt"),
        "length differs"
    );
    assert_eq!(arena.lens(slot), Lens { key: 13, value: 19 });
    assert_eq!(arena.stored_at_ns(slot), 5);
    let mut out = vec![b'x'];
    arena.copy_value(slot, 19, &mut out);
    assert_eq!(out, b"x0123456789abcdefghi");
    arena.write_value(slot, 13, b"", 6, 1);
    let mut out = Vec::new();
    arena.copy_value(slot, arena.lens(slot).value, &mut out);
    assert!(out.is_empty());
    assert_eq!(arena.key(slot), key);
    // A hostile length is clamped to the limit: never reads past the slot.
    let mut out = Vec::new();
    arena.copy_value(slot, u32::MAX, &mut out);
    assert_eq!(out.len(), 20);
    assert!(!arena.key_matches(7, 99, key), "out-of-range slot");
}

#[test]
fn allocator_uses_every_slot_then_reuses_freed_ones() {
    let heap = Heap::new(3, 8, 8);
    let arena = heap.arena();
    assert_eq!(
        (0..3).map(|_| arena.alloc().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(arena.alloc(), Err(ArenaError::Exhausted));
    arena.free(1);
    arena.free(0);
    assert_eq!(arena.alloc(), Ok(0));
    assert_eq!(arena.alloc(), Ok(1));
    assert_eq!(arena.alloc(), Err(ArenaError::Exhausted));
    // A corrupt free list is an error, not a wild slot.
    heap.header[word!(DataHeader, free_head)].store(77, Relaxed);
    assert_eq!(arena.alloc(), Err(ArenaError::BadFreeLink { slot: 77 }));
    arena.reset();
    assert_eq!(arena.alloc(), Ok(0));
}

#[test]
fn the_one_sieve_runs_on_mapped_slots() {
    let heap = Heap::new(3, 8, 8);
    let mut slots = ShmSlots::new(heap.arena());
    for slot in 0..3 {
        policy::insert(&mut slots, slot).unwrap();
    }
    policy::touch(&slots, 0).unwrap();
    assert_eq!(policy::evict(&mut slots).unwrap(), 1);
    assert_eq!(policy::order_from_head(&slots), vec![2, 0]);
    policy::validate(&slots).unwrap();
    // Corrupt a link: validate and the operations report it.
    heap.header[word!(DataHeader, sieve_head)].store(u64::MAX, Relaxed);
    assert!(policy::validate(&slots).is_err());
    assert!(policy::insert(&mut slots, 1).is_err());
}
