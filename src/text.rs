//! Text sources: CSV and JSON Lines decoded a chunk of whole records at a time, with bad
//! records found, located and set aside instead of failing the batch.
//!
//! ```text
//!   Framer --chunk--> decode all records at once --ok--> batch
//!                       | error
//!                       v
//!                     split in halves, decode each, recursively
//!                       | a single record that fails
//!                       v
//!                     diagnose (column, value, reason) --> Rejected
//! ```
//!
//! A clean chunk costs one decoder call; a chunk with `k` bad records among `n` costs about
//! `k * log2(n)` calls, so a dirty file slows down only where it is dirty. The good records
//! of a chunk come out as one batch, shorter than the batch size by the records rejected.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;

use crate::error::{Error, Result};
use crate::format::CsvOptions;
use crate::records::{Chunk, Framer, RecordSpan};
use crate::rejects::{Rejected, shorten};
use crate::source::BatchSource;

/// What is wrong with one record, as far as it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The column at fault, when known.
    pub column: Option<String>,
    /// The offending value, shortened.
    pub value: Option<String>,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl Diagnosis {
    fn reason(reason: impl Into<String>) -> Self {
        Diagnosis {
            column: None,
            value: None,
            reason: reason.into(),
        }
    }
}

/// Decodes runs of whole records into batches.
pub trait ChunkDecoder: Send {
    /// Decodes `bytes`, holding exactly `records` records, into a batch of that many rows.
    /// After an error the decoder is ready for new input.
    fn decode(&mut self, bytes: &[u8], records: usize) -> Result<RecordBatch, ArrowError>;

    /// Explains why `record` (one record's text) failed to decode with `error`.
    fn diagnose(&self, record: &[u8], error: &ArrowError) -> Diagnosis;

    /// A decoder with the same settings and no state, for another thread.
    fn duplicate(&self) -> Result<Self>
    where
        Self: Sized;

    /// Decodes only `columns` (ascending indices into the schema) from now on, if the
    /// decoder can; returns the schema of what it then decodes.
    fn project(&mut self, _columns: &[usize]) -> Option<SchemaRef> {
        None
    }
}

/// The advice given with a value that does not fit its column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaOrigin {
    /// The schema was inferred from the first records.
    Inferred {
        /// How many records the inference sampled.
        rows: usize,
    },
    /// The schema was inferred from every record of the input.
    InferredFromAll,
    /// The user gave the schema.
    Given,
}

impl SchemaOrigin {
    /// The origin of a schema inferred with `infer_rows`.
    pub fn inferred(infer_rows: usize) -> Self {
        match infer_rows {
            crate::infer::INFER_ALL_ROWS => SchemaOrigin::InferredFromAll,
            rows => SchemaOrigin::Inferred { rows },
        }
    }

    fn hint(self) -> String {
        match self {
            SchemaOrigin::Inferred { rows } => format!(
                "the schema was inferred from the first {rows} records; give the column's \
                 type with --schema, infer from every record with --infer-rows all, or \
                 widen inferred types with --widen"
            ),
            SchemaOrigin::InferredFromAll => {
                "the value does not fit the type inferred from every record; give the \
                 column's type with --schema"
                    .to_owned()
            }
            SchemaOrigin::Given => "the type comes from --schema".to_owned(),
        }
    }
}

/// How a text source cuts its input.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Rows per batch.
    pub batch_size: usize,
    /// The first record is a header, to be skipped.
    pub skip_header: bool,
}

/// Decodes chunks one at a time: the work of one decoding thread.
pub struct ChunkDecoding<D> {
    location: String,
    decoder: D,
    schema: SchemaRef,
    lossy_utf8: bool,
}

impl<D: ChunkDecoder> ChunkDecoding<D> {
    /// Decoding of chunks of `location` into batches of `schema`.
    pub fn new(location: String, decoder: D, schema: SchemaRef, lossy_utf8: bool) -> Self {
        ChunkDecoding {
            location,
            decoder,
            schema,
            lossy_utf8,
        }
    }

    /// Decodes only `columns` from now on, if the decoder can; see [`BatchSource::project`].
    pub fn project(&mut self, columns: &[usize]) -> bool {
        match self.decoder.project(columns) {
            Some(schema) => {
                self.schema = schema;
                true
            }
            None => false,
        }
    }

    /// The schema of the batches it makes.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The input's name, for errors.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The same decoding with a decoder of its own, for another thread.
    pub fn duplicate(&self) -> Result<Self> {
        Ok(ChunkDecoding {
            location: self.location.clone(),
            decoder: self.decoder.duplicate()?,
            schema: Arc::clone(&self.schema),
            lossy_utf8: self.lossy_utf8,
        })
    }

    /// The good records of `chunk` as one batch, and its bad records.
    pub fn decode(&mut self, chunk: &Chunk) -> Result<(RecordBatch, Vec<Rejected>)> {
        let mut parts = Vec::new();
        let mut rejected = Vec::new();
        if !chunk.records.is_empty() {
            self.decode_range(chunk, 0..chunk.records.len(), &mut parts, &mut rejected);
        }
        if let Some(broken) = &chunk.broken {
            let text = chunk.text(&broken.span);
            let diagnosis = Diagnosis::reason(broken.reason.clone());
            rejected.push(self.rejected(&broken.span, text, diagnosis));
        }
        let batch = match parts.len() {
            0 => RecordBatch::new_empty(Arc::clone(&self.schema)),
            1 => parts.pop().expect("one part"),
            _ => concat_batches(&self.schema, &parts).map_err(|err| Error::Decode {
                location: self.location.clone(),
                message: err.to_string(),
            })?,
        };
        Ok((batch, rejected))
    }

    /// Decodes the records `range` of `chunk`, pushing good batches onto `parts` and bad
    /// records onto `rejected`.
    fn decode_range(
        &mut self,
        chunk: &Chunk,
        range: Range<usize>,
        parts: &mut Vec<RecordBatch>,
        rejected: &mut Vec<Rejected>,
    ) {
        let records = range.len();
        let error = match self.decoder.decode(chunk.bytes_of(range.clone()), records) {
            Ok(batch) => return parts.push(batch),
            Err(error) => error,
        };
        if records > 1 {
            let middle = range.start + records / 2;
            self.decode_range(chunk, range.start..middle, parts, rejected);
            self.decode_range(chunk, middle..range.end, parts, rejected);
            return;
        }

        let span = chunk.records[range.start];
        let text = chunk.text(&span);
        if self.lossy_utf8
            && std::str::from_utf8(text).is_err()
            && let Some(batch) = self.decode_lossy(text)
        {
            return parts.push(batch);
        }
        let diagnosis = self.decoder.diagnose(text, &error);
        rejected.push(self.rejected(&span, text, diagnosis));
    }

    fn decode_lossy(&mut self, text: &[u8]) -> Option<RecordBatch> {
        let mut repaired = String::from_utf8_lossy(text).into_owned().into_bytes();
        repaired.push(b'\n');
        self.decoder.decode(&repaired, 1).ok()
    }

    fn rejected(&self, span: &RecordSpan, text: &[u8], diagnosis: Diagnosis) -> Rejected {
        Rejected {
            location: self.location.clone(),
            line: span.line,
            offset: span.offset,
            column: diagnosis.column,
            value: diagnosis.value,
            reason: diagnosis.reason,
            record: text.to_vec(),
        }
    }
}

/// A [`BatchSource`] over a framer and a chunk decoder, on the calling thread.
pub struct TextSource<D> {
    framer: Framer,
    decoding: ChunkDecoding<D>,
    options: TextOptions,
    rejected: Vec<Rejected>,
}

impl<D: ChunkDecoder> TextSource<D> {
    /// A source of the batches `decoding` makes of the chunks of `framer`.
    pub fn new(framer: Framer, decoding: ChunkDecoding<D>, options: TextOptions) -> Self {
        TextSource {
            framer,
            decoding,
            options,
            rejected: Vec::new(),
        }
    }
}

impl<D: ChunkDecoder> BatchSource for TextSource<D> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.decoding.schema)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.options.skip_header {
            self.options.skip_header = false;
            self.framer.next_chunk(1)?;
        }
        let Some(chunk) = self.framer.next_chunk(self.options.batch_size)? else {
            return Ok(None);
        };
        let (batch, rejected) = self.decoding.decode(&chunk)?;
        self.framer.recycle(chunk);
        self.rejected.extend(rejected);
        Ok(Some(batch))
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    fn project(&mut self, columns: &[usize]) -> bool {
        self.decoding.project(columns)
    }
}

/// arrow-csv's and arrow-json's decoders: bytes pushed in, a batch flushed out.
trait PushDecoder {
    fn push(&mut self, bytes: &[u8]) -> Result<usize, ArrowError>;
    fn flush_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl PushDecoder for arrow::csv::reader::Decoder {
    fn push(&mut self, bytes: &[u8]) -> Result<usize, ArrowError> {
        self.decode(bytes)
    }
    fn flush_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.flush()
    }
}

impl PushDecoder for arrow::json::reader::Decoder {
    fn push(&mut self, bytes: &[u8]) -> Result<usize, ArrowError> {
        self.decode(bytes)
    }
    fn flush_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.flush()
    }
}

/// Feeds `bytes` to `decoder` until it has taken them all, then flushes one batch and
/// checks that it holds `records` rows.
fn decode_all(
    decoder: &mut impl PushDecoder,
    bytes: &[u8],
    records: usize,
) -> Result<RecordBatch, ArrowError> {
    let mut position = 0;
    while position < bytes.len() {
        let consumed = decoder.push(&bytes[position..])?;
        if consumed == 0 {
            break;
        }
        position += consumed;
    }
    let batch = decoder.flush_batch()?;
    batch
        .filter(|batch| batch.num_rows() == records && position == bytes.len())
        .ok_or_else(|| {
            ArrowError::ParseError(format!("{records} records did not decode to as many rows"))
        })
}

/// CSV records through arrow-csv's push decoder.
pub struct CsvDecoder {
    schema: SchemaRef,
    csv: CsvOptions,
    null_regex: Option<regex::Regex>,
    batch_size: usize,
    origin: SchemaOrigin,
    /// The columns decoded, when not all are.
    projection: Option<Vec<usize>>,
    decoder: arrow::csv::reader::Decoder,
}

impl CsvDecoder {
    /// A decoder of records (no header) of `schema` in the dialect `csv`.
    pub fn new(
        schema: SchemaRef,
        csv: &CsvOptions,
        batch_size: usize,
        origin: SchemaOrigin,
    ) -> Result<Self> {
        let null_regex = csv.null_regex()?;
        let decoder = build_csv(&schema, csv, null_regex.clone(), batch_size, None);
        Ok(CsvDecoder {
            schema,
            csv: csv.clone(),
            null_regex,
            batch_size,
            origin,
            projection: None,
            decoder,
        })
    }

    fn build(&self) -> arrow::csv::reader::Decoder {
        build_csv(
            &self.schema,
            &self.csv,
            self.null_regex.clone(),
            self.batch_size,
            self.projection.as_deref(),
        )
    }

    /// True when column `index` is decoded.
    fn decodes(&self, index: usize) -> bool {
        self.projection
            .as_ref()
            .is_none_or(|columns| columns.contains(&index))
    }

    fn is_null(&self, text: &str) -> bool {
        match &self.null_regex {
            Some(regex) => regex.is_match(text),
            None => text.is_empty(),
        }
    }

    /// The first field of `fields` that does not parse as its column's type.
    fn field_at_fault(&self, fields: &csv::ByteRecord) -> Option<Diagnosis> {
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let columns = self.schema.fields().iter().zip(fields.iter()).enumerate();
        for (_, (field, raw)) in columns.filter(|(index, _)| self.decodes(*index)) {
            let column = Some(field.name().clone());
            let Ok(text) = std::str::from_utf8(raw) else {
                return Some(Diagnosis {
                    column,
                    value: Some(shorten(&String::from_utf8_lossy(raw), true)),
                    reason: "invalid UTF-8 (--lossy-utf8 replaces it)".to_owned(),
                });
            };
            if self.is_null(text) {
                if !field.is_nullable() {
                    return Some(Diagnosis {
                        column,
                        value: None,
                        reason: "null in a NOT NULL column".to_owned(),
                    });
                }
                continue;
            }
            if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                continue;
            }
            let value = StringArray::from(vec![text]);
            if cast_with_options(&value, field.data_type(), &strict).is_err() {
                return Some(Diagnosis {
                    column,
                    value: Some(shorten(text, true)),
                    reason: format!(
                        "expected a value of type {}; {}",
                        field.data_type(),
                        self.origin.hint()
                    ),
                });
            }
        }
        None
    }
}

fn build_csv(
    schema: &SchemaRef,
    csv: &CsvOptions,
    null_regex: Option<regex::Regex>,
    batch_size: usize,
    projection: Option<&[usize]>,
) -> arrow::csv::reader::Decoder {
    let mut builder = arrow::csv::ReaderBuilder::new(Arc::clone(schema))
        .with_header(false)
        .with_delimiter(csv.delimiter)
        .with_quote(csv.quote)
        .with_batch_size(batch_size);
    if let Some(columns) = projection {
        builder = builder.with_projection(columns.to_vec());
    }
    if let Some(escape) = csv.escape {
        builder = builder.with_escape(escape);
    }
    if let Some(regex) = null_regex {
        builder = builder.with_null_regex(regex);
    }
    builder.build_decoder()
}

impl ChunkDecoder for CsvDecoder {
    fn duplicate(&self) -> Result<Self> {
        let mut copy = CsvDecoder::new(
            Arc::clone(&self.schema),
            &self.csv,
            self.batch_size,
            self.origin,
        )?;
        if let Some(columns) = &self.projection {
            copy.project(columns);
        }
        Ok(copy)
    }

    fn project(&mut self, columns: &[usize]) -> Option<SchemaRef> {
        let projected = self.schema.project(columns).ok()?;
        self.projection = Some(columns.to_vec());
        self.decoder = self.build();
        Some(Arc::new(projected))
    }

    fn decode(&mut self, bytes: &[u8], records: usize) -> Result<RecordBatch, ArrowError> {
        let result = decode_all(&mut self.decoder, bytes, records);
        if result.is_err() {
            self.decoder = self.build();
        }
        result
    }

    fn diagnose(&self, record: &[u8], error: &ArrowError) -> Diagnosis {
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(self.csv.delimiter)
            .quote(self.csv.quote)
            .escape(self.csv.escape);
        let mut reader = builder.from_reader(record);
        let mut fields = csv::ByteRecord::new();
        match reader.read_byte_record(&mut fields) {
            Ok(true) => {}
            Ok(false) => return Diagnosis::reason("empty record"),
            Err(err) => return Diagnosis::reason(err.to_string()),
        }
        let expected = self.schema.fields().len();
        if fields.len() != expected {
            return Diagnosis::reason(format!(
                "expected {expected} fields, found {}",
                fields.len()
            ));
        }
        self.field_at_fault(&fields)
            .unwrap_or_else(|| Diagnosis::reason(error.to_string()))
    }
}

/// JSON Lines records through arrow-json's push decoder.
///
/// A decoder of our own on a SIMD parser was measured and left out: `cargo bench --bench
/// json_decoders` has simd-json parse the 100 MB inputs to its tape in 0.10 s (orders) and
/// 0.13 s (events) against arrow-json's 0.19 s and 0.31 s for the whole decoding into
/// batches, of which its own tape phase is about two thirds by a `perf` profile of a 1 GB
/// run. So the parser could save at most about 0.03 s and 0.06 s per 100 MB, 5 to 9% of a
/// JSON-to-Parquet run's CPU time, and only with Arrow builders written by hand for every
/// type, coercion and error report that arrow-json's array decoders already give.
pub struct JsonDecoder {
    schema: SchemaRef,
    batch_size: usize,
    ignore_unknown_keys: bool,
    origin: SchemaOrigin,
    decoder: arrow::json::reader::Decoder,
}

impl JsonDecoder {
    /// A decoder of objects of `schema`. Keys not in the schema are an error unless
    /// `ignore_unknown_keys`.
    pub fn new(
        schema: SchemaRef,
        batch_size: usize,
        ignore_unknown_keys: bool,
        origin: SchemaOrigin,
    ) -> Result<Self> {
        let decoder =
            build_json(&schema, batch_size, ignore_unknown_keys).map_err(|err| Error::Schema {
                location: "JSON decoder".to_owned(),
                message: err.to_string(),
            })?;
        Ok(JsonDecoder {
            schema,
            batch_size,
            ignore_unknown_keys,
            origin,
            decoder,
        })
    }
}

fn build_json(
    schema: &SchemaRef,
    batch_size: usize,
    ignore_unknown_keys: bool,
) -> Result<arrow::json::reader::Decoder, ArrowError> {
    // A number or boolean in a text column is kept as its JSON text: inference picks text
    // for a key whose values mix strings and numbers, and nothing is lost by the widening.
    arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(batch_size)
        .with_strict_mode(!ignore_unknown_keys)
        .with_coerce_primitive(true)
        .build_decoder()
}

impl ChunkDecoder for JsonDecoder {
    fn duplicate(&self) -> Result<Self> {
        JsonDecoder::new(
            Arc::clone(&self.schema),
            self.batch_size,
            self.ignore_unknown_keys,
            self.origin,
        )
    }

    fn decode(&mut self, bytes: &[u8], records: usize) -> Result<RecordBatch, ArrowError> {
        let result = decode_all(&mut self.decoder, bytes, records);
        if result.is_err() {
            self.decoder = build_json(&self.schema, self.batch_size, self.ignore_unknown_keys)?;
        }
        result
    }

    fn diagnose(&self, record: &[u8], error: &ArrowError) -> Diagnosis {
        let object = match serde_json::from_slice::<serde_json::Value>(record) {
            Err(err) => return Diagnosis::reason(format!("invalid JSON: {err}")),
            Ok(serde_json::Value::Object(object)) => object,
            Ok(other) => {
                return Diagnosis::reason(format!(
                    "expected a JSON object, found {}",
                    json_kind(&other)
                ));
            }
        };
        let message = error.to_string();
        let message = message.strip_prefix("Json error: ").unwrap_or(&message);
        if let Some(unknown) = quoted_after(message, "column '")
            && message.contains("missing from schema")
        {
            return Diagnosis {
                value: object
                    .get(&unknown)
                    .map(|value| shorten(&value.to_string(), false)),
                column: Some(unknown),
                reason: "the key is not in the schema; add it with --schema, or drop such \
                         keys with --ignore-unknown-keys"
                    .to_owned(),
            };
        }
        let Some(column) = quoted_after(message, "whilst decoding field '") else {
            return Diagnosis::reason(message.to_owned());
        };
        let expected = self
            .schema
            .field_with_name(&column)
            .map(|field| field.data_type().to_string())
            .unwrap_or_default();
        Diagnosis {
            value: object
                .get(&column)
                .map(|value| shorten(&value.to_string(), false)),
            reason: format!(
                "expected a value of type {expected} ({message}); {}",
                self.origin.hint()
            ),
            column: Some(column),
        }
    }
}

/// The text between `prefix` and the next `'` in `message`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let length = message[start..].find('\'')?;
    Some(message[start..start + length].to_owned())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
