//! Tests of the library API: the `Convert` builder, batch sizes, map stages, summaries and
//! cancellation.

mod common;

use std::sync::{Arc, Mutex};

use aqueduct::generate::{Dataset, TextFormat};
use aqueduct::{CancellationToken, Convert, Error, Format};
use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;

/// A map stage that records the size of each batch it sees and passes it on.
fn recording(
    sizes: Arc<Mutex<Vec<usize>>>,
) -> impl Fn(RecordBatch) -> aqueduct::Result<RecordBatch> {
    move |batch: RecordBatch| {
        sizes.lock().unwrap().push(batch.num_rows());
        Ok(batch)
    }
}

async fn batch_sizes_for(input: &std::path::Path, batch_size: usize) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let schema = aqueduct::head(&input.into(), &Default::default(), 1)
        .unwrap()
        .schema();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    Convert::new(input, dir.path().join("out.arrow"))
        .batch_size(batch_size)
        .map(schema, recording(Arc::clone(&sizes)))
        .run()
        .await
        .unwrap();
    Arc::try_unwrap(sizes).unwrap().into_inner().unwrap()
}

#[tokio::test]
async fn every_source_honours_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        10_500,
    );
    let jsonl = fixture(
        dir.path(),
        "events.jsonl",
        Dataset::Events,
        TextFormat::Jsonl,
        10_500,
    );
    let parquet = dir.path().join("orders.parquet");
    let ipc = dir.path().join("orders.arrow");
    Convert::new(csv.as_path(), parquet.as_path())
        .row_group_rows(3_000)
        .batch_size(777)
        .run()
        .await
        .unwrap();
    Convert::new(csv.as_path(), ipc.as_path())
        .batch_size(333)
        .run()
        .await
        .unwrap();

    let mut expected = vec![1000; 10];
    expected.push(500);
    for input in [&csv, &jsonl, &parquet, &ipc] {
        assert_eq!(
            batch_sizes_for(input, 1000).await,
            expected,
            "{}",
            input.display()
        );
    }
}

#[tokio::test]
async fn summary_counts_rows_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        8_000,
    );
    let out = dir.path().join("out.parquet");
    let summary = Convert::new(csv.as_path(), out.as_path())
        .filter("status = 'shipped'")
        .select("id")
        .batch_size(1024)
        .run()
        .await
        .unwrap();

    let stored = read_parquet(&out);
    assert_eq!(summary.rows_read, 8_000);
    assert_eq!(summary.rows_written, stored.num_rows() as u64);
    assert_eq!(
        summary.rows_read,
        summary.rows_written + summary.rows_filtered
    );
    assert_eq!(summary.batches, 8);
    assert_eq!(summary.bytes_read, std::fs::metadata(&csv).unwrap().len());
    assert_eq!(
        summary.bytes_written,
        std::fs::metadata(&out).unwrap().len()
    );
    assert!(summary.rows_filtered > 0 && summary.rows_written > 0);
}

#[tokio::test]
async fn map_stage_transforms_batches() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        2_000,
    );
    let out = dir.path().join("ids.jsonl");
    let schema = Arc::new(Schema::new(vec![Field::new(
        "double_id",
        DataType::Int64,
        false,
    )]));
    let output_schema = Arc::clone(&schema);
    Convert::new(csv.as_path(), out.as_path())
        .select("id")
        .map(Arc::clone(&schema), move |batch| {
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let doubled: Int64Array = ids.iter().map(|id| id.map(|id| id * 2)).collect();
            Ok(RecordBatch::try_new(Arc::clone(&output_schema), vec![Arc::new(doubled)]).unwrap())
        })
        .output_format(Format::Jsonl)
        .run()
        .await
        .unwrap();
    let values: Vec<i64> = read_json_lines(&out)
        .iter()
        .map(|line| line["double_id"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (1..=2_000).map(|id| id * 2).collect::<Vec<_>>());
}

#[tokio::test]
async fn map_error_fails_the_run_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        5_000,
    );
    let out = dir.path().join("out.csv");
    let schema = aqueduct::head(&csv.as_path().into(), &Default::default(), 1)
        .unwrap()
        .schema();
    let seen = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&seen);
    let result = Convert::new(csv.as_path(), out.as_path())
        .batch_size(1000)
        .map(schema, move |batch| {
            let mut count = counter.lock().unwrap();
            *count += 1;
            if *count == 3 {
                return Err(Error::Map {
                    message: "enrichment service refused batch 3".into(),
                });
            }
            Ok(batch)
        })
        .run()
        .await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("batch 3"), "{err}");
    assert_eq!(files_in(dir.path()), ["orders.csv"]);
}

#[tokio::test]
async fn cancelled_token_stops_the_run_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        50_000,
    );
    let out = dir.path().join("out.parquet");
    let token = CancellationToken::new();
    let schema = aqueduct::head(&csv.as_path().into(), &Default::default(), 1)
        .unwrap()
        .schema();
    let cancel_after_first = token.clone();
    let result = Convert::new(csv.as_path(), out.as_path())
        .batch_size(100)
        .cancel_token(token)
        .map(schema, move |batch| {
            cancel_after_first.cancel();
            Ok(batch)
        })
        .run()
        .await;
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(files_in(dir.path()), ["orders.csv"]);
}
