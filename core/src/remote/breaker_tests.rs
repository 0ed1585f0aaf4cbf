use super::*;

const MS: u64 = 1_000_000;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        base_backoff_ns: 100 * MS,
        max_backoff_ns: 1_000 * MS,
    }
}

fn open_until(breaker: &Breaker) -> u64 {
    match breaker.state() {
        BreakerState::Open { until_ns } => until_ns,
        other => panic!("expected open, got {other:?}"),
    }
}

#[test]
fn opens_after_the_threshold_of_consecutive_failures() {
    let b = Breaker::new(config(), 42);
    assert!(b.allow(0));
    b.on_failure(0);
    b.on_failure(1);
    // A success in between resets the count.
    b.on_success();
    b.on_failure(2);
    b.on_failure(3);
    assert_eq!(b.state(), BreakerState::Closed);
    b.on_failure(4);
    let until = open_until(&b);
    assert!((4 + 100 * MS..=4 + 100 * MS + 100 * MS / 8).contains(&until));
    assert!(!b.allow(5));
    assert!(!b.allow(until - 1));
}

#[test]
fn half_open_lets_one_probe_through() {
    let b = Breaker::new(config(), 42);
    for t in 0..3 {
        b.on_failure(t);
    }
    let until = open_until(&b);
    assert!(b.allow(until));
    assert_eq!(b.state(), BreakerState::HalfOpen { since_ns: until });
    // Others fail fast while the probe is out.
    assert!(!b.allow(until + 1));
    b.on_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.allow(until + 2));
}

#[test]
fn a_failed_probe_reopens_with_a_doubled_capped_backoff() {
    let b = Breaker::new(config(), 7);
    for t in 0..3 {
        b.on_failure(t);
    }
    let mut now = open_until(&b);
    let mut expected_ns = 100 * MS;
    for _ in 0..8 {
        expected_ns = (expected_ns * 2).min(1_000 * MS);
        assert!(b.allow(now));
        b.on_failure(now);
        let until = open_until(&b);
        let backoff = until - now;
        assert!(
            (expected_ns..=expected_ns + expected_ns / 8).contains(&backoff),
            "{backoff} vs {expected_ns}"
        );
        now = until;
    }
    // One success forgets the history: the next opening uses the base backoff again.
    assert!(b.allow(now));
    b.on_success();
    for _ in 0..3 {
        b.on_failure(now);
    }
    assert!(open_until(&b) - now <= 100 * MS + 100 * MS / 8);
}

#[test]
fn a_lost_probe_is_replaced_after_one_base_backoff() {
    let b = Breaker::new(config(), 1);
    for t in 0..3 {
        b.on_failure(t);
    }
    let until = open_until(&b);
    assert!(b.allow(until));
    assert!(!b.allow(until + 100 * MS - 1));
    assert!(b.allow(until + 100 * MS));
}

#[test]
fn jitter_differs_between_seeds_and_stays_in_bounds() {
    let untils: Vec<u64> = (1..=16)
        .map(|seed| {
            let b = Breaker::new(config(), seed);
            for _ in 0..3 {
                b.on_failure(0);
            }
            open_until(&b)
        })
        .collect();
    assert!(untils
        .iter()
        .all(|&u| (100 * MS..=100 * MS + 100 * MS / 8).contains(&u)));
    assert!(untils.iter().any(|&u| u != untils[0]));
}

#[test]
fn huge_backoffs_saturate() {
    let b = Breaker::new(
        BreakerConfig {
            failure_threshold: 1,
            base_backoff_ns: u64::MAX / 2,
            max_backoff_ns: u64::MAX,
        },
        3,
    );
    b.on_failure(10);
    let mut now = open_until(&b);
    for _ in 0..70 {
        assert!(b.allow(now));
        b.on_failure(now);
        now = open_until(&b);
    }
    assert_eq!(now, u64::MAX);
}

#[test]
fn is_shared_between_threads() {
    let b = std::sync::Arc::new(Breaker::new(config(), 9));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if b.allow(0) {
                        b.on_failure(0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(!b.allow(1));
}
