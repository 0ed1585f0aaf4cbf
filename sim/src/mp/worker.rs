//! A worker process of the multi-process replay: the `sim` binary (or a test binary) started
//! again with [`WORKER_ENV`] set. It opens the run's real shared store, then executes the
//! requests the parent writes on its stdin, one after the other, and reports each result on
//! its stdout as soon as it is done (see `protocol`). It never decides anything: the schedule,
//! the faults and the checking are the parent's.
#![forbid(unsafe_code)]

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use warp_cache_core::clock::monotonic_now_ns;
use warp_cache_core::shm::{self, failpoint, InsertOutcome, ShmConfig, ShmStore, SkipReason};

use super::protocol::{
    Command, InsertCode, Mode, Reply, RequestResult, Sabotage, WorkerConfig, WORKER_DIR_ENV,
    WORKER_ENV,
};
use super::value::{self, ValueId, STORE_KEY_BYTES_MAX, STORE_VALUE_BYTES_MAX};

/// A forced write retries a busy lock for at most this long (the parent's watchdog fires
/// much earlier if the lock never frees).
const FORCED_WRITE_PATIENCE: Duration = Duration::from_secs(30);

/// Exit status of a worker whose store operation failed.
pub const EXIT_STORE_ERROR: u8 = 3;
/// Exit status of a worker started with a bad configuration.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// If this process was started as a worker ([`WORKER_ENV`] set), runs the worker and returns
/// its exit code; otherwise `None`. Call it first thing in `main` of any binary the parent
/// may launch (the `sim` binary does, through `sim::cli::main`).
pub fn run_if_requested() -> Option<ExitCode> {
    let line = std::env::var(WORKER_ENV).ok()?;
    Some(ExitCode::from(run(&line)))
}

/// The shared-store configuration of a run (parent and workers use the same).
pub fn store_config(dir: PathBuf, name: &str, capacity: u32) -> ShmConfig {
    ShmConfig {
        dir: Some(dir),
        name: name.to_owned(),
        capacity,
        key_bytes_max: STORE_KEY_BYTES_MAX,
        value_bytes_max: STORE_VALUE_BYTES_MAX,
        ttl_ns: None,
        max_bytes: None,
    }
}

fn run(config_line: &str) -> u8 {
    let config = match WorkerConfig::parse(config_line) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sim worker: {e}");
            return EXIT_BAD_CONFIG;
        }
    };
    let Some(dir) = std::env::var_os(WORKER_DIR_ENV).map(PathBuf::from) else {
        eprintln!("sim worker: {WORKER_DIR_ENV} is not set");
        return EXIT_BAD_CONFIG;
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut send = |reply: Reply| -> io::Result<()> {
        writeln!(out, "{}", reply.to_line())?;
        out.flush()
    };
    if failpoint::ENABLED {
        // Ignore any WARP_CACHE_FAILPOINT inherited from the user's environment.
        let _ = failpoint::set(None);
    }
    let store = match ShmStore::open(store_config(dir, &config.name, config.capacity)) {
        Ok(store) => store,
        Err(e) => {
            let _ = send(Reply::Fatal(format!("cannot open the store: {e}")));
            return EXIT_STORE_ERROR;
        }
    };
    if send(Reply::Ready {
        pid: std::process::id(),
    })
    .is_err()
    {
        return 0;
    }
    let mut scratch = Vec::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else {
            return 0;
        };
        let command = match Command::parse(&line) {
            Ok(command) => command,
            Err(e) => {
                let _ = send(Reply::Fatal(e));
                return EXIT_BAD_CONFIG;
            }
        };
        let reply = match command {
            Command::Request { index, key, mode } => {
                match execute(&store, &config, index, key, &mode, &mut scratch) {
                    Ok(result) => Reply::Result(result),
                    Err(message) => {
                        let _ = send(Reply::Fatal(message));
                        return EXIT_STORE_ERROR;
                    }
                }
            }
            Command::EndBatch { step } => Reply::Done { step },
            Command::Quit => return 0,
        };
        if send(reply).is_err() {
            // The parent is gone.
            return 0;
        }
    }
    0
}

/// One request: get; on a miss (or always, when forced) insert this request's value.
pub fn execute(
    store: &ShmStore,
    config: &WorkerConfig,
    index: u64,
    key: u64,
    mode: &Mode,
    scratch: &mut Vec<u8>,
) -> Result<RequestResult, String> {
    let sabotage = config.sabotage.filter(|s| match *s {
        Sabotage::ForeignValue { index: at }
        | Sabotage::Hang { index: at }
        | Sabotage::Panic { index: at } => at == index,
    });
    match sabotage {
        Some(Sabotage::Hang { .. }) => std::thread::sleep(Duration::from_secs(3600)),
        Some(Sabotage::Panic { .. }) => {
            // A short message instead of a backtrace: this panic is the test's intent.
            std::panic::set_hook(Box::new(|info| eprintln!("sim worker: {info}")));
            panic!("sabotage: worker panics at request {index}")
        }
        _ => {}
    }
    let started = Instant::now();
    let key_bytes = value::store_key(key);
    let hash = shm::key_hash(&key_bytes);
    let hit = store
        .get_hashed(&key_bytes, hash, monotonic_now_ns(), scratch)
        .map_err(|e| format!("get of key {key} failed: {e}"))?;
    let value = hit.then(|| scratch.clone());
    // (write even on a hit, retry a busy lock, failpoint)
    let slow;
    let (write_always, retry, failpoint_spec) = match mode {
        Mode::ReadThrough => (false, false, None),
        Mode::Update if config.slow_write_ms > 0 => {
            // A slow but live writer (as if descheduled while holding the lock).
            slow = format!("mid_write:sleep={}", config.slow_write_ms);
            (true, false, Some(slow.as_str()))
        }
        Mode::Update => (true, false, None),
        Mode::Forced(spec) => (true, true, spec.as_deref()),
    };
    let foreign = matches!(sabotage, Some(Sabotage::ForeignValue { .. }));
    let retry = retry || foreign;
    let mut insert = InsertCode::None;
    if !hit || write_always || foreign {
        let id = ValueId {
            key: if foreign { key.wrapping_add(1) } else { key },
            worker: config.worker,
            incarnation: config.incarnation,
            index,
        };
        let bytes = value::encode(&id);
        // A present key's value is updated in place, without allocating: a forced write that
        // must reach the allocator drops the key first (absence is always a valid cache
        // state), and again if another worker stored it meanwhile (bounded).
        // A forced write that must free a slot (`mid_release`) removes the key too, which
        // frees its slot: it inserts first when the key is absent, then removes it.
        let must_release = failpoint_spec.is_some_and(|spec| spec.starts_with("mid_release"));
        let must_allocate =
            must_release || failpoint_spec.is_some_and(|spec| spec.starts_with("mid_alloc"));
        let mut allocation_attempts = 0;
        let mut released = false;
        if let Some(spec) = failpoint_spec.filter(|_| !must_release) {
            failpoint::set(Some(spec)).map_err(|e| format!("cannot arm failpoint {spec}: {e}"))?;
        }
        let outcome = loop {
            if must_allocate {
                if must_release {
                    // Armed for the remove only: it frees exactly one slot (the insert may
                    // evict several, each reaching the point).
                    failpoint::set(failpoint_spec)
                        .map_err(|e| format!("cannot arm failpoint {failpoint_spec:?}: {e}"))?;
                }
                released |= store.remove(&key_bytes).unwrap_or(false);
                if must_release {
                    let _ = failpoint::set(None);
                }
                allocation_attempts += 1;
            }
            let outcome = store
                .insert_hashed(&key_bytes, hash, &bytes, monotonic_now_ns())
                .map_err(|e| format!("insert of key {key} failed: {e}"));
            let busy = matches!(outcome, Ok(InsertOutcome::Skipped(SkipReason::LockBusy)));
            if busy && retry && started.elapsed() < FORCED_WRITE_PATIENCE {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let updated = matches!(outcome, Ok(InsertOutcome::Updated));
            if must_allocate && !must_release && updated && allocation_attempts < 100 {
                continue;
            }
            if must_release && !released && allocation_attempts < 100 {
                continue;
            }
            break outcome;
        };
        if failpoint_spec.is_some() {
            let _ = failpoint::set(None);
        }
        insert = InsertCode::from_outcome(outcome?);
    }
    Ok(RequestResult {
        index,
        value,
        insert,
        done_ns: monotonic_now_ns(),
        op_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkerConfig {
        WorkerConfig {
            worker: 1,
            incarnation: 0,
            name: "unit".into(),
            capacity: 4,
            sabotage: None,
            slow_write_ms: 0,
        }
    }

    fn heap_store() -> ShmStore {
        ShmStore::over_memory(store_config(PathBuf::from("/nonexistent"), "unit", 4)).unwrap()
    }

    #[test]
    fn read_through_then_hit_then_forced_update() {
        let store = heap_store();
        let mut scratch = Vec::new();
        let c = config();
        let r = execute(&store, &c, 0, 42, &Mode::ReadThrough, &mut scratch).unwrap();
        assert_eq!((r.value.as_ref(), r.insert), (None, InsertCode::Inserted));
        let r = execute(&store, &c, 1, 42, &Mode::ReadThrough, &mut scratch).unwrap();
        let id = value::decode(r.value.as_ref().unwrap()).unwrap();
        assert_eq!((id.key, id.index, id.worker), (42, 0, 1));
        assert_eq!(r.insert, InsertCode::None);
        let r = execute(&store, &c, 2, 42, &Mode::Forced(None), &mut scratch).unwrap();
        assert!(r.value.is_some());
        assert_eq!(r.insert, InsertCode::Updated);
        let r = execute(&store, &c, 3, 42, &Mode::ReadThrough, &mut scratch).unwrap();
        assert_eq!(value::decode(r.value.as_ref().unwrap()).unwrap().index, 2);
    }

    #[test]
    fn foreign_sabotage_stores_another_keys_value() {
        let store = heap_store();
        let mut scratch = Vec::new();
        let c = WorkerConfig {
            sabotage: Some(Sabotage::ForeignValue { index: 0 }),
            ..config()
        };
        execute(&store, &c, 0, 7, &Mode::ReadThrough, &mut scratch).unwrap();
        let r = execute(&store, &c, 1, 7, &Mode::ReadThrough, &mut scratch).unwrap();
        assert_eq!(value::decode(r.value.as_ref().unwrap()).unwrap().key, 8);
    }
}
