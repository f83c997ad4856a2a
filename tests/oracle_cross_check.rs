//! Cross-checks aqueduct's Parquet output with independent readers: DuckDB reads the same
//! input with its own inference and runs the same SQL, pyarrow reads our file, and all three
//! must hold the same rows. The readers are installed by `tests/oracle/setup.sh`, which
//! `tests/run.sh` runs first.

mod common;

use std::path::Path;
use std::process::Command;

use aqueduct::generate::{Dataset, TextFormat};
use common::*;

fn oracle_python() -> String {
    std::env::var("AQUEDUCT_ORACLE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "AQUEDUCT_ORACLE_PYTHON is not set: run the tests with `bash tests/run.sh`, which \
             installs DuckDB and pyarrow"
        )
    })
}

fn cross_check(input: &Path, parquet: &Path, extra: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/check.py");
    let output = Command::new(oracle_python())
        .arg(script)
        .arg(input)
        .arg(parquet)
        .args(extra)
        .output()
        .expect("the oracle's Python runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "DuckDB / pyarrow disagree: {report} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&report).unwrap()
}

fn convert_and_check(input: &Path, args: &[&str], oracle_args: &[&str]) -> serde_json::Value {
    let parquet = input.with_extension("parquet");
    let mut command = vec![
        "convert",
        input.to_str().unwrap(),
        parquet.to_str().unwrap(),
    ];
    command.extend_from_slice(args);
    aqueduct_ok(&command);
    cross_check(input, &parquet, oracle_args)
}

#[test]
fn csv_orders_match_duckdb_and_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        60_000,
    );
    let report = convert_and_check(&csv, &["--batch-size", "5000"], &[]);
    assert_eq!(report["parquet_rows"], 60_000);
}

#[test]
fn flat_jsonl_orders_match_duckdb_and_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = fixture(
        dir.path(),
        "orders.jsonl",
        Dataset::Orders,
        TextFormat::Jsonl,
        40_000,
    );
    let report = convert_and_check(&jsonl, &["--compression", "zstd"], &[]);
    assert_eq!(report["parquet_rows"], 40_000);
}

#[test]
fn nested_jsonl_events_match_duckdb_and_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = fixture(
        dir.path(),
        "events.jsonl",
        Dataset::Events,
        TextFormat::Jsonl,
        30_000,
    );
    let report = convert_and_check(&jsonl, &["--row-group-rows", "7000"], &[]);
    assert_eq!(report["parquet_rows"], 30_000);
}

#[test]
fn where_and_select_give_the_rows_duckdb_gives() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        50_000,
    );
    let predicate = "status = 'active' AND amount > 100";
    let select = "id, lower(email) AS email, amount * 1.19 AS gross, created_at";
    let report = convert_and_check(
        &csv,
        &["--where", predicate, "--select", select],
        &["--where", predicate, "--select", select],
    );
    let rows = report["parquet_rows"].as_u64().unwrap();
    assert!(rows > 5_000 && rows < 50_000, "{report}");
}
