//! Pipelines between a program's own values: any batch stream, reader or iterator of rows
//! in; a stream, a reader or any writer out.
//!
//! ```text
//!   Stream | RecordBatchReader | rows (serde) | file
//!     --> source thread --[queue]--> transform thread --[queue]--> Batches (Stream, reader)
//!                                                             \--> encoder --> Write | AsyncWrite
//! ```
//!
//! [`Pipeline`] runs its stages on threads of its own, joined by queues of
//! [`DEFAULT_QUEUE_BATCHES`] batches, so it needs no async runtime for a blocking reader, and
//! a slow consumer stalls the source: at most `2 * queue_batches + 3` batches exist at once,
//! whatever the input's length. Dropping the output ([`Batches`], [`ByteStream`] or the
//! future of [`Pipeline::write_to`]) cancels the run, and so does cancelling the token of
//! [`Pipeline::cancel_token`]: every stage stops before its next batch, a source waiting on
//! an async stream stops waiting, and the output ends at once with [`Error::Cancelled`]. A
//! source inside a blocking read (a pipe that sends nothing) lets go of what it holds when
//! that read returns.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatchReader;
use datafusion_common::DataFusionError;
use datafusion_execution::SendableRecordBatchStream;
use datafusion_physical_plan::stream::RecordBatchStreamAdapter;
use datafusion_physical_plan::streaming::PartitionStream;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::async_map::{AsyncMap, AsyncMapFn, AsyncMapOptions, CallError, async_map_stage};
use crate::error::{Error, Result};
use crate::format::{Format, Location};
use crate::ordered::ordered_map_stage;
use crate::pipeline::{
    DEFAULT_QUEUE_BATCHES, Progress, decode_stage, plan_transforms, transform_stage,
};
use crate::rejects::{OnError, Policy};
use crate::sink::{SinkOptions, open_chunk_sink, open_writer_sink};
use crate::source::{BatchSource, SourceOptions, open_source};
use crate::stats::{OnProgress, StageGuard, StageStats, Stages};
use crate::transform::{PlannedTransform, Transform};

/// A source that pulls batches from an async stream, from the source's thread.
///
/// Streams that need a tokio runtime (DataFusion's among them) are polled inside the runtime
/// that was current when the source was made. On a current-thread runtime, only the thread
/// inside `Runtime::block_on` drives tokio's IO and timers, so a stream that waits on sockets
/// or timers should come from a multi-thread runtime (the default of `#[tokio::main]`).
/// Without a runtime, the stream is polled with `futures`' executor.
pub struct StreamSource {
    schema: SchemaRef,
    stream: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
    runtime: Option<tokio::runtime::Handle>,
    cancel: CancellationToken,
}

impl StreamSource {
    /// A source of the batches of `stream`, all of `schema`.
    pub fn new(
        schema: SchemaRef,
        stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> Self {
        StreamSource {
            schema,
            stream: Box::pin(stream),
            runtime: tokio::runtime::Handle::try_current().ok(),
            cancel: CancellationToken::new(),
        }
    }
}

impl BatchSource for StreamSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Waits for the stream's next item, or until the run is cancelled.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let cancel = self.cancel.clone();
        let stream = &mut self.stream;
        let next = async move {
            tokio::select! {
                next = stream.next() => next.transpose(),
                () = cancel.cancelled() => Err(Error::Cancelled),
            }
        };
        match &self.runtime {
            Some(runtime) => runtime.block_on(next),
            None => futures::executor::block_on(next),
        }
    }

    fn cancel_with(&mut self, token: CancellationToken) {
        self.cancel = token;
    }
}

/// A source of the batches of any arrow [`RecordBatchReader`].
pub struct ReaderSource {
    reader: Box<dyn RecordBatchReader + Send>,
}

impl ReaderSource {
    /// A source that reads `reader` to its end.
    pub fn new(reader: impl RecordBatchReader + Send + 'static) -> Self {
        ReaderSource {
            reader: Box::new(reader),
        }
    }
}

impl BatchSource for ReaderSource {
    fn schema(&self) -> SchemaRef {
        self.reader.schema()
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.reader.next().transpose().map_err(|err| Error::Decode {
            location: "record batch reader".to_owned(),
            message: err.to_string(),
        })
    }
}

/// A source of batches of `batch_size` rows made from Rust values through serde: each value
/// is one row, its fields (by name) the columns of `schema`.
pub struct RowSource<I: Iterator> {
    schema: SchemaRef,
    rows: I,
    decoder: arrow::json::reader::Decoder,
    chunk: Vec<I::Item>,
    batch_size: usize,
    rows_seen: u64,
}

impl<I> RowSource<I>
where
    I: Iterator + Send,
    I::Item: serde::Serialize + Send,
{
    /// A source of `rows` in batches of `batch_size`. Fails when the schema cannot be
    /// decoded into (a type arrow-json does not build).
    pub fn new(
        schema: SchemaRef,
        rows: impl IntoIterator<IntoIter = I>,
        batch_size: usize,
    ) -> Result<Self> {
        let batch_size = batch_size.max(1);
        let decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(batch_size)
            .build_decoder()
            .map_err(|err| Error::Schema {
                location: "rows".to_owned(),
                message: err.to_string(),
            })?;
        Ok(RowSource {
            schema,
            rows: rows.into_iter(),
            decoder,
            chunk: Vec::with_capacity(batch_size),
            batch_size,
            rows_seen: 0,
        })
    }
}

impl<I> BatchSource for RowSource<I>
where
    I: Iterator + Send,
    I::Item: serde::Serialize + Send,
{
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.chunk.clear();
        self.chunk.extend(self.rows.by_ref().take(self.batch_size));
        if self.chunk.is_empty() {
            return Ok(None);
        }
        let first = self.rows_seen + 1;
        self.rows_seen += self.chunk.len() as u64;
        let rows_error = |err: ArrowError| Error::Decode {
            location: "rows".to_owned(),
            message: format!(
                "in rows {first} to {}: {err}",
                first + self.chunk.len() as u64 - 1
            ),
        };
        self.decoder.serialize(&self.chunk).map_err(rows_error)?;
        Ok(Some(
            self.decoder
                .flush()
                .map_err(rows_error)?
                .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema))),
        ))
    }
}

/// A source, the transforms to run on it, and where the batches go.
///
/// # Example
///
/// ```
/// # async fn example() -> aqueduct::Result<()> {
/// use std::sync::Arc;
/// use aqueduct::arrow::datatypes::{DataType, Field, Schema};
/// use aqueduct::stream::{Pipeline, RowSource};
/// use futures::TryStreamExt;
///
/// #[derive(serde::Serialize)]
/// struct Order { id: i64, amount: f64 }
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("amount", DataType::Float64, false),
/// ]));
/// let orders = (0..10_000).map(|id| Order { id, amount: id as f64 * 1.5 });
/// let batches: Vec<_> = Pipeline::new(RowSource::new(schema, orders, 4096)?)
///     .filter("amount >= 100")
///     .into_stream()?
///     .try_collect()
///     .await?;
/// let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
/// assert_eq!(rows, 10_000 - 67);
/// # Ok(())
/// # }
/// ```
pub struct Pipeline {
    source: Box<dyn BatchSource>,
    name: String,
    steps: Vec<Step>,
    queue_batches: usize,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    stages: Arc<Stages>,
    on_progress: Option<OnProgress>,
}

impl Pipeline {
    /// A pipeline that reads `source`.
    pub fn new(source: impl BatchSource + 'static) -> Self {
        Pipeline::from_boxed(Box::new(source), "source".to_owned())
    }

    /// A pipeline that reads a file (or `-`, stdin) as [`Convert`](crate::Convert) does,
    /// with `options`. Fails when the file cannot be opened or its schema inferred.
    pub fn open(input: impl Into<Location>, options: &SourceOptions) -> Result<Self> {
        let input = input.into();
        let progress = Arc::new(Progress::default());
        let source = open_source(&input, options, progress.bytes_read_counter())?;
        let mut pipeline = Pipeline::from_boxed(source, input.input_name());
        pipeline.progress = progress;
        Ok(pipeline)
    }

    /// A pipeline that reads an async stream of batches of `schema`.
    pub fn from_stream(
        schema: SchemaRef,
        stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> Self {
        Pipeline::new(StreamSource::new(schema, stream))
    }

    /// A pipeline that reads the output of a DataFusion query (or any DataFusion stream);
    /// DataFusion's errors become [`Error::Decode`] naming the stream.
    pub fn from_datafusion(stream: SendableRecordBatchStream) -> Self {
        let schema = stream.schema();
        let batches = stream.map(|batch| {
            batch.map_err(|err| Error::Decode {
                location: "DataFusion stream".to_owned(),
                message: err.to_string(),
            })
        });
        Pipeline::new(StreamSource::new(schema, batches))
    }

    /// A pipeline that reads an arrow [`RecordBatchReader`].
    pub fn from_reader(reader: impl RecordBatchReader + Send + 'static) -> Self {
        Pipeline::new(ReaderSource::new(reader))
    }

    fn from_boxed(source: Box<dyn BatchSource>, name: String) -> Self {
        Pipeline {
            source,
            name,
            steps: Vec::new(),
            queue_batches: DEFAULT_QUEUE_BATCHES,
            cancel: CancellationToken::new(),
            progress: Arc::new(Progress::default()),
            stages: Arc::new(Stages::default()),
            on_progress: None,
        }
    }

    /// Keeps the rows for which the SQL predicate is true.
    pub fn filter(mut self, predicate: impl Into<String>) -> Self {
        self.steps
            .push(Step::Transform(Transform::Filter(predicate.into())));
        self
    }

    /// Replaces the columns with a SQL select list.
    pub fn select(mut self, columns: impl Into<String>) -> Self {
        self.steps
            .push(Step::Transform(Transform::Select(columns.into())));
        self
    }

    /// Runs a fallible function on every batch; it must return batches of `output_schema`.
    pub fn map<F>(mut self, output_schema: SchemaRef, function: F) -> Self
    where
        F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        self.steps.push(Step::Transform(Transform::Map {
            output_schema,
            function: Arc::new(function),
            workers: 1,
        }));
        self
    }

    /// Runs a fallible function on every batch on `workers` threads, passing the results on
    /// in input order; it must return batches of `output_schema`.
    ///
    /// At most `2 * workers` batches are inside the stage at once: a slow batch holds back
    /// the ones after it rather than letting them pile up. A panic in `function` becomes an
    /// [`Error::Map`] of the run.
    pub fn map_ordered<F>(mut self, workers: usize, output_schema: SchemaRef, function: F) -> Self
    where
        F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        self.steps.push(Step::Transform(Transform::Map {
            output_schema,
            function: Arc::new(function),
            workers: workers.max(1),
        }));
        self
    }

    /// Runs an async function on every batch (a call to another service), with the
    /// concurrency, timeout, retries and circuit breaker of `options`; results are passed on
    /// in input order, and the function must return batches of `output_schema`. See
    /// [`async_map`](crate::async_map) for the rules.
    ///
    /// The stage runs on the tokio runtime current when the output is started
    /// ([`Pipeline::into_stream`] and the others), or on a runtime of its own without one.
    /// When the run is cancelled, calls in flight are dropped at their next await.
    pub fn map_async<F, Fut>(
        mut self,
        output_schema: SchemaRef,
        options: AsyncMapOptions,
        function: F,
    ) -> Self
    where
        F: Fn(RecordBatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<RecordBatch, CallError>> + Send + 'static,
    {
        let function: AsyncMapFn = Arc::new(move |batch| Box::pin(function(batch)));
        self.steps.push(Step::Async(AsyncMap {
            schema: output_schema,
            function,
            options,
        }));
        self
    }

    /// Batches each queue between stages may hold (default [`DEFAULT_QUEUE_BATCHES`]).
    pub fn queue_batches(mut self, batches: usize) -> Self {
        self.queue_batches = batches.max(1);
        self
    }

    /// Stops the run when `token` is cancelled; the output then ends with
    /// [`Error::Cancelled`].
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Counters of the run, readable while it runs.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Per-stage counters (batches, rows, bytes, time busy) of the run, readable from any
    /// thread while it runs and after it ended.
    pub fn stages(&self) -> Arc<Stages> {
        Arc::clone(&self.stages)
    }

    /// Calls `callback` with every stage's figures every `every` while the run goes on, and
    /// once more when its stages have ended. The callback runs on a thread of its own.
    pub fn on_progress(
        mut self,
        every: Duration,
        callback: impl Fn(&[StageStats]) + Send + Sync + 'static,
    ) -> Self {
        self.on_progress = Some(OnProgress::new(every, callback));
        self
    }

    /// The schema of the pipeline's output: the source's, through every step. Fails when
    /// the SQL does not plan against it.
    pub fn output_schema(&self) -> Result<SchemaRef> {
        let mut schema = self.source.schema();
        for step in &self.steps {
            schema = match step {
                Step::Transform(transform) => {
                    plan_transforms(std::slice::from_ref(transform), schema)?.1
                }
                Step::Async(map) => Arc::clone(&map.schema),
            };
        }
        Ok(schema)
    }

    /// The pipeline as a DataFusion table of one partition, to register with a
    /// `SessionContext` and query with SQL:
    /// `ctx.register_table("orders", pipeline.into_table()?)`.
    ///
    /// The table can be scanned once, since the pipeline reads its source once: a second
    /// scan yields an error. The pipeline starts when DataFusion first polls the scan, and
    /// stops, as any pipeline's output does, when DataFusion drops it (a `LIMIT` reached, a
    /// cancelled query). Fails when the SQL does not plan.
    pub fn into_table(self) -> Result<Arc<dyn datafusion_catalog::TableProvider>> {
        let partition: Arc<dyn PartitionStream> = Arc::new(self.into_partition()?);
        let schema = Arc::clone(partition.schema());
        let table = datafusion_catalog::streaming::StreamingTable::try_new(schema, vec![partition])
            .map_err(|err| Error::Schema {
                location: "DataFusion table".to_owned(),
                message: err.to_string(),
            })?;
        Ok(Arc::new(table))
    }

    /// The pipeline as one DataFusion partition stream, for a DataFusion plan of one's own;
    /// it can be executed once.
    pub fn into_partition(self) -> Result<OncePartition> {
        Ok(OncePartition {
            schema: self.output_schema()?,
            pipeline: std::sync::Mutex::new(Some(self)),
        })
    }

    /// Starts the stages and returns their output as a stream of batches.
    ///
    /// Fails at once when the SQL does not plan against the source's schema. Dropping the
    /// stream cancels the run.
    pub fn into_stream(self) -> Result<Batches> {
        let (schema, transformed, guard) = self.start()?;
        Ok(Batches {
            schema,
            receiver: transformed,
            cancel: guard,
        })
    }

    /// Starts the stages and returns their output as an arrow [`RecordBatchReader`], for
    /// code without an async runtime.
    pub fn into_reader(self) -> Result<BatchReader> {
        self.into_stream().map(|batches| BatchReader { batches })
    }

    /// Encodes the output as `format` into `writer`, a blocking [`Write`]; returns the rows
    /// written. Runs on the calling thread until the input ends.
    pub fn write_blocking(
        self,
        writer: impl Write + Send + 'static,
        format: Format,
        options: &SinkOptions,
    ) -> Result<u64> {
        let progress = Arc::clone(&self.progress);
        let stage = self.stages.add("encode");
        let (schema, mut batches, _guard) = self.start()?;
        let mut sink = open_writer_sink(
            Box::new(writer),
            "writer".to_owned(),
            format,
            &schema,
            options,
            progress.bytes_written_counter(),
        )?;
        let _span = tracing::info_span!("stage", name = "encode").entered();
        let mut rows = 0;
        while let Some(batch) = batches.blocking_recv() {
            let batch = batch?;
            let started = std::time::Instant::now();
            sink.write(&batch)?;
            stage.counters.record(&batch, started.elapsed());
            rows += batch.num_rows() as u64;
        }
        let started = std::time::Instant::now();
        sink.finish()?;
        stage.counters.add_busy(started.elapsed());
        Ok(rows)
    }

    /// Encodes the output as `format` into an async `writer` (a socket, a file); returns the
    /// rows written.
    ///
    /// The bytes come from [`Pipeline::into_bytes`], so the source reads no faster than
    /// `writer` takes them. When this future is dropped, the run is cancelled and the
    /// encoder stops before its next batch; what was written stays written.
    pub async fn write_to<W>(
        self,
        mut writer: W,
        format: Format,
        options: &SinkOptions,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin,
    {
        let mut bytes = self.into_bytes(format, options)?;
        while let Some(chunk) = bytes.next().await {
            writer
                .write_all(&chunk?)
                .await
                .map_err(|err| Error::io("writer", err))?;
        }
        writer
            .flush()
            .await
            .map_err(|err| Error::io("writer", err))?;
        Ok(bytes.rows_written())
    }

    /// Starts the stages and an encoder, and returns the encoded output as a stream of byte
    /// chunks of about [`WRITE_BUFFER_BYTES`](crate::sink::WRITE_BUFFER_BYTES): an HTTP
    /// response body, say.
    ///
    /// The encoder runs on a thread of its own and waits while two chunks are unread, so the
    /// source reads no faster than the stream is consumed. The stream ends after the last
    /// chunk (with the Parquet footer, for Parquet), or with the run's first error. Dropping
    /// it cancels the run: the source stops before its next batch.
    pub fn into_bytes(self, format: Format, options: &SinkOptions) -> Result<ByteStream> {
        let progress = Arc::clone(&self.progress);
        let cancel = self.cancel.clone();
        let stage = self.stages.add("encode");
        let (schema, mut batches, guard) = self.start()?;
        let (chunks_tx, chunks) = mpsc::channel::<Result<Vec<u8>>>(2);
        let mut sink = open_chunk_sink(
            chunks_tx.clone(),
            "output".to_owned(),
            format,
            &schema,
            options,
            progress.bytes_written_counter(),
        )?;
        let rows = Arc::new(AtomicU64::new(0));
        let rows_encoded = Arc::clone(&rows);
        std::thread::Builder::new()
            .name("aqueduct-encode".into())
            .spawn(move || {
                let _span = tracing::info_span!("stage", name = "encode").entered();
                let encoded = (|| -> Result<()> {
                    while let Some(batch) = batches.blocking_recv() {
                        if cancel.is_cancelled() {
                            return Err(Error::Cancelled);
                        }
                        let batch = batch?;
                        let started = std::time::Instant::now();
                        sink.write(&batch)?;
                        stage.counters.record(&batch, started.elapsed());
                        rows_encoded.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    }
                    let started = std::time::Instant::now();
                    let finished = sink.finish();
                    stage.counters.add_busy(started.elapsed());
                    finished
                })();
                if let Err(err) = encoded {
                    let _ = chunks_tx.blocking_send(Err(err));
                }
            })
            .map_err(|err| Error::io("output", err))?;
        Ok(ByteStream {
            chunks,
            rows,
            cancel: guard,
        })
    }

    /// Plans the transforms and starts the source and transform threads.
    fn start(self) -> Result<(SchemaRef, mpsc::Receiver<Result<RecordBatch>>, CancelGuard)> {
        let Pipeline {
            source,
            name,
            steps,
            queue_batches,
            cancel,
            progress,
            stages,
            on_progress,
        } = self;
        // Plan everything before anything starts, so that bad SQL fails the call.
        let mut schema = source.schema();
        let mut planned = Vec::new();
        for step in steps {
            match step {
                Step::Transform(transform) => {
                    let (mut one, output) = plan_transforms(&[transform], schema)?;
                    planned.push(Planned::Transform(one.remove(0)));
                    schema = output;
                }
                Step::Async(map) => {
                    schema = Arc::clone(&map.schema);
                    planned.push(Planned::Async(map));
                }
            }
        }
        let policy = Policy::new(name, OnError::Fail, None, None)?;
        let (decoded_tx, mut upstream) = mpsc::channel(queue_batches);
        let guard = cancel.clone().drop_guard();
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(work)
                .map(drop)
                .map_err(|err| Error::io("pipeline", err))
        };
        let source_cancel = cancel.clone();
        let mut source = source;
        source.cancel_with(cancel.clone());
        let stage = stages.add("source");
        spawn(
            "aqueduct-source",
            Box::new(move || {
                decode_stage(source, policy, decoded_tx, &progress, &source_cancel, stage);
            }),
        )?;
        // Runs of ordinary transforms share a thread; a map on several workers and an async
        // map are stages of their own.
        let flush = |segment: &mut Vec<PlannedTransform>,
                     upstream: &mut mpsc::Receiver<Result<RecordBatch>>|
         -> Result<()> {
            if segment.is_empty() {
                return Ok(());
            }
            let (tx, rx) = mpsc::channel(queue_batches);
            let transforms = std::mem::take(segment);
            let input = std::mem::replace(upstream, rx);
            let stage = stages.add("transform");
            spawn(
                "aqueduct-transform",
                Box::new(move || {
                    transform_stage(&transforms, input, tx, stage);
                }),
            )
        };
        let mut segment = Vec::new();
        for step in planned {
            let transform = match step {
                Planned::Transform(transform) => transform,
                Planned::Async(map) => {
                    flush(&mut segment, &mut upstream)?;
                    let (tx, rx) = mpsc::channel(queue_batches);
                    let input = std::mem::replace(&mut upstream, rx);
                    spawn_async_stage(map, input, tx, cancel.clone(), stages.add("async map"))?;
                    continue;
                }
            };
            let workers = match &transform {
                PlannedTransform::Map { workers, .. } => *workers,
                _ => 1,
            };
            if workers == 1 {
                segment.push(transform);
                continue;
            }
            flush(&mut segment, &mut upstream)?;
            let (tx, rx) = mpsc::channel(queue_batches);
            let input = std::mem::replace(&mut upstream, rx);
            let transform = Arc::new(transform);
            let stage = stages.add("map");
            spawn(
                "aqueduct-map",
                Box::new(move || {
                    ordered_map_stage(transform, workers, input, tx, stage);
                }),
            )?;
        }
        flush(&mut segment, &mut upstream)?;
        if let Some(on_progress) = on_progress {
            on_progress.start(Arc::clone(&stages));
        }
        Ok((schema, upstream, CancelGuard::new(cancel, guard)))
    }
}

/// One step of a pipeline, as the user gave it.
enum Step {
    Transform(Transform),
    Async(AsyncMap),
}

/// One step, planned against its input schema.
enum Planned {
    Transform(PlannedTransform),
    Async(AsyncMap),
}

/// Runs an async map on the runtime the pipeline was started in, or on a runtime of its own
/// on a thread of its own when there is none.
fn spawn_async_stage(
    map: AsyncMap,
    input: mpsc::Receiver<Result<RecordBatch>>,
    output: mpsc::Sender<Result<RecordBatch>>,
    cancel: CancellationToken,
    counters: StageGuard,
) -> Result<()> {
    let stage = tracing::Instrument::instrument(
        async_map_stage(map, input, output, cancel, counters),
        tracing::info_span!("stage", name = "async map"),
    );
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(stage);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|err| Error::io("pipeline", err))?;
    std::thread::Builder::new()
        .name("aqueduct-async-map".into())
        .spawn(move || runtime.block_on(stage))
        .map(drop)
        .map_err(|err| Error::io("pipeline", err))
}

/// The output of a [`Pipeline`] as a stream of batches; dropping it cancels the run.
pub struct Batches {
    schema: SchemaRef,
    receiver: mpsc::Receiver<Result<RecordBatch>>,
    cancel: CancelGuard,
}

impl Batches {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The output as a DataFusion stream, for a DataFusion plan or table to read; the
    /// pipeline's errors reach it as [`DataFusionError::External`]. Dropping it cancels the
    /// run.
    pub fn into_datafusion(self) -> SendableRecordBatchStream {
        Box::pin(DataFusionBatches { batches: self })
    }
}

/// A [`Pipeline`] as a DataFusion [`PartitionStream`] that can be executed once.
pub struct OncePartition {
    schema: SchemaRef,
    pipeline: std::sync::Mutex<Option<Pipeline>>,
}

impl std::fmt::Debug for OncePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OncePartition")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for OncePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _context: Arc<datafusion_execution::TaskContext>,
    ) -> SendableRecordBatchStream {
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        let started = match pipeline {
            Some(pipeline) => pipeline
                .into_stream()
                .map_err(|err| DataFusionError::External(Box::new(err))),
            None => Err(DataFusionError::Execution(
                "an aqueduct pipeline reads its source once: this table was scanned already"
                    .to_owned(),
            )),
        };
        match started {
            Ok(batches) => batches.into_datafusion(),
            Err(err) => Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                futures::stream::once(async move { Err(err) }),
            )),
        }
    }
}

/// [`Batches`] as a DataFusion record batch stream.
struct DataFusionBatches {
    batches: Batches,
}

impl Stream for DataFusionBatches {
    type Item = std::result::Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.batches).poll_next(cx).map(|batch| {
            batch.map(|batch| batch.map_err(|err| DataFusionError::External(Box::new(err))))
        })
    }
}

impl datafusion_execution::RecordBatchStream for DataFusionBatches {
    fn schema(&self) -> SchemaRef {
        self.batches.schema()
    }
}

impl Stream for Batches {
    type Item = Result<RecordBatch>;

    /// The next batch; once the run is cancelled, [`Error::Cancelled`] at once, even while
    /// a stage is still inside a blocking read, and then the end.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.cancel.poll_next(&mut this.receiver, cx)
    }
}

/// The output of a [`Pipeline`] as a blocking arrow reader; dropping it cancels the run.
pub struct BatchReader {
    batches: Batches,
}

impl Iterator for BatchReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        futures::executor::block_on(self.batches.next())
            .map(|batch| batch.map_err(|err| ArrowError::ExternalError(Box::new(err))))
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        self.batches.schema()
    }
}

/// Cancels the run when the output is dropped, and ends the output as soon as the run is
/// cancelled, whatever its stages are doing.
struct CancelGuard {
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
    _on_drop: DropGuard,
}

impl CancelGuard {
    fn new(token: CancellationToken, on_drop: DropGuard) -> Self {
        CancelGuard {
            cancelled: Box::pin(token.cancelled_owned()),
            ended: false,
            _on_drop: on_drop,
        }
    }

    /// What comes out of `queue` next, unless the run was cancelled first.
    fn poll_next<T>(
        &mut self,
        queue: &mut mpsc::Receiver<Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = queue.poll_recv(cx) {
            if matches!(item, None | Some(Err(_))) {
                self.ended = true;
            }
            return Poll::Ready(item);
        }
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.ended = true;
                Poll::Ready(Some(Err(Error::Cancelled)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The encoded output of a [`Pipeline`], as chunks of bytes; dropping it cancels the run.
pub struct ByteStream {
    chunks: mpsc::Receiver<Result<Vec<u8>>>,
    rows: Arc<AtomicU64>,
    cancel: CancelGuard,
}

impl ByteStream {
    /// Rows encoded so far.
    pub fn rows_written(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

impl Stream for ByteStream {
    type Item = Result<Vec<u8>>;

    /// The next chunk; once the run is cancelled, [`Error::Cancelled`] at once, and then
    /// the end.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.cancel.poll_next(&mut this.chunks, cx)
    }
}
