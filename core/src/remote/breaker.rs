//! A circuit breaker in front of the Redis client: after `failure_threshold` consecutive
//! failures (timeouts, connection errors) calls fail fast without touching the network for a
//! backoff, then one probe call is let through (half-open): success closes the breaker,
//! failure opens it again with a doubled backoff (capped, with up to 1/8 jitter so that many
//! processes do not probe a recovering server in lockstep).
//!
//! Time is an argument (`now_ns`, the one monotonic clock in production), so tests are
//! deterministic. State is a few words under a parking_lot mutex: taken once per remote call,
//! which costs nothing next to the network round trip.
#![forbid(unsafe_code)]

use parking_lot::Mutex;

/// Breaker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First open period; doubles with each reopening without a success in between.
    pub base_backoff_ns: u64,
    /// Longest open period (before jitter).
    pub max_backoff_ns: u64,
}

impl Default for BreakerConfig {
    /// 3 failures, 100 ms doubling to 10 s: with the client's 50 ms command timeout, a dead
    /// server costs a caller at most 3 timeouts before calls fail fast, and a recovered
    /// server is used again within 10 s.
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            base_backoff_ns: 100_000_000,
            max_backoff_ns: 10_000_000_000,
        }
    }
}

/// What the breaker is doing (for counters and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing fast until `until_ns`.
    Open {
        until_ns: u64,
    },
    /// One probe is out since `since_ns`; other calls fail fast.
    HalfOpen {
        since_ns: u64,
    },
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    /// Openings since the last success: the backoff's exponent.
    reopenings: u32,
    jitter_state: u64,
}

/// A thread-safe circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// `jitter_seed` seeds the jitter (any value; tests fix it, production can pass the pid).
    pub fn new(config: BreakerConfig, jitter_seed: u64) -> Breaker {
        Breaker {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                reopenings: 0,
                // xorshift must not start at 0.
                jitter_state: jitter_seed | 1,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Whether a call may go to the network now. An open breaker whose backoff has passed
    /// lets exactly one probe through; a probe that never reports back (its thread died)
    /// is replaced by another after one base backoff, so the breaker cannot stick half-open.
    pub fn allow(&self, now_ns: u64) -> bool {
        let mut inner = self.inner.lock();
        let ready_ns = match inner.state {
            BreakerState::Closed => return true,
            BreakerState::Open { until_ns } => until_ns,
            BreakerState::HalfOpen { since_ns } => {
                since_ns.saturating_add(self.config.base_backoff_ns)
            }
        };
        if now_ns < ready_ns {
            return false;
        }
        inner.state = BreakerState::HalfOpen { since_ns: now_ns };
        true
    }

    /// A call that was allowed succeeded.
    pub fn on_success(&self) {
        let mut inner = self.inner.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.reopenings = 0;
    }

    /// A call that was allowed failed (timeout or connection error; a server's error reply
    /// is an answer, not a failure of the server, and is not reported here).
    pub fn on_failure(&self, now_ns: u64) {
        let mut inner = self.inner.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let open = match inner.state {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Closed => inner.consecutive_failures >= self.config.failure_threshold,
            // A call allowed before the breaker opened reports late: keep the open period.
            BreakerState::Open { .. } => false,
        };
        if open {
            let backoff_ns = self.backoff_ns(&mut inner);
            inner.reopenings = inner.reopenings.saturating_add(1);
            inner.state = BreakerState::Open {
                until_ns: now_ns.saturating_add(backoff_ns),
            };
        }
    }

    /// `base * 2^reopenings`, capped, plus up to 1/8 of it as jitter.
    fn backoff_ns(&self, inner: &mut Inner) -> u64 {
        let doubled = self
            .config
            .base_backoff_ns
            .checked_shl(inner.reopenings.min(63))
            .filter(|&ns| ns >> inner.reopenings.min(63) == self.config.base_backoff_ns)
            .unwrap_or(u64::MAX);
        let backoff_ns = doubled.min(self.config.max_backoff_ns);
        // xorshift64: cheap, and only needs to differ between processes.
        let mut x = inner.jitter_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        inner.jitter_state = x;
        let jitter_range_ns = backoff_ns / 8;
        let jitter_ns = if jitter_range_ns == 0 {
            0
        } else {
            x % (jitter_range_ns + 1)
        };
        backoff_ns.saturating_add(jitter_ns)
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
