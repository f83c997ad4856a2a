//! The export service of `examples/export_service.rs`, driven over HTTP by a real client:
//! all three formats, first bytes before the end of the source, a client that goes away,
//! and memory under concurrent downloads against the collect-then-write version.

#[path = "../examples/export_service.rs"]
#[allow(dead_code)]
mod export_service;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aqueduct::arrow::array::{Array, UInt64Array};
use export_service::{Exports, app};
use futures::StreamExt;

/// Counts the bytes allocated and their high-water mark, for the memory tests.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one forwards to the system's"
)]
// SAFETY: every call forwards to the system allocator with the caller's layout; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Memory measurements must not overlap with other tests of this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves the app on a free port; returns its base URL and state.
async fn serve() -> (String, Exports) {
    let exports = Exports::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = app(exports.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), exports)
}

async fn get(url: &str) -> reqwest::Response {
    let response = reqwest::get(url).await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response
}

/// Ids of the generated orders the query `amount > 4000` keeps, out of `rows`.
fn expected_ids(rows: u64) -> Vec<u64> {
    (0..rows)
        .filter(|id| (id.wrapping_mul(104_729) % 500_000) as f64 / 100.0 > 4000.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_streams_the_filtered_export() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let (base, _) = serve().await;
    let query = "rows=50000&where=amount%20%3E%204000&select=id,status,amount";
    let expected = expected_ids(50_000);

    let response = get(&format!("{base}/export?format=csv&{query}")).await;
    assert_eq!(response.headers()["content-type"], "text/csv");
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,status,amount"));
    let ids: Vec<u64> = lines
        .map(|line| line.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, expected);

    let jsonl = get(&format!("{base}/export?format=jsonl&{query}"))
        .await
        .text()
        .await
        .unwrap();
    let ids: Vec<u64> = jsonl
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value["amount"].as_f64().unwrap() > 4000.0, "{line}");
            value["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, expected);

    let parquet = get(&format!("{base}/export?format=parquet&{query}"))
        .await
        .bytes()
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet)
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.num_columns(), 3);
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        ids.extend(column.values().iter().copied());
    }
    assert_eq!(ids, expected);

    let bad = reqwest::get(format!("{base}/export?where=nonsense%20%3E%201"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("nonsense"));
}

/// Waits until `counter` stops moving and returns its value.
async fn settled(counter: &std::sync::atomic::AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_bytes_leave_early_and_a_client_that_goes_stops_the_export() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let (base, exports) = serve().await;
    let rows = 100_000_000;
    let response = get(&format!("{base}/export?format=csv&rows={rows}")).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"id,customer_id,status,amount,created_at\n"));
    let generated = exports.rows_generated.load(Ordering::SeqCst);
    assert!(
        generated < 1_000_000,
        "{generated} rows generated before the first bytes"
    );

    // The client reads no more: the generator waits for it.
    let waiting = settled(&exports.rows_generated).await;
    assert!(
        waiting < 2_000_000,
        "{waiting} rows generated for an idle client"
    );

    drop(body);
    let stopped = settled(&exports.rows_generated).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exports.rows_generated.load(Ordering::SeqCst), stopped);
    assert!(
        stopped < 2_000_000,
        "{stopped} rows generated after the client went"
    );
}

/// Downloads `url` `clients` times at once, reading every body to its end; returns the peak
/// of live allocated bytes meanwhile, above what was live before.
async fn peak_during_downloads(url: &str, clients: usize) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let downloads = (0..clients).map(|_| async {
        let mut body = get(url).await.bytes_stream();
        let mut bytes = 0;
        while let Some(chunk) = body.next().await {
            bytes += chunk.unwrap().len();
        }
        bytes
    });
    let sizes = futures::future::join_all(downloads).await;
    assert!(sizes.iter().all(|size| *size > 0));
    PEAK.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_memory_stays_flat_while_collecting_grows_with_the_export() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let (base, _) = serve().await;
    let mb = |bytes: usize| bytes as f64 / 1e6;

    let small = peak_during_downloads(&format!("{base}/export?format=csv&rows=100000"), 1).await;
    let large = peak_during_downloads(&format!("{base}/export?format=csv&rows=800000"), 1).await;
    let concurrent =
        peak_during_downloads(&format!("{base}/export?format=csv&rows=800000"), 8).await;
    let collected_small = peak_during_downloads(
        &format!("{base}/export-collected?format=csv&rows=100000"),
        1,
    )
    .await;
    let collected_large = peak_during_downloads(
        &format!("{base}/export-collected?format=csv&rows=800000"),
        1,
    )
    .await;
    let summary = format!(
        "streaming: {:.1} MB for 100k rows, {:.1} MB for 800k, {:.1} MB for 8 x 800k; \
         collected: {:.1} MB for 100k, {:.1} MB for 800k",
        mb(small),
        mb(large),
        mb(concurrent),
        mb(collected_small),
        mb(collected_large)
    );
    eprintln!("{summary}");
    // Eight times the export, the same memory per download.
    assert!(large < small * 3 / 2 + (2 << 20), "{summary}");
    assert!(concurrent < large * 8 + (8 << 20), "{summary}");
    // The collecting endpoint holds the whole export, then the whole body.
    assert!(collected_large > collected_small * 5, "{summary}");
    assert!(collected_large > large * 4, "{summary}");
}
