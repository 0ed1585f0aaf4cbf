//! Runner shared by the shuttle tests (included with `#[path]`): seeded random schedules,
//! the seed printed first, and two ways to replay a failure.
//!
//! * `SHUTTLE_SEED=<n>`: rerun the same sequence of random schedules (the failing one included).
//!   On a failure shuttle also prints `failing seed: <m>` (the seed of the failing schedule
//!   itself): `SHUTTLE_SEED=<m> SHUTTLE_ITERATIONS=1` replays just that schedule;
//! * `SHUTTLE_SCHEDULE=<string>`: replay the encoded schedule shuttle printed
//!   ("failing schedule: ..."), as `shuttle::replay` does;
//! * `SHUTTLE_ITERATIONS=<n>`: schedules per test (default per test).
//!
//! Filter to the one failing test when replaying (`-- <name> --exact`). shuttle's own
//! `SHUTTLE_RANDOM_SEED` is honoured too (it overrides the seed inside shuttle).
//!
//! Example: `SHUTTLE_SEED=123 cargo test -p warp-cache-tests --features shuttle --release
//! --test shuttle_mem -- typed_api`.
#![allow(dead_code)]

use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use shuttle::scheduler::{RandomScheduler, ReplayScheduler};
use shuttle::{Config, Runner};

fn config() -> Config {
    let mut config = Config::new();
    // Debug-ish test builds need more than shuttle's 60 KB default stacks.
    config.stack_size = 1 << 20;
    // Shuttle warns that it treats every ordering as SeqCst: known and intended here (these
    // tests check protocol logic; loom_seqlock.rs checks the orderings).
    config.silence_warnings = true;
    config
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got {text:?}")),
    )
}

fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() >> 1
}

/// Runs `body` under `iterations` random schedules (or the replay named by the environment).
/// Returns the number of schedules run.
pub fn check<F>(test_file: &str, test_name: &str, iterations: usize, body: F) -> usize
where
    F: Fn() + Send + Sync + 'static,
{
    if let Ok(schedule) = std::env::var("SHUTTLE_SCHEDULE") {
        eprintln!("shuttle {test_name}: replaying the schedule in SHUTTLE_SCHEDULE");
        let runner = Runner::new(ReplayScheduler::new_from_encoded(schedule.trim()), config());
        return runner.run(body);
    }
    let iterations = env_u64("SHUTTLE_ITERATIONS").map_or(iterations, |n| n as usize);
    let seed = env_u64("SHUTTLE_RANDOM_SEED")
        .or_else(|| env_u64("SHUTTLE_SEED"))
        .unwrap_or_else(random_seed);
    eprintln!(
        "shuttle {test_name}: seed={seed} iterations={iterations}\n  replay: SHUTTLE_SEED={seed} \
         cargo test -p warp-cache-tests --features shuttle --release --test {test_file} -- {test_name} --exact"
    );
    let start = Instant::now();
    let runner = Runner::new(RandomScheduler::new_from_seed(seed, iterations), config());
    let ran = runner.run(body);
    eprintln!(
        "shuttle {test_name}: {ran} schedules in {:.2?} (seed={seed})",
        start.elapsed()
    );
    ran
}
