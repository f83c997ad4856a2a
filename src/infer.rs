//! Schema inference for text inputs: from a sample at the front of the stream, or from a
//! full pass over a file (`--infer-rows all`).
//!
//! ```text
//!   sample | whole file --> well-formed records only --> arrow's type inference
//!                       \-> text pass: zoned ISO timestamps --> normalized schema
//!                                                           \-> widening (--widen)
//! ```
//!
//! Records that are malformed (wrong field count, invalid UTF-8, not a JSON object) are left
//! out of inference: the decoder rejects them later, with their line. A sampled stream is put
//! back together (sample, then the rest) so stdin and compressed input lose nothing. Memory:
//! the sample (`infer_rows` lines), or for a full pass one record and one text batch at a
//! time.

use std::io::{self, BufRead, Cursor, Read};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::error::{Error, Result};
use crate::format::{CsvOptions, Location};
use crate::records::{Syntax, whole_records_prefix};
use crate::source::{SourceOptions, TextInput, open_bytes};

/// `infer_rows` that asks for a full pass over the input instead of a sample.
pub const INFER_ALL_ROWS: usize = usize::MAX;

/// Rows per batch of the text pass that looks for timestamps.
const TEXT_BATCH_ROWS: usize = 8192;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How inferred types may be widened, so that values past the sample still fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Widen {
    /// Keep the inferred types.
    #[default]
    None,
    /// Integer columns become 64-bit floats.
    Float,
    /// Number, boolean, date and timestamp columns become text, which holds any value.
    Text,
}

impl std::str::FromStr for Widen {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "none" => Ok(Widen::None),
            "float" => Ok(Widen::Float),
            "text" => Ok(Widen::Text),
            _ => Err(Error::usage(format!(
                "unknown widening `{text}`: expected none, float or text"
            ))),
        }
    }
}

/// The bytes of a text input that inference may read again.
enum Replay {
    /// The sample read from the front of the stream.
    Sample(Arc<[u8]>),
    /// The whole file, opened afresh for each pass.
    File(Location),
}

impl Replay {
    fn open(&self) -> Result<Box<dyn BufRead + Send>> {
        let mut reader: Box<dyn BufRead + Send> = match self {
            Replay::Sample(sample) => Box::new(Cursor::new(Arc::clone(sample))),
            Replay::File(location) => open_bytes(location, Default::default())?,
        };
        let name = match self {
            Replay::Sample(_) => "<sample>".to_owned(),
            Replay::File(location) => location.input_name(),
        };
        let head = reader.fill_buf().map_err(|err| Error::io(name, err))?;
        if head.starts_with(BOM) {
            reader.consume(BOM.len());
        }
        Ok(reader)
    }
}

/// Prepares inference on `reader`: takes a sample of `lines` lines off its front, or for a
/// full pass checks that the input can be read twice. Returns the replay and the reader the
/// decoder should go on with.
fn prepare(
    input: &TextInput,
    mut reader: Box<dyn BufRead + Send>,
    lines: usize,
    syntax: Syntax,
    options: &SourceOptions,
) -> Result<(Replay, Box<dyn BufRead + Send>)> {
    if options.infer_rows == INFER_ALL_ROWS {
        let Some(file) = &input.file else {
            return Err(Error::usage(format!(
                "{}: --infer-rows all reads the input twice and needs a file; a stream can \
                 only be sampled (--infer-rows N) or described (--schema)",
                input.name
            )));
        };
        return Ok((Replay::File(file.clone()), reader));
    }
    let sample = read_sample(reader.as_mut(), lines, &input.name)?;
    // A sample cut inside a quoted field ends in a broken record; leave it to the decoder.
    let whole = whole_records_prefix(&sample, syntax);
    let replay = Replay::Sample(Arc::from(&sample[..whole]));
    Ok((replay, Box::new(Cursor::new(sample).chain(reader))))
}

/// Reads up to `lines` lines from the front of `reader`.
///
/// Limitation: a sample line is read whole, however long; `--max-record-bytes` is enforced
/// only later, by the framer.
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

fn max_records(options: &SourceOptions) -> Option<usize> {
    (options.infer_rows != INFER_ALL_ROWS).then_some(options.infer_rows)
}

/// Infers the schema of CSV input in the dialect `csv`; returns it with the reader to decode.
pub(crate) fn csv_schema(
    input: &TextInput,
    reader: Box<dyn BufRead + Send>,
    csv: &CsvOptions,
    options: &SourceOptions,
) -> Result<(SchemaRef, Box<dyn BufRead + Send>)> {
    let name = input.name.clone();
    let lines = options.infer_rows.saturating_add(usize::from(csv.header));
    let syntax = Syntax::Csv {
        delimiter: csv.delimiter,
        quote: csv.quote,
        escape: csv.escape,
    };
    let (replay, reader) = prepare(input, reader, lines, syntax, options)?;
    let schema_error = |err: ArrowError| Error::Schema {
        location: name.clone(),
        message: err.to_string(),
    };
    let null_regex = csv.null_regex()?;
    let format = csv_format(csv, null_regex.clone());

    let records = WellFormedCsv::new(replay.open()?, csv);
    let (schema, _) = format
        .infer_schema(records, max_records(options))
        .map_err(schema_error)?;
    reject_duplicate_columns(&name, &schema)?;

    // arrow-csv leaves ISO timestamps with a zone suffix (`...Z`, `+02:00`) as text; read the
    // records again as text and promote the columns whose every value is a timestamp.
    let text_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| Field::new(field.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut builder = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(TEXT_BATCH_ROWS);
    if let Some(regex) = null_regex {
        builder = builder.with_null_regex(regex);
    }
    let batches = builder
        .build(WellFormedCsv::new(replay.open()?, csv))
        .map_err(schema_error)?;
    let timestamps = timestamp_columns(batches, schema.fields().len(), max_records(options));
    let schema = normalize_schema(&schema, &timestamps, options.widen);
    Ok((Arc::new(schema), reader))
}

/// Infers the schema of JSON Lines input; returns it with the reader to decode.
pub(crate) fn json_schema(
    input: &TextInput,
    reader: Box<dyn BufRead + Send>,
    options: &SourceOptions,
) -> Result<(SchemaRef, Box<dyn BufRead + Send>)> {
    let name = input.name.clone();
    let (replay, reader) = prepare(input, reader, options.infer_rows, Syntax::Lines, options)?;
    let schema_error = |err: ArrowError| Error::Schema {
        location: name.clone(),
        message: err.to_string(),
    };

    let mut objects = WellFormedJson::new(replay.open()?);
    let (inferred, _) = arrow::json::reader::infer_json_schema(&mut objects, max_records(options))
        .map_err(schema_error)?;
    let fields = objects.order.apply(inferred.fields());
    let inferred = Schema::new_with_metadata(fields, inferred.metadata().clone());

    let batches = arrow::json::ReaderBuilder::new(Arc::new(inferred.clone()))
        .with_batch_size(TEXT_BATCH_ROWS)
        .with_coerce_primitive(true)
        .build(WellFormedJson::new(replay.open()?))
        .map_err(schema_error)?;
    let timestamps = timestamp_columns(batches, inferred.fields().len(), max_records(options));
    let schema = normalize_schema(&inferred, &timestamps, options.widen);
    Ok((Arc::new(schema), reader))
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

/// The CSV records of a stream that are UTF-8 and have as many fields as the first,
/// re-encoded in the same dialect, one record at a time.
struct WellFormedCsv<R> {
    reader: csv::Reader<R>,
    writer: csv::Writer<SharedBuffer>,
    written: SharedBuffer,
    record: csv::ByteRecord,
    fields: Option<usize>,
    pending: Vec<u8>,
    position: usize,
}

impl<R: Read> WellFormedCsv<R> {
    fn new(inner: R, csv: &CsvOptions) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(csv.delimiter)
            .quote(csv.quote)
            .escape(csv.escape)
            .from_reader(inner);
        let written = SharedBuffer::default();
        let writer = csv::WriterBuilder::new()
            .delimiter(csv.delimiter)
            .quote(csv.quote)
            .from_writer(written.clone());
        WellFormedCsv {
            reader,
            writer,
            written,
            record: csv::ByteRecord::new(),
            fields: None,
            pending: Vec::new(),
            position: 0,
        }
    }

    /// Moves the next well-formed record into `pending`; false at the end of the input.
    fn next_record(&mut self) -> io::Result<bool> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(false),
                Ok(true) => {}
                Err(err) => match err.into_kind() {
                    csv::ErrorKind::Io(err) => return Err(err),
                    _ => continue,
                },
            }
            let expected = *self.fields.get_or_insert(self.record.len());
            let text = std::str::from_utf8(self.record.as_slice()).is_ok();
            if self.record.len() != expected || !text {
                continue;
            }
            self.writer.write_byte_record(&self.record)?;
            self.writer.flush()?;
            self.pending.clear();
            self.pending.append(&mut self.written.0.borrow_mut());
            self.position = 0;
            return Ok(true);
        }
    }
}

/// The bytes the CSV writer of [`WellFormedCsv`] flushes, taken from it record by record.
#[derive(Clone, Default)]
struct SharedBuffer(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R: Read> Read for WellFormedCsv<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.pending.len() {
            if !self.next_record()? {
                return Ok(0);
            }
        }
        let available = &self.pending[self.position..];
        let length = available.len().min(buf.len());
        buf[..length].copy_from_slice(&available[..length]);
        self.position += length;
        Ok(length)
    }
}

/// The lines of a stream that hold one JSON object each and agree with the lines before them
/// on the shape of every key, noting the order of the keys.
struct WellFormedJson<R> {
    inner: R,
    pending: Vec<u8>,
    position: usize,
    order: KeyOrder,
    shapes: Shape,
}

impl<R: BufRead> WellFormedJson<R> {
    fn new(inner: R) -> Self {
        WellFormedJson {
            inner,
            pending: Vec::new(),
            position: 0,
            order: KeyOrder::default(),
            shapes: Shape::default(),
        }
    }
}

impl<R: BufRead> BufRead for WellFormedJson<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.position == self.pending.len() {
            self.pending.clear();
            self.position = 0;
            if self.inner.read_until(b'\n', &mut self.pending)? == 0 {
                break;
            }
            match serde_json::from_slice::<serde_json::Value>(&self.pending) {
                Ok(value @ serde_json::Value::Object(_)) if self.shapes.admits(&value) => {
                    self.shapes.record(&value);
                    self.order.observe(&value);
                    if self.pending.last() != Some(&b'\n') {
                        self.pending.push(b'\n');
                    }
                }
                _ => self.pending.clear(),
            }
        }
        Ok(&self.pending[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position += amount;
    }
}

impl<R: BufRead> Read for WellFormedJson<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let length = available.len().min(buf.len());
        buf[..length].copy_from_slice(&available[..length]);
        self.consume(length);
        Ok(length)
    }
}

/// What a JSON value is, as far as arrow's inference can reconcile values: scalars of any
/// type mix (into text at worst), but a scalar, an array and an object do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    Array,
    Object,
}

fn kind_of(value: &serde_json::Value) -> Option<Kind> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::Array(_) => Some(Kind::Array),
        serde_json::Value::Object(_) => Some(Kind::Object),
        _ => Some(Kind::Scalar),
    }
}

/// The kinds seen so far at every key path. A line whose shape disagrees with earlier lines
/// (`"a": 1` after `"a": [1]`) would make arrow's inference fail for the whole sample; such a
/// line is left out of inference instead, and is rejected with its line when decoded.
#[derive(Debug, Default)]
struct Shape {
    kind: Option<Kind>,
    keys: std::collections::HashMap<String, Shape>,
    items: Option<Box<Shape>>,
}

impl Shape {
    /// True when `value` fits every kind recorded so far, and its array items agree.
    fn admits(&self, value: &serde_json::Value) -> bool {
        let Some(kind) = kind_of(value) else {
            return true;
        };
        if self.kind.is_some_and(|seen| seen != kind) {
            return false;
        }
        match value {
            serde_json::Value::Object(object) => object
                .iter()
                .all(|(key, child)| self.keys.get(key).is_none_or(|shape| shape.admits(child))),
            serde_json::Value::Array(items) => {
                let mut kinds = items.iter().filter_map(kind_of);
                let first = kinds.next();
                let uniform = kinds.all(|kind| Some(kind) == first);
                let empty = Shape::default();
                let item_shape = self.items.as_deref().unwrap_or(&empty);
                uniform && items.iter().all(|item| item_shape.admits(item))
            }
            _ => true,
        }
    }

    fn record(&mut self, value: &serde_json::Value) {
        let Some(kind) = kind_of(value) else {
            return;
        };
        self.kind = Some(kind);
        match value {
            serde_json::Value::Object(object) => {
                for (key, child) in object {
                    self.keys.entry(key.clone()).or_default().record(child);
                }
            }
            serde_json::Value::Array(items) => {
                let item_shape = self.items.get_or_insert_with(Box::default);
                for item in items {
                    item_shape.record(item);
                }
            }
            _ => {}
        }
    }
}

/// The order in which object keys first appear, per level of nesting; arrow-json's
/// inference sorts them by name. Elements of an array share one node, as they share one
/// item type.
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

    fn apply(&self, fields: &Fields) -> Vec<Field> {
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

/// Per column: true when it has at least one value and every value read is a date with a
/// time of day. Reads batches until `rows` rows or until no text column is left in doubt;
/// a batch that fails to decode ends the pass, leaving the columns as text.
fn timestamp_columns<I>(batches: I, columns: usize, rows: Option<usize>) -> Vec<bool>
where
    I: Iterator<Item = Result<RecordBatch, ArrowError>>,
{
    // None: no value seen yet; Some(false): a value that is not a timestamp.
    let mut state: Vec<Option<bool>> = vec![None; columns];
    let mut read = 0;
    for batch in batches {
        let Ok(batch) = batch else { break };
        for (column, seen) in batch.columns().iter().zip(state.iter_mut()) {
            if *seen != Some(false) {
                *seen = match (*seen, timestamps_in(column.as_ref())) {
                    (_, Some(false)) => Some(false),
                    (None, other) | (other, None) => other,
                    (Some(true), Some(true)) => Some(true),
                    (Some(false), _) => Some(false),
                };
            }
        }
        read += batch.num_rows();
        let undecided = state.iter().any(|seen| *seen != Some(false));
        if !undecided || rows.is_some_and(|rows| read >= rows) {
            break;
        }
    }
    state.into_iter().map(|seen| seen == Some(true)).collect()
}

/// Whether the values of a text column are all timestamps: `None` when it has no values or
/// is not text.
fn timestamps_in(column: &dyn Array) -> Option<bool> {
    let strings = column.as_any().downcast_ref::<StringArray>()?;
    let mut seen = None;
    for value in strings.iter().flatten() {
        let looks_like = value.len() >= 16
            && value.as_bytes()[4] == b'-'
            && matches!(value.as_bytes()[10], b'T' | b' ')
            && value.contains(':');
        if !looks_like
            || arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(value).is_err()
        {
            return Some(false);
        }
        seen = Some(true);
    }
    seen
}

/// Timestamps become microseconds in UTC, text columns whose values are all timestamps
/// become timestamps, and top-level columns are widened as `widen` asks.
fn normalize_schema(schema: &Schema, timestamps: &[bool], widen: Widen) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let field = field.as_ref().clone();
            let data_type = match field.data_type() {
                DataType::Timestamp(_, _) => utc_micros(),
                DataType::Utf8 if timestamps.get(index) == Some(&true) => utc_micros(),
                other => other.clone(),
            };
            let data_type = widened(data_type, widen);
            field.with_data_type(data_type)
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn widened(data_type: DataType, widen: Widen) -> DataType {
    let scalar = data_type.is_primitive() || data_type == DataType::Boolean;
    match widen {
        Widen::Float if data_type.is_integer() => DataType::Float64,
        Widen::Text if scalar => DataType::Utf8,
        _ => data_type,
    }
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer_csv(text: &str, options: &SourceOptions) -> SchemaRef {
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let input = TextInput {
            name: "<test>".to_owned(),
            file: None,
        };
        csv_schema(&input, reader, &CsvOptions::default(), options)
            .unwrap()
            .0
    }

    #[test]
    fn zoned_iso_text_is_inferred_as_utc_micros() {
        let text = "at\n2024-01-05T10:00:00Z\n2024-01-05T11:30:00.5+01:00\n";
        let schema = infer_csv(text, &SourceOptions::default());
        assert_eq!(schema.field(0).data_type(), &utc_micros());
    }

    #[test]
    fn malformed_sample_records_do_not_decide_the_types() {
        let text = "id,amount\n1,2.5\n2\n3,4.5,extra\n4,\"never\n";
        let schema = infer_csv(text, &SourceOptions::default());
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(types, [&DataType::Int64, &DataType::Float64]);
    }

    #[test]
    fn json_lines_of_another_shape_are_left_out_of_inference() {
        let text = "{\"a\":1}\n{\"a\":[1,2]}\n{\"a\":{\"b\":1}}\n{\"a\":null}\n{\"a\":2.5}\n";
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let input = TextInput {
            name: "<test>".to_owned(),
            file: None,
        };
        let (schema, _) = json_schema(&input, reader, &SourceOptions::default()).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
    }

    #[test]
    fn widening_turns_integers_into_floats_or_text() {
        let text = "id,ok,name\n1,true,a\n";
        let float = SourceOptions {
            widen: Widen::Float,
            ..SourceOptions::default()
        };
        let types: Vec<DataType> = infer_csv(text, &float)
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [DataType::Float64, DataType::Boolean, DataType::Utf8]
        );
        let text_widen = SourceOptions {
            widen: Widen::Text,
            ..SourceOptions::default()
        };
        assert!(
            infer_csv(text, &text_widen)
                .fields()
                .iter()
                .all(|f| f.data_type() == &DataType::Utf8)
        );
    }

    #[test]
    fn a_full_pass_needs_a_file() {
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(b"a\n1\n".to_vec()));
        let options = SourceOptions {
            infer_rows: INFER_ALL_ROWS,
            ..SourceOptions::default()
        };
        let input = TextInput {
            name: "<test>".to_owned(),
            file: None,
        };
        let err = csv_schema(&input, reader, &CsvOptions::default(), &options)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
