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
pub use stream::{Batches, ByteStream, Pipeline};
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
