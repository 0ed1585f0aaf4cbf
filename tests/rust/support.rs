//! Helpers shared by the cross-crate tests: where the repository, its corpora and the shared
//! real traces are, and the key-sequence hash the libCacheSim oracle records.

use std::path::{Path, PathBuf};

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    manifest
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `<repo>/corpora`.
pub fn corpora_dir() -> PathBuf {
    repo_root().join("corpora")
}

/// The folder of real traces: `$WARP_CACHE_TRACES` if set, else `<repo>/../shared/traces`.
/// `None` when it does not exist (a fresh checkout has no `../shared`): tests that need it
/// skip, saying why.
pub fn shared_traces_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("WARP_CACHE_TRACES") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().parent()?.join("shared").join("traces"),
    };
    dir.is_dir().then_some(dir)
}

/// Whether `CI=true` (the CI job, which must have `../shared` beside the checkout).
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Where a trace lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceSource {
    /// Relative to `corpora/` (committed, always present).
    Corpora,
    /// Relative to the shared real-trace folder (may be absent).
    Shared,
}

impl TraceSource {
    pub fn parse(text: &str) -> Option<TraceSource> {
        match text {
            "corpora" => Some(TraceSource::Corpora),
            "shared" => Some(TraceSource::Shared),
            _ => None,
        }
    }
}

/// The path of a trace, or `Err(reason)` when it is not available here (the caller prints the
/// reason and skips).
pub fn locate_trace(source: TraceSource, relative: &str) -> Result<PathBuf, String> {
    let path = match source {
        TraceSource::Corpora => corpora_dir().join(relative),
        TraceSource::Shared => match shared_traces_dir() {
            Some(dir) => dir.join(relative),
            None => {
                let reason = format!(
                    "skipping {relative}: the shared traces folder (../shared/traces or $WARP_CACHE_TRACES) is absent"
                );
                // CI runs beside ../shared: there a missing trace folder is a failure, never a
                // silent pass (scripts/test-all.sh prints the count skipped elsewhere).
                assert!(!running_in_ci(), "CI=true: {reason}");
                return Err(reason);
            }
        },
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("skipping {relative}: {} is absent", path.display()))
    }
}

/// The key-sequence hash of `tests/python/oracle_libcachesim.py::keys_fnv64`:
/// `h = 0xcbf29ce484222325; for key: h = (h ^ key) * 0x100000001b3 (mod 2^64)`, as 16 hex digits.
pub fn keys_fnv64(keys: &[u64]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &key in keys {
        h = (h ^ key).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_python_script() {
        // Same values as tests/python/test_libcachesim_oracle.py.
        assert_eq!(keys_fnv64(&[]), "cbf29ce484222325");
        assert_eq!(keys_fnv64(&[1, 2]), "082f2407b4e8902a");
        assert_eq!(keys_fnv64(&[u64::MAX, 0, 7]), "1e0975e78f08d6b7");
        assert_ne!(keys_fnv64(&[1, 2]), keys_fnv64(&[2, 1]));
    }

    #[test]
    fn corpora_is_found() {
        assert!(
            corpora_dir().join("traces").is_dir(),
            "{}",
            corpora_dir().display()
        );
        assert!(locate_trace(TraceSource::Corpora, "traces/zipf-1.0.txt.gz").is_ok());
        assert!(locate_trace(TraceSource::Corpora, "traces/none.txt").is_err());
    }
}
