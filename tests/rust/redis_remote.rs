//! The Redis tier against real `redis-server` processes: each test starts its own on a free
//! loopback port (no persistence) and kills it when done. `redis-server` must be on PATH
//! (CI installs it); without it every test fails saying so, never skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warp_cache_core::remote::breaker::{BreakerConfig, BreakerState};
use warp_cache_core::remote::client::{ClientConfig, RemoteClient, RemoteError};
use warp_cache_core::remote::naming::Names;
use warp_cache_core::remote::record::Secret;
use warp_cache_core::remote::tracking::{Tracker, TrackingEvent};

/// A redis-server child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
    extra: Vec<String>,
    dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    // Bind, read the port the kernel chose, release it for the server. (`--port 0` would
    // disable TCP in Redis.) A race with another process taking it fails the PING wait.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wc-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(port, &extra, &dir);
        let server = Server {
            child,
            port,
            extra,
            dir,
        };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} failed");
    }

    /// SIGKILL (`restart` brings a new server up on the same port, same arguments).
    fn kill9(&mut self) {
        self.child.kill().expect("kill -9 redis-server");
        self.child.wait().expect("reap redis-server");
    }

    fn restart(&mut self) {
        self.child = spawn(self.port, &self.extra, &self.dir);
        self.wait_ready();
    }

    /// Until the server answers PING (`+PONG`, or `-NOAUTH` when it wants a password).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut reply = [0u8; 1];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && (reply[0] == b'+' || reply[0] == b'-')
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(port: u16, extra: &[String], dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot start `redis-server` ({err}): these tests need redis-server on PATH \
                 (Debian: apt-get install redis-server)"
            )
        })
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; the SIGCONT is for a kill that fails, so
        // nothing is left stopped.
        let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client(url: &str) -> RemoteClient {
    RemoteClient::open(url, ClientConfig::default()).expect("open client")
}

/// Polls `f` every 20 ms until it is true or `bound` passes; returns whether it became true.
fn eventually(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NS: &str = "tests.redis_remote.f:00ff";

#[test]
fn a_record_round_trips_and_a_bad_one_is_deleted() {
    let server = Server::start(&[]);
    let c = client(&server.url());
    let names = Names::new(NS);
    let secret = Secret::new(b"s3cret".to_vec()).unwrap();
    let key = b"\x04\x01\x00\x00\x00\x00\x00\x00\x00";
    let rkey = names.entry_key(0, key);

    assert_eq!(c.get_record(&rkey, NS, key, Some(&secret)), Ok(None));
    assert_eq!(
        c.set_record(&rkey, NS, key, b"pickled", true, Some(&secret), None),
        Ok(true)
    );
    assert_eq!(
        c.get_record(&rkey, NS, key, Some(&secret)),
        Ok(Some((b"pickled".to_vec(), true)))
    );
    // Without the secret, the same record is not served (and is deleted as unverifiable).
    assert_eq!(c.get_record(&rkey, NS, key, None), Ok(None));
    assert_eq!(c.get(&rkey), Ok(None));

    // An unsigned pickle is never sent.
    assert_eq!(
        c.set_record(&rkey, NS, key, b"p", true, None, None),
        Ok(false)
    );
    assert_eq!(c.get(&rkey), Ok(None));

    // Hostile bytes at the key: a miss, counted, and the key is gone.
    c.set(&rkey, b"\x00garbage", None).unwrap();
    assert_eq!(c.get_record(&rkey, NS, key, Some(&secret)), Ok(None));
    assert_eq!(c.get(&rkey), Ok(None));

    let stats = c.stats();
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, 3);
    assert_eq!(stats.rejected_records, 2);
    assert_eq!(stats.unsigned_pickle_refusals, 1);
    assert_eq!(stats.errors, 0);
}

#[test]
fn a_ttl_expires_the_entry() {
    let server = Server::start(&[]);
    let c = client(&server.url());
    c.set("wc:{t}:0:a", b"v", Some(300_000_000)).unwrap();
    assert_eq!(c.get("wc:{t}:0:a"), Ok(Some(b"v".to_vec())));
    assert!(
        eventually(Duration::from_secs(3), || c.get("wc:{t}:0:a") == Ok(None)),
        "a 300 ms PX entry still there after 3 s"
    );
    // ttl=0 stores nothing; a sub-millisecond TTL rounds up, never to an invalid PX 0.
    c.set("wc:{t}:0:b", b"v", Some(0)).unwrap();
    assert_eq!(c.get("wc:{t}:0:b"), Ok(None));
    c.set("wc:{t}:0:c", b"v", Some(1)).unwrap();
}

#[test]
fn a_generation_increment_makes_old_entries_unreachable() {
    let server = Server::start(&[]);
    let c = client(&server.url());
    let names = Names::new(NS);
    let gen_key = names.generation_key();
    assert_eq!(c.generation(&gen_key), Ok(0));
    let g0 = c.generation(&gen_key).unwrap();
    c.set_record(
        &names.entry_key(g0, b"k"),
        NS,
        b"k",
        b"v0",
        false,
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.incr_generation(&gen_key), Ok(1));
    let g1 = c.generation(&gen_key).unwrap();
    assert_eq!(g1, 1);
    assert_eq!(
        c.get_record(&names.entry_key(g1, b"k"), NS, b"k", None),
        Ok(None)
    );
    // A foreign value at the generation key is a protocol error, not a panic or a 0.
    c.set(&gen_key, b"not a number", None).unwrap();
    assert!(matches!(
        c.generation(&gen_key),
        Err(RemoteError::Protocol(_))
    ));
    assert!(matches!(
        c.incr_generation(&gen_key),
        Err(RemoteError::Server(_))
    ));
}

#[test]
fn a_password_in_the_url_authenticates_and_a_wrong_one_is_an_error() {
    let server = Server::start(&["--requirepass", "pa55word"]);
    let good = client(&format!("redis://:pa55word@127.0.0.1:{}", server.port));
    good.set("k", b"v", None).unwrap();
    assert_eq!(good.get("k"), Ok(Some(b"v".to_vec())));
    // ACL form: the default user by name.
    let named = client(&format!(
        "redis://default:pa55word@127.0.0.1:{}",
        server.port
    ));
    assert_eq!(named.get("k"), Ok(Some(b"v".to_vec())));

    for url in [
        format!("redis://:wrong@127.0.0.1:{}", server.port),
        server.url(),
    ] {
        let bad = client(&url);
        let started = Instant::now();
        let result = bad.get("k");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            matches!(result, Err(RemoteError::Server(_))),
            "{url}: {result:?}"
        );
    }
}

#[test]
fn tls_urls_are_refused_as_unsupported() {
    let err = RemoteClient::open("rediss://127.0.0.1:1", ClientConfig::default()).unwrap_err();
    assert!(matches!(err, RemoteError::Config(_)), "{err:?}");
    assert!(matches!(
        RemoteClient::open("http://x", ClientConfig::default()),
        Err(RemoteError::Config(_))
    ));
}

#[test]
fn a_stopped_server_fails_fast_then_recovers() {
    let server = Server::start(&[]);
    let c = client(&server.url());
    c.set("k", b"v", None).unwrap();
    server.signal("-STOP");
    // Each call is bounded by the command timeout (50 ms): 1 s is a liveness bound.
    let mut saw_open = false;
    for _ in 0..5 {
        let started = Instant::now();
        let result = c.get("k");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a call to a stopped server took {took:?}"
        );
        match result {
            Err(RemoteError::Network(_)) => {}
            Err(RemoteError::BreakerOpen) => saw_open = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_open, "the breaker did not open");
    assert!(matches!(c.breaker().state(), BreakerState::Open { .. }));
    assert!(c.stats().errors >= 3);
    assert!(c.stats().fast_fails >= 1);
    server.signal("-CONT");
    assert!(
        eventually(Duration::from_secs(5), || c.get("k")
            == Ok(Some(b"v".to_vec()))),
        "no recovery within 5 s of SIGCONT: {:?}",
        c.get("k")
    );
    assert_eq!(c.breaker().state(), BreakerState::Closed);
}

#[test]
fn a_killed_server_counts_errors_and_a_restart_recovers() {
    let mut server = Server::start(&[]);
    let config = ClientConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            base_backoff_ns: 50_000_000,
            max_backoff_ns: 200_000_000,
        },
        ..ClientConfig::default()
    };
    let c = RemoteClient::open(&server.url(), config).unwrap();
    c.set("k", b"v", None).unwrap();
    server.kill9();
    for _ in 0..3 {
        assert!(c.get("k").is_err());
    }
    assert!(c.stats().errors >= 1);
    server.restart();
    // No persistence: the restarted server is empty, and answering is what counts.
    assert!(
        eventually(Duration::from_secs(5), || c.get("k") == Ok(None)),
        "no recovery within 5 s of the restart: {:?}",
        c.get("k")
    );
    c.set("k", b"w", None).unwrap();
    assert_eq!(c.get("k"), Ok(Some(b"w".to_vec())));
}

#[test]
fn the_single_flight_lock() {
    let server = Server::start(&[]);
    let c = client(&server.url());
    let lock = Names::new(NS).lock_key(0, b"k");
    assert_eq!(c.try_lock(&lock, "me", 10_000), Ok(true));
    assert_eq!(c.try_lock(&lock, "you", 10_000), Ok(false));
    // A wrong token deletes nothing.
    assert_eq!(c.unlock(&lock, "you"), Ok(false));
    assert_eq!(c.try_lock(&lock, "you", 10_000), Ok(false));
    assert_eq!(c.unlock(&lock, "me"), Ok(true));
    assert_eq!(c.try_lock(&lock, "you", 10_000), Ok(true));
    assert_eq!(c.unlock(&lock, "you"), Ok(true));

    // Expiry by PX: another owner takes the lock, and the first owner's late unlock leaves
    // the new owner's lock alone.
    assert_eq!(c.try_lock(&lock, "slow", 100), Ok(true));
    assert!(
        eventually(Duration::from_secs(3), || c.try_lock(&lock, "next", 10_000)
            == Ok(true)),
        "a 100 ms lock was not released by PX within 3 s"
    );
    assert_eq!(c.unlock(&lock, "slow"), Ok(false));
    assert_eq!(c.get(&lock), Ok(Some(b"next".to_vec())));
}

#[test]
fn tracking_reports_invalidations_of_the_prefix_and_a_disconnect() {
    let mut server = Server::start(&[]);
    let names = Names::new(NS);
    let (tx, rx) = std::sync::mpsc::channel();
    let _tracker = Tracker::start(
        &server.url(),
        names.tracking_prefix(),
        1_000,
        move |event| {
            let _ = tx.send(event);
        },
    )
    .expect("start tracking");
    let writer = client(&server.url());
    // Another namespace's write first: it must not be reported.
    writer
        .set(&Names::new("other").entry_key(0, b"k"), b"v", None)
        .unwrap();
    let ours = names.entry_key(0, b"k");
    writer.set(&ours, b"v", None).unwrap();
    let event = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("no invalidation within 2 s of a SET");
    assert_eq!(
        event,
        TrackingEvent::Invalidated(vec![ours.clone().into_bytes()])
    );
    writer.incr_generation(&names.generation_key()).unwrap();
    let event = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("no invalidation of the generation");
    assert_eq!(
        event,
        TrackingEvent::Invalidated(vec![names.generation_key().into_bytes()])
    );

    server.kill9();
    let event = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("no disconnect reported within 2 s of kill -9");
    assert!(matches!(event, TrackingEvent::Disconnected(_)), "{event:?}");
}
