//! The Redis tier ("L2", issue 14), Rust only: what a value looks like in Redis
//! ([`record`]), what its Redis key is ([`naming`]), when to stop calling a sick server
//! ([`breaker`]) and the blocking client that does the calls ([`client`]).
//!
//! Everything read from Redis is hostile input, as shared memory is (INV-7): a record is
//! served only after its integrity tag, its format and its full key have been checked, and
//! no byte string from the server can make this code panic.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod client;
pub mod counters;
pub mod naming;
pub mod record;
pub mod tracking;
