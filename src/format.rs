//! File formats, stream compression and the options of the text formats.
//!
//! A path names its format by extension (`orders.csv.gz` is gzip-compressed CSV); `-` is
//! stdin or stdout and needs the format spelled out unless the other side's format fits.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A data format aqueduct reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma- (or otherwise) separated values, see [`CsvOptions`].
    Csv,
    /// One JSON object per line; nested objects are structs and arrays are lists.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC: the file format (`.arrow`, `.feather`, `.ipc`) or the stream format
    /// (`.arrows`, and always on stdout).
    Ipc,
}

impl Format {
    /// The format named by a file extension, if any.
    pub fn from_extension(extension: &str) -> Option<Format> {
        match extension.to_ascii_lowercase().as_str() {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            "arrow" | "arrows" | "ipc" | "feather" => Some(Format::Ipc),
            _ => None,
        }
    }

    /// A short lowercase name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Ipc => "arrow",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Format::from_extension(name).ok_or_else(|| {
            Error::usage(format!(
                "unknown format `{name}`: expected csv, tsv, jsonl, parquet or arrow"
            ))
        })
    }
}

/// Compression applied to a whole byte stream (not Parquet's internal compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamCompression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip; several concatenated members are read as one stream.
    Gzip,
    /// Zstandard; several concatenated frames are read as one stream.
    Zstd,
}

/// Where rows come from or go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file on the local file system.
    Path(PathBuf),
    /// Standard input (as a source) or standard output (as a destination).
    Std,
}

impl Location {
    /// `-` means stdin or stdout; anything else is a path.
    pub fn parse(text: &str) -> Location {
        if text == "-" {
            Location::Std
        } else {
            Location::Path(PathBuf::from(text))
        }
    }

    /// The path, unless this is stdin or stdout.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Path(path) => Some(path),
            Location::Std => None,
        }
    }

    /// How errors name this location when it is an input.
    pub fn input_name(&self) -> String {
        match self {
            Location::Path(path) => path.display().to_string(),
            Location::Std => "<stdin>".to_owned(),
        }
    }

    /// How errors name this location when it is an output.
    pub fn output_name(&self) -> String {
        match self {
            Location::Path(path) => path.display().to_string(),
            Location::Std => "<stdout>".to_owned(),
        }
    }

    /// The stream compression the file name asks for (`.gz`, `.zst`).
    pub fn compression(&self) -> StreamCompression {
        match self.extensions().0 {
            Some(ext) if ext.eq_ignore_ascii_case("gz") => StreamCompression::Gzip,
            Some(ext) if ext.eq_ignore_ascii_case("zst") => StreamCompression::Zstd,
            _ => StreamCompression::None,
        }
    }

    /// The data format the file name asks for, looking past a compression extension.
    pub fn format(&self) -> Option<Format> {
        let (last, inner) = self.extensions();
        match self.compression() {
            StreamCompression::None => last.and_then(Format::from_extension),
            _ => inner.and_then(Format::from_extension),
        }
    }

    /// True for a path ending in `.tsv` (or `.tsv.gz`, ...), which defaults to tab-separated.
    pub fn is_tsv(&self) -> bool {
        let (last, inner) = self.extensions();
        [last, inner]
            .into_iter()
            .flatten()
            .any(|ext| ext.eq_ignore_ascii_case("tsv"))
    }

    /// True for a path ending in `.arrows`, the Arrow IPC stream format.
    pub fn is_ipc_stream(&self) -> bool {
        let (last, inner) = self.extensions();
        [last, inner]
            .into_iter()
            .flatten()
            .any(|ext| ext.eq_ignore_ascii_case("arrows"))
    }

    /// The last and the second-to-last extension of the file name.
    fn extensions(&self) -> (Option<&str>, Option<&str>) {
        let Some(path) = self.path() else {
            return (None, None);
        };
        let last = path.extension().and_then(|ext| ext.to_str());
        let inner = path
            .file_stem()
            .map(Path::new)
            .and_then(|stem| stem.extension())
            .and_then(|ext| ext.to_str());
        (last, inner)
    }
}

impl From<&str> for Location {
    fn from(text: &str) -> Self {
        Location::parse(text)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Path(path.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Path(path)
    }
}

/// How CSV is read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The first line holds column names (on reading) or is written with them.
    pub header: bool,
    /// Field separator; `,` by default and tab for `.tsv` files.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
    /// Escape character inside quoted fields; `None` means quotes are doubled.
    pub escape: Option<u8>,
    /// Field texts read as null. Empty means only empty fields are null. The first one is
    /// also what nulls are written as.
    pub null_values: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: b',',
            quote: b'"',
            escape: None,
            null_values: Vec::new(),
        }
    }
}

impl CsvOptions {
    /// The regular expression arrow-csv matches null fields against.
    pub(crate) fn null_regex(&self) -> Result<Option<regex::Regex>> {
        if self.null_values.is_empty() {
            return Ok(None);
        }
        let alternatives: Vec<String> = self
            .null_values
            .iter()
            .map(|value| escape_regex(value))
            .collect();
        let pattern = format!("^(?:{})$", alternatives.join("|"));
        regex_from(&pattern).map(Some)
    }
}

fn regex_from(pattern: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern)
        .map_err(|err| Error::usage(format!("invalid null value pattern {pattern}: {err}")))
}

/// Escapes the characters a regular expression treats specially.
fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(ch) {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}

/// Parses a one-byte option such as `--delimiter`; `\t` and `tab` mean a tab.
pub fn parse_byte_option(name: &str, text: &str) -> Result<u8> {
    match text {
        "\\t" | "tab" => Ok(b'\t'),
        _ if text.len() == 1 => Ok(text.as_bytes()[0]),
        _ => Err(Error::usage(format!(
            "--{name} must be a single ASCII character, got `{text}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_compression_come_from_the_file_name() {
        let loc = Location::parse("orders.jsonl.gz");
        assert_eq!(loc.format(), Some(Format::Jsonl));
        assert_eq!(loc.compression(), StreamCompression::Gzip);

        let loc = Location::parse("dir.v2/orders.PARQUET");
        assert_eq!(loc.format(), Some(Format::Parquet));
        assert_eq!(loc.compression(), StreamCompression::None);

        let loc = Location::parse("x.tsv.zst");
        assert_eq!(loc.format(), Some(Format::Csv));
        assert!(loc.is_tsv());
        assert_eq!(loc.compression(), StreamCompression::Zstd);

        assert_eq!(Location::parse("-").format(), None);
    }

    #[test]
    fn null_values_are_matched_literally() {
        let options = CsvOptions {
            null_values: vec!["N/A".into(), "\\N".into()],
            ..CsvOptions::default()
        };
        let pattern = format!("^(?:{})$", escape_regex("a.b"));
        let regex = regex_from(&pattern).unwrap();
        assert!(regex.is_match("a.b"));
        assert!(!regex.is_match("axb"));
        assert!(options.null_regex().unwrap().is_some());
    }
}
