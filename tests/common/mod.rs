//! Helpers shared by the integration tests: generated fixtures and readers that decode
//! outputs independently of the code under test where that is practical.

#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use aqueduct::generate::{Dataset, GenerateLimit, TextFormat, generate};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// Writes `rows` generated rows of `dataset` into `dir/name`.
pub fn fixture(dir: &Path, name: &str, dataset: Dataset, format: TextFormat, rows: u64) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(File::create(&path).unwrap());
    let limit = GenerateLimit {
        rows: Some(rows),
        bytes: None,
    };
    generate(dataset, format, limit, 42, &mut file).unwrap();
    path
}

/// Runs the built binary with `args`.
pub fn aqueduct(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the aqueduct binary runs")
}

/// Runs the binary and asserts it succeeded.
pub fn aqueduct_ok(args: &[&str]) -> Output {
    let output = aqueduct(args);
    assert!(
        output.status.success(),
        "aqueduct {args:?} failed with {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs the built binary with `args`, writing `input` to its stdin from another thread.
pub fn aqueduct_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the aqueduct binary runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the aqueduct binary runs");
    writer
        .join()
        .expect("the stdin writer does not panic")
        .expect("stdin takes the input");
    output
}

/// Reads a Parquet file with the parquet crate's own reader, as one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// Reads a CSV file with a given schema, as one batch.
pub fn read_csv(path: &Path, schema: SchemaRef) -> RecordBatch {
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
        .with_header(true)
        .build(BufReader::new(File::open(path).unwrap()))
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// Parses every line of a JSONL file with serde_json.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The first value of a batch whose first column is Int64 ids.
pub fn first_id(batch: &RecordBatch) -> i64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// The names of the files in `dir`.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
