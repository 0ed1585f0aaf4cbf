//! Single-flight marks across processes: while a process computes a key that missed, a mark
//! in the lock file says so, and other processes that miss the same key wait for its result
//! instead of computing it too.
//!
//! A mark is one word: the computing process's liveness id (`liveness.rs`, 32 bits, never 0)
//! in the high half and a tag of the key hash (its high 32 bits with the low bit set, so never
//! 0) in the low half; 0 is a free mark. A key's marks are looked for in [`PROBES`] places from
//! `hash % FLIGHT_SLOTS`.
//!
//! * Marks are advice, never a lock: a waiter always reads the cache when the mark goes, and
//!   computes itself after its bound. Two keys with the same tag only make one wait for the
//!   other; a key that finds no free place is computed unmarked. So a wrong or stale mark can
//!   cost time, never a wrong value or a hang.
//! * Claiming: a mark of the key anywhere in its places means "being computed". Otherwise the
//!   first free place is taken with a compare-and-swap; if a racing process took another place
//!   for the same key, the mark in the earlier place wins and the other gives its up, so one
//!   process computes.
//! * A mark never outlives its owner for long: its owner removes it after storing (or after
//!   its call raised), and a waiter that finds the owner dead (its presence file unlocked)
//!   removes it. Marks in a replaced or reset file are simply gone.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};

use super::layout::FLIGHT_SLOTS;

/// Places looked at for one key's mark.
pub const PROBES: usize = 8;

/// The mark `owner` (a liveness id) writes for the key of hash `hash`.
pub fn mark_of(owner: u64, hash: u64) -> u64 {
    (owner << 32) | tag_of(hash)
}

fn tag_of(hash: u64) -> u64 {
    (hash >> 32) | 1
}

/// The liveness id in a mark.
pub fn owner_of(mark: u64) -> u64 {
    mark >> 32
}

fn places(hash: u64) -> impl Iterator<Item = usize> {
    let home = (hash % FLIGHT_SLOTS as u64) as usize;
    (0..PROBES).map(move |step| (home + step) % FLIGHT_SLOTS)
}

/// The result of [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller's mark is at `place`: it computes, then calls [`release`].
    Marked { place: usize, mark: u64 },
    /// Process `owner` is computing the key.
    Busy { owner: u64 },
    /// No mark (the caller's own process already marks the key, or no place is free): the
    /// caller computes without one.
    Unmarked,
}

/// The mark of the key of hash `hash` found among its places, with its place.
fn find(flights: &[AtomicU64], hash: u64) -> Option<(usize, u64)> {
    let tag = tag_of(hash);
    places(hash).find_map(|place| {
        let mark = flights.get(place)?.load(Acquire);
        (mark != 0 && mark & 0xffff_ffff == tag).then_some((place, mark))
    })
}

/// Marks the key of hash `hash` as computed by `owner` (see the module comment).
pub fn claim(flights: &[AtomicU64], owner: u64, hash: u64) -> Claim {
    if let Some((_, mark)) = find(flights, hash) {
        return busy_unless_mine(mark, owner);
    }
    let mine = mark_of(owner, hash);
    for place in places(hash) {
        let Some(word) = flights.get(place) else {
            return Claim::Unmarked;
        };
        match word.compare_exchange(0, mine, AcqRel, Acquire) {
            Ok(_) => {
                // A racer may have marked the key in another place meanwhile: the earliest
                // place in probe order wins.
                return match find(flights, hash) {
                    Some((first, _)) if first == place => Claim::Marked { place, mark: mine },
                    Some((_, theirs)) => {
                        let _ = word.compare_exchange(mine, 0, AcqRel, Acquire);
                        busy_unless_mine(theirs, owner)
                    }
                    // Taken away already (a waiter judged us dead: cannot be, we are alive;
                    // or the file was reset): compute unmarked.
                    None => {
                        let _ = word.compare_exchange(mine, 0, AcqRel, Acquire);
                        Claim::Unmarked
                    }
                };
            }
            Err(theirs) if theirs & 0xffff_ffff == tag_of(hash) => {
                return busy_unless_mine(theirs, owner);
            }
            Err(_) => {}
        }
    }
    Claim::Unmarked
}

fn busy_unless_mine(mark: u64, owner: u64) -> Claim {
    if owner_of(mark) == owner {
        Claim::Unmarked
    } else {
        Claim::Busy {
            owner: owner_of(mark),
        }
    }
}

/// Removes the caller's mark (a no-op if it is gone already).
pub fn release(flights: &[AtomicU64], place: usize, mark: u64) {
    if let Some(word) = flights.get(place) {
        let _ = word.compare_exchange(mark, 0, AcqRel, Acquire);
    }
}

/// Whether `owner` still marks the key of hash `hash`.
pub fn marked_by(flights: &[AtomicU64], hash: u64, owner: u64) -> bool {
    let tag = tag_of(hash);
    places(hash).any(|place| {
        flights
            .get(place)
            .is_some_and(|word| word.load(Acquire) == (owner << 32) | tag)
    })
}

/// Removes `owner`'s mark of the key of hash `hash` (a waiter found the owner dead).
pub fn remove_dead(flights: &[AtomicU64], hash: u64, owner: u64) {
    let mark = mark_of(owner, hash);
    for place in places(hash) {
        release(flights, place, mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flights() -> Vec<AtomicU64> {
        (0..FLIGHT_SLOTS).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn one_process_marks_a_key_the_others_see_it_busy() {
        let flights = flights();
        let hash = 0x1234_5678_9abc_def0;
        let Claim::Marked { place, mark } = claim(&flights, 7, hash) else {
            panic!("the first claimer marks the key");
        };
        assert_eq!(owner_of(mark), 7);
        assert_eq!(claim(&flights, 9, hash), Claim::Busy { owner: 7 });
        assert_eq!(
            claim(&flights, 7, hash),
            Claim::Unmarked,
            "its own mark: no wait"
        );
        assert!(marked_by(&flights, hash, 7));
        // Another key is independent.
        assert!(matches!(
            claim(&flights, 9, hash ^ (1 << 40)),
            Claim::Marked { .. }
        ));
        release(&flights, place, mark);
        assert!(!marked_by(&flights, hash, 7));
        assert!(matches!(claim(&flights, 9, hash), Claim::Marked { .. }));
    }

    #[test]
    fn a_dead_owners_mark_is_removed_and_full_places_mean_unmarked() {
        let flights = flights();
        let hash = 5;
        assert!(matches!(claim(&flights, 3, hash), Claim::Marked { .. }));
        remove_dead(&flights, hash, 3);
        assert!(matches!(claim(&flights, 4, hash), Claim::Marked { .. }));
        // Fill every place of a key with other keys' marks (same home, other tags).
        let other = 6 + FLIGHT_SLOTS as u64;
        for step in 0..PROBES as u64 {
            let other_hash = ((step + 1) << 33) | other;
            let home = (other_hash % FLIGHT_SLOTS as u64) as usize;
            flights[(home + step as usize) % FLIGHT_SLOTS]
                .store(mark_of(8, other_hash), std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(claim(&flights, 9, other + (1 << 50)), Claim::Unmarked);
    }

    #[test]
    fn racing_claimers_of_one_key_elect_one() {
        for round in 0..200u64 {
            let flights = flights();
            let hash = round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let claims: Vec<Claim> = std::thread::scope(|scope| {
                let handles: Vec<_> = (1..=4u64)
                    .map(|owner| {
                        let flights = &flights;
                        scope.spawn(move || claim(flights, owner, hash))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let marked = claims
                .iter()
                .filter(|c| matches!(c, Claim::Marked { .. }))
                .count();
            assert_eq!(marked, 1, "round {round}: {claims:?}");
            // Whoever did not mark saw the winner's mark.
            assert!(
                claims.iter().all(|c| !matches!(c, Claim::Unmarked)),
                "{claims:?}"
            );
        }
    }
}
