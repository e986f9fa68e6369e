use std::sync::{Arc, LazyLock};

use claw_commands::{Actor, Event, EventRecord};
use claw_log::EventHead;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, RecordBatchOptions, StringBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// The type of every time column: milliseconds since the epoch, in UTC.
pub(crate) fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The columns of `events`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Seq,
    Time,
    Kind,
    Actor,
    ActorKind,
    Node,
    Workload,
    CommandId,
    CorrelationId,
    RaftIndex,
    Hash,
    Payload,
}

const COLUMNS: [Column; 12] = [
    Column::Seq,
    Column::Time,
    Column::Kind,
    Column::Actor,
    Column::ActorKind,
    Column::Node,
    Column::Workload,
    Column::CommandId,
    Column::CorrelationId,
    Column::RaftIndex,
    Column::Hash,
    Column::Payload,
];

impl Column {
    fn field(self) -> Field {
        let (name, ty, nullable) = match self {
            Column::Seq => ("seq", DataType::UInt64, false),
            Column::Time => ("time", time_type(), false),
            Column::Kind => ("kind", DataType::Utf8, false),
            Column::Actor => ("actor", DataType::Utf8, false),
            Column::ActorKind => ("actor_kind", DataType::Utf8, false),
            Column::Node => ("node", DataType::Utf8, true),
            Column::Workload => ("workload", DataType::Utf8, true),
            Column::CommandId => ("command_id", DataType::Utf8, false),
            Column::CorrelationId => ("correlation_id", DataType::Utf8, false),
            Column::RaftIndex => ("raft_index", DataType::UInt64, false),
            Column::Hash => ("hash", DataType::Utf8, false),
            Column::Payload => ("payload", DataType::Utf8, false),
        };
        Field::new(name, ty, nullable)
    }

    fn builder(self) -> Box<dyn ArrayBuilder> {
        match self {
            Column::Seq | Column::RaftIndex => Box::new(UInt64Builder::new()),
            Column::Time => Box::new(TimestampMillisecondBuilder::new().with_timezone("UTC")),
            _ => Box::new(StringBuilder::new()),
        }
    }

    /// Whether the column comes from the event's own fields, which an
    /// [`EventHead`] leaves out.
    fn needs_event(self) -> bool {
        matches!(self, Column::Node | Column::Workload | Column::Payload)
    }

    fn append(self, b: &mut dyn ArrayBuilder, row: &Row<'_>) -> Result<()> {
        let any = b.as_any_mut();
        let event =
            || row.event.ok_or_else(|| Error::Encode(format!("column {} needs the whole event", self.field().name())));
        match self {
            Column::Seq => downcast::<UInt64Builder>(any).append_value(row.seq),
            Column::RaftIndex => downcast::<UInt64Builder>(any).append_value(row.raft_index),
            Column::Time => downcast::<TimestampMillisecondBuilder>(any).append_value(row.time_ms),
            Column::Kind => downcast::<StringBuilder>(any).append_value(row.kind),
            Column::Actor => downcast::<StringBuilder>(any).append_value(&row.actor.name),
            Column::ActorKind => downcast::<StringBuilder>(any).append_value(row.actor.kind.as_str()),
            Column::Node => downcast::<StringBuilder>(any).append_option(event()?.node()),
            Column::Workload => downcast::<StringBuilder>(any).append_option(event()?.workload_id()),
            Column::CommandId => downcast::<StringBuilder>(any).append_value(row.command_id),
            Column::CorrelationId => downcast::<StringBuilder>(any).append_value(row.correlation_id),
            Column::Hash => downcast::<StringBuilder>(any).append_value(row.hash),
            Column::Payload => {
                // The event is serialised generically, so new variants show
                // up here without a change to this crate.
                let json = serde_json::to_string(event()?).map_err(|e| Error::Encode(e.to_string()))?;
                downcast::<StringBuilder>(any).append_value(json);
            }
        }
        Ok(())
    }
}

/// One stored event as a scan read it: its head, and its fields when the
/// whole record was decoded.
pub(crate) struct Row<'a> {
    seq: u64,
    raft_index: u64,
    time_ms: i64,
    kind: &'a str,
    actor: &'a Actor,
    command_id: &'a str,
    correlation_id: &'a str,
    hash: &'a str,
    event: Option<&'a Event>,
}

impl<'a> Row<'a> {
    pub(crate) fn of_record(r: &'a EventRecord) -> Self {
        Row {
            seq: r.seq,
            raft_index: r.raft_index,
            time_ms: r.time_ms,
            kind: r.event.kind(),
            actor: &r.actor,
            command_id: &r.command_id,
            correlation_id: &r.correlation_id,
            hash: &r.hash,
            event: Some(&r.event),
        }
    }

    pub(crate) fn time_ms(&self) -> i64 {
        self.time_ms
    }

    pub(crate) fn of_head(h: &'a EventHead) -> Self {
        Row {
            seq: h.seq,
            raft_index: h.raft_index,
            time_ms: h.time_ms,
            kind: &h.event.kind,
            actor: &h.actor,
            command_id: &h.command_id,
            correlation_id: &h.correlation_id,
            hash: &h.hash,
            event: None,
        }
    }
}

fn downcast<T: 'static>(any: &mut dyn std::any::Any) -> &mut T {
    // Every builder is made by `Column::builder` for the same column.
    any.downcast_mut::<T>().expect("builder type matches its column")
}

static SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| Arc::new(Schema::new(COLUMNS.iter().map(|c| c.field()).collect::<Vec<_>>())));

/// Builds `events` rows, one per stored record, filling only the projected
/// columns: the JSON payload is the costly one and most queries skip it.
pub(crate) struct EventsBatch {
    cols: Vec<(Column, Box<dyn ArrayBuilder>)>,
    rows: usize,
}

impl EventsBatch {
    /// The full schema of `events`.
    pub(crate) fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    /// A builder for the columns at `projection` (indices into [`EventsBatch::schema`]).
    pub(crate) fn new(projection: &[usize]) -> Self {
        let cols = projection.iter().map(|&i| (COLUMNS[i], COLUMNS[i].builder())).collect();
        EventsBatch { cols, rows: 0 }
    }

    /// Whether the columns at `projection` can be filled from
    /// [`EventHead`]s alone (no node, workload or payload column).
    pub(crate) fn heads_suffice(projection: &[usize]) -> bool {
        projection.iter().all(|&i| !COLUMNS[i].needs_event())
    }

    pub(crate) fn append(&mut self, row: &Row<'_>) -> Result<()> {
        for (col, b) in &mut self.cols {
            col.append(b.as_mut(), row)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows appended so far, as a batch of `schema` (the projected schema).
    pub(crate) fn finish(&mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let arrays = self.cols.iter_mut().map(|(_, b)| b.finish()).collect();
        let rows = std::mem::take(&mut self.rows);
        batch(schema, arrays, rows)
    }
}

/// A batch that keeps its row count even with no columns (`SELECT count(*)`).
pub(crate) fn batch(schema: SchemaRef, arrays: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
}
