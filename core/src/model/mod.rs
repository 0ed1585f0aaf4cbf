//! Reference models: SIEVE and LRU written as plainly as possible, with no shared code with
//! the production stores. Tests, the simulator and the hit-rate reports compare the
//! production SIEVE ([`crate::policy`]) against [`SieveModel`] step by step.
#![forbid(unsafe_code)]

mod lru;
mod sieve;

pub use lru::LruModel;
pub use sieve::SieveModel;

/// Whether an entry stored at `stored_at_ns` is still fresh at `now_ns` for a cache whose
/// time-to-live is `ttl_ns` (`None` = never expires). An entry stamped in the future (clock
/// skew between processes) is not fresh. Shared by the models and the stores so that "fresh"
/// means one thing everywhere (INV-5).
pub fn is_fresh(stored_at_ns: u64, now_ns: u64, ttl_ns: Option<u64>) -> bool {
    match ttl_ns {
        None => true,
        Some(ttl_ns) => now_ns >= stored_at_ns && now_ns - stored_at_ns < ttl_ns,
    }
}
