//! Decoding and encoding on several threads give the same output, rejects and errors as on
//! one: valid inputs of every text kind, the corpus of invalid inputs, a failing run, and
//! Parquet output encoded by several column threads.

mod common;

use std::path::{Path, PathBuf};

use aqueduct::generate::{Dataset, TextFormat};
use common::*;

/// Converts `input` with `threads` decoding threads into `name` in `dir`; returns the output
/// bytes, the rejects file's bytes and the exit code.
fn convert(input: &Path, dir: &Path, threads: usize, extra: &[&str]) -> (Vec<u8>, Vec<u8>, i32) {
    let output = dir.join(format!("out-{threads}.jsonl"));
    let rejects = dir.join(format!("rejects-{threads}.jsonl"));
    let threads_text = threads.to_string();
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--quiet",
        "--batch-size",
        "97",
        "--threads",
        &threads_text,
        "--rejects",
        rejects.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let result = aqueduct(&args);
    let read = |path: &PathBuf| std::fs::read(path).unwrap_or_default();
    (
        read(&output),
        read(&rejects),
        result.status.code().unwrap_or(-1),
    )
}

fn assert_same_at_every_thread_count(input: &Path, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let single = convert(input, dir.path(), 1, extra);
    for threads in [2, 3, 8] {
        let parallel = convert(input, dir.path(), threads, extra);
        assert_eq!(
            parallel.2,
            single.2,
            "{}: exit code with {threads} threads",
            input.display()
        );
        assert!(
            parallel.0 == single.0,
            "{}: output differs with {threads} threads",
            input.display()
        );
        assert_eq!(
            String::from_utf8_lossy(&parallel.1),
            String::from_utf8_lossy(&single.1),
            "{}: rejects differ with {threads} threads",
            input.display()
        );
    }
}

#[test]
fn valid_inputs_decode_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        ("orders.csv", Dataset::Orders, TextFormat::Csv),
        ("orders.jsonl", Dataset::Orders, TextFormat::Jsonl),
        ("events.jsonl", Dataset::Events, TextFormat::Jsonl),
    ];
    for (name, dataset, format) in inputs {
        let input = fixture(dir.path(), name, dataset, format, 5_000);
        assert_same_at_every_thread_count(&input, &[]);
    }
}

#[test]
fn invalid_inputs_reject_the_same_records_on_any_number_of_threads() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    for entry in std::fs::read_dir(corpus).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension != "json")
        {
            assert_same_at_every_thread_count(&path, &[]);
        }
    }
}

#[test]
fn a_failing_run_fails_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,amount\n");
    for id in 0..3_000 {
        text.push_str(&format!("{id},{}\n", id * 3));
    }
    text.push_str("3000,oops\n");
    for id in 3_001..4_000 {
        text.push_str(&format!("{id},{id}\n"));
    }
    let input = dir.path().join("late.csv");
    std::fs::write(&input, text).unwrap();
    for threads in ["1", "4"] {
        let result = aqueduct(&[
            "convert",
            input.to_str().unwrap(),
            dir.path().join("out.csv").to_str().unwrap(),
            "--threads",
            threads,
            "--batch-size",
            "50",
            "--schema",
            "id BIGINT, amount BIGINT",
        ]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("line 3002 (byte "), "{threads}: {stderr}");
    }
}

#[test]
fn parquet_output_is_the_same_file_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        ("orders.csv", Dataset::Orders, TextFormat::Csv),
        ("events.jsonl", Dataset::Events, TextFormat::Jsonl),
    ];
    for (name, dataset, format) in inputs {
        let input = fixture(dir.path(), name, dataset, format, 20_000);
        let convert = |threads: usize| {
            let output = dir.path().join(format!("{name}-{threads}.parquet"));
            aqueduct_ok(&[
                "convert",
                input.to_str().unwrap(),
                output.to_str().unwrap(),
                "--threads",
                &threads.to_string(),
                "--batch-size",
                "1000",
                "--row-group-bytes",
                "64KiB",
            ]);
            output
        };
        let single = convert(1);
        let batch = read_parquet(&single);
        assert_eq!(batch.num_rows(), 20_000, "{name}");
        let file = std::fs::File::open(&single).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let row_groups = parquet::file::reader::FileReader::metadata(&reader).num_row_groups();
        assert!(row_groups > 3, "{name}: {row_groups} row groups");
        for threads in [2, 3, 8] {
            let parallel = convert(threads);
            assert!(
                std::fs::read(&parallel).unwrap() == std::fs::read(&single).unwrap(),
                "{name}: the Parquet file differs with {threads} threads"
            );
        }
    }
}

#[test]
fn csv_output_formatted_on_several_threads_keeps_its_order_and_one_header() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture(
        dir.path(),
        "orders.jsonl",
        Dataset::Orders,
        TextFormat::Jsonl,
        7_000,
    );
    let convert = |threads: &str| {
        let output = dir.path().join(format!("out-{threads}.csv"));
        aqueduct_ok(&[
            "convert",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--threads",
            threads,
            "--batch-size",
            "64",
        ]);
        std::fs::read_to_string(output).unwrap()
    };
    let single = convert("1");
    assert_eq!(single.lines().count(), 7_001);
    assert!(single.starts_with("id,"), "{}", &single[..40]);
    for threads in ["2", "5"] {
        assert!(
            convert(threads) == single,
            "CSV differs with {threads} threads"
        );
    }
}
