//! Bad input end to end: the corpus under `tests/data/invalid/`, with the lines each file
//! must reject and why (`cases.json`), run through the binary under every error policy; and
//! the faults that are not records: truncated compressed input, corrupt Parquet, a header
//! that repeats a name.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

#[derive(Debug)]
struct Case {
    file: String,
    args: Vec<String>,
    written: u64,
    rejected: Vec<(u64, String)>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data("invalid/cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    cases
        .iter()
        .map(|case| Case {
            file: case["file"].as_str().unwrap().to_owned(),
            args: case["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|arg| arg.as_str().unwrap().to_owned())
                .collect(),
            written: case["written"].as_u64().unwrap(),
            rejected: case["rejected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_u64().unwrap(),
                        pair[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        })
        .collect()
}

fn run(case: &Case, output: &Path, extra: &[&str]) -> std::process::Output {
    let input = data(&format!("invalid/{}", case.file));
    let mut args = vec![
        "convert".to_owned(),
        input.to_str().unwrap().to_owned(),
        output.to_str().unwrap().to_owned(),
        "--quiet".to_owned(),
    ];
    args.extend(case.args.iter().cloned());
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    aqueduct(&args)
}

#[test]
fn fail_policy_stops_at_the_first_bad_line_and_leaves_nothing() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.parquet");
        let result = run(&case, &output, &[]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        let (line, reason) = &case.rejected[0];
        assert_eq!(result.status.code(), Some(3), "{}: {stderr}", case.file);
        assert!(
            stderr.contains(&format!("{}: line {line} (byte ", case.file))
                && stderr.contains(reason),
            "{}: expected line {line} and `{reason}` in: {stderr}",
            case.file
        );
        assert!(files_in(dir.path()).is_empty(), "{}", case.file);
    }
}

#[test]
fn rejects_file_holds_exactly_the_bad_lines_and_the_counts_add_up() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let rejects = dir.path().join("rejects.jsonl");
        let stats = dir.path().join("stats.json");
        let result = run(
            &case,
            &output,
            &[
                "--rejects",
                rejects.to_str().unwrap(),
                "--stats-json",
                stats.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{}: {stderr}", case.file);

        let rejected = read_json_lines(&rejects);
        let lines: Vec<u64> = rejected
            .iter()
            .map(|record| record["line"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = case.rejected.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, expected, "{}", case.file);
        for (record, (line, reason)) in rejected.iter().zip(&case.rejected) {
            let mut described = String::new();
            if let Some(column) = record["column"].as_str() {
                described.push_str(&format!("column {column}"));
            }
            if let Some(value) = record["value"].as_str() {
                described.push_str(&format!(", value {value}"));
            }
            described.push_str(&format!(": {}", record["reason"].as_str().unwrap()));
            assert!(
                described.contains(reason.as_str()),
                "{} line {line}: `{reason}` not in `{described}`",
                case.file
            );
            assert!(
                record.get("record").is_some() || record.get("record_bytes").is_some(),
                "{record}"
            );
        }

        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
        let read = stats["rows_read"].as_u64().unwrap();
        let written = stats["rows_written"].as_u64().unwrap();
        let filtered = stats["rows_filtered"].as_u64().unwrap();
        let rejected_count = stats["rows_rejected"].as_u64().unwrap();
        assert_eq!(written, case.written, "{}", case.file);
        assert_eq!(rejected_count, case.rejected.len() as u64, "{}", case.file);
        assert_eq!(read, written + filtered + rejected_count, "{}", case.file);
        assert_eq!(
            read_json_lines(&output).len() as u64,
            written,
            "{}",
            case.file
        );
    }
}

#[test]
fn raw_records_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let rejected_from = |input: &str| {
        aqueduct_ok(&[
            "convert",
            data(input).to_str().unwrap(),
            dir.path().join("out.csv").to_str().unwrap(),
            "--rejects",
            rejects.to_str().unwrap(),
        ]);
        read_json_lines(&rejects)
    };
    let rejected = rejected_from("invalid/invalid_utf8.csv");
    let bytes: Vec<u8> = rejected[0]["record_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|byte| byte.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, b"2,bad\xff\xfebytes");

    let rejected = rejected_from("invalid/unclosed_quote.csv");
    assert_eq!(rejected[0]["record"], "3,\"never closed,c\n4,1.0,d\n");
    assert_eq!(rejected[0]["offset"], 31);
}

#[test]
fn skip_counts_and_max_errors_stops_with_its_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("invalid/lines.jsonl");
    let output = dir.path().join("out.parquet");
    let schema = "id BIGINT, tags VARCHAR[]";
    let skipped = aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--schema",
        schema,
        "--on-error",
        "skip",
    ]);
    let summary = String::from_utf8_lossy(&skipped.stderr);
    assert!(
        summary.contains("10 rows read, 3 written, 0 filtered out, 7 rejected"),
        "{summary}"
    );
    assert_eq!(read_parquet(&output).num_rows(), 3);
    std::fs::remove_file(&output).unwrap();

    for limit in ["6", "50%"] {
        let stopped = aqueduct(&[
            "convert",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--schema",
            schema,
            "--on-error",
            "skip",
            "--max-errors",
            limit,
        ]);
        let stderr = String::from_utf8_lossy(&stopped.stderr);
        assert_eq!(stopped.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains(&format!("--max-errors {limit}")),
            "{stderr}"
        );
        assert!(files_in(dir.path()).is_empty());
    }

    // A limit alone goes on past bad records until it is reached.
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--schema",
        schema,
        "--max-errors",
        "7",
    ]);
    assert_eq!(read_parquet(&output).num_rows(), 3);
}

#[test]
fn lossy_utf8_keeps_the_record_with_replacement_characters() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("invalid/invalid_utf8.csv");
    let output = dir.path().join("out.jsonl");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--lossy-utf8",
    ]);
    let rows = read_json_lines(&output);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["name"], "bad\u{fffd}\u{fffd}bytes");
}

#[test]
fn unknown_json_keys_can_be_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("keys.jsonl");
    std::fs::write(&input, "{\"id\":1}\n{\"id\":2,\"late\":true}\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let strict = aqueduct(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--schema",
        "id BIGINT",
    ]);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(3));
    assert!(
        stderr.contains("line 2 (byte 9), column late") && stderr.contains("--ignore-unknown-keys"),
        "{stderr}"
    );

    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--schema",
        "id BIGINT",
        "--ignore-unknown-keys",
    ]);
    assert_eq!(
        read_json_lines(&output),
        [serde_json::json!({"id": 1}), serde_json::json!({"id": 2})]
    );
}

#[test]
fn crlf_bom_blank_lines_and_lone_cr_are_read_as_records() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    aqueduct_ok(&[
        "convert",
        data("valid/crlf_bom_blank.csv").to_str().unwrap(),
        output.to_str().unwrap(),
    ]);
    assert_eq!(
        read_json_lines(&output),
        [
            serde_json::json!({"id": 1, "note": "a\r\nb"}),
            serde_json::json!({"id": 2, "note": "plain"}),
            serde_json::json!({"id": 3, "note": "x,y"}),
            serde_json::json!({"id": 4, "note": "last"}),
        ]
    );
}

#[test]
fn a_record_over_the_size_limit_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.jsonl");
    let long = "x".repeat(5000);
    std::fs::write(&input, format!("{{\"a\":\"s\"}}\n{{\"a\":\"{long}\"}}\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let result = aqueduct(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--max-record-bytes",
        "4k",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("line 2 (byte 10)") && stderr.contains("--max-record-bytes"),
        "{stderr}"
    );
    aqueduct_ok(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
    assert_eq!(read_json_lines(&output)[1]["a"], long.as_str());
}

fn compressed(dir: &Path, extension: &str) -> Vec<u8> {
    let plain = fixture(
        dir,
        "orders.csv",
        aqueduct::generate::Dataset::Orders,
        aqueduct::generate::TextFormat::Csv,
        20_000,
    );
    let packed = dir.join(format!("orders.csv.{extension}"));
    aqueduct_ok(&["convert", plain.to_str().unwrap(), packed.to_str().unwrap()]);
    std::fs::read(&packed).unwrap()
}

#[test]
fn truncated_or_corrupt_compressed_input_is_an_error() {
    for extension in ["gz", "zst"] {
        let dir = tempfile::tempdir().unwrap();
        let bytes = compressed(dir.path(), extension);
        let mut corrupt = bytes.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        corrupt[middle + 1] ^= 0x55;
        for (name, damaged) in [
            ("truncated", bytes[..bytes.len() * 2 / 3].to_vec()),
            ("cut-trailer", bytes[..bytes.len() - 3].to_vec()),
            ("corrupt", corrupt),
        ] {
            let input = dir.path().join(format!("{name}.csv.{extension}"));
            std::fs::write(&input, damaged).unwrap();
            let output = dir.path().join("out.parquet");
            let result = aqueduct(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(
                !result.status.success() && result.status.code() != Some(101),
                "{name}.{extension} was accepted: {stderr}"
            );
            assert!(
                stderr.contains(&format!("{name}.csv.{extension}")),
                "{stderr}"
            );
            assert!(!output.exists());
        }
    }
}

#[test]
fn corrupt_parquet_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        aqueduct::generate::Dataset::Orders,
        aqueduct::generate::TextFormat::Csv,
        5_000,
    );
    let parquet = dir.path().join("orders.parquet");
    aqueduct_ok(&["convert", csv.to_str().unwrap(), parquet.to_str().unwrap()]);
    let mut bytes = std::fs::read(&parquet).unwrap();
    for (name, damaged) in [
        ("cut", bytes[..bytes.len() / 2].to_vec()),
        ("pages", {
            for byte in &mut bytes[100..400] {
                *byte = 0x5a;
            }
            bytes.clone()
        }),
    ] {
        let input = dir.path().join(format!("{name}.parquet"));
        std::fs::write(&input, damaged).unwrap();
        let output = dir.path().join("out.csv");
        let result = aqueduct(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            !result.status.success() && result.status.code() != Some(101),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(&format!("{name}.parquet")), "{stderr}");
        assert!(!output.exists());
    }
}

#[test]
fn a_header_that_repeats_a_name_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("twice.csv");
    std::fs::write(&input, "id,name,id\n1,a,2\n").unwrap();
    let result = aqueduct(&[
        "convert",
        input.to_str().unwrap(),
        dir.path().join("out.csv").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3));
    assert!(stderr.contains("names column `id` twice"), "{stderr}");
}

/// 20,000 integer amounts, then a float and a word past the inference sample.
fn drifting_csv(dir: &Path, tail: &[&str]) -> PathBuf {
    let mut text = String::from("id,amount\n");
    for id in 0..20_000 {
        text.push_str(&format!("{id},{}\n", id * 2));
    }
    for (offset, amount) in tail.iter().enumerate() {
        text.push_str(&format!("{},{amount}\n", 20_000 + offset));
    }
    let path = dir.join("drift.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_value_past_the_sample_is_never_nulled_and_the_error_suggests_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let input = drifting_csv(dir.path(), &["2.5", "x"]);
    let output = dir.path().join("out.parquet");
    let failed = aqueduct(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(3));
    assert!(
        stderr.contains("line 20002 (byte ")
            && stderr.contains("column amount, value \"2.5\"")
            && stderr.contains("--infer-rows all"),
        "{stderr}"
    );

    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--infer-rows",
        "all",
    ]);
    let stored = read_parquet(&output);
    assert_eq!(stored.num_rows(), 20_002);
    let amounts = arrow::array::AsArray::as_string::<i32>(stored.column(1));
    assert_eq!(
        (
            amounts.value(1),
            amounts.value(20_000),
            amounts.value(20_001)
        ),
        ("2", "2.5", "x")
    );
}

#[test]
fn widening_to_float_keeps_a_late_float() {
    let dir = tempfile::tempdir().unwrap();
    let input = drifting_csv(dir.path(), &["2.5"]);
    let output = dir.path().join("out.parquet");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--widen",
        "float",
    ]);
    let stored = read_parquet(&output);
    let amounts =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(stored.column(1));
    assert_eq!(amounts.len(), 20_001);
    assert_eq!((amounts.value(3), amounts.value(20_000)), (6.0, 2.5));
}
