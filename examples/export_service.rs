//! An HTTP service that streams a large export as CSV, JSON Lines or Parquet.
//!
//! ```text
//! cargo run --release --example export_service -- 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/export?format=csv&rows=10000000&where=amount>4000&select=id,amount'
//! curl -o orders.parquet 'http://127.0.0.1:3000/export?format=parquet&rows=1000000'
//! ```
//!
//! `GET /export` streams the orders a generator makes (`rows` of them, default 1,000,000),
//! filtered by `where` and projected by `select` (SQL), encoded as `format` (`csv`,
//! `jsonl`, `parquet`). The body starts as soon as the first batch is encoded, the generator
//! runs no faster than the client reads, and a client that disconnects stops it: memory per
//! download stays at a few batches and buffers, whatever the export's size.
//!
//! `GET /export-collected` answers the same query the usual way, collecting every batch and
//! then encoding the whole body in memory, for comparison: its memory grows with the export.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aqueduct::arrow::array::RecordBatch;
use aqueduct::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use aqueduct::stream::{Pipeline, RowSource};
use aqueduct::{Format, SinkOptions};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};

/// The service's shared state.
#[derive(Clone, Default)]
pub struct Exports {
    /// Orders generated so far, over all requests.
    pub rows_generated: Arc<AtomicU64>,
}

/// The query of an export.
#[derive(Debug, serde::Deserialize)]
pub struct ExportQuery {
    format: Option<String>,
    rows: Option<u64>,
    #[serde(rename = "where")]
    predicate: Option<String>,
    select: Option<String>,
}

/// One generated order.
#[derive(serde::Serialize)]
struct Order {
    id: u64,
    customer_id: u64,
    status: &'static str,
    amount: f64,
    /// Microseconds since the epoch.
    created_at: i64,
}

const STATUSES: [&str; 4] = ["active", "pending", "shipped", "cancelled"];

/// The generated order with this id; the same id always gives the same order.
fn order(id: u64) -> Order {
    Order {
        id,
        customer_id: id.wrapping_mul(7919) % 100_000,
        status: STATUSES[(id % 4) as usize],
        amount: (id.wrapping_mul(104_729) % 500_000) as f64 / 100.0,
        created_at: 1_704_067_200_000_000 + id as i64 * 1_000_000,
    }
}

/// The schema of the generated orders.
pub fn order_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("customer_id", DataType::UInt64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// The service's routes.
pub fn app(exports: Exports) -> Router {
    Router::new()
        .route("/export", get(export))
        .route("/export-collected", get(export_collected))
        .with_state(exports)
}

fn bad_request(message: impl ToString) -> Response {
    (StatusCode::BAD_REQUEST, message.to_string()).into_response()
}

fn format_of(query: &ExportQuery) -> Result<Format, String> {
    match query.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(Format::Csv),
        "jsonl" => Ok(Format::Jsonl),
        "parquet" => Ok(Format::Parquet),
        other => Err(format!("unknown format `{other}`: csv, jsonl or parquet")),
    }
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Csv => "text/csv",
        Format::Jsonl => "application/x-ndjson",
        _ => "application/vnd.apache.parquet",
    }
}

/// The pipeline of an export: generated orders, counted as they are made, then the query's
/// filter and select.
fn pipeline(exports: &Exports, query: &ExportQuery) -> aqueduct::Result<Pipeline> {
    let generated = Arc::clone(&exports.rows_generated);
    let orders = (0..query.rows.unwrap_or(1_000_000)).map(move |id| {
        generated.fetch_add(1, Ordering::Relaxed);
        order(id)
    });
    let mut pipeline = Pipeline::new(RowSource::new(order_schema(), orders, 8192)?);
    if let Some(predicate) = &query.predicate {
        pipeline = pipeline.filter(predicate);
    }
    if let Some(select) = &query.select {
        pipeline = pipeline.select(select);
    }
    Ok(pipeline)
}

/// Streams the export: each chunk of the body leaves as soon as it is encoded.
async fn export(State(exports): State<Exports>, Query(query): Query<ExportQuery>) -> Response {
    let format = match format_of(&query) {
        Ok(format) => format,
        Err(message) => return bad_request(message),
    };
    let bytes = match pipeline(&exports, &query)
        .and_then(|pipeline| pipeline.into_bytes(format, &SinkOptions::default()))
    {
        Ok(bytes) => bytes,
        Err(err) => return bad_request(err),
    };
    // When the client goes, the server drops the body and with it the byte stream, which
    // cancels the pipeline.
    let body = Body::from_stream(bytes.map(|chunk| chunk.map(axum::body::Bytes::from)));
    ([(header::CONTENT_TYPE, content_type(format))], body).into_response()
}

/// The same export the usual way: every batch in memory, then the whole body.
async fn export_collected(
    State(exports): State<Exports>,
    Query(query): Query<ExportQuery>,
) -> Response {
    let format = match format_of(&query) {
        Ok(format) => format,
        Err(message) => return bad_request(message),
    };
    let batches: Vec<RecordBatch> = match pipeline(&exports, &query) {
        Ok(pipeline) => match pipeline.into_stream() {
            Ok(stream) => match stream.try_collect().await {
                Ok(batches) => batches,
                Err(err) => return bad_request(err),
            },
            Err(err) => return bad_request(err),
        },
        Err(err) => return bad_request(err),
    };
    match encode_whole(&batches, format) {
        Ok(body) => ([(header::CONTENT_TYPE, content_type(format))], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err).into_response(),
    }
}

fn encode_whole(batches: &[RecordBatch], format: Format) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let schema = batches
        .first()
        .map_or_else(order_schema, RecordBatch::schema);
    match format {
        Format::Csv => {
            let mut writer = aqueduct::arrow::csv::Writer::new(&mut body);
            for batch in batches {
                writer.write(batch).map_err(|err| err.to_string())?;
            }
        }
        Format::Jsonl => {
            let mut writer = aqueduct::arrow::json::LineDelimitedWriter::new(&mut body);
            for batch in batches {
                writer.write(batch).map_err(|err| err.to_string())?;
            }
            writer.finish().map_err(|err| err.to_string())?;
        }
        _ => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut body, schema, None)
                .map_err(|err| err.to_string())?;
            for batch in batches {
                writer.write(batch).map_err(|err| err.to_string())?;
            }
            writer.close().map_err(|err| err.to_string())?;
        }
    }
    Ok(body)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("export service on http://{}/export", listener.local_addr()?);
    axum::serve(listener, app(Exports::default())).await
}
