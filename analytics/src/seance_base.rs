//! Columnar bases of the workload table, for `workloads_at(x)`.
//!
//! Every workload ever submitted stays in the view, so on a long history
//! (50,000 workloads at 10 M events) reading the table as of a past seq
//! from the row checkpoints visits every row's versions and decodes every
//! row it keeps, whatever the query reads. A *base* is the whole table as
//! of a row checkpoint, stored as one Arrow IPC file beside the row
//! checkpoints (`EventStore::put_workloads_base`). A past read then takes
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
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;

use crate::view_kind::ViewKind;
use crate::{Error, Result};

/// The first byte of a stored base: an Arrow IPC file of the workload
/// table's columns as [`ViewKind::schema`] lists them.
const FORMAT: u8 = 1;

/// The column holding each row's key.
const ID: usize = 0;

/// How many changed rows make a new base due, for a table of `rows` rows:
/// a past read merges at most about this many rows decoded one by one, so
/// between 256 and 2,048, a thirty-second of the table in between.
pub fn default_spacing(rows: usize) -> usize {
    (rows / 32).clamp(256, 2048)
}

/// The whole workload table, encoded as a base.
fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = FileWriter::try_new(Vec::new(), &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    let ipc = w.into_inner()?;
    let mut out = Vec::with_capacity(1 + ipc.len());
    out.push(FORMAT);
    out.extend_from_slice(&ipc);
    Ok(out)
}

/// The columns `read` (indices into the workload schema, sorted) of the
/// base in `bytes`, with `Ok(None)` when the base was written in another
/// format or with other columns than this build's.
fn decode(bytes: &[u8], read: &[usize]) -> Result<Option<RecordBatch>> {
    let Some((&FORMAT, ipc)) = bytes.split_first() else { return Ok(None) };
    let schema = ViewKind::Workloads.schema();
    let reader = FileReader::try_new(Cursor::new(ipc), None)?;
    if reader.schema().fields() != schema.fields() {
        return Ok(None);
    }
    let reader = FileReader::try_new(Cursor::new(ipc), Some(read.to_vec()))?;
    let projected = std::sync::Arc::new(schema.project(read)?);
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Some(datafusion::arrow::compute::concat_batches(&projected, &batches)?))
}

/// The workload table right after event `seq`, only the columns
/// `projection` names (all when `None`), built from the newest base at or
/// before `seq` and the rows changed since; `Ok(None)` when no usable base
/// or chain of checkpoints exists, and the caller reads the row
/// checkpoints. Rows come in key order, as [`ViewKind::batch_of`] builds them.
pub(crate) fn workloads_at(store: &EventStore, seq: u64, projection: Option<&[usize]>) -> Result<Option<RecordBatch>> {
    let kind = ViewKind::Workloads;
    let Some((base, bytes)) = store.workloads_base_at_or_before(seq)? else { return Ok(None) };
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
    let Some(stored) = decode(&bytes, &read)? else { return Ok(None) };
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
            self.last = store.workloads_base_at_or_before(at)?.map(|(seq, _)| seq);
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
    Ok(store.put_workloads_base(at, &encode(&table)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_of_another_format_or_schema_are_not_used() {
        let kind = ViewKind::Workloads;
        let table = kind.batch(&claw_projections::ClusterView::default()).expect("empty table");
        let bytes = encode(&table).expect("encode");
        let all: Vec<usize> = (0..table.num_columns()).collect();
        assert_eq!(decode(&bytes, &all).expect("decode").expect("this build's base"), table);
        let mut other = bytes.clone();
        other[0] = FORMAT + 1;
        assert!(decode(&other, &all).expect("decode").is_none(), "another format");
        let fewer = encode(&table.project(&[0, 1]).expect("project")).expect("encode");
        assert!(decode(&fewer, &all).expect("decode").is_none(), "other columns");
        assert!(decode(&bytes[..bytes.len() / 2], &all).is_err(), "a truncated base is an error");
    }
}
