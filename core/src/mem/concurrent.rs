//! [`SyncMemStore`]: the in-process store behind one reader-writer lock, for free-threaded
//! Python and for the shuttle tests.
//!
//! Locking rule (INV-M2): lookups take the read lock (the visited bit of a hit is an atomic in
//! [`crate::policy::VecSlots`], and hit counters are atomics), anything that adds or removes an
//! entry takes the write lock. There is one table and one SIEVE list, so SIEVE stays exact and
//! `max_size` holds under any interleaving. Removed keys and values are returned to the
//! caller and dropped after the lock is released.
#![forbid(unsafe_code)]

use std::hash::Hash;

use super::store::typed_hash;
use super::{Displaced, Hit, MemStore, Stats};
use crate::sync::{ReadGuard, RwLock, WriteGuard};
use crate::Error;

/// A [`MemStore`] shared between threads.
#[derive(Debug)]
pub struct SyncMemStore<K, V> {
    inner: RwLock<MemStore<K, V>>,
}

impl<K, V> SyncMemStore<K, V> {
    /// See [`MemStore::new`].
    pub fn new(max_size: u32, ttl_ns: Option<u64>) -> Result<Self, Error> {
        Ok(SyncMemStore {
            inner: RwLock::new(MemStore::new(max_size, ttl_ns)?),
        })
    }

    /// Shared access for lookups: `candidates`, `find`, `hit`, counters.
    pub fn read(&self) -> ReadGuard<'_, MemStore<K, V>> {
        self.inner.read()
    }

    /// Exclusive access for inserts, removals and clear.
    pub fn write(&self) -> WriteGuard<'_, MemStore<K, V>> {
        self.inner.write()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn max_size(&self) -> u32 {
        self.read().max_size()
    }

    pub fn stats(&self) -> Stats {
        self.read().counters().snapshot()
    }

    /// Empties the store and resets the counters; returns the entries for the caller to drop
    /// (after the lock is released).
    pub fn clear(&self) -> Vec<(K, V)> {
        let mut store = self.write();
        store.counters().reset();
        store.clear()
    }

    pub fn validate(&self) -> Result<(), String> {
        self.read().validate()
    }
}

impl<K: Hash + Eq, V: Clone> SyncMemStore<K, V> {
    /// A lookup under the read lock. An expired entry is removed under the write lock (if it
    /// is still there and still expired when the lock is taken); then it is a miss.
    pub fn get_value(&self, key: &K, now_ns: u64) -> Option<V> {
        let hash = typed_hash(key);
        {
            let store = self.read();
            let Some(at) = store.find(hash, |k| k == key) else {
                store.counters().record_miss();
                return None;
            };
            if let Hit::Fresh(value) = store.hit(at, now_ns) {
                let value = value.clone();
                store.counters().record_hit();
                return Some(value);
            }
        }
        let (found, removed) = {
            let mut store = self.write();
            match store.find(hash, |k| k == key) {
                None => (None, None),
                Some(at) => match store.hit(at, now_ns) {
                    // Another thread stored a fresh value meanwhile.
                    Hit::Fresh(value) => (Some(value.clone()), None),
                    Hit::Expired | Hit::Gone => (None, store.remove(at)),
                },
            }
        };
        drop(removed);
        let store = self.read();
        match found {
            Some(_) => store.counters().record_hit(),
            None => store.counters().record_miss(),
        }
        found
    }

    /// Stores `value` under `key` (in place if present); returns the evicted key, if any.
    pub fn insert_value(&self, key: K, value: V, now_ns: u64) -> Option<K> {
        let displaced: Displaced<K, V> = self.write().insert_keyed(key, value, now_ns);
        displaced.evicted_key()
    }

    /// Removes `key` whether fresh or not.
    pub fn remove_value(&self, key: &K) -> Option<V> {
        self.write().remove_value(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SieveModel;

    #[test]
    fn single_threaded_use_matches_the_model() {
        let store = SyncMemStore::new(3, Some(50)).unwrap();
        let mut model = SieveModel::with_ttl(3, Some(50));
        let mut now = 0;
        for step in 0u64..400 {
            let key = (step * 7 + step / 3) % 6;
            now += step % 4;
            let got = store.get_value(&key, now);
            assert_eq!(got, model.get(&key, now), "step {step}");
            if got.is_none() {
                assert_eq!(
                    store.insert_value(key, step, now),
                    model.insert(key, step, now),
                    "step {step}"
                );
            }
            store.validate().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.hits + stats.misses, 400);
        assert_eq!(store.clear().len(), model.len());
        assert_eq!(store.stats(), Stats::default());
    }

    #[test]
    fn threads_share_one_bounded_exact_store() {
        let store = std::sync::Arc::new(SyncMemStore::new(16, None).unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let key = (i * 31 + t * 7) % 40;
                        match store.get_value(&key, 0) {
                            Some(value) => assert_eq!(value, key * 2),
                            None => {
                                store.insert_value(key, key * 2, 0);
                            }
                        }
                        assert!(store.len() <= 16);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        store.validate().unwrap();
        let stats = store.stats();
        assert_eq!(stats.hits + stats.misses, 8000);
    }
}
