//! Unit tests of `remove --stale` over real files.

use super::*;
use crate::shm::inspect::tests::{filled, temp_dir};
use crate::shm::layout::{word, LockFile, WORD_BYTES};
use std::os::unix::fs::FileExt;

fn write_word(path: &Path, index: usize, value: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_ne_bytes(), (index * WORD_BYTES) as u64)
        .unwrap();
}

fn decision<'a>(report: &'a StaleReport, stem: &str) -> &'a StaleDecision {
    report
        .caches
        .iter()
        .find(|d| d.stem == stem)
        .unwrap_or_else(|| panic!("{stem} not in {report:?}"))
}

#[test]
fn removes_what_nobody_maps_and_keeps_what_this_process_maps() {
    let path = temp_dir("stale");
    let kept = filled(&path, "kept");
    drop(filled(&path, "unused"));
    drop(filled(&path, "old"));
    write_word(&path.join("old.lock"), word!(LockFile, format_version), 1);
    // A presence file nobody holds: a dead process's.
    std::fs::write(path.join(liveness::presence_name(0x0bad)), b"").unwrap();
    let report = remove_stale(&path).unwrap();
    assert!(report.exists);
    let kept_decision = decision(&report, "kept");
    assert!(!kept_decision.removed, "{kept_decision:?}");
    assert!(kept_decision.reason.contains("in use"), "{kept_decision:?}");
    assert!(decision(&report, "unused").removed);
    let old = decision(&report, "old");
    assert!(
        old.removed && old.reason.contains("format version 1"),
        "{old:?}"
    );
    assert_eq!(report.swept, vec![liveness::presence_name(0x0bad)]);
    let mut left: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(left, vec!["kept.data".to_owned(), "kept.lock".to_owned()]);
    // The kept cache still works.
    let mut out = Vec::new();
    assert!(kept.get(&[0], 0, &mut out).unwrap());
    drop(kept);
    std::fs::remove_dir_all(&path).unwrap();
}

/// The mapper table alone keeps a pair: a live process (a shell holding a presence file's
/// lock) named there, though it maps nothing this test could see in /proc.
#[test]
fn a_live_mapper_in_the_table_keeps_the_pair_until_it_dies() {
    let path = temp_dir("table");
    drop(filled(&path, "c"));
    let id = 0x5eed_u64;
    let mut child = liveness::tests::hold_presence_in_child(&path, id);
    write_word(&path.join("c.lock"), word!(LockFile, mappers) + 3, id);
    let report = remove_stale(&path).unwrap();
    let c = decision(&report, "c");
    assert!(!c.removed, "{c:?}");
    assert!(c.reason.contains(&liveness::presence_name(id)), "{c:?}");
    assert!(path.join("c.data").exists() && path.join("c.lock").exists());
    child.kill().unwrap();
    child.wait().unwrap();
    let report = remove_stale(&path).unwrap();
    assert!(decision(&report, "c").removed, "{report:?}");
    assert!(!path.join("c.data").exists() && !path.join("c.lock").exists());
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn a_missing_directory_is_left_missing() {
    let path = temp_dir("stale_missing");
    let report = remove_stale(&path).unwrap();
    assert!(!report.exists && report.caches.is_empty());
    assert!(!path.exists());
}
