//! Parallel decoding of one text input: chunks of whole records are decoded on several
//! threads and come out in input order.
//!
//! ```text
//!                      +--> worker 1: ChunkDecoding --+
//!   framer thread --[work]--> worker 2: ChunkDecoding --[results]--> reorder --> next_batch
//!        ^             +--> worker N: ChunkDecoding --+                 |
//!        +---------------------- tokens (chunks in flight) <-------------+
//! ```
//!
//! The framer thread cuts the input into chunks, as the sequential source does, and numbers
//! them; any worker takes the next chunk; the consumer puts results back in order. Line
//! numbers and byte offsets are the framer's, so errors and rejects name the same places as
//! with one thread, and the batches are the same.
//!
//! Memory: a chunk is dispatched only with a token, and there are `workers + 1` tokens,
//! given back as the consumer takes each batch; so at most that many chunks are framed,
//! being decoded or waiting to be put in order, however slow one of them is. A panic while
//! decoding a chunk becomes an error naming where the chunk starts.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::records::{Chunk, Framer};
use crate::rejects::Rejected;
use crate::source::BatchSource;
use crate::text::{ChunkDecoder, ChunkDecoding, TextOptions};

/// What the framer hands the workers.
enum Work {
    Chunk(u64, Chunk),
    /// The framer failed; the error goes to the consumer in its place in the order.
    Failed(u64, Error),
    /// The input ended after `u64` chunks.
    End(u64),
}

/// What the workers hand the consumer, by chunk number.
enum Outcome {
    Decoded(RecordBatch, Vec<Rejected>),
    Failed(Error),
    End,
}

/// A [`BatchSource`] that decodes on `workers` threads, started with the first batch.
pub struct ParallelTextSource<D> {
    location: String,
    state: State<D>,
    rejected: Vec<Rejected>,
}

enum State<D> {
    /// Not started: a projection can still change what the decoders produce.
    Ready {
        framer: Framer,
        decoding: ChunkDecoding<D>,
        options: TextOptions,
        workers: usize,
    },
    Running(Running),
    /// Between the two, and after a failed start.
    Gone,
}

/// The consumer's side of running threads.
struct Running {
    schema: SchemaRef,
    results: Receiver<(u64, Outcome)>,
    tokens: SyncSender<()>,
    waiting: BTreeMap<u64, Outcome>,
    next: u64,
    finished: bool,
}

impl<D: ChunkDecoder + 'static> ParallelTextSource<D> {
    /// A source that will frame with `framer` and decode on `workers` threads.
    pub fn new(
        location: String,
        framer: Framer,
        decoding: ChunkDecoding<D>,
        options: TextOptions,
        workers: usize,
    ) -> Self {
        ParallelTextSource {
            location,
            state: State::Ready {
                framer,
                decoding,
                options,
                workers: workers.max(1),
            },
            rejected: Vec::new(),
        }
    }

    /// The running threads, started on first use.
    fn running(&mut self) -> Result<&mut Running> {
        if let State::Ready { .. } = self.state {
            let State::Ready {
                framer,
                decoding,
                options,
                workers,
            } = std::mem::replace(&mut self.state, State::Gone)
            else {
                unreachable!("the state was just matched as ready");
            };
            self.state = State::Running(start(&self.location, framer, decoding, options, workers)?);
        }
        match &mut self.state {
            State::Running(running) => Ok(running),
            _ => Err(Error::Decode {
                location: self.location.clone(),
                message: "the decoding threads could not be started".to_owned(),
            }),
        }
    }
}

/// Starts the framer thread and `workers` decoding threads.
fn start<D: ChunkDecoder + 'static>(
    location: &str,
    framer: Framer,
    decoding: ChunkDecoding<D>,
    options: TextOptions,
    workers: usize,
) -> Result<Running> {
    let in_flight = workers + 1;
    let schema = decoding.schema();
    let (work_tx, work_rx) = sync_channel::<Work>(workers);
    let (results_tx, results_rx) = sync_channel(in_flight);
    let (tokens_tx, tokens_rx) = sync_channel(in_flight);
    for _ in 0..in_flight {
        tokens_tx
            .send(())
            .expect("the token queue holds every token");
    }

    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut decodings = vec![decoding];
    for _ in 1..workers {
        decodings.push(decodings[0].duplicate()?);
    }
    for decoding in decodings {
        let work = Arc::clone(&work_rx);
        let results = results_tx.clone();
        spawn(location, "decoder", move || {
            decode_chunks(decoding, &work, &results)
        })?;
    }
    spawn(location, "framer", move || {
        frame_chunks(framer, options, &work_tx, &tokens_rx);
    })?;
    Ok(Running {
        schema,
        results: results_rx,
        tokens: tokens_tx,
        waiting: BTreeMap::new(),
        next: 0,
        finished: false,
    })
}

impl Running {
    /// The outcome of the next chunk in input order.
    fn next_outcome(&mut self, location: &str) -> Result<Outcome> {
        loop {
            if let Some(outcome) = self.waiting.remove(&self.next) {
                self.next += 1;
                return Ok(outcome);
            }
            match self.results.recv() {
                Ok((number, outcome)) => {
                    self.waiting.insert(number, outcome);
                }
                // Every worker is gone before the end was reported: one of them died.
                Err(_) => {
                    return Err(Error::Decode {
                        location: location.to_owned(),
                        message: "a decoding thread stopped before the end of the input".to_owned(),
                    });
                }
            }
        }
    }
}

impl<D: ChunkDecoder + 'static> BatchSource for ParallelTextSource<D> {
    fn schema(&self) -> SchemaRef {
        match &self.state {
            State::Ready { decoding, .. } => decoding.schema(),
            State::Running(running) => Arc::clone(&running.schema),
            State::Gone => Arc::new(arrow::datatypes::Schema::empty()),
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let location = self.location.clone();
        let running = self.running()?;
        if running.finished {
            return Ok(None);
        }
        let outcome = running.next_outcome(&location)?;
        // The chunk has left the pipeline's hands: the framer may cut another.
        let _ = running.tokens.try_send(());
        match outcome {
            Outcome::Decoded(batch, rejected) => {
                self.rejected.extend(rejected);
                Ok(Some(batch))
            }
            Outcome::Failed(err) => {
                running.finished = true;
                Err(err)
            }
            Outcome::End => {
                running.finished = true;
                Ok(None)
            }
        }
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    fn project(&mut self, columns: &[usize]) -> bool {
        match &mut self.state {
            State::Ready { decoding, .. } => decoding.project(columns),
            _ => false,
        }
    }
}

fn spawn(location: &str, role: &str, work: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("aqueduct-{role}"))
        .spawn(work)
        .map(drop)
        .map_err(|err| Error::io(location, err))
}

/// Cuts chunks while there are tokens; stops at the end of the input, at an error, or when
/// the consumer has gone.
fn frame_chunks(
    mut framer: Framer,
    options: TextOptions,
    work: &SyncSender<Work>,
    tokens: &Receiver<()>,
) {
    let mut number = 0;
    if options.skip_header
        && let Err(err) = framer.next_chunk(1)
    {
        let _ = work.send(Work::Failed(number, err));
        return;
    }
    loop {
        if tokens.recv().is_err() {
            return;
        }
        let item = match framer.next_chunk(options.batch_size) {
            Ok(Some(chunk)) => Work::Chunk(number, chunk),
            Ok(None) => Work::End(number),
            Err(err) => Work::Failed(number, err),
        };
        let last = !matches!(item, Work::Chunk(..));
        if work.send(item).is_err() || last {
            return;
        }
        number += 1;
    }
}

/// Decodes chunks until the work queue closes or the consumer has gone.
fn decode_chunks<D: ChunkDecoder>(
    mut decoding: ChunkDecoding<D>,
    work: &Mutex<Receiver<Work>>,
    results: &SyncSender<(u64, Outcome)>,
) {
    loop {
        let item = match work.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let (number, outcome) = match item {
            Ok(Work::Chunk(number, chunk)) => (number, decode_one(&mut decoding, &chunk)),
            Ok(Work::Failed(number, err)) => (number, Outcome::Failed(err)),
            Ok(Work::End(number)) => (number, Outcome::End),
            Err(_) => return,
        };
        if results.send((number, outcome)).is_err() {
            return;
        }
    }
}

fn decode_one<D: ChunkDecoder>(decoding: &mut ChunkDecoding<D>, chunk: &Chunk) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| decoding.decode(chunk))) {
        Ok(Ok((batch, rejected))) => Outcome::Decoded(batch, rejected),
        Ok(Err(err)) => Outcome::Failed(err),
        Err(_) => {
            let (line, offset) = chunk
                .records
                .first()
                .map_or((0, 0), |span| (span.line, span.offset));
            Outcome::Failed(Error::Decode {
                location: decoding.location().to_owned(),
                message: format!(
                    "the decoder panicked on the records from line {line} (byte {offset})"
                ),
            })
        }
    }
}
