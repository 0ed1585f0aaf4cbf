//! Invalidations for a near-cache: a RESP3 connection in broadcasting tracking mode
//! (`CLIENT TRACKING ON BCAST PREFIX <prefix>`), read by a thread that hands every
//! invalidated key of the prefix to a callback, and reports when the connection is lost
//! (invalidations may then have been missed: the caller flushes its near-cache).
//!
//! The reading thread uses a 100 ms read timeout to notice [`Tracker`] being dropped; this
//! relies on redis-rs's parser keeping a partial reply across a timed-out read (its `Parser`
//! holds the decoder state), which pushes of a few keys make rare and which is not tested.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redis::{PushKind, Value};

use super::client::RemoteError;

/// What the tracking connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingEvent {
    /// These keys (under the prefix) were written, deleted or expired.
    Invalidated(Vec<Vec<u8>>),
    /// The server flushed everything (`FLUSHALL` / `FLUSHDB`).
    FlushAll,
    /// The connection is gone: invalidations may have been missed. Last event.
    Disconnected(String),
}

/// A running tracking connection; dropping it stops the thread (within ~100 ms).
#[derive(Debug)]
pub struct Tracker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const POLL_TIMEOUT_MS: u64 = 100;

impl Tracker {
    /// Connects to `url` (as `client::RemoteClient::open` accepts it), turns tracking on for
    /// `prefix` and starts the reading thread. Errors of the setup are returned here; later
    /// ones arrive as [`TrackingEvent::Disconnected`].
    pub fn start(
        url: &str,
        prefix: &str,
        connect_timeout_ms: u64,
        mut on_event: impl FnMut(TrackingEvent) + Send + 'static,
    ) -> Result<Tracker, RemoteError> {
        if !url.starts_with("redis://") {
            return Err(RemoteError::Config(
                "the URL must start with redis://".into(),
            ));
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        let client =
            redis::Client::open(format!("{url}{separator}protocol=resp3")).map_err(|err| {
                RemoteError::Config(format!("cannot parse the URL ({:?})", err.kind()))
            })?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_millis(connect_timeout_ms.max(1)))
            .map_err(|err| RemoteError::Network(err.to_string()))?;
        con.set_read_timeout(Some(Duration::from_millis(POLL_TIMEOUT_MS)))
            .map_err(|err| RemoteError::Network(err.to_string()))?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(prefix)
            .query::<()>(&mut con)
            .map_err(|err| RemoteError::Server(err.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("warp-cache-tracking".into())
            .spawn(move || loop {
                if thread_stop.load(Ordering::Relaxed) {
                    return;
                }
                match con.recv_response() {
                    Ok(Value::Push {
                        kind: PushKind::Invalidate,
                        data,
                    }) => {
                        if let Some(event) = invalidation(data) {
                            on_event(event);
                        }
                    }
                    // Replies and other pushes are not ours to act on.
                    Ok(_) => {}
                    Err(err) if err.is_timeout() => {}
                    Err(err) => {
                        on_event(TrackingEvent::Disconnected(err.to_string()));
                        return;
                    }
                }
            })
            .map_err(|err| {
                RemoteError::Config(format!("cannot start the tracking thread: {err}"))
            })?;
        Ok(Tracker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic in the caller's callback stays in that thread.
            let _ = thread.join();
        }
    }
}

/// An `invalidate` push: `[keys]` (an array of bulk strings) or `[nil]` (flush all). Anything
/// else from the server is ignored, never a panic.
fn invalidation(data: Vec<Value>) -> Option<TrackingEvent> {
    match data.into_iter().next()? {
        Value::Nil => Some(TrackingEvent::FlushAll),
        Value::Array(keys) => Some(TrackingEvent::Invalidated(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(bytes),
                    Value::SimpleString(text) => Some(text.into_bytes()),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_pushes_are_parsed_and_odd_ones_ignored() {
        assert_eq!(
            invalidation(vec![Value::Nil]),
            Some(TrackingEvent::FlushAll)
        );
        assert_eq!(
            invalidation(vec![Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::Int(3),
            ])]),
            Some(TrackingEvent::Invalidated(vec![b"a".to_vec()]))
        );
        assert_eq!(invalidation(vec![]), None);
        assert_eq!(invalidation(vec![Value::Int(1)]), None);
    }
}
