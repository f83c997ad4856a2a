//! Would a SIMD JSON parser pay? arrow-json's decoder against simd-json's parser on the
//! same JSON Lines, in one process.
//!
//! Run with `cargo bench --bench json_decoders`. Generates (or reuses) the 100 MB orders and
//! events inputs, reads each into memory, then times, best of `AQUEDUCT_BENCH_RUNS` (default
//! 3): arrow-json decoding every line into record batches of 8192 rows, which is the whole of
//! what aqueduct's JSON decoding does; and simd-json parsing every line into its tape, which
//! is only the first half of such a decoder (Arrow arrays would still have to be built from
//! the tape). A hand-written decoder on simd-json could save at most the difference between
//! simd-json's time and arrow-json's own tape phase.

mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_seekable;

fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(work());
        best = best.min(started.elapsed().as_secs_f64());
    }
    (best, last.expect("at least one run"))
}

fn arrow_json_rows(data: &[u8]) -> usize {
    let sample = std::io::Cursor::new(&data[..data.len().min(4 << 20)]);
    let (schema, _) = infer_json_schema_from_seekable(sample, Some(10_000)).expect("valid JSON");
    let mut decoder = ReaderBuilder::new(Arc::new(schema))
        .with_batch_size(8192)
        .build_decoder()
        .expect("a decoder");
    let mut rows = 0;
    let mut rest = data;
    loop {
        let used = decoder.decode(rest).expect("valid JSON");
        rest = &rest[used..];
        if let Some(batch) = decoder.flush().expect("valid JSON") {
            rows += batch.num_rows();
        }
        if rest.is_empty() && used == 0 {
            return rows;
        }
    }
}

fn simd_json_rows(lines: &[&[u8]]) -> usize {
    let mut buffers = simd_json::Buffers::default();
    let mut line_copy = Vec::new();
    let mut rows = 0;
    for line in lines {
        // simd-json parses in place, so each line is copied first, as a decoder would.
        line_copy.clear();
        line_copy.extend_from_slice(line);
        let tape = simd_json::to_tape_with_buffers(&mut line_copy, &mut buffers).expect("JSON");
        rows += usize::from(!tape.0.is_empty());
    }
    rows
}

fn main() {
    let binary = env!("CARGO_BIN_EXE_aqueduct");
    let folder = common::data_folder().join("100MB");
    common::generate(binary, &folder, 100_000_000);
    let runs = common::runs();
    println!(
        "{:<14} {:>24} {:>24}",
        "input", "arrow-json to batches", "simd-json to its tape"
    );
    for name in ["orders.jsonl", "events.jsonl"] {
        let data = std::fs::read(folder.join(name)).expect("generated input");
        let lines: Vec<&[u8]> = data
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .collect();
        let megabytes = data.len() as f64 / 1e6;
        let (arrow_seconds, arrow_rows) = best_of(runs, || arrow_json_rows(&data));
        let (simd_seconds, simd_rows) = best_of(runs, || simd_json_rows(&lines));
        assert_eq!(arrow_rows, simd_rows, "{name}: both read every line");
        println!(
            "{name:<14} {arrow_seconds:>7.3} s {:>8.0} MB/s {simd_seconds:>7.3} s {:>8.0} MB/s",
            megabytes / arrow_seconds,
            megabytes / simd_seconds,
        );
    }
}
