//! A blocking Redis client behind the circuit breaker: one connection (made on first use and
//! again after a network failure), every call bounded by a connect and a command timeout.
//!
//! Defaults: **50 ms connect, 50 ms per command**. A cache lookup that takes longer than
//! recomputing is worse than a miss, and a same-datacenter Redis answers in well under 1 ms,
//! so 50 ms is ~50x a healthy round trip (room for a GC pause or a busy server) while a dead
//! or stopped server costs a caller at most `failure_threshold` x 50 ms before the breaker
//! makes calls fail fast. Both are configurable ([`ClientConfig`]).
//!
//! The connection sits under a mutex: concurrent callers of one client take turns (a pool is
//! for later). A caller that waited for the mutex checks the breaker again, so threads queued
//! behind a timing-out call fail fast once it opens instead of each waiting a timeout.
//!
//! URLs: `redis://[user[:password]@]host[:port][/db]` (user and password are sent as AUTH /
//! ACL `AUTH user password`). `rediss://` is refused with [`RemoteError::Config`]: the
//! crate's TLS features are not enabled in this slice.
#![forbid(unsafe_code)]

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, RedisError, RedisResult};

use super::breaker::{Breaker, BreakerConfig};
use super::counters::{RemoteCounters, RemoteStats};
use super::record::{self, EncodeRefusal, Secret};
use crate::clock::monotonic_now_ns;

/// Client parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    pub connect_timeout_ms: u64,
    /// Read and write timeout of every command.
    pub command_timeout_ms: u64,
    pub breaker: BreakerConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 50,
            command_timeout_ms: 50,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Why a remote call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The breaker is open: the network was not touched.
    BreakerOpen,
    /// The URL or configuration cannot be used.
    Config(String),
    /// A timeout, a refused or dropped connection (counts toward opening the breaker).
    Network(String),
    /// The server answered with an error (wrong password, wrong type, script error).
    Server(String),
    /// The server's answer is not what the command returns (hostile or foreign data).
    Protocol(String),
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::BreakerOpen => f.write_str("redis: circuit breaker open"),
            RemoteError::Config(m) => write!(f, "redis configuration: {m}"),
            RemoteError::Network(m) => write!(f, "redis network: {m}"),
            RemoteError::Server(m) => write!(f, "redis server error: {m}"),
            RemoteError::Protocol(m) => write!(f, "redis protocol: {m}"),
        }
    }
}

impl std::error::Error for RemoteError {}

/// Deletes the lock only if it still holds our token: a lock that expired and was taken by
/// another process is left alone.
const UNLOCK_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The blocking client.
pub struct RemoteClient {
    client: redis::Client,
    config: ClientConfig,
    breaker: Breaker,
    conn: Mutex<Option<Connection>>,
    counters: RemoteCounters,
}

impl std::fmt::Debug for RemoteClient {
    // The connection info holds the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("config", &self.config)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl RemoteClient {
    /// Parses `url`; connects lazily (on the first call).
    pub fn open(url: &str, config: ClientConfig) -> Result<RemoteClient, RemoteError> {
        if url.starts_with("rediss://") {
            return Err(RemoteError::Config(
                "rediss:// (TLS) is not supported by this build".into(),
            ));
        }
        if !url.starts_with("redis://") {
            return Err(RemoteError::Config(
                "the URL must start with redis://".into(),
            ));
        }
        if config.connect_timeout_ms == 0 || config.command_timeout_ms == 0 {
            // A zero Duration means "no timeout" to the socket API: never wanted here.
            return Err(RemoteError::Config("timeouts must be at least 1 ms".into()));
        }
        let client = redis::Client::open(url).map_err(|err| {
            RemoteError::Config(format!(
                "cannot parse the URL ({:?}; the URL itself is not shown: it may hold a password)",
                err.kind()
            ))
        })?;
        Ok(RemoteClient {
            client,
            config,
            breaker: Breaker::new(config.breaker, u64::from(std::process::id())),
            conn: Mutex::new(None),
            counters: RemoteCounters::default(),
        })
    }

    pub fn stats(&self) -> RemoteStats {
        self.counters.snapshot()
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The raw value of `key` (uncounted; see [`Self::get_record`]).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        self.call(|con| redis::cmd("GET").arg(key).query(con))
    }

    /// Reads and verifies the record at `redis_key` (see `record::decode`). A record that
    /// fails verification is deleted, counted, and read as a miss.
    pub fn get_record(
        &self,
        redis_key: &str,
        namespace: &str,
        encoded_key: &[u8],
        secret: Option<&Secret>,
    ) -> Result<Option<(Vec<u8>, bool)>, RemoteError> {
        let Some(bytes) = self.get(redis_key)? else {
            self.counters.miss();
            return Ok(None);
        };
        match record::decode(&bytes, namespace, encoded_key, secret) {
            Ok(decoded) => {
                self.counters.hit();
                Ok(Some((decoded.value.to_vec(), decoded.is_pickle)))
            }
            Err(_) => {
                self.counters.rejected_record();
                self.counters.miss();
                // Best effort: a failure here is counted by `call`; the read is a miss anyway.
                let _ = self.del(redis_key);
                Ok(None)
            }
        }
    }

    /// Encodes and stores a record. `Ok(false)`: refused (an unsigned pickle, counted, or too
    /// large), nothing sent.
    #[allow(clippy::too_many_arguments)]
    pub fn set_record(
        &self,
        redis_key: &str,
        namespace: &str,
        encoded_key: &[u8],
        value: &[u8],
        is_pickle: bool,
        secret: Option<&Secret>,
        ttl_ns: Option<u64>,
    ) -> Result<bool, RemoteError> {
        match record::encode(namespace, encoded_key, value, is_pickle, secret) {
            Ok(bytes) => self.set(redis_key, &bytes, ttl_ns).map(|()| true),
            Err(EncodeRefusal::UnsignedPickle) => {
                self.counters.unsigned_pickle_refusal();
                Ok(false)
            }
            Err(EncodeRefusal::TooLarge) => Ok(false),
        }
    }

    /// `SET key value [PX ms]`. A TTL is rounded up to whole milliseconds (never to 0, which
    /// Redis refuses); `Some(0)` stores nothing (`ttl=0` stores nothing, INV-5).
    pub fn set(&self, key: &str, value: &[u8], ttl_ns: Option<u64>) -> Result<(), RemoteError> {
        match ttl_ns {
            Some(0) => Ok(()),
            Some(ttl_ns) => {
                let px_ms = ttl_ns.div_ceil(1_000_000);
                self.call(|con| {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg(px_ms)
                        .query(con)
                })
            }
            None => self.call(|con| redis::cmd("SET").arg(key).arg(value).query(con)),
        }
    }

    pub fn del(&self, key: &str) -> Result<(), RemoteError> {
        self.call(|con| redis::cmd("DEL").arg(key).query::<i64>(con))
            .map(|_| ())
    }

    /// The current generation (0 when the key is absent).
    pub fn generation(&self, generation_key: &str) -> Result<u64, RemoteError> {
        let raw: Option<Vec<u8>> =
            self.call(|con| redis::cmd("GET").arg(generation_key).query(con))?;
        match raw {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| RemoteError::Protocol("the generation is not a number".into())),
        }
    }

    /// `INCR` of the generation: every entry of the older generations becomes unreachable.
    pub fn incr_generation(&self, generation_key: &str) -> Result<u64, RemoteError> {
        let next: i64 = self.call(|con| redis::cmd("INCR").arg(generation_key).query(con))?;
        u64::try_from(next).map_err(|_| RemoteError::Protocol("negative generation".into()))
    }

    /// Single flight: `SET lock token NX PX px_ms`; true if we hold the lock now.
    pub fn try_lock(&self, lock_key: &str, token: &str, px_ms: u64) -> Result<bool, RemoteError> {
        let px_ms = px_ms.max(1);
        let reply: Option<String> = self.call(|con| {
            redis::cmd("SET")
                .arg(lock_key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(px_ms)
                .query(con)
        })?;
        Ok(reply.is_some())
    }

    /// Releases the lock if it still holds `token` (compare and delete in one script); true if
    /// it was ours and is gone.
    pub fn unlock(&self, lock_key: &str, token: &str) -> Result<bool, RemoteError> {
        let deleted: i64 = self.call(|con| {
            redis::cmd("EVAL")
                .arg(UNLOCK_SCRIPT)
                .arg(1)
                .arg(lock_key)
                .arg(token)
                .query(con)
        })?;
        Ok(deleted == 1)
    }

    /// Runs one command through the breaker on the (re)made connection.
    fn call<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, RemoteError> {
        if !self.breaker.allow(monotonic_now_ns()) {
            self.counters.fast_fail();
            return Err(RemoteError::BreakerOpen);
        }
        let mut guard = self.conn.lock();
        // A caller queued behind a failing call: the breaker may have opened meanwhile.
        // (`allow` is not asked twice: a half-open probe must stay the only call out.)
        if matches!(
            self.breaker.state(),
            super::breaker::BreakerState::Open { .. }
        ) {
            self.counters.fast_fail();
            return Err(RemoteError::BreakerOpen);
        }
        if guard.is_none() {
            match self.connect() {
                Ok(con) => *guard = Some(con),
                Err(err) => {
                    self.counters.error();
                    self.breaker.on_failure(monotonic_now_ns());
                    return Err(err);
                }
            }
        }
        let con = guard
            .as_mut()
            .unwrap_or_else(|| unreachable!("connected above"));
        match f(con) {
            Ok(value) => {
                self.breaker.on_success();
                Ok(value)
            }
            Err(err) => {
                self.counters.error();
                if is_network(&err) {
                    // After a timeout a reply may still be in flight: the connection is out of
                    // step and is never reused.
                    *guard = None;
                    self.breaker.on_failure(monotonic_now_ns());
                    Err(RemoteError::Network(describe(&err)))
                } else {
                    // The server answered: it is alive.
                    if err.is_unrecoverable_error() {
                        *guard = None;
                    }
                    self.breaker.on_success();
                    Err(classify_reply_error(&err))
                }
            }
        }
    }

    fn connect(&self) -> Result<Connection, RemoteError> {
        let command_timeout = Some(Duration::from_millis(self.config.command_timeout_ms));
        let con = self
            .client
            .get_connection_with_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .map_err(|err| {
                if is_network(&err) {
                    RemoteError::Network(describe(&err))
                } else {
                    // A wrong password or user lands here: an answer, not a dead server, but
                    // counted toward the breaker by the caller so a misconfigured cache does
                    // not retry on every call.
                    RemoteError::Server(describe(&err))
                }
            })?;
        con.set_read_timeout(command_timeout)
            .and_then(|()| con.set_write_timeout(command_timeout))
            .map_err(|err| RemoteError::Network(describe(&err)))?;
        Ok(con)
    }
}

fn is_network(err: &RedisError) -> bool {
    err.is_timeout()
        || err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
}

fn classify_reply_error(err: &RedisError) -> RemoteError {
    // A reply of the wrong shape (e.g. a foreign value where a number belongs) is the
    // client's "type error"; everything else is the server's error reply.
    if matches!(
        err.kind(),
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse
    ) {
        RemoteError::Protocol(describe(err))
    } else {
        RemoteError::Server(describe(err))
    }
}

/// The error's text (redis-rs never puts the password in it).
fn describe(err: &RedisError) -> String {
    err.to_string()
}
