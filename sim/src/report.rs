//! Hit-rate reports: replay one trace through several policies at several capacities, then
//! render the result as a text table, JSON or an SVG plot (miss ratio against cache size).

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::policies::{self, Future, PolicyKind};
use crate::trace::{count_unique, Trace};

/// The reference SIEVE costs O(capacity) per request. When it was not asked for by name, it
/// is skipped (with a note) on runs where requests x capacity exceeds this.
pub const MODEL_SIEVE_WORK_MAX: u64 = 2_000_000_000;

/// A cache size as given on the command line: absolute (`1000`) or a percentage of the
/// trace's unique keys (`5%`, `0.5%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacitySpec {
    Absolute(usize),
    /// Thousandths of a percent (`5%` is 5000), so that resolution is exact integer math.
    PercentMilli(u64),
}

impl CapacitySpec {
    /// The number of entries for a trace with `unique_keys` distinct keys:
    /// `max(1, round_half_up(pct / 100 * unique_keys))`, in integers (the oracle script uses
    /// the same formula).
    pub fn resolve(self, unique_keys: usize) -> usize {
        match self {
            CapacitySpec::Absolute(capacity) => capacity,
            CapacitySpec::PercentMilli(milli) => {
                let scaled = u128::from(milli) * unique_keys as u128;
                (((scaled + 50_000) / 100_000) as usize).max(1)
            }
        }
    }

    /// Parses a comma-separated list such as `1%,5%,10%` or `100,1000`.
    pub fn parse_list(text: &str) -> Result<Vec<CapacitySpec>, String> {
        let specs = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<CapacitySpec>, String>>()?;
        if specs.is_empty() {
            return Err("--capacity needs at least one size, e.g. 1%,5%,10% or 100,1000".into());
        }
        Ok(specs)
    }
}

impl FromStr for CapacitySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "bad capacity {text:?}: use a positive number of entries (1000) or a percentage of the unique keys (5%, 0.5%)"
            )
        };
        if let Some(percent) = text.strip_suffix('%') {
            let (whole, fraction) = percent
                .trim()
                .split_once('.')
                .unwrap_or((percent.trim(), ""));
            if (whole.is_empty() && fraction.is_empty())
                || fraction.len() > 3
                || !whole.bytes().all(|b| b.is_ascii_digit())
                || !fraction.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let fraction_milli: u64 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
            let milli = whole
                .checked_mul(1000)
                .and_then(|m| m.checked_add(fraction_milli))
                .ok_or_else(bad)?;
            if milli == 0 || milli > 100_000 {
                return Err(format!(
                    "bad capacity {text:?}: a percentage must be above 0% and at most 100%"
                ));
            }
            return Ok(CapacitySpec::PercentMilli(milli));
        }
        let capacity: usize = text.trim().parse().map_err(|_| bad())?;
        if capacity == 0 {
            return Err(bad());
        }
        Ok(CapacitySpec::Absolute(capacity))
    }
}

impl fmt::Display for CapacitySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapacitySpec::Absolute(capacity) => write!(f, "{capacity}"),
            CapacitySpec::PercentMilli(milli) => {
                let text = format!("{}.{:03}", milli / 1000, milli % 1000);
                let text = text.trim_end_matches('0').trim_end_matches('.');
                write!(f, "{text}%")
            }
        }
    }
}

/// Receives progress while a report runs (the CLI draws a bar; tests pass [`NoProgress`]).
pub trait Progress {
    /// A run of `total` requests (summed over every policy and capacity) begins.
    fn start(&mut self, total: u64);
    /// `done` of `total` requests are replayed; `what` names the current job.
    fn update(&mut self, done: u64, what: &str);
    fn finish(&mut self);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _total: u64) {}
    fn update(&mut self, _done: u64, _what: &str) {}
    fn finish(&mut self) {}
}

/// What the report was run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    pub name: String,
    pub format: String,
    pub requests: usize,
    pub unique_keys: usize,
}

/// One policy at one capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    pub policy: String,
    pub misses: u64,
    pub miss_ratio: f64,
}

/// Every policy at one capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Entries the cache could hold.
    pub capacity: usize,
    /// How the capacity was asked for (`1%`, `1000`).
    pub requested: String,
    pub results: Vec<PolicyResult>,
}

impl Row {
    pub fn result(&self, policy: PolicyKind) -> Option<&PolicyResult> {
        self.results.iter().find(|r| r.policy == policy.name())
    }

    /// Miss ratio of SIEVE (production, else reference) minus LRU's; negative when SIEVE
    /// misses less.
    pub fn sieve_minus_lru(&self) -> Option<f64> {
        let sieve = self
            .result(PolicyKind::Sieve)
            .or_else(|| self.result(PolicyKind::ModelSieve))?;
        let lru = self.result(PolicyKind::Lru)?;
        Some(sieve.miss_ratio - lru.miss_ratio)
    }
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub trace: TraceSummary,
    /// Policy columns, in order.
    pub policies: Vec<String>,
    pub rows: Vec<Row>,
    /// Skipped work, checks passed or failed.
    pub notes: Vec<String>,
    /// Capacities at which the SIEVE implementations (sieve, shm-sieve, model-sieve) disagree
    /// (must stay empty).
    pub sieve_mismatches: Vec<usize>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub capacities: Vec<CapacitySpec>,
    pub policies: Vec<PolicyKind>,
    /// Run the reference SIEVE even when it would take long (it was asked for by name).
    pub force_model_sieve: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            capacities: vec![
                CapacitySpec::PercentMilli(1_000),
                CapacitySpec::PercentMilli(5_000),
                CapacitySpec::PercentMilli(10_000),
            ],
            policies: PolicyKind::ALL.to_vec(),
            force_model_sieve: false,
        }
    }
}

/// Replays `trace` through every policy at every capacity.
pub fn run(
    trace: &Trace,
    options: &ReportOptions,
    progress: &mut dyn Progress,
) -> Result<Report, String> {
    let requests = trace.keys.len();
    let unique_keys = count_unique(&trace.keys);
    let mut notes = Vec::new();

    let mut capacities: Vec<(usize, String)> = Vec::new();
    for spec in &options.capacities {
        let capacity = spec.resolve(unique_keys);
        if capacities.iter().all(|(c, _)| *c != capacity) {
            capacities.push((capacity, spec.to_string()));
        }
    }

    let mut policies = options.policies.clone();
    policies.sort();
    policies.dedup();
    let max_capacity = capacities.iter().map(|(c, _)| *c).max().unwrap_or(1);
    let model_work = requests as u64 * max_capacity as u64;
    if policies.contains(&PolicyKind::ModelSieve)
        && !options.force_model_sieve
        && model_work > MODEL_SIEVE_WORK_MAX
    {
        policies.retain(|&p| p != PolicyKind::ModelSieve);
        notes.push(format!(
            "model-sieve skipped: the reference SIEVE is O(capacity) per request ({requests} requests x {max_capacity} entries); ask for it with --policies model-sieve,... to run it anyway"
        ));
    }

    let future = policies
        .contains(&PolicyKind::Optimal)
        .then(|| Future::new(&trace.keys));

    let total = (requests * capacities.len() * policies.len()) as u64;
    progress.start(total);
    let mut done_before = 0u64;
    let mut rows = Vec::new();
    for (capacity, requested) in &capacities {
        let mut results = Vec::new();
        for &kind in &policies {
            let mut policy = policies::build(kind, *capacity, future.as_ref())?;
            let what = format!("{kind} @ {capacity}");
            let misses = policies::replay(policy.as_mut(), &trace.keys, &mut |done| {
                progress.update(done_before + done as u64, &what)
            });
            done_before += requests as u64;
            results.push(PolicyResult {
                policy: kind.name().to_string(),
                misses,
                miss_ratio: misses as f64 / requests as f64,
            });
        }
        rows.push(Row {
            capacity: *capacity,
            requested: requested.clone(),
            results,
        });
    }
    progress.finish();

    // Every SIEVE implementation in the run (memory backend, shared backend, reference) must
    // give the same miss count at every capacity.
    let sieves: Vec<PolicyKind> = [
        PolicyKind::Sieve,
        PolicyKind::ShmSieve,
        PolicyKind::ModelSieve,
    ]
    .into_iter()
    .filter(|kind| policies.contains(kind))
    .collect();
    let mut sieve_mismatches = Vec::new();
    if sieves.len() >= 2 {
        for row in &rows {
            let counts: Vec<Option<u64>> = sieves
                .iter()
                .map(|&kind| row.result(kind).map(|r| r.misses))
                .collect();
            if counts.windows(2).any(|pair| pair[0] != pair[1]) {
                sieve_mismatches.push(row.capacity);
            }
        }
        let names: Vec<&str> = sieves.iter().map(|kind| kind.name()).collect();
        if sieve_mismatches.is_empty() {
            notes.push(format!(
                "check passed: the SIEVE implementations ({}) have the same miss count at every capacity",
                names.join(", ")
            ));
        } else {
            notes.push(format!(
                "CHECK FAILED: the SIEVE implementations ({}) disagree at capacities {sieve_mismatches:?}",
                names.join(", ")
            ));
        }
    }

    Ok(Report {
        trace: TraceSummary {
            name: trace.name.clone(),
            format: trace.format.name().to_string(),
            requests,
            unique_keys,
        },
        policies: policies.iter().map(|p| p.name().to_string()).collect(),
        rows,
        notes,
        sieve_mismatches,
    })
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The report as a text table (miss ratios with 4 decimals).
pub fn format_table(report: &Report) -> String {
    let mut out = String::new();
    let t = &report.trace;
    let _ = writeln!(out, "trace        {} ({})", t.name, t.format);
    let _ = writeln!(out, "requests     {}", thousands(t.requests));
    let _ = writeln!(out, "unique keys  {}", thousands(t.unique_keys));
    let _ = writeln!(out);

    let show_delta = report
        .rows
        .iter()
        .any(|row| row.sieve_minus_lru().is_some());
    let capacity_cells: Vec<String> = report
        .rows
        .iter()
        .map(|row| {
            if row.requested == row.capacity.to_string() {
                thousands(row.capacity)
            } else {
                format!("{} ({})", thousands(row.capacity), row.requested)
            }
        })
        .collect();
    let capacity_width = capacity_cells
        .iter()
        .map(String::len)
        .chain(["capacity".len()])
        .max()
        .unwrap_or(8);
    let widths: Vec<usize> = report.policies.iter().map(|p| p.len().max(6)).collect();

    let _ = write!(out, "{:>capacity_width$}", "capacity");
    for (policy, width) in report.policies.iter().zip(&widths) {
        let _ = write!(out, "  {policy:>width$}");
    }
    if show_delta {
        let _ = write!(out, "  {:>9}", "sieve-lru");
    }
    let _ = writeln!(out);

    for (row, capacity_cell) in report.rows.iter().zip(&capacity_cells) {
        let _ = write!(out, "{capacity_cell:>capacity_width$}");
        for (policy, width) in report.policies.iter().zip(&widths) {
            match row.results.iter().find(|r| &r.policy == policy) {
                Some(result) => {
                    let _ = write!(out, "  {:>width$.4}", result.miss_ratio);
                }
                None => {
                    let _ = write!(out, "  {:>width$}", "-");
                }
            }
        }
        if show_delta {
            match row.sieve_minus_lru() {
                Some(delta) => {
                    let _ = write!(out, "  {delta:>+9.4}");
                }
                None => {
                    let _ = write!(out, "  {:>9}", "-");
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "cells are miss ratios (misses / requests, cold start, 1 entry per key); sieve-lru < 0 means SIEVE misses less than LRU"
    );
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// The report as pretty-printed JSON.
pub fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report always serializes")
}

const COLORS: [&str; 8] = [
    "#d62728", "#9467bd", "#1f77b4", "#2ca02c", "#7f7f7f", "#ff7f0e", "#8c564b", "#17becf",
];

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as an SVG line plot: miss ratio (y) against cache size (x, log scale when the
/// sizes span a factor of 10 or more), one polyline per policy, with axes and a legend.
pub fn to_svg(report: &Report) -> String {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 460.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;

    let mut sizes: Vec<usize> = report.rows.iter().map(|r| r.capacity).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (min_size, max_size) = match (sizes.first(), sizes.last()) {
        (Some(&lo), Some(&hi)) => (lo as f64, hi as f64),
        _ => (1.0, 1.0),
    };
    let log = max_size / min_size >= 10.0;
    let (x_lo, x_hi) = if log {
        (min_size.log10(), max_size.log10())
    } else if max_size > min_size {
        (min_size, max_size)
    } else {
        (min_size * 0.5, min_size * 1.5)
    };
    let x_of = |size: usize| {
        let v = if log {
            (size as f64).log10()
        } else {
            size as f64
        };
        LEFT + (v - x_lo) / (x_hi - x_lo) * plot_w
    };
    let max_ratio = report
        .rows
        .iter()
        .flat_map(|r| r.results.iter().map(|p| p.miss_ratio))
        .fold(0.0f64, f64::max);
    let y_max = ((max_ratio * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let y_of = |ratio: f64| TOP + plot_h - ratio / y_max * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">Miss ratio vs cache size: {}</text>"#,
        LEFT + plot_w / 2.0,
        xml_escape(&report.trace.name)
    );
    // Axes.
    let _ = writeln!(
        svg,
        r#"<g stroke="black" stroke-width="1"><line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}"/></g>"#,
        y0 = TOP + plot_h,
        x1 = LEFT + plot_w
    );
    // Y ticks every tenth (or fifth of the range when small).
    let y_steps = ((y_max * 10.0).round() as usize).max(1);
    let y_step = if y_steps <= 2 { y_max / 5.0 } else { 0.1 };
    let y_ticks = (y_max / y_step).round() as usize;
    for i in 0..=y_ticks {
        let ratio = i as f64 * y_step;
        let y = y_of(ratio);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#dddddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{ratio:.2}</text>"##,
            x1 = LEFT + plot_w,
            tx = LEFT - 6.0,
            ty = y + 4.0
        );
    }
    // X ticks at the measured sizes.
    for &size in &sizes {
        let x = x_of(size);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="black"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{}</text>"#,
            thousands(size),
            y0 = TOP + plot_h,
            y1 = TOP + plot_h + 5.0,
            ty = TOP + plot_h + 19.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">cache size (entries{})</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        if log { ", log scale" } else { "" }
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">miss ratio</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One polyline per policy, plus point markers and a legend entry.
    for (index, policy) in report.policies.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut points: Vec<(f64, f64)> = report
            .rows
            .iter()
            .filter_map(|row| {
                let result = row.results.iter().find(|r| &r.policy == policy)?;
                Some((x_of(row.capacity), y_of(result.miss_ratio)))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dash = if policy == PolicyKind::ModelSieve.name() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let coords: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="policy" data-policy="{}" fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
            xml_escape(policy),
            coords.join(" ")
        );
        for (x, y) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
            );
        }
        let ly = TOP + 10.0 + index as f64 * 20.0;
        let lx = LEFT + plot_w + 20.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml_escape(policy)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests;
