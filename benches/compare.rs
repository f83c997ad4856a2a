//! aqueduct against its peers (DuckDB, Polars, pyarrow, DataFusion's Python bindings) on the
//! same jobs, inputs and machine, in one run.
//!
//! Run with `cargo bench --bench compare`. Installs the peers with `benches/peers/setup.sh`,
//! generates flat orders (CSV, JSONL, and Parquet made from the CSV) and nested events
//! (JSONL) of about `AQUEDUCT_COMPARE_SIZE` (default `1GB`), then runs every tool on every
//! job `AQUEDUCT_BENCH_RUNS` times (default 3), rotating the order of the tools from one
//! round to the next, each as its own process under `/usr/bin/time`; aqueduct runs with its
//! defaults (every core) and, as `aqueduct-t1`, with `--threads 1`. Prints, per job, each tool's
//! median time, MB/s of input and highest peak RSS, and the ratios of aqueduct's default
//! run to the best peer's throughput and lowest peak RSS. Every output's row count is
//! checked against aqueduct's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{generate, measure, median, parse_size};

const PEERS: [&str; 4] = ["duckdb", "polars", "pyarrow", "datafusion"];

struct Job {
    name: &'static str,
    /// The job's name for `benches/peers/run.py`.
    peer_job: &'static str,
    input: &'static str,
    output: &'static str,
    /// aqueduct's flags beyond `convert IN OUT --quiet`.
    flags: &'static [&'static str],
}

const JOBS: [Job; 5] = [
    Job {
        name: "CSV -> Parquet",
        peer_job: "to-parquet",
        input: "orders.csv",
        output: "out.parquet",
        flags: &[],
    },
    Job {
        name: "JSONL -> Parquet (flat)",
        peer_job: "to-parquet",
        input: "orders.jsonl",
        output: "out.parquet",
        flags: &[],
    },
    Job {
        name: "JSONL -> Parquet (nested)",
        peer_job: "to-parquet",
        input: "events.jsonl",
        output: "out.parquet",
        flags: &[],
    },
    Job {
        name: "CSV -> CSV, where + select",
        peer_job: "filter-csv",
        input: "orders.csv",
        output: "out.csv",
        flags: &[
            "--where",
            "status = 'active' AND amount > 100",
            "--select",
            "id, lower(email) AS email, amount * 1.19 AS gross, created_at",
        ],
    },
    Job {
        name: "Parquet -> CSV",
        peer_job: "to-csv",
        input: "orders.parquet",
        output: "out.csv",
        flags: &[],
    },
];

/// One tool's figures on one job.
struct Figures {
    tool: &'static str,
    seconds: f64,
    peak_rss: u64,
}

/// The command line that runs `tool` on `job`.
fn command(tool: &'static str, job: &Job, folder: &Path, python: &str) -> Vec<String> {
    let input = folder.join(job.input).display().to_string();
    let output = folder.join(job.output).display().to_string();
    if tool.starts_with("aqueduct") {
        let mut args = vec![
            env!("CARGO_BIN_EXE_aqueduct").to_owned(),
            "convert".to_owned(),
            input,
            output,
            "--quiet".to_owned(),
        ];
        args.extend(job.flags.iter().map(|flag| (*flag).to_owned()));
        if tool == "aqueduct-t1" {
            args.extend(["--threads".to_owned(), "1".to_owned()]);
        }
        return args;
    }
    vec![
        python.to_owned(),
        peers_script(),
        tool.to_owned(),
        job.peer_job.to_owned(),
        input,
        output,
    ]
}

fn peers_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peers/run.py")
        .display()
        .to_string()
}

fn run(command: &[String]) -> common::Measured {
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    measure(&command[0], &args)
}

fn count_rows(python: &str, path: &Path) -> u64 {
    let output = Command::new(python)
        .arg(peers_script())
        .arg("count")
        .arg(path)
        .output()
        .expect("the peers' Python runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("cannot count the rows of {}", path.display()))
}

/// Runs every tool on `job` `runs` times and checks their row counts against aqueduct's.
fn bench_job(job: &Job, folder: &Path, python: &str, runs: usize) -> Vec<Figures> {
    let tools: Vec<&'static str> = ["aqueduct", "aqueduct-t1"]
        .into_iter()
        .chain(PEERS)
        .collect();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut peak_rss = vec![0; tools.len()];
    let mut rows = vec![None; tools.len()];
    for round in 0..runs {
        for turn in 0..tools.len() {
            let index = (turn + round) % tools.len();
            let measured = run(&command(tools[index], job, folder, python));
            seconds[index].push(measured.seconds);
            peak_rss[index] = peak_rss[index].max(measured.peak_rss);
            let output = folder.join(job.output);
            if rows[index].is_none() {
                rows[index] = Some(count_rows(python, &output));
            }
            let _ = std::fs::remove_file(output);
        }
    }
    for (tool, count) in tools.iter().zip(&rows) {
        assert_eq!(
            *count, rows[0],
            "{}: {tool} wrote {count:?} rows, aqueduct {:?}",
            job.name, rows[0]
        );
    }
    tools
        .iter()
        .zip(seconds.iter_mut())
        .zip(peak_rss)
        .map(|((tool, times), peak_rss)| Figures {
            tool,
            seconds: median(times),
            peak_rss,
        })
        .collect()
}

fn print_job(job: &Job, input_mb: f64, figures: &[Figures]) {
    println!("\n{} ({input_mb:.0} MB)", job.name);
    println!(
        "  {:<12} {:>9} {:>9} {:>12}",
        "tool", "seconds", "MB/s", "peak RSS"
    );
    for row in figures {
        println!(
            "  {:<12} {:>9.2} {:>9.1} {:>9.1} MB",
            row.tool,
            row.seconds,
            input_mb / row.seconds,
            row.peak_rss as f64 / 1e6
        );
    }
    let ours = &figures[0];
    let peers = &figures[2..];
    let fastest = peers
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("there are peers");
    let leanest = peers
        .iter()
        .min_by_key(|row| row.peak_rss)
        .expect("there are peers");
    let speed = fastest.seconds / ours.seconds;
    let memory = ours.peak_rss as f64 / leanest.peak_rss as f64;
    println!(
        "  aqueduct: {speed:.2}x the throughput of {} (target 1.5x: {}), {memory:.2}x the \
         peak RSS of {} (target 0.33x: {})",
        fastest.tool,
        if speed >= 1.5 { "met" } else { "not met" },
        leanest.tool,
        if memory <= 1.0 / 3.0 {
            "met"
        } else {
            "not met"
        },
    );
}

fn peers_python() -> String {
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/setup.sh");
    let output = Command::new("bash")
        .arg(setup)
        .output()
        .expect("bash runs the peers' setup");
    assert!(
        output.status.success(),
        "installing the peers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn main() {
    let binary = env!("CARGO_BIN_EXE_aqueduct");
    let size =
        parse_size(&std::env::var("AQUEDUCT_COMPARE_SIZE").unwrap_or_else(|_| "1GB".to_owned()));
    let runs = common::runs();
    let python = peers_python();
    let folder: PathBuf = common::data_folder().join(format!("{}MB", size / 1_000_000));
    generate(binary, &folder, size);
    let parquet = folder.join("orders.parquet");
    if !parquet.exists() {
        let csv = folder.join("orders.csv");
        let status = Command::new(binary)
            .args([
                "convert",
                csv.to_str().unwrap(),
                parquet.to_str().unwrap(),
                "-q",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }

    for job in &JOBS {
        let input_mb = std::fs::metadata(folder.join(job.input)).unwrap().len() as f64 / 1e6;
        let figures = bench_job(job, &folder, &python, runs);
        print_job(job, input_mb, &figures);
    }
}
