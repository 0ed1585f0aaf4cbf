//! Simulator library (issue 2/4).
#![forbid(unsafe_code)]
