//! Multi-process replay: `sim --workers K --seed N [--faults]` replays a
//! trace with K worker processes sharing one real shared-memory store
//! (`warp_cache_core::shm::ShmStore` files in a per-run directory), under a schedule that is a
//! pure function of the seed, with optional fault injection (SIGKILL at failpoints inside the
//! write path, SIGSTOP/SIGCONT stalls, restarts), a checker that verifies every result, store
//! validation at checkpoints and a watchdog.
//!
//! | module      | what                                                                 |
//! |-------------|----------------------------------------------------------------------|
//! | `scheduler` | the deterministic plan: steps, batches, faults, probes, checkpoints  |
//! | `options`   | the options of a run and how workers are started                     |
//! | `driver`    | the parent: processes, dispatch, barriers, faults, watchdog          |
//! | `outcome`   | what a run produced: the report's figures, failures, timing          |
//! | `report_text` | the report of a run and the one-line summary of `--seeds`          |
//! | `worker`    | the worker process: executes requests against the real store         |
//! | `checker`   | decides whether each result is one the store may give                |
//! | `faults`    | the fault kinds and their failpoints                                 |
//! | `protocol`  | the parent <-> worker line protocol                                  |
//! | `value`     | self-checking values (key, writer, request, checksum)                |
//! | `pidns`     | `--pid-ns`: every worker in a PID namespace of its own                |
//! | `os`        | SIGSTOP/SIGCONT, /proc process state, namespace primitives (the crate's only `unsafe`) |
//!
//! Workers are this executable started again with `WARP_SIM_WORKER` set: any binary that
//! launches runs must call [`worker::run_if_requested`] first thing in `main` (`sim` does in
//! `sim::cli::main`; the `sim_mp` test binary does in its own `main`).

pub mod checker;
pub mod driver;
pub mod faults;
pub mod options;
#[allow(unsafe_code)]
pub mod os;
pub mod outcome;
pub mod pidns;
pub mod protocol;
pub mod report_text;
pub mod scheduler;
pub mod value;
pub mod worker;

pub use driver::run;
pub use options::{Launcher, MpOptions};
pub use outcome::{Failure, FailureKind, MpReport};
pub use report_text::{format_report, summary_line, TIMING_HEADER};
