//! Conversion throughput and peak memory of the `aqueduct` binary, at two input sizes.
//!
//! Run with `cargo bench --bench convert`. Generates flat orders (CSV and JSONL) and nested
//! events (JSONL) of about 100 MB and 1 GB under `target/bench-data` (or
//! `$AQUEDUCT_BENCH_DIR`), runs each job as a separate process under `/usr/bin/time` to read
//! its peak RSS, and prints one table: MB/s of input, peak RSS, and the speed of
//! `cat FILE > /dev/null` on the same page-cached file for scale. Each job runs
//! `AQUEDUCT_BENCH_RUNS` times (default 3), alternating with `cat`; the table shows the median
//! time and the highest peak RSS. Sizes can be chosen with `AQUEDUCT_BENCH_SIZES=100MB,1GB`.

mod common;

use std::path::Path;

use common::{generate, measure, median, parse_size};

struct Job {
    name: &'static str,
    input: &'static str,
    output: &'static str,
    extra: &'static [&'static str],
}

const JOBS: [Job; 4] = [
    Job {
        name: "CSV -> Parquet",
        input: "orders.csv",
        output: "out.parquet",
        extra: &[],
    },
    Job {
        name: "JSONL -> Parquet (flat)",
        input: "orders.jsonl",
        output: "out.parquet",
        extra: &[],
    },
    Job {
        name: "JSONL -> Parquet (nested)",
        input: "events.jsonl",
        output: "out.parquet",
        extra: &[],
    },
    Job {
        name: "CSV -> CSV, where + select",
        input: "orders.csv",
        output: "out.csv",
        extra: &[
            "--where",
            "status = 'active' AND amount > 100",
            "--select",
            "id, lower(email) AS email, amount * 1.19 AS gross, created_at",
        ],
    },
];

/// The figures of one job at one input size.
struct Row {
    job: &'static str,
    input_mb: f64,
    seconds: f64,
    peak_rss: u64,
    cat_seconds: f64,
}

/// Runs `job` on the inputs in `folder` `runs` times; keeps the median time and the highest
/// peak RSS.
fn bench_job(binary: &str, folder: &Path, job: &Job, runs: usize) -> Row {
    let input = folder.join(job.input);
    let output = folder.join(job.output);
    let input_bytes = std::fs::metadata(&input).unwrap().len();
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(job.extra);

    let mut seconds = Vec::new();
    let mut cat_seconds = Vec::new();
    let mut peak_rss = 0;
    for _ in 0..runs {
        // `cat` first also warms the page cache, so both read from memory.
        cat_seconds.push(measure("cat", &[input.to_str().unwrap()]).seconds);
        let run = measure(binary, &args);
        seconds.push(run.seconds);
        peak_rss = peak_rss.max(run.peak_rss);
    }
    let _ = std::fs::remove_file(&output);
    Row {
        job: job.name,
        input_mb: input_bytes as f64 / 1e6,
        seconds: median(&mut seconds),
        peak_rss,
        cat_seconds: median(&mut cat_seconds),
    }
}

fn print_row(row: &Row) {
    let throughput = row.input_mb / row.seconds;
    let cat_throughput = row.input_mb / row.cat_seconds;
    println!(
        "{:<28} {:>7.0}MB {:>8.2} {:>8.1} {:>9.1} MB {:>9.0} {:>9.3}",
        row.job,
        row.input_mb,
        row.seconds,
        throughput,
        row.peak_rss as f64 / 1e6,
        cat_throughput,
        throughput / cat_throughput,
    );
}

fn main() {
    let binary = env!("CARGO_BIN_EXE_aqueduct");
    let root = common::data_folder();
    let sizes: Vec<u64> = std::env::var("AQUEDUCT_BENCH_SIZES")
        .unwrap_or_else(|_| "100MB,1GB".to_owned())
        .split(',')
        .map(parse_size)
        .collect();
    let runs = common::runs();

    println!(
        "{:<28} {:>9} {:>8} {:>8} {:>12} {:>9} {:>9}",
        "job", "input", "seconds", "MB/s", "peak RSS", "cat MB/s", "of cat"
    );
    let mut rows = Vec::new();
    for size in sizes {
        let folder = root.join(format!("{}MB", size / 1_000_000));
        generate(binary, &folder, size);
        for job in &JOBS {
            let row = bench_job(binary, &folder, job, runs);
            print_row(&row);
            rows.push(row);
        }
    }

    println!("\npeak RSS at the largest input over peak RSS at the smallest:");
    for job in &JOBS {
        let of_job: Vec<&Row> = rows.iter().filter(|row| row.job == job.name).collect();
        if let (Some(first), Some(last)) = (of_job.first(), of_job.last()) {
            println!(
                "{:<28} {:>6.2}",
                job.name,
                last.peak_rss as f64 / first.peak_rss as f64
            );
        }
    }
}
