//! Single flight of the shared backend's synchronous misses: threads of this process
//! coalesce through [`SingleFlight`] (as the memory backend does), and the thread that leads
//! here marks the key in the lock file so that other processes wait for it too
//! (`warp_cache_core::shm::flight`). Waits are bounded by the function's `single_flight`
//! seconds, release the GIL, and end early when the computing process dies.

// A part of shared/mod.rs, split out for size: it uses the module's items and imports.
use super::*;
use std::time::Instant;

use warp_cache_core::shm::{FlightClaim, FlightMark, FlightWait};

use crate::single_flight::{Entered, SIGNAL_CHECK_EVERY};

/// What a computing miss holds of its key's flights (ended by [`Flight::end`] once the value
/// is stored, or the call raised).
#[derive(Default)]
pub(crate) struct Flight {
    /// The hash of the in-process flight this thread leads.
    local: Option<u64>,
    /// This process's mark in the lock file.
    mark: Option<FlightMark>,
}

/// What a synchronous miss does after its flights.
pub(super) enum Flown {
    /// Another thread or process computed and stored it.
    Cached(Py<PyAny>),
    /// Compute and store it, then end the flight.
    Compute(Flight),
}

impl Flight {
    pub(super) fn end(self, this: &SharedCachedFunction) {
        if let Some(mark) = self.mark {
            this.store.flight_release(mark);
        }
        if let (Some(hash), Some(flights)) = (self.local, &this.flights) {
            flights.leave(hash);
        }
    }
}

impl SharedCachedFunction {
    /// The flights of a counted synchronous miss of `scratch.key` (hash `hash`): waits while
    /// another thread or process computes it, then serves what it stored (without counting
    /// again), or says to compute.
    pub(super) fn fly(&self, py: Python<'_>, scratch: &mut Scratch, hash: u64) -> PyResult<Flown> {
        let Some(flights) = &self.flights else {
            return Ok(Flown::Compute(Flight::default()));
        };
        if scratch.key.len() > self.store.key_bytes_max() as usize {
            return Ok(Flown::Compute(Flight::default()));
        }
        let deadline = flights.deadline();
        match flights.enter(hash) {
            Entered::Lead => {}
            Entered::Reentrant => return Ok(Flown::Compute(Flight::default())),
            Entered::Busy => {
                let entered = flights.wait_then_enter(py, hash, deadline)?;
                let flight = Flight {
                    local: (entered == Entered::Lead).then_some(hash),
                    mark: None,
                };
                return self.look_again(py, scratch, hash, flight);
            }
        }
        let mut flight = Flight {
            local: Some(hash),
            mark: None,
        };
        let owner = match self.store.flight_claim(hash) {
            FlightClaim::Marked(mark) => {
                flight.mark = Some(mark);
                return Ok(Flown::Compute(flight));
            }
            FlightClaim::Unmarked => return Ok(Flown::Compute(flight)),
            FlightClaim::Busy { owner } => owner,
        };
        // Another process computes it: wait in slices, so that Ctrl-C is seen.
        loop {
            let until = deadline.min(Instant::now() + SIGNAL_CHECK_EVERY);
            let waited =
                crate::python_call::detached(py, || self.store.flight_wait(hash, owner, until));
            if waited == FlightWait::Ended || Instant::now() >= deadline {
                break;
            }
            if let Err(err) = py.check_signals() {
                flight.end(self);
                return Err(err);
            }
        }
        self.look_again(py, scratch, hash, flight)
    }

    /// After a wait: the value the other computation stored, else compute (holding
    /// `flight`).
    fn look_again(
        &self,
        py: Python<'_>,
        scratch: &mut Scratch,
        hash: u64,
        flight: Flight,
    ) -> PyResult<Flown> {
        let now_ns = self.read_clock();
        let found = match self
            .store
            .peek_hashed(&scratch.key, hash, now_ns, &mut scratch.value)
        {
            Ok(true) => decode_or_miss(py, &scratch.value),
            Ok(false) | Err(_) => Ok(None),
        };
        match found {
            Ok(Some(value)) => {
                flight.end(self);
                Ok(Flown::Cached(value))
            }
            Ok(None) => Ok(Flown::Compute(flight)),
            Err(err) => {
                flight.end(self);
                Err(err)
            }
        }
    }
}
