//! Single flight of synchronous misses within one process (both backends): while one thread
//! computes a key, other threads that miss the same key wait for it (with the GIL released)
//! and then read the cache instead of computing it again.
//!
//! * Flights are keyed by the 64-bit key hash alone: two different keys with the same hash
//!   only make the second wait for the first, then find nothing and compute (never a wrong
//!   value: a waiter always reads the cache, never the leader's result).
//! * A thread that misses a key it is already computing (a recursion into the same key)
//!   computes directly: it never waits for itself.
//! * Waiting is bounded (`wait_ns`, the function's `single_flight` seconds): after the bound
//!   the waiter takes the flight over and computes. So a computation that deadlocks on its
//!   waiters, or a flight whose thread ended without finishing it, costs at most one bound.
//! * If the leader's call raises, nothing is cached and a waiter retries (one becomes the new
//!   leader). Exceptions are not shared between threads.
//! * The lock is held for a few instructions and never while Python code runs.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long a waiter sleeps between checks for a pending signal (Ctrl-C reaches a waiting
/// main thread within this).
pub(crate) const SIGNAL_CHECK_EVERY: Duration = Duration::from_millis(50);

/// One key being computed, by the thread `owner` (a [`thread_token`]).
struct Flight {
    hash: u64,
    owner: usize,
}

/// The keys in flight, and how many threads wait for one.
#[derive(Default)]
struct Flights {
    list: Vec<Flight>,
    /// Waking costs a system call even with nobody to wake: [`SingleFlight::leave`] only
    /// notifies when this is not 0 (a miss without waiters stays in user space).
    waiting: usize,
}

impl std::ops::Deref for Flights {
    type Target = Vec<Flight>;
    fn deref(&self) -> &Vec<Flight> {
        &self.list
    }
}

impl std::ops::DerefMut for Flights {
    fn deref_mut(&mut self) -> &mut Vec<Flight> {
        &mut self.list
    }
}

/// The flights of one cached function.
pub struct SingleFlight {
    flights: Mutex<Flights>,
    finished: Condvar,
    wait: Duration,
}

/// What a miss does about its key's flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// This thread now computes the key; it must call [`SingleFlight::leave`] after storing.
    Lead,
    /// This thread is already computing it (a recursion): compute, without a flight.
    Reentrant,
    /// Another thread is computing it.
    Busy,
}

/// An address unique to the calling thread while it lives (no allocation, no atomics).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|token| std::ptr::from_ref(token) as usize)
}

impl SingleFlight {
    /// Flights whose waiters wait at most `wait` before computing themselves.
    pub fn new(wait: Duration) -> Self {
        SingleFlight {
            flights: Mutex::new(Flights::default()),
            finished: Condvar::new(),
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flights> {
        // A panic while the lock was held left the list consistent (pushes and removals).
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the flight of `hash` without waiting.
    pub fn enter(&self, hash: u64) -> Entered {
        let me = thread_token();
        let mut flights = self.lock();
        match flights.iter().find(|flight| flight.hash == hash) {
            Some(flight) if flight.owner == me => Entered::Reentrant,
            Some(_) => Entered::Busy,
            None => {
                flights.push(Flight { hash, owner: me });
                Entered::Lead
            }
        }
    }

    /// Ends this thread's flight of `hash` (after its result was stored, or its call raised)
    /// and wakes the waiters. A flight another thread took over is left alone.
    pub fn leave(&self, hash: u64) {
        let me = thread_token();
        let mut flights = self.lock();
        if let Some(index) = flights
            .iter()
            .position(|flight| flight.hash == hash && flight.owner == me)
        {
            flights.swap_remove(index);
            let wake = flights.waiting > 0;
            drop(flights);
            if wake {
                self.finished.notify_all();
            }
        }
    }

    /// Waits (with the GIL released) until the flight of `hash` ends, then leads the next
    /// one ([`Entered::Lead`]: this thread reads the cache and, if the value is not there,
    /// computes it while later waiters wait for it). At `deadline` a flight still running is
    /// taken over (also `Lead`). `Err` if a signal handler raised (Ctrl-C) while waiting.
    pub fn wait_then_enter(
        &self,
        py: Python<'_>,
        hash: u64,
        deadline: Instant,
    ) -> PyResult<Entered> {
        let me = thread_token();
        loop {
            let led = crate::python_call::detached(py, || {
                let mut flights = self.lock();
                flights.waiting += 1;
                let until = deadline.min(Instant::now() + SIGNAL_CHECK_EVERY);
                let timeout = until.saturating_duration_since(Instant::now());
                let (mut flights, _) = self
                    .finished
                    .wait_timeout_while(flights, timeout, |flights| {
                        flights.iter().any(|flight| flight.hash == hash)
                    })
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                flights.waiting -= 1;
                // Joined under the same lock as the check: one waiter leads the next flight.
                let ended = !flights.iter().any(|flight| flight.hash == hash);
                if ended {
                    flights.push(Flight { hash, owner: me });
                }
                ended
            });
            if led {
                return Ok(Entered::Lead);
            }
            if Instant::now() >= deadline {
                return Ok(self.take_over(hash));
            }
            py.check_signals()?;
        }
    }

    /// The deadline of a wait that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.wait
    }

    /// Makes this thread the owner of the flight of `hash` (a waiter past its bound).
    fn take_over(&self, hash: u64) -> Entered {
        let me = thread_token();
        let mut flights = self.lock();
        match flights.iter_mut().find(|flight| flight.hash == hash) {
            Some(flight) => flight.owner = me,
            None => flights.push(Flight { hash, owner: me }),
        }
        Entered::Lead
    }
}

/// Ends a flight when dropped (the full paths hold one while they compute and store).
pub struct Leading<'a> {
    flights: &'a SingleFlight,
    hash: u64,
}

impl<'a> Leading<'a> {
    /// A guard for the flight of `hash` this thread leads.
    pub fn new(flights: &'a SingleFlight, hash: u64) -> Self {
        Leading { flights, hash }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.flights.leave(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_leader_per_hash_and_reentry_is_not_a_wait() {
        let flights = SingleFlight::new(Duration::from_secs(1));
        assert_eq!(flights.enter(7), Entered::Lead);
        assert_eq!(flights.enter(7), Entered::Reentrant);
        assert_eq!(flights.enter(8), Entered::Lead);
        let other = std::thread::scope(|scope| scope.spawn(|| flights.enter(7)).join().unwrap());
        assert_eq!(other, Entered::Busy);
        flights.leave(7);
        assert_eq!(flights.enter(7), Entered::Lead);
    }

    #[test]
    fn a_waiter_wakes_when_the_leader_leaves_and_takes_over_at_its_deadline() {
        Python::initialize();
        let flights = Arc::new(SingleFlight::new(Duration::from_millis(200)));
        assert_eq!(flights.enter(1), Entered::Lead);
        let waiter = {
            let flights = Arc::clone(&flights);
            std::thread::spawn(move || {
                Python::attach(|py| {
                    let started = Instant::now();
                    let entered = flights.wait_then_enter(py, 1, started + Duration::from_secs(30));
                    (entered.unwrap(), started.elapsed())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        flights.leave(1);
        let (entered, waited) = waiter.join().unwrap();
        assert_eq!(
            entered,
            Entered::Lead,
            "the flight ended: the waiter leads the retry"
        );
        assert!(
            waited >= Duration::from_millis(90),
            "it waited for the leader: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "and woke when it left: {waited:?}"
        );

        // A leader that never leaves: the waiter takes over at its deadline.
        let stuck = {
            let flights = Arc::clone(&flights);
            std::thread::spawn(move || flights.enter(2)).join().unwrap()
        };
        assert_eq!(stuck, Entered::Lead);
        Python::attach(|py| {
            let started = Instant::now();
            let entered = flights.wait_then_enter(py, 2, flights.deadline()).unwrap();
            assert_eq!(entered, Entered::Lead);
            assert!(started.elapsed() >= Duration::from_millis(190));
            // It owns the flight now: entering again is a reentry, leaving ends it.
            assert_eq!(flights.enter(2), Entered::Reentrant);
            flights.leave(2);
            assert_eq!(flights.enter(2), Entered::Lead);
        });
    }
}
