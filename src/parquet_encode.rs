//! Parquet encoding on several threads, overlapped with decoding and with file writes.
//!
//! [`ArrowWriter`] encodes every column of a batch on the caller's thread and then writes the
//! finished row group on the same thread, so a CSV-to-Parquet run keeps one core busy with
//! encoding while the decoder waits for the queue to drain. Measured with `perf` on the
//! 1 GB orders CSV, dictionary interning, snappy and page writing took about 55% of the CPU
//! time and decoding about 35%: the encoder was the critical path. This module spreads the
//! encoding over threads by column, using parquet's own column writers:
//!
//! ```text
//!                +--> encoder 0: column writers of fields {0, 3, ...} --+
//!   batch -------+                                                      +--> row group
//!   (the caller) +--> encoder 1: column writers of fields {1, 2, ...} --+    |
//!                                                                             v
//!                                                                 file writer thread
//! ```
//!
//! Every encoder gets every batch (arrays are shared, not copied) and encodes only the fields
//! it was given. When the row group is full the caller collects the column chunks, hands them
//! to the file writer thread, and gives the encoders fresh column writers at once, so encoding
//! of the next row group goes on while the last one is written out. Fields are dealt to
//! encoders by the time each took in the previous row group, longest first, so one heavy
//! string column does not leave the other threads idle.
//!
//! Memory: the row group being encoded (about the byte budget), the one being written (the
//! same again), and up to [`QUEUED_BATCHES`] batches queued per encoder, which share their
//! arrays.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Batches that may wait in each encoder's queue.
pub const QUEUED_BATCHES: usize = 2;

type Result<T> = std::result::Result<T, ParquetError>;

/// The column writers of one field: its leaf columns' positions in the file and their writers.
struct FieldWriters {
    field: usize,
    leaves: Vec<(usize, ArrowColumnWriter)>,
    busy_nanos: u64,
}

/// What an encoder thread is asked to do.
enum Task {
    /// Start a row group with these writers.
    Begin(Vec<FieldWriters>),
    /// Encode this batch's columns of the current fields.
    Batch(RecordBatch),
    /// Reply with the estimated encoded size of the current row group's columns.
    Estimate,
    /// Close the writers and reply with the chunks.
    Close,
}

/// An encoder's answer.
enum Reply {
    Estimate(usize),
    Closed(Closed),
}

/// The finished chunks of one encoder for one row group, with the time each field took.
struct Closed {
    chunks: Vec<(usize, ArrowColumnChunk)>,
    busy_nanos: Vec<(usize, u64)>,
}

struct Encoder {
    tasks: SyncSender<Task>,
    replies: Receiver<Result<Reply>>,
    handle: Option<JoinHandle<()>>,
}

type RowGroup = Vec<ArrowColumnChunk>;

/// Writes record batches as Parquet, encoding columns on `threads` threads.
pub struct ParallelParquetWriter<W: Write + Send + 'static> {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    encoders: Vec<Encoder>,
    /// Leaf column positions of each top-level field.
    field_leaves: Vec<std::ops::Range<usize>>,
    /// Time each field took to encode in the last row group.
    field_cost: Vec<u64>,
    /// Encoded bytes per row of the last row group.
    last_bytes_per_row: Option<f64>,
    row_groups: Option<SyncSender<RowGroup>>,
    file_thread: Option<JoinHandle<Result<W>>>,
    buffered_rows: usize,
    row_groups_started: usize,
    max_rows: usize,
    max_bytes: usize,
}

impl<W: Write + Send + 'static> ParallelParquetWriter<W> {
    /// A writer of `schema` to `out`, closing row groups at `max_rows` rows or when their
    /// estimated encoded size passes `max_bytes`.
    pub fn try_new(
        out: W,
        schema: SchemaRef,
        properties: WriterProperties,
        threads: usize,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Self> {
        // ArrowWriter adds the Arrow schema to the file's metadata and builds the Parquet
        // schema; its lower-level parts then do the work.
        let (file, factory) = ArrowWriter::try_new(out, Arc::clone(&schema), Some(properties))?
            .into_serialized_writer()?;
        let descriptor = file.schema_descr();
        let mut field_leaves = vec![0..0; schema.fields().len()];
        for leaf in 0..descriptor.num_columns() {
            let root = descriptor.get_column_root_idx(leaf);
            let range = &mut field_leaves[root];
            if range.start == range.end {
                *range = leaf..leaf + 1;
            } else {
                range.end = leaf + 1;
            }
        }

        let (row_groups, incoming) = sync_channel::<RowGroup>(1);
        let file_thread = std::thread::Builder::new()
            .name("parquet-file".into())
            .spawn(move || write_row_groups(file, incoming))
            .map_err(|err| ParquetError::External(Box::new(err)))?;

        let count = threads.clamp(1, schema.fields().len().max(1));
        let encoders = (0..count)
            .map(|index| spawn_encoder(index, Arc::clone(&schema)))
            .collect::<Result<Vec<_>>>()?;
        let mut writer = ParallelParquetWriter {
            factory,
            field_cost: vec![0; schema.fields().len()],
            last_bytes_per_row: None,
            schema,
            encoders,
            field_leaves,
            row_groups: Some(row_groups),
            file_thread: Some(file_thread),
            buffered_rows: 0,
            row_groups_started: 0,
            max_rows: max_rows.max(1),
            max_bytes: max_bytes.max(1),
        };
        writer.begin_row_group()?;
        Ok(writer)
    }

    /// Queues a batch for encoding; closes the row group when it is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(ParquetError::General(format!(
                "batch schema {} does not match the file's schema {}",
                batch.schema_ref(),
                self.schema
            )));
        }
        let mut room = self.max_rows - self.buffered_rows;
        // The encoders run a few batches behind, so the size of what is queued is projected
        // from the bytes per row measured so far, and a batch that would overflow the budget
        // is split where it meets it. The projection depends only on the data, never on
        // thread timing, so the same input always gives the same row groups.
        if let Some(bytes_per_row) = self.bytes_per_row()? {
            let projected = bytes_per_row * self.buffered_rows as f64;
            let budget = self.max_bytes as f64;
            if projected >= budget {
                self.close_row_group()?;
                self.begin_row_group()?;
                return self.write(batch);
            }
            let fit = ((budget - projected) / bytes_per_row).ceil() as usize;
            room = room.min(fit.max(1));
        }
        if batch.num_rows() > room {
            self.write(&batch.slice(0, room))?;
            return self.write(&batch.slice(room, batch.num_rows() - room));
        }
        for index in 0..self.encoders.len() {
            self.send(index, Task::Batch(batch.clone()))?;
        }
        self.buffered_rows += batch.num_rows();
        if self.buffered_rows >= self.max_rows {
            self.close_row_group()?;
            self.begin_row_group()?;
        }
        Ok(())
    }

    /// Encoded bytes per row: the last row group's, or during the first row group the
    /// encoders' estimate, waited for (which costs the first row group its overlap).
    fn bytes_per_row(&mut self) -> Result<Option<f64>> {
        if self.last_bytes_per_row.is_some() || self.buffered_rows == 0 {
            return Ok(self.last_bytes_per_row);
        }
        for index in 0..self.encoders.len() {
            self.send(index, Task::Estimate)?;
        }
        let mut estimate = 0;
        for index in 0..self.encoders.len() {
            match self.reply(index)? {
                Reply::Estimate(bytes) => estimate += bytes,
                Reply::Closed(_) => unreachable!("an encoder closes only when asked"),
            }
        }
        Ok(Some(estimate as f64 / self.buffered_rows as f64))
    }

    fn reply(&mut self, index: usize) -> Result<Reply> {
        match self.encoders[index].replies.recv() {
            Ok(reply) => reply,
            Err(_) => Err(ParquetError::General(
                "a Parquet encoding thread stopped".into(),
            )),
        }
    }

    /// Writes the last row group and the footer, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if self.buffered_rows > 0 {
            self.close_row_group()?;
        }
        self.stop_encoders();
        drop(self.row_groups.take());
        let file_thread = self.file_thread.take().expect("finish runs once");
        join_file_thread(file_thread)
    }

    fn send(&mut self, index: usize, task: Task) -> Result<()> {
        if self.encoders[index].tasks.send(task).is_err() {
            // The encoder stopped: its reply says why.
            return Err(self.encoder_failure(index));
        }
        Ok(())
    }

    fn encoder_failure(&mut self, index: usize) -> ParquetError {
        match self.reply(index) {
            Err(err) => err,
            Ok(_) => ParquetError::General("a Parquet encoding thread stopped".into()),
        }
    }

    /// Deals fresh column writers to the encoders, heaviest fields first, each to the
    /// encoder with the least work so far.
    fn begin_row_group(&mut self) -> Result<()> {
        let writers = self
            .factory
            .create_column_writers(self.row_groups_started)?;
        self.row_groups_started += 1;
        let mut writers = writers.into_iter().map(Some).collect::<Vec<_>>();
        let mut order: Vec<usize> = (0..self.field_leaves.len()).collect();
        order.sort_by_key(|&field| std::cmp::Reverse(self.field_cost[field]));
        let mut load = vec![0u64; self.encoders.len()];
        let mut dealt: Vec<Vec<FieldWriters>> = (0..self.encoders.len()).map(|_| vec![]).collect();
        for field in order {
            let target = (0..load.len())
                .min_by_key(|&encoder| (load[encoder], dealt[encoder].len()))
                .expect("at least one encoder");
            load[target] += self.field_cost[field].max(1);
            let leaves = self.field_leaves[field]
                .clone()
                .map(|leaf| (leaf, writers[leaf].take().expect("each leaf is dealt once")))
                .collect();
            dealt[target].push(FieldWriters {
                field,
                leaves,
                busy_nanos: 0,
            });
        }
        for (index, fields) in dealt.into_iter().enumerate() {
            self.send(index, Task::Begin(fields))?;
        }
        Ok(())
    }

    /// Collects the chunks of the current row group and hands them to the file thread.
    fn close_row_group(&mut self) -> Result<()> {
        for index in 0..self.encoders.len() {
            self.send(index, Task::Close)?;
        }
        let mut chunks = Vec::new();
        for index in 0..self.encoders.len() {
            let closed = match self.reply(index)? {
                Reply::Closed(closed) => closed,
                Reply::Estimate(_) => unreachable!("estimates are read as they are asked for"),
            };
            chunks.extend(closed.chunks);
            for (field, nanos) in closed.busy_nanos {
                self.field_cost[field] = nanos;
            }
        }
        chunks.sort_by_key(|(leaf, _)| *leaf);
        let bytes: u64 = chunks
            .iter()
            .map(|(_, chunk)| chunk.close().bytes_written)
            .sum();
        self.last_bytes_per_row = Some(bytes as f64 / self.buffered_rows.max(1) as f64);
        let row_group = chunks.into_iter().map(|(_, chunk)| chunk).collect();
        self.buffered_rows = 0;
        let sender = self.row_groups.as_ref().expect("open until finish");
        if sender.send(row_group).is_err() {
            // The file thread stopped on an error; joining it returns the error.
            drop(self.row_groups.take());
            let file_thread = self.file_thread.take().expect("joined once");
            return Err(match join_file_thread(file_thread) {
                Err(err) => err,
                Ok(_) => ParquetError::General("the Parquet file writer stopped".into()),
            });
        }
        Ok(())
    }

    fn stop_encoders(&mut self) {
        for encoder in &mut self.encoders {
            // Replacing the sender closes the queue, which ends the thread's loop.
            let (closed, _) = sync_channel(0);
            drop(std::mem::replace(&mut encoder.tasks, closed));
            if let Some(handle) = encoder.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

impl<W: Write + Send + 'static> Drop for ParallelParquetWriter<W> {
    fn drop(&mut self) {
        // An unfinished writer (an error or a cancelled run) stops its threads; what they
        // held is dropped, and the output is discarded by its owner.
        self.stop_encoders();
        drop(self.row_groups.take());
        if let Some(file_thread) = self.file_thread.take() {
            let _ = file_thread.join();
        }
    }
}

fn join_file_thread<W>(handle: JoinHandle<Result<W>>) -> Result<W> {
    handle.join().unwrap_or_else(|_| {
        Err(ParquetError::General(
            "the Parquet file writer panicked".into(),
        ))
    })
}

/// The file thread: appends finished row groups in order, then writes the footer.
fn write_row_groups<W: Write + Send>(
    mut file: SerializedFileWriter<W>,
    row_groups: Receiver<RowGroup>,
) -> Result<W> {
    for chunks in row_groups {
        let mut row_group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    // Writes the footer, then gives the output back.
    file.into_inner()
}

fn spawn_encoder(index: usize, schema: SchemaRef) -> Result<Encoder> {
    let (tasks, incoming) = sync_channel::<Task>(QUEUED_BATCHES);
    let (reply, replies) = sync_channel::<Result<Reply>>(1);
    let handle = std::thread::Builder::new()
        .name(format!("parquet-encode-{index}"))
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                encode_columns(&schema, &incoming, &reply)
            }));
            let failure = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(err)) => err,
                Err(panic) => ParquetError::General(format!(
                    "Parquet encoding panicked: {}",
                    crate::error::panic_message(panic.as_ref())
                )),
            };
            let _ = reply.send(Err(failure));
        })
        .map_err(|err| ParquetError::External(Box::new(err)))?;
    Ok(Encoder {
        tasks,
        replies,
        handle: Some(handle),
    })
}

/// An encoder thread's loop; returns when its queue closes, or with the first error.
fn encode_columns(
    schema: &SchemaRef,
    tasks: &Receiver<Task>,
    reply: &SyncSender<Result<Reply>>,
) -> Result<()> {
    let mut fields: Vec<FieldWriters> = Vec::new();
    for task in tasks {
        match task {
            Task::Begin(writers) => fields = writers,
            Task::Batch(batch) => {
                for field in &mut fields {
                    let started = Instant::now();
                    let leaves =
                        compute_leaves(schema.field(field.field), batch.column(field.field))?;
                    for (leaf, (_, writer)) in leaves.iter().zip(&mut field.leaves) {
                        writer.write(leaf)?;
                    }
                    field.busy_nanos += started.elapsed().as_nanos() as u64;
                }
            }
            Task::Estimate => {
                let estimate = fields
                    .iter()
                    .flat_map(|field| &field.leaves)
                    .map(|(_, writer)| writer.get_estimated_total_bytes())
                    .sum();
                if reply.send(Ok(Reply::Estimate(estimate))).is_err() {
                    return Ok(());
                }
            }
            Task::Close => {
                let mut closed = Closed {
                    chunks: Vec::new(),
                    busy_nanos: Vec::new(),
                };
                for field in std::mem::take(&mut fields) {
                    let started = Instant::now();
                    for (leaf, writer) in field.leaves {
                        closed.chunks.push((leaf, writer.close()?));
                    }
                    let nanos = field.busy_nanos + started.elapsed().as_nanos() as u64;
                    closed.busy_nanos.push((field.field, nanos));
                }
                if reply.send(Ok(Reply::Closed(closed))).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::WriterProperties;

    use super::ParallelParquetWriter;

    /// A flat, a struct and a list column: five leaf columns under three fields.
    fn batch(start: i64, rows: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + rows));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..start + rows).map(|id| format!("name {}", id % 17)),
        ));
        let scores: ArrayRef = Arc::new(Int64Array::from_iter(
            (start..start + rows).map(|id| (id % 3 != 0).then_some(id * 2)),
        ));
        let user = StructArray::from(vec![
            (Arc::new(Field::new("name", DataType::Utf8, false)), names),
            (Arc::new(Field::new("score", DataType::Int64, true)), scores),
        ]);
        let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(
            (start..start + rows).map(|id| Some((0..id % 4).map(Some).collect::<Vec<_>>())),
        );
        RecordBatch::try_from_iter([
            ("id", ids),
            ("user", Arc::new(user) as ArrayRef),
            ("tags", Arc::new(tags) as ArrayRef),
        ])
        .unwrap()
    }

    fn write(batches: &[RecordBatch], schema: Arc<Schema>, threads: usize) -> Vec<u8> {
        let mut writer = ParallelParquetWriter::try_new(
            Vec::new(),
            schema,
            WriterProperties::builder().build(),
            threads,
            700,
            1 << 20,
        )
        .unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn nested_columns_round_trip_on_several_threads_in_row_groups_of_the_limit() {
        let batches: Vec<_> = (0..10).map(|index| batch(index * 300, 300)).collect();
        let schema = batches[0].schema();
        let single = write(&batches, Arc::clone(&schema), 1);
        for threads in [2, 3, 16] {
            assert!(
                write(&batches, Arc::clone(&schema), threads) == single,
                "{threads} threads"
            );
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(single)).unwrap();
        let row_groups: Vec<_> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|group| group.num_rows())
            .collect();
        assert_eq!(row_groups, [700, 700, 700, 700, 200]);
        let read: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
        let read = concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(read, concat_batches(&schema, &batches).unwrap());
    }

    #[test]
    fn no_batches_give_a_valid_empty_file_and_a_wrong_schema_is_an_error() {
        let schema = batch(0, 1).schema();
        let empty = write(&[], Arc::clone(&schema), 2);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(empty)).unwrap();
        assert_eq!(reader.schema().fields(), schema.fields());
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);

        let mut writer = ParallelParquetWriter::try_new(
            Vec::new(),
            schema,
            WriterProperties::builder().build(),
            2,
            100,
            1 << 20,
        )
        .unwrap();
        let other =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        assert!(writer.write(&other).is_err());
    }
}
