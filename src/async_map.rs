//! Async map: each batch through an async function (a call to another service), with
//! bounded concurrency, a timeout per call, retries with exponential backoff and jitter, and
//! a circuit breaker.
//!
//! Up to [`AsyncMapOptions::concurrency`] calls run at once, and their results are passed
//! on in input order, so at most that many batches are inside the stage. A call that
//! returns [`CallError::Retryable`] or runs past [`AsyncMapOptions::timeout`] is tried
//! again, up to [`AsyncMapOptions::attempts`] times in all, after a pause drawn at random
//! between zero and `initial_backoff * 2^(attempt - 1)` (capped at `max_backoff`; "full
//! jitter", so that retries of many batches do not arrive together). A
//! [`CallError::Fatal`] error, or the last failed attempt, fails the run.
//!
//! The circuit breaker counts failed calls in a row over all batches. At
//! [`CircuitBreaker::failures`] it opens, and no calls are made until
//! [`CircuitBreaker::pause`] has passed; then one call is let through as a probe. A
//! successful probe closes the circuit, a failed one opens it for another pause. While it
//! is open, a batch that wants to call either fails the run at once (with
//! [`CircuitBreaker::fail_fast`]: an export fails in milliseconds instead of waiting for
//! timeouts) or waits for the probe without using up its attempts. Either way a dependency
//! that is down gets one call per pause, and one that stays down fails the run: at once, or
//! once the oldest batch in flight has used its attempts, after at most
//! `concurrency * attempts` calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::stats::StageGuard;

/// How an async call failed.
#[derive(Debug)]
pub enum CallError {
    /// Worth trying again: a timeout, a 503, a reset connection.
    Retryable(String),
    /// Not worth trying again: a 400, a batch the service rejects.
    Fatal(String),
}

/// The circuit breaker of an async map.
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreaker {
    /// Failed attempts in a row that open the circuit.
    pub failures: u32,
    /// How long an open circuit makes no calls before it lets a probe through.
    pub pause: Duration,
    /// Fail the run when a batch finds the circuit open, instead of waiting for the probe.
    pub fail_fast: bool,
}

/// Concurrency, timeout, retries and circuit breaker of an async map.
#[derive(Debug, Clone)]
pub struct AsyncMapOptions {
    /// Calls in flight at once (default 8).
    pub concurrency: usize,
    /// Longest a call may take; a call past it is cancelled and counts as retryable
    /// (default 30 s).
    pub timeout: Duration,
    /// Attempts per batch, the first included (default 4).
    pub attempts: u32,
    /// Upper bound of the first retry's pause (default 100 ms).
    pub initial_backoff: Duration,
    /// Upper bound of any retry's pause (default 10 s).
    pub max_backoff: Duration,
    /// The circuit breaker; `None` for none (default: 5 failures, 5 s pause, waiting).
    pub circuit_breaker: Option<CircuitBreaker>,
}

impl Default for AsyncMapOptions {
    fn default() -> Self {
        AsyncMapOptions {
            concurrency: 8,
            timeout: Duration::from_secs(30),
            attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            circuit_breaker: Some(CircuitBreaker {
                failures: 5,
                pause: Duration::from_secs(5),
                fail_fast: false,
            }),
        }
    }
}

/// What an open or closed circuit says to an attempt.
#[derive(Debug, PartialEq)]
enum Admission {
    Call,
    Wait(Duration),
    Refuse,
}

/// A user's async function over batches.
pub type AsyncMapFn = Arc<
    dyn Fn(
            RecordBatch,
        )
            -> Pin<Box<dyn Future<Output = std::result::Result<RecordBatch, CallError>> + Send>>
        + Send
        + Sync,
>;

/// An async map, ready to run as a stage.
#[derive(Clone)]
pub struct AsyncMap {
    pub(crate) schema: SchemaRef,
    pub(crate) function: AsyncMapFn,
    pub(crate) options: AsyncMapOptions,
}

enum Circuit {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing,
}

/// The circuit breaker's state, shared by every call of one stage.
struct Breaker {
    settings: Option<CircuitBreaker>,
    state: Mutex<Circuit>,
}

impl Breaker {
    /// Whether an attempt may call now, or how long it should wait.
    fn admit(&self) -> Admission {
        let Some(settings) = self.settings else {
            return Admission::Call;
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        match *state {
            Circuit::Closed { .. } => Admission::Call,
            Circuit::Open { until } if now >= until => {
                tracing::info!(pause = ?settings.pause, "circuit half open: probing");
                *state = Circuit::Probing;
                Admission::Call
            }
            _ if settings.fail_fast => Admission::Refuse,
            Circuit::Open { until } => Admission::Wait(until - now),
            // The probe's answer decides; look again shortly.
            Circuit::Probing => Admission::Wait(settings.pause.min(Duration::from_millis(20))),
        }
    }

    fn succeeded(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if matches!(*state, Circuit::Probing) {
            tracing::info!("circuit closed");
        }
        *state = Circuit::Closed { failures: 0 };
    }

    fn failed(&self) {
        let Some(settings) = self.settings else {
            return;
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let open = match *state {
            Circuit::Closed { failures } if failures + 1 < settings.failures => {
                *state = Circuit::Closed {
                    failures: failures + 1,
                };
                false
            }
            Circuit::Closed { .. } | Circuit::Probing => true,
            // Calls let through before it opened may still fail; the pause stands.
            Circuit::Open { .. } => false,
        };
        if open {
            tracing::warn!(pause = ?settings.pause, "circuit open");
            *state = Circuit::Open {
                until: Instant::now() + settings.pause,
            };
        }
    }
}

/// Runs `map` on every batch from `input`, passing results to `output` in order. Returns
/// true when the input ended and everything was passed on.
pub(crate) async fn async_map_stage(
    map: AsyncMap,
    input: mpsc::Receiver<Result<RecordBatch>>,
    output: mpsc::Sender<Result<RecordBatch>>,
    cancel: CancellationToken,
    stage: StageGuard,
) -> bool {
    let breaker = Arc::new(Breaker {
        settings: map.options.circuit_breaker,
        state: Mutex::new(Circuit::Closed { failures: 0 }),
    });
    let map = Arc::new(map);
    let batches = futures::stream::unfold(input, |mut input| async move {
        input.recv().await.map(|batch| (batch, input))
    });
    let results = batches
        .map(|batch| {
            let (map, breaker) = (Arc::clone(&map), Arc::clone(&breaker));
            let counters = Arc::clone(&stage.counters);
            async move {
                let started = Instant::now();
                let result = call_with_retries(&map, &breaker, batch?).await;
                counters.add_busy(started.elapsed());
                result
            }
        })
        .buffered(map.options.concurrency.max(1));
    let mut results = std::pin::pin!(results);
    loop {
        let result = tokio::select! {
            result = results.next() => result,
            () = cancel.cancelled() => Some(Err(Error::Cancelled)),
        };
        let Some(result) = result else {
            return true;
        };
        if matches!(&result, Ok(batch) if batch.num_rows() == 0) {
            continue;
        }
        if let Ok(batch) = &result {
            stage.counters.record(batch, Duration::ZERO);
        }
        let failed = result.is_err();
        if output.send(result).await.is_err() || failed {
            return false;
        }
    }
}

async fn call_with_retries(
    map: &AsyncMap,
    breaker: &Breaker,
    batch: RecordBatch,
) -> Result<RecordBatch> {
    let options = &map.options;
    let attempts = options.attempts.max(1);
    let mut attempt = 1;
    loop {
        match breaker.admit() {
            Admission::Call => {}
            Admission::Wait(pause) => {
                tokio::time::sleep(pause).await;
                continue;
            }
            Admission::Refuse => {
                return Err(Error::Map {
                    message: "the async map's circuit is open: the dependency is failing"
                        .to_owned(),
                });
            }
        }
        let call = (map.function)(batch.clone());
        let outcome = match tokio::time::timeout(options.timeout, call).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(CallError::Fatal(message))) => {
                return Err(Error::Map {
                    message: format!("the async map failed: {message}"),
                });
            }
            Ok(Err(CallError::Retryable(message))) => Err(message),
            Err(_) => Err(format!("the call took longer than {:?}", options.timeout)),
        };
        match &outcome {
            Ok(_) => breaker.succeeded(),
            Err(_) => breaker.failed(),
        }
        match outcome {
            Ok(output) => {
                if output.schema().fields() != map.schema.fields() {
                    return Err(Error::Map {
                        message: format!(
                            "the async map returned a batch of schema {:?}, declared {:?}",
                            output.schema(),
                            map.schema
                        ),
                    });
                }
                return Ok(output);
            }
            Err(message) if attempt >= attempts => {
                return Err(Error::Map {
                    message: format!("the async map failed after {attempt} attempts: {message}"),
                });
            }
            Err(message) => {
                let pause = backoff(options, attempt);
                tracing::debug!(attempt, ?pause, %message, "retrying the async map");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    }
}

/// The pause before retry number `attempt`: uniform between zero and the exponential bound.
fn backoff(options: &AsyncMapOptions, attempt: u32) -> Duration {
    let bound = options
        .initial_backoff
        .saturating_mul(1 << (attempt - 1).min(20))
        .min(options.max_backoff);
    bound.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter_below_the_bound() {
        let options = AsyncMapOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..AsyncMapOptions::default()
        };
        for (attempt, bound) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let pauses: Vec<Duration> = (0..200).map(|_| backoff(&options, attempt)).collect();
            let bound = Duration::from_millis(bound);
            assert!(
                pauses.iter().all(|pause| *pause <= bound),
                "attempt {attempt}"
            );
            assert!(
                pauses.iter().any(|pause| *pause < bound / 2),
                "attempt {attempt}"
            );
            assert!(
                pauses.iter().any(|pause| *pause > bound / 2),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn the_breaker_opens_at_its_threshold_and_lets_one_probe_through_after_the_pause() {
        let breaker = Breaker {
            settings: Some(CircuitBreaker {
                failures: 3,
                pause: Duration::from_millis(50),
                fail_fast: false,
            }),
            state: Mutex::new(Circuit::Closed { failures: 0 }),
        };
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Admission::Call);
            breaker.failed();
        }
        assert_eq!(breaker.admit(), Admission::Call);
        breaker.failed();
        assert!(
            matches!(breaker.admit(), Admission::Wait(pause) if pause <= Duration::from_millis(50)),
            "open after three failures"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(breaker.admit(), Admission::Call, "a probe after the pause");
        assert!(
            matches!(breaker.admit(), Admission::Wait(_)),
            "one probe at a time"
        );
        breaker.failed();
        assert!(
            matches!(breaker.admit(), Admission::Wait(_)),
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(breaker.admit(), Admission::Call);
        breaker.succeeded();
        assert_eq!(
            breaker.admit(),
            Admission::Call,
            "closed after a good probe"
        );

        let fail_fast = Breaker {
            settings: Some(CircuitBreaker {
                failures: 1,
                pause: Duration::from_secs(60),
                fail_fast: true,
            }),
            state: Mutex::new(Circuit::Closed { failures: 0 }),
        };
        fail_fast.failed();
        assert_eq!(fail_fast.admit(), Admission::Refuse);
    }
}
