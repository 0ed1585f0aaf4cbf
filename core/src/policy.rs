//! The one SIEVE (NSDI'24) used by every backend.
//!
//! SIEVE keeps its entries in one doubly linked list of slot indices. New entries go in at
//! the *head* with `visited = false`; a hit only sets `visited = true` (no list movement);
//! eviction moves a *hand* from the tail towards the head (wrapping back to the tail), clears
//! the visited bits it passes and evicts the first entry whose bit is clear. After an
//! eviction the hand rests on the evicted entry's predecessor (towards the head).
//!
//! The list lives wherever the backend keeps its slots: heap vectors for the in-process store
//! ([`crate::mem`]), atomics inside a memory-mapped file for the shared store ([`crate::shm`]).
//! Both implement [`SieveSlots`] and call the functions here, so there is exactly one
//! implementation of the algorithm (INV-1).
//!
//! Every function tolerates a corrupt list (a shared-memory file is hostile input, INV-7):
//! links are range-checked and walks are bounded; a broken list gives
//! [`PolicyError::Corrupt`], never a panic or an endless loop.
#![forbid(unsafe_code)]

use std::fmt;

/// Index of a slot. Slots are numbered `0..capacity`.
pub type SlotIndex = u32;

/// The "no slot" sentinel used for empty links, an empty list and a parked hand.
pub const NO_SLOT: SlotIndex = u32::MAX;

/// Storage of the SIEVE list: four list words plus per-slot links and visited bits.
///
/// "Prev" points towards the head (newer entries) and "next" towards the tail (older
/// entries): the head has `prev == NO_SLOT`, the tail `next == NO_SLOT`. The hand moves along
/// `prev`.
///
/// Implementations just store and load; they do no checking of their own. Visited bits are
/// set through `&self` because a hit may be served under a shared lock (or, for the
/// shared-memory store, by a lock-free reader); implementations use atomics for them.
pub trait SieveSlots {
    /// Number of slots; valid indices are `0..capacity()`.
    fn capacity(&self) -> u32;
    fn head(&self) -> SlotIndex;
    fn set_head(&mut self, slot: SlotIndex);
    fn tail(&self) -> SlotIndex;
    fn set_tail(&mut self, slot: SlotIndex);
    fn hand(&self) -> SlotIndex;
    fn set_hand(&mut self, slot: SlotIndex);
    /// Number of entries in the list.
    fn len(&self) -> u32;
    fn set_len(&mut self, len: u32);
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Neighbour towards the head (newer).
    fn prev(&self, slot: SlotIndex) -> SlotIndex;
    fn set_prev(&mut self, slot: SlotIndex, prev: SlotIndex);
    /// Neighbour towards the tail (older).
    fn next(&self, slot: SlotIndex) -> SlotIndex;
    fn set_next(&mut self, slot: SlotIndex, next: SlotIndex);
    fn visited(&self, slot: SlotIndex) -> bool;
    fn set_visited(&self, slot: SlotIndex, visited: bool);
}

/// What went wrong with a list. Only a corrupt backing store (or a caller bug) produces one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// A slot index outside `0..capacity` was passed in or found in a link.
    SlotOutOfRange { slot: SlotIndex, capacity: u32 },
    /// The list is full: insert needs an eviction first.
    Full { capacity: u32 },
    /// Evict was called on an empty list.
    Empty,
    /// The links do not form the list the words describe.
    Corrupt { what: &'static str, slot: SlotIndex },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::SlotOutOfRange { slot, capacity } => {
                write!(f, "SIEVE slot {slot} out of range (capacity {capacity})")
            }
            PolicyError::Full { capacity } => write!(f, "SIEVE list full ({capacity} entries)"),
            PolicyError::Empty => write!(f, "SIEVE list empty: nothing to evict"),
            PolicyError::Corrupt { what, slot } => {
                write!(f, "SIEVE list corrupt at slot {slot}: {what}")
            }
        }
    }
}

impl std::error::Error for PolicyError {}

fn check<S: SieveSlots + ?Sized>(slots: &S, slot: SlotIndex) -> Result<SlotIndex, PolicyError> {
    if slot < slots.capacity() {
        Ok(slot)
    } else {
        Err(PolicyError::SlotOutOfRange {
            slot,
            capacity: slots.capacity(),
        })
    }
}

/// Checks a link read from storage: `NO_SLOT` or an index in range.
fn check_link<S: SieveSlots + ?Sized>(
    slots: &S,
    link: SlotIndex,
) -> Result<SlotIndex, PolicyError> {
    if link == NO_SLOT {
        Ok(link)
    } else {
        check(slots, link)
    }
}

/// Resets the list to empty. Slot links are left as they are (unreachable).
pub fn reset<S: SieveSlots + ?Sized>(slots: &mut S) {
    slots.set_head(NO_SLOT);
    slots.set_tail(NO_SLOT);
    slots.set_hand(NO_SLOT);
    slots.set_len(0);
}

/// Links a free `slot` in at the head with `visited = false`.
///
/// The caller guarantees `slot` is not in the list (it came from the free list).
pub fn insert<S: SieveSlots + ?Sized>(slots: &mut S, slot: SlotIndex) -> Result<(), PolicyError> {
    check(slots, slot)?;
    let len = slots.len();
    if len >= slots.capacity() {
        return Err(PolicyError::Full {
            capacity: slots.capacity(),
        });
    }
    let old_head = check_link(slots, slots.head())?;
    slots.set_visited(slot, false);
    slots.set_prev(slot, NO_SLOT);
    slots.set_next(slot, old_head);
    if old_head == NO_SLOT {
        slots.set_tail(slot);
    } else {
        slots.set_prev(old_head, slot);
    }
    slots.set_head(slot);
    slots.set_len(len + 1);
    Ok(())
}

/// Records a hit: sets the visited bit. O(1), no list movement.
pub fn touch<S: SieveSlots + ?Sized>(slots: &S, slot: SlotIndex) -> Result<(), PolicyError> {
    check(slots, slot)?;
    slots.set_visited(slot, true);
    Ok(())
}

/// Unlinks `slot` from the list. If the hand rests on it, the hand moves to its predecessor
/// (towards the head), as libCacheSim's `Sieve` does, so the sweep order is unchanged.
pub fn remove<S: SieveSlots + ?Sized>(slots: &mut S, slot: SlotIndex) -> Result<(), PolicyError> {
    check(slots, slot)?;
    let len = slots.len();
    if len == 0 {
        return Err(PolicyError::Corrupt {
            what: "remove from an empty list",
            slot,
        });
    }
    let prev = check_link(slots, slots.prev(slot))?;
    let next = check_link(slots, slots.next(slot))?;
    if slots.hand() == slot {
        slots.set_hand(prev);
    }
    if prev == NO_SLOT {
        if slots.head() != slot {
            return Err(PolicyError::Corrupt {
                what: "entry without prev is not the head",
                slot,
            });
        }
        slots.set_head(next);
    } else {
        slots.set_next(prev, next);
    }
    if next == NO_SLOT {
        if slots.tail() != slot {
            return Err(PolicyError::Corrupt {
                what: "entry without next is not the tail",
                slot,
            });
        }
        slots.set_tail(prev);
    } else {
        slots.set_prev(next, prev);
    }
    slots.set_prev(slot, NO_SLOT);
    slots.set_next(slot, NO_SLOT);
    slots.set_len(len - 1);
    Ok(())
}

/// Moves the hand to the entry SIEVE evicts next, clearing visited bits on the way, and
/// returns it without unlinking it.
///
/// The walk is bounded: every step clears a bit, so after `len + 1` steps an unvisited entry
/// must have been found unless other threads keep setting bits (a lock-free reader of the
/// shared store) or the list is corrupt. After `2 * len + 2` steps the entry under the hand is
/// taken as the victim; a walk that leaves the list gives [`PolicyError::Corrupt`].
pub fn select_victim<S: SieveSlots + ?Sized>(slots: &mut S) -> Result<SlotIndex, PolicyError> {
    let len = slots.len();
    if len == 0 {
        return Err(PolicyError::Empty);
    }
    let tail = check_link(slots, slots.tail())?;
    if tail == NO_SLOT {
        return Err(PolicyError::Corrupt {
            what: "non-empty list without a tail",
            slot: NO_SLOT,
        });
    }
    let mut hand = check_link(slots, slots.hand())?;
    if hand == NO_SLOT {
        hand = tail;
    }
    let step_limit = 2 * u64::from(len) + 2;
    let mut steps = 0u64;
    while slots.visited(hand) && steps < step_limit {
        slots.set_visited(hand, false);
        let prev = check_link(slots, slots.prev(hand))?;
        hand = if prev == NO_SLOT { tail } else { prev };
        steps += 1;
    }
    slots.set_hand(hand);
    Ok(hand)
}

/// The slot the next [`select_victim`] looks at first: the hand, or the tail when the hand is
/// parked. Read-only (no visited bit changes); [`NO_SLOT`] for an empty list. The entry there
/// is the next victim unless its visited bit is set.
pub fn next_candidate<S: SieveSlots + ?Sized>(slots: &S) -> SlotIndex {
    let hand = slots.hand();
    if hand == NO_SLOT {
        slots.tail()
    } else {
        hand
    }
}

/// Evicts one entry: selects the victim, unlinks it and leaves the hand on its predecessor.
/// Returns the freed slot; the caller drops its key and value and frees it.
pub fn evict<S: SieveSlots + ?Sized>(slots: &mut S) -> Result<SlotIndex, PolicyError> {
    let victim = select_victim(slots)?;
    remove(slots, victim)?;
    Ok(victim)
}

/// Checks every link and count: head/tail ends, prev/next agreement, no cycles, the length
/// word, and that the hand (if set) is in the list. Cost O(len).
pub fn validate<S: SieveSlots + ?Sized>(slots: &S) -> Result<(), PolicyError> {
    let capacity = slots.capacity();
    let len = slots.len();
    if len > capacity {
        return Err(PolicyError::Corrupt {
            what: "length above capacity",
            slot: NO_SLOT,
        });
    }
    let head = check_link(slots, slots.head())?;
    let tail = check_link(slots, slots.tail())?;
    let hand = check_link(slots, slots.hand())?;
    if len == 0 {
        if head != NO_SLOT || tail != NO_SLOT || hand != NO_SLOT {
            return Err(PolicyError::Corrupt {
                what: "empty list with a head, tail or hand",
                slot: head,
            });
        }
        return Ok(());
    }
    if head == NO_SLOT || tail == NO_SLOT {
        return Err(PolicyError::Corrupt {
            what: "non-empty list without head or tail",
            slot: NO_SLOT,
        });
    }
    if slots.prev(head) != NO_SLOT {
        return Err(PolicyError::Corrupt {
            what: "head has a prev",
            slot: head,
        });
    }
    let mut seen = 0u32;
    let mut hand_seen = hand == NO_SLOT;
    let mut previous = NO_SLOT;
    let mut cursor = head;
    while cursor != NO_SLOT {
        seen += 1;
        if seen > len {
            return Err(PolicyError::Corrupt {
                what: "more linked entries than the length (or a cycle)",
                slot: cursor,
            });
        }
        if slots.prev(cursor) != previous {
            return Err(PolicyError::Corrupt {
                what: "prev does not match the walk",
                slot: cursor,
            });
        }
        hand_seen |= cursor == hand;
        previous = cursor;
        cursor = check_link(slots, slots.next(cursor))?;
    }
    if previous != tail {
        return Err(PolicyError::Corrupt {
            what: "walk does not end at the tail",
            slot: previous,
        });
    }
    if seen != len {
        return Err(PolicyError::Corrupt {
            what: "fewer linked entries than the length",
            slot: tail,
        });
    }
    if !hand_seen {
        return Err(PolicyError::Corrupt {
            what: "hand is not in the list",
            slot: hand,
        });
    }
    Ok(())
}

/// Slots in list order, head (newest) first. For tests, validation reports and the simulator.
pub fn order_from_head<S: SieveSlots + ?Sized>(slots: &S) -> Vec<SlotIndex> {
    let mut out = Vec::new();
    let mut cursor = slots.head();
    while cursor != NO_SLOT && cursor < slots.capacity() && out.len() < slots.len() as usize {
        out.push(cursor);
        cursor = slots.next(cursor);
    }
    out
}

/// Heap-backed slots: the plain implementation used by the in-process store and by tests.
#[derive(Debug)]
pub struct VecSlots {
    head: SlotIndex,
    tail: SlotIndex,
    hand: SlotIndex,
    len: u32,
    prev: Vec<SlotIndex>,
    next: Vec<SlotIndex>,
    visited: Vec<crate::sync::AtomicBool>,
    max_slots: u32,
}

impl VecSlots {
    /// An empty list for `capacity` slots. Per-slot storage grows as slots are first used
    /// (see [`VecSlots::ensure_slot`]), so a huge capacity allocates nothing up front.
    pub fn new(capacity: u32) -> Self {
        assert!(
            capacity < NO_SLOT,
            "capacity must leave room for the NO_SLOT sentinel"
        );
        VecSlots {
            head: NO_SLOT,
            tail: NO_SLOT,
            hand: NO_SLOT,
            len: 0,
            prev: Vec::new(),
            next: Vec::new(),
            visited: Vec::new(),
            max_slots: capacity,
        }
    }

    /// Makes per-slot storage exist for `slot` (slots are handed out in increasing order
    /// before any is reused, so this grows by one at a time).
    pub fn ensure_slot(&mut self, slot: SlotIndex) {
        assert!(
            slot < self.max_slots,
            "slot {slot} beyond the store's {} slots",
            self.max_slots
        );
        let needed = slot as usize + 1;
        if self.prev.len() < needed {
            self.prev.resize(needed, NO_SLOT);
            self.next.resize(needed, NO_SLOT);
            self.visited
                .resize_with(needed, || crate::sync::AtomicBool::new(false));
        }
    }

    /// Number of slots that have storage.
    pub fn allocated(&self) -> u32 {
        self.prev.len() as u32
    }
}

impl SieveSlots for VecSlots {
    /// Only slots with storage are addressable: the owner calls [`VecSlots::ensure_slot`]
    /// before inserting a slot it has not used yet.
    fn capacity(&self) -> u32 {
        self.prev.len() as u32
    }
    fn head(&self) -> SlotIndex {
        self.head
    }
    fn set_head(&mut self, slot: SlotIndex) {
        self.head = slot;
    }
    fn tail(&self) -> SlotIndex {
        self.tail
    }
    fn set_tail(&mut self, slot: SlotIndex) {
        self.tail = slot;
    }
    fn hand(&self) -> SlotIndex {
        self.hand
    }
    fn set_hand(&mut self, slot: SlotIndex) {
        self.hand = slot;
    }
    fn len(&self) -> u32 {
        self.len
    }
    fn set_len(&mut self, len: u32) {
        self.len = len;
    }
    fn prev(&self, slot: SlotIndex) -> SlotIndex {
        self.prev[slot as usize]
    }
    fn set_prev(&mut self, slot: SlotIndex, prev: SlotIndex) {
        self.prev[slot as usize] = prev;
    }
    fn next(&self, slot: SlotIndex) -> SlotIndex {
        self.next[slot as usize]
    }
    fn set_next(&mut self, slot: SlotIndex, next: SlotIndex) {
        self.next[slot as usize] = next;
    }
    fn visited(&self, slot: SlotIndex) -> bool {
        self.visited[slot as usize].load(crate::sync::Ordering::Relaxed)
    }
    fn set_visited(&self, slot: SlotIndex, visited: bool) {
        self.visited[slot as usize].store(visited, crate::sync::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny cache over `VecSlots` that uses slots in order, for testing the list alone.
    fn fill(capacity: u32) -> VecSlots {
        let mut slots = VecSlots::new(capacity);
        for slot in 0..capacity {
            slots.ensure_slot(slot);
            insert(&mut slots, slot).unwrap();
        }
        validate(&slots).unwrap();
        slots
    }

    #[test]
    fn insert_puts_new_entries_at_the_head() {
        let slots = fill(3);
        assert_eq!(order_from_head(&slots), vec![2, 1, 0]);
        assert_eq!(
            insert(&mut fill(3), 0),
            Err(PolicyError::Full { capacity: 3 })
        );
    }

    #[test]
    fn eviction_skips_visited_entries_without_moving_them() {
        let mut slots = fill(3);
        touch(&slots, 0).unwrap();
        assert_eq!(evict(&mut slots).unwrap(), 1);
        assert_eq!(
            order_from_head(&slots),
            vec![2, 0],
            "the retained entry did not move"
        );
        assert!(!slots.visited(0), "its bit was cleared");
        assert_eq!(
            slots.hand(),
            2,
            "the hand rests on the victim's predecessor"
        );
        validate(&slots).unwrap();
    }

    #[test]
    fn hand_wraps_from_head_to_tail() {
        let mut slots = fill(2);
        touch(&slots, 0).unwrap();
        touch(&slots, 1).unwrap();
        // Clears 0, moves to 1, clears it, wraps to the tail 0 and evicts it.
        assert_eq!(evict(&mut slots).unwrap(), 0);
        assert_eq!(
            slots.hand(),
            1,
            "the hand rests on the victim's predecessor"
        );
        assert!(!slots.visited(1));
        validate(&slots).unwrap();
    }

    #[test]
    fn removing_under_the_hand_repairs_it() {
        let mut slots = fill(3);
        assert_eq!(evict(&mut slots).unwrap(), 0);
        assert_eq!(slots.hand(), 1);
        remove(&mut slots, 1).unwrap();
        assert_eq!(slots.hand(), 2);
        validate(&slots).unwrap();
        remove(&mut slots, 2).unwrap();
        assert_eq!(slots.hand(), NO_SLOT);
        assert_eq!(slots.len(), 0);
        validate(&slots).unwrap();
        assert_eq!(evict(&mut slots), Err(PolicyError::Empty));
    }

    #[test]
    fn corrupt_links_are_errors_not_panics_or_loops() {
        let mut slots = fill(3);
        slots.set_prev(0, 7);
        assert!(matches!(
            validate(&slots),
            Err(PolicyError::Corrupt { slot: 0, .. })
        ));
        let mut cyclic = fill(3);
        cyclic.set_next(0, 2); // tail points back to the head: a cycle
        assert!(validate(&cyclic).is_err());
        let mut looped = fill(3);
        looped.set_prev(1, 1); // the hand would spin on slot 1 forever
        for slot in 0..3 {
            looped.set_visited(slot, true);
        }
        looped.set_hand(1);
        // Bounded: ends with a victim or an error, never hangs.
        let _ = select_victim(&mut looped);
        assert!(matches!(
            insert(&mut fill(2), 9),
            Err(PolicyError::SlotOutOfRange { .. })
        ));
    }
}
