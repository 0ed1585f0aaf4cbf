//! Reference LRU: a recency stamp per key and an ordered map from stamp to key. O(log n) per
//! operation, simple enough to be obviously right and fast enough for multi-million-request
//! traces.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug, Clone)]
pub struct LruModel<K> {
    capacity: usize,
    clock: u64,
    stamp_of: HashMap<K, u64>,
    key_at: BTreeMap<u64, K>,
}

impl<K: Eq + Hash + Clone> LruModel<K> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        LruModel {
            capacity,
            clock: 0,
            stamp_of: HashMap::new(),
            key_at: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.stamp_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamp_of.is_empty()
    }

    /// One request: a hit refreshes recency; a miss inserts, evicting the least recently used
    /// key when full. Returns whether it hit.
    pub fn access(&mut self, key: K) -> bool {
        self.clock += 1;
        if let Some(stamp) = self.stamp_of.get_mut(&key) {
            self.key_at.remove(stamp);
            *stamp = self.clock;
            self.key_at.insert(self.clock, key);
            return true;
        }
        if self.stamp_of.len() == self.capacity {
            let (_, oldest) = self
                .key_at
                .pop_first()
                .expect("a full cache has a least recent key");
            self.stamp_of.remove(&oldest);
        }
        self.stamp_of.insert(key.clone(), self.clock);
        self.key_at.insert(self.clock, key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut m = LruModel::new(2);
        assert!(!m.access(1));
        assert!(!m.access(2));
        assert!(m.access(1));
        assert!(!m.access(3)); // evicts 2
        assert!(m.access(1));
        assert!(!m.access(2));
        assert_eq!(m.len(), 2);
    }
}
