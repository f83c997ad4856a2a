//! Bad records: the error policy that decides what happens to them, and where rejected
//! records go.
//!
//! ```text
//!   source --> good rows ------------------------------------------> batch
//!          \-> bad records --> policy: fail  -> the run stops with the record's error
//!                                      skip  -> counted
//!                                      reject -> RejectSink (a JSONL file, a callback)
//!                              limit: --max-errors N | P% -> the run stops
//! ```
//!
//! Every record read is written, filtered out, rejected, or the run fails:
//! `rows_read = rows_written + rows_filtered + rows_rejected` in the summary.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest value quoted in an error message, in characters.
const VALUE_CHARS: usize = 60;

/// A record that could not be decoded, with where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The file path or `<stdin>`.
    pub location: String,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// Byte offset of the record's start in the decompressed input.
    pub offset: u64,
    /// The column at fault, when known.
    pub column: Option<String>,
    /// The offending value, shortened for display, when known.
    pub value: Option<String>,
    /// What is wrong and what was expected.
    pub reason: String,
    /// The record's bytes exactly as they were in the input, without the line terminator.
    pub record: Vec<u8>,
}

impl Rejected {
    /// The error a `fail` policy stops with.
    pub fn to_error(&self) -> Error {
        Error::BadRecord {
            location: self.location.clone(),
            line: self.line,
            offset: self.offset,
            column: self.column.clone(),
            value: self.value.clone(),
            reason: self.reason.clone(),
        }
    }

    /// One line of a rejects file: source file, line, byte offset, column, value, reason,
    /// and the raw record (as `record` when it is UTF-8, else as `record_bytes`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::json!({
            "file": self.location,
            "line": self.line,
            "offset": self.offset,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
        });
        match std::str::from_utf8(&self.record) {
            Ok(text) => object["record"] = text.into(),
            Err(_) => object["record_bytes"] = self.record.clone().into(),
        }
        object
    }
}

/// A value for a message, cut to a readable length: CSV text is quoted (`"12,5"`), JSON
/// text stays as it is (`"c"`, `[1,2]`), since its own syntax shows what it is.
pub fn shorten(value: &str, quote: bool) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(VALUE_CHARS).collect();
    let cut = if chars.next().is_some() { "..." } else { "" };
    if quote {
        format!("{head:?}{cut}")
    } else {
        format!("{head}{cut}")
    }
}

/// What happens to a record that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop at the first bad record (the default).
    #[default]
    Fail,
    /// Count bad records and go on.
    Skip,
    /// Hand bad records to the reject sink and go on.
    Reject,
}

impl std::str::FromStr for OnError {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            "reject" => Ok(OnError::Reject),
            _ => Err(Error::usage(format!(
                "unknown error policy `{text}`: expected fail, skip or reject"
            ))),
        }
    }
}

/// How many bad records a run tolerates before it stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorLimit {
    /// At most this many.
    Count(u64),
    /// At most this share of the records read (0.01 is 1%). Limitation: judged at the end of
    /// the input only, so a run over a mostly bad file goes to its end before it fails.
    Ratio(f64),
}

impl ErrorLimit {
    /// True when `rejected` of `read` records exceed the limit.
    fn exceeded(&self, rejected: u64, read: u64) -> bool {
        match *self {
            ErrorLimit::Count(count) => rejected > count,
            ErrorLimit::Ratio(ratio) => rejected as f64 > ratio * read as f64,
        }
    }
}

impl std::fmt::Display for ErrorLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorLimit::Count(count) => write!(f, "{count}"),
            ErrorLimit::Ratio(ratio) => write!(f, "{}%", ratio * 100.0),
        }
    }
}

impl std::str::FromStr for ErrorLimit {
    type Err = Error;

    /// `100` is a count, `0.5%` a share of the records read.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::usage(format!("`{text}` is not an error limit such as 100 or 1%"));
        match text.trim().strip_suffix('%') {
            Some(percent) => {
                let percent: f64 = percent.trim().parse().map_err(|_| invalid())?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(invalid());
                }
                Ok(ErrorLimit::Ratio(percent / 100.0))
            }
            None => text
                .trim()
                .parse()
                .map(ErrorLimit::Count)
                .map_err(|_| invalid()),
        }
    }
}

/// Where rejected records go.
pub trait RejectSink: Send {
    /// Takes one rejected record. An error stops the run.
    fn reject(&mut self, record: &Rejected) -> Result<()>;

    /// Called once when the run ends with its records accounted for.
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl<F> RejectSink for F
where
    F: FnMut(&Rejected) -> Result<()> + Send,
{
    fn reject(&mut self, record: &Rejected) -> Result<()> {
        self(record)
    }
}

/// Rejected records as JSON Lines in a file, which appears only when the run ends with its
/// records accounted for (it succeeded, or stopped at the error limit).
pub struct RejectsFile {
    name: String,
    target: PathBuf,
    writer: BufWriter<tempfile::NamedTempFile>,
}

impl RejectsFile {
    /// Creates the temporary file beside `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let temp = crate::sink::temp_file_beside(path).map_err(|err| Error::io(&name, err))?;
        Ok(RejectsFile {
            name,
            target: path.to_path_buf(),
            writer: BufWriter::new(temp),
        })
    }
}

impl RejectSink for RejectsFile {
    fn reject(&mut self, record: &Rejected) -> Result<()> {
        let line = record.to_json().to_string();
        writeln!(self.writer, "{line}").map_err(|err| Error::io(&self.name, err))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let name = self.name;
        let temp = self
            .writer
            .into_inner()
            .map_err(|err| Error::io(&name, err.into_error()))?;
        temp.persist(&self.target)
            .map_err(|err| Error::io(&name, err.error))?;
        Ok(())
    }
}

/// The policy at work during a run: counts bad records and sends them where they go.
pub(crate) struct Policy {
    location: String,
    on_error: OnError,
    limit: Option<ErrorLimit>,
    sink: Option<Box<dyn RejectSink>>,
    rejected: u64,
    last: Option<Rejected>,
}

impl Policy {
    pub(crate) fn new(
        location: String,
        on_error: OnError,
        limit: Option<ErrorLimit>,
        sink: Option<Box<dyn RejectSink>>,
    ) -> Result<Self> {
        if on_error == OnError::Reject && sink.is_none() {
            return Err(Error::usage(
                "the reject policy needs somewhere to put records: give --rejects PATH",
            ));
        }
        Ok(Policy {
            location,
            on_error,
            limit,
            sink,
            rejected: 0,
            last: None,
        })
    }

    /// Applies the policy to the bad records of one batch; `read` counts every record read
    /// so far, these included.
    pub(crate) fn handle(&mut self, bad: Vec<Rejected>, read: u64) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        let count_limit = match self.limit {
            Some(ErrorLimit::Count(count)) => Some(count),
            _ => None,
        };
        tracing::debug!(
            rejected = bad.len(),
            first_line = bad[0].line,
            "records rejected"
        );
        for record in bad {
            self.rejected += 1;
            match self.on_error {
                OnError::Fail => return Err(record.to_error()),
                OnError::Skip => {}
                OnError::Reject => {
                    if let Some(sink) = self.sink.as_mut() {
                        sink.reject(&record)?;
                    }
                }
            }
            self.last = Some(record);
            // A ratio is judged on the whole input, so only a count stops the run midway,
            // at the first record past it.
            if count_limit.is_some_and(|count| self.rejected > count) {
                return self.check_limit(read);
            }
        }
        Ok(())
    }

    /// Checks the limit against `read` records; at the end of the input, for any limit.
    pub(crate) fn check_limit(&self, read: u64) -> Result<()> {
        match (self.limit, &self.last) {
            (Some(limit), Some(last)) if limit.exceeded(self.rejected, read) => {
                Err(Error::TooManyErrors {
                    location: self.location.clone(),
                    rejected: self.rejected,
                    read,
                    limit: limit.to_string(),
                    last: Box::new(last.to_error()),
                })
            }
            _ => Ok(()),
        }
    }

    /// Finishes the reject sink.
    pub(crate) fn finish(self) -> Result<()> {
        match self.sink {
            Some(sink) => sink.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(line: u64) -> Rejected {
        Rejected {
            location: "in.csv".into(),
            line,
            offset: line * 10,
            column: Some("amount".into()),
            value: Some("\"x\"".into()),
            reason: "cannot read as Float64".into(),
            record: b"1,x".to_vec(),
        }
    }

    #[test]
    fn limits_parse_as_counts_and_percentages() {
        assert_eq!("100".parse::<ErrorLimit>().unwrap(), ErrorLimit::Count(100));
        assert_eq!(
            "2.5%".parse::<ErrorLimit>().unwrap(),
            ErrorLimit::Ratio(0.025)
        );
        assert!("much".parse::<ErrorLimit>().is_err());
        assert!("120%".parse::<ErrorLimit>().is_err());
    }

    #[test]
    fn count_limit_stops_after_the_count() {
        let mut policy = Policy::new(
            "in.csv".into(),
            OnError::Skip,
            Some(ErrorLimit::Count(2)),
            None,
        )
        .unwrap();
        policy.handle(vec![bad(1), bad(2)], 10).unwrap();
        let err = policy.handle(vec![bad(3)], 20).unwrap_err();
        assert!(
            matches!(err, Error::TooManyErrors { rejected: 3, .. }),
            "{err}"
        );
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn fail_names_the_record() {
        let mut policy = Policy::new("in.csv".into(), OnError::Fail, None, None).unwrap();
        let err = policy.handle(vec![bad(7)], 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "in.csv: line 7 (byte 70), column amount, value \"x\": cannot read as Float64"
        );
    }

    #[test]
    fn rejected_json_keeps_the_raw_record() {
        let mut record = bad(3);
        assert_eq!(record.to_json()["record"], "1,x");
        record.record = vec![b'a', 0xff];
        assert_eq!(
            record.to_json()["record_bytes"],
            serde_json::json!([97, 255])
        );
    }
}
