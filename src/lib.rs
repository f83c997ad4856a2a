//! aqueduct: streaming, columnar conversion between CSV, JSON Lines, Parquet and Arrow IPC,
//! with SQL filters and projections, in memory that does not grow with the input.
//!
//! A [source] decodes its input into Arrow [`RecordBatch`]es of a fixed number of
//! rows; [transforms](transform) run on each batch as vectorised kernels planned once from
//! SQL with DataFusion; a [sink] encodes each batch as it arrives. The
//! [pipeline] runs the three on their own threads, joined by bounded queues, and
//! writes the output atomically.
//!
//! ```text
//!   input --> source --[queue]--> filter / select / map --[queue]--> sink --> output
//! ```
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> aqueduct::Result<()> {
//! use aqueduct::{Convert, ParquetCompression};
//!
//! let summary = Convert::new("orders.csv.gz", "orders.parquet")
//!     .filter("status = 'active' AND amount > 100")
//!     .select("id, lower(email) AS email, amount * 1.19 AS gross, created_at")
//!     .parquet_compression(ParquetCompression::Zstd)
//!     .run()
//!     .await?;
//! assert_eq!(summary.rows_read, summary.rows_written + summary.rows_filtered);
//! # Ok(())
//! # }
//! ```
//!
//! # Embedding: streams, writers and custom stages
//!
//! [`Pipeline`] is the library's general form: a source (any [`BatchSource`], an async
//! stream of batches, an arrow `RecordBatchReader`, a DataFusion stream, a file, or the
//! program's own rows through serde), the same SQL transforms, Rust functions as stages,
//! and an output that is a stream, a blocking reader, a DataFusion stream or table
//! ([`Pipeline::into_table`], to register with a `SessionContext`), a stream of encoded
//! bytes, or a writer. Every stage runs on its own thread behind bounded queues, so a slow consumer
//! holds the source back, and dropping the output cancels the run.
//!
//! Rows of the program's own, filtered, out as a stream of batches:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use aqueduct::arrow::datatypes::{DataType, Field, Schema};
//! use aqueduct::stream::{Pipeline, RowSource};
//! use futures::TryStreamExt;
//!
//! #[derive(serde::Serialize)]
//! struct Reading { sensor: String, celsius: f64 }
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("sensor", DataType::Utf8, false),
//!     Field::new("celsius", DataType::Float64, false),
//! ]));
//! let readings = (0..1000).map(|i| Reading {
//!     sensor: format!("s{}", i % 3),
//!     celsius: i as f64 / 10.0,
//! });
//! let batches: Vec<_> = Pipeline::new(RowSource::new(schema, readings, 256)?)
//!     .filter("sensor = 's1' AND celsius > 50")
//!     .select("celsius * 9 / 5 + 32 AS fahrenheit")
//!     .into_stream()?
//!     .try_collect()
//!     .await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 166);
//! # Ok::<(), aqueduct::Error>(())
//! # }).unwrap();
//! ```
//!
//! An export as a stream of bytes, the body of an HTTP response (`examples/export_service.rs`
//! serves one with axum), or written to any `AsyncWrite` with [`Pipeline::write_to`]; the
//! encoder waits while two chunks are unread:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use aqueduct::stream::Pipeline;
//! use aqueduct::{Format, SinkOptions, SourceOptions};
//! use futures::StreamExt;
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("orders.csv");
//! # std::fs::write(&path, "id,amount\n1,10.5\n2,99.0\n3,250.0\n").unwrap();
//! # let path = path.to_str().unwrap();
//!
//! let mut body = Pipeline::open(path, &SourceOptions::default())?
//!     .filter("amount > 50")
//!     .into_bytes(Format::Jsonl, &SinkOptions::default())?;
//! let mut text = Vec::new();
//! while let Some(chunk) = body.next().await {
//!     text.extend(chunk?);
//! }
//! assert_eq!(
//!     String::from_utf8(text).unwrap(),
//!     "{\"id\":2,\"amount\":99.0}\n{\"id\":3,\"amount\":250.0}\n"
//! );
//! # Ok::<(), aqueduct::Error>(())
//! # }).unwrap();
//! ```
//!
//! Custom stages: [`Pipeline::map`] runs a fallible function on each batch,
//! [`Pipeline::map_ordered`] runs it on several threads and keeps the input order (with at
//! most twice as many batches in flight as threads, and a panic turned into an error), and
//! [`Pipeline::map_async`] calls another service for each batch with bounded concurrency,
//! a timeout, retries with backoff and jitter, and a circuit breaker
//! ([`async_map`]):
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use aqueduct::arrow::datatypes::{DataType, Field, Schema};
//! use aqueduct::async_map::{AsyncMapOptions, CallError};
//! use aqueduct::stream::{Pipeline, RowSource};
//! use futures::TryStreamExt;
//!
//! #[derive(serde::Serialize)]
//! struct Row { id: i64 }
//! let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
//! let rows = (0..100).map(|id| Row { id });
//! let failures = Arc::new(AtomicU32::new(0));
//! let flaky = Arc::clone(&failures);
//! let options = AsyncMapOptions {
//!     concurrency: 4,
//!     timeout: Duration::from_secs(1),
//!     initial_backoff: Duration::from_millis(1),
//!     ..AsyncMapOptions::default()
//! };
//! let batches: Vec<_> = Pipeline::new(RowSource::new(Arc::clone(&schema), rows, 10)?)
//!     .map_ordered(2, Arc::clone(&schema), |batch| Ok(batch))
//!     .map_async(schema, options, move |batch| {
//!         // A dependency that fails every third call, as a busy service might.
//!         let fail = flaky.fetch_add(1, Ordering::SeqCst) % 3 == 0;
//!         async move {
//!             if fail { Err(CallError::Retryable("503".into())) } else { Ok(batch) }
//!         }
//!     })
//!     .into_stream()?
//!     .try_collect()
//!     .await?;
//! assert_eq!(batches.len(), 10);
//! # Ok::<(), aqueduct::Error>(())
//! # }).unwrap();
//! ```
//!
//! Cancellation: [`Pipeline::cancel_token`] takes a [`CancellationToken`]; cancelling it,
//! or dropping the output, stops every stage before its next batch (a source waiting on an
//! async stream stops waiting at once) and the output ends with [`Error::Cancelled`].
//! Observability: [`Pipeline::stages`] and [`Convert::stages`] give each stage's batches,
//! rows, bytes and time busy while the run goes on ([`stats`]), [`Summary::stages`] the
//! final figures, `on_progress` a callback every interval, and each stage runs in a
//! `tracing` span.
//!
//! # Bad records
//!
//! Text sources frame their input into records with the line and byte offset of each
//! ([`records`]), decode whole chunks, and set aside the records that do not decode
//! ([`text`]), each as a [`Rejected`] that names its line, column, value and reason. The
//! error policy ([`OnError`], [`ErrorLimit`], [`Convert::rejects_to`],
//! [`Convert::on_reject`]) decides whether the run stops, skips them or hands them on;
//! every record read is written, filtered out, rejected, or the run fails.
//!
//! # Memory
//!
//! Peak memory is bounded by the batch size, the queue depth and the writer's buffers, not by
//! the input: see [`pipeline`] for the number of batches alive at once, [`source`] and
//! [`sink`] for what each end buffers. The largest holders are Parquet row groups: the one
//! being encoded, capped by [`Convert::row_group_bytes`] (16 MiB by default), and the one
//! before it while it is written out ([`parquet_encode`]).

pub mod async_map;
pub mod error;
pub mod format;
pub mod generate;
pub mod infer;
mod ordered;
pub mod parallel;
pub mod parquet_encode;
pub mod pipeline;
pub mod records;
pub mod rejects;
pub mod sink;
pub mod source;
pub mod sql;
pub mod stats;
pub mod stream;
pub mod text;
pub mod transform;

pub use arrow;
pub use arrow::array::RecordBatch;
pub use error::{Error, Result};
pub use format::{CsvOptions, Format, Location, StreamCompression};
pub use pipeline::{Convert, Progress, Summary};
pub use rejects::{ErrorLimit, OnError, RejectSink, Rejected, RejectsFile};
pub use sink::{ParquetCompression, SinkOptions};
pub use source::{BatchSource, SourceOptions, open_reader, open_source};
pub use stats::{StageStats, Stages};
pub use stream::{Batches, ByteStream, OncePartition, Pipeline};
pub use tokio_util::sync::CancellationToken;

/// The README's examples, compiled as doctests so that they keep up with the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;

/// Rows per batch unless set otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// Reads the first `rows` rows of `location`, as one batch (empty for an empty input).
///
/// Blocking; reads no more of the input than the first batch needs. Fails on the first
/// record among them that cannot be decoded.
pub fn head(location: &Location, options: &SourceOptions, rows: usize) -> Result<RecordBatch> {
    let options = SourceOptions {
        batch_size: rows.max(1),
        threads: 1,
        ..options.clone()
    };
    let mut source = open_source(location, &options, Default::default())?;
    let schema = source.schema();
    let batch = source.next_batch()?;
    if let Some(bad) = source.take_rejected().first() {
        return Err(bad.to_error());
    }
    Ok(batch
        .map(|batch| batch.slice(0, batch.num_rows().min(rows)))
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}
