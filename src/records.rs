//! Record framing: cuts a text input into chunks of whole records, each record with the line
//! and byte offset where it starts.
//!
//! ```text
//!   bytes --> Framer --> Chunk { bytes, records: [line, offset, span] } --> decoder
//!             (quote-aware for CSV, one record per line for JSONL)
//! ```
//!
//! Decoders see whole chunks, so the common case decodes at full speed; when a chunk fails,
//! the record positions let the source find exactly which records are bad and say where they
//! are in the file. The framer follows the record grammar of the decoders it feeds: for CSV
//! that of `csv-core` (the parser under arrow-csv), where a quote opens a quoted field only at
//! the start of a field, blank lines are skipped, and `\n`, `\r\n` and a lone `\r` all end a
//! record.
//!
//! Memory: one chunk (the bytes of `records` records) plus at most [`READ_STEP`] bytes read
//! ahead. A single record may not exceed `max_record_bytes`.

use std::io::BufRead;

use crate::error::{Error, Result};

/// Bytes taken from the reader at a time; the read-ahead left over after a chunk is cut is
/// copied into the next one, so this is kept small against the chunk size.
pub const READ_STEP: usize = 64 << 10;

/// Default upper bound on the size of one record.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How records are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// One record per line (JSON Lines). Lines holding only whitespace are skipped.
    Lines,
    /// CSV records, which may span lines inside quoted fields.
    Csv {
        /// Field delimiter.
        delimiter: u8,
        /// Quote character.
        quote: u8,
        /// Escape character inside quoted fields, if any.
        escape: Option<u8>,
    },
}

/// Where one record lies: in its chunk and in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Start of the record in the chunk's bytes.
    pub start: usize,
    /// End of the record's text, before its line terminator.
    pub end: usize,
    /// End of the record including its terminator; the next record starts at or after it.
    pub stop: usize,
    /// 1-based line of the input on which the record starts.
    pub line: u64,
    /// Byte offset of the record's start in the (decompressed) input.
    pub offset: u64,
}

/// A record that cannot be framed: its quoted field never closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    /// Where it lies; it runs to the end of the input.
    pub span: RecordSpan,
    /// Why it cannot be decoded.
    pub reason: String,
}

/// A run of whole records, contiguous in `bytes`; every record ends with a terminator.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The records' bytes, blank lines between them included.
    pub bytes: Vec<u8>,
    /// The records, in input order.
    pub records: Vec<RecordSpan>,
    /// A last record that could not be framed, after all of `records`.
    pub broken: Option<BrokenRecord>,
}

impl Chunk {
    /// The text of one record, without its terminator.
    pub fn text(&self, span: &RecordSpan) -> &[u8] {
        &self.bytes[span.start..span.end]
    }

    /// The bytes of the records `range`, terminators included, for a decoder.
    pub fn bytes_of(&self, range: std::ops::Range<usize>) -> &[u8] {
        let first = &self.records[range.start];
        let last = &self.records[range.end - 1];
        &self.bytes[first.start..last.stop]
    }

    /// True when the chunk holds no record at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.broken.is_none()
    }
}

/// What a scan of the bytes at a record start found.
enum Scan {
    /// A whole record: its text ends at `end`, its terminator at `stop`; `lines` line breaks
    /// lie inside it, its terminator included.
    Record { end: usize, stop: usize, lines: u64 },
    /// The bytes end inside the record.
    Incomplete,
    /// The input ends inside a quoted field.
    Unclosed,
}

/// Cuts a byte stream into [`Chunk`]s of whole records.
pub struct Framer {
    location: String,
    reader: Box<dyn BufRead + Send>,
    syntax: Syntax,
    max_record_bytes: usize,
    /// Unframed bytes; `buffer[0]` is at a record start (or at blank lines before one).
    buffer: Vec<u8>,
    /// Line and input offset of `buffer[0]`.
    line: u64,
    offset: u64,
    at_eof: bool,
    at_start: bool,
    /// Buffers of a decoded chunk, handed back with [`Framer::recycle`].
    spare: Option<Vec<u8>>,
    spare_records: Option<Vec<RecordSpan>>,
}

impl Framer {
    /// A framer over `reader`; `location` names the input in errors.
    pub fn new(
        location: String,
        reader: Box<dyn BufRead + Send>,
        syntax: Syntax,
        max_record_bytes: usize,
    ) -> Self {
        Framer {
            location,
            reader,
            syntax,
            max_record_bytes: max_record_bytes.max(1),
            buffer: Vec::new(),
            line: 1,
            offset: 0,
            at_eof: false,
            at_start: true,
            spare: None,
            spare_records: None,
        }
    }

    /// The next chunk of up to `records` records, or `None` at the end of the input.
    ///
    /// Fails on a read error and on a record longer than the maximum record size.
    pub fn next_chunk(&mut self, records: usize) -> Result<Option<Chunk>> {
        let mut spans = self.spare_records.take().unwrap_or_default();
        spans.clear();
        spans.reserve(records.min(1 << 16));
        let mut position = 0;
        let mut line = self.line;
        let mut broken = None;

        while spans.len() < records {
            if self.at_start {
                self.skip_bom()?;
            }
            position = match self.skip_blank_lines(position, &mut line)? {
                Some(position) => position,
                None => break,
            };
            match scan(self.syntax, &self.buffer[position..], self.at_eof) {
                Scan::Record { end, stop, lines } => {
                    if end > self.max_record_bytes {
                        return Err(self.too_large(position, line));
                    }
                    spans.push(RecordSpan {
                        start: position,
                        end: position + end,
                        stop: position + stop,
                        line,
                        offset: self.offset + position as u64,
                    });
                    line += lines;
                    position += stop;
                }
                Scan::Incomplete => {
                    let pending = self.buffer.len() - position;
                    if pending > self.max_record_bytes {
                        return Err(self.too_large(position, line));
                    }
                    // Read as much again as the record has so far: a long record is then
                    // rescanned a logarithmic number of times, not once per read.
                    self.fill_at_least(pending.max(READ_STEP))?;
                }
                Scan::Unclosed => {
                    let length = self.buffer.len() - position;
                    broken = Some(BrokenRecord {
                        span: RecordSpan {
                            start: position,
                            end: position + length,
                            stop: position + length,
                            line,
                            offset: self.offset + position as u64,
                        },
                        reason: "a quoted field is never closed before the end of the input"
                            .to_owned(),
                    });
                    position += length;
                    break;
                }
            }
        }

        let chunk = self.cut(position, line, spans, broken);
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    /// Removes a UTF-8 byte-order mark at the very start of the input.
    fn skip_bom(&mut self) -> Result<()> {
        while self.buffer.len() < BOM.len() && !self.at_eof {
            self.fill()?;
        }
        if self.buffer.starts_with(BOM) {
            self.buffer.drain(..BOM.len());
            self.offset += BOM.len() as u64;
        }
        self.at_start = false;
        Ok(())
    }

    /// Moves `position` past blank lines, counting them. `None` at the end of the input.
    fn skip_blank_lines(&mut self, mut position: usize, line: &mut u64) -> Result<Option<usize>> {
        loop {
            let Some(&byte) = self.buffer.get(position) else {
                if self.at_eof {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            };
            let blank = match self.syntax {
                Syntax::Lines => matches!(byte, b' ' | b'\t' | b'\r' | b'\n'),
                Syntax::Csv { .. } => matches!(byte, b'\r' | b'\n'),
            };
            if !blank {
                return Ok(Some(position));
            }
            if byte == b'\r' && position + 1 == self.buffer.len() && !self.at_eof {
                // A `\r\n` may be split across reads; see the `\n` before counting.
                self.fill()?;
                continue;
            }
            // JSON Lines end lines at `\n` alone; CSV also at `\r\n` and a lone `\r`.
            let crlf = byte == b'\r' && self.buffer.get(position + 1) == Some(&b'\n');
            let lone_cr = byte == b'\r' && !crlf && matches!(self.syntax, Syntax::Csv { .. });
            if byte == b'\n' || lone_cr {
                *line += 1;
            }
            position += 1;
        }
    }

    fn too_large(&self, position: usize, line: u64) -> Error {
        Error::RecordTooLarge {
            location: self.location.clone(),
            line,
            offset: self.offset + position as u64,
            limit: self.max_record_bytes,
        }
    }

    /// Appends at least `bytes` bytes of input to the buffer, or all that is left.
    fn fill_at_least(&mut self, bytes: usize) -> Result<()> {
        let target = self.buffer.len() + bytes;
        while self.buffer.len() < target && !self.at_eof {
            self.fill()?;
        }
        Ok(())
    }

    /// Appends up to [`READ_STEP`] bytes of input to the buffer.
    fn fill(&mut self) -> Result<()> {
        let available = self
            .reader
            .fill_buf()
            .map_err(|err| Error::io(&self.location, err))?;
        if available.is_empty() {
            self.at_eof = true;
            return Ok(());
        }
        let taken = available.len().min(READ_STEP);
        self.buffer.extend_from_slice(&available[..taken]);
        self.reader.consume(taken);
        Ok(())
    }

    /// Takes back a decoded chunk's buffers, so that the next chunks reuse them instead of
    /// allocating a batch's worth of bytes each time.
    pub fn recycle(&mut self, chunk: Chunk) {
        self.spare = Some(chunk.bytes);
        self.spare_records = Some(chunk.records);
    }

    /// Splits the first `position` bytes off as a chunk; the rest starts the next one.
    fn cut(
        &mut self,
        position: usize,
        line: u64,
        mut records: Vec<RecordSpan>,
        broken: Option<BrokenRecord>,
    ) -> Chunk {
        let mut rest = self.spare.take().unwrap_or_default();
        rest.clear();
        rest.extend_from_slice(&self.buffer[position..]);
        self.buffer.truncate(position);
        let mut bytes = std::mem::replace(&mut self.buffer, rest);
        self.offset += position as u64;
        self.line = line;
        // The last record of the input may lack a terminator; give it one, so that every
        // decoder sees the same shape.
        if let Some(last) = records.last_mut()
            && last.stop == last.end
            && broken.is_none()
        {
            bytes.push(b'\n');
            last.stop += 1;
        }
        Chunk {
            bytes,
            records,
            broken,
        }
    }
}

/// The length of the longest prefix of `bytes` that holds only whole records: a last record
/// whose quoted field never closes is cut off.
pub fn whole_records_prefix(bytes: &[u8], syntax: Syntax) -> usize {
    let reader = Box::new(std::io::Cursor::new(bytes.to_vec()));
    let mut framer = Framer::new(String::new(), reader, syntax, usize::MAX);
    while let Ok(Some(chunk)) = framer.next_chunk(1 << 16) {
        if let Some(broken) = chunk.broken {
            return broken.span.offset as usize;
        }
    }
    bytes.len()
}

fn scan(syntax: Syntax, bytes: &[u8], at_eof: bool) -> Scan {
    match syntax {
        Syntax::Lines => scan_line(bytes, at_eof),
        Syntax::Csv {
            delimiter,
            quote,
            escape,
        } => scan_csv(bytes, at_eof, delimiter, quote, escape),
    }
}

fn scan_line(bytes: &[u8], at_eof: bool) -> Scan {
    match memchr::memchr(b'\n', bytes) {
        // A `\r` before the `\n` belongs to the terminator, not to the record's text.
        Some(newline) => Scan::Record {
            end: if newline > 0 && bytes[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            },
            stop: newline + 1,
            lines: 1,
        },
        None if at_eof => Scan::Record {
            end: bytes.len(),
            stop: bytes.len(),
            lines: 0,
        },
        None => Scan::Incomplete,
    }
}

/// Finds the end of the CSV record at the start of `bytes`.
///
/// Outside quoted fields only quotes and line breaks matter, so one `memchr3` jumps over a
/// whole record that has no quotes: for the usual record that is the only call. A quote opens
/// a quoted field only at the start of a field (after a delimiter or at the record's start),
/// as in csv-core; inside one, the scan jumps from quote (or escape) to quote.
fn scan_csv(bytes: &[u8], at_eof: bool, delimiter: u8, quote: u8, escape: Option<u8>) -> Scan {
    let mut position = 0;
    let mut lines = 0;
    loop {
        let Some(found) = memchr::memchr3(quote, b'\n', b'\r', &bytes[position..]) else {
            return end_of_bytes(bytes, at_eof, lines);
        };
        position += found;
        if bytes[position] != quote {
            return record_end(bytes, position, at_eof, lines);
        }
        let opens_field = position == 0 || bytes[position - 1] == delimiter;
        position += 1;
        if !opens_field {
            continue;
        }
        match skip_quoted(bytes, position, at_eof, quote, escape) {
            Quoted::Closed { after, line_breaks } => {
                lines += line_breaks;
                position = after;
            }
            Quoted::Open if at_eof => return Scan::Unclosed,
            Quoted::Open => return Scan::Incomplete,
        }
    }
}

/// What follows the opening quote of a field.
enum Quoted {
    /// The field closes; unquoted text resumes at `after`.
    Closed { after: usize, line_breaks: u64 },
    /// The bytes end inside the field (or right after a quote that a second quote could
    /// still turn into a literal one).
    Open,
}

/// Skips a quoted field whose text starts at `position`.
fn skip_quoted(
    bytes: &[u8],
    mut position: usize,
    at_eof: bool,
    quote: u8,
    escape: Option<u8>,
) -> Quoted {
    let mut line_breaks = 0;
    loop {
        let rest = &bytes[position..];
        let found = match escape {
            Some(escape) if escape != quote => memchr::memchr2(quote, escape, rest),
            _ => memchr::memchr(quote, rest),
        };
        let Some(found) = found else {
            return Quoted::Open;
        };
        line_breaks += line_breaks_in(&rest[..found]);
        position += found;
        if bytes[position] != quote {
            // An escape: the next character is literal, whatever it is.
            if let Some(next) = bytes.get(position + 1) {
                line_breaks += line_breaks_in(std::slice::from_ref(next));
            }
            position += 2;
            if position > bytes.len() {
                return Quoted::Open;
            }
            continue;
        }
        match bytes.get(position + 1) {
            Some(&next) if next == quote => position += 2,
            Some(_) => {
                return Quoted::Closed {
                    after: position + 1,
                    line_breaks,
                };
            }
            None if at_eof => {
                return Quoted::Closed {
                    after: position + 1,
                    line_breaks,
                };
            }
            None => return Quoted::Open,
        }
    }
}

/// The scan result when the bytes end outside any quoted field.
fn end_of_bytes(bytes: &[u8], at_eof: bool, lines: u64) -> Scan {
    if at_eof {
        Scan::Record {
            end: bytes.len(),
            stop: bytes.len(),
            lines,
        }
    } else {
        Scan::Incomplete
    }
}

/// The scan result for a record whose text ends at `position`, where a line break starts.
fn record_end(bytes: &[u8], position: usize, at_eof: bool, lines: u64) -> Scan {
    if bytes[position] == b'\r' {
        match bytes.get(position + 1) {
            Some(b'\n') => {
                return Scan::Record {
                    end: position,
                    stop: position + 2,
                    lines: lines + 1,
                };
            }
            None if !at_eof => return Scan::Incomplete,
            _ => {}
        }
    }
    Scan::Record {
        end: position,
        stop: position + 1,
        lines: lines + 1,
    }
}

/// Line breaks in `text`: `\n`, `\r\n` and a lone `\r` count one each.
fn line_breaks_in(text: &[u8]) -> u64 {
    let mut count = 0;
    let mut iter = memchr::memchr2_iter(b'\n', b'\r', text).peekable();
    while let Some(position) = iter.next() {
        count += 1;
        if text[position] == b'\r' && text.get(position + 1) == Some(&b'\n') {
            iter.next();
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const CSV: Syntax = Syntax::Csv {
        delimiter: b',',
        quote: b'"',
        escape: None,
    };

    fn frame(syntax: Syntax, text: &[u8], records: usize) -> Vec<Chunk> {
        // A reader that hands out one byte at a time exercises every split point.
        let reader = std::io::BufReader::with_capacity(1, Cursor::new(text.to_vec()));
        let mut framer = Framer::new("<test>".into(), Box::new(reader), syntax, 1 << 20);
        let mut chunks = Vec::new();
        while let Some(chunk) = framer.next_chunk(records).unwrap() {
            chunks.push(chunk);
        }
        chunks
    }

    fn texts_and_lines(chunks: &[Chunk]) -> Vec<(String, u64, u64)> {
        chunks
            .iter()
            .flat_map(|chunk| {
                chunk.records.iter().map(move |span| {
                    let text = String::from_utf8_lossy(chunk.text(span)).into_owned();
                    (text, span.line, span.offset)
                })
            })
            .collect()
    }

    #[test]
    fn csv_records_with_quoted_newlines_keep_their_lines_and_offsets() {
        let text = b"a,b\r\n1,\"x\ny\"\r\n\r\n2,\"q\"\"\nr\"\n3,z";
        let chunks = frame(CSV, text, 2);
        assert_eq!(
            texts_and_lines(&chunks),
            [
                ("a,b".to_owned(), 1, 0),
                ("1,\"x\ny\"".to_owned(), 2, 5),
                ("2,\"q\"\"\nr\"".to_owned(), 5, 16),
                ("3,z".to_owned(), 7, 26),
            ]
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1].bytes.last(),
            Some(&b'\n'),
            "a terminator is added"
        );
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_literal() {
        let chunks = frame(CSV, b"1,ab\"c\n2,d\n", 10);
        let lines: Vec<u64> = texts_and_lines(&chunks).iter().map(|row| row.1).collect();
        assert_eq!(lines, [1, 2]);
    }

    #[test]
    fn lone_carriage_returns_end_records() {
        let chunks = frame(CSV, b"1,a\r2,b\r3,c", 10);
        let rows = texts_and_lines(&chunks);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2], ("3,c".to_owned(), 3, 8));
    }

    #[test]
    fn an_unclosed_quote_is_a_broken_last_record() {
        let chunks = frame(CSV, b"1,a\n2,\"never\nclosed\n", 10);
        let broken = chunks[0].broken.as_ref().unwrap();
        assert_eq!((broken.span.line, broken.span.offset), (2, 4));
        assert_eq!(chunks[0].records.len(), 1);
    }

    #[test]
    fn escaped_quotes_do_not_close_a_field() {
        let syntax = Syntax::Csv {
            delimiter: b',',
            quote: b'"',
            escape: Some(b'\\'),
        };
        let chunks = frame(syntax, b"1,\"a\\\"\nb\"\n2,c\n", 10);
        let lines: Vec<u64> = texts_and_lines(&chunks).iter().map(|row| row.1).collect();
        assert_eq!(lines, [1, 3]);
    }

    /// The records csv-core (through the csv crate) finds in `text`, field by field.
    fn csv_core_records(text: &[u8], escape: Option<u8>) -> Vec<Vec<Vec<u8>>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .escape(escape)
            .from_reader(text);
        reader
            .byte_records()
            .map(|record| record.unwrap().iter().map(<[u8]>::to_vec).collect())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn framing_agrees_with_csv_core(
            text in proptest::collection::vec(
                proptest::sample::select(&b"ab,\"\n\r\\"[..]), 0..60),
            escaped in proptest::prelude::any::<bool>(),
            records_per_chunk in 1usize..5,
        ) {
            let escape = escaped.then_some(b'\\');
            let syntax = Syntax::Csv { delimiter: b',', quote: b'"', escape };
            let chunks = frame(syntax, &text, records_per_chunk);
            proptest::prop_assume!(chunks.iter().all(|chunk| chunk.broken.is_none()));
            let mut framed = Vec::new();
            for chunk in &chunks {
                for span in &chunk.records {
                    // Each framed record is exactly one record to csv-core.
                    let mut parsed = csv_core_records(chunk.text(span), escape);
                    proptest::prop_assert_eq!(parsed.len(), 1);
                    framed.push(parsed.remove(0));
                }
            }
            proptest::prop_assert_eq!(framed, csv_core_records(&text, escape));
        }
    }

    #[test]
    fn json_lines_skip_blank_lines_and_a_bom() {
        let chunks = frame(Syntax::Lines, b"\xEF\xBB\xBF{\"a\":1}\n  \n{\"a\":2}", 10);
        assert_eq!(
            texts_and_lines(&chunks),
            [
                ("{\"a\":1}".to_owned(), 1, 3),
                ("{\"a\":2}".to_owned(), 3, 14)
            ]
        );
    }

    #[test]
    fn crlf_json_lines_keep_the_terminator_out_of_the_text() {
        let chunks = frame(Syntax::Lines, b"{\"a\":1}\r\n{\"a\":2}\r\n", 10);
        assert_eq!(
            texts_and_lines(&chunks),
            [
                ("{\"a\":1}".to_owned(), 1, 0),
                ("{\"a\":2}".to_owned(), 2, 9)
            ]
        );
    }

    #[test]
    fn a_record_over_the_limit_is_an_error_naming_its_line() {
        let reader = Cursor::new(b"{}\n{\"long\": \"xxxxxxxxxxxxxxxxxxxx\"}\n".to_vec());
        let mut framer = Framer::new("<test>".into(), Box::new(reader), Syntax::Lines, 8);
        let err = framer.next_chunk(10).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RecordTooLarge {
                    line: 2,
                    offset: 3,
                    ..
                }
            ),
            "{err}"
        );
    }
}
