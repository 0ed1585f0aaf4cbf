//! Removing the files of caches nobody uses (`python -m warp_cache remove --stale`).
//!
//! A pair is removed only when no live process maps it:
//! * a lock file of this format names every mapper (the mapper table) and the writer-lock
//!   holder by liveness id (INV-8); the pair is in use if any of them is alive or cannot be
//!   checked, or if the table overflowed (`files::unused_pair`, the rule the version cleaner
//!   applies at decoration);
//! * a lock file of another format (or none, or garbage) records nobody in a form this version
//!   reads: the pair is in use unless the kernel's list of mappings says otherwise
//!   (`/proc/<pid>/maps` of every process this user can see, Linux only; elsewhere such a pair
//!   is kept);
//! * in both cases, a pair that a visible process still maps is kept.
//!
//! Removal unlinks, never truncates (INV-9): a process that mapped the pair meanwhile keeps
//! valid memory, sees `retired` (set first, in files of this format) and moves to new files
//! (INV-S9). Dead processes' presence and temporary files are swept too (`liveness::sweep`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::files::{mark_retired, unused_pair};
use super::inspect::{inspect_pair, open_existing_dir, stems, CacheReport, Condition};
use super::layout::FORMAT_VERSION;
use super::liveness;
use super::region::CacheDir;
use crate::error::Result;

/// What `remove --stale` did with one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleDecision {
    pub stem: String,
    pub removed: bool,
    /// Why it was removed or kept.
    pub reason: String,
}

/// The outcome of [`remove_stale`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleReport {
    pub dir: PathBuf,
    /// False: there is no such directory (nothing was done).
    pub exists: bool,
    pub caches: Vec<StaleDecision>,
    /// Presence and temporary files of dead processes that were removed.
    pub swept: Vec<String>,
}

/// Removes, in `path`, the pairs no live process maps; keeps the rest and says why.
pub fn remove_stale(path: &Path) -> Result<StaleReport> {
    let mut report = StaleReport {
        dir: path.to_owned(),
        exists: false,
        caches: Vec::new(),
        swept: Vec::new(),
    };
    let Some(dir) = open_existing_dir(path)? else {
        return Ok(report);
    };
    report.exists = true;
    report.swept = liveness::sweep(&dir, true);
    let real_dir = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    for stem in stems(&dir.names()?) {
        let inspected = inspect_pair(&dir, &stem);
        let decision = decide(&dir, &real_dir, &inspected);
        let decision = if decision.removed {
            remove_pair(&dir, &inspected, decision)
        } else {
            decision
        };
        report.caches.push(decision);
    }
    Ok(report)
}

fn decide(dir: &CacheDir, real_dir: &Path, inspected: &CacheReport) -> StaleDecision {
    let stem = &inspected.stem;
    let keep = |reason: String| StaleDecision {
        stem: stem.clone(),
        removed: false,
        reason,
    };
    let what = match &inspected.condition {
        Condition::Outdated(why) => format!("outdated ({why})"),
        Condition::Corrupt { file, problem } => format!("damaged ({file} {problem})"),
        Condition::Healthy | Condition::Busy => "in this format".to_owned(),
    };
    let paths = [
        real_dir.join(format!("{stem}.data")),
        real_dir.join(format!("{stem}.lock")),
    ];
    let table_readable = inspected.format_version == Some(FORMAT_VERSION)
        && inspected
            .lock_file_bytes
            .is_some_and(|len| len >= super::layout::LOCK_FILE_BYTES);
    if table_readable && !unused_pair(dir, &format!("{stem}.lock"), 0) {
        let live: Vec<String> = inspected
            .mappers
            .iter()
            .chain(inspected.lock_owner.iter())
            .filter(|p| p.state != liveness::OwnerState::Dead)
            .map(|p| liveness::presence_name(p.liveness_id))
            .collect();
        return keep(if inspected.mappers_overflow {
            "in use: its mapper table overflowed (more live mappers than entries)".to_owned()
        } else {
            format!("in use by live process(es) {}", live.join(", "))
        });
    }
    match mapped_by_a_visible_process(&paths) {
        Some(true) => keep(format!("{what}, but a running process maps it")),
        None if !table_readable => keep(format!(
            "{what}; no mapper table this version can read, and no /proc to ask who maps it"
        )),
        _ => StaleDecision {
            stem: stem.clone(),
            removed: true,
            reason: format!("{what}; no live process maps it"),
        },
    }
}

/// Retires and unlinks both files of a pair. A failure keeps the decision's stem, says why.
fn remove_pair(dir: &CacheDir, inspected: &CacheReport, decision: StaleDecision) -> StaleDecision {
    let stem = &inspected.stem;
    let data_name = format!("{stem}.data");
    if inspected.params.is_some() {
        // A data file of this format: users (if any raced us) move on at their next call.
        if let Ok(Some(data)) = dir.open_file(&data_name) {
            mark_retired(&data);
        }
    }
    let outcome = dir
        .remove(&data_name)
        .and_then(|()| dir.remove(&format!("{stem}.lock")));
    match outcome {
        Ok(()) => decision,
        Err(e) => StaleDecision {
            removed: false,
            reason: format!("{}; but removing it failed: {}", decision.reason, e.message),
            ..decision
        },
    }
}

/// Whether a process this user can see has one of `paths` mapped (`None`: no `/proc`).
#[cfg(target_os = "linux")]
fn mapped_by_a_visible_process(paths: &[PathBuf]) -> Option<bool> {
    let needles: Vec<String> = paths.iter().map(|p| format!(" {}", p.display())).collect();
    let mut listed_any = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes of other users (or gone meanwhile) cannot be read: skipped.
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        listed_any = true;
        if maps
            .lines()
            .any(|line| needles.iter().any(|n| line.ends_with(n.as_str())))
        {
            return Some(true);
        }
    }
    listed_any.then_some(false)
}

#[cfg(not(target_os = "linux"))]
fn mapped_by_a_visible_process(_paths: &[PathBuf]) -> Option<bool> {
    None
}

#[cfg(test)]
#[path = "stale/tests.rs"]
mod tests;
