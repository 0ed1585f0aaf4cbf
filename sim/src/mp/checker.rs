//! The checker of a multi-process replay: it sees every request the parent dispatches and
//! every result a worker reports, and decides whether each result is one the store may give.
//!
//! Rules for a get of key `k` that returned bytes `v` (a miss is always allowed: a cache may
//! drop entries after a crash, a race or an eviction):
//! 1. `v` decodes as a [`super::value`] value (magic, length, checksum): else **torn**;
//! 2. `v` names key `k`: else **foreign** (another key's value);
//! 3. `v` names a request that was dispatched for `k` to the worker incarnation it names, is not
//!    the get's own request and (same worker) not a later one: else **invented**;
//! 4. that request's insert was not reported as skipped: else **never stored**;
//! 5. no completed write of `k` *happened between* `v`'s write and the get: else **stale**.
//!    Happens-before is known in two ways: barriers (a request that finished at the barrier of
//!    step `a` precedes every request dispatched at a step after `a`) and program order (one
//!    worker process runs its requests one after the other). A write killed with its worker
//!    counts as finished at the step its death was seen, and as possibly stored.
//!
//! With `exact` (a serial schedule and no faults, so requests run in a total order), every
//! result must also equal the reference SIEVE's ([`SieveModel`]): the same hits and misses,
//! and on a hit the value of the most recent write (INV-1: the shared store's SIEVE is the
//! one SIEVE, exact across processes when nothing races).
//!
//! These rules check from the outside what the shared store promises: INV-8 (a crashed
//! writer may lose entries, never leave a wrong or torn value), INV-S3 (a reader accepts only
//! a copy validated by the seqlock) and INV-S4 (an interrupted write section resets the
//! table). Soundness: every happens-before fact used is conservative (a result is counted as
//! finished at the barrier where the parent *read* it, which is never earlier than the real
//! finish), so a correct store never fails a check.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt;

use warp_cache_core::model::SieveModel;

use super::protocol::{InsertCode, RequestResult};
use super::value::{self, ValueId};

/// Classes of problems the checker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    Torn,
    Foreign,
    Invented,
    NeverStored,
    Stale,
    /// The store reported `SkipReason::Corrupt` (it reset itself and still failed).
    StoreCorrupt,
    /// Differs from the reference SIEVE in an exact run.
    ModelMismatch,
    /// `ShmStore::validate` failed at a checkpoint.
    Validation,
    /// A worker broke the protocol (unknown or duplicate result): a harness or worker bug.
    Protocol,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Torn => "torn value",
            ViolationKind::Foreign => "foreign value",
            ViolationKind::Invented => "invented value",
            ViolationKind::NeverStored => "value that was never stored",
            ViolationKind::Stale => "stale value",
            ViolationKind::StoreCorrupt => "store reported corruption",
            ViolationKind::ModelMismatch => "differs from the reference SIEVE",
            ViolationKind::Validation => "store validation failed",
            ViolationKind::Protocol => "protocol error",
        }
    }

    /// A wrong value returned by a get (the figure that must stay 0).
    pub fn is_wrong_value(self) -> bool {
        matches!(
            self,
            ViolationKind::Torn
                | ViolationKind::Foreign
                | ViolationKind::Invented
                | ViolationKind::NeverStored
                | ViolationKind::Stale
        )
    }
}

/// One problem, with enough context to debug it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// Trace index of the request whose result is wrong.
    pub index: u64,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at request {}: {}",
            self.kind.name(),
            self.index,
            self.message
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done {
        end_step: u32,
        stored: bool,
    },
    /// Its worker was killed before reporting it (seen dead at `end_step`).
    Lost {
        end_step: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Record {
    key: u64,
    worker: u16,
    incarnation: u16,
    /// Dispatch order within the worker incarnation.
    seq: u64,
    dispatch_step: u32,
    /// Latest dispatch step of a stored write of `key` finished at a barrier before this
    /// request was dispatched (rule 5, barrier part).
    floor: Option<u32>,
    state: State,
}

impl Record {
    fn end_step(&self) -> Option<u32> {
        match self.state {
            State::InFlight => None,
            State::Done { end_step, .. } | State::Lost { end_step } => Some(end_step),
        }
    }
}

/// Counts of what was checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub dispatched: u64,
    pub results: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserted: u64,
    pub inserted_evicting: u64,
    pub updated: u64,
    pub skipped_busy: u64,
    pub lost: u64,
    pub wrong_values: u64,
    pub model_checked: u64,
}

/// See the module documentation.
pub struct Checker {
    records: HashMap<u64, Record>,
    next_seq: HashMap<(u16, u16), u64>,
    in_flight: HashMap<(u16, u16), VecDeque<u64>>,
    floors: HashMap<u64, u32>,
    finished_this_step: Vec<(u64, u32)>,
    /// (worker, incarnation, key) -> index of the worker's latest stored write of the key.
    own_last: HashMap<(u16, u16, u64), u64>,
    model: Option<SieveModel<u64, u64>>,
    pub stats: CheckStats,
}

impl Checker {
    /// `exact_capacity`: compare every result with a reference SIEVE of that capacity (only
    /// valid when requests run in a total order and nothing crashes).
    pub fn new(exact_capacity: Option<usize>) -> Checker {
        Checker {
            records: HashMap::new(),
            next_seq: HashMap::new(),
            in_flight: HashMap::new(),
            floors: HashMap::new(),
            finished_this_step: Vec::new(),
            own_last: HashMap::new(),
            model: exact_capacity.map(SieveModel::new),
            stats: CheckStats::default(),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.model.is_some()
    }

    /// Request `index` (trace key `key`) is sent to `worker`/`incarnation` at `step`.
    pub fn dispatch(&mut self, index: u64, key: u64, worker: u16, incarnation: u16, step: u32) {
        let seq = self.next_seq.entry((worker, incarnation)).or_insert(0);
        let record = Record {
            key,
            worker,
            incarnation,
            seq: *seq,
            dispatch_step: step,
            floor: self.floors.get(&key).copied(),
            state: State::InFlight,
        };
        *seq += 1;
        self.records.insert(index, record);
        self.in_flight
            .entry((worker, incarnation))
            .or_default()
            .push_back(index);
        self.stats.dispatched += 1;
    }

    /// A result reported by `worker`/`incarnation` during `step`. Returns every violation it
    /// shows (usually none).
    pub fn result(
        &mut self,
        worker: u16,
        incarnation: u16,
        step: u32,
        result: &RequestResult,
    ) -> Vec<Violation> {
        let index = result.index;
        let protocol = |message: String| {
            vec![Violation {
                kind: ViolationKind::Protocol,
                index,
                message,
            }]
        };
        let Some(record) = self.records.get(&index).copied() else {
            return protocol("result for a request that was never dispatched".into());
        };
        if (record.worker, record.incarnation) != (worker, incarnation) {
            return protocol(format!(
                "worker {worker}.{incarnation} answered a request sent to {}.{}",
                record.worker, record.incarnation
            ));
        }
        if record.state != State::InFlight {
            return protocol("second result for one request".into());
        }
        let queue = self.in_flight.entry((worker, incarnation)).or_default();
        if queue.front() != Some(&index) {
            return protocol(format!(
                "results out of dispatch order (expected {:?})",
                queue.front()
            ));
        }
        queue.pop_front();

        let mut violations = Vec::new();
        self.stats.results += 1;
        match &result.value {
            Some(bytes) => {
                self.stats.hits += 1;
                if let Err(v) = self.check_value(index, &record, bytes) {
                    self.stats.wrong_values += 1;
                    violations.push(v);
                }
            }
            None => self.stats.misses += 1,
        }
        match result.insert {
            InsertCode::Inserted => self.stats.inserted += 1,
            InsertCode::InsertedEvicting => self.stats.inserted_evicting += 1,
            InsertCode::Updated => self.stats.updated += 1,
            InsertCode::SkippedBusy => self.stats.skipped_busy += 1,
            InsertCode::SkippedCorrupt => violations.push(Violation {
                kind: ViolationKind::StoreCorrupt,
                index,
                message: "insert skipped: the store reset itself after corruption and still failed"
                    .into(),
            }),
            InsertCode::None | InsertCode::SkippedOversize | InsertCode::SkippedZeroTtl => {}
        }
        if let Some(v) = self.check_model(index, &record, result) {
            violations.push(v);
        }

        let stored = result.insert.stored();
        if let Some(r) = self.records.get_mut(&index) {
            r.state = State::Done {
                end_step: step,
                stored,
            };
        }
        if stored {
            self.finished_this_step
                .push((record.key, record.dispatch_step));
            self.own_last
                .insert((worker, incarnation, record.key), index);
        }
        violations
    }

    /// `worker`/`incarnation` was seen dead during `step`: its unanswered requests may or may
    /// not have written their values.
    pub fn worker_lost(&mut self, worker: u16, incarnation: u16, step: u32) {
        let lost = self
            .in_flight
            .remove(&(worker, incarnation))
            .unwrap_or_default();
        for index in lost {
            if let Some(r) = self.records.get_mut(&index) {
                r.state = State::Lost { end_step: step };
                self.stats.lost += 1;
                // Possibly stored: it may supersede older values, but only as a lower bound
                // that is never used to call a value stale (we do not know that it landed).
            }
        }
    }

    /// The barrier of `step` passed: writes finished during it precede later dispatches.
    pub fn end_step(&mut self, _step: u32) {
        for (key, dispatch_step) in self.finished_this_step.drain(..) {
            let floor = self.floors.entry(key).or_insert(dispatch_step);
            *floor = (*floor).max(dispatch_step);
        }
    }

    fn check_value(&self, index: u64, get: &Record, bytes: &[u8]) -> Result<(), Violation> {
        let fail = |kind: ViolationKind, message: String| Violation {
            kind,
            index,
            message: format!("get of key {}: {message}", get.key),
        };
        let id: ValueId = value::decode(bytes).map_err(|e| {
            fail(
                ViolationKind::Torn,
                format!(
                    "{e} ({} bytes: {})",
                    bytes.len(),
                    value::to_hex(&bytes[..bytes.len().min(32)])
                ),
            )
        })?;
        if id.key != get.key {
            return Err(fail(
                ViolationKind::Foreign,
                format!(
                    "returned the value of key {} (written by request {} of worker {}.{})",
                    id.key, id.index, id.worker, id.incarnation
                ),
            ));
        }
        let Some(write) = self.records.get(&id.index) else {
            return Err(fail(
                ViolationKind::Invented,
                format!(
                    "value names request {}, which was never dispatched",
                    id.index
                ),
            ));
        };
        if write.key != id.key
            || (write.worker, write.incarnation) != (id.worker, id.incarnation)
            || id.index == index
            || ((write.worker, write.incarnation) == (get.worker, get.incarnation)
                && write.seq > get.seq)
        {
            return Err(fail(
                ViolationKind::Invented,
                format!(
                    "value claims request {} by worker {}.{}, which is not a write this get could see",
                    id.index, id.worker, id.incarnation
                ),
            ));
        }
        if let State::Done { stored: false, .. } = write.state {
            return Err(fail(
                ViolationKind::NeverStored,
                format!(
                    "request {} reported its insert as skipped, yet its value was read",
                    id.index
                ),
            ));
        }
        if let Some(write_end) = write.end_step() {
            if let Some(floor) = get.floor {
                if write_end < floor {
                    return Err(fail(
                        ViolationKind::Stale,
                        format!(
                            "value of request {} (finished at step {write_end}) was overwritten by a write dispatched at step {floor} that finished before this get (dispatched at step {})",
                            id.index, get.dispatch_step
                        ),
                    ));
                }
            }
            if let Some(&own) = self.own_last.get(&(get.worker, get.incarnation, get.key)) {
                if own != id.index {
                    let own_record = &self.records[&own];
                    let superseded = if (write.worker, write.incarnation)
                        == (own_record.worker, own_record.incarnation)
                    {
                        write.seq < own_record.seq
                    } else {
                        write_end < own_record.dispatch_step
                    };
                    if superseded {
                        return Err(fail(
                            ViolationKind::Stale,
                            format!(
                                "value of request {} was overwritten by this worker's own earlier write (request {own})",
                                id.index
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_model(
        &mut self,
        index: u64,
        record: &Record,
        result: &RequestResult,
    ) -> Option<Violation> {
        let model = self.model.as_mut()?;
        self.stats.model_checked += 1;
        let expected = model.get(&record.key, 0);
        let got = result
            .value
            .as_deref()
            .map(|bytes| value::decode(bytes).map(|id| id.index).ok());
        let mismatch = match (expected, got) {
            (None, None) => None,
            (Some(want), Some(Some(have))) if want == have => None,
            (want, have) => Some(format!(
                "key {}: reference SIEVE has {}, store gave {}",
                record.key,
                want.map_or("a miss".to_owned(), |w| format!("the value of request {w}")),
                match have {
                    None => "a miss".to_owned(),
                    Some(Some(h)) => format!("the value of request {h}"),
                    Some(None) => "an undecodable value".to_owned(),
                }
            )),
        };
        if result.insert.stored() {
            model.insert(record.key, index, 0);
        } else if result.value.is_none() || result.insert != InsertCode::None {
            let skipped = Some(format!(
                "key {}: insert of a miss was not stored ({:?}) in a run without concurrency",
                record.key, result.insert
            ));
            if mismatch.is_none() {
                return skipped.map(|message| Violation {
                    kind: ViolationKind::ModelMismatch,
                    index,
                    message,
                });
            }
        }
        mismatch.map(|message| Violation {
            kind: ViolationKind::ModelMismatch,
            index,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp::value::encode;

    fn hit(index: u64, id: ValueId) -> RequestResult {
        RequestResult {
            index,
            value: Some(encode(&id)),
            insert: InsertCode::None,
            done_ns: 0,
            op_ns: 0,
        }
    }

    fn miss(index: u64, insert: InsertCode) -> RequestResult {
        RequestResult {
            index,
            value: None,
            insert,
            done_ns: 0,
            op_ns: 0,
        }
    }

    fn id(key: u64, worker: u16, index: u64) -> ValueId {
        ValueId {
            key,
            worker,
            incarnation: 0,
            index,
        }
    }

    fn kinds(v: &[Violation]) -> Vec<ViolationKind> {
        v.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn correct_values_pass_and_wrong_ones_are_caught() {
        let mut c = Checker::new(None);
        // Step 0: worker 0 misses key 5 and stores request 0's value.
        c.dispatch(0, 5, 0, 0, 0);
        assert!(c.result(0, 0, 0, &miss(0, InsertCode::Inserted)).is_empty());
        c.end_step(0);
        // Step 1: worker 1 hits key 5 with request 0's value: fine.
        c.dispatch(1, 5, 1, 0, 1);
        assert!(c.result(1, 0, 1, &hit(1, id(5, 0, 0))).is_empty());
        // Foreign: key 6's value for key 5.
        c.dispatch(2, 5, 1, 0, 1);
        assert_eq!(
            kinds(&c.result(1, 0, 1, &hit(2, id(6, 0, 0)))),
            vec![ViolationKind::Foreign]
        );
        // Invented: a request that never existed, or claims the wrong worker.
        c.dispatch(3, 5, 1, 0, 1);
        assert_eq!(
            kinds(&c.result(1, 0, 1, &hit(3, id(5, 0, 77)))),
            vec![ViolationKind::Invented]
        );
        c.dispatch(4, 5, 1, 0, 1);
        assert_eq!(
            kinds(&c.result(1, 0, 1, &hit(4, id(5, 3, 0)))),
            vec![ViolationKind::Invented]
        );
        // Torn: a corrupted byte.
        c.dispatch(5, 5, 1, 0, 1);
        let mut torn = hit(5, id(5, 0, 0));
        if let Some(v) = torn.value.as_mut() {
            v[30] ^= 1;
        }
        assert_eq!(kinds(&c.result(1, 0, 1, &torn)), vec![ViolationKind::Torn]);
        assert_eq!(c.stats.wrong_values, 4);
    }

    #[test]
    fn skipped_writes_and_stale_values_are_caught() {
        let mut c = Checker::new(None);
        c.dispatch(0, 9, 0, 0, 0);
        c.result(0, 0, 0, &miss(0, InsertCode::Inserted));
        c.dispatch(1, 9, 1, 0, 0);
        c.result(1, 0, 0, &miss(1, InsertCode::SkippedBusy));
        c.end_step(0);
        // Request 1's insert was skipped: its value can never be read.
        c.dispatch(2, 9, 0, 0, 1);
        assert_eq!(
            kinds(&c.result(0, 0, 1, &hit(2, id(9, 1, 1)))),
            vec![ViolationKind::NeverStored]
        );
        // Step 2: worker 1 overwrites key 9 (forced write, request 3).
        c.end_step(1);
        c.dispatch(3, 9, 1, 0, 2);
        let forced = RequestResult {
            index: 3,
            value: Some(encode(&id(9, 0, 0))),
            insert: InsertCode::Updated,
            done_ns: 0,
            op_ns: 0,
        };
        assert!(c.result(1, 0, 2, &forced).is_empty());
        c.end_step(2);
        // Step 3: request 0's value (finished at step 0, overwritten at step 2) is stale.
        c.dispatch(4, 9, 2, 0, 3);
        assert_eq!(
            kinds(&c.result(2, 0, 3, &hit(4, id(9, 0, 0)))),
            vec![ViolationKind::Stale]
        );
        // Request 3's value is current.
        c.dispatch(5, 9, 2, 0, 3);
        assert!(c.result(2, 0, 3, &hit(5, id(9, 1, 3))).is_empty());
    }

    #[test]
    fn concurrent_and_lost_writes_are_allowed() {
        let mut c = Checker::new(None);
        // Same step: worker 0 writes key 1 while worker 1 reads it: either value is fine.
        c.dispatch(0, 1, 0, 0, 0);
        c.dispatch(1, 1, 1, 0, 0);
        c.dispatch(2, 1, 1, 0, 0);
        assert!(c.result(1, 0, 0, &miss(1, InsertCode::Inserted)).is_empty());
        assert!(c.result(0, 0, 0, &hit(0, id(1, 1, 1))).is_empty());
        assert!(c.result(1, 0, 0, &hit(2, id(1, 1, 1))).is_empty());
        // Worker 2 dies with request 3 in flight: its value may show up later.
        c.dispatch(3, 1, 2, 0, 0);
        c.worker_lost(2, 0, 0);
        c.end_step(0);
        c.dispatch(4, 1, 0, 0, 1);
        assert!(c.result(0, 0, 1, &hit(4, id(1, 2, 3))).is_empty());
        assert_eq!(c.stats.lost, 1);
        // A result from a dead incarnation or twice is a protocol error.
        assert_eq!(
            kinds(&c.result(2, 0, 1, &miss(3, InsertCode::None))),
            vec![ViolationKind::Protocol]
        );
        assert_eq!(
            kinds(&c.result(0, 0, 1, &miss(4, InsertCode::None))),
            vec![ViolationKind::Protocol]
        );
    }

    #[test]
    fn exact_mode_compares_with_the_reference_sieve() {
        let mut c = Checker::new(Some(2));
        let mut step = 0;
        let mut run = |c: &mut Checker, index: u64, key: u64, result: RequestResult| {
            c.dispatch(index, key, 0, 0, step);
            let v = c.result(0, 0, step, &result);
            c.end_step(step);
            step += 1;
            v
        };
        assert!(run(&mut c, 0, 1, miss(0, InsertCode::Inserted)).is_empty());
        assert!(run(&mut c, 1, 2, miss(1, InsertCode::Inserted)).is_empty());
        assert!(run(&mut c, 2, 1, hit(2, id(1, 0, 0))).is_empty());
        // Capacity 2: key 3 evicts key 2 (key 1 was visited).
        assert!(run(&mut c, 3, 3, miss(3, InsertCode::InsertedEvicting)).is_empty());
        // A miss on key 1 where the model hits is a mismatch even though a miss is "allowed".
        assert_eq!(
            kinds(&run(&mut c, 4, 1, miss(4, InsertCode::Updated))),
            vec![ViolationKind::ModelMismatch]
        );
        assert_eq!(c.stats.model_checked, 5);
    }
}
