//! One step of the plan: restarts and resumes, dispatch of the batches with their planned
//! faults, the barrier, the recovery probe after a kill and the checkpoint validation.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use warp_cache_core::clock::monotonic_now_ns;

use super::{Driver, Expect, Outstanding, Slot};
use crate::mp::checker::{Violation, ViolationKind};
use crate::mp::faults::FaultKind;
use crate::mp::os::{self, Signal};
use crate::mp::outcome::{Failure, FailureKind, Recovery};
use crate::mp::protocol::{Command, Mode};
use crate::mp::scheduler::Step;

/// A stopped worker stays stopped at least this long (so others meet its held lock).
const STALL_MIN: Duration = Duration::from_millis(20);

impl Driver<'_> {
    pub(super) fn run_step(&mut self, step: &Step) -> Result<(), Failure> {
        if !step.restarts.is_empty() {
            self.spawn(&step.restarts)?;
        }
        if let Some(worker) = step.resume {
            self.resume(worker)?;
        }
        for slot in &mut self.slots {
            slot.expect = Expect::Nothing;
        }
        self.probe_index = None;
        self.probe_result = None;
        if let Some(fault) = step.fault {
            self.current_fault = Some(fault.kind);
        }

        let step_number = self.step as u32;
        if step.probe {
            self.probe_index = step.batches.first().map(|b| b.start as u64);
            self.probe_sent_ns = monotonic_now_ns();
        }
        for batch in &step.batches {
            let worker = batch.worker;
            let incarnation = self.slots[worker as usize].incarnation;
            let mut commands = Vec::with_capacity(batch.len + 1);
            for offset in 0..batch.len {
                let index = batch.start + offset;
                let key = self.keys[index];
                let mode = match batch.forced_at(offset) {
                    None => Mode::ReadThrough,
                    Some(forced) if !forced.retry => Mode::Update,
                    Some(forced) => Mode::Forced(
                        forced
                            .fault
                            .and_then(|kind| kind.failpoint())
                            .map(str::to_owned),
                    ),
                };
                self.checker
                    .dispatch(index as u64, key, worker, incarnation, step_number);
                commands.push(Command::Request {
                    index: index as u64,
                    key,
                    mode,
                });
            }
            commands.push(Command::EndBatch {
                step: self.step as u64,
            });
            let slot = &mut self.slots[worker as usize];
            slot.outstanding = Some(Outstanding {
                step: self.step,
                len: batch.len,
                reported: 0,
                done: false,
            });
            slot.last_progress = Instant::now();
            if let Some(fault) = step.fault.filter(|f| f.worker == worker) {
                let index = (batch.start + fault.after) as u64;
                slot.expect = match fault.kind {
                    FaultKind::KillAsync => Expect::Async {
                        kill: true,
                        after: fault.after,
                        delivered: false,
                    },
                    FaultKind::StopAsync => Expect::Async {
                        kill: false,
                        after: fault.after,
                        delivered: false,
                    },
                    kind if kind.kills() => Expect::FailpointDeath { index },
                    _ => Expect::FailpointStop { index },
                };
            }
            self.send(worker, &commands);
            self.maybe_deliver(worker)?;
        }

        while self.slots.iter().any(Slot::busy) {
            self.pump()?;
        }
        for slot in &mut self.slots {
            if slot.outstanding.as_ref().is_some_and(|o| o.done) {
                slot.outstanding = None;
            }
        }
        self.checker.end_step(step_number);

        if step.probe {
            self.check_probe()?;
        }
        if step.checkpoint {
            self.timing.validations += 1;
            if let Err(message) = self.store.validate() {
                self.note_violation(Violation {
                    kind: ViolationKind::Validation,
                    index: step.batches.last().map_or(0, |b| (b.start + b.len) as u64),
                    message: format!("at the checkpoint of step {}: {message}", self.step),
                });
            }
        }
        Ok(())
    }

    fn resume(&mut self, worker: u16) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let (Some(proc), Some(since)) = (slot.proc.as_ref(), slot.stalled_since) else {
            return Err(self.fail(
                FailureKind::Harness,
                format!("worker {worker} should be stopped, but is not"),
            ));
        };
        let elapsed = since.elapsed();
        if elapsed < STALL_MIN {
            std::thread::sleep(STALL_MIN - elapsed);
        }
        let pid = proc.pid;
        if let Err(e) = os::send_signal(pid, Signal::Cont) {
            return Err(self.fail(
                FailureKind::Harness,
                format!("cannot SIGCONT worker {worker}: {e}"),
            ));
        }
        let slot = &mut self.slots[worker as usize];
        slot.stalled_since = None;
        slot.last_progress = Instant::now();
        Ok(())
    }

    /// After a kill, the next write must succeed within the bound (INV-8: a waiter takes a
    /// dead owner's lock over and repairs the table in bounded time).
    fn check_probe(&mut self) -> Result<(), Failure> {
        let Some((death_ns, fault)) = self.last_death.take() else {
            return Err(self.fail(
                FailureKind::Harness,
                "a probe step without a preceding kill",
            ));
        };
        let Some(result) = self.probe_result.take() else {
            return Err(self.fail(FailureKind::Harness, "the probe request gave no result"));
        };
        let bound_ns = self.options.recovery_bound.as_nanos() as u64;
        let recovery_ns = result
            .done_ns
            .saturating_sub(self.probe_sent_ns.max(death_ns));
        let since_crash_ns = result.done_ns.saturating_sub(death_ns);
        if !result.insert.stored() {
            return Err(self.fail(
                FailureKind::Liveness,
                format!(
                    "after {fault}, a forced write could not store for {:.1} ms ({:?})",
                    result.op_ns as f64 / 1e6,
                    result.insert
                ),
            ));
        }
        if recovery_ns > bound_ns {
            return Err(self.fail(
                FailureKind::Liveness,
                format!(
                    "after {fault}, the first write took {:.1} ms to complete (bound {} ms)",
                    recovery_ns as f64 / 1e6,
                    self.options.recovery_bound.as_millis()
                ),
            ));
        }
        self.timing.recoveries.push(Recovery {
            fault,
            recovery_ns,
            since_crash_ns,
            probe_op_ns: result.op_ns,
        });
        Ok(())
    }
}
