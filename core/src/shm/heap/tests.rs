use super::*;
use crate::shm::layout::HEADER_WORDS;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn zeros(count: usize) -> Vec<AtomicU64> {
    (0..count).map(|_| AtomicU64::new(0)).collect()
}

struct Mem {
    header: Vec<AtomicU64>,
    heads: Vec<AtomicU64>,
    words: Vec<AtomicU64>,
}

impl Mem {
    fn new(budget_bytes: usize) -> Mem {
        Mem {
            header: zeros(HEADER_WORDS),
            heads: zeros(CLASS_COUNT),
            words: zeros(budget_bytes / WORD_BYTES),
        }
    }
    fn heap(&self) -> Heap<'_> {
        Heap::new(&self.header, &self.heads, &self.words)
    }
}

#[test]
fn classes_cover_every_size_within_an_eighth() {
    assert_eq!(class_bytes(0), 16);
    assert_eq!(class_bytes(15), 256);
    assert_eq!(class_bytes(16), 288);
    assert_eq!(class_bytes(23), 512);
    assert_eq!(class_bytes(24), 576);
    for class in 1..CLASS_COUNT {
        let (below, here) = (class_bytes(class - 1), class_bytes(class));
        assert!(below < here && here % GRANULE_BYTES == 0, "class {class}");
        if here > SMALL_LIMIT_BYTES {
            assert!(here * 8 <= below * 9, "class {class}: {below} -> {here}");
        }
    }
    for bytes in (0..5000u64).chain([1 << 20, (1 << 20) + 1, u32::MAX as u64 * 2 + 16]) {
        let class = class_of(bytes).unwrap();
        assert!(class_bytes(class) >= bytes, "{bytes}");
        assert!(
            class == 0 || class_bytes(class - 1) < bytes,
            "{bytes}: smallest class"
        );
    }
    assert_eq!(class_of(u64::MAX), None);
    assert_eq!(entry_bytes(1, 1), 16);
    assert_eq!(entry_bytes(9, 0), 16);
}

#[test]
fn extent_words_decode_and_refuse_garbage() {
    let extent = Extent {
        class: 3,
        granule: 7,
    };
    assert_eq!(Extent::decode(extent.encode()), Some(extent));
    assert_eq!(Extent::decode(0), None);
    assert_eq!(Extent::decode(u64::MAX), None, "class past the table");
    let mem = Mem::new(1024);
    let heap = mem.heap();
    assert!(heap.extent_words(extent.encode()).is_some());
    let past = Extent {
        class: 0,
        granule: 64,
    }
    .encode();
    assert!(heap.extent_words(past).is_none(), "past the mapped heap");
}

#[test]
fn bump_grow_free_reuse_compact_and_full() {
    let mem = Mem::new(4096);
    let heap = mem.heap();
    assert_eq!(
        heap.alloc(40),
        Alloc::Grow {
            committed_bytes: 48
        }
    );
    heap.set_committed(4096);
    let Alloc::Got(a) = heap.alloc(40) else {
        panic!()
    };
    let Alloc::Got(b) = heap.alloc(100) else {
        panic!()
    };
    assert_eq!(heap.bump_bytes(), 48 + 112);
    heap.free(a);
    assert_eq!(heap.free_bytes(), 48);
    assert_eq!(heap.alloc(33), Alloc::Got(a), "same class: reused");
    assert_eq!(heap.free_bytes(), 0);
    assert_eq!(heap.alloc(5000), Alloc::TooBig);
    // Fill the rest with 256-byte extents, then free every other one.
    let mut big = Vec::new();
    while let Alloc::Got(e) = heap.alloc(256) {
        big.push(e);
    }
    assert_eq!(heap.alloc(256), Alloc::Full);
    for e in big.iter().step_by(2) {
        heap.free(*e);
    }
    // 512 bytes are free only in pieces: compact, then they are one run at the end.
    assert_eq!(heap.alloc(512), Alloc::Compact);
    let mut live: Vec<(u32, u64)> = vec![(0, a), (1, b)];
    live.extend(
        big.iter()
            .skip(1)
            .step_by(2)
            .enumerate()
            .map(|(i, e)| (i as u32 + 2, *e)),
    );
    let moved = heap.compact(&live).unwrap();
    assert_eq!(heap.free_bytes(), 0);
    let used: u64 = moved
        .iter()
        .map(|(_, e)| Extent::decode(*e).unwrap().bytes())
        .sum();
    assert_eq!(heap.bump_bytes(), used);
    assert!(matches!(heap.alloc(512), Alloc::Got(_)));
    assert_eq!(heap.compactions(), 1);
    // Overlapping extents are refused: nothing moves.
    let bump = heap.bump_bytes();
    assert!(heap.compact(&[(0, a), (1, a)]).is_none());
    assert_eq!(heap.bump_bytes(), bump);
}

#[test]
fn corrupt_lists_are_reported_not_followed() {
    let mem = Mem::new(4096);
    let heap = mem.heap();
    heap.set_committed(4096);
    let Alloc::Got(a) = heap.alloc(16) else {
        panic!()
    };
    heap.free(a);
    // A link past the used heap.
    mem.words[0].store(
        Extent {
            class: 0,
            granule: 200,
        }
        .encode(),
        Relaxed,
    );
    assert_eq!(heap.alloc(16), Alloc::Corrupt);
    // A head of another class.
    mem.heads[0].store(
        Extent {
            class: 1,
            granule: 0,
        }
        .encode(),
        Relaxed,
    );
    assert_eq!(heap.alloc(16), Alloc::Corrupt);
    // A bump pointer past the budget.
    mem.header[word!(DataHeader, heap_bump)].store(1 << 40, Relaxed);
    assert_eq!(heap.alloc(16), Alloc::Corrupt);
    heap.reset();
    assert!(matches!(heap.alloc(16), Alloc::Got(_)));
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u64),
    Free(usize),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..1500).prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    /// The allocator against a model of the bytes in use: live extents never overlap, stay
    /// inside the budget, hold their contents across compaction, and the heap's free and
    /// bump counts add up to the model's; `Full` only when the live bytes really leave no
    /// room, `Compact` only when they do.
    #[test]
    fn allocator_matches_a_model_of_free_bytes(ops in prop::collection::vec(op(), 1..200)) {
        const BUDGET: u64 = 16 << 10;
        let mem = Mem::new(BUDGET as usize);
        let heap = mem.heap();
        heap.set_committed(BUDGET);
        // Live extents: extent word -> a tag written into each of its words.
        let mut live: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Alloc(bytes) => {
                    let mut result = heap.alloc(bytes);
                    if result == Alloc::Compact {
                        let pairs: Vec<(u32, u64)> = live.iter().map(|(id, (w, _))| (*id, *w)).collect();
                        for (id, word) in heap.compact(&pairs).unwrap() {
                            live.get_mut(&id).unwrap().0 = word;
                        }
                        result = heap.alloc(bytes);
                        prop_assert!(matches!(result, Alloc::Got(_)), "room after compaction: {result:?}");
                    }
                    match result {
                        Alloc::Got(word) => {
                            let extent = Extent::decode(word).unwrap();
                            prop_assert!(extent.bytes() >= bytes && extent.end_byte() <= BUDGET);
                            for (other, _) in live.values() {
                                let o = Extent::decode(*other).unwrap();
                                prop_assert!(o.end_byte() <= extent.start_byte() || extent.end_byte() <= o.start_byte());
                            }
                            let tag = u64::from(next_id) << 32;
                            for (i, w) in heap.extent_words(word).unwrap().iter().enumerate() {
                                w.store(tag | i as u64, Relaxed);
                            }
                            live.insert(next_id, (word, tag));
                            next_id += 1;
                        }
                        Alloc::Full => {
                            let used: u64 = live.values().map(|(w, _)| Extent::decode(*w).unwrap().bytes()).sum();
                            let need = class_bytes(class_of(bytes).unwrap());
                            let unused = BUDGET - used;
                            prop_assert!(unused < need || unused < BUDGET / COMPACT_FRACTION, "Full with {unused} unused for {need}");
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
                Op::Free(pick) if !live.is_empty() => {
                    let id = *live.keys().nth(pick % live.len()).unwrap();
                    let (word, _) = live.remove(&id).unwrap();
                    heap.free(word);
                }
                Op::Free(_) => {}
                Op::Compact => {
                    let pairs: Vec<(u32, u64)> = live.iter().map(|(id, (w, _))| (*id, *w)).collect();
                    let moved = heap.compact(&pairs).unwrap();
                    for (id, word) in moved {
                        live.get_mut(&id).unwrap().0 = word;
                    }
                    let used: u64 = live.values().map(|(w, _)| Extent::decode(*w).unwrap().bytes()).sum();
                    prop_assert_eq!(heap.bump_bytes(), used);
                    prop_assert_eq!(heap.free_bytes(), 0);
                }
            }
            // Contents survive every operation (compaction moves them intact).
            for (word, tag) in live.values() {
                for (i, w) in heap.extent_words(*word).unwrap().iter().enumerate() {
                    prop_assert_eq!(w.load(Relaxed), tag | i as u64);
                }
            }
        }
    }
}
