//! The lock-free read (INV-S3): lookup, the optimistic copy and its validation, waiting out an odd sequence.

use super::{
    ReadView, ShmStore, READ_ODD_CHECK_NS, READ_ODD_GIVE_UP_NS, READ_ODD_SPINS_MAX, READ_RETRIES,
};
use std::sync::atomic::Ordering::Relaxed;

use super::super::arena::{Arena, ValueSink};
use super::super::layout::{word, CounterStripe};
use super::super::region::{self};
use super::super::seqlock::Liveness;
use super::super::table::Table;
use crate::clock::is_fresh;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::entry_check;
pub use crate::hash::key_hash;
use crate::policy;

/// Whether a lookup counts a hit or a miss, and on which stripe (`None`: the thread's).
#[derive(Clone, Copy)]
pub(super) enum Counted {
    No,
    Yes(Option<u32>),
    /// Neither counted nor a SIEVE access: the visited bit is left alone.
    Untouched,
}

/// State of a read waiting out an odd sequence ([`ShmStore::wait_odd`]).
#[derive(Default)]
pub(super) struct OddWait {
    pub(super) spins: u32,
    pub(super) since_ns: Option<u64>,
    pub(super) recoveries: u32,
}

pub(super) enum OddStep {
    Retry,
    Miss,
}

/// What one probe of the table found ([`ShmStore::read`]).
enum Probe {
    /// A validated copy of the entry (in the caller's sink) and what its check covers.
    Hit {
        slot: u32,
        visited: bool,
        lens: u64,
        stored_at_ns: u64,
        check: u64,
    },
    Expired,
    /// No slot holds the key; the digest of the probe run walked ([`Table::probe`]).
    Miss(u64),
    /// The matching slot's lengths are beyond the limits (only a hostile file has that).
    Garbage,
    /// The candidate slot's sequence was odd.
    SlotOdd {
        slot: u32,
        seq: u64,
    },
    /// The candidate changed during its copy.
    Torn,
}

pub(super) enum ReadOutcome {
    /// `visited`: the slot's SIEVE bit as read (unvalidated: only a hint to skip `touch`).
    Hit {
        slot: u32,
        visited: bool,
    },
    Expired,
    Miss,
}

impl ShmStore {
    // ----------------------------------------------------------------------------------------
    // Reads

    /// Looks `key` up (encoded key bytes). On a fresh hit, `out` holds exactly the value bytes
    /// and the result is `Ok(true)`; otherwise `out` is empty and the result `Ok(false)`.
    /// Counts a hit or a miss. Never blocks on a writer for more than a few milliseconds.
    pub fn get(&self, key: &[u8], now_ns: u64, out: &mut Vec<u8>) -> Result<bool> {
        self.get_hashed(key, key_hash(key), now_ns, out)
    }

    /// [`ShmStore::get`] with the hash precomputed by [`key_hash`] (saves hashing twice on
    /// a miss followed by an insert).
    pub fn get_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::Yes(None))
    }

    /// [`ShmStore::get_hashed`] copying the value into any [`ValueSink`] (e.g. a
    /// [`super::super::arena::SmallValue`] on the caller's stack) and counting on the stripe of
    /// `stripe_hint` (a value of the caller's own [`StripeHint`]) instead of the calling
    /// thread's.
    #[inline]
    pub fn get_hashed_on_stripe(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
        stripe_hint: u32,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::Yes(Some(stripe_hint)))
    }

    /// [`ShmStore::get_hashed`] without counting a hit or a miss (a second look at a key
    /// whose miss was already counted, e.g. by an async miss before it starts computing).
    pub fn peek_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::No)
    }

    /// [`ShmStore::peek_hashed`] that also leaves the entry's visited bit alone (a user's
    /// look at the cache, which must not keep the entry from eviction).
    pub fn inspect_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.lookup_hashed(key, hash, now_ns, out, Counted::Untouched)
    }

    pub(super) fn lookup_hashed(
        &self,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
        counted: Counted,
    ) -> Result<bool> {
        out.clear();
        if self.files.is_some() {
            self.follow_files_on_read();
        }
        let generation = self.generation();
        let parts = ReadView::new(&self.geometry, generation)
            .and_then(|view| Some((view, view.table()?, view.slots()?)));
        let Some((view, table, slots)) = parts else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "shared cache mapping is smaller than its layout",
            ));
        };
        let count = |field: usize| {
            if let Counted::Yes(hint) = counted {
                view.count(field, hint);
            }
        };
        if key.len() > self.geometry.key_bytes_max as usize
            || self.ttl_ns == Some(0)
            || self.is_disabled()
        {
            count(word!(CounterStripe, misses));
            return Ok(false);
        }
        let outcome = self.read(&view, table, slots, key, hash, now_ns, out);
        if region::bus_fault_count() != 0 && self.generation_faulted() {
            // The read may have seen private zero pages (a file truncated under us, INV-S6):
            // never serve it; move to fresh files.
            out.clear();
            let _ = self.check_files(true);
            count(word!(CounterStripe, misses));
            return Ok(false);
        }
        match outcome {
            ReadOutcome::Hit { slot, visited } => {
                if !visited && !matches!(counted, Counted::Untouched) {
                    // Outside the lock: may rarely mark a slot reused meanwhile (only a policy
                    // imprecision under concurrency, never a wrong value).
                    if let Some(full) = view.full() {
                        let _ = policy::touch(&full.slots(), slot);
                    }
                }
                count(word!(CounterStripe, hits));
                Ok(true)
            }
            ReadOutcome::Expired => {
                out.clear();
                if let Some(full) = view.full() {
                    self.remove_if_expired(&full, key, hash, now_ns);
                }
                count(word!(CounterStripe, misses));
                Ok(false)
            }
            ReadOutcome::Miss => {
                out.clear();
                count(word!(CounterStripe, misses));
                Ok(false)
            }
        }
    }

    /// The optimistic read loop (INV-S3). A hit is validated by its slot's own sequence, so
    /// writes of other entries never hold it up; a miss by walking its probe run again (a
    /// backward shift during the walk may have moved the key behind it: the run then reads
    /// differently), so it never waits for a writer either. Bounded: at most
    /// [`READ_RETRIES`] validation failures and [`READ_ODD_GIVE_UP_NS`] of odd slot sequence
    /// with a live writer.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn read(
        &self,
        view: &ReadView<'_>,
        table: Table<'_>,
        slots: Arena<'_>,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
    ) -> ReadOutcome {
        let mut retries = 0u32;
        let mut odd = OddWait::default();
        loop {
            out.clear();
            let probe = table
                .probe(hash, |_, slot| {
                    self.probe_slot(slots, slot, key, hash, now_ns, out)
                })
                .unwrap_or_else(Probe::Miss);
            let stall = match probe {
                Probe::Hit {
                    slot,
                    visited,
                    lens,
                    stored_at_ns,
                    check,
                } => {
                    // Loaded after the slot's validation fence: a reset or clear that reused
                    // what this copy saw has moved the epoch, and the check fails (INV-S8). A
                    // copy written under another epoch (by a writer fenced off by a takeover)
                    // or torn by a writer outside the protocol is never served either: a
                    // miss, recomputed by the caller.
                    let epoch = view.epoch();
                    if entry_check(epoch, hash, lens, stored_at_ns, out.bytes()) != check {
                        out.clear();
                        return ReadOutcome::Miss;
                    }
                    return ReadOutcome::Hit { slot, visited };
                }
                Probe::Expired => return ReadOutcome::Expired,
                Probe::Garbage => return ReadOutcome::Miss,
                Probe::Miss(digest) if table.run_digest(hash) == digest => {
                    return ReadOutcome::Miss
                }
                Probe::Miss(_) | Probe::Torn => None,
                Probe::SlotOdd { slot, seq } => {
                    Some((slot, u64::from(slot) << 32 | (seq & 0xffff_ffff)))
                }
            };
            match stall {
                Some((slot, stall)) => {
                    if odd.spins == 0 && odd.recoveries == 0 {
                        view.count(word!(CounterStripe, read_retries), None);
                    }
                    match self.wait_odd(view, slot, stall, &mut odd) {
                        OddStep::Retry => continue,
                        OddStep::Miss => return ReadOutcome::Miss,
                    }
                }
                None => {
                    retries += 1;
                    view.count(word!(CounterStripe, read_retries), None);
                    if retries >= READ_RETRIES {
                        return ReadOutcome::Miss;
                    }
                }
            }
        }
    }

    /// One candidate of the probe (its bucket carries the key's 32-bit hash): `None` when it
    /// holds another key (probing goes on), else what a copy of it validated by its sequence
    /// says. The copy is in `out` on a hit.
    #[inline(always)]
    fn probe_slot(
        &self,
        slots: Arena<'_>,
        slot: u32,
        key: &[u8],
        hash: u64,
        now_ns: u64,
        out: &mut impl ValueSink,
    ) -> Option<Probe> {
        let seq = slots.seq(slot)?;
        let start = seq.read_begin();
        if start & 1 == 1 {
            // Most likely this very key being rewritten: wait for it.
            return Some(Probe::SlotOdd { slot, seq: start });
        }
        // No extent: a slot freed after this bucket was read (validated below if it matches).
        let words = slots.slot(slot)?;
        if !words.key_matches(hash, key) {
            // A comparison torn by a write of this slot (a compaction moving its words) may
            // reject the key wrongly: redo the read then.
            return (!seq.read_validate(start)).then_some(Probe::Torn);
        }
        let lens = words.lens();
        let stored_at_ns = words.stored_at_ns();
        let probe = if lens.value > self.geometry.value_bytes_max {
            // Only garbage has this; never serve it (validated or not).
            Probe::Garbage
        } else if is_fresh(stored_at_ns, now_ns, self.ttl_ns) {
            words.copy_value(lens.value, out);
            Probe::Hit {
                slot,
                visited: words.visited(),
                lens: words.lens_word(),
                stored_at_ns,
                check: words.check(),
            }
        } else {
            Probe::Expired
        };
        Some(if seq.read_validate(start) {
            probe
        } else {
            Probe::Torn
        })
    }

    /// A read saw `slot`'s sequence odd (a write in progress), the write named by `stall`:
    /// spin, then yield, check the writer's liveness and recover from a dead one (or, with the
    /// lock free, from a section nobody is in), or give up (a miss) within
    /// [`READ_ODD_GIVE_UP_NS`] / [`READ_ODD_SPINS_MAX`] polls.
    #[cold]
    #[inline(never)]
    pub(super) fn wait_odd(
        &self,
        view: &ReadView<'_>,
        slot: u32,
        stall: u64,
        odd: &mut OddWait,
    ) -> OddStep {
        let recover = |odd: &mut OddWait| {
            let Ok(me) = self.me() else {
                return false;
            };
            let owners = self.owner_check(view.generation, me);
            // Recovery takes the lock from this owner only, not from whoever holds it by then.
            let owner = view.lock.owner();
            if owners.owner_alive(owner) || odd.recoveries >= 2 {
                return false;
            }
            odd.recoveries += 1;
            if let Some(full) = view.full() {
                self.recover_interrupted(&full, owner, Some(slot));
            }
            true
        };
        if stall == self.stalled_seq.load(Relaxed) {
            // Already waited this write out: miss now, unless its writer died.
            return if recover(odd) {
                OddStep::Retry
            } else {
                OddStep::Miss
            };
        }
        odd.spins += 1;
        if odd.spins < 256 {
            std::hint::spin_loop();
            return OddStep::Retry;
        }
        if odd.spins >= READ_ODD_SPINS_MAX {
            // Hard bound, independent of the clock.
            self.stalled_seq.store(stall, Relaxed);
            return OddStep::Miss;
        }
        let now = crate::clock::monotonic_now_ns();
        let since = *odd.since_ns.get_or_insert(now);
        let waited = now.saturating_sub(since);
        if waited >= READ_ODD_CHECK_NS && odd.spins % 64 == 0 {
            if recover(odd) {
                odd.since_ns = None;
                odd.spins = 0;
                return OddStep::Retry;
            }
            if waited >= READ_ODD_GIVE_UP_NS {
                self.stalled_seq.store(stall, Relaxed);
                return OddStep::Miss;
            }
        }
        std::thread::yield_now();
        OddStep::Retry
    }
}
