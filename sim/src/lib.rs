//! warp_cache's simulator (issues 2 and 4): trace readers ([`trace`]), a seeded trace
//! generator ([`gen`]), the policies compared in reports ([`policies`]: production SIEVE,
//! reference SIEVE, LRU, FIFO, Belady's optimal), hit-rate reports as a table, JSON or SVG
//! ([`report`]) and the `sim` command line ([`cli`]).
#![forbid(unsafe_code)]

pub mod cli;
pub mod gen;
pub mod policies;
pub mod report;
pub mod trace;
