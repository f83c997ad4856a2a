//! Property tests: random valid tables survive CSV and JSON Lines to Parquet unchanged, and
//! random damage to a valid file never makes a source panic; every record it frames is
//! either in a batch or rejected with a line inside the file.

use std::io::Write;
use std::sync::Arc;

use aqueduct::{Location, SourceOptions, open_source};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    name: String,
    amount: Option<f64>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        any::<i64>(),
        // Quotes, delimiters, line breaks and non-ASCII text, the usual troublemakers.
        "[a-z \",;\\n\\r\\t\u{e9}\u{4e2d}\u{1f600}]{0,12}",
        proptest::option::of(-1e12f64..1e12f64),
    )
        .prop_map(|(id, name, amount)| Row { id, name, amount })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

fn write_csv(rows: &[Row]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::NonNumeric)
        .from_writer(Vec::new());
    writer.write_record(["id", "name", "amount"]).unwrap();
    for row in rows {
        let amount = row
            .amount
            .map(|amount| amount.to_string())
            .unwrap_or_default();
        writer
            .write_record([row.id.to_string(), row.name.clone(), amount])
            .unwrap();
    }
    writer.into_inner().unwrap()
}

fn write_jsonl(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        let line = serde_json::json!({"id": row.id, "name": row.name, "amount": row.amount});
        writeln!(out, "{line}").unwrap();
    }
    out
}

/// Reads every batch of a source, returning the rows and the rejected records' lines.
fn read_all(path: &std::path::Path, options: &SourceOptions) -> (Vec<RecordBatch>, Vec<u64>) {
    let location = Location::Path(path.to_path_buf());
    let Ok(mut source) = open_source(&location, options, Default::default()) else {
        return (Vec::new(), Vec::new());
    };
    let mut batches = Vec::new();
    let mut rejected = Vec::new();
    while let Ok(Some(batch)) = source.next_batch() {
        batches.push(batch);
        rejected.extend(source.take_rejected().iter().map(|record| record.line));
    }
    (batches, rejected)
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let names = batch.column(1).as_string::<i32>();
        let amounts = batch.column(2).as_primitive::<Float64Type>();
        for index in 0..batch.num_rows() {
            rows.push(Row {
                id: ids.value(index),
                name: names.value(index).to_owned(),
                amount: amounts.is_valid(index).then(|| amounts.value(index)),
            });
        }
    }
    rows
}

fn convert_to_parquet(input: &std::path::Path, output: &std::path::Path) -> aqueduct::Summary {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(
            aqueduct::Convert::new(input, output)
                .schema(schema())
                .batch_size(7)
                .run(),
        )
        .unwrap()
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `bytes` with `edits` applied: each flips, inserts or deletes a byte, or cuts the end.
fn damage(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(position, kind, value) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = position % bytes.len();
        match kind % 4 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_tables_round_trip_through_parquet(
        rows in proptest::collection::vec(row(), 0..40),
        jsonl in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (name, bytes) = if jsonl {
            ("in.jsonl", write_jsonl(&rows))
        } else {
            ("in.csv", write_csv(&rows))
        };
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let output = dir.path().join("out.parquet");

        let summary = convert_to_parquet(&input, &output);
        prop_assert_eq!(summary.rows_read, rows.len() as u64);
        prop_assert_eq!(summary.rows_rejected, 0);
        // CSV cannot tell an empty string from a null; both come back empty.
        let back = rows_of(&read_parquet(&output));
        prop_assert_eq!(back, rows);
    }

    #[test]
    fn damaged_input_never_panics_and_rejects_lines_inside_the_file(
        rows in proptest::collection::vec(row(), 1..30),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        jsonl in any::<bool>(),
        given_schema in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (name, bytes) = if jsonl {
            ("in.jsonl", write_jsonl(&rows))
        } else {
            ("in.csv", write_csv(&rows))
        };
        let damaged = damage(bytes, &edits);
        let breaks = damaged.iter().filter(|&&byte| byte == b'\n' || byte == b'\r').count();
        let lines = breaks as u64 + 1;
        let input = dir.path().join(name);
        std::fs::write(&input, &damaged).unwrap();
        let options = SourceOptions {
            schema: given_schema.then(schema),
            batch_size: 5,
            ..SourceOptions::default()
        };
        let (_, rejected) = read_all(&input, &options);
        for line in rejected {
            prop_assert!(line >= 1 && line <= lines, "line {} of {}", line, lines);
        }
    }
}
