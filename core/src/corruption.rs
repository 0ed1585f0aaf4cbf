//! The one typed error of the shared store's invariant check ([`crate::shm::ShmStore::validate`]
//! and the header comparison it shares with opening files). Each variant names what was wrong
//! and carries the word, slot or bucket and the values involved, so a test or the simulator can
//! match on the kind of damage; `Display` is the sentence printed for a person.
#![forbid(unsafe_code)]

use std::fmt;

use crate::error::Error;
use crate::policy::{PolicyError, SlotIndex};

/// A data-file header word that differs from what the process's geometry expects (INV-9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMismatch {
    /// Word index in the data file's parameter block.
    pub word: usize,
    pub expected: u64,
    /// `None`: the header is shorter than the word index.
    pub found: Option<u64>,
}

impl fmt::Display for HeaderMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HeaderMismatch {
            word,
            expected,
            found,
        } = self;
        write!(f, "header word {word} is {found:?}, expected {expected}")
    }
}

/// What the invariant check of a shared store found wrong (the first violation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The store could not be examined: its files are unusable, the mapping is smaller than its
    /// layout, or the writer lock stayed held by a live process.
    Unavailable(Error),
    /// The data file's parameter block does not match.
    DataHeader(HeaderMismatch),
    /// The lock file's identity words do not match this format.
    LockHeader,
    /// The sequence is odd: a writer was interrupted and recovery has not run yet.
    InterruptedWrite,
    /// The SIEVE list's links are inconsistent.
    List(PolicyError),
    /// More slots handed out than the arena has.
    HighWaterAboveCapacity { high_water: u64, capacity: u32 },
    /// A listed slot was never handed out.
    ListedAboveHighWater { slot: SlotIndex, high_water: u64 },
    /// A listed slot's key or value length exceeds the configured limit.
    LengthsBeyondLimits {
        slot: SlotIndex,
        lens: crate::shm::arena::Lens,
    },
    /// The free list names a slot outside the handed-out range (`slot` as read).
    FreeListSlot { slot: u64 },
    /// A free slot is also in the SIEVE list, or twice in the free list.
    FreeSlotReused { slot: SlotIndex },
    /// Listed and free slots do not add up to the slots handed out.
    SlotCount {
        listed: u64,
        free: u64,
        high_water: u64,
    },
    /// A table bucket names a slot outside the arena.
    BucketSlotOutOfRange { bucket: usize },
    /// A table bucket names a slot that is not in the SIEVE list.
    BucketSlotNotListed { bucket: usize, slot: SlotIndex },
    /// Two table buckets name the same slot.
    TwoBuckets { slot: SlotIndex },
    /// A bucket's hash bits differ from its slot's stored hash.
    BucketHash { bucket: usize, slot: SlotIndex },
    /// A bucket lies outside the probe run of its home bucket (INV-S5).
    UnreachableBucket { bucket: usize },
    /// The table holds a different number of entries than the SIEVE list.
    BucketCount { buckets: usize, entries: usize },
    /// A slot's stored hash is not the hash of its key.
    KeyHash { slot: SlotIndex },
    /// A slot's check word is not the one its entry gives (INV-S8).
    CheckWord {
        slot: SlotIndex,
        expected: u64,
        found: u64,
    },
    /// Looking a slot's key up finds another slot or none (a duplicate key or a lost bucket).
    KeyFinds {
        slot: SlotIndex,
        found: Option<SlotIndex>,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Unavailable(e) => f.write_str(&e.message),
            Corruption::DataHeader(mismatch) => write!(f, "data {mismatch}"),
            Corruption::LockHeader => f.write_str("lock file header mismatch"),
            Corruption::InterruptedWrite => {
                f.write_str("sequence is odd: an interrupted write awaits recovery")
            }
            Corruption::List(e) => write!(f, "{e}"),
            Corruption::HighWaterAboveCapacity {
                high_water,
                capacity,
            } => write!(f, "high water {high_water} above capacity {capacity}"),
            Corruption::ListedAboveHighWater { slot, high_water } => {
                write!(f, "listed slot {slot} at or above high water {high_water}")
            }
            Corruption::LengthsBeyondLimits { slot, lens } => {
                write!(f, "slot {slot} has lengths {lens:?} beyond the limits")
            }
            Corruption::FreeListSlot { slot } => write!(f, "free list names slot {slot}"),
            Corruption::FreeSlotReused { slot } => {
                write!(f, "free slot {slot} is also listed or freed twice")
            }
            Corruption::SlotCount {
                listed,
                free,
                high_water,
            } => write!(
                f,
                "{listed} listed + {free} free slots != high water {high_water}"
            ),
            Corruption::BucketSlotOutOfRange { bucket } => {
                write!(f, "bucket {bucket} names an out-of-range slot")
            }
            Corruption::BucketSlotNotListed { bucket, slot } => {
                write!(f, "bucket {bucket} names slot {slot} not in the list")
            }
            Corruption::TwoBuckets { slot } => write!(f, "slot {slot} has two buckets"),
            Corruption::BucketHash { bucket, slot } => {
                write!(f, "bucket {bucket} hash differs from slot {slot}'s")
            }
            Corruption::UnreachableBucket { bucket } => {
                write!(f, "bucket {bucket} is unreachable from its home")
            }
            Corruption::BucketCount { buckets, entries } => {
                write!(f, "{buckets} buckets for {entries} entries")
            }
            Corruption::KeyHash { slot } => write!(f, "slot {slot} hash does not match its key"),
            Corruption::CheckWord { slot, .. } => {
                write!(f, "slot {slot}'s check word does not match its entry")
            }
            Corruption::KeyFinds { slot, found } => {
                write!(f, "slot {slot}'s key finds {found:?} (duplicate key?)")
            }
        }
    }
}

impl std::error::Error for Corruption {}

impl From<PolicyError> for Corruption {
    fn from(e: PolicyError) -> Self {
        Corruption::List(e)
    }
}

impl From<Error> for Corruption {
    fn from(e: Error) -> Self {
        Corruption::Unavailable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_place_and_the_values() {
        let header = Corruption::DataHeader(HeaderMismatch {
            word: 3,
            expected: 7,
            found: Some(9),
        });
        assert_eq!(
            header.to_string(),
            "data header word 3 is Some(9), expected 7"
        );
        let count = Corruption::SlotCount {
            listed: 2,
            free: 1,
            high_water: 4,
        };
        assert_eq!(count.to_string(), "2 listed + 1 free slots != high water 4");
        let finds = Corruption::KeyFinds {
            slot: 5,
            found: None,
        };
        assert_eq!(
            finds.to_string(),
            "slot 5's key finds None (duplicate key?)"
        );
    }
}
