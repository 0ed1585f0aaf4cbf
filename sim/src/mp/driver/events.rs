//! The workers' replies (ready, results fed to the checker, batch ends, fatal errors) and,
//! between them, the detection of stopped workers and the watchdog.
#![forbid(unsafe_code)]

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::{Driver, Event, Expect, TICK};
use crate::mp::checker::{Violation, ViolationKind};
use crate::mp::os::{self, ProcState, Signal};
use crate::mp::outcome::{Failure, FailureKind};
use crate::mp::protocol::Reply;

/// A busy worker silent this long is checked for an unplanned stop.
const UNPLANNED_STOP_CHECK: Duration = Duration::from_millis(50);
/// Correctness violations kept for the report (all are counted).
const VIOLATIONS_KEPT: usize = 10;

impl Driver<'_> {
    /// Waits for one event (or a tick), handles it, then runs the stop detection and the
    /// watchdog.
    pub(super) fn pump(&mut self) -> Result<(), Failure> {
        match self.rx.recv_timeout(TICK) {
            Ok(event) => self.handle(event)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.fail(FailureKind::Harness, "event channel closed"))
            }
        }
        self.tick()
    }

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Line {
                worker,
                incarnation,
                line,
            } => {
                if self.slots[worker as usize].incarnation != incarnation {
                    return Ok(());
                }
                let reply = Reply::parse(&line)
                    .map_err(|e| self.fail(FailureKind::Crash, format!("worker {worker}: {e}")))?;
                self.handle_reply(worker, incarnation, reply)
            }
            Event::Eof {
                worker,
                incarnation,
                at_ns,
            } => {
                if self.slots[worker as usize].incarnation != incarnation
                    || !self.slots[worker as usize].alive()
                {
                    return Ok(());
                }
                self.handle_death(worker, incarnation, at_ns)
            }
        }
    }

    fn handle_reply(&mut self, worker: u16, incarnation: u16, reply: Reply) -> Result<(), Failure> {
        let step = self.step;
        match reply {
            Reply::Ready { .. } => {
                let slot = &mut self.slots[worker as usize];
                if slot.ready {
                    return Err(self.fail(
                        FailureKind::Crash,
                        format!("worker {worker} said ready twice"),
                    ));
                }
                slot.ready = true;
                slot.last_progress = Instant::now();
            }
            Reply::Fatal(message) => {
                return Err(self.fail(
                    FailureKind::Crash,
                    format!("worker {worker}.{incarnation} failed: {message}"),
                ));
            }
            Reply::Done { step: done_step } => {
                let slot = &mut self.slots[worker as usize];
                let Some(outstanding) = slot.outstanding.as_mut() else {
                    return Err(Failure::new(
                        FailureKind::Crash,
                        Some(step),
                        format!("worker {worker}: batch end without a batch"),
                    ));
                };
                if outstanding.step as u64 != done_step || outstanding.reported != outstanding.len {
                    return Err(Failure::new(
                        FailureKind::Crash,
                        Some(step),
                        format!(
                            "worker {worker}: end of batch {done_step} after {} of {} results (batch of step {})",
                            outstanding.reported, outstanding.len, outstanding.step
                        ),
                    ));
                }
                outstanding.done = true;
                slot.last_progress = Instant::now();
                if let Expect::FailpointDeath { index } | Expect::FailpointStop { index } =
                    slot.expect
                {
                    return Err(Failure::new(
                        FailureKind::Harness,
                        Some(step),
                        format!("worker {worker} finished its batch without reaching the failpoint of request {index}"),
                    ));
                }
            }
            Reply::Result(result) => {
                let slot = &mut self.slots[worker as usize];
                let Some(outstanding) = slot.outstanding.as_mut() else {
                    return Err(self.fail(
                        FailureKind::Crash,
                        format!("worker {worker}: result without a batch"),
                    ));
                };
                outstanding.reported += 1;
                slot.last_progress = Instant::now();
                if let Expect::FailpointDeath { index } | Expect::FailpointStop { index } =
                    slot.expect
                {
                    if index == result.index {
                        return Err(self.fail(
                            FailureKind::Harness,
                            format!(
                                "the failpoint of request {index} was not reached (insert outcome {:?}); is sim built with its `faults` feature?",
                                result.insert
                            ),
                        ));
                    }
                }
                self.timing.max_op_ns = self.timing.max_op_ns.max(result.op_ns);
                if self.probe_index == Some(result.index) {
                    self.probe_result = Some(result.clone());
                }
                let violations = self
                    .checker
                    .result(worker, incarnation, step as u32, &result);
                for violation in violations {
                    if violation.kind == ViolationKind::Protocol {
                        return Err(self.fail(
                            FailureKind::Crash,
                            format!("worker {worker}.{incarnation}: {violation}"),
                        ));
                    }
                    self.note_violation(violation);
                }
                self.maybe_deliver(worker)?;
            }
        }
        Ok(())
    }

    pub(super) fn note_violation(&mut self, violation: Violation) {
        match violation.kind {
            kind if kind.is_wrong_value() => self.wrong_values += 1,
            ViolationKind::Validation => self.validation_failures += 1,
            _ => self.model_mismatches += 1,
        }
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(violation);
        }
    }

    fn tick(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let Some(proc) = slot.proc.as_ref() else {
                continue;
            };
            if slot.stalled_since.is_some() {
                continue;
            }
            let expect_stop = matches!(
                slot.expect,
                Expect::FailpointStop { .. }
                    | Expect::Async {
                        kill: false,
                        delivered: true,
                        ..
                    }
            );
            if expect_stop && os::process_state(proc.pid) == ProcState::Stopped {
                slot.stopped_at = match slot.expect {
                    Expect::FailpointStop { index } => Some(index),
                    _ => None,
                };
                slot.stalled_since = Some(now);
                slot.expect = Expect::Nothing;
                self.timing.stops_observed += 1;
                continue;
            }
            if !expect_stop
                && slot.busy()
                && now.duration_since(slot.last_progress) > UNPLANNED_STOP_CHECK
                && os::process_state(proc.pid) == ProcState::Stopped
            {
                // A stop failpoint hit a second time within one insert: the store ran the
                // write section's body again after finding corruption under the writer lock,
                // i.e. another writer changed the data while this one held the lock (nothing
                // else corrupts the files of a replay). A correctness violation; resume the
                // worker at once so that the run goes on.
                let pid = proc.pid;
                let at = slot.stopped_at;
                slot.last_progress = now;
                self.timing.unplanned_stops += 1;
                if let Err(e) = os::send_signal(pid, Signal::Cont) {
                    return Err(self.fail(
                        FailureKind::Harness,
                        format!("cannot SIGCONT worker {index} after an unplanned stop: {e}"),
                    ));
                }
                self.note_violation(Violation {
                    kind: ViolationKind::StoreCorrupt,
                    index: at.unwrap_or(0),
                    message: format!(
                        "worker {index} stopped at its stop failpoint a second time in one insert (request {}): the write ran again after finding corruption under the writer lock",
                        at.map_or_else(|| "unknown".to_owned(), |i| i.to_string())
                    ),
                });
                continue;
            }
            if slot.busy() && now.duration_since(slot.last_progress) > self.options.watchdog {
                let what = match (&slot.outstanding, slot.ready) {
                    (_, false) => "starting (no ready line)".to_owned(),
                    (Some(o), true) if !o.done => {
                        format!("{} of {} requests of its batch answered", o.reported, o.len)
                    }
                    _ => format!("waiting for a planned fault ({:?})", slot.expect),
                };
                let message = format!(
                    "worker {index}.{} made no progress for {} ms: {what}",
                    slot.incarnation,
                    self.options.watchdog.as_millis()
                );
                return Err(self.fail(FailureKind::Liveness, message));
            }
        }
        Ok(())
    }
}
