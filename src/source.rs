//! Sources: bytes in, Arrow `RecordBatch`es of `batch_size` rows out.
//!
//! ```text
//!   file | stdin --> count bytes --> gunzip | unzstd --> sample prefix --> decoder --> batch
//!                                                       (schema inference)
//! ```
//!
//! Every source yields batches of exactly `batch_size` rows except the last, which may be
//! shorter. Memory held by a source: the read buffer ([`READ_BUFFER_BYTES`]), the inference
//! sample (the first `infer_rows` lines, kept until the decoder has consumed them) and one
//! batch under construction in the decoder.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch, RecordBatchReader, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::error::{Error, Result};
use crate::format::{CsvOptions, Format, Location, StreamCompression};
use crate::records::{DEFAULT_MAX_RECORD_BYTES, Framer, Syntax};
use crate::rejects::Rejected;
use crate::text::{CsvDecoder, JsonDecoder, SchemaOrigin, TextOptions, TextSource};

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
    /// How many records schema inference samples.
    pub infer_rows: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// The longest record a text source holds, in bytes; a longer one is an error.
    pub max_record_bytes: usize,
    /// JSON keys that are not in the schema are dropped instead of rejecting the record.
    pub ignore_unknown_keys: bool,
    /// Invalid UTF-8 in a text record is replaced with U+FFFD instead of rejecting it.
    pub lossy_utf8: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            format: None,
            csv: CsvOptions::default(),
            schema: None,
            infer_rows: DEFAULT_INFER_ROWS,
            batch_size: crate::DEFAULT_BATCH_SIZE,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            ignore_unknown_keys: false,
            lossy_utf8: false,
        }
    }
}

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
            CsvSource::open(location.input_name(), reader, &csv, options)
                .map(|source| Box::new(source) as _)
        }
        Format::Jsonl => {
            let reader = open_bytes(location, bytes_read)?;
            JsonSource::open(location.input_name(), reader, options)
                .map(|source| Box::new(source) as _)
        }
        Format::Parquet => ParquetSource::open(location, options, bytes_read),
        Format::Ipc => open_ipc(location, options, bytes_read),
    }
}

/// Opens the raw bytes of `location`, counted and decompressed, behind a large buffer.
fn open_bytes(location: &Location, bytes_read: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
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
        StreamCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(READ_BUFFER_BYTES, counted),
        )),
        StreamCompression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(counted)
                .map_err(|err| Error::io(location.input_name(), err))?,
        ),
    };
    Ok(Box::new(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        decompressed,
    )))
}

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

/// Reads up to `lines` lines from the front of `reader`, for schema inference.
///
/// The caller puts the sample back in front of the rest of the stream, so that inference on
/// stdin or a compressed stream loses nothing.
fn read_sample(reader: &mut dyn BufRead, lines: usize, location: &str) -> Result<Vec<u8>> {
    let mut sample = Vec::new();
    for _ in 0..lines {
        let read = reader
            .read_until(b'\n', &mut sample)
            .map_err(|err| Error::io(location, err))?;
        if read == 0 {
            break;
        }
    }
    Ok(sample)
}

/// CSV through arrow-csv's push decoder, a chunk of whole records at a time.
struct CsvSource;

impl CsvSource {
    fn open(
        location: String,
        mut reader: Box<dyn BufRead + Send>,
        csv: &CsvOptions,
        options: &SourceOptions,
    ) -> Result<TextSource<CsvDecoder>> {
        let (schema, origin) = match &options.schema {
            Some(schema) => (Arc::clone(schema), SchemaOrigin::Given),
            None => {
                let sample = read_sample(
                    reader.as_mut(),
                    options.infer_rows + usize::from(csv.header),
                    &location,
                )?;
                let clean = well_formed_csv(without_bom(&sample), csv);
                let schema = infer_csv_schema(&location, &clean, csv, csv.null_regex()?, options)?;
                reader = Box::new(Cursor::new(sample).chain(reader));
                let origin = SchemaOrigin::Inferred {
                    rows: options.infer_rows,
                };
                (schema, origin)
            }
        };

        let syntax = Syntax::Csv {
            delimiter: csv.delimiter,
            quote: csv.quote,
            escape: csv.escape,
        };
        let framer = Framer::new(location.clone(), reader, syntax, options.max_record_bytes);
        let decoder = CsvDecoder::new(Arc::clone(&schema), csv, options.batch_size, origin)?;
        let text = TextOptions {
            batch_size: options.batch_size,
            lossy_utf8: options.lossy_utf8,
            skip_header: csv.header,
        };
        Ok(TextSource::new(location, framer, decoder, schema, text))
    }
}

/// The records of a CSV sample that are UTF-8 and have as many fields as the first,
/// re-encoded in the same dialect: inference judges the good records, and the bad ones are
/// rejected when decoded.
fn well_formed_csv(sample: &[u8], csv: &CsvOptions) -> Vec<u8> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(csv.delimiter)
        .quote(csv.quote)
        .escape(csv.escape)
        .from_reader(sample);
    let mut writer = csv::WriterBuilder::new()
        .delimiter(csv.delimiter)
        .quote(csv.quote)
        .from_writer(Vec::with_capacity(sample.len()));
    let mut fields = None;
    for record in reader.byte_records().map_while(std::result::Result::ok) {
        let expected = *fields.get_or_insert(record.len());
        let text = std::str::from_utf8(record.as_slice()).is_ok();
        if record.len() == expected && text && writer.write_byte_record(&record).is_err() {
            break;
        }
    }
    writer.into_inner().unwrap_or_default()
}

/// The lines of a JSON Lines sample that hold one JSON object each: inference judges those,
/// and the others are rejected when decoded.
fn well_formed_json(sample: &[u8]) -> (Vec<u8>, Vec<serde_json::Value>) {
    let mut clean = Vec::with_capacity(sample.len());
    let mut objects = Vec::new();
    for line in sample.split(|&byte| byte == b'\n') {
        if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_slice(line) {
            clean.extend_from_slice(line);
            clean.push(b'\n');
            objects.push(value);
        }
    }
    (clean, objects)
}

/// The sample without a leading UTF-8 byte-order mark, which the framer also drops.
fn without_bom(sample: &[u8]) -> &[u8] {
    sample.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(sample)
}

fn csv_format(csv: &CsvOptions, null_regex: Option<regex::Regex>) -> arrow::csv::reader::Format {
    let mut format = arrow::csv::reader::Format::default()
        .with_header(csv.header)
        .with_delimiter(csv.delimiter)
        .with_quote(csv.quote);
    if let Some(escape) = csv.escape {
        format = format.with_escape(escape);
    }
    if let Some(regex) = null_regex {
        format = format.with_null_regex(regex);
    }
    format
}

fn infer_csv_schema(
    location: &str,
    sample: &[u8],
    csv: &CsvOptions,
    null_regex: Option<regex::Regex>,
    options: &SourceOptions,
) -> Result<SchemaRef> {
    let schema_error = |err: ArrowError| Error::Schema {
        location: location.to_owned(),
        message: err.to_string(),
    };
    let format = csv_format(csv, null_regex.clone());
    let (schema, _) = format
        .infer_schema(Cursor::new(sample), Some(options.infer_rows))
        .map_err(schema_error)?;
    reject_duplicate_columns(location, &schema)?;

    // arrow-csv leaves ISO timestamps with a zone suffix (`...Z`, `+02:00`) as text; read the
    // sample again as text and promote the columns whose every value is a timestamp.
    let text_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| Field::new(field.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut builder = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(options.infer_rows.max(1));
    if let Some(regex) = null_regex {
        builder = builder.with_null_regex(regex);
    }
    let mut reader = builder.build(Cursor::new(sample)).map_err(schema_error)?;
    let text = match reader.next() {
        Some(Ok(batch)) => Some(batch),
        // A sample cut inside a quoted field can end in a broken record; inference above has
        // already judged the rest, so keep its types.
        Some(Err(_)) | None => None,
    };
    Ok(Arc::new(normalize_schema(&schema, text.as_ref())))
}

fn reject_duplicate_columns(location: &str, schema: &Schema) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name()) {
            return Err(Error::Schema {
                location: location.to_owned(),
                message: format!(
                    "the header names column `{}` twice; rename one or give --schema",
                    field.name()
                ),
            });
        }
    }
    Ok(())
}

/// Timestamps become microseconds in UTC, and text columns whose sampled values are all
/// timestamps become timestamps.
fn normalize_schema(schema: &Schema, sample: Option<&RecordBatch>) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let field = field.as_ref().clone();
            match field.data_type() {
                DataType::Timestamp(_, _) => field.with_data_type(utc_micros()),
                DataType::Utf8 => {
                    let column = sample.and_then(|batch| batch.columns().get(index));
                    match column {
                        Some(column) if all_timestamps(column.as_ref()) => {
                            field.with_data_type(utc_micros())
                        }
                        _ => field,
                    }
                }
                _ => field,
            }
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// True when the column has at least one value and every non-null value is a date with a
/// time of day (`2024-03-01T12:00:00Z`, `2024-03-01 12:00:00.123+01:00`, ...).
fn all_timestamps(column: &dyn Array) -> bool {
    let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
        return false;
    };
    let mut seen = false;
    for value in strings.iter().flatten() {
        let looks_like = value.len() >= 16
            && value.as_bytes()[4] == b'-'
            && matches!(value.as_bytes()[10], b'T' | b' ')
            && value.contains(':');
        if !looks_like
            || arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(value).is_err()
        {
            return false;
        }
        seen = true;
    }
    seen
}

/// JSON Lines through arrow-json's push decoder, a chunk of whole lines at a time.
struct JsonSource;

impl JsonSource {
    fn open(
        location: String,
        mut reader: Box<dyn BufRead + Send>,
        options: &SourceOptions,
    ) -> Result<TextSource<JsonDecoder>> {
        let schema_error = |err: ArrowError| Error::Schema {
            location: location.clone(),
            message: err.to_string(),
        };
        let (schema, origin) = match &options.schema {
            Some(schema) => (Arc::clone(schema), SchemaOrigin::Given),
            None => {
                let sample = read_sample(reader.as_mut(), options.infer_rows, &location)?;
                let (lines, objects) = well_formed_json(without_bom(&sample));
                let (inferred, _) = arrow::json::reader::infer_json_schema(
                    Cursor::new(&lines),
                    Some(options.infer_rows),
                )
                .map_err(schema_error)?;
                let inferred = order_as_in_sample(&inferred, &objects);
                let text = decode_json_sample(&lines, &inferred, options.infer_rows);
                let schema = Arc::new(normalize_schema(&inferred, text.as_ref()));
                reader = Box::new(Cursor::new(sample).chain(reader));
                let origin = SchemaOrigin::Inferred {
                    rows: options.infer_rows,
                };
                (schema, origin)
            }
        };

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
            lossy_utf8: options.lossy_utf8,
            skip_header: false,
        };
        Ok(TextSource::new(location, framer, decoder, schema, text))
    }
}

/// Puts the fields of an inferred JSON schema, at every level of nesting, in the order in
/// which their keys first appear in the sample; arrow-json's inference sorts them by name.
fn order_as_in_sample(schema: &Schema, sample: &[serde_json::Value]) -> Schema {
    let mut order = KeyOrder::default();
    for value in sample {
        order.observe(value);
    }
    let fields = order.apply(schema.fields());
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The order in which object keys first appear, per level of nesting. Elements of an array
/// share one node, as they share one item type.
#[derive(Debug, Default)]
struct KeyOrder {
    keys: Vec<(String, KeyOrder)>,
    positions: std::collections::HashMap<String, usize>,
}

impl KeyOrder {
    fn observe(&mut self, value: &serde_json::Value) {
        match value {
            serde_json::Value::Object(object) => {
                for (key, child) in object {
                    let position = match self.positions.get(key) {
                        Some(&position) => position,
                        None => {
                            self.positions.insert(key.clone(), self.keys.len());
                            self.keys.push((key.clone(), KeyOrder::default()));
                            self.keys.len() - 1
                        }
                    };
                    self.keys[position].1.observe(child);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| self.observe(item)),
            _ => {}
        }
    }

    fn child(&self, key: &str) -> Option<&KeyOrder> {
        self.positions
            .get(key)
            .map(|&position| &self.keys[position].1)
    }

    fn apply(&self, fields: &arrow::datatypes::Fields) -> Vec<Field> {
        let empty = KeyOrder::default();
        let mut ordered: Vec<Field> = fields
            .iter()
            .map(|field| reorder_nested(field, self.child(field.name()).unwrap_or(&empty)))
            .collect();
        ordered.sort_by_key(|field| {
            self.positions
                .get(field.name())
                .copied()
                .unwrap_or(usize::MAX)
        });
        ordered
    }
}

fn reorder_nested(field: &Field, order: &KeyOrder) -> Field {
    match field.data_type() {
        DataType::Struct(children) => field
            .clone()
            .with_data_type(DataType::Struct(order.apply(children).into())),
        DataType::List(item) => {
            let item = reorder_nested(item, order);
            field.clone().with_data_type(DataType::List(Arc::new(item)))
        }
        _ => field.clone(),
    }
}

/// Decodes the inference sample with the inferred schema, to look at its text values.
fn decode_json_sample(sample: &[u8], schema: &Schema, rows: usize) -> Option<RecordBatch> {
    let reader = arrow::json::ReaderBuilder::new(Arc::new(schema.clone()))
        .with_batch_size(rows.max(1))
        .build(Cursor::new(sample))
        .ok()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().ok()?;
    concat_batches(&Arc::new(schema.clone()), &batches).ok()
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
        let mut source =
            CsvSource::open("<test>".into(), reader, &CsvOptions::default(), &options).unwrap();
        let first = source.next_batch().unwrap().unwrap();
        let second = source.next_batch().unwrap().unwrap();
        assert_eq!((first.num_rows(), second.num_rows()), (2, 1));
        assert!(source.next_batch().unwrap().is_none());
        assert_eq!(source.schema().field(0).data_type(), &DataType::Int64);
    }

    #[test]
    fn zoned_iso_text_is_inferred_as_utc_micros() {
        let text = "at\n2024-01-05T10:00:00Z\n2024-01-05T11:30:00.5+01:00\n";
        let schema = infer_csv_schema(
            "<test>",
            text.as_bytes(),
            &CsvOptions::default(),
            None,
            &SourceOptions::default(),
        )
        .unwrap();
        assert_eq!(schema.field(0).data_type(), &utc_micros());
    }
}
