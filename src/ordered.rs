//! Ordered parallel map: a transform run on several threads, its results passed on in the
//! order of their input.
//!
//! Batch `i` goes to worker `i mod N`, each worker has a queue of one batch and a reply slot
//! of one result, and the stage reads the replies in turn, so order comes for free. At most
//! `2 * N` batches are between the stage's input and its output at once: when the oldest
//! batch is slow, the stage stops handing out new ones until it is done, so a slow head
//! batch holds the others back instead of letting them pile up. A panic in the function
//! becomes an [`Error::Map`] of the run, passed on in the panicking batch's place.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tokio::sync::mpsc;

use crate::error::{Error, Result, panic_message};
use crate::stats::{StageCounters, StageGuard};
use crate::transform::PlannedTransform;

struct Worker {
    batches: SyncSender<RecordBatch>,
    results: Receiver<Result<RecordBatch>>,
}

/// Runs `transform` on `workers` threads between `input` and `output`. Returns true when
/// its input ended and everything was passed on.
pub(crate) fn ordered_map_stage(
    transform: Arc<PlannedTransform>,
    workers: usize,
    mut input: mpsc::Receiver<Result<RecordBatch>>,
    output: mpsc::Sender<Result<RecordBatch>>,
    counters: StageGuard,
) -> bool {
    let _span = tracing::info_span!("stage", name = "map").entered();
    let workers: Vec<Worker> = (0..workers.max(1))
        .map(|index| {
            spawn_worker(
                index,
                Arc::clone(&transform),
                Arc::clone(&counters.counters),
            )
        })
        .collect();
    let mut stage = Ordered {
        workers,
        output,
        sent: 0,
        passed: 0,
        counters,
    };
    while let Some(received) = input.blocking_recv() {
        let batch = match received {
            Ok(batch) => batch,
            Err(err) => {
                // Everything before the error goes first, in order.
                if stage.drain() {
                    stage.pass(Err(err));
                }
                return false;
            }
        };
        if !stage.dispatch(batch) {
            return false;
        }
    }
    stage.drain()
}

struct Ordered {
    workers: Vec<Worker>,
    output: mpsc::Sender<Result<RecordBatch>>,
    sent: usize,
    passed: usize,
    counters: StageGuard,
}

impl Ordered {
    /// Hands `batch` to its worker, first passing on results as the window requires, then
    /// whatever else is ready. False when the run is over.
    fn dispatch(&mut self, batch: RecordBatch) -> bool {
        while self.sent - self.passed >= 2 * self.workers.len() {
            if !self.pass_oldest() {
                return false;
            }
        }
        let worker = &self.workers[self.sent % self.workers.len()];
        if worker.batches.send(batch).is_err() {
            return self.pass(Err(worker_stopped()));
        }
        self.sent += 1;
        // Results that are ready leave now, so output flows while input does.
        while self.passed < self.sent {
            let oldest = &self.workers[self.passed % self.workers.len()];
            match oldest.results.try_recv() {
                Ok(result) => {
                    self.passed += 1;
                    if !self.pass(result) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return self.pass(Err(worker_stopped())),
            }
        }
        true
    }

    /// Waits for the oldest result and passes it on.
    fn pass_oldest(&mut self) -> bool {
        let oldest = &self.workers[self.passed % self.workers.len()];
        let result = oldest
            .results
            .recv()
            .unwrap_or_else(|_| Err(worker_stopped()));
        self.passed += 1;
        self.pass(result)
    }

    /// Passes on every result still in flight.
    fn drain(&mut self) -> bool {
        while self.passed < self.sent {
            if !self.pass_oldest() {
                return false;
            }
        }
        true
    }

    /// Sends one result downstream; false when it was an error or downstream has gone.
    fn pass(&mut self, result: Result<RecordBatch>) -> bool {
        if matches!(&result, Ok(batch) if batch.num_rows() == 0) {
            return true;
        }
        if let Ok(batch) = &result {
            self.counters.counters.record(batch, Duration::ZERO);
        }
        let failed = result.is_err();
        self.output.blocking_send(result).is_ok() && !failed
    }
}

fn worker_stopped() -> Error {
    Error::Map {
        message: "a map worker stopped".to_owned(),
    }
}

fn spawn_worker(
    index: usize,
    transform: Arc<PlannedTransform>,
    counters: Arc<StageCounters>,
) -> Worker {
    let (batches, incoming) = sync_channel::<RecordBatch>(1);
    let (replies, results) = sync_channel(1);
    // A worker that cannot start drops its queue, so the first batch for it fails the run.
    let _ = std::thread::Builder::new()
        .name(format!("aqueduct-map-{index}"))
        .spawn(move || {
            for batch in incoming {
                let started = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| transform.apply(batch)))
                    .unwrap_or_else(|panic| {
                        Err(Error::Map {
                            message: format!(
                                "the map function panicked: {}",
                                panic_message(panic.as_ref())
                            ),
                        })
                    });
                counters.add_busy(started.elapsed());
                if replies.send(result).is_err() {
                    return;
                }
            }
        });
    Worker { batches, results }
}
