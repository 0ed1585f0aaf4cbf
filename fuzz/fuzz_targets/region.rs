//! Raw bytes of a whole data file, opened as if found in /dev/shm (hostile file).
//! Body: `warp_cache_core::fuzz_targets::region` (replayed by tests/rust/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = warp_cache_core::fuzz_targets::region(data);
});
