//! The line protocol between the parent and its workers (worker stdin / stdout, one message
//! per line, ASCII).
//!
//! Parent -> worker:
//! * `r <index> <key> g`: read-through request (get; on a miss insert this request's value);
//! * `r <index> <key> u`: update (get, then insert even on a hit; skipped if the lock is busy);
//! * `r <index> <key> w[:<failpoint spec>]`: forced write (get, then insert even on a hit,
//!   retried while the lock is busy), with the failpoint armed for the insert if given;
//! * `e <step>`: end of the batch of `step` (answered with `d <step>`);
//! * `q`: quit.
//!
//! Worker -> parent:
//! * `ready <pid>` once the store is open;
//! * `r <index> <h|m> <insert> <done_ns> <op_ns> <value hex|->`: one result, sent (and
//!   flushed) as soon as the request is done; `insert` is an [`InsertCode`] letter, `done_ns`
//!   the CLOCK_MONOTONIC time at completion, `op_ns` the request's duration;
//! * `d <step>`: every request of the batch is done;
//! * `f <message>`: a store operation failed (the worker exits 3 after it).
#![forbid(unsafe_code)]

use warp_cache_core::shm::{InsertOutcome, SkipReason};

use super::value::{from_hex, to_hex};

/// Environment variable that turns a re-executed binary into a worker: its value is a
/// [`WorkerConfig`] line.
pub const WORKER_ENV: &str = "WARP_SIM_WORKER";
/// Environment variable with the run's cache directory (a path; kept out of the config line).
pub const WORKER_DIR_ENV: &str = "WARP_SIM_WORKER_DIR";

/// What a request asks the worker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    ReadThrough,
    /// Insert even on a hit, once (a busy lock skips it).
    Update,
    /// Forced write, with an optional core failpoint spec (`mid_write:kill`).
    Forced(Option<String>),
}

/// Parent -> worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request { index: u64, key: u64, mode: Mode },
    EndBatch { step: u64 },
    Quit,
}

impl Command {
    pub fn to_line(&self) -> String {
        match self {
            Command::Request { index, key, mode } => {
                let mode = match mode {
                    Mode::ReadThrough => "g".to_owned(),
                    Mode::Update => "u".to_owned(),
                    Mode::Forced(None) => "w".to_owned(),
                    Mode::Forced(Some(spec)) => format!("w:{spec}"),
                };
                format!("r {index} {key} {mode}")
            }
            Command::EndBatch { step } => format!("e {step}"),
            Command::Quit => "q".to_owned(),
        }
    }

    pub fn parse(line: &str) -> Result<Command, String> {
        let mut parts = line.split_ascii_whitespace();
        let bad = || format!("bad command line {line:?}");
        let number = |part: Option<&str>| -> Result<u64, String> {
            part.and_then(|p| p.parse().ok()).ok_or_else(bad)
        };
        match parts.next() {
            Some("r") => {
                let index = number(parts.next())?;
                let key = number(parts.next())?;
                let mode = match parts.next() {
                    Some("g") => Mode::ReadThrough,
                    Some("u") => Mode::Update,
                    Some("w") => Mode::Forced(None),
                    Some(other) => match other.strip_prefix("w:") {
                        Some(spec) => Mode::Forced(Some(spec.to_owned())),
                        None => return Err(bad()),
                    },
                    None => return Err(bad()),
                };
                Ok(Command::Request { index, key, mode })
            }
            Some("e") => Ok(Command::EndBatch {
                step: number(parts.next())?,
            }),
            Some("q") => Ok(Command::Quit),
            _ => Err(bad()),
        }
    }
}

/// What happened to the insert of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertCode {
    /// No insert (a read-through hit).
    None,
    Inserted,
    InsertedEvicting,
    Updated,
    SkippedBusy,
    SkippedOversize,
    SkippedZeroTtl,
    SkippedCorrupt,
}

impl InsertCode {
    pub fn from_outcome(outcome: InsertOutcome) -> InsertCode {
        match outcome {
            InsertOutcome::Inserted { evicted: false } => InsertCode::Inserted,
            InsertOutcome::Inserted { evicted: true } => InsertCode::InsertedEvicting,
            InsertOutcome::Updated => InsertCode::Updated,
            InsertOutcome::Skipped(SkipReason::LockBusy) => InsertCode::SkippedBusy,
            InsertOutcome::Skipped(SkipReason::Oversize) => InsertCode::SkippedOversize,
            InsertOutcome::Skipped(SkipReason::ZeroTtl) => InsertCode::SkippedZeroTtl,
            // All three mean the store could not write where it should: nothing was stored
            // (a full filesystem also drops an entry whose update needed a larger extent).
            InsertOutcome::Skipped(
                SkipReason::Corrupt | SkipReason::Unfollowable | SkipReason::NoSpace,
            ) => InsertCode::SkippedCorrupt,
        }
    }

    /// Whether the value is in the store when the insert returns.
    pub fn stored(self) -> bool {
        matches!(
            self,
            InsertCode::Inserted | InsertCode::InsertedEvicting | InsertCode::Updated
        )
    }

    pub fn letter(self) -> char {
        match self {
            InsertCode::None => '-',
            InsertCode::Inserted => 'i',
            InsertCode::InsertedEvicting => 'e',
            InsertCode::Updated => 'u',
            InsertCode::SkippedBusy => 'b',
            InsertCode::SkippedOversize => 'o',
            InsertCode::SkippedZeroTtl => 'z',
            InsertCode::SkippedCorrupt => 'c',
        }
    }

    pub fn from_letter(letter: &str) -> Option<InsertCode> {
        Some(match letter {
            "-" => InsertCode::None,
            "i" => InsertCode::Inserted,
            "e" => InsertCode::InsertedEvicting,
            "u" => InsertCode::Updated,
            "b" => InsertCode::SkippedBusy,
            "o" => InsertCode::SkippedOversize,
            "z" => InsertCode::SkippedZeroTtl,
            "c" => InsertCode::SkippedCorrupt,
            _ => return None,
        })
    }
}

/// One request's result, as reported by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestResult {
    pub index: u64,
    /// The get's value on a hit.
    pub value: Option<Vec<u8>>,
    pub insert: InsertCode,
    pub done_ns: u64,
    pub op_ns: u64,
}

/// Worker -> parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ready { pid: u32 },
    Result(RequestResult),
    Done { step: u64 },
    Fatal(String),
}

impl Reply {
    pub fn to_line(&self) -> String {
        match self {
            Reply::Ready { pid } => format!("ready {pid}"),
            Reply::Result(r) => {
                let (hit, value) = match &r.value {
                    Some(bytes) => ('h', to_hex(bytes)),
                    None => ('m', "-".to_owned()),
                };
                format!(
                    "r {} {hit} {} {} {} {value}",
                    r.index,
                    r.insert.letter(),
                    r.done_ns,
                    r.op_ns
                )
            }
            Reply::Done { step } => format!("d {step}"),
            Reply::Fatal(message) => format!("f {}", message.replace('\n', " ")),
        }
    }

    pub fn parse(line: &str) -> Result<Reply, String> {
        let bad = || format!("bad reply line {line:?}");
        let mut parts = line.split_ascii_whitespace();
        let number = |part: Option<&str>| -> Result<u64, String> {
            part.and_then(|p| p.parse().ok()).ok_or_else(bad)
        };
        match parts.next() {
            Some("ready") => Ok(Reply::Ready {
                pid: u32::try_from(number(parts.next())?).map_err(|_| bad())?,
            }),
            Some("r") => {
                let index = number(parts.next())?;
                let hit = parts.next().ok_or_else(bad)?;
                let insert =
                    InsertCode::from_letter(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
                let done_ns = number(parts.next())?;
                let op_ns = number(parts.next())?;
                let value_text = parts.next().ok_or_else(bad)?;
                let value = match hit {
                    "h" => Some(from_hex(value_text).ok_or_else(bad)?),
                    "m" if value_text == "-" => None,
                    _ => return Err(bad()),
                };
                Ok(Reply::Result(RequestResult {
                    index,
                    value,
                    insert,
                    done_ns,
                    op_ns,
                }))
            }
            Some("d") => Ok(Reply::Done {
                step: number(parts.next())?,
            }),
            Some("f") => Ok(Reply::Fatal(
                line.get(2..).unwrap_or_default().trim().to_owned(),
            )),
            _ => Err(bad()),
        }
    }
}

/// A deliberate bug injected into a worker, to prove that the harness detects each failure
/// class (tests only; not reachable from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// At this request the worker stores a value built for another key (a wrong value that a
    /// later get of the key returns).
    ForeignValue { index: u64 },
    /// At this request the worker stops answering (sleeps for an hour): a liveness failure.
    Hang { index: u64 },
    /// At this request the worker panics: a crash.
    Panic { index: u64 },
}

/// Everything a worker needs, passed in [`WORKER_ENV`] (the directory in [`WORKER_DIR_ENV`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub worker: u16,
    pub incarnation: u16,
    pub name: String,
    pub capacity: u32,
    pub sabotage: Option<Sabotage>,
    /// `--slow-writes`: every update (`u` request) holds the writer lock this much longer
    /// (core failpoint `mid_write:sleep=MS`); 0 = off.
    pub slow_write_ms: u32,
}

impl WorkerConfig {
    pub fn to_line(&self) -> String {
        let sabotage = match self.sabotage {
            None => "none".to_owned(),
            Some(Sabotage::ForeignValue { index }) => format!("foreign:{index}"),
            Some(Sabotage::Hang { index }) => format!("hang:{index}"),
            Some(Sabotage::Panic { index }) => format!("panic:{index}"),
        };
        format!(
            "v1 worker={} incarnation={} capacity={} name={} sabotage={sabotage} slow_write_ms={}",
            self.worker, self.incarnation, self.capacity, self.name, self.slow_write_ms
        )
    }

    pub fn parse(line: &str) -> Result<WorkerConfig, String> {
        let bad = |what: &str| format!("bad {WORKER_ENV} ({what}): {line:?}");
        let mut parts = line.split_ascii_whitespace();
        if parts.next() != Some("v1") {
            return Err(bad("version"));
        }
        let mut config = WorkerConfig {
            worker: 0,
            incarnation: 0,
            name: String::new(),
            capacity: 0,
            sabotage: None,
            slow_write_ms: 0,
        };
        for part in parts {
            let (field, value) = part.split_once('=').ok_or_else(|| bad(part))?;
            match field {
                "worker" => config.worker = value.parse().map_err(|_| bad(field))?,
                "incarnation" => config.incarnation = value.parse().map_err(|_| bad(field))?,
                "capacity" => config.capacity = value.parse().map_err(|_| bad(field))?,
                "name" => config.name = value.to_owned(),
                "slow_write_ms" => config.slow_write_ms = value.parse().map_err(|_| bad(field))?,
                "sabotage" => {
                    config.sabotage = match value.split_once(':') {
                        None if value == "none" => None,
                        Some((kind, index)) => {
                            let index: u64 = index.parse().map_err(|_| bad(field))?;
                            match kind {
                                "foreign" => Some(Sabotage::ForeignValue { index }),
                                "hang" => Some(Sabotage::Hang { index }),
                                "panic" => Some(Sabotage::Panic { index }),
                                _ => return Err(bad(field)),
                            }
                        }
                        None => return Err(bad(field)),
                    }
                }
                _ => return Err(bad(field)),
            }
        }
        if config.name.is_empty() || config.capacity == 0 {
            return Err(bad("name and capacity are required"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            Command::Request {
                index: 12,
                key: u64::MAX,
                mode: Mode::ReadThrough,
            },
            Command::Request {
                index: 0,
                key: 5,
                mode: Mode::Forced(None),
            },
            Command::Request {
                index: 3,
                key: 6,
                mode: Mode::Update,
            },
            Command::Request {
                index: 1,
                key: 5,
                mode: Mode::Forced(Some("mid_write:kill".into())),
            },
            Command::EndBatch { step: 99 },
            Command::Quit,
        ] {
            assert_eq!(Command::parse(&command.to_line()), Ok(command));
        }
        assert!(Command::parse("r 1 x g").is_err());
        assert!(Command::parse("r 1 2 x").is_err());
        assert!(Command::parse("zz").is_err());
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ready { pid: 42 },
            Reply::Result(RequestResult {
                index: 7,
                value: Some(vec![1, 2, 255]),
                insert: InsertCode::None,
                done_ns: 123,
                op_ns: 4,
            }),
            Reply::Result(RequestResult {
                index: 8,
                value: None,
                insert: InsertCode::SkippedBusy,
                done_ns: 1,
                op_ns: 100_000_000,
            }),
            Reply::Done { step: 3 },
            Reply::Fatal("store error: bad".into()),
        ] {
            assert_eq!(Reply::parse(&reply.to_line()), Ok(reply));
        }
        assert!(Reply::parse("r 1 h i 1 1 zz").is_err());
        assert!(Reply::parse("r 1 m q 1 1 -").is_err());
        assert!(Reply::parse("running 1 test").is_err());
    }

    #[test]
    fn worker_configs_round_trip() {
        for sabotage in [
            None,
            Some(Sabotage::ForeignValue { index: 3 }),
            Some(Sabotage::Hang { index: 4 }),
            Some(Sabotage::Panic { index: 5 }),
        ] {
            let config = WorkerConfig {
                worker: 2,
                incarnation: 1,
                name: "sim-7".into(),
                capacity: 100,
                sabotage,
                slow_write_ms: 3,
            };
            assert_eq!(WorkerConfig::parse(&config.to_line()), Ok(config));
        }
        assert!(WorkerConfig::parse("v2 worker=1").is_err());
        assert!(WorkerConfig::parse("v1 worker=1").is_err());
    }
}
