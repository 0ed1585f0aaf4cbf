//! Shared-memory store (issue 3). `raw` holds the few unsafe primitives.
#[cfg(unix)]
pub mod raw;
