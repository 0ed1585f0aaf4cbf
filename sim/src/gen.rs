//! Seeded synthetic traces. One seed gives the same keys on every machine and every run:
//! the only randomness is a ChaCha8 stream seeded with `seed`, turned into floats by a fixed
//! formula (no platform- or version-dependent distribution code).
//!
//! Kinds (keys are `u64`, popular keys are small numbers):
//! * `zipf`: independent requests, P(key = k) proportional to 1 / (k + 1)^alpha over `keys`
//!   distinct keys.
//! * `scan`: a Zipf background interrupted by sequential scans of never-seen-again keys;
//!   `scan_fraction` of the requests belong to scans of `scan_len` keys (one-hit wonders,
//!   where SIEVE is expected to beat LRU).
//! * `loop`: `0, 1, ..., keys-1, 0, 1, ...` (LRU's worst case below `keys` entries).
//! * `shift`: Zipf whose hot set moves: `phases` equal phases, each shifted by half of `keys`.
//! * `mixed`: segments (about `scan_len` requests each) drawn at random: Zipf 60%, scan of new
//!   keys 20%, loop over a small set 20%.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What kind of trace to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zipf,
    Scan,
    Loop,
    Shift,
    Mixed,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Zipf, Kind::Scan, Kind::Loop, Kind::Shift, Kind::Mixed];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Zipf => "zipf",
            Kind::Scan => "scan",
            Kind::Loop => "loop",
            Kind::Shift => "shift",
            Kind::Mixed => "mixed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "unknown trace kind {text:?}; expected one of: zipf, scan, loop, shift, mixed"
                )
            })
    }
}

/// Parameters of a generated trace.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    pub kind: Kind,
    pub seed: u64,
    /// Length of the trace.
    pub requests: usize,
    /// Distinct keys of the Zipf / loop part.
    pub keys: u64,
    /// Zipf exponent.
    pub alpha: f64,
    /// Length of one scan (and of one `mixed` segment).
    pub scan_len: usize,
    /// Fraction of requests that belong to scans (`scan`).
    pub scan_fraction: f64,
    /// Number of hot-set phases (`shift`).
    pub phases: usize,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            kind: Kind::Zipf,
            seed: 1,
            requests: 100_000,
            keys: 10_000,
            alpha: 1.0,
            scan_len: 1_000,
            scan_fraction: 0.3,
            phases: 4,
        }
    }
}

impl GenSpec {
    /// Checks the parameters; the message says which one to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.requests == 0 {
            return Err("--requests must be at least 1".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.keys > 100_000_000 {
            return Err(format!(
                "--keys must be at most 100000000 (the Zipf table is held in memory), got {}",
                self.keys
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(format!(
                "--alpha must be a finite number >= 0, got {}",
                self.alpha
            ));
        }
        if self.scan_len == 0 {
            return Err("--scan-len must be at least 1".into());
        }
        if !(self.scan_fraction > 0.0 && self.scan_fraction < 1.0) {
            return Err(format!(
                "--scan-fraction must be strictly between 0 and 1, got {}",
                self.scan_fraction
            ));
        }
        if self.phases == 0 {
            return Err("--phases must be at least 1".into());
        }
        Ok(())
    }
}

/// A uniform float in [0, 1) from 53 random bits (fixed formula, portable).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Zipf sampler over ranks `0..n` by inverse CDF (binary search).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, alpha: f64) -> Zipf {
        assert!(n > 0, "a Zipf distribution needs at least one key");
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(alpha);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u = unit(rng);
        let rank = self.cdf.partition_point(|&c| c <= u);
        rank.min(self.cdf.len() - 1) as u64
    }
}

/// Generates the keys `spec` describes.
pub fn generate(spec: &GenSpec) -> Result<Vec<u64>, String> {
    spec.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let n = spec.requests;
    let mut out = Vec::with_capacity(n);
    match spec.kind {
        Kind::Zipf => {
            let zipf = Zipf::new(spec.keys, spec.alpha);
            out.extend((0..n).map(|_| zipf.sample(&mut rng)));
        }
        Kind::Loop => out.extend((0..n as u64).map(|i| i % spec.keys)),
        Kind::Scan => {
            let zipf = Zipf::new(spec.keys, spec.alpha);
            let background_len = ((spec.scan_len as f64) * (1.0 - spec.scan_fraction)
                / spec.scan_fraction)
                .round()
                .max(1.0) as usize;
            let mut fresh = spec.keys;
            while out.len() < n {
                for _ in 0..background_len.min(n - out.len()) {
                    out.push(zipf.sample(&mut rng));
                }
                for _ in 0..spec.scan_len.min(n - out.len()) {
                    out.push(fresh);
                    fresh += 1;
                }
            }
        }
        Kind::Shift => {
            let zipf = Zipf::new(spec.keys, spec.alpha);
            let shift = (spec.keys / 2).max(1);
            for i in 0..n {
                let phase = (i * spec.phases / n) as u64;
                out.push(zipf.sample(&mut rng) + phase * shift);
            }
        }
        Kind::Mixed => {
            let zipf = Zipf::new(spec.keys, spec.alpha);
            let loop_keys = (spec.keys / 20).max(1);
            let mut fresh = spec.keys;
            while out.len() < n {
                let len =
                    spec.scan_len / 2 + (rng.next_u64() % (spec.scan_len as u64 + 1)) as usize;
                let len = len.max(1).min(n - out.len());
                let pick = unit(&mut rng);
                if pick < 0.6 {
                    out.extend((0..len).map(|_| zipf.sample(&mut rng)));
                } else if pick < 0.8 {
                    out.extend(fresh..fresh + len as u64);
                    fresh += len as u64;
                } else {
                    // A loop over a small set of otherwise cold keys.
                    let base = spec.keys / 2;
                    out.extend((0..len as u64).map(|i| base + i % loop_keys));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `keys` as a text trace (one decimal key per line), gzip-compressed when `gzip`.
/// The gzip header carries no name and no time, so the same keys give the same bytes.
pub fn write_text<W: Write>(keys: &[u64], out: W, gzip: bool) -> io::Result<()> {
    if gzip {
        let mut encoder = flate2::GzBuilder::new()
            .mtime(0)
            .write(out, flate2::Compression::best());
        write_lines(keys, &mut encoder)?;
        encoder.finish()?.flush()
    } else {
        let mut out = io::BufWriter::new(out);
        write_lines(keys, &mut out)?;
        out.flush()
    }
}

fn write_lines<W: Write>(keys: &[u64], out: &mut W) -> io::Result<()> {
    let mut text = String::with_capacity(keys.len() * 8);
    for key in keys {
        use fmt::Write as _;
        let _ = writeln!(text, "{key}");
    }
    out.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{count_unique, read_bytes, Format};

    fn spec(kind: Kind) -> GenSpec {
        GenSpec {
            kind,
            requests: 5_000,
            keys: 500,
            scan_len: 100,
            ..GenSpec::default()
        }
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        for kind in Kind::ALL {
            let a = generate(&spec(kind)).unwrap();
            let b = generate(&spec(kind)).unwrap();
            assert_eq!(a, b, "{kind}");
            assert_eq!(a.len(), 5_000, "{kind}");
            let mut gz_a = Vec::new();
            let mut gz_b = Vec::new();
            write_text(&a, &mut gz_a, true).unwrap();
            write_text(&b, &mut gz_b, true).unwrap();
            assert_eq!(gz_a, gz_b, "{kind}");
        }
    }

    #[test]
    fn different_seeds_differ() {
        let a = generate(&spec(Kind::Zipf)).unwrap();
        let b = generate(&GenSpec {
            seed: 2,
            ..spec(Kind::Zipf)
        })
        .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn known_prefix_pins_the_generator() {
        // If this changes, every committed generated trace and snapshot changes with it.
        let keys = generate(&GenSpec {
            requests: 8,
            ..GenSpec::default()
        })
        .unwrap();
        assert_eq!(keys, vec![28, 0, 192, 4, 8, 588, 50, 1]);
    }

    #[test]
    fn zipf_is_skewed_towards_small_keys() {
        let keys = generate(&GenSpec {
            requests: 20_000,
            keys: 1_000,
            alpha: 1.0,
            ..GenSpec::default()
        })
        .unwrap();
        let zeros = keys.iter().filter(|&&k| k == 0).count();
        let tail = keys.iter().filter(|&&k| k >= 500).count();
        // P(0) = 1/H(1000) ~ 0.134; P(k >= 500) ~ 0.09.
        assert!((2_400..3_000).contains(&zeros), "{zeros}");
        assert!((1_400..2_200).contains(&tail), "{tail}");
        assert!(keys.iter().all(|&k| k < 1_000));
    }

    #[test]
    fn loop_cycles_and_scan_adds_fresh_keys() {
        let keys = generate(&GenSpec {
            kind: Kind::Loop,
            requests: 7,
            keys: 3,
            ..GenSpec::default()
        })
        .unwrap();
        assert_eq!(keys, vec![0, 1, 2, 0, 1, 2, 0]);
        let scan = generate(&spec(Kind::Scan)).unwrap();
        let fresh = scan.iter().filter(|&&k| k >= 500).count();
        assert_eq!(
            count_unique(&scan[..])
                - count_unique(
                    &scan
                        .iter()
                        .copied()
                        .filter(|&k| k < 500)
                        .collect::<Vec<_>>()
                ),
            fresh,
            "scan keys never repeat"
        );
        assert!(
            (1_400..1_600).contains(&fresh),
            "30% of 5000 are scan keys, got {fresh}"
        );
    }

    #[test]
    fn shift_moves_the_hot_set() {
        let keys = generate(&spec(Kind::Shift)).unwrap();
        let first_phase_max = keys[..1_250].iter().max().unwrap();
        let last_phase_min = keys[3_750..].iter().min().unwrap();
        assert!(*first_phase_max < 500);
        assert!(*last_phase_min >= 3 * 250);
    }

    #[test]
    fn written_text_reads_back() {
        let keys = generate(&spec(Kind::Mixed)).unwrap();
        for gzip in [false, true] {
            let mut bytes = Vec::new();
            write_text(&keys, &mut bytes, gzip).unwrap();
            assert_eq!(read_bytes(&bytes, Format::Txt, "t").unwrap().keys, keys);
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_the_flag_name() {
        let bad = GenSpec {
            scan_fraction: 1.5,
            ..GenSpec::default()
        };
        assert!(generate(&bad).unwrap_err().contains("--scan-fraction"));
        let bad = GenSpec {
            alpha: f64::NAN,
            ..GenSpec::default()
        };
        assert!(generate(&bad).unwrap_err().contains("--alpha"));
        assert!("gauss".parse::<Kind>().is_err());
    }
}
