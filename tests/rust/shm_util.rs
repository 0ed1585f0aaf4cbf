//! Helpers for the shared-store tests (included with `#[path]` by the `shm_*` test files):
//! private cache directories, key encoding, and re-executing the current test binary as a
//! child process in a named role (children do only store operations, then exit).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use warp_cache_core::codec::{self, Value};
use warp_cache_core::shm::ShmConfig;

/// Environment variable naming the role of a re-executed child.
pub const ROLE_ENV: &str = "WARP_SHM_TEST_ROLE";
/// The cache directory a child must use.
pub const DIR_ENV: &str = "WARP_SHM_TEST_DIR";

/// A private cache directory (under /dev/shm when it exists), removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!(
            "warp_cache_test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TestDir { path }
    }

    pub fn config(&self, name: &str, capacity: u32) -> ShmConfig {
        ShmConfig {
            dir: Some(self.path.clone()),
            name: name.to_owned(),
            capacity,
            key_bytes_max: 512,
            value_bytes_max: 4096,
            ttl_ns: None,
            max_bytes: None,
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The key of a call `f(k)`: a one-element tuple, as the Python layer encodes it.
pub fn int_key(k: i64) -> Vec<u8> {
    codec::encode(&Value::Tuple(vec![Value::Int(k)])).expect("flat")
}

/// An encoded int value.
pub fn int_value(v: i64) -> Vec<u8> {
    codec::encode(&Value::Int(v)).expect("scalar")
}

/// The role this process was started in, if it is a re-executed child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

pub fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var(DIR_ENV).expect("child started without a directory"))
}

/// Starts this test binary again, running only its `child_entry` test in `role`.
pub fn spawn_role(role: &str, dir: &Path, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([
            "child_entry",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("spawn child test process")
}

/// Waits for a child with a deadline; kills it and panics if it overruns.
pub fn wait_ok(mut child: Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                use std::io::Read;
                stdout.read_to_string(&mut out).expect("child stdout");
            }
            assert!(status.success(), "child failed: {status}; output:\n{out}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lines of a child's output that start with `prefix`, with the prefix removed.
pub fn reported<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .map(str::trim)
        .collect()
}

/// Process state letter from /proc (Linux): 'T' = stopped, 'Z' = zombie.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Waits until every thread of the killed process `pid` has exited and its leader is an
/// unreaped zombie. The leader shows 'Z' as soon as it exits itself, while its other threads
/// may still be exiting; the last of them closes the process's descriptors (and with them its
/// presence lock), so only then is the owner dead to other processes.
pub fn wait_until_exited(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let threads_left =
        || std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count());
    while process_state(pid) != Some('Z') || threads_left() > 1 {
        assert!(
            Instant::now() < deadline,
            "process {pid} never exited (state {:?}, {} threads)",
            process_state(pid),
            threads_left()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `pid` is in `state`.
pub fn wait_for_state(pid: u32, state: char, limit: Duration) {
    let deadline = Instant::now() + limit;
    while process_state(pid) != Some(state) {
        assert!(
            Instant::now() < deadline,
            "process {pid} never reached state {state} (now {:?})",
            process_state(pid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill with a positive pid of our own child; no memory is involved.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
