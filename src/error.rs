//! The library's one error type.
//!
//! Every variant carries enough context for a user to find the problem: the file (or `<stdin>`)
//! it came from, the SQL text that failed to plan, the option that was wrong. The binary maps
//! the variants to exit codes with [`Error::exit_code`].

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while converting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input or output could not be opened, read or written.
    #[error("{location}: {source}")]
    Io {
        /// The file path, `<stdin>` or `<stdout>`.
        location: String,
        /// The underlying operating-system error.
        #[source]
        source: io::Error,
    },

    /// A record of the input could not be decoded into the schema.
    #[error("{location}: {message}")]
    Decode {
        /// The file path or `<stdin>`.
        location: String,
        /// What the decoder reported, including the line and column where it knows them.
        message: String,
    },

    /// Compressed input is truncated or corrupt.
    #[error("{location}: the compressed input is truncated or corrupt ({format}: {detail})")]
    CorruptStream {
        /// The file path or `<stdin>`.
        location: String,
        /// `gzip` or `zstd`.
        format: &'static str,
        /// What the decompressor reported.
        detail: String,
    },

    /// A record of the input is malformed or does not fit the schema.
    #[error(
        "{location}: line {line} (byte {offset}){}: {reason}",
        describe_field(.column.as_deref(), .value.as_deref())
    )]
    BadRecord {
        /// The file path or `<stdin>`.
        location: String,
        /// 1-based line on which the record starts.
        line: u64,
        /// Byte offset of the record's start in the decompressed input.
        offset: u64,
        /// The column at fault, when known.
        column: Option<String>,
        /// The offending value, shortened, when known.
        value: Option<String>,
        /// What is wrong, what was expected and, where there is one, the fix.
        reason: String,
    },

    /// A record is longer than the largest record the source will hold.
    #[error(
        "{location}: line {line} (byte {offset}): the record is longer than {limit} bytes; \
         raise --max-record-bytes if it is meant to be (an unclosed quote can also cause this)"
    )]
    RecordTooLarge {
        /// The file path or `<stdin>`.
        location: String,
        /// 1-based line on which the record starts.
        line: u64,
        /// Byte offset of the record's start in the decompressed input.
        offset: u64,
        /// The maximum record size in bytes.
        limit: usize,
    },

    /// More records were rejected than the error limit allows.
    #[error(
        "{location}: {rejected} of {read} records rejected, more than --max-errors {limit} \
         allows; the last: {last}"
    )]
    TooManyErrors {
        /// The file path or `<stdin>`.
        location: String,
        /// Records rejected so far.
        rejected: u64,
        /// Records read so far.
        read: u64,
        /// The limit, as the user gave it.
        limit: String,
        /// The last rejected record's error.
        last: Box<Error>,
    },

    /// A batch could not be encoded into the output format.
    #[error("{location}: cannot write {format}: {message}")]
    Encode {
        /// The file path or `<stdout>`.
        location: String,
        /// The output format.
        format: &'static str,
        /// What the encoder reported.
        message: String,
    },

    /// A `--where` or `--select` expression could not be parsed or planned.
    #[error("in SQL `{sql}`: {message}")]
    Sql {
        /// The SQL text as the user gave it.
        sql: String,
        /// What the parser or planner reported.
        message: String,
    },

    /// An expression failed while it was evaluated on a batch.
    #[error("evaluating `{expr}`: {message}")]
    Evaluate {
        /// The expression, as planned.
        expr: String,
        /// What the kernel reported.
        message: String,
    },

    /// A schema could not be parsed or inferred.
    #[error("schema of {location}: {message}")]
    Schema {
        /// Where the schema came from: an input file, `--schema`, or a schema file.
        location: String,
        /// What is wrong with it.
        message: String,
    },

    /// An option or combination of options cannot work.
    #[error("{message}")]
    Usage {
        /// What is wrong and, where possible, what to do instead.
        message: String,
    },

    /// A user-supplied `map` function failed.
    #[error("map stage: {message}")]
    Map {
        /// The function's own error text.
        message: String,
    },

    /// The run was cancelled before it completed; no output was left behind.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Builds an [`Error::Io`] for `location`, or an [`Error::CorruptStream`] when the
    /// error comes from decompressing the input.
    pub fn io(location: impl Into<String>, source: io::Error) -> Self {
        let corrupt = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::source::CorruptStream>());
        if let Some(corrupt) = corrupt {
            return Error::CorruptStream {
                location: location.into(),
                format: corrupt.format,
                detail: corrupt.detail.clone(),
            };
        }
        Error::Io {
            location: location.into(),
            source,
        }
    }

    /// Builds an [`Error::Usage`].
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
        }
    }

    /// True when the error is a write to a pipe whose reader has gone away, such as
    /// `aqueduct convert big.csv - | head`. The binary treats this as a normal end.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            Error::Encode { message, .. } => message.contains("Broken pipe"),
            _ => false,
        }
    }

    /// The process exit code the binary uses for this error; the README lists them.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::Sql { .. } => 2,
            Error::Decode { .. }
            | Error::Schema { .. }
            | Error::BadRecord { .. }
            | Error::CorruptStream { .. }
            | Error::RecordTooLarge { .. } => 3,
            Error::TooManyErrors { .. } => 4,
            Error::Cancelled => 130,
            _ => 1,
        }
    }
}

/// `, column amount, value "12,5"` for a message, or nothing.
fn describe_field(column: Option<&str>, value: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(column) = column {
        text.push_str(&format!(", column {column}"));
    }
    if let Some(value) = value {
        text.push_str(&format!(", value {value}"));
    }
    text
}

/// The text a panic carried, for an error that takes its place.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
