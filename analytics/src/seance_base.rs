//! Columnar bases of the workload table, for `workloads_at(x)`.
//!
//! Every workload ever submitted stays in the view, so on a long history
//! (50,000 workloads at 10 M events) reading the table as of a past seq
//! from the row checkpoints visits every row's versions and decodes every
//! row it keeps, whatever the query reads. A *base* is the whole table as
//! of a row checkpoint, stored column by column as Arrow IPC files beside
//! the row checkpoints (`EventStore::put_workloads_base`), so a query
//! fetches only the columns it reads (`count(*)`: the keys alone). A past read then takes
//! the newest base at or before the seq (decoding Arrow IPC copies buffers,
//! it builds no row), drops the rows that changed since (the checkpoints'
//! changed lists plus the replay's rows, `EventStore::workloads_changed_since`),
//! and merges in those rows as they are at the seq, in key order. Its cost
//! follows the rows changed since the base, which [`WorkloadBases`] keeps
//! bounded by writing a new base once enough have changed.
//!
//! A base whose format or columns differ from this build's is not used:
//! the read goes through the row checkpoints as before.

use std::collections::HashSet;
use std::io::Cursor;

use claw_log::EventStore;
use datafusion::arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::{concat, filter_record_batch, interleave_record_batch};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;

use crate::view_kind::ViewKind;
use crate::{Error, Result};

/// The first byte of a stored base's head. Format 2: the head is this
/// byte, the row count (u64, little-endian) and an Arrow IPC file holding
/// only the schema (the workload table's columns as [`ViewKind::schema`]
/// lists them); part `i` is an Arrow IPC file of column `i` alone, so a
/// read fetches only the columns it needs. (Format 1, one IPC file of the
/// whole table, is not read: such bases are passed over.)
const FORMAT: u8 = 2;

/// The column holding each row's key.
const ID: usize = 0;

/// How many changed rows make a new base due, for a table of `rows` rows:
/// a past read merges at most about this many rows decoded one by one, so
/// between 256 and 2,048, a thirty-second of the table in between.
pub fn default_spacing(rows: usize) -> usize {
    (rows / 32).clamp(256, 2048)
}

/// One Arrow IPC file of `batch`.
fn ipc_file(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = FileWriter::try_new(Vec::new(), &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

/// The whole workload table, encoded as a base: its head and one part per column.
fn encode(batch: &RecordBatch) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut schema = FileWriter::try_new(Vec::new(), &batch.schema())?;
    schema.finish()?;
    let schema = schema.into_inner()?;
    let mut head = Vec::with_capacity(9 + schema.len());
    head.push(FORMAT);
    head.extend_from_slice(&(batch.num_rows() as u64).to_le_bytes());
    head.extend_from_slice(&schema);
    let parts = (0..batch.num_columns()).map(|i| ipc_file(&batch.project(&[i])?)).collect::<Result<_>>()?;
    Ok((head, parts))
}

/// The row count of the base whose head is `head`, with `Ok(None)` when
/// the base was written in another format or with other columns than this
/// build's.
fn rows_of(head: &[u8]) -> Result<Option<usize>> {
    let Some((&FORMAT, rest)) = head.split_first() else { return Ok(None) };
    let Some((rows, ipc)) = rest.split_first_chunk::<8>() else { return Ok(None) };
    let reader = FileReader::try_new(Cursor::new(ipc), None)?;
    if reader.schema().fields() != ViewKind::Workloads.schema().fields() {
        return Ok(None);
    }
    Ok(usize::try_from(u64::from_le_bytes(*rows)).ok())
}

/// Column `column` of a base of `rows` rows, from its part `bytes`.
fn column_of(bytes: &[u8], column: usize, rows: usize) -> Result<ArrayRef> {
    let schema = ViewKind::Workloads.schema();
    let reader = FileReader::try_new(Cursor::new(bytes), None)?;
    let field = &schema.fields()[column];
    if reader.schema().fields().len() != 1 || reader.schema().field(0) != field.as_ref() {
        return Err(Error::Encode(format!(
            "a workload table base's part {column} does not hold column {}",
            field.name()
        )));
    }
    let mut arrays = reader.map(|b| Ok(b?.column(0).clone())).collect::<Result<Vec<_>>>()?;
    let array = match arrays.len() {
        0 => new_empty_array(field.data_type()),
        1 => arrays.remove(0),
        _ => concat(&arrays.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
    };
    if array.len() != rows {
        return Err(Error::Encode(format!(
            "a workload table base's column {} has {} rows, its head says {rows}",
            field.name(),
            array.len()
        )));
    }
    Ok(array)
}

/// The columns `read` (indices into the workload schema, sorted) of the
/// base at `base` whose head is `head`, with `Ok(None)` when the base was
/// written in another format or with other columns than this build's, or a
/// part is gone (a snapshot install removed the base since).
fn decode(store: &EventStore, base: u64, head: &[u8], read: &[usize]) -> Result<Option<RecordBatch>> {
    let Some(rows) = rows_of(head)? else { return Ok(None) };
    let mut columns = Vec::with_capacity(read.len());
    for &i in read {
        let Some(bytes) = store.workloads_base_part(base, i)? else { return Ok(None) };
        columns.push(column_of(&bytes, i, rows)?);
    }
    let projected = std::sync::Arc::new(ViewKind::Workloads.schema().project(read)?);
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(Some(RecordBatch::try_new_with_options(projected, columns, &options)?))
}

/// The workload table right after event `seq`, only the columns
/// `projection` names (all when `None`), built from the newest base at or
/// before `seq` and the rows changed since; `Ok(None)` when no usable base
/// or chain of checkpoints exists, and the caller reads the row
/// checkpoints. Rows come in key order, as [`ViewKind::batch_of`] builds them.
pub(crate) fn workloads_at(store: &EventStore, seq: u64, projection: Option<&[usize]>) -> Result<Option<RecordBatch>> {
    // The head, the parts and the changes since are separate reads: a
    // snapshot install between them would mix two histories.
    store.read_consistently(seq, || workloads_at_once(store, seq, projection))
}

fn workloads_at_once(store: &EventStore, seq: u64, projection: Option<&[usize]>) -> Result<Option<RecordBatch>> {
    let kind = ViewKind::Workloads;
    let Some((base, head)) = store.workloads_base_at_or_before(seq)? else { return Ok(None) };
    let Some(overlay) = store.workloads_changed_since(base, seq)? else { return Ok(None) };
    let all: Vec<usize> = (0..kind.schema().fields().len()).collect();
    let wanted = projection.unwrap_or(&all);
    // The base's columns to decode: the projection's and the key.
    let mut read: Vec<usize> = wanted.iter().copied().chain([ID]).collect();
    read.sort_unstable();
    read.dedup();
    if let Some(&bad) = read.iter().find(|&&i| i >= all.len()) {
        return Err(Error::Encode(format!("{}: no column {bad} (the table has {})", kind.table(), all.len())));
    }
    let Some(stored) = decode(store, base, &head, &read)? else { return Ok(None) };
    let ids = stored
        .column(0)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Encode(format!("the workload table base at seq {base} has no string key column")))?;
    let changed: HashSet<&str> = overlay.changed.iter().map(String::as_str).collect();
    let keep: BooleanArray = ids.iter().map(|id| Some(!id.is_some_and(|id| changed.contains(id)))).collect();
    let kept = filter_record_batch(&stored, &keep)?;
    // The kept base rows in the caller's column order.
    let position = |i: usize| read.binary_search(&i).unwrap_or_default();
    let kept_ids = kept.column(0).clone();
    let kept_ids = kept_ids.as_string::<i32>();
    let kept = kept.project(&wanted.iter().map(|&i| position(i)).collect::<Vec<_>>())?;
    let fresh = kind.batch_of(&overlay.view, projection)?;
    let fresh_ids: Vec<&String> = overlay.view.workloads.keys().collect();
    let rows = kept.num_rows() + fresh.num_rows();
    if fresh.num_columns() == 0 {
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        return Ok(Some(RecordBatch::try_new_with_options(fresh.schema(), vec![], &options)?));
    }
    let kept = RecordBatch::try_new(fresh.schema(), kept.columns().to_vec())?;
    // Both are in key order and share no key: merge them.
    let mut order = Vec::with_capacity(rows);
    let (mut i, mut j) = (0, 0);
    while i < kept_ids.len() || j < fresh_ids.len() {
        if j == fresh_ids.len() || (i < kept_ids.len() && kept_ids.value(i) < fresh_ids[j].as_str()) {
            order.push((0, i));
            i += 1;
        } else {
            order.push((1, j));
            j += 1;
        }
    }
    Ok(Some(interleave_record_batch(&[&kept, &fresh], &order)?))
}

/// Keeps the bases of one member's workload table: [`WorkloadBases::write_if_due`]
/// stores one at the newest row checkpoint once the rows changed since the
/// previous base reach the spacing for the table's size.
#[derive(Debug, Default)]
pub struct WorkloadBases {
    /// The seq of the newest base known; `None` until looked up.
    last: Option<u64>,
}

impl WorkloadBases {
    /// Stores a base at the newest row checkpoint when one is due: no base
    /// yet, the chain of checkpoints since the last one broken (a snapshot
    /// install removes them), or at least `spacing(rows)` rows changed
    /// since it. Returns the seq of the base written.
    pub fn write_if_due(&mut self, store: &EventStore, spacing: impl Fn(usize) -> usize) -> Result<Option<u64>> {
        let Some(at) = store.row_checkpoint_at_or_before(store.last_seq())? else { return Ok(None) };
        if self.last.is_none() {
            // A base of another format or schema is passed over by
            // readers: one of this build's is due.
            self.last = match store.workloads_base_at_or_before(at)? {
                Some((seq, head)) if rows_of(&head)?.is_some() => Some(seq),
                _ => None,
            };
        }
        if self.last == Some(at) {
            return Ok(None);
        }
        let due = match self.last {
            None => true,
            Some(base) => match store.workload_changes(base, at)? {
                None => true,
                Some(changed) => changed.len() >= spacing(store.with_view(|v| v.workloads.len())),
            },
        };
        if !due {
            return Ok(None);
        }
        write_base(store, at)?;
        self.last = Some(at);
        Ok(Some(at))
    }
}

/// Stores a base of the workload table as of the row checkpoint at `at`.
pub(crate) fn write_base(store: &EventStore, at: u64) -> Result<()> {
    let kind = ViewKind::Workloads;
    let table = kind.batch_of(&store.view_at_summaries(at, kind.tables())?, None)?;
    let (head, parts) = encode(&table)?;
    Ok(store.put_workloads_base(at, &head, &parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_of_another_format_or_schema_are_not_used() {
        let kind = ViewKind::Workloads;
        let table = kind.batch(&claw_projections::ClusterView::default()).expect("empty table");
        let (head, parts) = encode(&table).expect("encode");
        assert_eq!(parts.len(), table.num_columns(), "one part per column");
        assert_eq!(rows_of(&head).expect("head"), Some(0));
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(&column_of(part, i, 0).expect("column"), table.column(i));
        }
        let mut other = head.clone();
        other[0] = FORMAT - 1;
        assert_eq!(rows_of(&other).expect("head"), None, "another format");
        let (fewer, _) = encode(&table.project(&[0, 1]).expect("project")).expect("encode");
        assert_eq!(rows_of(&fewer).expect("head"), None, "other columns");
        assert!(rows_of(&head[..head.len() / 2]).is_err(), "a truncated head is an error");
        assert!(column_of(&parts[1], 0, 0).is_err(), "a part holding another column");
        assert!(column_of(&parts[0], 0, 1).is_err(), "a part shorter than the head says");
        assert!(column_of(&parts[0][..parts[0].len() / 2], 0, 0).is_err(), "a truncated part");
    }
}
