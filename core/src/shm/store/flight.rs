//! Single flight across processes for a store: the marks of `shm/flight.rs` in the current
//! lock file, claimed by a process that computes a missed key, waited on by the others.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::super::files::Generation;
use super::super::flight::{self, Claim};
use super::super::layout::{word, LockFile, FLIGHT_SLOTS};
use super::super::liveness::OwnerState;
use super::ShmStore;

/// How often a waiter asks the kernel whether the computing process is still alive: a
/// process killed while computing stops delaying others within this.
pub const FLIGHT_LIVENESS_EVERY: Duration = Duration::from_millis(50);
/// First and longest pause between two looks at a mark.
const POLL_FIRST: Duration = Duration::from_micros(200);
const POLL_MAX: Duration = Duration::from_millis(5);

/// This process's mark of a key (give it back with [`ShmStore::flight_release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightMark {
    place: usize,
    mark: u64,
}

/// What [`ShmStore::flight_claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightClaim {
    /// This process computes the key.
    Marked(FlightMark),
    /// The process of liveness id `owner` computes it: wait with [`ShmStore::flight_wait`].
    Busy { owner: u64 },
    /// Compute without a mark.
    Unmarked,
}

/// How a [`ShmStore::flight_wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightWait {
    /// The mark is gone (its owner stored the value, gave up, or died): look the key up.
    Ended,
    /// Still marked by a live process at the deadline.
    Running,
}

fn flight_words(generation: &Generation) -> &[AtomicU64] {
    let start = word!(LockFile, flights);
    generation
        .lock
        .words()
        .get(start..start + FLIGHT_SLOTS)
        .unwrap_or(&[])
}

impl ShmStore {
    /// Marks the key of hash `hash` as computed by this process, unless another process
    /// does already.
    pub fn flight_claim(&self, hash: u64) -> FlightClaim {
        let Ok(me) = self.me() else {
            return FlightClaim::Unmarked;
        };
        match flight::claim(flight_words(self.generation()), me, hash) {
            Claim::Marked { place, mark } => FlightClaim::Marked(FlightMark { place, mark }),
            Claim::Busy { owner } => FlightClaim::Busy { owner },
            Claim::Unmarked => FlightClaim::Unmarked,
        }
    }

    /// Removes this process's mark (wherever it is: the files may have been replaced since).
    pub fn flight_release(&self, mark: FlightMark) {
        for generation in self.generations.all() {
            flight::release(flight_words(generation), mark.place, mark.mark);
        }
    }

    /// Waits until `owner` no longer marks the key of hash `hash` (removing the mark if its
    /// owner is dead), or until `until`. Sleeps between looks; call it without the GIL.
    pub fn flight_wait(&self, hash: u64, owner: u64, until: Instant) -> FlightWait {
        let generation = self.generation();
        let words = flight_words(generation);
        let me = self.me().unwrap_or(0);
        let owners = self.owner_check(generation, me);
        let mut pause = POLL_FIRST;
        let mut next_liveness_check = Instant::now();
        loop {
            if !flight::marked_by(words, hash, owner) || self.generation().retired() {
                return FlightWait::Ended;
            }
            let now = Instant::now();
            if now >= next_liveness_check {
                if owners.state(owner) == OwnerState::Dead {
                    flight::remove_dead(words, hash, owner);
                    return FlightWait::Ended;
                }
                next_liveness_check = now + FLIGHT_LIVENESS_EVERY;
            }
            if now >= until {
                return FlightWait::Running;
            }
            std::thread::sleep(pause.min(until - now));
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}
