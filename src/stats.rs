//! Per-stage counters of a run: batches, rows, bytes and time busy, readable while it runs.
//!
//! Every stage of a [`Pipeline`](crate::Pipeline) or [`Convert`](crate::Convert) run (the
//! source, each group of transforms, each parallel or async map, the encoder) counts what
//! it passes on. `bytes` is the Arrow memory size of the batches a stage passed on (for the
//! encoder, of the batches it encoded); `busy` is the time spent inside the stage's work,
//! not waiting on its queues (for a parallel or async map, summed over its workers or calls
//! in flight, so it may exceed the wall time). Each stage also runs inside a `tracing` span
//! named `stage` with its name as a field.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;

/// The live counters of one stage.
#[derive(Debug)]
pub struct StageCounters {
    name: String,
    batches: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    busy_nanos: AtomicU64,
}

impl StageCounters {
    /// Counts one batch passed on and the time its work took.
    pub(crate) fn record(&self, batch: &RecordBatch, busy: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
        self.add_busy(busy);
    }

    /// Counts time busy on work that passed nothing on (a batch filtered to nothing).
    pub(crate) fn add_busy(&self, busy: Duration) {
        self.busy_nanos
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn snapshot(&self) -> StageStats {
        StageStats {
            name: self.name.clone(),
            batches: self.batches.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// One stage's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStats {
    /// `source`, `transform`, `map`, `async map` or `encode`.
    pub name: String,
    /// Batches passed on.
    pub batches: u64,
    /// Rows passed on.
    pub rows: u64,
    /// Arrow memory size of the batches passed on.
    pub bytes: u64,
    /// Time spent working.
    pub busy: Duration,
}

impl StageStats {
    /// The figures as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "batches": self.batches,
            "rows": self.rows,
            "bytes": self.bytes,
            "busy_seconds": self.busy.as_secs_f64(),
        })
    }
}

/// The stages of one run, in pipeline order.
#[derive(Debug, Default)]
pub struct Stages {
    stages: Mutex<Vec<Arc<StageCounters>>>,
    running: AtomicUsize,
}

impl Stages {
    /// Adds a stage; its thread holds the returned guard while it runs.
    pub(crate) fn add(self: &Arc<Self>, name: &str) -> StageGuard {
        let counters = Arc::new(StageCounters {
            name: name.to_owned(),
            batches: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
        });
        self.stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(Arc::clone(&counters));
        self.running.fetch_add(1, Ordering::SeqCst);
        StageGuard {
            stages: Arc::clone(self),
            counters,
        }
    }

    /// Every stage's figures now.
    pub fn snapshot(&self) -> Vec<StageStats> {
        self.stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .map(|stage| stage.snapshot())
            .collect()
    }

    /// Stages that have started and not yet ended.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// A stage's counters, held by its thread; dropping it marks the stage ended.
pub(crate) struct StageGuard {
    stages: Arc<Stages>,
    pub(crate) counters: Arc<StageCounters>,
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        self.stages.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A callback that receives every stage's figures.
pub type ProgressCallback = Arc<dyn Fn(&[StageStats]) + Send + Sync>;

/// A progress callback and how often to call it.
#[derive(Clone)]
pub(crate) struct OnProgress {
    every: Duration,
    callback: ProgressCallback,
}

impl std::fmt::Debug for OnProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnProgress")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl OnProgress {
    pub(crate) fn new(
        every: Duration,
        callback: impl Fn(&[StageStats]) + Send + Sync + 'static,
    ) -> Self {
        OnProgress {
            every,
            callback: Arc::new(callback),
        }
    }

    /// Starts calling back about `stages`, on a thread of its own.
    pub(crate) fn start(&self, stages: Arc<Stages>) {
        report_progress(stages, self.every, Arc::clone(&self.callback));
    }
}

/// Calls `callback` every `every` while stages run, and once more when they have all
/// ended.
fn report_progress(stages: Arc<Stages>, every: Duration, callback: ProgressCallback) {
    let spawned = std::thread::Builder::new()
        .name("aqueduct-progress".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let ended = stages.running() == 0;
                callback(&stages.snapshot());
                if ended {
                    return;
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "cannot start the progress reporter");
    }
}
