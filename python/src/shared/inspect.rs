//! The command line's view of a cache directory (`python -m warp_cache`): thin wrappers that
//! turn the core's inspector (`shm/inspect.rs`), stale-file remover (`shm/stale.rs`) and
//! `ShmStore::open_existing` + `clear` into plain dicts and lists. Every piece of file-format
//! knowledge stays in the core.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use warp_cache_core::shm::inspect::{self, CacheReport, Condition, Process};
use warp_cache_core::shm::liveness::{presence_name, OwnerState};
use warp_cache_core::shm::region::default_dir;
use warp_cache_core::shm::stale;
use warp_cache_core::shm::ShmStore;
use warp_cache_core::{Error, ErrorKind};

use crate::{guard, to_py};

fn dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(default_dir)
}

fn state_name(state: OwnerState) -> &'static str {
    match state {
        OwnerState::Alive => "alive",
        OwnerState::Dead => "dead",
        OwnerState::Unknown => "unknown",
    }
}

fn process_dict<'py>(py: Python<'py>, process: &Process) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("liveness_id", format!("{:08x}", process.liveness_id))?;
    dict.set_item("presence_file", presence_name(process.liveness_id))?;
    dict.set_item("state", state_name(process.state))?;
    Ok(dict)
}

fn cache_dict<'py>(py: Python<'py>, report: &CacheReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", &report.stem)?;
    let (condition, problem_file, problem) = match &report.condition {
        Condition::Healthy => ("ok", None, None),
        Condition::Busy => ("busy", None, None),
        Condition::Outdated(why) => ("outdated", None, Some(why.as_str())),
        Condition::Corrupt { file, problem } => {
            ("corrupt", Some(file.as_str()), Some(problem.as_str()))
        }
    };
    dict.set_item("condition", condition)?;
    dict.set_item("problem_file", problem_file)?;
    dict.set_item("problem", problem)?;
    dict.set_item("validated", report.validated)?;
    dict.set_item("format_version", report.format_version)?;
    let params = report.params;
    dict.set_item("max_size", params.map(|p| p.capacity))?;
    dict.set_item("max_key_size", params.map(|p| p.key_bytes_max))?;
    dict.set_item("max_value_size", params.map(|p| p.value_bytes_max))?;
    dict.set_item("slot_bytes", params.map(|p| p.slot_bytes))?;
    dict.set_item("max_bytes", params.map(|p| p.region_bytes))?;
    let info = report.info;
    dict.set_item("entries", info.map(|i| i.current_size))?;
    dict.set_item("hits", info.map(|i| i.hits))?;
    dict.set_item("misses", info.map(|i| i.misses))?;
    dict.set_item("oversize_skips", info.map(|i| i.oversize_skips))?;
    dict.set_item("space_skips", info.map(|i| i.space_skips))?;
    dict.set_item("read_retries", info.map(|i| i.read_retries))?;
    dict.set_item("lock_waits", info.map(|i| i.lock_waits))?;
    dict.set_item("lock_skips", info.map(|i| i.lock_skips))?;
    dict.set_item("resets", info.map(|i| i.resets))?;
    dict.set_item("takeovers", info.map(|i| i.takeovers))?;
    dict.set_item("payload_bytes", report.payload_bytes)?;
    dict.set_item("data_file_bytes", report.data_file_bytes)?;
    dict.set_item("lock_file_bytes", report.lock_file_bytes)?;
    dict.set_item(
        "lock_owner",
        report
            .lock_owner
            .as_ref()
            .map(|p| process_dict(py, p))
            .transpose()?,
    )?;
    dict.set_item("lock_held_by_dead", report.lock_held_by_dead())?;
    dict.set_item("sequence", report.sequence)?;
    let mappers = PyList::empty(py);
    for mapper in &report.mappers {
        mappers.append(process_dict(py, mapper)?)?;
    }
    dict.set_item("mappers", mappers)?;
    dict.set_item("mappers_overflow", report.mappers_overflow)?;
    dict.set_item("epoch", report.epoch)?;
    dict.set_item("retired", report.retired)?;
    Ok(dict)
}

/// The cache directory the shared backend uses (`dir`, else `$WARP_CACHE_DIR`, else the
/// platform default).
#[pyfunction]
#[pyo3(name = "_shm_cache_dir", signature = (dir = None))]
pub fn shm_cache_dir(dir: Option<PathBuf>) -> PathBuf {
    dir_or_default(dir)
}

/// The stems of the caches in the directory, sorted (`None`: there is no such directory).
/// Reads only the listing.
#[pyfunction]
#[pyo3(name = "_shm_stems", signature = (dir = None))]
pub fn shm_stems(py: Python<'_>, dir: Option<PathBuf>) -> PyResult<Option<Vec<String>>> {
    guard(|| {
        let dir = dir_or_default(dir);
        crate::python_call::detached(py, || {
            let Some(opened) = inspect::open_existing_dir(&dir)? else {
                return Ok(None);
            };
            Ok(Some(inspect::stems(&opened.names()?)))
        })
        .map_err(to_py)
    })
}

/// `{"dir", "exists", "presence_files", "temp_files", "caches": [dict, ...]}` of the caches
/// in the directory (`stem`: only that one). Read-only: nothing is locked or written.
#[pyfunction]
#[pyo3(name = "_shm_inspect", signature = (dir = None, stem = None))]
pub fn shm_inspect<'py>(
    py: Python<'py>,
    dir: Option<PathBuf>,
    stem: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    guard(|| {
        let dir = dir_or_default(dir);
        let report = py
            .detach(|| inspect::inspect_dir(&dir, stem.as_deref()))
            .map_err(to_py)?;
        let dict = PyDict::new(py);
        dict.set_item("dir", &report.dir)?;
        dict.set_item("exists", report.exists)?;
        dict.set_item("presence_files", report.presence_files)?;
        dict.set_item("temp_files", report.temp_files)?;
        let caches = PyList::empty(py);
        for cache in &report.caches {
            caches.append(cache_dict(py, cache)?)?;
        }
        dict.set_item("caches", caches)?;
        Ok(dict)
    })
}

/// Empties the cache `stem` of the directory through the writer-locked path of
/// `cache_clear()`. Its files must exist with a readable header of this format.
#[pyfunction]
#[pyo3(name = "_shm_clear", signature = (dir, stem))]
pub fn shm_clear(py: Python<'_>, dir: Option<PathBuf>, stem: String) -> PyResult<()> {
    guard(|| {
        let dir = dir_or_default(dir);
        crate::python_call::detached(py, || {
            let report = inspect::inspect_dir(&dir, Some(&stem))?;
            let params = report
                .caches
                .first()
                .and_then(|c| c.params)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "the files of {stem} in {} have no readable header of this \
                             format: not clearing it",
                            dir.display()
                        ),
                    )
                })?;
            let store = ShmStore::open_existing(
                dir.clone(),
                &stem,
                params.capacity,
                params.key_bytes_max,
                params.value_bytes_max,
                params.region_bytes,
            )?;
            store.clear()
        })
        .map_err(to_py)
    })
}

/// Removes the pairs of the directory that no live process maps; `{"dir", "exists",
/// "swept": [name], "caches": [{"name", "removed", "reason"}]}`.
#[pyfunction]
#[pyo3(name = "_shm_remove_stale", signature = (dir = None))]
pub fn shm_remove_stale<'py>(
    py: Python<'py>,
    dir: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    guard(|| {
        let dir = dir_or_default(dir);
        let report =
            crate::python_call::detached(py, || stale::remove_stale(&dir)).map_err(to_py)?;
        let dict = PyDict::new(py);
        dict.set_item("dir", &report.dir)?;
        dict.set_item("exists", report.exists)?;
        dict.set_item("swept", &report.swept)?;
        let caches = PyList::empty(py);
        for decision in &report.caches {
            let item = PyDict::new(py);
            item.set_item("name", &decision.stem)?;
            item.set_item("removed", decision.removed)?;
            item.set_item("reason", &decision.reason)?;
            caches.append(item)?;
        }
        dict.set_item("caches", caches)?;
        Ok(dict)
    })
}
