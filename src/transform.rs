//! Transforms: per-batch kernels between the source and the sink.
//!
//! A [`Transform`] is described before the input schema is known (SQL text or a function)
//! and planned once against it into a [`PlannedTransform`], which then runs on every batch.
//! Filters and selects are DataFusion physical expressions, so each runs as vectorised
//! kernels over whole columns. A column that a select passes through unchanged keeps its
//! buffers: no data is copied.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion_physical_expr::PhysicalExpr;

use crate::error::{Error, Result};
use crate::sql::{PlannedColumn, SqlPlanner};

/// A user function over batches, for [`Transform::Map`].
pub type MapFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync>;

/// One transform step, as described by the user.
#[derive(Clone)]
pub enum Transform {
    /// Keeps the rows for which the SQL predicate is true (null counts as false).
    Filter(String),
    /// Replaces the columns with a SQL select list: `a, lower(b) AS b, c * 2 AS d`.
    Select(String),
    /// A Rust function over each batch. It must return batches of the schema given here.
    Map {
        /// The schema of the batches the function returns.
        output_schema: SchemaRef,
        /// The function.
        function: MapFn,
        /// Threads that run it, in order; 1 runs it on the transform thread.
        workers: usize,
    },
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Filter(sql) => f.debug_tuple("Filter").field(sql).finish(),
            Transform::Select(sql) => f.debug_tuple("Select").field(sql).finish(),
            Transform::Map { output_schema, .. } => f
                .debug_struct("Map")
                .field("output_schema", output_schema)
                .finish_non_exhaustive(),
        }
    }
}

/// A transform planned against its input schema, ready to run on batches.
pub enum PlannedTransform {
    /// A planned predicate.
    Filter {
        /// The SQL text, for error messages.
        sql: String,
        /// The predicate kernel.
        predicate: Arc<dyn PhysicalExpr>,
    },
    /// A planned select list.
    Select {
        /// The SQL text, for error messages.
        sql: String,
        /// One kernel per output column.
        columns: Vec<PlannedColumn>,
        /// The output schema.
        schema: SchemaRef,
    },
    /// A user function.
    Map {
        /// The schema of the function's output.
        schema: SchemaRef,
        /// The function.
        function: MapFn,
        /// Threads that run it.
        workers: usize,
    },
}

impl Transform {
    /// Plans this transform for batches of `input`. Fails on SQL that does not parse or does
    /// not fit the schema.
    pub fn plan(&self, input: &SchemaRef) -> Result<PlannedTransform> {
        match self {
            Transform::Filter(sql) => Ok(PlannedTransform::Filter {
                sql: sql.clone(),
                predicate: SqlPlanner::new(input)?.predicate(sql)?,
            }),
            Transform::Select(sql) => {
                let columns = SqlPlanner::new(input)?.projection(sql)?;
                let fields: Vec<_> = columns.iter().map(|column| column.field.clone()).collect();
                Ok(PlannedTransform::Select {
                    sql: sql.clone(),
                    columns,
                    schema: Arc::new(Schema::new(fields)),
                })
            }
            Transform::Map {
                output_schema,
                function,
                workers,
            } => Ok(PlannedTransform::Map {
                schema: Arc::clone(output_schema),
                function: Arc::clone(function),
                workers: (*workers).max(1),
            }),
        }
    }
}

impl PlannedTransform {
    /// The schema of the batches this transform returns, given its input schema.
    pub fn output_schema(&self, input: &SchemaRef) -> SchemaRef {
        match self {
            PlannedTransform::Filter { .. } => Arc::clone(input),
            PlannedTransform::Select { schema, .. } | PlannedTransform::Map { schema, .. } => {
                Arc::clone(schema)
            }
        }
    }

    /// Runs the transform on one batch. A filter may return an empty batch.
    pub fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        match self {
            PlannedTransform::Filter { sql, predicate } => filter(sql, predicate, batch),
            PlannedTransform::Select {
                sql,
                columns,
                schema,
            } => select(sql, columns, schema, &batch),
            PlannedTransform::Map {
                schema, function, ..
            } => {
                let output = function(batch)?;
                if output.schema().fields() != schema.fields() {
                    return Err(Error::Map {
                        message: format!(
                            "returned a batch of schema {:?}, declared {:?}",
                            output.schema(),
                            schema
                        ),
                    });
                }
                Ok(output)
            }
        }
    }
}

fn evaluate_error(sql: &str, err: impl fmt::Display) -> Error {
    Error::Evaluate {
        expr: sql.to_owned(),
        message: err.to_string(),
    }
}

fn filter(sql: &str, predicate: &Arc<dyn PhysicalExpr>, batch: RecordBatch) -> Result<RecordBatch> {
    let mask = predicate
        .evaluate(&batch)
        .and_then(|value| value.into_array(batch.num_rows()))
        .map_err(|err| evaluate_error(sql, err))?;
    let mask = match mask.data_type() {
        DataType::Boolean => mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("boolean data type is a BooleanArray")
            .clone(),
        // A predicate that is always NULL, such as `x = NULL`, keeps nothing.
        _ => BooleanArray::from(vec![false; batch.num_rows()]),
    };
    if mask.null_count() == 0 && mask.true_count() == batch.num_rows() {
        return Ok(batch);
    }
    filter_record_batch(&batch, &mask).map_err(|err| evaluate_error(sql, err))
}

fn select(
    sql: &str,
    columns: &[PlannedColumn],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let arrays = columns
        .iter()
        .map(|column| {
            column
                .expr
                .evaluate(batch)
                .and_then(|value| value.into_array(batch.num_rows()))
        })
        .collect::<datafusion_common::Result<Vec<ArrayRef>>>()
        .map_err(|err| evaluate_error(sql, err))?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &options)
        .map_err(|err| evaluate_error(sql, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::util::pretty::pretty_format_batches;

    fn orders() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as _),
            (
                "email",
                Arc::new(StringArray::from(vec![
                    Some("A@X.COM"),
                    Some("b@y.org"),
                    None,
                    Some("D@z.net"),
                ])) as _,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![
                    Some(10.0),
                    Some(200.0),
                    Some(300.0),
                    None,
                ])) as _,
            ),
        ])
        .unwrap()
    }

    fn run(transforms: &[Transform], batch: RecordBatch) -> RecordBatch {
        let mut batch = batch;
        for transform in transforms {
            let planned = transform.plan(&batch.schema()).unwrap();
            batch = planned.apply(batch).unwrap();
        }
        batch
    }

    #[test]
    fn filter_then_select_gives_the_expected_table() {
        let out = run(
            &[
                Transform::Filter("amount > 100".into()),
                Transform::Select("id, lower(email) AS email, amount * 2 AS twice".into()),
            ],
            orders(),
        );
        let expected = [
            "+----+---------+-------+",
            "| id | email   | twice |",
            "+----+---------+-------+",
            "| 2  | b@y.org | 400.0 |",
            "| 3  |         | 600.0 |",
            "+----+---------+-------+",
        ]
        .join("\n");
        assert_eq!(pretty_format_batches(&[out]).unwrap().to_string(), expected);
    }

    #[test]
    fn null_predicate_rows_are_dropped() {
        let out = run(&[Transform::Filter("amount < 1000".into())], orders());
        assert_eq!(out.num_rows(), 3);
    }

    #[test]
    fn passed_through_columns_share_buffers() {
        let input = orders();
        let out = run(&[Transform::Select("amount, id".into())], input.clone());
        assert!(Arc::ptr_eq(out.column(1), input.column(0)));
        assert_eq!(
            out.column(0).to_data().buffers()[0].as_ptr(),
            input.column(2).to_data().buffers()[0].as_ptr()
        );
    }

    #[test]
    fn filter_keeping_everything_returns_the_same_batch() {
        let input = orders();
        let out = run(&[Transform::Filter("id > 0".into())], input.clone());
        assert!(Arc::ptr_eq(out.column(1), input.column(1)));
    }
}
