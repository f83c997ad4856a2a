//! The `aqueduct` command: argument parsing, progress display, signals and exit codes over
//! the library.
//!
//! Exit codes: 0 success (also when a stdout reader closes the pipe early), 1 an I/O or
//! other runtime failure, 2 invalid arguments or SQL, 3 input that cannot be decoded or whose
//! schema cannot be read, 4 more bad records than `--max-errors` allows, 130 interrupted by
//! SIGINT, 143 terminated by SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context;
use aqueduct::format::parse_byte_option;
use aqueduct::generate::{Dataset, GenerateLimit, TextFormat};
use aqueduct::{
    Convert, CsvOptions, ErrorLimit, Format, Location, OnError, ParquetCompression, Progress,
    SourceOptions,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Streaming conversion between CSV, JSON Lines, Parquet and Arrow IPC, with SQL filters and
/// projections, in bounded memory.
#[derive(Parser, Debug)]
#[command(name = "aqueduct", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert IN to OUT, optionally filtering rows and computing columns.
    Convert(Box<ConvertArgs>),
    /// Print the schema aqueduct reads from IN.
    Schema(InputArgs),
    /// Print the first rows of IN as a table.
    Head {
        #[command(flatten)]
        input: InputArgs,
        /// Number of rows.
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
    },
    /// Write a deterministic sample dataset of any size (CSV or JSONL by OUT's extension).
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
struct InputArgs {
    /// Input file, or `-` for stdin. `.gz` and `.zst` are decompressed.
    input: String,
    /// Input format, when the file name does not tell.
    #[arg(long)]
    from: Option<String>,
    /// Input schema as a SQL column list (`id BIGINT, email VARCHAR`), or `@FILE` holding one.
    #[arg(long)]
    schema: Option<String>,
    /// Records sampled to infer the schema, or `all` for a full pass over a file first.
    #[arg(long, default_value_t = aqueduct::source::DEFAULT_INFER_ROWS.to_string())]
    infer_rows: String,
    /// Widen inferred types so later values fit: `float` (integers) or `text` (all scalars).
    #[arg(long, default_value = "none")]
    widen: String,
    /// The longest record a text input may hold (`64MiB`).
    #[arg(long, default_value = "64MiB")]
    max_record_bytes: String,
    /// Drop JSON keys that are not in the schema instead of rejecting their records.
    #[arg(long)]
    ignore_unknown_keys: bool,
    /// Replace invalid UTF-8 in text input with U+FFFD instead of rejecting the record.
    #[arg(long)]
    lossy_utf8: bool,
    #[command(flatten)]
    csv: CsvArgs,
}

#[derive(Args, Debug)]
struct CsvArgs {
    /// CSV input (and output) has no header line.
    #[arg(long)]
    no_header: bool,
    /// CSV field delimiter (`\t` or `tab` for tabs). Default `,`; tab for `.tsv`.
    #[arg(long)]
    delimiter: Option<String>,
    /// CSV quote character.
    #[arg(long, default_value = "\"")]
    quote: String,
    /// CSV escape character inside quotes (default: quotes are doubled).
    #[arg(long)]
    escape: Option<String>,
    /// A CSV field text that means null; repeat for several. The first is written for nulls.
    #[arg(long = "null-value")]
    null_values: Vec<String>,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output file, or `-` for stdout. Written atomically: it appears only when complete.
    output: String,
    /// Output format, when the file name does not tell.
    #[arg(long)]
    to: Option<String>,
    /// Keep only rows where this SQL predicate is true.
    #[arg(long = "where", value_name = "SQL")]
    filter: Option<String>,
    /// Output columns as a SQL select list: `id, lower(email) AS email, amount * 1.19 AS gross`.
    #[arg(long, value_name = "SQL")]
    select: Option<String>,
    /// Rows per batch.
    #[arg(long, default_value_t = aqueduct::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Threads for decoding and encoding [default: all cores]. Parquet output gives half of
    /// them to encoding columns; the output is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
    /// Parquet compression: zstd, snappy, gzip or none.
    #[arg(long, default_value = "snappy")]
    compression: String,
    /// Most rows in one Parquet row group.
    #[arg(long, default_value_t = aqueduct::sink::DEFAULT_ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// Most encoded bytes buffered for one Parquet row group (`16MiB`, `512k`, `1000000`).
    #[arg(long, default_value = "16MiB")]
    row_group_bytes: String,
    /// What to do with a record that cannot be decoded: fail (default) or skip.
    #[arg(long, value_name = "POLICY")]
    on_error: Option<String>,
    /// Write records that cannot be decoded to this JSONL file, and go on past them.
    #[arg(long, value_name = "PATH")]
    rejects: Option<String>,
    /// Go on past bad records, but stop once more are bad than this: a count (`100`) or a
    /// share of the records read (`0.5%`, judged at the end).
    #[arg(long, value_name = "LIMIT")]
    max_errors: Option<String>,
    /// Write the summary as JSON to this file when the run succeeds.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<String>,
    /// No progress bar and no summary.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum DatasetArg {
    /// Flat orders.
    Orders,
    /// Nested events (JSONL only).
    Events,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Which dataset.
    dataset: DatasetArg,
    /// Output file (`.csv` or `.jsonl`), or `-` for stdout.
    output: String,
    /// Number of rows.
    #[arg(long)]
    rows: Option<u64>,
    /// Approximate size (`100MB`, `1GiB`); stops at the first row past it.
    #[arg(long)]
    size: Option<String>,
    /// Seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Format for stdout: csv or jsonl.
    #[arg(long)]
    to: Option<String>,
}

/// `mi_option_purge_delay` in the `mimalloc.h` of mimalloc 3, the version libmimalloc-sys
/// builds; its Rust bindings name only mimalloc 2's options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc hand freed pages back to the system after 100 ms instead of its default of
/// one second. Parquet row groups and batches are freed on one thread and allocated on
/// another; with the long delay, peak RSS grew by half from a 100 MB to a 1 GB input, with
/// 100 ms it stays within a tenth at no measurable cost in speed (a delay of 0 costs about a
/// fifth of the throughput). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[expect(
    unsafe_code,
    reason = "mimalloc's options are set through its C interface"
)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: a plain store into mimalloc's option table, made before any other thread
    // exists; the option takes effect at the next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
}

/// Turns transparent huge pages off for this process, where the system would otherwise
/// give them to any mapping that asks (mimalloc's arenas do).
///
/// Each of a run's threads allocates from pages of its own; with huge pages, each of them
/// touched a whole 2 MiB page at a time. Measured on the machine of benches/README.md, with
/// the system's setting `madvise`, turning them off took 18 MB off a tiny run's peak RSS
/// (43 to 25 MB) and 25 to 50 MB off 1 GB runs (CSV to CSV: 122 to 75 MB), with no loss of
/// speed.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "prctl is a C interface; the call takes plain integers"
)]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory of this
    // process; a failure (an old kernel) leaves the system's setting in place.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

fn main() -> ExitCode {
    no_huge_pages();
    tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aqueduct: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Blocking threads still inside a read of stdin must not hold the process open.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => report(&err),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    let library_error = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<aqueduct::Error>());
    if library_error.is_some_and(aqueduct::Error::is_broken_pipe) {
        return ExitCode::SUCCESS;
    }
    // Library errors carry their cause in their own message; print each cause once.
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    eprintln!("aqueduct: error: {message}");
    let code = library_error.map_or(1, aqueduct::Error::exit_code);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Convert(args) => convert(*args).await,
        Command::Schema(args) => {
            let (location, options) = source_options(&args, aqueduct::DEFAULT_BATCH_SIZE)?;
            let batch = blocking(move || aqueduct::head(&location, &options, 1)).await?;
            let mut out = std::io::stdout().lock();
            for field in batch.schema().fields() {
                let nullable = if field.is_nullable() { "" } else { " NOT NULL" };
                writeln!(out, "{}: {}{nullable}", field.name(), field.data_type())?;
            }
            Ok(0)
        }
        Command::Head { input, rows } => {
            let (location, options) = source_options(&input, rows)?;
            let batch = blocking(move || aqueduct::head(&location, &options, rows)).await?;
            let table = arrow::util::pretty::pretty_format_batches(&[batch])?;
            writeln!(std::io::stdout().lock(), "{table}")?;
            Ok(0)
        }
        Command::Generate(args) => generate(args).await,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> aqueduct::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

fn csv_options(args: &CsvArgs) -> anyhow::Result<CsvOptions> {
    let mut csv = CsvOptions {
        header: !args.no_header,
        quote: parse_byte_option("quote", &args.quote)?,
        null_values: args.null_values.clone(),
        ..CsvOptions::default()
    };
    if let Some(delimiter) = &args.delimiter {
        csv.delimiter = parse_byte_option("delimiter", delimiter)?;
    }
    if let Some(escape) = &args.escape {
        csv.escape = Some(parse_byte_option("escape", escape)?);
    }
    Ok(csv)
}

/// `--infer-rows`: a count, or `all`.
fn infer_rows(text: &str) -> anyhow::Result<usize> {
    if text == "all" {
        return Ok(aqueduct::infer::INFER_ALL_ROWS);
    }
    let rows: usize = text.parse().map_err(|_| {
        aqueduct::Error::usage(format!("--infer-rows takes a count or `all`, not `{text}`"))
    })?;
    Ok(rows.max(1))
}

fn schema_text(spec: &str) -> anyhow::Result<String> {
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the schema file {path}")),
        None => Ok(spec.to_owned()),
    }
}

fn source_options(
    args: &InputArgs,
    batch_size: usize,
) -> anyhow::Result<(Location, SourceOptions)> {
    let mut options = SourceOptions {
        csv: csv_options(&args.csv)?,
        infer_rows: infer_rows(&args.infer_rows)?,
        widen: args.widen.parse()?,
        batch_size: batch_size.max(1),
        max_record_bytes: parse_size(&args.max_record_bytes)? as usize,
        ignore_unknown_keys: args.ignore_unknown_keys,
        lossy_utf8: args.lossy_utf8,
        ..SourceOptions::default()
    };
    if let Some(from) = &args.from {
        options.format = Some(from.parse::<Format>()?);
    }
    if let Some(spec) = &args.schema {
        options.schema = Some(aqueduct::sql::parse_schema(
            "--schema",
            &schema_text(spec)?,
        )?);
    }
    Ok((Location::parse(&args.input), options))
}

async fn convert(args: ConvertArgs) -> anyhow::Result<u8> {
    let csv = csv_options(&args.input.csv)?;
    let mut job = Convert::new(
        Location::parse(&args.input.input),
        Location::parse(&args.output),
    )
    .input_csv(csv.clone())
    .output_csv(csv)
    .infer_rows(infer_rows(&args.input.infer_rows)?)
    .widen(args.input.widen.parse()?)
    .batch_size(args.batch_size)
    .threads(
        args.threads
            .unwrap_or_else(aqueduct::pipeline::default_threads),
    )
    .parquet_compression(args.compression.parse::<ParquetCompression>()?)
    .row_group_rows(args.row_group_rows)
    .row_group_bytes(parse_size(&args.row_group_bytes)? as usize)
    .max_record_bytes(parse_size(&args.input.max_record_bytes)? as usize)
    .ignore_unknown_keys(args.input.ignore_unknown_keys)
    .lossy_utf8(args.input.lossy_utf8);
    job = error_policy(job, &args)?;
    if let Some(from) = &args.input.from {
        job = job.input_format(from.parse()?);
    }
    if let Some(to) = &args.to {
        job = job.output_format(to.parse()?);
    }
    if let Some(spec) = &args.input.schema {
        job = job.schema_sql(schema_text(spec)?);
    }
    if let Some(predicate) = args.filter {
        job = job.filter(predicate);
    }
    if let Some(select) = args.select {
        job = job.select(select);
    }

    let cancel = CancellationToken::new();
    job = job.cancel_token(cancel.clone());
    let progress = job.progress();
    let progress_bar = (!args.quiet && std::io::stderr().is_terminal())
        .then(|| spawn_progress_bar(job.progress()));
    let signal_code = Arc::new(AtomicU8::new(0));
    let signal = tokio::spawn(wait_for_signal(cancel.clone(), Arc::clone(&signal_code)));

    let result = job.run().await;
    if let Some((bar, task)) = progress_bar {
        task.abort();
        bar.finish_and_clear();
    }
    match result {
        Ok(summary) => {
            signal.abort();
            if !args.quiet {
                eprintln!("aqueduct: {summary}");
            }
            if let Some(path) = &args.stats_json {
                let text = format!("{:#}\n", summary.to_json());
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write the stats file {path}"))?;
            }
            Ok(0)
        }
        Err(aqueduct::Error::Cancelled) => {
            // Only the signal task cancels the run, and it records its code first.
            let code = match signal_code.load(Ordering::Acquire) {
                0 => 130,
                code => code,
            };
            eprintln!(
                "aqueduct: interrupted after {} rows read, {} written; no output was left",
                progress.rows_read(),
                progress.rows_written()
            );
            Ok(code)
        }
        Err(err) => {
            signal.abort();
            Err(err.into())
        }
    }
}

/// Applies `--on-error`, `--rejects` and `--max-errors`.
fn error_policy(mut job: Convert, args: &ConvertArgs) -> anyhow::Result<Convert> {
    let on_error = args
        .on_error
        .as_deref()
        .map(str::parse::<OnError>)
        .transpose()?;
    match (on_error, &args.rejects) {
        (Some(OnError::Fail), Some(_)) => anyhow::bail!(aqueduct::Error::usage(
            "--rejects goes on past bad records, --on-error fail stops at the first: pick one"
        )),
        (_, Some(path)) => job = job.rejects_to(path),
        (Some(OnError::Reject), None) => anyhow::bail!(aqueduct::Error::usage(
            "--on-error reject needs --rejects PATH"
        )),
        (Some(policy), None) => job = job.on_error(policy),
        // A limit on bad records means going on past them until it is reached.
        (None, None) if args.max_errors.is_some() => job = job.on_error(OnError::Skip),
        (None, None) => {}
    }
    if let Some(limit) = &args.max_errors {
        job = job.max_errors(limit.parse::<ErrorLimit>()?);
    }
    Ok(job)
}

/// Cancels the run on SIGINT or SIGTERM, after storing the signal's exit code in `code`.
async fn wait_for_signal(cancel: CancellationToken, code: Arc<AtomicU8>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let exit_code = tokio::select! {
        Some(()) = async { interrupt.as_mut()?.recv().await } => 130,
        Some(()) = async { terminate.as_mut()?.recv().await } => 143,
    };
    code.store(exit_code, Ordering::Release);
    cancel.cancel();
}

fn spawn_progress_bar(progress: Arc<Progress>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let total = progress.input_bytes();
    let bar = ProgressBar::with_draw_target(
        (total > 0).then_some(total),
        ProgressDrawTarget::stderr_with_hz(10),
    );
    let template = if total > 0 {
        concat!(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ",
            "{bytes_per_sec} eta {eta} {msg}"
        )
    } else {
        "{spinner} [{elapsed_precise}] {bytes} {bytes_per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let updated = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            if updated.length().is_none() && progress.input_bytes() > 0 {
                updated.set_length(progress.input_bytes());
            }
            updated.set_position(progress.bytes_read());
            let rejected = match progress.rows_rejected() {
                0 => String::new(),
                count => format!(", {count} rejected"),
            };
            updated.set_message(format!("{} rows{rejected}", progress.rows_read()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (bar, task)
}

/// Parses a byte size: a number with an optional unit (k, KB, KiB, MB, MiB, GB, GiB).
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|ch: char| !ch.is_ascii_digit() && ch != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a size such as 64MiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => anyhow::bail!("unknown size unit `{other}` in `{text}`"),
    };
    Ok((number * scale) as u64)
}

async fn generate(args: GenerateArgs) -> anyhow::Result<u8> {
    let dataset = match args.dataset {
        DatasetArg::Orders => Dataset::Orders,
        DatasetArg::Events => Dataset::Events,
    };
    let location = Location::parse(&args.output);
    let format = match args.to.as_deref().map(str::parse::<Format>).transpose()? {
        Some(format) => format,
        None => location.format().unwrap_or(Format::Jsonl),
    };
    let format = match format {
        Format::Csv => TextFormat::Csv,
        Format::Jsonl => TextFormat::Jsonl,
        other => anyhow::bail!("generate writes csv or jsonl, not {other}"),
    };
    let limit = GenerateLimit {
        rows: args.rows,
        bytes: args.size.as_deref().map(parse_size).transpose()?,
    };
    if limit.rows.is_none() && limit.bytes.is_none() {
        anyhow::bail!("give --rows or --size");
    }
    let seed = args.seed;
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut out: Box<dyn Write> = match location.path() {
            Some(path) => Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        Ok(aqueduct::generate::generate(
            dataset, format, limit, seed, &mut out,
        )?)
    })
    .await??;
    eprintln!("aqueduct: generated {rows} rows");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(unsafe_code, reason = "reads an option through mimalloc's C interface")]
    fn purge_delay_option_is_the_one_tuned() {
        // mimalloc 3 gives the purge delay, alone among its options, a default of 1000 ms:
        // a shift of the option numbering in a new version would show here.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads mimalloc's option table.
            let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(delay, 1000);
        }
    }
}
