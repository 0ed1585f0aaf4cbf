//! Arbitrary bytes through the codec: decode never panics; structured values round-trip.
//! Body: `warp_cache_core::fuzz_targets::codec` (replayed by tests/rust/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warp_cache_core::fuzz_targets::codec(data);
});
