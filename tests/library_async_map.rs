//! The async map against a flaky dependency: retries, timeouts, fatal errors, bounded
//! concurrency, order, and the circuit breaker while the dependency is down.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct::arrow::array::RecordBatch;
use aqueduct::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use aqueduct::async_map::{AsyncMapOptions, CallError, CircuitBreaker};
use aqueduct::stream::{Pipeline, RowSource};
use aqueduct::{Batches, Error};
use common::first_id;
use futures::{StreamExt, TryStreamExt};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

#[derive(serde::Serialize)]
struct Row {
    id: i64,
}

/// A pipeline over `batches` batches of 10 ids, through `call` as an async map.
fn through<F, Fut>(batches: i64, options: AsyncMapOptions, call: F) -> Batches
where
    F: Fn(RecordBatch) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<RecordBatch, CallError>> + Send + 'static,
{
    let rows = (0..batches * 10).map(|id| Row { id });
    Pipeline::new(RowSource::new(schema(), rows, 10).unwrap())
        .map_async(schema(), options, call)
        .into_stream()
        .unwrap()
}

fn quick_retries() -> AsyncMapOptions {
    AsyncMapOptions {
        concurrency: 4,
        timeout: Duration::from_secs(5),
        attempts: 4,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(10),
        circuit_breaker: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_and_the_output_keeps_its_order() {
    let attempts: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let (active, most_active) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let calls = Arc::clone(&attempts);
    let (active_in, most_in) = (Arc::clone(&active), Arc::clone(&most_active));
    let batches: Vec<RecordBatch> = through(40, quick_retries(), move |batch| {
        let first = first_id(&batch);
        let attempt = {
            let mut calls = calls.lock().unwrap();
            let attempt = calls.entry(first).or_default();
            *attempt += 1;
            *attempt
        };
        let (active, most) = (Arc::clone(&active_in), Arc::clone(&most_in));
        async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // Later batches answer sooner, so that results finish out of order.
            tokio::time::sleep(Duration::from_millis(20 - (first as u64 / 10) % 20)).await;
            active.fetch_sub(1, Ordering::SeqCst);
            if attempt < 3 {
                Err(CallError::Retryable(format!("503 on attempt {attempt}")))
            } else {
                Ok(batch)
            }
        }
    })
    .try_collect()
    .await
    .unwrap();
    let firsts: Vec<i64> = batches.iter().map(first_id).collect();
    assert_eq!(firsts, (0..40).map(|index| index * 10).collect::<Vec<_>>());
    let attempts = attempts.lock().unwrap();
    assert!(attempts.values().all(|count| *count == 3), "{attempts:?}");
    let most = most_active.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "{most} calls at once, concurrency 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_retried_and_a_fatal_error_is_not() {
    let options = AsyncMapOptions {
        timeout: Duration::from_millis(50),
        ..quick_retries()
    };
    let slow_once = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&slow_once);
    let batches: Vec<RecordBatch> = through(5, options.clone(), move |batch| {
        let first_call = first_id(&batch) == 20 && calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first_call {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok(batch)
        }
    })
    .try_collect()
    .await
    .unwrap();
    assert_eq!(batches.len(), 5);
    assert_eq!(
        slow_once.load(Ordering::SeqCst),
        2,
        "timed out once, then retried"
    );

    let fatal_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&fatal_calls);
    let mut stream = through(10, options, move |batch| {
        let bad = first_id(&batch) == 30;
        if bad {
            calls.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if bad {
                Err(CallError::Fatal("400: batch 30 is malformed".into()))
            } else {
                Ok(batch)
            }
        }
    });
    for expected in [0, 10, 20] {
        assert_eq!(first_id(&stream.next().await.unwrap().unwrap()), expected);
    }
    match stream.next().await {
        Some(Err(Error::Map { message })) => assert!(message.contains("malformed"), "{message}"),
        other => panic!("expected the fatal error, got {other:?}"),
    }
    assert_eq!(
        fatal_calls.load(Ordering::SeqCst),
        1,
        "a fatal error is not retried"
    );
}

/// A dependency that fails every call until `up_at`, counting the calls it gets meanwhile.
#[derive(Clone)]
struct Dependency {
    up_at: Instant,
    calls_while_down: Arc<AtomicUsize>,
}

impl Dependency {
    async fn call(self, batch: RecordBatch) -> Result<RecordBatch, CallError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if Instant::now() < self.up_at {
            self.calls_while_down.fetch_add(1, Ordering::SeqCst);
            return Err(CallError::Retryable("connection refused".into()));
        }
        Ok(batch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_spares_a_down_dependency_and_probes_it_back() {
    let options = |breaker| AsyncMapOptions {
        concurrency: 4,
        timeout: Duration::from_secs(5),
        attempts: 40,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        circuit_breaker: breaker,
    };
    let mut calls = Vec::new();
    for breaker in [
        None,
        Some(CircuitBreaker {
            failures: 3,
            pause: Duration::from_millis(100),
            fail_fast: false,
        }),
    ] {
        let dependency = Dependency {
            up_at: Instant::now() + Duration::from_millis(400),
            calls_while_down: Arc::default(),
        };
        let counter = Arc::clone(&dependency.calls_while_down);
        let batches: Vec<RecordBatch> = through(20, options(breaker), move |batch| {
            dependency.clone().call(batch)
        })
        .try_collect()
        .await
        .unwrap();
        let firsts: Vec<i64> = batches.iter().map(first_id).collect();
        assert_eq!(firsts, (0..20).map(|index| index * 10).collect::<Vec<_>>());
        calls.push(counter.load(Ordering::SeqCst));
    }
    let (without, with) = (calls[0], calls[1]);
    // Open after 3 failures, then one probe per 100 ms pause over 400 ms of downtime (a
    // few calls let through just before it opened may fail too).
    assert!(
        with <= 3 + 4 + 4,
        "{with} calls while down with the breaker"
    );
    assert!(
        without > 2 * with,
        "{without} calls without the breaker, {with} with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_stays_down_fails_the_run_after_bounded_calls() {
    for fail_fast in [false, true] {
        let options = AsyncMapOptions {
            concurrency: 2,
            attempts: 6,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
            circuit_breaker: Some(CircuitBreaker {
                failures: 2,
                pause: Duration::from_millis(50),
                fail_fast,
            }),
            ..quick_retries()
        };
        let dependency = Dependency {
            up_at: Instant::now() + Duration::from_secs(3600),
            calls_while_down: Arc::default(),
        };
        let counter = Arc::clone(&dependency.calls_while_down);
        let started = Instant::now();
        let result: Result<Vec<RecordBatch>, Error> =
            through(100, options, move |batch| dependency.clone().call(batch))
                .try_collect()
                .await;
        let message = match result {
            Err(Error::Map { message }) => message,
            other => panic!("expected the run to fail, got {other:?}"),
        };
        let calls = counter.load(Ordering::SeqCst);
        if fail_fast {
            // Two failures open the circuit; the next batch to call fails the run.
            assert!(message.contains("circuit is open"), "{message}");
            assert!(calls <= 3, "{calls} calls with fail_fast");
            assert!(started.elapsed() < Duration::from_millis(200));
        } else {
            // The run fails when the oldest of the two batches in flight has used its 6
            // attempts: at most 2 x 6 calls, one per pause once the circuit is open.
            assert!(message.contains("after 6 attempts"), "{message}");
            assert!(calls <= 2 * 6, "{calls} calls to a dependency that is down");
        }
    }
}
