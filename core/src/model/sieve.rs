//! Reference SIEVE, line by line the NSDI'24 paper's pseudocode (Algorithm 1), over a
//! `VecDeque` (front = head = newest, back = tail = oldest). Deliberately simple and slow
//! (O(n) removal); it exists to be obviously right.

use std::collections::VecDeque;

use crate::clock::is_fresh;

#[derive(Debug, Clone)]
struct Entry<K, V> {
    key: K,
    value: V,
    visited: bool,
    stored_at_ns: u64,
}

/// The reference SIEVE cache.
#[derive(Debug, Clone)]
pub struct SieveModel<K, V> {
    capacity: usize,
    ttl_ns: Option<u64>,
    /// Index 0 is the head (newest); the last index is the tail (oldest).
    queue: VecDeque<Entry<K, V>>,
    /// Position of the hand in `queue`, or `None` ("start from the tail").
    hand: Option<usize>,
}

impl<K: Eq + Clone, V: Clone> SieveModel<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self::with_ttl(capacity, None)
    }

    /// `ttl_ns = Some(0)` stores nothing ("never served from cache").
    pub fn with_ttl(capacity: usize, ttl_ns: Option<u64>) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        SieveModel {
            capacity,
            ttl_ns,
            queue: VecDeque::new(),
            hand: None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn position(&self, key: &K) -> Option<usize> {
        self.queue.iter().position(|entry| &entry.key == key)
    }

    /// Removes the entry at `position`; a hand resting on it moves to its predecessor
    /// (towards the head).
    fn remove_at(&mut self, position: usize) -> Entry<K, V> {
        self.hand = match self.hand {
            Some(hand) if hand == position => position.checked_sub(1),
            Some(hand) if hand > position => Some(hand - 1),
            other => other,
        };
        self.queue.remove(position).expect("position is in range")
    }

    /// A lookup. A fresh entry is a hit (`visited = 1`); an expired one is removed and is a
    /// miss.
    pub fn get(&mut self, key: &K, now_ns: u64) -> Option<V> {
        let position = self.position(key)?;
        if !is_fresh(self.queue[position].stored_at_ns, now_ns, self.ttl_ns) {
            self.remove_at(position);
            return None;
        }
        self.queue[position].visited = true;
        Some(self.queue[position].value.clone())
    }

    /// Stores `value` under `key`. A present key is updated in place (position and visited
    /// bit unchanged). Otherwise, when full, SIEVE evicts first; the evicted key is returned.
    pub fn insert(&mut self, key: K, value: V, now_ns: u64) -> Option<K> {
        if self.ttl_ns == Some(0) {
            return None;
        }
        if let Some(position) = self.position(&key) {
            self.queue[position].value = value;
            self.queue[position].stored_at_ns = now_ns;
            return None;
        }
        let mut evicted = None;
        if self.queue.len() == self.capacity {
            // o = hand; if o is null then o = tail
            let tail = self.queue.len() - 1;
            let mut o = self.hand.unwrap_or(tail);
            // while o.visited = 1: o.visited = 0; o = o.prev; if o is null then o = tail
            while self.queue[o].visited {
                self.queue[o].visited = false;
                o = if o == 0 { tail } else { o - 1 };
            }
            // hand = o.prev; discard o
            self.hand = Some(o);
            evicted = Some(self.remove_at(o).key);
        }
        // insert x at the head with visited = 0
        self.queue.push_front(Entry {
            key,
            value,
            visited: false,
            stored_at_ns: now_ns,
        });
        self.hand = self.hand.map(|hand| hand + 1);
        evicted
    }

    /// One request of a trace: a hit, or a miss that stores the key. Returns whether it hit.
    pub fn access(&mut self, key: K, value: V, now_ns: u64) -> bool {
        if self.get(&key, now_ns).is_some() {
            return true;
        }
        self.insert(key, value, now_ns);
        false
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let position = self.position(key)?;
        Some(self.remove_at(position).value)
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.hand = None;
    }

    pub fn contains(&self, key: &K) -> bool {
        self.position(key).is_some()
    }

    /// Keys from head (newest) to tail (oldest).
    pub fn keys_from_head(&self) -> Vec<K> {
        self.queue.iter().map(|entry| entry.key.clone()).collect()
    }

    /// The key the hand rests on, if any.
    pub fn hand_key(&self) -> Option<K> {
        self.hand.map(|hand| self.queue[hand].key.clone())
    }

    pub fn visited(&self, key: &K) -> Option<bool> {
        self.position(key)
            .map(|position| self.queue[position].visited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_example_keeps_visited_entries_in_place() {
        // Capacity 3: A B C, hit A, insert D evicts B (first unvisited from the tail after A).
        let mut m = SieveModel::new(3);
        for k in ["A", "B", "C"] {
            assert!(!m.access(k, (), 0));
        }
        assert!(m.access("A", (), 0));
        assert_eq!(m.insert("D", (), 0), Some("B"));
        assert_eq!(m.keys_from_head(), vec!["D", "C", "A"]);
        assert_eq!(
            m.visited(&"A"),
            Some(false),
            "the hand cleared A's bit on its way"
        );
        // The hand rests on C (B's predecessor); E evicts C, not the retained A.
        assert_eq!(m.hand_key(), Some("C"));
        assert_eq!(m.insert("E", (), 0), Some("C"));
        assert_eq!(m.keys_from_head(), vec!["E", "D", "A"]);
    }

    #[test]
    fn hand_wraps_to_the_tail() {
        let mut m = SieveModel::new(2);
        m.access(1, (), 0);
        m.access(2, (), 0);
        m.access(1, (), 0);
        m.access(2, (), 0);
        // Both visited: the hand clears 1 then 2, wraps to the tail (1) and evicts it.
        assert_eq!(m.insert(3, (), 0), Some(1));
        assert_eq!(m.keys_from_head(), vec![3, 2]);
    }

    #[test]
    fn removing_the_entry_under_the_hand_moves_the_hand_to_its_predecessor() {
        let mut m = SieveModel::new(3);
        for k in 0..3 {
            m.access(k, (), 0);
        }
        m.insert(3, (), 0); // evicts 0, hand -> 1
        assert_eq!(m.hand_key(), Some(1));
        m.remove(&1);
        assert_eq!(m.hand_key(), Some(2));
    }

    #[test]
    fn ttl_expires_and_zero_ttl_stores_nothing() {
        let mut m = SieveModel::with_ttl(4, Some(10));
        m.insert("a", 1, 100);
        assert_eq!(m.get(&"a", 109), Some(1));
        assert_eq!(m.get(&"a", 110), None);
        assert!(m.is_empty());
        m.insert("b", 2, 200);
        assert_eq!(
            m.get(&"b", 150),
            None,
            "an entry stamped in the future is not fresh"
        );
        let mut never = SieveModel::with_ttl(4, Some(0));
        never.insert("a", 1, 0);
        assert!(never.is_empty());
    }
}
