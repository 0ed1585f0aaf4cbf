#![forbid(unsafe_code)]

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warp_region_{tag}_{}_{}",
        std::process::id(),
        crate::clock::monotonic_now_ns()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sanitize_keeps_plain_names_and_hashes_others() {
    assert_eq!(sanitize_name("mod.func_1-a"), "mod.func_1-a");
    for hostile in [
        "../../etc/passwd",
        "/abs",
        "..",
        ".",
        "",
        ".hidden",
        "a b",
        "ünï",
        "a--b",
        "x\0y",
        &"q".repeat(500),
    ] {
        let s = sanitize_name(hostile);
        assert!(!s.is_empty() && s.len() <= 82, "{hostile:?} -> {s}");
        assert!(s.chars().all(plain_char), "{hostile:?} -> {s}");
        assert!(!s.starts_with('.'), "{hostile:?} -> {s}");
        assert!(
            s.contains("--"),
            "{hostile:?} -> {s}: hashed names carry the marker"
        );
    }
    assert_ne!(
        sanitize_name(&"q".repeat(500)),
        sanitize_name(&"q".repeat(501))
    );
    assert_ne!(sanitize_name("a b"), sanitize_name("a_b"));
    assert_eq!(sanitize_name("a b"), sanitize_name("a b"), "deterministic");
    assert_eq!(sanitize_name("<lambda>").len(), "_lambda_".len() + 2 + 32);
}

#[test]
fn create_publish_replace_and_map() {
    let path = temp_dir("cpr");
    let dir = CacheDir::open(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert!(dir.open_file("x.data").unwrap().is_none());
    let (file, tmp) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
    let first_id = file.id();
    assert_eq!(
        std::fs::metadata(path.join(&tmp)).unwrap().mode() & 0o777,
        0o600
    );
    let map = Mapping::map(file, 4096).unwrap();
    map.words()[3].store(42, Ordering::Relaxed);
    assert!(dir.publish(&tmp, "x.data").unwrap());
    assert!(dir.file_id(&tmp).unwrap().is_none(), "temp name removed");
    // A second publish under the same name loses.
    let (_f2, tmp2) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
    assert!(!dir.publish(&tmp2, "x.data").unwrap());
    // Replace: new inode at the name, the old mapping still works.
    let (f3, tmp3) = dir.create_temp(".tmp.t.", "x", 4096).unwrap();
    let new_id = f3.id();
    dir.replace(&tmp3, "x.data").unwrap();
    assert_eq!(dir.file_id("x.data").unwrap(), Some(new_id));
    assert_ne!(new_id, first_id);
    assert_eq!(map.words()[3].load(Ordering::Relaxed), 42);
    assert_eq!(
        dir.stat_name("x.data").unwrap().map(|(_, len)| len),
        Some(4096)
    );
    let reopened = dir.open_file("x.data").unwrap().unwrap();
    assert_eq!(reopened.id(), new_id);
    assert!(
        Mapping::map(reopened, 8192).is_err(),
        "never map past the end"
    );
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn refuses_symlinks_foreign_and_writable_things() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_dir("refuse");
    let dir = CacheDir::open(&path).unwrap();
    // Symlinked file.
    std::os::unix::fs::symlink("/etc/hostname", path.join("s.data")).unwrap();
    let err = dir.open_file("s.data").unwrap_err();
    assert!(err.message.contains("symlink"), "{}", err.message);
    // Group-writable file.
    std::fs::write(path.join("w.data"), b"x").unwrap();
    std::fs::set_permissions(path.join("w.data"), std::fs::Permissions::from_mode(0o664)).unwrap();
    let err = dir.open_file("w.data").unwrap_err();
    assert!(err.message.contains("writable"), "{}", err.message);
    // Symlinked directory.
    let link = temp_dir("refuse_link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = CacheDir::open(&link).unwrap_err();
    assert!(err.message.contains("symlink"), "{}", err.message);
    // World-writable directory.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = CacheDir::open(&path).unwrap_err();
    assert!(err.message.contains("writable"), "{}", err.message);
    // Foreign owner (only testable as root).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    if super::super::raw::effective_uid() == 0 {
        std::fs::write(path.join("f.data"), b"x").unwrap();
        std::fs::set_permissions(path.join("f.data"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::chown(path.join("f.data"), Some(4242), None).unwrap();
        let err = dir.open_file("f.data").unwrap_err();
        assert!(err.message.contains("owned by uid 4242"), "{}", err.message);
    }
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn a_file_truncated_under_its_mapping_faults_into_zeros_not_sigbus() {
    let path = temp_dir("sigbus");
    let dir = CacheDir::open(&path).unwrap();
    let (file, tmp) = dir.create_temp(".tmp.t.", "t", 3 * 4096).unwrap();
    let map = Mapping::map(file, 3 * 4096).unwrap();
    let words = map.words();
    let last = words.len() - 1;
    words[last].store(7, Ordering::Relaxed);
    assert!(!map.faulted());
    // Another process (here: us) breaks INV-9 and truncates the mapped file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path.join(&tmp))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(dir.stat_name(&tmp).unwrap().map(|(_, len)| len), Some(0));
    // Touching it would be a SIGBUS; the safety net turns it into zeros and a flag.
    assert_eq!(words[last].load(Ordering::Relaxed), 0);
    assert_eq!(words[0].load(Ordering::Relaxed), 0);
    words[1].store(5, Ordering::Relaxed);
    assert_eq!(
        words[1].load(Ordering::Relaxed),
        5,
        "private page is writable"
    );
    assert!(map.faulted());
    assert!(bus_fault_count() >= 2);
    drop(map);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn reservation_beyond_free_space_is_no_space() {
    let path = temp_dir("nospace");
    let dir = CacheDir::open(&path).unwrap();
    let err = dir.create_temp(".tmp.t.", "big", 1 << 60).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoSpace, "{}", err.message);
    assert!(err.message.contains("max_size"), "{}", err.message);
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
    std::fs::remove_dir_all(&path).unwrap();
}
