//! Reference models: SIEVE and LRU written as plainly as possible, sharing no code with the
//! production stores except the freshness rule, which is [`crate::clock::is_fresh`] by
//! definition (INV-5). Tests, the simulator and the hit-rate reports compare the production
//! SIEVE ([`crate::policy`]) against [`SieveModel`] step by step.
#![forbid(unsafe_code)]

mod lru;
mod sieve;

pub use lru::LruModel;
pub use sieve::SieveModel;
