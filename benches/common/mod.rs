//! Helpers the benchmark binaries share: timing a command with its peak RSS, generating the
//! inputs, medians and sizes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where generated inputs are kept between runs: `$AQUEDUCT_BENCH_DIR`, or
/// `target/bench-data` in the repository.
pub fn data_folder() -> PathBuf {
    std::env::var_os("AQUEDUCT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"))
}

/// Wall seconds and peak resident set in bytes of one command.
pub struct Measured {
    /// Wall time.
    pub seconds: f64,
    /// Peak resident set, in bytes.
    pub peak_rss: u64,
}

/// Runs `program` under `/usr/bin/time`; panics when it fails.
pub fn measure(program: &str, args: &[&str]) -> Measured {
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

/// Runs per measurement: `$AQUEDUCT_BENCH_RUNS`, at least one, 3 unless set.
pub fn runs() -> usize {
    std::env::var("AQUEDUCT_BENCH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// `100MB`, `1GB` or a plain byte count.
pub fn parse_size(text: &str) -> u64 {
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

/// Generates orders (CSV, JSONL) and events (JSONL) of `size` bytes into `folder`, unless
/// they are there already.
pub fn generate(binary: &str, folder: &Path, size: u64) {
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

/// The median of `values` (the upper one of an even count).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
