//! The conversion pipeline: a source, transforms and a sink on three threads joined by
//! bounded queues.
//!
//! ```text
//!   decode thread            transform thread             encode thread
//!   source.next_batch() --[queue]--> filter/select/map --[queue]--> sink.write()
//!                                                                   |
//!                                              temp file --commit--> destination
//! ```
//!
//! Each queue holds at most `queue_batches` batches, so a slow sink stalls the source
//! instead of filling memory: at most `2 * queue_batches + 3` batches exist at once (one in
//! each stage's hands), plus what the source and sink buffer themselves (see their module
//! docs). Errors travel down the queues with the data, so the encode thread is the one place
//! that decides whether the run succeeded; only then is the output renamed into place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::{CsvOptions, Format, Location};
use crate::rejects::{ErrorLimit, OnError, Policy, RejectSink, Rejected, RejectsFile};
use crate::sink::{BatchSink, ParquetCompression, SinkOptions, open_sink};
use crate::source::{BatchSource, SourceOptions, open_source};
use crate::stats::{OnProgress, StageGuard, StageStats, Stages};
use crate::transform::{PlannedTransform, Transform};

/// Default number of batches each queue between stages holds.
pub const DEFAULT_QUEUE_BATCHES: usize = 2;

/// Counters of a running conversion, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    input_bytes: AtomicU64,
    bytes_read: Arc<AtomicU64>,
    bytes_written: Arc<AtomicU64>,
    rows_read: AtomicU64,
    rows_written: AtomicU64,
    rows_rejected: AtomicU64,
    batches_read: AtomicU64,
}

impl Progress {
    /// The counter of input bytes, for a source to add to.
    pub(crate) fn bytes_read_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_read)
    }

    /// The counter of output bytes, for a sink to add to.
    pub(crate) fn bytes_written_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_written)
    }

    /// Size of the input in bytes when it is a file (0 for stdin).
    pub fn input_bytes(&self) -> u64 {
        self.input_bytes.load(Ordering::Relaxed)
    }

    /// Input bytes read so far, before decompression.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Output bytes written so far, after stream compression.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Rows decoded from the input so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }

    /// Rows handed to the sink so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }

    /// Records rejected (or skipped) as bad so far.
    pub fn rows_rejected(&self) -> u64 {
        self.rows_rejected.load(Ordering::Relaxed)
    }
}

/// What a finished conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records read from the input, good and bad.
    pub rows_read: u64,
    /// Rows written to the output.
    pub rows_written: u64,
    /// Rows a `filter` left out: `rows_read - rows_written - rows_rejected`.
    pub rows_filtered: u64,
    /// Records that could not be decoded and were skipped or rejected.
    pub rows_rejected: u64,
    /// Batches decoded from the input.
    pub batches: u64,
    /// Input bytes read, before decompression.
    pub bytes_read: u64,
    /// Output bytes written, after compression.
    pub bytes_written: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The schema of the output.
    pub output_schema: SchemaRef,
    /// Each stage's batches, rows, bytes and time busy ([`crate::stats`]).
    pub stages: Vec<StageStats>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let rate = self.bytes_read as f64 / seconds.max(1e-9) / 1e6;
        write!(
            f,
            "{} rows read, {} written, {} filtered out, {} rejected; \
             {} read, {} written in {:.2}s ({:.1} MB/s)",
            self.rows_read,
            self.rows_written,
            self.rows_filtered,
            self.rows_rejected,
            human_bytes(self.bytes_read),
            human_bytes(self.bytes_written),
            seconds,
            rate
        )
    }
}

impl Summary {
    /// The summary as JSON, for pipelines: row counts, bytes, seconds and output columns.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<serde_json::Value> = self
            .output_schema
            .fields()
            .iter()
            .map(|field| {
                serde_json::json!({"name": field.name(), "type": field.data_type().to_string()})
            })
            .collect();
        serde_json::json!({
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_filtered": self.rows_filtered,
            "rows_rejected": self.rows_rejected,
            "batches": self.batches,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "seconds": self.elapsed.as_secs_f64(),
            "output_columns": columns,
            "stages": self.stages.iter().map(StageStats::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A user function that takes rejected records.
type RejectCallback = Arc<dyn Fn(&Rejected) -> Result<()> + Send + Sync>;

/// Where rejected records go.
#[derive(Clone)]
enum RejectsTarget {
    File(std::path::PathBuf),
    Callback(RejectCallback),
}

impl std::fmt::Debug for RejectsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectsTarget::File(path) => f.debug_tuple("File").field(path).finish(),
            RejectsTarget::Callback(_) => f.write_str("Callback"),
        }
    }
}

impl RejectsTarget {
    fn open(&self) -> Result<Box<dyn RejectSink>> {
        Ok(match self {
            RejectsTarget::File(path) => Box::new(RejectsFile::create(path)?),
            RejectsTarget::Callback(callback) => {
                let callback = Arc::clone(callback);
                Box::new(move |record: &Rejected| callback(record))
            }
        })
    }
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A conversion from one input to one output, with optional transforms: the library form of
/// `aqueduct convert`.
///
/// ```no_run
/// # async fn example() -> aqueduct::Result<()> {
/// let summary = aqueduct::Convert::new("orders.csv", "active.parquet")
///     .filter("status = 'active' AND amount > 100")
///     .select("id, lower(email) AS email, amount * 1.19 AS gross")
///     .run()
///     .await?;
/// println!("{summary}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Convert {
    input: Location,
    output: Location,
    source: SourceOptions,
    sink: SinkOptions,
    schema_sql: Option<String>,
    transforms: Vec<Transform>,
    queue_batches: usize,
    on_error: OnError,
    max_errors: Option<ErrorLimit>,
    rejects: Option<RejectsTarget>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    threads: Option<usize>,
    stages: Arc<Stages>,
    on_progress: Option<OnProgress>,
}

impl Convert {
    /// A conversion from `input` to `output`; `"-"` means stdin or stdout. Formats come from
    /// the file extensions unless set with [`Convert::input_format`] and
    /// [`Convert::output_format`].
    pub fn new(input: impl Into<Location>, output: impl Into<Location>) -> Self {
        Convert {
            input: input.into(),
            output: output.into(),
            source: SourceOptions::default(),
            sink: SinkOptions::default(),
            schema_sql: None,
            transforms: Vec::new(),
            queue_batches: DEFAULT_QUEUE_BATCHES,
            on_error: OnError::Fail,
            max_errors: None,
            rejects: None,
            progress: Arc::new(Progress::default()),
            cancel: CancellationToken::new(),
            threads: None,
            stages: Arc::new(Stages::default()),
            on_progress: None,
        }
    }

    /// Reads the input as `format` whatever its name.
    pub fn input_format(mut self, format: Format) -> Self {
        self.source.format = Some(format);
        self
    }

    /// Writes the output as `format` whatever its name.
    pub fn output_format(mut self, format: Format) -> Self {
        self.sink.format = Some(format);
        self
    }

    /// The CSV dialect of the input.
    pub fn input_csv(mut self, csv: CsvOptions) -> Self {
        self.source.csv = csv;
        self
    }

    /// The CSV dialect of the output.
    pub fn output_csv(mut self, csv: CsvOptions) -> Self {
        self.sink.csv = csv;
        self
    }

    /// Uses `schema` for the input instead of inferring one.
    pub fn schema(mut self, schema: SchemaRef) -> Self {
        self.source.schema = Some(schema);
        self.schema_sql = None;
        self
    }

    /// Uses a SQL column list (`id BIGINT, email VARCHAR, created_at TIMESTAMP`) as the input
    /// schema; it is parsed when the run starts.
    pub fn schema_sql(mut self, column_list: impl Into<String>) -> Self {
        self.schema_sql = Some(column_list.into());
        self
    }

    /// How many records schema inference samples (default
    /// [`DEFAULT_INFER_ROWS`](crate::source::DEFAULT_INFER_ROWS));
    /// [`INFER_ALL_ROWS`](crate::infer::INFER_ALL_ROWS) reads the whole file first.
    pub fn infer_rows(mut self, rows: usize) -> Self {
        self.source.infer_rows = rows.max(1);
        self
    }

    /// Widens inferred types so that values past the sample still fit.
    pub fn widen(mut self, widen: crate::infer::Widen) -> Self {
        self.source.widen = widen;
        self
    }

    /// Rows per batch (default [`DEFAULT_BATCH_SIZE`](crate::DEFAULT_BATCH_SIZE)).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.source.batch_size = rows;
        self
    }

    /// Batches each queue between stages may hold (default [`DEFAULT_QUEUE_BATCHES`]).
    pub fn queue_batches(mut self, batches: usize) -> Self {
        self.queue_batches = batches.max(1);
        self
    }

    /// Keeps only the rows for which the SQL predicate is true.
    pub fn filter(mut self, predicate: impl Into<String>) -> Self {
        self.transforms.push(Transform::Filter(predicate.into()));
        self
    }

    /// Replaces the columns with a SQL select list.
    pub fn select(mut self, columns: impl Into<String>) -> Self {
        self.transforms.push(Transform::Select(columns.into()));
        self
    }

    /// Runs `function` on every batch; it returns batches of `output_schema`.
    pub fn map<F>(mut self, output_schema: SchemaRef, function: F) -> Self
    where
        F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        self.transforms.push(Transform::Map {
            output_schema,
            function: Arc::new(function),
            workers: 1,
        });
        self
    }

    /// Compression inside Parquet output (default snappy).
    pub fn parquet_compression(mut self, compression: ParquetCompression) -> Self {
        self.sink.parquet_compression = compression;
        self
    }

    /// Row limit of a Parquet row group.
    pub fn row_group_rows(mut self, rows: usize) -> Self {
        self.sink.row_group_rows = rows;
        self
    }

    /// Encoded-size budget of a Parquet row group, in bytes.
    pub fn row_group_bytes(mut self, bytes: usize) -> Self {
        self.sink.row_group_bytes = bytes;
        self
    }

    /// What to do with records that cannot be decoded (default [`OnError::Fail`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Writes rejected records as JSON Lines to `path`, and goes on past them. The file
    /// appears when the run succeeds or stops at the error limit.
    pub fn rejects_to(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.rejects = Some(RejectsTarget::File(path.into()));
        self.on_error = OnError::Reject;
        self
    }

    /// Hands every rejected record to `callback`, and goes on past them; an error from the
    /// callback stops the run.
    pub fn on_reject<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Rejected) -> Result<()> + Send + Sync + 'static,
    {
        self.rejects = Some(RejectsTarget::Callback(Arc::new(callback)));
        self.on_error = OnError::Reject;
        self
    }

    /// Stops the run once more records are bad than `limit` allows.
    pub fn max_errors(mut self, limit: ErrorLimit) -> Self {
        self.max_errors = Some(limit);
        self
    }

    /// The longest record a text input may hold (default
    /// [`DEFAULT_MAX_RECORD_BYTES`](crate::records::DEFAULT_MAX_RECORD_BYTES)).
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.source.max_record_bytes = bytes;
        self
    }

    /// Threads for decoding and encoding (default: the cores this process may use). With
    /// Parquet output, half of them encode columns and the rest decode; otherwise all of
    /// them decode text input. The output is the same whatever the number; each decoding
    /// thread beyond the first holds one more chunk in flight.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Drops JSON keys that are not in the schema instead of rejecting their records.
    pub fn ignore_unknown_keys(mut self, ignore: bool) -> Self {
        self.source.ignore_unknown_keys = ignore;
        self
    }

    /// Replaces invalid UTF-8 in text input with U+FFFD instead of rejecting the record.
    pub fn lossy_utf8(mut self, lossy: bool) -> Self {
        self.source.lossy_utf8 = lossy;
        self
    }

    /// Stops the run when `token` is cancelled.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Live counters of this conversion, to watch it from another task.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Per-stage counters of the run, readable from any thread while it runs.
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

    /// Runs the conversion to the end.
    ///
    /// Decoding, transforms and encoding run on tokio's blocking threads; this future only
    /// waits for them. The output appears at its path only when everything succeeded.
    ///
    /// Fails on the first input, SQL, encoding or I/O error, leaving nothing at the output
    /// path (an existing file there is untouched). On cancellation, through the token or by
    /// dropping this future, the stages stop at their next batch, the temporary output is
    /// deleted, and the result is [`Error::Cancelled`]. A stage blocked on a read of stdin
    /// ends when that read returns.
    pub async fn run(mut self) -> Result<Summary> {
        let started = Instant::now();
        let parquet_output =
            self.sink.format.or_else(|| self.output.format()) == Some(Format::Parquet);
        let threads = self.threads.unwrap_or_else(default_threads);
        (self.source.threads, self.sink.threads) = split_threads(threads, parquet_output);
        let cancel = self.cancel.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let progress = Arc::clone(&self.progress);

        let rejects = self.rejects.as_ref().map(RejectsTarget::open).transpose()?;
        let policy = Policy::new(
            self.input.input_name(),
            self.on_error,
            self.max_errors,
            rejects,
        )?;
        let mut source = until_cancelled(&cancel, self.open_source()).await?;
        let (mut transforms, mut output_schema) =
            plan_transforms(&self.transforms, source.schema())?;
        // Columns that no transform reads need not be decoded at all.
        if let Some(columns) = columns_read(&transforms, source.schema().fields().len())
            && source.project(&columns)
        {
            tracing::debug!(?columns, "decoding only the columns the transforms read");
            (transforms, output_schema) = plan_transforms(&self.transforms, source.schema())?;
        }
        let (sink, destination) = open_sink(
            &self.output,
            &output_schema,
            &self.sink,
            Arc::clone(&progress.bytes_written),
        )?;

        let (decoded_tx, decoded_rx) = mpsc::channel(self.queue_batches);
        let (transformed_tx, transformed_rx) = mpsc::channel(self.queue_batches);
        let stages = Arc::clone(&self.stages);
        let decode = {
            let (progress, cancel) = (Arc::clone(&progress), cancel.clone());
            let stage = stages.add("source");
            tokio::task::spawn_blocking(move || {
                decode_stage(source, policy, decoded_tx, &progress, &cancel, stage)
            })
        };
        let stage = stages.add("transform");
        let transform = tokio::task::spawn_blocking(move || {
            transform_stage(&transforms, decoded_rx, transformed_tx, stage)
        });
        let encode = {
            let (progress, cancel) = (Arc::clone(&progress), cancel.clone());
            let stage = stages.add("encode");
            tokio::task::spawn_blocking(move || {
                encode_stage(sink, transformed_rx, &progress, &cancel, stage)
            })
        };
        if let Some(on_progress) = &self.on_progress {
            on_progress.start(Arc::clone(&stages));
        }

        let encoded = until_cancelled(&cancel, async { encode.await.map_err(stage_failed)? }).await;
        if let Err(err) = encoded {
            // A run stopped by the error limit keeps its rejects file, which explains it.
            if matches!(err, Error::TooManyErrors { .. })
                && let Ok(decoded) = decode.await
            {
                decoded.policy.finish()?;
            }
            return Err(err);
        }
        // The encode stage saw the end of its queue, so both upstream stages have returned;
        // a stage that stopped early without sending an error would show up here.
        let decoded = decode.await.map_err(stage_failed)?;
        let transformed_all = transform.await.map_err(stage_failed)?;
        if !(decoded.reached_end && transformed_all) || cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        decoded.policy.finish()?;
        destination.commit()?;

        let rows_rejected = progress.rows_rejected();
        let summary = Summary {
            rows_read: progress.rows_read(),
            rows_written: progress.rows_written(),
            rows_filtered: progress.rows_read() - progress.rows_written() - rows_rejected,
            rows_rejected,
            batches: progress.batches_read.load(Ordering::Relaxed),
            bytes_read: progress.bytes_read(),
            bytes_written: progress.bytes_written(),
            elapsed: started.elapsed(),
            output_schema,
            stages: stages.snapshot(),
        };
        if rows_rejected > 0 {
            tracing::info!(rows_rejected, "bad records were left out of the output");
        }
        tracing::debug!(%summary, "conversion finished");
        Ok(summary)
    }

    /// Opens the source on a blocking thread: inference reads the start of the input.
    async fn open_source(&self) -> Result<Box<dyn BatchSource>> {
        let mut options = self.source.clone();
        if let Some(column_list) = &self.schema_sql {
            options.schema = Some(crate::sql::parse_schema("--schema", column_list)?);
        }
        if let Some(path) = self.input.path()
            && let Ok(meta) = std::fs::metadata(path)
        {
            self.progress
                .input_bytes
                .store(meta.len(), Ordering::Relaxed);
        }
        let input = self.input.clone();
        let bytes_read = Arc::clone(&self.progress.bytes_read);
        tokio::task::spawn_blocking(move || open_source(&input, &options, bytes_read))
            .await
            .map_err(stage_failed)?
    }
}

/// The cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Shares `threads` between decoding and encoding: (decoding, encoding).
///
/// Measured on two cores (benches/README.md), one decoding and one encoding thread beat
/// every other split for Parquet output, whose column encoders, decoder and file writes each
/// need most of a core. Text output is cheaper per byte and its formatting threads wait on
/// the decoders, so both get every thread there.
fn split_threads(threads: usize, parquet_output: bool) -> (usize, usize) {
    let threads = threads.max(1);
    if parquet_output {
        let encoding = (threads / 2).max(1);
        ((threads - encoding).max(1), encoding)
    } else {
        (threads, threads)
    }
}

async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

fn stage_failed(err: tokio::task::JoinError) -> Error {
    let message = if err.is_panic() {
        "a pipeline stage panicked".to_owned()
    } else {
        format!("a pipeline stage stopped: {err}")
    };
    Error::Map { message }
}

pub(crate) fn plan_transforms(
    transforms: &[Transform],
    input: SchemaRef,
) -> Result<(Vec<PlannedTransform>, SchemaRef)> {
    let mut schema = input;
    let mut planned = Vec::with_capacity(transforms.len());
    for transform in transforms {
        let step = transform.plan(&schema)?;
        schema = step.output_schema(&schema);
        planned.push(step);
    }
    Ok((planned, schema))
}

/// The input columns that `transforms` read, when a select drops some of them: those read
/// by the filters before the first select and by that select. `None` when every column can
/// reach the output (no select, or a map before it).
fn columns_read(transforms: &[PlannedTransform], width: usize) -> Option<Vec<usize>> {
    let mut read = std::collections::BTreeSet::new();
    let mut add = |expr: &Arc<dyn datafusion_physical_expr::PhysicalExpr>| {
        let columns = datafusion_physical_expr::utils::collect_columns(expr);
        read.extend(columns.iter().map(|column| column.index()));
    };
    for transform in transforms {
        match transform {
            PlannedTransform::Filter { predicate, .. } => add(predicate),
            PlannedTransform::Select { columns, .. } => {
                columns.iter().for_each(|column| add(&column.expr));
                // A batch keeps its row count only through a column: keep one at least.
                if read.is_empty() {
                    read.insert(0);
                }
                return (read.len() < width).then(|| read.into_iter().collect());
            }
            PlannedTransform::Map { .. } => return None,
        }
    }
    None
}

type BatchSender = mpsc::Sender<Result<RecordBatch>>;
type BatchReceiver = mpsc::Receiver<Result<RecordBatch>>;

/// How the decode stage ended.
pub(crate) struct Decoded {
    /// True when it reached the end of the input; false when it stopped because the run is
    /// over (an error was sent, or downstream has gone).
    reached_end: bool,
    /// The error policy, whose reject sink the run finishes.
    policy: Policy,
}

/// Reads batches until the end of the input, applying the error policy to the records the
/// source could not decode.
pub(crate) fn decode_stage(
    mut source: Box<dyn BatchSource>,
    mut policy: Policy,
    output: BatchSender,
    progress: &Progress,
    cancel: &CancellationToken,
    stage: StageGuard,
) -> Decoded {
    let _span = tracing::info_span!("stage", name = "source").entered();
    tracing::debug!("decode stage started");
    let reached_end = loop {
        if cancel.is_cancelled() {
            let _ = output.blocking_send(Err(Error::Cancelled));
            break false;
        }
        let started = Instant::now();
        let next = source.next_batch();
        let busy = started.elapsed();
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => match policy.check_limit(progress.rows_read()) {
                Ok(()) => {
                    tracing::debug!(rows = progress.rows_read(), "decode stage reached the end");
                    break true;
                }
                Err(err) => {
                    let _ = output.blocking_send(Err(err));
                    break false;
                }
            },
            Err(err) => {
                let _ = output.blocking_send(Err(err));
                break false;
            }
        };

        let rejected = source.take_rejected();
        let records = (batch.num_rows() + rejected.len()) as u64;
        progress.rows_read.fetch_add(records, Ordering::Relaxed);
        progress
            .rows_rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        progress.batches_read.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = policy.handle(rejected, progress.rows_read()) {
            let _ = output.blocking_send(Err(err));
            break false;
        }
        if batch.num_rows() == 0 {
            stage.counters.add_busy(busy);
            continue;
        }
        stage.counters.record(&batch, busy);
        if output.blocking_send(Ok(batch)).is_err() {
            break false;
        }
    };
    Decoded {
        reached_end,
        policy,
    }
}

/// Applies the transforms to each batch, in order. Returns true when its input ended.
pub(crate) fn transform_stage(
    transforms: &[PlannedTransform],
    mut input: BatchReceiver,
    output: BatchSender,
    stage: StageGuard,
) -> bool {
    let _span = tracing::info_span!("stage", name = "transform").entered();
    while let Some(received) = input.blocking_recv() {
        let started = Instant::now();
        let transformed = received.and_then(|batch| {
            transforms
                .iter()
                .try_fold(batch, |batch, transform| transform.apply(batch))
        });
        let busy = started.elapsed();
        let failed = transformed.is_err();
        match &transformed {
            Ok(batch) if batch.num_rows() == 0 => {
                stage.counters.add_busy(busy);
                continue;
            }
            Ok(batch) => stage.counters.record(batch, busy),
            Err(_) => stage.counters.add_busy(busy),
        }
        if output.blocking_send(transformed).is_err() || failed {
            return false;
        }
    }
    true
}

/// Writes each batch; finishes the sink at the end of the queue. The first error ends it.
fn encode_stage(
    mut sink: Box<dyn BatchSink>,
    mut input: BatchReceiver,
    progress: &Progress,
    cancel: &CancellationToken,
    stage: StageGuard,
) -> Result<()> {
    let _span = tracing::info_span!("stage", name = "encode").entered();
    tracing::debug!("encode stage started");
    while let Some(received) = input.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let batch = received?;
        let started = Instant::now();
        sink.write(&batch)?;
        stage.counters.record(&batch, started.elapsed());
        progress
            .rows_written
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let started = Instant::now();
    sink.finish()?;
    stage.counters.add_busy(started.elapsed());
    tracing::debug!(rows = progress.rows_written(), "encode stage finished");
    Ok(())
}
