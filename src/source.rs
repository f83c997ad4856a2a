//! Sources: bytes in, Arrow `RecordBatch`es of `batch_size` rows out.
//!
//! ```text
//!   file | stdin --> count bytes --> gunzip | unzstd --> sample prefix --> framer --> decoder
//!                                                       (schema inference)   (records)
//! ```
//!
//! Every source yields batches of exactly `batch_size` rows except the last, which may be
//! shorter, and for text input those from which bad records were set aside (see
//! [`BatchSource::take_rejected`]). Memory held by a text source: the read buffer
//! ([`READ_BUFFER_BYTES`]), the inference sample (the first `infer_rows` lines, kept until
//! the decoder has consumed them), the raw bytes of one batch of records
//! ([`records`](crate::records)) and one batch under construction in the decoder; with
//! several decoding threads, that times the chunks in flight ([`parallel`](crate::parallel)).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::{CsvOptions, Format, Location, StreamCompression};
use crate::infer::{self, Widen};
use crate::parallel::ParallelTextSource;
use crate::records::{DEFAULT_MAX_RECORD_BYTES, Framer, Syntax};
use crate::rejects::Rejected;
use crate::text::{
    ChunkDecoder, ChunkDecoding, CsvDecoder, JsonDecoder, SchemaOrigin, TextOptions, TextSource,
};

/// Size of the buffer between the file (or decompressor) and the decoder.
pub const READ_BUFFER_BYTES: usize = 1 << 20;

/// How many records schema inference reads by default.
pub const DEFAULT_INFER_ROWS: usize = 10_000;

/// Something that yields record batches, one at a time.
///
/// Sources are blocking: the pipeline runs them on a blocking thread.
pub trait BatchSource: Send {
    /// The schema of every batch this source yields.
    fn schema(&self) -> SchemaRef;

    /// The next batch, or `None` at the end of the input.
    ///
    /// A text source leaves out the records it cannot decode, so a batch may be shorter than
    /// the batch size, or empty; [`BatchSource::take_rejected`] hands them over.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;

    /// The records left out of the batches returned so far, since the last call.
    fn take_rejected(&mut self) -> Vec<Rejected> {
        Vec::new()
    }

    /// Reads only `columns` (ascending indices into [`BatchSource::schema`]) from now on,
    /// if the source can skip the others, and returns true; [`BatchSource::schema`] then
    /// describes the projected batches. Called before the first batch. A record whose
    /// skipped columns are malformed is not rejected for them.
    fn project(&mut self, _columns: &[usize]) -> bool {
        false
    }

    /// Called before the first batch with the run's cancellation token, for a source that
    /// can stop waiting when it is cancelled (an async stream can; a blocking read
    /// cannot, and ends the run when it returns).
    fn cancel_with(&mut self, _token: CancellationToken) {}
}

/// How a source reads its input.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Input format; `None` takes it from the file extension.
    pub format: Option<Format>,
    /// CSV dialect.
    pub csv: CsvOptions,
    /// A schema to use instead of inferring one.
    pub schema: Option<SchemaRef>,
    /// How many records schema inference samples;
    /// [`INFER_ALL_ROWS`](crate::infer::INFER_ALL_ROWS) reads the whole file first.
    pub infer_rows: usize,
    /// How inferred types are widened.
    pub widen: Widen,
    /// Rows per batch.
    pub batch_size: usize,
    /// The longest record a text source holds, in bytes; a longer one is an error.
    pub max_record_bytes: usize,
    /// JSON keys that are not in the schema are dropped instead of rejecting the record.
    pub ignore_unknown_keys: bool,
    /// Invalid UTF-8 in a text record is replaced with U+FFFD instead of rejecting it.
    pub lossy_utf8: bool,
    /// Threads that decode a text input; 1 decodes on the calling thread.
    pub threads: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            format: None,
            csv: CsvOptions::default(),
            schema: None,
            infer_rows: DEFAULT_INFER_ROWS,
            widen: Widen::None,
            batch_size: crate::DEFAULT_BATCH_SIZE,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            ignore_unknown_keys: false,
            lossy_utf8: false,
            threads: DEFAULT_THREADS,
        }
    }
}

/// Decoding threads of [`SourceOptions`] unless set otherwise: one, the caller's own.
/// [`Convert`](crate::Convert) sets it from the cores it may use.
pub const DEFAULT_THREADS: usize = 1;

/// Opens `location` as a source of batches.
///
/// `bytes_read` counts the input's bytes as they are read, before decompression; progress
/// reporting divides it by the file size. Fails when the file cannot be opened, the format
/// cannot be determined, or the schema cannot be inferred.
pub fn open_source(
    location: &Location,
    options: &SourceOptions,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSource>> {
    if options.batch_size == 0 {
        return Err(Error::usage("batch size must be at least 1"));
    }
    let format = options
        .format
        .or_else(|| location.format())
        .ok_or_else(|| {
            Error::usage(format!(
                "cannot tell the format of {}: use --from csv|jsonl|parquet|arrow",
                location.input_name()
            ))
        })?;
    tracing::debug!(input = %location.input_name(), %format, "opening source");

    match format {
        Format::Csv => {
            let reader = open_bytes(location, bytes_read)?;
            let mut csv = options.csv.clone();
            if location.is_tsv() && options.format.is_none() && csv.delimiter == b',' {
                csv.delimiter = b'\t';
            }
            CsvSource::open(&TextInput::of(location), reader, &csv, options)
        }
        Format::Jsonl => {
            let reader = open_bytes(location, bytes_read)?;
            JsonSource::open(&TextInput::of(location), reader, options)
        }
        Format::Parquet => ParquetSource::open(location, options, bytes_read),
        Format::Ipc => open_ipc(location, options, bytes_read),
    }
}

/// Opens a source over any reader of CSV or JSON Lines text (not compressed), named `name`
/// in errors: for bytes that do not come from a file, such as a network body.
///
/// Fails for formats that need a file (Parquet, the Arrow IPC file format) and when the
/// schema cannot be inferred.
pub fn open_reader(
    name: &str,
    reader: Box<dyn BufRead + Send>,
    format: Format,
    options: &SourceOptions,
) -> Result<Box<dyn BatchSource>> {
    if options.batch_size == 0 {
        return Err(Error::usage("batch size must be at least 1"));
    }
    let input = TextInput {
        name: name.to_owned(),
        file: None,
    };
    match format {
        Format::Csv => CsvSource::open(&input, reader, &options.csv, options),
        Format::Jsonl => JsonSource::open(&input, reader, options),
        Format::Parquet | Format::Ipc => Err(Error::usage(format!(
            "{name}: only CSV and JSON Lines can be read from a stream here"
        ))),
    }
}

/// Opens the raw bytes of `location`, counted and decompressed, behind a large buffer.
pub(crate) fn open_bytes(
    location: &Location,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = match location {
        Location::Path(path) => {
            Box::new(File::open(path).map_err(|err| Error::io(location.input_name(), err))?)
        }
        Location::Std => Box::new(io::stdin()),
    };
    let counted = CountingReader {
        inner: raw,
        bytes_read,
    };
    let decompressed: Box<dyn Read + Send> = match location.compression() {
        StreamCompression::None => Box::new(counted),
        StreamCompression::Gzip => Box::new(Decompressing {
            inner: flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                counted,
            )),
            format: "gzip",
        }),
        StreamCompression::Zstd => Box::new(Decompressing {
            inner: zstd::stream::read::Decoder::new(counted)
                .map_err(|err| Error::io(location.input_name(), err))?,
            format: "zstd",
        }),
    };
    Ok(Box::new(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        decompressed,
    )))
}

/// A decompressor whose failures say that the compressed input is at fault, so that they
/// reach the user as bad input ([`Error::CorruptStream`]) rather than as an I/O error.
struct Decompressing<R> {
    inner: R,
    format: &'static str,
}

impl<R: Read> Read for Decompressing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                CorruptStream {
                    format: self.format,
                    detail: err.to_string(),
                },
            )
        })
    }
}

/// The payload of a decompression error, recognised by [`Error::io`].
#[derive(Debug)]
pub(crate) struct CorruptStream {
    pub(crate) format: &'static str,
    pub(crate) detail: String,
}

impl std::fmt::Display for CorruptStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} data: {}", self.format, self.detail)
    }
}

impl std::error::Error for CorruptStream {}

/// Adds every byte read to a shared counter, for progress and the summary.
struct CountingReader<R> {
    inner: R,
    bytes_read: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// A text input: its name for errors, and the file to read again for a full inference pass.
pub(crate) struct TextInput {
    pub(crate) name: String,
    pub(crate) file: Option<Location>,
}

impl TextInput {
    fn of(location: &Location) -> Self {
        TextInput {
            name: location.input_name(),
            file: location.path().map(|_| location.clone()),
        }
    }
}

/// CSV through arrow-csv's push decoder, a chunk of whole records at a time.
struct CsvSource;

impl CsvSource {
    fn open(
        input: &TextInput,
        reader: Box<dyn BufRead + Send>,
        csv: &CsvOptions,
        options: &SourceOptions,
    ) -> Result<Box<dyn BatchSource>> {
        let (schema, reader, origin) = match &options.schema {
            Some(schema) => (Arc::clone(schema), reader, SchemaOrigin::Given),
            None => {
                let (schema, reader) = infer::csv_schema(input, reader, csv, options)?;
                (schema, reader, SchemaOrigin::inferred(options.infer_rows))
            }
        };
        let location = input.name.clone();

        let syntax = Syntax::Csv {
            delimiter: csv.delimiter,
            quote: csv.quote,
            escape: csv.escape,
        };
        let framer = Framer::new(location.clone(), reader, syntax, options.max_record_bytes);
        let decoder = CsvDecoder::new(Arc::clone(&schema), csv, options.batch_size, origin)?;
        let text = TextOptions {
            batch_size: options.batch_size,
            skip_header: csv.header,
        };
        text_source(location, framer, decoder, schema, text, options)
    }
}

/// A text source on this thread, or on `options.threads` decoding threads.
fn text_source<D: ChunkDecoder + 'static>(
    location: String,
    framer: Framer,
    decoder: D,
    schema: SchemaRef,
    text: TextOptions,
    options: &SourceOptions,
) -> Result<Box<dyn BatchSource>> {
    let decoding = ChunkDecoding::new(
        location.clone(),
        decoder,
        Arc::clone(&schema),
        options.lossy_utf8,
    );
    if options.threads > 1 {
        let source = ParallelTextSource::new(location, framer, decoding, text, options.threads);
        return Ok(Box::new(source));
    }
    Ok(Box::new(TextSource::new(framer, decoding, text)))
}

/// JSON Lines through arrow-json's push decoder, a chunk of whole lines at a time.
struct JsonSource;

impl JsonSource {
    fn open(
        input: &TextInput,
        reader: Box<dyn BufRead + Send>,
        options: &SourceOptions,
    ) -> Result<Box<dyn BatchSource>> {
        let (schema, reader, origin) = match &options.schema {
            Some(schema) => (Arc::clone(schema), reader, SchemaOrigin::Given),
            None => {
                let (schema, reader) = infer::json_schema(input, reader, options)?;
                (schema, reader, SchemaOrigin::inferred(options.infer_rows))
            }
        };
        let location = input.name.clone();

        let framer = Framer::new(
            location.clone(),
            reader,
            Syntax::Lines,
            options.max_record_bytes,
        );
        let decoder = JsonDecoder::new(
            Arc::clone(&schema),
            options.batch_size,
            options.ignore_unknown_keys,
            origin,
        )?;
        let text = TextOptions {
            batch_size: options.batch_size,
            skip_header: false,
        };
        text_source(location, framer, decoder, schema, text, options)
    }
}

/// Parquet through the parquet crate's synchronous reader.
struct ParquetSource {
    location: String,
    reader: Rebatch<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    bytes_read: Arc<AtomicU64>,
    file_bytes: u64,
    total_rows: u64,
    rows: u64,
    /// Keeps a spooled copy of stdin alive while it is read.
    _spool: Option<tempfile::NamedTempFile>,
}

impl ParquetSource {
    fn open(
        location: &Location,
        options: &SourceOptions,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<Box<dyn BatchSource>> {
        let name = location.input_name();
        let (file, spool) = match location {
            Location::Path(path) => (File::open(path).map_err(|err| Error::io(&name, err))?, None),
            Location::Std => {
                // Parquet keeps its index at the end of the file, so a stream must land on
                // disk first; memory stays bounded by the copy buffer.
                let mut spool =
                    tempfile::NamedTempFile::new().map_err(|err| Error::io(&name, err))?;
                io::copy(&mut io::stdin().lock(), spool.as_file_mut())
                    .map_err(|err| Error::io(&name, err))?;
                let file = spool.reopen().map_err(|err| Error::io(&name, err))?;
                (file, Some(spool))
            }
        };
        let file_bytes = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let decode_error = |err: parquet::errors::ParquetError| Error::Decode {
            location: name.clone(),
            message: format!("not a readable Parquet file: {err}"),
        };
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(decode_error)?;
        let total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let reader = builder
            .with_batch_size(options.batch_size)
            .build()
            .map_err(decode_error)?;
        let schema = reader.schema();
        Ok(Box::new(ParquetSource {
            location: name,
            reader: Rebatch::new(reader, schema, options.batch_size),
            bytes_read,
            file_bytes,
            total_rows,
            rows: 0,
            _spool: spool,
        }))
    }
}

impl BatchSource for ParquetSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.reader.schema)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let batch = self.reader.next_batch().map_err(|err| Error::Decode {
            location: self.location.clone(),
            message: err.to_string(),
        })?;
        // The reader pulls column chunks itself; report progress as the share of rows read.
        if let Some(batch) = &batch {
            self.rows += batch.num_rows() as u64;
            let done = self.file_bytes * self.rows / self.total_rows.max(1);
            self.bytes_read
                .store(done.min(self.file_bytes), Ordering::Relaxed);
        }
        Ok(batch)
    }
}

/// Arrow IPC, file or stream format, told apart by the file's magic bytes.
fn open_ipc(
    location: &Location,
    options: &SourceOptions,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSource>> {
    let name = location.input_name();
    let mut reader = open_bytes(location, bytes_read)?;
    let decode_error = |err: ArrowError| Error::Decode {
        location: name.clone(),
        message: format!("not a readable Arrow IPC input: {err}"),
    };
    let head = reader.fill_buf().map_err(|err| Error::io(&name, err))?;
    let is_file_format = head.starts_with(b"ARROW1");
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send> =
        if is_file_format {
            let path = location.path().ok_or_else(|| {
                Error::usage("the Arrow IPC file format needs a file; pipe the stream format")
            })?;
            let file = File::open(path).map_err(|err| Error::io(&name, err))?;
            let reader = arrow::ipc::reader::FileReader::try_new(
                BufReader::with_capacity(READ_BUFFER_BYTES, file),
                None,
            )
            .map_err(decode_error)?;
            Box::new(reader)
        } else {
            Box::new(arrow::ipc::reader::StreamReader::try_new(reader, None).map_err(decode_error)?)
        };
    let mut batches = batches.peekable();
    let schema = match batches.peek() {
        Some(Ok(batch)) => batch.schema(),
        Some(Err(_)) => {
            let err = batches.next().and_then(Result::err);
            return Err(decode_error(err.unwrap_or_else(|| {
                ArrowError::IpcError("unreadable first batch".to_owned())
            })));
        }
        None => Arc::new(Schema::empty()),
    };
    Ok(Box::new(IpcSource {
        location: name,
        reader: Rebatch::new(batches, Arc::clone(&schema), options.batch_size),
    }))
}

struct IpcSource<I: Iterator<Item = Result<RecordBatch, ArrowError>>> {
    location: String,
    reader: Rebatch<I>,
}

impl<I> BatchSource for IpcSource<I>
where
    I: Iterator<Item = Result<RecordBatch, ArrowError>> + Send,
{
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.reader.schema)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.reader.next_batch().map_err(|err| Error::Decode {
            location: self.location.clone(),
            message: err.to_string(),
        })
    }
}

/// Cuts and joins the batches of a reader that does not honour the batch size (Arrow IPC keeps
/// whatever batches were written) into batches of exactly `batch_size` rows but the last.
///
/// A batch that already has the right size passes through untouched; a larger one is sliced
/// without copying; only short pieces that have to be joined are copied. Holds at most one
/// batch's worth of rows plus the slices left of the last input batch.
struct Rebatch<I> {
    inner: I,
    schema: SchemaRef,
    batch_size: usize,
    pending: VecDeque<RecordBatch>,
    pending_rows: usize,
    exhausted: bool,
}

impl<I: Iterator<Item = Result<RecordBatch, ArrowError>>> Rebatch<I> {
    fn new(inner: I, schema: SchemaRef, batch_size: usize) -> Self {
        Rebatch {
            inner,
            schema,
            batch_size,
            pending: VecDeque::new(),
            pending_rows: 0,
            exhausted: false,
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        while self.pending_rows < self.batch_size && !self.exhausted {
            match self.inner.next().transpose()? {
                Some(batch) if batch.num_rows() > 0 => {
                    self.pending_rows += batch.num_rows();
                    self.pending.push_back(batch);
                }
                Some(_) => {}
                None => self.exhausted = true,
            }
        }
        if self.pending_rows == 0 {
            return Ok(None);
        }
        self.take(self.batch_size.min(self.pending_rows)).map(Some)
    }

    /// Removes the first `rows` pending rows as one batch.
    fn take(&mut self, rows: usize) -> Result<RecordBatch, ArrowError> {
        let mut parts = Vec::new();
        let mut needed = rows;
        while needed > 0 {
            let front = self.pending.pop_front().expect("pending rows cover `rows`");
            if front.num_rows() <= needed {
                needed -= front.num_rows();
                parts.push(front);
            } else {
                parts.push(front.slice(0, needed));
                self.pending
                    .push_front(front.slice(needed, front.num_rows() - needed));
                needed = 0;
            }
        }
        self.pending_rows -= rows;
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        concat_batches(&self.schema, &parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::DataType;
    use std::io::Cursor;

    fn batch(values: std::ops::Range<i32>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "v",
            Arc::new(Int32Array::from_iter_values(values)) as _,
        )])
        .unwrap()
    }

    #[test]
    fn rebatch_cuts_and_joins_to_the_batch_size() {
        let input = vec![Ok(batch(0..3)), Ok(batch(3..10)), Ok(batch(10..11))];
        let schema = input[0].as_ref().unwrap().schema();
        let mut rebatch = Rebatch::new(input.into_iter(), schema, 4);
        let mut sizes = Vec::new();
        let mut values = Vec::new();
        while let Some(out) = rebatch.next_batch().unwrap() {
            sizes.push(out.num_rows());
            let column = out.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            values.extend(column.values().iter().copied());
        }
        assert_eq!(sizes, [4, 4, 3]);
        assert_eq!(values, (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn csv_sample_is_not_lost_on_a_stream() {
        let text = "id,name\n1,a\n2,b\n3,c\n";
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let options = SourceOptions {
            infer_rows: 2,
            batch_size: 2,
            ..SourceOptions::default()
        };
        let mut source = CsvSource::open(
            &TextInput::of(&Location::Std),
            reader,
            &CsvOptions::default(),
            &options,
        )
        .unwrap();
        let first = source.next_batch().unwrap().unwrap();
        let second = source.next_batch().unwrap().unwrap();
        assert_eq!((first.num_rows(), second.num_rows()), (2, 1));
        assert!(source.next_batch().unwrap().is_none());
        assert_eq!(source.schema().field(0).data_type(), &DataType::Int64);
    }
}
