//! warp_cache's engine. No Python in here: every algorithm and byte layout lives in this
//! crate so that unit tests, proptest models, shuttle, loom, miri, cargo-fuzz and the
//! simulator all run the production code (see docs/ARCHITECTURE.md).
//!
//! Unsafe code is denied here and allowed, file by file, only where the OS is called:
//! `shm/raw.rs`, `shm/region.rs` and its `region/{bus,checks}.rs`.
#![deny(unsafe_code)]

pub mod clock;
pub mod codec;
pub mod corruption;
pub mod error;
#[cfg(any(test, fuzzing, feature = "testkit"))]
pub mod fuzz_targets;
pub mod hash;
pub mod mem;
pub mod model;
pub mod policy;
#[cfg(feature = "remote")]
pub mod remote;
pub mod shm;
pub mod stats;
pub mod sync;

pub use error::{Error, ErrorKind};
pub use stats::CacheStats;
