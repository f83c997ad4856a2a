//! Conversion throughput and peak memory of the `aqueduct` binary, at two input sizes.
//!
//! Run with `cargo bench --bench convert`. Generates flat orders (CSV and JSONL) and nested
//! events (JSONL) of about 100 MB and 1 GB under `target/bench-data` (or
//! `$AQUEDUCT_BENCH_DIR`), runs each job as a separate process under `/usr/bin/time` to read
//! its peak RSS, and prints one table: MB/s of input, peak RSS, and the speed of
//! `cat FILE > /dev/null` on the same page-cached file for scale. Each job runs
//! `AQUEDUCT_BENCH_RUNS` times (default 3), alternating with `cat`; the table shows the median
//! time and the highest peak RSS. Sizes can be chosen with `AQUEDUCT_BENCH_SIZES=100MB,1GB`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

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

/// Wall seconds and peak resident set in bytes of one command.
struct Measured {
    seconds: f64,
    peak_rss: u64,
}

fn measure(program: &str, args: &[&str]) -> Measured {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("/usr/bin/time runs (apt-get install time)");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stderr}"
    );
    let kilobytes: u64 = stderr
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("time prints the peak RSS in KiB");
    Measured {
        seconds,
        peak_rss: kilobytes * 1024,
    }
}

fn parse_size(text: &str) -> u64 {
    let text = text.trim().to_ascii_uppercase();
    let (number, scale) = if let Some(number) = text.strip_suffix("GB") {
        (number, 1_000_000_000)
    } else if let Some(number) = text.strip_suffix("MB") {
        (number, 1_000_000)
    } else {
        (text.as_str(), 1)
    };
    number.parse::<u64>().expect("a size such as 100MB") * scale
}

fn generate(binary: &str, folder: &Path, size: u64) {
    std::fs::create_dir_all(folder).unwrap();
    for (dataset, file) in [
        ("orders", "orders.csv"),
        ("orders", "orders.jsonl"),
        ("events", "events.jsonl"),
    ] {
        let path = folder.join(file);
        if std::fs::metadata(&path).is_ok_and(|meta| meta.len() >= size) {
            continue;
        }
        let status = Command::new(binary)
            .args(["generate", dataset, path.to_str().unwrap(), "--size"])
            .arg(size.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let root = std::env::var_os("AQUEDUCT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    let sizes: Vec<u64> = std::env::var("AQUEDUCT_BENCH_SIZES")
        .unwrap_or_else(|_| "100MB,1GB".to_owned())
        .split(',')
        .map(parse_size)
        .collect();
    let runs: usize = std::env::var("AQUEDUCT_BENCH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3)
        .max(1);

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
