//! The deterministic schedule of a multi-process replay: a pure function of the seed and the
//! options ([`plan`]). The driver only executes it, so the same seed and binary give the
//! same schedule (and [`Plan::digest`] proves it in reports).
//!
//! The trace prefix `0..ops` is cut into *steps*. In each step a seed-chosen subset of the
//! live, running workers (exactly one with `serial`) receives consecutive slices of the trace
//! (one *batch* each, 1..=`batch_max` requests); the workers run their batches concurrently
//! and the step ends at a barrier where every batch has been answered (or its worker was
//! killed or stopped as planned).
//!
//! Faults (with `faults`): at most one at a time. A fault starts at a seed-chosen step, hits
//! one of that step's batches, and ends when its worker is restarted (kill) or resumed
//! (stop). Right after a kill, the next step's first request is a *probe*: a forced write by
//! a live worker that must succeed within the recovery bound (lock takeover, table repair),
//! followed by a validation checkpoint. Rules that keep faults deterministic:
//! * no fault while a worker is stopped or dead (a forced write always gets the lock
//!   eventually, so its failpoint is always reached);
//! * a single worker (K = 1) that is killed is restarted in the very next step.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::FaultKind;
use super::value::fnv64;

/// Default largest batch.
pub const BATCH_MAX_DEFAULT: usize = 32;
/// A validation checkpoint at least every this many steps (when nothing is stalled).
pub const CHECKPOINT_EVERY_STEPS: usize = 32;

/// What to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSpec {
    pub seed: u64,
    /// Requests to replay (a prefix of the trace).
    pub ops: usize,
    pub workers: u16,
    pub faults: bool,
    /// One worker per step: a total order of requests (the exact model check runs then).
    pub serial: bool,
    pub batch_max: usize,
    /// Probability that a request is a forced write (an update even on a hit).
    pub write_fraction: f64,
}

/// A forced write inside a batch: an insert even on a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forced {
    /// Position in the batch.
    pub offset: usize,
    /// The failpoint fault armed for its insert, if any.
    pub fault: Option<FaultKind>,
    /// Retried while the lock is busy, so that it surely reaches the write path (failpoint
    /// faults and probes; only planned while no worker is stopped). A plain update
    /// (`--write-fraction`) is not retried: it may be skipped while a stopped worker holds the
    /// lock.
    pub retry: bool,
}

/// One worker's slice of the trace in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub worker: u16,
    /// Trace positions `start..start + len`.
    pub start: usize,
    pub len: usize,
    pub forced: Vec<Forced>,
}

impl Batch {
    /// The forced write at `offset`, if any.
    pub fn forced_at(&self, offset: usize) -> Option<Forced> {
        self.forced.iter().copied().find(|f| f.offset == offset)
    }
}

/// The fault of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub worker: u16,
    /// Failpoint kinds: offset of the forced write in the batch. Async kinds: the signal is
    /// sent once the worker has reported this many results of its batch.
    pub after: usize,
    /// Step at which the worker is restarted (kill) or resumed (stop).
    pub until_step: usize,
}

/// One step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Killed workers started again (new process) before the batches are sent.
    pub restarts: Vec<u16>,
    /// A stopped worker continued (SIGCONT) before the batches are sent; it finishes its old
    /// batch in this step and gets no new one.
    pub resume: Option<u16>,
    pub batches: Vec<Batch>,
    pub fault: Option<Fault>,
    /// The first request of the first batch is a probe after a kill (recovery timing).
    pub probe: bool,
    /// Validate the store at the barrier.
    pub checkpoint: bool,
}

/// A whole schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub spec: PlanSpec,
    pub steps: Vec<Step>,
}

impl Plan {
    /// FNV-1a of the schedule's debug text: equal digests, equal schedules.
    pub fn digest(&self) -> u64 {
        let mut text = String::new();
        let _ = write!(text, "{:?}", self);
        fnv64(text.as_bytes())
    }

    /// Number of faults of each kind, in [`FaultKind::ALL`] order.
    pub fn fault_counts(&self) -> Vec<(FaultKind, usize)> {
        FaultKind::ALL
            .iter()
            .map(|&kind| {
                let count = self
                    .steps
                    .iter()
                    .filter(|s| s.fault.is_some_and(|f| f.kind == kind))
                    .count();
                (kind, count)
            })
            .collect()
    }

    pub fn restarts(&self) -> usize {
        self.steps.iter().map(|s| s.restarts.len()).sum()
    }

    pub fn checkpoints(&self) -> usize {
        self.steps.iter().filter(|s| s.checkpoint).count()
    }

    /// Requests planned to be dropped: the rest of a batch after a failpoint kill (the worker
    /// is dead before reaching them).
    pub fn dropped_requests(&self) -> usize {
        self.steps
            .iter()
            .filter_map(|step| {
                let fault = step.fault?;
                if !fault.kind.kills() || fault.kind.is_async() {
                    return None;
                }
                let batch = step.batches.iter().find(|b| b.worker == fault.worker)?;
                Some(batch.len - fault.after - 1)
            })
            .sum()
    }
}

/// Builds the schedule for `spec`.
pub fn plan(spec: &PlanSpec) -> Plan {
    assert!(spec.workers >= 1, "at least one worker");
    let batch_max = spec.batch_max.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5157_4d50_4c41_4e31);
    let workers = spec.workers;
    let mut steps: Vec<Step> = Vec::new();
    let mut position = 0usize;
    // (worker, restart step)
    let mut dead: Vec<(u16, usize)> = Vec::new();
    // (worker, resume step)
    let mut stalled: Option<(u16, usize)> = None;
    let mut next_fault_step = rng.gen_range(2..8usize);
    let mut probe_next = false;
    let mut since_checkpoint = 0usize;

    while position < spec.ops {
        let index = steps.len();
        let mut step = Step::default();
        dead.retain(|&(worker, at)| {
            if at <= index {
                step.restarts.push(worker);
                false
            } else {
                true
            }
        });
        step.restarts.sort_unstable();
        if let Some((worker, at)) = stalled {
            if at <= index {
                step.resume = Some(worker);
                stalled = None;
            }
        }
        let available: Vec<u16> = (0..workers)
            .filter(|w| {
                !dead.iter().any(|(d, _)| d == w)
                    && stalled.is_none_or(|(s, _)| s != *w)
                    && step.resume != Some(*w)
            })
            .collect();
        let chosen: Vec<u16> = if available.is_empty() {
            Vec::new()
        } else if spec.serial {
            vec![available[rng.gen_range(0..available.len())]]
        } else {
            let mut chosen: Vec<u16> = available
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.75))
                .collect();
            if chosen.is_empty() {
                chosen.push(available[rng.gen_range(0..available.len())]);
            }
            chosen
        };
        for worker in chosen {
            let remaining = spec.ops - position;
            if remaining == 0 {
                break;
            }
            let len = rng.gen_range(1..=batch_max).min(remaining);
            let forced = if spec.write_fraction > 0.0 {
                let p = spec.write_fraction.min(1.0);
                (0..len)
                    .filter(|_| rng.gen_bool(p))
                    .map(|offset| Forced {
                        offset,
                        fault: None,
                        retry: false,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            step.batches.push(Batch {
                worker,
                start: position,
                len,
                forced,
            });
            position += len;
        }

        if probe_next && !step.batches.is_empty() {
            let batch = &mut step.batches[0];
            batch.forced.retain(|f| f.offset != 0);
            batch.forced.insert(
                0,
                Forced {
                    offset: 0,
                    fault: None,
                    retry: true,
                },
            );
            step.probe = true;
            step.checkpoint = true;
            probe_next = false;
        }

        // `position < ops`: a kill needs a later request for its probe.
        let quiet =
            stalled.is_none() && dead.is_empty() && step.resume.is_none() && position < spec.ops;
        if spec.faults
            && index >= next_fault_step
            && quiet
            && !step.probe
            && !step.batches.is_empty()
        {
            let kind = FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())];
            let target = rng.gen_range(0..step.batches.len());
            let batch = &mut step.batches[target];
            let after = if kind.is_async() {
                rng.gen_range(0..=batch.len)
            } else {
                let offset = rng.gen_range(0..batch.len);
                batch.forced.retain(|f| f.offset != offset);
                batch.forced.push(Forced {
                    offset,
                    fault: Some(kind),
                    retry: true,
                });
                offset
            };
            let until_step = if kind.kills() {
                let delay = if workers == 1 {
                    0
                } else {
                    rng.gen_range(0..=2)
                };
                let at = index + 1 + delay;
                dead.push((batch.worker, at));
                probe_next = true;
                at
            } else {
                let at = index + 1 + rng.gen_range(0..=3);
                stalled = Some((batch.worker, at));
                at
            };
            step.fault = Some(Fault {
                kind,
                worker: batch.worker,
                after,
                until_step,
            });
            next_fault_step = until_step + 1 + rng.gen_range(1..=6);
        }

        since_checkpoint += 1;
        if !step.checkpoint
            && since_checkpoint >= CHECKPOINT_EVERY_STEPS
            && step.fault.is_none()
            && stalled.is_none()
        {
            step.checkpoint = true;
        }
        if step.checkpoint {
            since_checkpoint = 0;
        }
        steps.push(step);
    }

    // Drain: resume a stalled worker, restart the dead (so their files are opened once more),
    // and validate at the end.
    let mut last = Step {
        checkpoint: true,
        ..Step::default()
    };
    if let Some((worker, _)) = stalled {
        last.resume = Some(worker);
    }
    last.restarts = dead.iter().map(|&(w, _)| w).collect();
    last.restarts.sort_unstable();
    steps.push(last);

    Plan {
        spec: spec.clone(),
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, workers: u16, faults: bool, serial: bool) -> PlanSpec {
        PlanSpec {
            seed,
            ops: 5_000,
            workers,
            faults,
            serial,
            batch_max: BATCH_MAX_DEFAULT,
            write_fraction: if seed % 2 == 0 { 0.0 } else { 0.2 },
        }
    }

    #[test]
    fn same_seed_same_plan_other_seed_other_plan() {
        let a = plan(&spec(7, 4, true, false));
        let b = plan(&spec(7, 4, true, false));
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        let c = plan(&spec(8, 4, true, false));
        assert_ne!(a.digest(), c.digest());
    }

    /// Every request is dispatched exactly once, in trace order, to a worker that is alive
    /// and not stopped; faults never overlap; every kill is followed by a probe.
    #[test]
    fn plans_cover_the_trace_and_respect_fault_rules() {
        for seed in 0..40 {
            for (workers, serial) in [(1, false), (2, false), (4, false), (3, true)] {
                let plan = plan(&spec(seed, workers, true, serial));
                let mut next = 0;
                let mut dead = vec![false; workers as usize];
                let mut stopped: Option<u16> = None;
                let mut fault_open = false;
                let mut expect_probe = false;
                for (i, step) in plan.steps.iter().enumerate() {
                    for &w in &step.restarts {
                        assert!(
                            dead[w as usize],
                            "seed {seed} step {i}: restart of a live worker"
                        );
                        dead[w as usize] = false;
                    }
                    if let Some(w) = step.resume {
                        assert_eq!(stopped, Some(w));
                        stopped = None;
                    }
                    if !dead.iter().any(|&d| d) && stopped.is_none() {
                        fault_open = false;
                    }
                    if serial {
                        assert!(step.batches.len() <= 1);
                    }
                    if expect_probe && !step.batches.is_empty() {
                        assert!(step.probe && step.checkpoint, "seed {seed} step {i}");
                        let probe = step.batches[0].forced_at(0).unwrap();
                        assert!(probe.fault.is_none() && probe.retry);
                        expect_probe = false;
                    }
                    for batch in &step.batches {
                        assert_eq!(batch.start, next, "seed {seed} step {i}");
                        assert!(batch.len >= 1 && batch.len <= BATCH_MAX_DEFAULT);
                        next += batch.len;
                        assert!(!dead[batch.worker as usize]);
                        assert_ne!(stopped, Some(batch.worker));
                        assert_ne!(step.resume, Some(batch.worker));
                    }
                    if let Some(fault) = step.fault {
                        assert!(!fault_open, "seed {seed} step {i}: overlapping faults");
                        fault_open = true;
                        assert!(fault.until_step > i);
                        let batch = step
                            .batches
                            .iter()
                            .find(|b| b.worker == fault.worker)
                            .unwrap();
                        let failpoints = batch.forced.iter().filter(|f| f.fault.is_some()).count();
                        assert_eq!(failpoints, usize::from(!fault.kind.is_async()));
                        if fault.kind.is_async() {
                            assert!(fault.after <= batch.len);
                        } else {
                            assert_eq!(
                                batch.forced_at(fault.after).unwrap().fault,
                                Some(fault.kind)
                            );
                        }
                        if fault.kind.kills() {
                            dead[fault.worker as usize] = true;
                            expect_probe = true;
                            if workers == 1 {
                                assert_eq!(fault.until_step, i + 1);
                            }
                        } else {
                            stopped = Some(fault.worker);
                        }
                    }
                    if stopped.is_some() {
                        let retried = step
                            .batches
                            .iter()
                            .flat_map(|b| &b.forced)
                            .filter(|f| f.retry);
                        // A stopped worker may hold the lock: nothing may wait for it, except
                        // the fault of this very step (planned before the stop).
                        assert!(
                            retried.count() <= usize::from(step.fault.is_some()),
                            "seed {seed} step {i}"
                        );
                    }
                    if step.checkpoint {
                        assert!(
                            stopped.is_none(),
                            "seed {seed} step {i}: checkpoint while stopped"
                        );
                    }
                }
                assert_eq!(next, 5_000);
                assert!(plan.steps.last().unwrap().checkpoint);
                assert!(stopped.is_none() && !dead.iter().any(|&d| d), "drained");
            }
        }
    }

    #[test]
    fn faults_of_every_kind_are_planned_over_many_seeds() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..30 {
            let plan = plan(&spec(seed, 4, true, false));
            for (kind, count) in plan.fault_counts() {
                if count > 0 {
                    seen.insert(kind);
                }
            }
        }
        assert_eq!(seen.len(), FaultKind::ALL.len());
        let quiet = plan(&spec(1, 4, false, false));
        assert!(quiet.steps.iter().all(|s| s.fault.is_none() && !s.probe));
        assert_eq!(quiet.dropped_requests(), 0);
    }
}
