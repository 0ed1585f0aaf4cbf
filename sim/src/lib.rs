//! warp_cache's simulator: trace readers ([`trace`]), a seeded trace
//! generator ([`gen`]), the policies compared in reports ([`policies`]: production SIEVE of
//! both backends, reference SIEVE, LRU, FIFO, Belady's optimal), hit-rate reports as a table,
//! JSON or SVG ([`report`]), the multi-process replay with fault injection ([`mp`]) and the
//! `sim` command line ([`cli`]).
//!
//! `unsafe` is denied crate-wide and forbidden in every module except `mp::os` (SIGSTOP /
//! SIGCONT to workers through `libc::kill`; the PID-namespace primitives of `--pid-ns`).
#![deny(unsafe_code)]

#[forbid(unsafe_code)]
pub mod cli;
#[forbid(unsafe_code)]
pub mod gen;
pub mod mp;
#[forbid(unsafe_code)]
pub mod policies;
#[forbid(unsafe_code)]
pub mod report;
#[forbid(unsafe_code)]
pub mod trace;
