//! Sinks: each batch is encoded and written as it arrives.
//!
//! ```text
//!   batch --> encoder (CSV | JSONL | Parquet | Arrow IPC) --> gzip | zstd --> buffer
//!         ==> writing thread: count bytes --> temporary file beside the destination | stdout
//! ```
//!
//! Full buffers are written out by a thread of their own (or, for a
//! [`ByteStream`](crate::ByteStream), handed to its consumer as they are): on the machine of
//! `benches/README.md`, copying a gigabyte of CSV into the page cache took about 30% of a
//! Parquet-to-CSV run's CPU time, which now overlaps with encoding instead of following it.
//!
//! Memory held by a sink: [`WRITE_BUFFERS`] write buffers of [`WRITE_BUFFER_BYTES`], the
//! compressor's window,
//! and for Parquet the row group being encoded, which is closed once its encoded size reaches
//! `row_group_bytes` (or it reaches `row_group_rows`), plus the row group before it while that
//! is written out: about two budgets and a few batches
//! ([`parquet_encode`](crate::parquet_encode) encodes columns on several threads).
//!
//! Output to a path is atomic: bytes go to a hidden temporary file in the destination's
//! folder, which [`Destination`] renames over the destination only after the whole run
//! succeeded. Dropping it unfinished deletes the temporary file.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::basic::{GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::format::{CsvOptions, Format, Location, StreamCompression};
use crate::parquet_encode::ParallelParquetWriter;

/// Size of each buffer between the encoder and the file.
pub const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Write buffers a sink may hold: one being filled, one queued, one being written.
pub const WRITE_BUFFERS: usize = 3;

/// Default encoded-size budget of a Parquet row group.
///
/// The writer holds a whole encoded row group until it closes it, so this budget is the
/// largest single term of a Parquet run's peak memory. 16 MiB is about the encoded size of
/// a 100 MB JSON Lines input, so a small run and a huge one differ little in peak memory,
/// while row groups of half a million rows stay large enough for readers to scan well.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 16 << 20;

/// Default row limit of a Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1 << 20;

/// Something that takes record batches, one at a time.
///
/// Sinks are blocking: the pipeline runs them on a blocking thread.
pub trait BatchSink: Send {
    /// Encodes and writes one batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Writes what is still buffered (footers, compressor trailers) and flushes.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Compression inside a Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    /// Zstandard (level 1): small files at a speed close to snappy's.
    Zstd,
    /// Snappy, the most widely supported.
    #[default]
    Snappy,
    /// gzip (level 6).
    Gzip,
    /// Uncompressed pages.
    None,
}

impl std::str::FromStr for ParquetCompression {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "zstd" => Ok(ParquetCompression::Zstd),
            "snappy" => Ok(ParquetCompression::Snappy),
            "gzip" => Ok(ParquetCompression::Gzip),
            "none" | "uncompressed" => Ok(ParquetCompression::None),
            _ => Err(Error::usage(format!(
                "unknown compression `{name}`: expected zstd, snappy, gzip or none"
            ))),
        }
    }
}

/// How a sink writes its output.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Output format; `None` takes it from the file extension.
    pub format: Option<Format>,
    /// CSV dialect.
    pub csv: CsvOptions,
    /// Compression inside Parquet files.
    pub parquet_compression: ParquetCompression,
    /// A Parquet row group is closed when it reaches this many rows...
    pub row_group_rows: usize,
    /// ...or when its encoded, buffered size passes this many bytes.
    pub row_group_bytes: usize,
    /// Threads that encode Parquet columns.
    pub threads: usize,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            format: None,
            csv: CsvOptions::default(),
            parquet_compression: ParquetCompression::default(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            threads: crate::source::DEFAULT_THREADS,
        }
    }
}

/// Where the bytes of a sink end up, and how they get there atomically.
///
/// For a path, holds the temporary file until [`Destination::commit`] renames it over the
/// destination; dropped without a commit, the temporary file is deleted.
#[derive(Debug)]
pub struct Destination {
    name: String,
    pending: Option<(tempfile::TempPath, PathBuf)>,
}

impl Destination {
    /// Moves the finished output into place. Does nothing for stdout.
    pub fn commit(mut self) -> Result<()> {
        if let Some((temp, target)) = self.pending.take() {
            temp.persist(&target)
                .map_err(|err| Error::io(&self.name, err.error))?;
            tracing::debug!(output = %self.name, "output committed");
        }
        Ok(())
    }
}

/// Opens a sink that writes batches of `schema` to `location`.
///
/// Returns the sink and the [`Destination`] that must be committed once the run has
/// succeeded. `bytes_written` counts output bytes as they leave the encoder (after stream
/// compression). Fails when the format cannot be determined or the output cannot be created.
pub fn open_sink(
    location: &Location,
    schema: &SchemaRef,
    options: &SinkOptions,
    bytes_written: Arc<AtomicU64>,
) -> Result<(Box<dyn BatchSink>, Destination)> {
    let format = options
        .format
        .or_else(|| location.format())
        .ok_or_else(|| {
            Error::usage(format!(
                "cannot tell the format of {}: use --to csv|jsonl|parquet|arrow",
                location.output_name()
            ))
        })?;
    let name = location.output_name();
    let compression = location.compression();
    if compression != StreamCompression::None && matches!(format, Format::Parquet) {
        return Err(Error::usage(
            "Parquet compresses inside the file: use --compression instead of .gz or .zst",
        ));
    }

    let (file, destination): (Box<dyn Write + Send>, Destination) = match location {
        Location::Path(path) => {
            let temp = temp_file_beside(path).map_err(|err| Error::io(&name, err))?;
            let (file, temp_path) = temp.into_parts();
            let destination = Destination {
                name: name.clone(),
                pending: Some((temp_path, path.clone())),
            };
            (Box::new(file) as Box<dyn Write + Send>, destination)
        }
        Location::Std => (
            Box::new(io::stdout()) as Box<dyn Write + Send>,
            Destination {
                name: name.clone(),
                pending: None,
            },
        ),
    };
    let mut options = options.clone();
    if format == Format::Csv
        && location.is_tsv()
        && options.format.is_none()
        && options.csv.delimiter == b','
    {
        options.csv.delimiter = b'\t';
    }
    let stream_format = location.is_ipc_stream() || location.path().is_none();
    let sink = sink_over(
        file,
        name,
        format,
        compression,
        schema,
        &options,
        stream_format,
        bytes_written,
    )?;
    Ok((sink, destination))
}

/// A sink that writes batches of `schema` as `format` into `writer` (a socket, a pipe, an
/// HTTP body), named `name` in errors. Arrow IPC goes out in the stream format.
pub fn open_writer_sink(
    writer: Box<dyn Write + Send>,
    name: String,
    format: Format,
    schema: &SchemaRef,
    options: &SinkOptions,
    bytes_written: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSink>> {
    sink_over(
        writer,
        name,
        format,
        StreamCompression::None,
        schema,
        options,
        true,
        bytes_written,
    )
}

/// A sink whose encoded bytes go, in chunks of up to [`WRITE_BUFFER_BYTES`], straight into
/// `chunks`: no writing thread and no copy between the encoder's buffer and the consumer.
/// The encoder waits while the queue is full.
pub(crate) fn open_chunk_sink(
    chunks: ChunkSender,
    name: String,
    format: Format,
    schema: &SchemaRef,
    options: &SinkOptions,
    bytes_written: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSink>> {
    let buffered = BackgroundWriter::to_chunks(chunks, bytes_written);
    encoder_over(
        buffered,
        name,
        format,
        StreamCompression::None,
        schema,
        options,
        true,
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "the two public openers each pass their own mix"
)]
fn sink_over(
    file: Box<dyn Write + Send>,
    name: String,
    format: Format,
    compression: StreamCompression,
    schema: &SchemaRef,
    options: &SinkOptions,
    ipc_stream: bool,
    bytes_written: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSink>> {
    let counted = CountingWriter {
        inner: file,
        bytes_written,
    };
    let buffered = BackgroundWriter::new(counted).map_err(|err| Error::io(&name, err))?;
    encoder_over(
        buffered,
        name,
        format,
        compression,
        schema,
        options,
        ipc_stream,
    )
}

/// The encoder of `format` over `buffered`, optionally compressed.
fn encoder_over(
    buffered: Buffered,
    name: String,
    format: Format,
    compression: StreamCompression,
    schema: &SchemaRef,
    options: &SinkOptions,
    ipc_stream: bool,
) -> Result<Box<dyn BatchSink>> {
    let stream =
        CompressedWriter::new(buffered, compression).map_err(|err| Error::io(&name, err))?;

    tracing::debug!(output = %name, %format, "opening sink");
    Ok(match format {
        Format::Csv => Box::new(TextSink::new(
            name,
            stream,
            TextEncoding::csv(&options.csv),
            options.threads,
        )?),
        Format::Jsonl => Box::new(TextSink::new(
            name,
            stream,
            TextEncoding::Jsonl,
            options.threads,
        )?),
        Format::Parquet => Box::new(ParquetSink::new(name, stream, schema, options)?),
        Format::Ipc => Box::new(IpcSink::new(name, stream, schema, ipc_stream)?),
    })
}

/// A hidden temporary file in the folder of `path`, to be renamed over it when complete.
pub(crate) fn temp_file_beside(path: &std::path::Path) -> io::Result<tempfile::NamedTempFile> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(folder)
}

/// Adds every byte written to a shared counter.
struct CountingWriter<W> {
    inner: W,
    bytes_written: Arc<AtomicU64>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Output = CountingWriter<Box<dyn Write + Send>>;

/// A buffered writer that hands its full buffers on: to a thread that writes them, or, for
/// [`open_chunk_sink`], as chunks to the consumer's queue.
struct BackgroundWriter {
    buffer: Vec<u8>,
    handoff: Handoff,
}

enum Handoff {
    Thread(WritingThread),
    /// The consumer owns each chunk it takes, so buffers are not reused.
    Chunks {
        chunks: ChunkSender,
        bytes_written: Arc<AtomicU64>,
    },
}

/// The queue of a [`ByteStream`](crate::ByteStream): encoded chunks or the run's error.
pub(crate) type ChunkSender = tokio::sync::mpsc::Sender<Result<Vec<u8>>>;

/// A thread that writes full buffers to the output and gives them back.
struct WritingThread {
    full: Option<SyncSender<Vec<u8>>>,
    /// Buffers the thread has written, back for reuse.
    empty: Receiver<Vec<u8>>,
    buffers: usize,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackgroundWriter {
    fn new(mut output: Output) -> io::Result<Self> {
        let (full, incoming) = sync_channel::<Vec<u8>>(WRITE_BUFFERS - 2);
        let (recycle, empty) = sync_channel::<Vec<u8>>(WRITE_BUFFERS);
        let thread = std::thread::Builder::new()
            .name("aqueduct-write".into())
            .spawn(move || {
                for mut buffer in incoming {
                    output.write_all(&buffer)?;
                    buffer.clear();
                    let _ = recycle.try_send(buffer);
                }
                output.flush()
            })?;
        Ok(BackgroundWriter {
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            handoff: Handoff::Thread(WritingThread {
                full: Some(full),
                empty,
                buffers: 1,
                thread: Some(thread),
            }),
        })
    }

    fn to_chunks(chunks: ChunkSender, bytes_written: Arc<AtomicU64>) -> Self {
        BackgroundWriter {
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            handoff: Handoff::Chunks {
                chunks,
                bytes_written,
            },
        }
    }

    /// Hands the buffer on and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match &mut self.handoff {
            Handoff::Thread(thread) => thread.hand_over(&mut self.buffer),
            Handoff::Chunks {
                chunks,
                bytes_written,
            } => {
                let full =
                    std::mem::replace(&mut self.buffer, Vec::with_capacity(WRITE_BUFFER_BYTES));
                bytes_written.fetch_add(full.len() as u64, Ordering::Relaxed);
                chunks
                    .blocking_send(Ok(full))
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader has gone"))
            }
        }
    }

    /// Writes what is left; with a writing thread, waits for it and returns its error.
    fn finish(mut self) -> io::Result<()> {
        self.hand_over()?;
        match &mut self.handoff {
            Handoff::Thread(thread) => thread.finish(),
            Handoff::Chunks { .. } => Ok(()),
        }
    }
}

impl WritingThread {
    /// Sends `buffer` to the thread and puts an empty one in its place, waiting for one to
    /// come back once all [`WRITE_BUFFERS`] exist.
    fn hand_over(&mut self, buffer: &mut Vec<u8>) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(empty) => empty,
            Err(_) if self.buffers < WRITE_BUFFERS => {
                self.buffers += 1;
                Vec::with_capacity(WRITE_BUFFER_BYTES)
            }
            Err(_) => Vec::new(),
        };
        let full = std::mem::replace(buffer, next);
        let sent = self.full.as_ref().map(|sender| sender.send(full));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.stop());
        }
        if buffer.capacity() == 0 {
            // All buffers were out: the thread gives one back once it has written it.
            match self.empty.recv() {
                Ok(empty) => *buffer = empty,
                Err(_) => return Err(self.stop()),
            }
        }
        Ok(())
    }

    /// Waits for the thread to write everything and returns its error, if any.
    fn finish(&mut self) -> io::Result<()> {
        drop(self.full.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writing thread panicked")),
            None => Ok(()),
        }
    }

    /// The writing thread's error, once it has stopped.
    fn stop(&mut self) -> io::Error {
        drop(self.full.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(err))) => err,
            _ => io::Error::other("the writing thread stopped"),
        }
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + buf.len() > WRITE_BUFFER_BYTES {
            self.hand_over()?;
        }
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Hands what is buffered on, without waiting for it to be written: output to a pipe
    /// keeps moving, and [`BackgroundWriter::finish`] waits for the end.
    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

type Buffered = BackgroundWriter;

/// The byte stream under an encoder, optionally compressed.
enum CompressedWriter {
    Plain(Buffered),
    Gzip(flate2::write::GzEncoder<Buffered>),
    Zstd(zstd::stream::write::Encoder<'static, Buffered>),
}

impl CompressedWriter {
    fn new(inner: Buffered, compression: StreamCompression) -> io::Result<Self> {
        Ok(match compression {
            StreamCompression::None => CompressedWriter::Plain(inner),
            StreamCompression::Gzip => CompressedWriter::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            StreamCompression::Zstd => {
                CompressedWriter::Zstd(zstd::stream::write::Encoder::new(inner, 3)?)
            }
        })
    }

    /// Writes the compressor's trailer and everything buffered to the file.
    fn finish(self) -> io::Result<()> {
        let inner = match self {
            CompressedWriter::Plain(inner) => inner,
            CompressedWriter::Gzip(encoder) => encoder.finish()?,
            CompressedWriter::Zstd(encoder) => encoder.finish()?,
        };
        inner.finish()
    }
}

impl Write for CompressedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressedWriter::Plain(inner) => inner.write(buf),
            CompressedWriter::Gzip(inner) => inner.write(buf),
            CompressedWriter::Zstd(inner) => inner.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressedWriter::Plain(inner) => inner.flush(),
            CompressedWriter::Gzip(inner) => inner.flush(),
            CompressedWriter::Zstd(inner) => inner.flush(),
        }
    }
}

fn encode_error(name: &str, format: &'static str, err: impl std::fmt::Display) -> Error {
    Error::Encode {
        location: name.to_owned(),
        format,
        message: err.to_string(),
    }
}

/// A text format of one batch at a time.
#[derive(Clone)]
enum TextEncoding {
    Csv(arrow::csv::WriterBuilder),
    Jsonl,
}

impl TextEncoding {
    fn csv(csv: &CsvOptions) -> Self {
        let mut builder = arrow::csv::WriterBuilder::new()
            .with_header(csv.header)
            .with_delimiter(csv.delimiter)
            .with_quote(csv.quote);
        if let Some(escape) = csv.escape {
            builder = builder.with_escape(escape).with_double_quote(false);
        }
        if let Some(null) = csv.null_values.first() {
            builder = builder.with_null(null.clone());
        }
        TextEncoding::Csv(builder)
    }

    fn name(&self) -> &'static str {
        match self {
            TextEncoding::Csv(_) => "csv",
            TextEncoding::Jsonl => "jsonl",
        }
    }

    /// Appends `batch` to `out`; the CSV header goes before the output's first batch only.
    fn encode(
        &self,
        batch: &RecordBatch,
        first: bool,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), arrow::error::ArrowError> {
        match self {
            TextEncoding::Csv(builder) => {
                let header = first && builder.header();
                builder.clone().with_header(header).build(out).write(batch)
            }
            TextEncoding::Jsonl => {
                let mut writer = arrow::json::LineDelimitedWriter::new(out);
                writer.write(batch)?;
                writer.finish()
            }
        }
    }
}

/// One thread that formats batches as text.
struct TextWorker {
    batches: SyncSender<(bool, RecordBatch, Vec<u8>)>,
    encoded: Receiver<std::result::Result<Vec<u8>, arrow::error::ArrowError>>,
    thread: JoinHandle<()>,
}

/// CSV or JSON Lines, formatted on [`SinkOptions::threads`] threads and written in order.
///
/// Batch `i` goes to thread `i mod N`, so reading the threads' results in turn gives the
/// batches back in their order. At most two batches per thread are in flight; formatting is
/// the costly part of text output (number and timestamp formatting, quoting), so threads
/// beyond the first pay wherever the input decodes faster than one thread formats.
struct TextSink {
    name: String,
    encoding: &'static str,
    stream: Option<CompressedWriter>,
    workers: Vec<TextWorker>,
    sent: usize,
    written: usize,
    /// Written buffers, cleared, for the next batches to be formatted into.
    spare: Vec<Vec<u8>>,
}

impl TextSink {
    fn new(
        name: String,
        stream: CompressedWriter,
        encoding: TextEncoding,
        threads: usize,
    ) -> Result<Self> {
        let workers = (0..threads.max(1))
            .map(|index| {
                let (batches, incoming) = sync_channel::<(bool, RecordBatch, Vec<u8>)>(1);
                let (results, encoded) = sync_channel(1);
                let encoding = encoding.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("aqueduct-{}-{index}", encoding.name()))
                    .spawn(move || {
                        for (first, batch, mut out) in incoming {
                            let result = encoding.encode(&batch, first, &mut out).map(|()| out);
                            if results.send(result).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(|err| Error::io(&name, err))?;
                Ok(TextWorker {
                    batches,
                    encoded,
                    thread,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextSink {
            encoding: encoding.name(),
            name,
            stream: Some(stream),
            workers,
            sent: 0,
            written: 0,
            spare: Vec::new(),
        })
    }

    /// Writes the oldest batch in flight, waiting for its thread to format it.
    fn write_oldest(&mut self) -> Result<()> {
        let worker = &self.workers[self.written % self.workers.len()];
        let mut bytes = match worker.encoded.recv() {
            Ok(result) => result.map_err(|err| encode_error(&self.name, self.encoding, err))?,
            Err(_) => return Err(self.worker_stopped()),
        };
        self.written += 1;
        let stream = self.stream.as_mut().expect("open until finish");
        stream
            .write_all(&bytes)
            .and_then(|()| stream.flush())
            .map_err(|err| Error::io(&self.name, err))?;
        bytes.clear();
        self.spare.push(bytes);
        Ok(())
    }

    fn worker_stopped(&self) -> Error {
        encode_error(&self.name, self.encoding, "a formatting thread stopped")
    }
}

impl BatchSink for TextSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        while self.sent - self.written >= 2 * self.workers.len() {
            self.write_oldest()?;
        }
        let out = self.spare.pop().unwrap_or_default();
        let worker = &self.workers[self.sent % self.workers.len()];
        if worker
            .batches
            .send((self.sent == 0, batch.clone(), out))
            .is_err()
        {
            return Err(self.worker_stopped());
        }
        self.sent += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        while self.written < self.sent {
            self.write_oldest()?;
        }
        for worker in std::mem::take(&mut self.workers) {
            drop(worker.batches);
            let _ = worker.thread.join();
        }
        let stream = self.stream.take().expect("finished once");
        stream.finish().map_err(|err| Error::io(&self.name, err))
    }
}

/// Parquet, with row groups closed by size as well as by row count, and columns encoded on
/// [`SinkOptions::threads`] threads.
struct ParquetSink {
    name: String,
    writer: ParallelParquetWriter<CompressedWriter>,
}

impl ParquetSink {
    fn new(
        name: String,
        stream: CompressedWriter,
        schema: &SchemaRef,
        options: &SinkOptions,
    ) -> Result<Self> {
        let compression = match options.parquet_compression {
            ParquetCompression::Zstd => {
                parquet::basic::Compression::ZSTD(ZstdLevel::try_new(1).expect("1 is a zstd level"))
            }
            ParquetCompression::Snappy => parquet::basic::Compression::SNAPPY,
            ParquetCompression::Gzip => parquet::basic::Compression::GZIP(GzipLevel::default()),
            ParquetCompression::None => parquet::basic::Compression::UNCOMPRESSED,
        };
        if options.row_group_rows == 0 || options.row_group_bytes == 0 {
            return Err(Error::usage(
                "row groups need at least one row and one byte \
                 (--row-group-rows, --row-group-bytes)",
            ));
        }
        // The writer keeps the whole encoded row group in memory until it closes it; the byte
        // limit closes it by its estimated encoded size, not only at the row limit.
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .build();
        let writer = ParallelParquetWriter::try_new(
            stream,
            Arc::clone(schema),
            properties,
            options.threads,
            options.row_group_rows,
            options.row_group_bytes,
        )
        .map_err(|err| encode_error(&name, "parquet", err))?;
        Ok(ParquetSink { name, writer })
    }
}

impl BatchSink for ParquetSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|err| encode_error(&self.name, "parquet", err))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let name = self.name;
        let stream = self
            .writer
            .finish()
            .map_err(|err| encode_error(&name, "parquet", err))?;
        stream.finish().map_err(|err| Error::io(name, err))
    }
}

enum IpcWriter {
    File(arrow::ipc::writer::FileWriter<CompressedWriter>),
    Stream(arrow::ipc::writer::StreamWriter<CompressedWriter>),
}

struct IpcSink {
    name: String,
    writer: IpcWriter,
}

impl IpcSink {
    fn new(
        name: String,
        stream: CompressedWriter,
        schema: &SchemaRef,
        stream_format: bool,
    ) -> Result<Self> {
        let writer = if stream_format {
            arrow::ipc::writer::StreamWriter::try_new(stream, schema).map(IpcWriter::Stream)
        } else {
            arrow::ipc::writer::FileWriter::try_new(stream, schema).map(IpcWriter::File)
        }
        .map_err(|err| encode_error(&name, "arrow", err))?;
        Ok(IpcSink { name, writer })
    }
}

impl BatchSink for IpcSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            IpcWriter::File(writer) => writer.write(batch),
            IpcWriter::Stream(writer) => writer.write(batch),
        }
        .map_err(|err| encode_error(&self.name, "arrow", err))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let name = self.name;
        let stream = match self.writer {
            IpcWriter::File(mut writer) => writer.finish().and_then(|()| writer.into_inner()),
            IpcWriter::Stream(mut writer) => writer.finish().and_then(|()| writer.into_inner()),
        }
        .map_err(|err| encode_error(&name, "arrow", err))?;
        stream.finish().map_err(|err| Error::io(name, err))
    }
}
