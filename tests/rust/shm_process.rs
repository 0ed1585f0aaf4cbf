//! Real processes sharing one cache: entries and counters shared, clear seen by all, eight
//! processes cold-starting at once, concurrent writers and readers never seeing torn values,
//! and crash recovery: a child stopped or killed while it holds the writer lock (failpoints)
//! never hangs the others, and after SIGKILL they take over within a second.
//!
//! Children are this test binary re-executed in a role (see `shm_util::spawn_role`).

#[path = "shm_util.rs"]
mod shm_util;

use std::time::{Duration, Instant};

use shm_util::{
    child_dir, int_key, int_value, reported, role, send_signal, spawn_role, wait_for_state,
    wait_ok, TestDir,
};
use warp_cache_core::shm::{failpoint, InsertOutcome, ShmConfig, ShmStore, SkipReason};

fn config(dir: &std::path::Path, name: &str) -> ShmConfig {
    ShmConfig {
        dir: Some(dir.to_owned()),
        name: name.to_owned(),
        capacity: 1024,
        key_bytes_max: 64,
        value_bytes_max: 4096,
        ttl_ns: None,
        max_bytes: None,
    }
}

fn now() -> u64 {
    warp_cache_core::clock::monotonic_now_ns()
}

/// Child process entry point (ignored in normal runs; the parent runs it with
/// `--include-ignored` and a role in the environment).
#[test]
#[ignore = "entry point of re-executed child processes"]
fn child_entry() {
    let Some(role) = role() else {
        return;
    };
    let dir = child_dir();
    let mut parts = role.split(':');
    match parts.next().unwrap() {
        // Inserts keys lo..hi with value 3k.
        "writer" => {
            let lo: i64 = parts.next().unwrap().parse().unwrap();
            let hi: i64 = parts.next().unwrap().parse().unwrap();
            let store = ShmStore::open(config(&dir, "share")).unwrap();
            for k in lo..hi {
                store.insert(&int_key(k), &int_value(3 * k), now()).unwrap();
            }
        }
        // Gets keys lo..hi, checks values, reports the hit count and the shared info.
        "reader" => {
            let lo: i64 = parts.next().unwrap().parse().unwrap();
            let hi: i64 = parts.next().unwrap().parse().unwrap();
            let store = ShmStore::open(config(&dir, "share")).unwrap();
            let mut out = Vec::new();
            let mut hits = 0;
            for k in lo..hi {
                if store.get(&int_key(k), now(), &mut out).unwrap() {
                    assert_eq!(out, int_value(3 * k));
                    hits += 1;
                }
            }
            let info = store.info().unwrap();
            println!("hits {hits}");
            println!("size {}", info.current_size);
        }
        // Fills keys 0..10 and 999, arms a failpoint, and overwrites key 999 in place (stops
        // or dies there, half of the new value written over the old one).
        "crash" => {
            let spec = parts.collect::<Vec<_>>().join(":");
            let store = ShmStore::open(config(&dir, "crash")).unwrap();
            for k in 0..10 {
                store.insert(&int_key(k), &int_value(k), now()).unwrap();
            }
            store.insert(&int_key(999), &[0xAB; 4000], now()).unwrap();
            failpoint::set(Some(&spec)).unwrap();
            store.insert(&int_key(999), &[0xCD; 4000], now()).unwrap();
            println!("survived");
        }
        // Waits for a common start instant, opens, inserts its key, reports the inodes.
        "cold" => {
            let id: i64 = parts.next().unwrap().parse().unwrap();
            let start_ns: u64 = parts.next().unwrap().parse().unwrap();
            while now() < start_ns {
                std::hint::spin_loop();
            }
            let store = ShmStore::open(config(&dir, "cold")).unwrap();
            store.insert(&int_key(id), &int_value(id), now()).unwrap();
            let paths = store.paths().unwrap();
            use std::os::unix::fs::MetadataExt;
            println!(
                "inodes {} {}",
                std::fs::metadata(&paths.data).unwrap().ino(),
                std::fs::metadata(&paths.lock).unwrap().ino()
            );
        }
        // Mixed inserts of self-describing values and checked gets for `ms` milliseconds.
        "hammer" => {
            let seed: usize = parts.next().unwrap().parse().unwrap();
            let ms: u64 = parts.next().unwrap().parse().unwrap();
            let store = ShmStore::open(config(&dir, "hammer")).unwrap();
            println!("hits {}", hammer(&store, seed, Duration::from_millis(ms)));
        }
        // Pure hits over `keys` prepared keys for `ms` milliseconds; reports the op count.
        "bench" => {
            let keys: i64 = parts.next().unwrap().parse().unwrap();
            let ms: u64 = parts.next().unwrap().parse().unwrap();
            let store = ShmStore::open(config(&dir, "bench")).unwrap();
            let encoded: Vec<Vec<u8>> = (0..keys).map(int_key).collect();
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_millis(ms);
            let mut ops = 0u64;
            while Instant::now() < deadline {
                for key in encoded.iter().take(256) {
                    assert!(store.get(key, 0, &mut out).unwrap());
                }
                ops += 256.min(encoded.len() as u64);
            }
            println!("ops {ops}");
            println!("cpu_ns {}", cpu_time_ns());
        }
        // A store opened before fork() is used by the forked child through the inherited
        // mapping (Python's fork start method); a grandchild then dies holding the lock and
        // must be recognised as the dead owner (its own pid, not the cached parent pid).
        "fork" => {
            let store = ShmStore::open(config(&dir, "fork")).unwrap();
            for k in 0..10 {
                store.insert(&int_key(k), &int_value(k), now()).unwrap();
            }
            let status = fork_and_wait(|| {
                let mut out = Vec::new();
                let ok = (0..10).all(|k| {
                    store.get(&int_key(k), now(), &mut out).unwrap() && out == int_value(k)
                });
                store.insert(&int_key(100), &int_value(100), now()).unwrap();
                if ok {
                    0
                } else {
                    3
                }
            });
            assert_eq!(
                status, 0,
                "forked child could not read the inherited mapping"
            );
            let mut out = Vec::new();
            assert!(store.get(&int_key(100), now(), &mut out).unwrap());
            let status = fork_and_wait(|| {
                failpoint::set(Some("after_lock:kill")).unwrap();
                let _ = store.insert(&int_key(101), &int_value(101), now());
                4 // not reached
            });
            assert_eq!(
                status,
                -libc::SIGKILL,
                "grandchild should die at the failpoint"
            );
            let start = Instant::now();
            assert!(matches!(
                store.insert(&int_key(102), &int_value(102), now()).unwrap(),
                InsertOutcome::Inserted { .. }
            ));
            assert!(start.elapsed() < Duration::from_secs(1));
            store.validate().unwrap();
            println!("fork ok");
        }
        // Opens with no directory: $WARP_CACHE_DIR (set by the parent) decides.
        "envdir" => {
            let store = ShmStore::open(ShmConfig {
                dir: None,
                ..config(&dir, "env")
            })
            .unwrap();
            println!("data {}", store.paths().unwrap().data.display());
        }
        other => panic!("unknown role {other}"),
    }
}

/// Forks; the child runs `body` and `_exit`s with its result. Returns the child's exit
/// code, or minus the signal that killed it. Called only in single-purpose child processes.
fn fork_and_wait(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: called from a re-executed child process that runs nothing else concurrently;
    // the forked child only uses the store and then calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = body();
        // SAFETY: ends the forked child at once, without running inherited destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is writable.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

/// User + system CPU time of this process.
fn cpu_time_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0);
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Inserts values whose every byte is the key byte (lengths vary up to 4000) and checks
/// every hit; returns the number of hits.
fn hammer(store: &ShmStore, seed: usize, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let mut out = Vec::new();
    let (mut i, mut hits) = (seed * 7919, 0u64);
    while Instant::now() < deadline {
        i += 1;
        let key = [(i % 40) as u8];
        if i % 3 == 0 {
            let len = 1 + (i * 131) % 4000;
            let outcome = store.insert(&key, &vec![key[0]; len], 0).unwrap();
            assert_ne!(outcome, InsertOutcome::Skipped(SkipReason::Oversize));
        } else if store.get(&key, 0, &mut out).unwrap() {
            hits += 1;
            assert!(
                !out.is_empty() && out.iter().all(|&b| b == key[0]),
                "torn or wrong value for key {}: {} bytes",
                key[0],
                out.len()
            );
        }
    }
    hits
}

#[test]
fn processes_share_entries_counters_and_clear() {
    let dir = TestDir::new("share");
    wait_ok(
        spawn_role("writer:0:100", &dir.path, &[]),
        Duration::from_secs(60),
    );
    let store = ShmStore::open(config(&dir.path, "share")).unwrap();
    let mut out = Vec::new();
    for k in 0..100 {
        assert!(store.get(&int_key(k), now(), &mut out).unwrap(), "key {k}");
        assert_eq!(out, int_value(3 * k));
    }
    for k in 100..150 {
        store.insert(&int_key(k), &int_value(3 * k), now()).unwrap();
    }
    let output = wait_ok(
        spawn_role("reader:0:200", &dir.path, &[]),
        Duration::from_secs(60),
    );
    assert_eq!(reported(&output, "hits "), ["150"]);
    assert_eq!(reported(&output, "size "), ["150"]);
    // Counters are shared: 100 parent hits + 150 child hits, 50 child misses.
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses), (250, 50));
    // A clear by one process is seen by every other.
    store.clear().unwrap();
    let output = wait_ok(
        spawn_role("reader:0:200", &dir.path, &[]),
        Duration::from_secs(60),
    );
    assert_eq!(reported(&output, "hits "), ["0"]);
    assert_eq!(reported(&output, "size "), ["0"]);
    let info = store.info().unwrap();
    assert_eq!((info.hits, info.misses, info.current_size), (0, 200, 0));
    store.validate().unwrap();
}

#[test]
fn a_forked_child_uses_the_inherited_store() {
    let dir = TestDir::new("fork");
    let output = wait_ok(spawn_role("fork", &dir.path, &[]), Duration::from_secs(60));
    assert_eq!(reported(&output, "fork "), ["ok"]);
}

#[test]
fn the_directory_comes_from_warp_cache_dir_and_is_created_private() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("envdir");
    let target = dir.path.join("nested/cache");
    let output = wait_ok(
        spawn_role(
            "envdir",
            &dir.path,
            &[("WARP_CACHE_DIR", target.display().to_string())],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(
        reported(&output, "data "),
        [target.join("env.data").display().to_string()]
    );
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn eight_processes_cold_starting_agree_on_one_file() {
    let dir = TestDir::new("cold");
    std::fs::create_dir_all(&dir.path).unwrap();
    std::fs::set_permissions(
        &dir.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // Children start spinning, then all open at the same instant.
    let start_ns = now() + 400_000_000;
    let children: Vec<_> = (0..8)
        .map(|id| spawn_role(&format!("cold:{id}:{start_ns}"), &dir.path, &[]))
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| wait_ok(c, Duration::from_secs(60)))
        .collect();
    let inodes: Vec<&str> = outputs
        .iter()
        .flat_map(|o| reported(o, "inodes "))
        .collect();
    assert_eq!(inodes.len(), 8);
    assert!(inodes.iter().all(|i| *i == inodes[0]), "{inodes:?}");
    let store = ShmStore::open(config(&dir.path, "cold")).unwrap();
    let mut out = Vec::new();
    for id in 0..8 {
        assert!(
            store.get(&int_key(id), now(), &mut out).unwrap(),
            "key {id} lost"
        );
    }
    store.validate().unwrap();
}

#[test]
fn concurrent_processes_never_read_torn_values() {
    let dir = TestDir::new("hammer");
    let store = ShmStore::open(config(&dir.path, "hammer")).unwrap();
    let children: Vec<_> = (1..=2)
        .map(|seed| spawn_role(&format!("hammer:{seed}:800"), &dir.path, &[]))
        .collect();
    let parent_hits = hammer(&store, 0, Duration::from_millis(800));
    let child_hits: u64 = children
        .into_iter()
        .map(|c| wait_ok(c, Duration::from_secs(60)))
        .map(|o| reported(&o, "hits ")[0].parse::<u64>().unwrap())
        .sum();
    assert!(parent_hits + child_hits > 100, "exercised hits");
    store.validate().unwrap();
    assert_eq!(store.info().unwrap().resets, 0, "no crash, no reset");
}

/// Crash scenario: the child arms `spec` and inserts key 999; returns the child (stopped or
/// dead) and the parent's store.
fn crash_child(dir: &TestDir, spec: &str) -> (std::process::Child, ShmStore) {
    let child = spawn_role(&format!("crash:{spec}"), &dir.path, &[]);
    let store_deadline = Instant::now() + Duration::from_secs(30);
    // Open after the child created the files (either order works; this keeps keys 0..10).
    let store = loop {
        if dir.path.join("crash.data").exists() {
            break ShmStore::open(config(&dir.path, "crash")).unwrap();
        }
        assert!(
            Instant::now() < store_deadline,
            "child never created the cache"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    (child, store)
}

fn assert_recovers_after_kill(mut child: std::process::Child, store: &ShmStore) {
    let pid = child.id();
    if shm_util::process_state(pid) == Some('T') {
        send_signal(pid, libc::SIGKILL);
    }
    // Do not reap yet: a killed, unreaped owner is a zombie and must count as dead (once all
    // its threads are gone: under load they can take longer than the takeover's few looks).
    shm_util::wait_until_exited(pid, Duration::from_secs(10));
    let start = Instant::now();
    let outcome = store.insert(&int_key(5000), &int_value(1), now()).unwrap();
    let took = start.elapsed();
    assert!(
        matches!(outcome, InsertOutcome::Inserted { .. }),
        "{outcome:?}"
    );
    assert!(took < Duration::from_secs(1), "took over in {took:?}");
    store.validate().unwrap();
    let mut out = Vec::new();
    assert!(store.get(&int_key(5000), now(), &mut out).unwrap());
    // The half-overwritten key is never served torn: old or new value, or a miss.
    if store.get(&int_key(999), now(), &mut out).unwrap() {
        assert!(
            out == [0xAB; 4000] || out == [0xCD; 4000],
            "torn value served after a crash"
        );
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    println!("takeover after the owner died: {took:?}");
}

#[test]
fn writer_stopped_mid_write_then_killed() {
    let dir = TestDir::new("crash_mid");
    let (child, store) = crash_child(&dir, "mid_write:stop");
    wait_for_state(child.id(), 'T', Duration::from_secs(30));
    // The writer is alive (stopped) inside key 999's slot section: readers of the other
    // entries are not held up at all (per-slot validation, issue 12) ...
    let start = Instant::now();
    let mut out = Vec::new();
    for k in 0..10 {
        assert!(store.get(&int_key(k), now(), &mut out).unwrap(), "key {k}");
        assert_eq!(out, int_value(k));
    }
    assert_eq!(store.info().unwrap().read_retries, 0);
    // ... and a reader of key 999 gets a bounded miss, as does a miss (the lock file's
    // sequence is odd).
    assert!(!store.get(&int_key(999), now(), &mut out).unwrap());
    assert!(!store.get(&int_key(12345), now(), &mut out).unwrap());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "reads waited {:?}",
        start.elapsed()
    );
    // Writers give up on a live owner in bounded time.
    let start = Instant::now();
    assert_eq!(
        store.insert(&int_key(77), &int_value(1), now()).unwrap(),
        InsertOutcome::Skipped(SkipReason::LockBusy)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_recovers_after_kill(child, &store);
    assert!(
        store.info().unwrap().resets >= 1,
        "the torn section was reset"
    );
}

#[test]
fn writer_stopped_holding_the_lock_then_killed() {
    let dir = TestDir::new("crash_lock");
    let (child, store) = crash_child(&dir, "after_lock:stop");
    wait_for_state(child.id(), 'T', Duration::from_secs(30));
    // The sequence is even: readers are not affected by a held lock at all.
    let mut out = Vec::new();
    for k in 0..10 {
        assert!(store.get(&int_key(k), now(), &mut out).unwrap(), "key {k}");
        assert_eq!(out, int_value(k));
    }
    assert_eq!(
        store.insert(&int_key(77), &int_value(1), now()).unwrap(),
        InsertOutcome::Skipped(SkipReason::LockBusy)
    );
    // The same stalled hold is not waited out twice: later inserts skip at once.
    let start = Instant::now();
    for k in 0..5 {
        assert_eq!(
            store
                .insert(&int_key(80 + k), &int_value(1), now())
                .unwrap(),
            InsertOutcome::Skipped(SkipReason::LockBusy)
        );
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_recovers_after_kill(child, &store);
    // Nothing was torn, so nothing was reset: the entries survive the takeover.
    assert_eq!(store.info().unwrap().resets, 0);
    assert!(store.get(&int_key(3), now(), &mut out).unwrap());
}

#[test]
fn writer_killed_mid_write() {
    let dir = TestDir::new("crash_kill");
    let (child, store) = crash_child(&dir, "mid_write:kill");
    assert_recovers_after_kill(child, &store);
}

#[test]
fn writer_aborting_mid_write() {
    let dir = TestDir::new("crash_abort");
    let (child, store) = crash_child(&dir, "mid_write:abort");
    assert_recovers_after_kill(child, &store);
}

#[test]
#[ignore = "benchmark: cargo test --release -p warp-cache-tests --test shm_process -- --ignored --nocapture pure_hit_scaling"]
fn pure_hit_scaling() {
    let dir = TestDir::new("bench");
    let store = ShmStore::open(config(&dir.path, "bench")).unwrap();
    for k in 0..256 {
        store.insert(&int_key(k), &int_value(k), 0).unwrap();
    }
    // Returns (aggregate gets per wall second, gets per CPU second).
    let run = |processes: usize| -> (f64, f64) {
        let ms = 2000;
        let children: Vec<_> = (0..processes)
            .map(|_| spawn_role(&format!("bench:256:{ms}"), &dir.path, &[]))
            .collect();
        let outputs: Vec<String> = children
            .into_iter()
            .map(|c| wait_ok(c, Duration::from_secs(60)))
            .collect();
        let sum = |prefix: &str| -> f64 {
            outputs
                .iter()
                .map(|o| reported(o, prefix)[0].parse::<f64>().unwrap())
                .sum()
        };
        let ops = sum("ops ");
        (ops / (ms as f64 / 1000.0), ops / (sum("cpu_ns ") / 1e9))
    };
    let mut ratios = Vec::new();
    let mut efficiencies = Vec::new();
    for round in 0..3 {
        let (one, one_cpu) = run(1);
        let (two, two_cpu) = run(2);
        println!(
            "round {round}: 1 process {:.1} M gets/s ({:.1} ns/get), 2 processes {:.1} M gets/s: \
             {:.2}x; per CPU-second {:.1} M vs {:.1} M ({:.2})",
            one / 1e6,
            1e9 / one,
            two / 1e6,
            two / one,
            one_cpu / 1e6,
            two_cpu / 1e6,
            two_cpu / one_cpu
        );
        ratios.push(two / one);
        efficiencies.push(two_cpu / one_cpu);
    }
    ratios.sort_by(f64::total_cmp);
    efficiencies.sort_by(f64::total_cmp);
    println!(
        "median 2-process scaling {:.2}x (wall); per-CPU efficiency of 2 processes vs 1: {:.2} \
         (1.0 = no cross-process contention; wall scaling also needs two idle cores)",
        ratios[1], efficiencies[1]
    );
}
