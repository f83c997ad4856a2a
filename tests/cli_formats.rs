//! End-to-end tests of the binary on format details: CSV dialects, Arrow IPC files and
//! streams, Parquet read from stdin.

mod common;

use std::fs::File;

use aqueduct::generate::{Dataset, TextFormat};
use arrow::array::{Float64Array, Int64Array, StringArray};
use common::*;

#[test]
fn tsv_without_header_with_null_markers_reads_and_writes_the_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("people.tsv");
    std::fs::write(&input, "1\tada\t3.5\n2\tN/A\t\\N\n3\t\"b\tc\"\t-1\n").unwrap();
    let parquet = dir.path().join("people.parquet");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        parquet.to_str().unwrap(),
        "--no-header",
        "--null-value",
        "N/A",
        "--null-value",
        "\\N",
    ]);

    let stored = read_parquet(&parquet);
    assert_eq!(stored.num_rows(), 3);
    let ids = stored
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(ids.values(), &[1, 2, 3]);
    let names = stored
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        [Some("ada"), None, Some("b\tc")]
    );
    let scores = stored
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(
        scores.iter().collect::<Vec<_>>(),
        [Some(3.5), None, Some(-1.0)]
    );

    let semicolons = dir.path().join("people.csv");
    aqueduct_ok(&[
        "convert",
        parquet.to_str().unwrap(),
        semicolons.to_str().unwrap(),
        "--delimiter",
        ";",
        "--null-value",
        "NULL",
    ]);
    let text = std::fs::read_to_string(&semicolons).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[1], "1;ada;3.5");
    assert_eq!(lines[2], "2;NULL;NULL");
    assert_eq!(lines[3], "3;b\tc;-1.0");
}

#[test]
fn quoted_fields_with_delimiters_and_newlines_survive_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.csv");
    std::fs::write(
        &input,
        "id,note\n1,\"a, b\"\n2,\"two\nlines\"\n3,\"say \"\"hi\"\"\"\n",
    )
    .unwrap();
    let jsonl = dir.path().join("notes.jsonl");
    aqueduct_ok(&["convert", input.to_str().unwrap(), jsonl.to_str().unwrap()]);
    let notes: Vec<String> = read_json_lines(&jsonl)
        .iter()
        .map(|line| line["note"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notes, ["a, b", "two\nlines", "say \"hi\""]);

    let back = dir.path().join("back.csv");
    aqueduct_ok(&["convert", jsonl.to_str().unwrap(), back.to_str().unwrap()]);
    let mut reader = csv::Reader::from_path(&back).unwrap();
    let round_tripped: Vec<String> = reader
        .records()
        .map(|record| record.unwrap()[1].to_owned())
        .collect();
    assert_eq!(round_tripped, notes);
}

#[test]
fn parquet_on_stdin_to_an_arrow_stream_on_stdout_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = fixture(
        dir.path(),
        "events.jsonl",
        Dataset::Events,
        TextFormat::Jsonl,
        3_000,
    );
    let parquet = dir.path().join("events.parquet");
    aqueduct_ok(&[
        "convert",
        jsonl.to_str().unwrap(),
        parquet.to_str().unwrap(),
    ]);

    let output = aqueduct_with_stdin(
        &["convert", "-", "-", "--from", "parquet", "--to", "arrows"],
        std::fs::read(&parquet).unwrap(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let reader = arrow::ipc::reader::StreamReader::try_new(output.stdout.as_slice(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let streamed = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(streamed, read_parquet(&parquet));
}

#[test]
fn arrow_ipc_file_round_trips_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        5_000,
    );
    let arrow_file = dir.path().join("orders.arrow");
    let parquet = dir.path().join("orders.parquet");
    aqueduct_ok(&[
        "convert",
        csv.to_str().unwrap(),
        arrow_file.to_str().unwrap(),
    ]);
    aqueduct_ok(&[
        "convert",
        arrow_file.to_str().unwrap(),
        parquet.to_str().unwrap(),
    ]);

    let reader =
        arrow::ipc::reader::FileReader::try_new(File::open(&arrow_file).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let from_ipc = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(from_ipc.num_rows(), 5_000);
    assert_eq!(from_ipc, read_parquet(&parquet));
    assert_eq!(from_ipc, read_csv(&csv, schema));
}

#[test]
fn where_on_a_column_with_nulls_drops_the_unknown_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("amounts.csv");
    std::fs::write(&input, "id,amount\n1,5\n2,\n3,50\n4,-2\n").unwrap();
    let out = dir.path().join("big.jsonl");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--where",
        "amount > 1",
        "--select",
        "id, amount IS NULL AS missing",
    ]);
    let rows = read_json_lines(&out);
    assert_eq!(
        rows,
        [
            serde_json::json!({"id": 1, "missing": false}),
            serde_json::json!({"id": 3, "missing": false}),
        ]
    );
}

#[test]
fn select_decodes_only_the_columns_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("wide.csv");
    // `unused` holds a value that is not a number in a column inferred as one: decoding it
    // would reject the record, but no transform reads it.
    let mut text = String::from("id,unused,name\n");
    for id in 0..10_050 {
        let unused = if id == 10_020 {
            "x".to_owned()
        } else {
            id.to_string()
        };
        text.push_str(&format!("{id},{unused},n{id}\n"));
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--where",
        "id >= 10019",
        "--select",
        "name, id * 2 AS twice, 7 AS seven",
    ]);
    assert_eq!(
        read_json_lines(&out),
        (10_019..10_050)
            .map(|id| serde_json::json!({"name": format!("n{id}"), "twice": id * 2, "seven": 7}))
            .collect::<Vec<_>>()
    );

    let constants = dir.path().join("constants.jsonl");
    aqueduct_ok(&[
        "convert",
        input.to_str().unwrap(),
        constants.to_str().unwrap(),
        "--select",
        "1 AS one",
        "--on-error",
        "skip",
    ]);
    assert_eq!(read_json_lines(&constants).len(), 10_050);
}
