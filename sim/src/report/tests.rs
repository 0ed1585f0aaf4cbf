//! Tests of the hit-rate report: capacities, policies compared, the table, JSON and SVG.

use super::*;
use crate::trace::Format;

fn trace(keys: Vec<u64>) -> Trace {
    Trace {
        name: "t<1>".into(),
        format: Format::Txt,
        keys,
    }
}

#[test]
fn capacities_parse_and_resolve_half_up() {
    let specs = CapacitySpec::parse_list("1%, 0.5%,10%,100").unwrap();
    assert_eq!(
        specs,
        vec![
            CapacitySpec::PercentMilli(1_000),
            CapacitySpec::PercentMilli(500),
            CapacitySpec::PercentMilli(10_000),
            CapacitySpec::Absolute(100),
        ]
    );
    // The trace README's capacities: 1% of 48,974 = 489.74 -> 490; 10% of 7,075 = 707.5 -> 708.
    assert_eq!(CapacitySpec::PercentMilli(1_000).resolve(48_974), 490);
    assert_eq!(CapacitySpec::PercentMilli(10_000).resolve(7_075), 708);
    assert_eq!(CapacitySpec::PercentMilli(5_000).resolve(13_756), 688);
    assert_eq!(
        CapacitySpec::PercentMilli(1_000).resolve(10),
        1,
        "never zero"
    );
    assert_eq!(CapacitySpec::Absolute(100).resolve(5), 100);
    for bad in ["0", "0%", "101%", "-1", "x%", "1.2345%", "", "%", "1e3"] {
        assert!(CapacitySpec::parse_list(bad).is_err(), "{bad:?}");
    }
    assert_eq!(CapacitySpec::PercentMilli(500).to_string(), "0.5%");
    assert_eq!(CapacitySpec::PercentMilli(10_000).to_string(), "10%");
}

#[test]
fn report_counts_misses_and_checks_the_sieves() {
    // 1 2 1 3 1 2 with capacity 2.
    let report = run(
        &trace(vec![1, 2, 1, 3, 1, 2]),
        &ReportOptions {
            capacities: vec![CapacitySpec::Absolute(2)],
            ..ReportOptions::default()
        },
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(report.trace.requests, 6);
    assert_eq!(report.trace.unique_keys, 3);
    let row = &report.rows[0];
    let misses = |p| row.result(p).unwrap().misses;
    assert_eq!(misses(PolicyKind::Fifo), 5);
    assert_eq!(misses(PolicyKind::Lru), 4);
    assert_eq!(misses(PolicyKind::Optimal), 4);
    assert_eq!(misses(PolicyKind::Sieve), misses(PolicyKind::ModelSieve));
    assert_eq!(misses(PolicyKind::ShmSieve), misses(PolicyKind::ModelSieve));
    assert!(report.sieve_mismatches.is_empty());
    assert!(report.notes.iter().any(|n| n.contains("check passed")));
}

#[test]
fn duplicate_capacities_collapse() {
    let report = run(
        &trace(vec![1, 2, 3]),
        &ReportOptions {
            capacities: CapacitySpec::parse_list("1%,5%,2").unwrap(),
            policies: vec![PolicyKind::Lru],
            force_model_sieve: false,
        },
        &mut NoProgress,
    )
    .unwrap();
    let capacities: Vec<usize> = report.rows.iter().map(|r| r.capacity).collect();
    assert_eq!(capacities, vec![1, 2]);
}

fn sample_report() -> Report {
    run(
        &trace((0..200).map(|i| (i * 7) % 23).collect()),
        &ReportOptions {
            capacities: CapacitySpec::parse_list("10%,50%,5").unwrap(),
            ..ReportOptions::default()
        },
        &mut NoProgress,
    )
    .unwrap()
}

#[test]
fn table_has_a_column_per_policy_and_the_delta() {
    let report = sample_report();
    let table = format_table(&report);
    let header = table
        .lines()
        .find(|l| l.trim_start().starts_with("capacity"))
        .unwrap();
    for policy in [
        "sieve",
        "shm-sieve",
        "model-sieve",
        "lru",
        "fifo",
        "optimal",
        "sieve-lru",
    ] {
        assert!(header.contains(policy), "{header}");
    }
    assert!(table.contains("requests     200"), "{table}");
    assert!(table.contains("unique keys  23"), "{table}");
    assert!(table.contains("2 (10%)"), "{table}");
    let row = &report.rows[0];
    let lru = format!("{:.4}", row.result(PolicyKind::Lru).unwrap().miss_ratio);
    let delta = format!("{:+.4}", row.sieve_minus_lru().unwrap());
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("2 (10%)"))
        .unwrap();
    assert!(line.contains(&lru) && line.ends_with(&delta), "{line}");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(12), "12");
}

#[test]
fn json_round_trips() {
    let report = sample_report();
    let back: Report = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(back, report);
}

#[test]
fn svg_has_a_polyline_per_policy_and_escapes_names() {
    let report = sample_report();
    let svg = to_svg(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), report.policies.len());
    assert!(svg.contains("t&lt;1&gt;") && !svg.contains("t<1>"));
    // Three capacities -> three points per line.
    let line = svg
        .lines()
        .find(|l| l.contains(r#"data-policy="lru""#))
        .unwrap();
    let points = line.split("points=\"").nth(1).unwrap();
    assert_eq!(points.split_whitespace().count(), 3, "{line}");
    assert!(!svg.contains("NaN"));
}

#[test]
fn svg_with_one_capacity_is_still_valid() {
    let report = run(
        &trace(vec![1, 2, 1]),
        &ReportOptions {
            capacities: vec![CapacitySpec::Absolute(1)],
            policies: vec![PolicyKind::Lru],
            force_model_sieve: false,
        },
        &mut NoProgress,
    )
    .unwrap();
    let svg = to_svg(&report);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
}
