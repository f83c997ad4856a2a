//! End-to-end tests of the `aqueduct` binary on generated data.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aqueduct::generate::{Dataset, TextFormat};
use common::*;

#[test]
fn csv_to_parquet_to_csv_round_trips_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        20_000,
    );
    let parquet = dir.path().join("orders.parquet");
    let back = dir.path().join("back.csv");

    aqueduct_ok(&["convert", csv.to_str().unwrap(), parquet.to_str().unwrap()]);
    aqueduct_ok(&["convert", parquet.to_str().unwrap(), back.to_str().unwrap()]);

    let stored = read_parquet(&parquet);
    assert_eq!(stored.num_rows(), 20_000);
    let original = read_csv(&csv, stored.schema());
    assert_eq!(original, stored);
    assert_eq!(read_csv(&back, stored.schema()), original);
}

#[test]
fn nested_jsonl_to_parquet_to_jsonl_round_trips_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = fixture(
        dir.path(),
        "events.jsonl",
        Dataset::Events,
        TextFormat::Jsonl,
        5_000,
    );
    let parquet = dir.path().join("events.parquet");
    let back = dir.path().join("back.jsonl");

    aqueduct_ok(&[
        "convert",
        jsonl.to_str().unwrap(),
        parquet.to_str().unwrap(),
    ]);
    aqueduct_ok(&["convert", parquet.to_str().unwrap(), back.to_str().unwrap()]);

    let stored = read_parquet(&parquet);
    assert_eq!(stored.num_rows(), 5_000);
    let user = stored.schema().field_with_name("user").unwrap().clone();
    assert!(matches!(
        user.data_type(),
        arrow::datatypes::DataType::Struct(_)
    ));
    let items = stored.schema().field_with_name("items").unwrap().clone();
    assert!(matches!(
        items.data_type(),
        arrow::datatypes::DataType::List(_)
    ));

    let original = read_json_lines(&jsonl);
    let round_tripped = read_json_lines(&back);
    assert_eq!(round_tripped.len(), original.len());
    for (line, (back, original)) in round_tripped.iter().zip(&original).enumerate() {
        assert_eq!(back, original, "line {}", line + 1);
    }
}

#[test]
fn where_and_select_match_an_independent_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        30_000,
    );
    let out = dir.path().join("active.csv");
    aqueduct_ok(&[
        "convert",
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
        "--where",
        "status = 'active' AND amount > 100",
        "--select",
        "id, lower(email) AS email, amount * 1.19 AS gross",
        "--batch-size",
        "1000",
    ]);

    let mut expected = Vec::new();
    for record in csv::Reader::from_path(&csv).unwrap().records() {
        let record = record.unwrap();
        let amount: Option<f64> = record[4].parse().ok();
        if &record[3] == "active" && amount.is_some_and(|a| a > 100.0) {
            expected.push((
                record[0].to_owned(),
                record[2].to_lowercase(),
                amount.unwrap() * 1.19,
            ));
        }
    }
    let mut actual = Vec::new();
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["id", "email", "gross"]);
    for record in reader.records() {
        let record = record.unwrap();
        actual.push((
            record[0].to_owned(),
            record[1].to_owned(),
            record[2].parse::<f64>().unwrap(),
        ));
    }
    assert!(
        expected.len() > 1000,
        "the filter keeps a real share of rows"
    );
    assert_eq!(actual, expected);
}

#[test]
fn failing_run_leaves_no_output_and_keeps_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    let mut text = String::from("id,name\n");
    for id in 0..5_000 {
        text.push_str(&format!("{id},n{id}\n"));
    }
    text.push_str("oops,broken\n");
    std::fs::write(&input, text).unwrap();

    let fresh = dir.path().join("fresh.parquet");
    let output = aqueduct(&[
        "convert",
        input.to_str().unwrap(),
        fresh.to_str().unwrap(),
        "--infer-rows",
        "100",
        "--batch-size",
        "512",
    ]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.csv") && stderr.contains("oops"),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), ["bad.csv"]);

    let existing = dir.path().join("existing.csv");
    std::fs::write(&existing, "keep me\n").unwrap();
    let output = aqueduct(&[
        "convert",
        input.to_str().unwrap(),
        existing.to_str().unwrap(),
        "--infer-rows",
        "100",
    ]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
    assert_eq!(files_in(dir.path()), ["bad.csv", "existing.csv"]);
}

#[test]
fn bad_sql_is_a_usage_error_naming_the_expression() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        10,
    );
    let out = dir.path().join("out.csv");
    let output = aqueduct(&[
        "convert",
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
        "--where",
        "no_such_column > 1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_such_column"), "{stderr}");
    assert_eq!(files_in(dir.path()), ["orders.csv"]);
}

#[test]
fn stdin_to_stdout_streams_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        12_345,
    );
    let output = aqueduct_with_stdin(
        &[
            "convert",
            "-",
            "-",
            "--from",
            "csv",
            "--to",
            "jsonl",
            "--infer-rows",
            "50",
        ],
        std::fs::read(&csv).unwrap(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 12_345);
    let ids: Vec<i64> = lines
        .iter()
        .map(|line| line["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=12_345).collect::<Vec<_>>());
}

#[test]
fn multi_member_gzip_in_and_zstd_out() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        3_000,
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let split = text.match_indices('\n').nth(1_500).unwrap().0 + 1;
    let gz = dir.path().join("orders.csv.gz");
    let mut file = std::fs::File::create(&gz).unwrap();
    for part in [&text[..split], &text[split..]] {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        member.write_all(part.as_bytes()).unwrap();
        file.write_all(&member.finish().unwrap()).unwrap();
    }
    drop(file);

    let zst = dir.path().join("orders.jsonl.zst");
    aqueduct_ok(&["convert", gz.to_str().unwrap(), zst.to_str().unwrap()]);
    let decoded = zstd::stream::decode_all(std::fs::File::open(&zst).unwrap()).unwrap();
    let lines = String::from_utf8(decoded).unwrap();
    assert_eq!(lines.lines().count(), 3_000);

    let parquet = dir.path().join("orders.parquet");
    aqueduct_ok(&["convert", zst.to_str().unwrap(), parquet.to_str().unwrap()]);
    let stored = read_parquet(&parquet);
    assert_eq!(stored, read_csv(&csv, stored.schema()));
}

#[test]
fn parquet_row_groups_close_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        50_000,
    );
    let parquet = dir.path().join("orders.parquet");
    aqueduct_ok(&[
        "convert",
        csv.to_str().unwrap(),
        parquet.to_str().unwrap(),
        "--row-group-bytes",
        "256KiB",
        "--compression",
        "zstd",
    ]);
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&parquet).unwrap())
            .unwrap();
    let metadata = parquet::file::reader::FileReader::metadata(&reader);
    assert!(
        metadata.num_row_groups() > 4,
        "{} row groups",
        metadata.num_row_groups()
    );
    let rows: i64 = metadata
        .row_groups()
        .iter()
        .map(|group| group.num_rows())
        .sum();
    assert_eq!(rows, 50_000);
    assert_eq!(read_parquet(&parquet).num_rows(), 50_000);
}

#[test]
fn schema_and_head_describe_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        100,
    );
    let output = aqueduct_ok(&["schema", csv.to_str().unwrap()]);
    let schema = String::from_utf8(output.stdout).unwrap();
    assert!(schema.contains("id: Int64"), "{schema}");
    assert!(schema.contains("amount: Float64"), "{schema}");
    assert!(
        schema.contains("created_at: Timestamp(µs, \"UTC\")")
            || schema.contains("created_at: Timestamp(Microsecond"),
        "{schema}"
    );

    let output = aqueduct_ok(&["head", csv.to_str().unwrap(), "-n", "3"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(table.lines().count(), 3 + 4, "{table}");
    assert!(
        table.contains("| 1 ") && table.contains("| 3 ") && !table.contains("| 4 "),
        "{table}"
    );
}

#[test]
fn explicit_schema_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        100,
    );
    let parquet = dir.path().join("orders.parquet");
    aqueduct_ok(&[
        "convert",
        csv.to_str().unwrap(),
        parquet.to_str().unwrap(),
        "--schema",
        "id INT, customer_id BIGINT, email VARCHAR, status VARCHAR, amount DOUBLE, \
         quantity SMALLINT, country VARCHAR, created_at TIMESTAMP, note VARCHAR",
    ]);
    let stored = read_parquet(&parquet);
    let types: Vec<String> = stored
        .schema()
        .fields()
        .iter()
        .map(|field| field.data_type().to_string())
        .collect();
    assert_eq!(types[0], "Int32");
    assert_eq!(types[5], "Int16");
    assert_eq!(stored.num_rows(), 100);
}

/// Starts a conversion from a pipe that stays open, sends `signal` mid-run, and checks the
/// exit code, the report and that nothing is left in the output folder.
fn signal_stops_the_run_and_removes_the_temporary_output(signal: &str, code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args([
            "convert",
            "-",
            out.to_str().unwrap(),
            "--from",
            "csv",
            "--batch-size",
            "100",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"id,name\n").unwrap();
    for id in 0..20_000 {
        writeln!(stdin, "{id},name{id}").unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let temp_files = files_in(dir.path());
    assert_eq!(
        temp_files.len(),
        1,
        "a temporary output exists while running"
    );
    assert!(temp_files[0].starts_with(".out.parquet."), "{temp_files:?}");

    let started = Instant::now();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The process stops while its stdin is still open: the blocked read does not hold it.
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(output.status.code(), Some(code));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("interrupted after ") && stderr.contains("no output was left"),
        "{stderr}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn sigint_stops_the_run_and_removes_the_temporary_output() {
    signal_stops_the_run_and_removes_the_temporary_output("-INT", 130);
}

#[test]
fn sigterm_stops_the_run_and_removes_the_temporary_output() {
    signal_stops_the_run_and_removes_the_temporary_output("-TERM", 143);
}
