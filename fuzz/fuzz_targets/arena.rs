//! Operation scripts on the shared-memory table + arena + SIEVE (heap region) against the reference model.
//! Body: `warp_cache_core::fuzz_targets::arena` (replayed by tests/rust/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warp_cache_core::fuzz_targets::arena(data);
});
