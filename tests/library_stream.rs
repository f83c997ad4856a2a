//! Pipelines between a program's own values: rows, streams and readers in; streams, readers
//! and writers out; backpressure, cancellation and a consumer that goes away.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use aqueduct::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use aqueduct::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use aqueduct::arrow::record_batch::{RecordBatchIterator, RecordBatchReader};
use aqueduct::generate::{Dataset, TextFormat};
use aqueduct::stream::{Pipeline, RowSource};
use aqueduct::{BatchSource, CancellationToken, Error, Format, SinkOptions, SourceOptions};
use common::*;
use futures::{StreamExt, TryStreamExt};

#[derive(serde::Serialize)]
struct Order {
    id: i64,
    customer: String,
    amount: Option<f64>,
}

fn order_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
    ]))
}

fn orders(count: i64) -> impl Iterator<Item = Order> + Send {
    (0..count).map(|id| Order {
        id,
        customer: format!("c{}", id % 7),
        amount: (id % 5 != 0).then(|| id as f64 / 4.0),
    })
}

fn ids(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|batch| {
            let ids = batch
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            ids.values().to_vec()
        })
        .collect()
}

#[tokio::test]
async fn rows_become_batches_that_stream_out_filtered_and_selected() {
    let source = RowSource::new(order_schema(), orders(10_000), 1_000).unwrap();
    let stream = Pipeline::new(source)
        .filter("amount > 100 AND customer = 'c3'")
        .select("id, amount * 2 AS doubled")
        .into_stream()
        .unwrap();
    assert_eq!(stream.schema().field(1).name(), "doubled");
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let expected: Vec<i64> = (0..10_000)
        .filter(|id| id % 5 != 0 && *id as f64 / 4.0 > 100.0 && id % 7 == 3)
        .collect();
    assert_eq!(ids(&batches, 0), expected);
    let doubled = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(doubled.value(0), expected[0] as f64 / 2.0);
    assert!(batches.iter().all(|batch| batch.num_rows() <= 1_000));
}

#[test]
fn a_file_reads_out_through_a_blocking_reader_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture(
        dir.path(),
        "orders.csv",
        Dataset::Orders,
        TextFormat::Csv,
        5_000,
    );
    let options = SourceOptions {
        batch_size: 512,
        ..SourceOptions::default()
    };
    let reader = Pipeline::open(csv.to_str().unwrap(), &options)
        .unwrap()
        .select("id")
        .into_reader()
        .unwrap();
    assert_eq!(reader.schema().fields().len(), 1);
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(ids(&batches, 0), (1..=5_000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_stream_of_batches_is_written_to_an_async_writer_as_csv() {
    let schema = order_schema();
    let batch = |start: i64| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![start, start + 1])),
                Arc::new(StringArray::from(vec!["a,b", "c"])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
            ],
        )
        .map_err(|err| Error::Map {
            message: err.to_string(),
        })
    };
    let input = futures::stream::iter([batch(1), batch(3)]);
    let mut out = Vec::new();
    let rows = Pipeline::from_stream(Arc::clone(&schema), input)
        .write_to(&mut out, Format::Csv, &SinkOptions::default())
        .await
        .unwrap();
    assert_eq!(rows, 4);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "id,customer,amount\n1,\"a,b\",1.5\n2,c,\n3,\"a,b\",1.5\n4,c,\n"
    );
}

#[test]
fn an_arrow_reader_feeds_a_pipeline_written_as_parquet() {
    let schema = order_schema();
    let batches: Vec<RecordBatch> = RowSource::new(Arc::clone(&schema), orders(3_000), 700)
        .map(|mut source| std::iter::from_fn(move || source.next_batch().unwrap()))
        .unwrap()
        .collect();
    let reader = RecordBatchIterator::new(batches.clone().into_iter().map(Ok), schema);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let rows = Pipeline::from_reader(reader)
        .write_blocking(file, Format::Parquet, &SinkOptions::default())
        .unwrap();
    assert_eq!(rows, 3_000);
    let read = read_parquet(&path);
    let expected =
        aqueduct::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(read, expected);
    assert_eq!(read.column(2).null_count(), 600);
}

/// An endless source that counts the batches asked of it.
struct Endless {
    schema: SchemaRef,
    made: Arc<AtomicUsize>,
}

impl BatchSource for Endless {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn next_batch(&mut self) -> aqueduct::Result<Option<RecordBatch>> {
        let start = self.made.fetch_add(1, Ordering::SeqCst) as i64 * 100;
        let ids = Int64Array::from_iter_values(start..start + 100);
        Ok(Some(
            RecordBatch::try_new(Arc::clone(&self.schema), vec![Arc::new(ids)]).unwrap(),
        ))
    }
}

fn endless() -> (Endless, Arc<AtomicUsize>) {
    let made = Arc::new(AtomicUsize::new(0));
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    (
        Endless {
            schema,
            made: Arc::clone(&made),
        },
        made,
    )
}

/// Waits until `counter` stops moving, checks that it stays put a while longer, and returns
/// its value.
async fn stays_stopped(counter: &AtomicUsize) -> usize {
    let stopped = settled(counter).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counter.load(Ordering::SeqCst),
        stopped,
        "the source kept going"
    );
    stopped
}

/// Waits until `counter` stops moving and returns its value.
async fn settled(counter: &AtomicUsize) -> usize {
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test]
async fn a_slow_consumer_holds_the_source_back_and_dropping_the_stream_stops_it() {
    let (source, made) = endless();
    let mut stream = Pipeline::new(source).into_stream().unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    // Two queues of two batches, and one batch in each stage's hands.
    let ahead = settled(&made).await;
    assert!(
        ahead <= 3 + 2 * 2 + 3,
        "the source ran {ahead} batches ahead"
    );
    drop(stream);
    stays_stopped(&made).await;
}

#[tokio::test]
async fn cancelling_the_token_ends_the_stream_with_the_cancelled_error() {
    let (source, _) = endless();
    let token = CancellationToken::new();
    let mut stream = Pipeline::new(source)
        .cancel_token(token.clone())
        .into_stream()
        .unwrap();
    stream.next().await.unwrap().unwrap();
    token.cancel();
    let mut ended_with = None;
    while let Some(item) = stream.next().await {
        if let Err(err) = item {
            ended_with = Some(err);
        }
    }
    assert!(
        matches!(ended_with, Some(Error::Cancelled)),
        "{ended_with:?}"
    );
}

/// An async writer that takes `limit` bytes and then fails as a closed connection does.
struct Disconnecting {
    taken: usize,
    limit: usize,
}

impl tokio::io::AsyncWrite for Disconnecting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.taken >= self.limit {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        self.taken += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_writer_that_goes_away_stops_the_source() {
    let (source, made) = endless();
    let writer = Disconnecting {
        taken: 0,
        limit: 4 << 20,
    };
    let result = Pipeline::new(source)
        .write_to(writer, Format::Jsonl, &SinkOptions::default())
        .await;
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    let stopped = stays_stopped(&made).await;
    // 4 MiB taken, plus at most about 3 MiB in flight (a buffer being filled, two queued
    // chunks) and the batches in the queues, at 1.4 KB of JSON Lines per batch of 100 ids.
    assert!(
        stopped < 8_000,
        "{stopped} batches made for 4 MiB of output"
    );
}

fn id_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// Doubles the ids of a batch.
fn doubled(batch: &RecordBatch) -> RecordBatch {
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let doubled = Int64Array::from_iter_values(ids.values().iter().map(|id| id * 2));
    RecordBatch::try_new(batch.schema(), vec![Arc::new(doubled)]).unwrap()
}

#[tokio::test]
async fn an_ordered_parallel_map_runs_concurrently_and_keeps_input_order() {
    #[derive(serde::Serialize)]
    struct Row {
        id: i64,
    }
    let rows = (0..20_000).map(|id| Row { id });
    let active = Arc::new(AtomicUsize::new(0));
    let most_active = Arc::new(AtomicUsize::new(0));
    let (active_in, most_in) = (Arc::clone(&active), Arc::clone(&most_active));
    let batches: Vec<RecordBatch> = Pipeline::new(RowSource::new(id_schema(), rows, 100).unwrap())
        .map_ordered(4, id_schema(), move |batch| {
            let now = active_in.fetch_add(1, Ordering::SeqCst) + 1;
            most_in.fetch_max(now, Ordering::SeqCst);
            let first = first_id(&batch);
            // Uneven work, so that later batches often finish before earlier ones.
            std::thread::sleep(Duration::from_millis((first as u64 * 7919) % 13));
            active_in.fetch_sub(1, Ordering::SeqCst);
            Ok(doubled(&batch))
        })
        .filter("id % 4 = 0")
        .into_stream()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<i64> = (0..20_000)
        .map(|id| id * 2)
        .filter(|id| id % 4 == 0)
        .collect();
    assert_eq!(ids(&batches, 0), expected);
    assert!(
        most_active.load(Ordering::SeqCst) > 1,
        "the map never ran in parallel"
    );
}

#[tokio::test]
async fn a_slow_head_batch_holds_the_others_back() {
    let (source, made) = endless();
    let mut stream = Pipeline::new(source)
        .map_ordered(4, id_schema(), |batch| {
            let first = first_id(&batch);
            if first == 0 {
                std::thread::sleep(Duration::from_millis(800));
            }
            Ok(doubled(&batch))
        })
        .into_stream()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // While the head batch is slow: 2 * 4 in the map stage, two queued before it, one in
    // the source's hands and one waiting to be handed out.
    let waiting = made.load(Ordering::SeqCst);
    assert!(
        waiting <= 12,
        "{waiting} batches made behind a slow head batch"
    );
    let mut firsts = Vec::new();
    for _ in 0..20 {
        let batch = stream.next().await.unwrap().unwrap();
        firsts.push(first_id(&batch));
    }
    assert_eq!(
        firsts,
        (0..20).map(|index| index * 200).collect::<Vec<i64>>()
    );
}

#[tokio::test]
async fn a_panic_in_the_map_is_an_error_of_the_run() {
    let (source, _) = endless();
    let mut stream = Pipeline::new(source)
        .map_ordered(3, id_schema(), |batch| {
            let first = first_id(&batch);
            assert!(first != 300, "batch at 300 is bad");
            Ok(batch)
        })
        .into_stream()
        .unwrap();
    for expected in [0, 100, 200] {
        let batch = stream.next().await.unwrap().unwrap();
        let first = first_id(&batch);
        assert_eq!(first, expected);
    }
    match stream.next().await {
        Some(Err(Error::Map { message })) => {
            assert!(
                message.contains("panicked: batch at 300 is bad"),
                "{message}"
            );
        }
        other => panic!("expected the panic as an error, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stage_counters_and_the_progress_callback_follow_the_run() {
    let source = RowSource::new(order_schema(), orders(5_000), 500).unwrap();
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&reports);
    let pipeline = Pipeline::new(source)
        .filter("id % 2 = 0")
        .map_ordered(2, order_schema(), Ok)
        .on_progress(Duration::from_millis(10), move |stages| {
            seen.lock().unwrap().push(stages.to_vec());
        });
    let stages = pipeline.stages();
    let mut out = Vec::new();
    let rows = pipeline
        .write_to(&mut out, Format::Jsonl, &SinkOptions::default())
        .await
        .unwrap();
    assert_eq!(rows, 2_500);
    let finals = stages.snapshot();
    let names: Vec<&str> = finals.iter().map(|stage| stage.name.as_str()).collect();
    assert_eq!(names, ["encode", "source", "transform", "map"]);
    let by_name = |name: &str| finals.iter().find(|stage| stage.name == name).unwrap();
    assert_eq!(
        (by_name("source").rows, by_name("source").batches),
        (5_000, 10)
    );
    assert_eq!(
        (by_name("transform").rows, by_name("map").rows),
        (2_500, 2_500)
    );
    assert_eq!(
        (by_name("encode").rows, by_name("encode").batches),
        (2_500, 10)
    );
    assert!(finals.iter().all(|stage| stage.bytes > 0));
    assert!(by_name("source").busy > Duration::ZERO);

    // The callback's last report, made once every stage had ended, is the final figures.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reports = reports.lock().unwrap();
    assert_eq!(reports.last().unwrap(), &finals);
    assert!(stages.running() == 0);
}

/// A DataFusion stream over fixed items, as a DataFusion plan would hand over.
struct FixedStream {
    schema: SchemaRef,
    items: std::vec::IntoIter<datafusion_common::Result<RecordBatch>>,
}

impl futures::Stream for FixedStream {
    type Item = datafusion_common::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.items.next())
    }
}

impl datafusion_execution::RecordBatchStream for FixedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[tokio::test]
async fn datafusion_streams_plug_in_on_both_sides() {
    let schema = id_schema();
    let batch = |start: i64| {
        Ok(RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(start..start + 10))],
        )
        .unwrap())
    };
    let query_output = FixedStream {
        schema: Arc::clone(&schema),
        items: vec![batch(0), batch(10), batch(20)].into_iter(),
    };
    let mut out = Pipeline::from_datafusion(Box::pin(query_output))
        .filter("id % 10 < 3")
        .into_stream()
        .unwrap()
        .into_datafusion();
    assert_eq!(
        datafusion_execution::RecordBatchStream::schema(&*out),
        schema
    );
    let mut seen = Vec::new();
    while let Some(batch) = out.next().await {
        seen.push(batch.unwrap());
    }
    assert_eq!(ids(&seen, 0), [0, 1, 2, 10, 11, 12, 20, 21, 22]);

    let failing = FixedStream {
        schema: Arc::clone(&schema),
        items: vec![
            batch(0),
            Err(datafusion_common::DataFusionError::Execution(
                "disk full".into(),
            )),
        ]
        .into_iter(),
    };
    let result: Result<Vec<RecordBatch>, Error> = Pipeline::from_datafusion(Box::pin(failing))
        .into_stream()
        .unwrap()
        .try_collect()
        .await;
    match result {
        Err(Error::Decode { location, message }) => {
            assert_eq!(location, "DataFusion stream");
            assert!(message.contains("disk full"), "{message}");
        }
        other => panic!("expected the DataFusion error, got {other:?}"),
    }
}

#[tokio::test]
async fn cancelling_stops_a_source_that_waits_on_a_stream_that_never_yields() {
    let token = CancellationToken::new();
    let pipeline =
        Pipeline::from_stream(id_schema(), futures::stream::pending()).cancel_token(token.clone());
    let stages = pipeline.stages();
    let mut stream = pipeline.into_stream().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends soon after the cancel");
    assert!(matches!(ended, Some(Err(Error::Cancelled))), "{ended:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stages.running(), 0, "the source thread has ended");
}

#[tokio::test]
async fn a_pipeline_is_a_datafusion_table_scanned_once() {
    use datafusion_physical_plan::ExecutionPlan;
    use datafusion_physical_plan::streaming::{PartitionStream, StreamingTableExec};

    let pipeline = || {
        Pipeline::new(RowSource::new(order_schema(), orders(1_000), 100).unwrap())
            .filter("customer = 'c2'")
            .select("id, amount")
    };
    let table = pipeline().into_table().unwrap();
    let fields: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    assert_eq!(fields, ["id", "amount"]);

    // What DataFusion's scan of the table runs: an executor over the partition, with a
    // projection to the first column.
    let partition: Arc<dyn PartitionStream> = Arc::new(pipeline().into_partition().unwrap());
    let schema = Arc::clone(partition.schema());
    let plan =
        StreamingTableExec::try_new(schema, vec![partition], Some(&vec![0]), [], false, None)
            .unwrap();
    let context = Arc::new(datafusion_execution::TaskContext::default());
    let mut stream = plan.execute(0, Arc::clone(&context)).unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.unwrap());
    }
    assert_eq!(batches[0].num_columns(), 1);
    let expected: Vec<i64> = (0..1_000).filter(|id| id % 7 == 2).collect();
    assert_eq!(ids(&batches, 0), expected);

    let mut again = plan.execute(0, context).unwrap();
    let second = again.next().await.unwrap();
    assert!(
        second.unwrap_err().to_string().contains("scanned already"),
        "a second scan is an error"
    );
}

/// A source stuck in a blocking read that takes `stuck` to return.
struct Stuck {
    stuck: Duration,
}

impl BatchSource for Stuck {
    fn schema(&self) -> SchemaRef {
        id_schema()
    }

    fn next_batch(&mut self) -> aqueduct::Result<Option<RecordBatch>> {
        std::thread::sleep(self.stuck);
        Ok(None)
    }
}

#[tokio::test]
async fn the_output_ends_at_once_on_cancel_while_the_source_is_inside_a_blocking_read() {
    let token = CancellationToken::new();
    let mut stream = Pipeline::new(Stuck {
        stuck: Duration::from_secs(3),
    })
    .cancel_token(token.clone())
    .into_stream()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cancelled_at = std::time::Instant::now();
    token.cancel();
    let ended = stream.next().await;
    assert!(matches!(ended, Some(Err(Error::Cancelled))), "{ended:?}");
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
    assert!(stream.next().await.is_none());
}
