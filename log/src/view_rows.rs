//! Row checkpoints of the cluster view. Every K events the state machine
//! stores the rows that changed since its previous row checkpoint, each
//! under `(table, row key, seq)`; the view as of a row checkpoint at seq C
//! is, per row key, the newest version stored at or before C. A row that
//! has not changed for a year is stored once, so a checkpoint costs what
//! changed in K events, not the size of the view (the whole-view
//! checkpoints before this were ~7 MB each on a 1 M-event history, written
//! every K events: quadratic in the history's length).
//!
//! A meta row (table 0, empty key) at C carries the view's scalars and
//! event counts and says that a complete row checkpoint exists at C.
//!
//! Rows are never deleted from the view, so there are no tombstones.
//!
//! The meta row also names the row checkpoint before it and the workload
//! rows changed since that one. Together they let a reader holding the
//! workload table as of an earlier checkpoint B (a *table base*: a columnar
//! copy the analytics layer stores under table 7) learn which rows differ
//! at a later checkpoint C without visiting every row's versions: the union
//! of the changed lists of the checkpoints in (B, C], trusted only when
//! each names the one before it as its predecessor, so none is missing.
//!
//! A workload row is stored in two parts at the same seq: the row with its
//! placements' summaries (table 3), and the per-node verdicts behind them
//! (table 6, up to 16 nodes each, most of a row's bytes). A reader that
//! needs no verdicts (SQL, whose `placement` column is the summary) reads
//! a fifth of the bytes. Rows stored before the split keep their verdicts
//! inline, and read as they were.

use std::collections::BTreeMap;

use claw_commands::NodeVerdict;
use claw_projections::{ClusterView, RowKeys, Table, ViewTables, WorkloadRow};
use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::db::{decode_packed, encode_packed, Db};
use crate::keys::{show_key, CF_VIEW_ROWS};
use crate::skip_fields::decode_skipping;
use crate::{Error, Result};

const META: u8 = 0;
const MEMBERS: u8 = 1;
const NODES: u8 = 2;
const WORKLOADS: u8 = 3;
const PROPOSALS: u8 = 4;
const INCIDENTS: u8 = 5;
const WORKLOAD_VERDICTS: u8 = 6;
/// Table bases, under row key `[table]`: an opaque copy of a whole table as
/// of a row checkpoint, written and read by the analytics layer (see
/// [`put_table_base`]). Keyed like rows, so a reader stepping through the
/// tables above stops at them.
const TABLE_BASES: u8 = 7;

/// The view's scalars at a row checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct ViewMeta {
    last_seq: u64,
    last_hash: String,
    last_time_ms: i64,
    #[serde(default)]
    event_counts: BTreeMap<String, u64>,
    /// The row checkpoint before this one when it was written (`None`: the
    /// first, or written before meta rows named it).
    #[serde(default)]
    previous: Option<u64>,
    /// The workload rows changed since `previous` (a superset after a
    /// restart: every row); `None` in meta rows written before this field.
    #[serde(default)]
    changed_workloads: Option<Vec<String>>,
}

/// The meta row's field [`workload_changes`] need not build.
const META_COUNTS: &[&str] = &["event_counts"];

/// The per-node verdicts of a workload row's last placement and of its
/// last unschedulable record, stored beside the row.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Verdicts {
    placement: Vec<NodeVerdict>,
    unschedulable: Vec<NodeVerdict>,
}

/// `row` without its verdicts, and the verdicts.
fn split_verdicts(row: &WorkloadRow) -> (WorkloadRow, Verdicts) {
    let mut row = row.clone();
    let verdicts = Verdicts {
        placement: row.placement.as_mut().map(|p| std::mem::take(&mut p.considered)).unwrap_or_default(),
        unschedulable: row.unschedulable.as_mut().map(|p| std::mem::take(&mut p.considered)).unwrap_or_default(),
    };
    (row, verdicts)
}

/// A row key as stored: members by id (u64 BE), the others by their UTF-8 key.
trait RowKey: Ord + Clone {
    fn bytes(&self) -> Vec<u8>;
    fn parse(bytes: &[u8]) -> Option<Self>;
}

impl RowKey for u64 {
    fn bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn parse(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl RowKey for String {
    fn bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn parse(bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// `[table][key length u32 BE][key][seq u64 BE]`: one row key's versions
/// sit together, oldest first.
fn row_key(table: u8, key: &[u8], seq: u64) -> Vec<u8> {
    let mut k = row_prefix(table, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn row_prefix(table: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 4 + key.len() + 8);
    push_row_prefix(&mut k, table, key);
    k
}

/// Appends `[table][key length u32 BE][key]` to `buf`.
fn push_row_prefix(buf: &mut Vec<u8>, table: u8, key: &[u8]) {
    buf.push(table);
    buf.extend_from_slice(&(key.len() as u32).to_be_bytes());
    buf.extend_from_slice(key);
}

/// Splits a stored key into `(table, row key, seq)`.
fn split(k: &[u8]) -> Option<(u8, &[u8], u64)> {
    let (&table, rest) = k.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = rest.get(4..4 + len)?;
    let seq = u64::from_be_bytes(rest.get(4 + len..)?.try_into().ok()?);
    Some((table, key, seq))
}

fn put_rows<K: RowKey, V: Serialize>(
    batch: &mut WriteBatch,
    cf: &impl rocksdb::AsColumnFamilyRef,
    table: u8,
    rows: &Table<K, V>,
    keys: impl IntoIterator<Item = K>,
    seq: u64,
) -> Result<()> {
    for key in keys {
        if let Some(row) = rows.get(&key) {
            batch.put_cf(cf, row_key(table, &key.bytes(), seq), encode_packed("view row", row)?);
        }
    }
    Ok(())
}

/// Adds to `batch` a row checkpoint of `view` at its `last_seq`: the meta
/// row and every row in `changed` (the rows touched since the previous
/// row checkpoint).
pub(crate) fn put_checkpoint(db: &Db, batch: &mut WriteBatch, view: &ClusterView, changed: RowKeys) -> Result<()> {
    let cf = db.cf(CF_VIEW_ROWS)?;
    let seq = view.last_seq;
    // `changed` holds the rows touched since the previous call; a call
    // whose write failed, or a restart, touches every row, so the list is
    // never short of the changes since the newest *stored* checkpoint.
    let previous = match seq.checked_sub(1) {
        Some(before) => checkpoint_at_or_before(db, before)?,
        None => None,
    };
    let meta = ViewMeta {
        last_seq: seq,
        last_hash: view.last_hash.clone(),
        last_time_ms: view.last_time_ms,
        event_counts: view.event_counts.clone(),
        previous,
        changed_workloads: Some(changed.workloads.iter().cloned().collect()),
    };
    batch.put_cf(&cf, row_key(META, &[], seq), encode_packed("view checkpoint", &meta)?);
    put_rows(batch, &cf, MEMBERS, &view.members, changed.members, seq)?;
    put_rows(batch, &cf, NODES, &view.nodes, changed.nodes, seq)?;
    for key in changed.workloads {
        if let Some(row) = view.workloads.get(&key) {
            let (row, verdicts) = split_verdicts(row);
            batch.put_cf(&cf, row_key(WORKLOADS, key.as_bytes(), seq), encode_packed("view row", &row)?);
            batch.put_cf(&cf, row_key(WORKLOAD_VERDICTS, key.as_bytes(), seq), encode_packed("view row", &verdicts)?);
        }
    }
    put_rows(batch, &cf, PROPOSALS, &view.proposals, changed.proposals, seq)?;
    put_rows(batch, &cf, INCIDENTS, &view.incidents, changed.incidents, seq)?;
    Ok(())
}

/// Adds to `batch` the removal of every row checkpoint.
pub(crate) fn delete_all(db: &Db, batch: &mut WriteBatch) -> Result<()> {
    let cf = db.cf(CF_VIEW_ROWS)?;
    batch.delete_range_cf(&cf, [META].as_slice(), [0xFFu8].as_slice());
    Ok(())
}

/// The seq of the newest row checkpoint at or before `seq`, if any.
pub(crate) fn checkpoint_at_or_before(db: &Db, seq: u64) -> Result<Option<u64>> {
    Ok(match db.last_at_or_before(CF_VIEW_ROWS, &row_key(META, &[], seq))? {
        Some((k, _)) => match split(&k) {
            Some((META, [], c)) => Some(c),
            _ => None,
        },
        None => None,
    })
}

/// The workload rows changed between the row checkpoints at `base` and
/// `at` (`base <= at`): the union of the changed lists of the checkpoints
/// in (`base`, `at`]. `None` when that cannot be trusted: either checkpoint
/// is missing (a snapshot install removed them), or a checkpoint in between
/// does not name its predecessor or list its changes (written by an older
/// build, or one is missing).
pub(crate) fn workload_changes(db: &Db, base: u64, at: u64) -> Result<Option<std::collections::BTreeSet<String>>> {
    let mut changed = std::collections::BTreeSet::new();
    if at < base {
        return Ok(None);
    }
    let mut expected = base; // the seq the next meta row must be (first) or name (the rest)
    let mut first = true;
    let mut intact = false;
    let mut failure = None;
    db.scan(CF_VIEW_ROWS, &row_key(META, &[], base), |k, v| {
        let Some((META, [], c)) = split(k) else { return Ok(false) };
        if c > at {
            return Ok(false);
        }
        if first {
            first = false;
            if c != base {
                return Ok(false);
            }
            intact = c == at;
            return Ok(c < at);
        }
        let meta: ViewMeta = match decode_skipping(CF_VIEW_ROWS, k, v, META_COUNTS) {
            Ok(m) => m,
            Err(e) => {
                failure = Some(e);
                return Ok(false);
            }
        };
        match (meta.previous, meta.changed_workloads) {
            (Some(p), Some(list)) if p == expected => {
                changed.extend(list);
                expected = c;
                intact = c == at;
                Ok(c < at)
            }
            _ => Ok(false),
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(intact.then_some(changed))
}

/// Stores a copy of table `table` as of the row checkpoint at `seq` (the
/// analytics layer's format) in parts, in one write: `head`, found by
/// [`table_base_at_or_before`], and `parts`, read one by one with
/// [`table_base_part`] so a reader fetches only the parts it needs.
/// Removed with the row checkpoints.
pub(crate) fn put_table_base(db: &Db, table: u8, seq: u64, head: &[u8], parts: &[Vec<u8>]) -> Result<()> {
    if parts.len() > usize::from(u8::MAX) {
        return Err(Error::Storage(format!("a table base has at most 255 parts, not {}", parts.len())));
    }
    let cf = db.cf(CF_VIEW_ROWS)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(&cf, row_key(TABLE_BASES, &[table], seq), head);
    for (i, part) in (1..=u8::MAX).zip(parts) {
        batch.put_cf(&cf, row_key(TABLE_BASES, &[table, i], seq), part);
    }
    db.write(batch, false)
}

/// The head of the newest stored base of table `table` at or before `seq`,
/// with its seq. (Heads are keyed apart from the parts, and sort before
/// them, so finding one reads no part.)
pub(crate) fn table_base_at_or_before(db: &Db, table: u8, seq: u64) -> Result<Option<(u64, Vec<u8>)>> {
    Ok(match db.last_at_or_before(CF_VIEW_ROWS, &row_key(TABLE_BASES, &[table], seq))? {
        Some((k, v)) => match split(&k) {
            Some((TABLE_BASES, t, c)) if t == [table] => Some((c, v.into_vec())),
            _ => None,
        },
        None => None,
    })
}

/// Part `part` (counted from 0) of the base of table `table` at `seq`;
/// `None` when it is not stored.
pub(crate) fn table_base_part(db: &Db, table: u8, seq: u64, part: usize) -> Result<Option<Vec<u8>>> {
    let Some(i) = part.checked_add(1).and_then(|i| u8::try_from(i).ok()) else { return Ok(None) };
    db.get_raw(CF_VIEW_ROWS, &row_key(TABLE_BASES, &[table, i], seq))
}

/// The table id table bases of the workload table are stored under.
pub(crate) const WORKLOADS_TABLE: u8 = WORKLOADS;

/// The seq of the oldest row checkpoint, if any: past states at or after it
/// never read a whole-state checkpoint.
pub(crate) fn first_checkpoint(db: &Db) -> Result<Option<u64>> {
    let mut first = None;
    db.scan(CF_VIEW_ROWS, &row_key(META, &[], 0), |k, _| {
        if let Some((META, [], c)) = split(k) {
            first = Some(c);
        }
        Ok(false)
    })?;
    Ok(first)
}

/// The view as of the row checkpoint at `at`: the tables `tables` names
/// complete, plus the single rows `rows` names in the other tables (rows
/// that did not exist then are left out). Of the view's tables only nodes
/// depend on another's rows (a workload event takes or frees GPUs on a node
/// only if its workload row exists, and frees them on the node that row
/// names), so replaying events on such a view keeps the named tables exact
/// as long as `rows` holds every row those events name. The workload table's
/// per-node verdicts are read only when `verdicts` says so (single rows
/// never carry them).
pub(crate) fn load(
    db: &Db,
    at: u64,
    tables: ViewTables,
    rows: &RowKeys,
    verdicts: bool,
    skip: Skip,
) -> Result<ClusterView> {
    let meta_key = row_key(META, &[], at);
    let stored = db
        .get_raw(CF_VIEW_ROWS, &meta_key)?
        .ok_or_else(|| Error::Storage(format!("the view checkpoint at seq {at} is missing from {CF_VIEW_ROWS}")))?;
    let meta: ViewMeta = decode_packed(CF_VIEW_ROWS, &meta_key, &stored)?;
    if meta.last_seq != at {
        return Err(Error::decode(
            format!("record {CF_VIEW_ROWS}/{}", show_key(&meta_key)),
            format!("the view checkpoint says seq {}, its key {at}", meta.last_seq),
        ));
    }
    let mut view = ClusterView {
        last_seq: meta.last_seq,
        last_hash: meta.last_hash,
        last_time_ms: meta.last_time_ms,
        event_counts: meta.event_counts,
        ..ClusterView::default()
    };
    // The verdicts are most of a whole workload table's bytes: read them
    // beside the rows, with a second iterator, and join the two by key.
    std::thread::scope(|scope| -> Result<()> {
        let stored_verdicts = (tables.workloads && verdicts).then(|| {
            scope.spawn(|| -> Result<Table<String, Verdicts>> {
                let mut stored = Table::default();
                Reader { db, at, it: db.raw_iter(CF_VIEW_ROWS)? }.table(WORKLOAD_VERDICTS, &mut stored, Skip::NONE)?;
                Ok(stored)
            })
        });
        let mut reader = Reader { db, at, it: db.raw_iter(CF_VIEW_ROWS)? };
        reader.table_or_rows(MEMBERS, tables.members, &rows.members, &mut view.members)?;
        if tables.workloads {
            reader.table(WORKLOADS, &mut view.workloads, skip)?;
        } else {
            reader.rows(WORKLOADS, &rows.workloads, &mut view.workloads)?;
        }
        reader.table_or_rows(NODES, tables.nodes, &rows.nodes, &mut view.nodes)?;
        reader.table_or_rows(PROPOSALS, tables.proposals, &rows.proposals, &mut view.proposals)?;
        reader.table_or_rows(INCIDENTS, tables.incidents, &rows.incidents, &mut view.incidents)?;
        if let Some(stored) = stored_verdicts {
            let stored = stored.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            // Written with the row at the same seq, so the newest of each
            // at or before `at` belong together. Both sides are in key order.
            let mut stored = stored.into_rows().into_iter().peekable();
            for (id, row) in view.workloads.restored_mut() {
                while stored.next_if(|(vid, _)| vid < id).is_some() {}
                if let Some((_, v)) = stored.next_if(|(vid, _)| vid == id) {
                    if let Some(p) = row.placement.as_mut() {
                        p.considered = v.placement;
                    }
                    if let Some(p) = row.unschedulable.as_mut() {
                        p.considered = v.unschedulable;
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(view)
}

/// Which fields of a table's rows to leave undecoded, and the rows to
/// decode whole regardless (by key).
#[derive(Clone, Copy)]
pub(crate) struct Skip<'a> {
    pub(crate) fields: &'a [&'a str],
    pub(crate) except: &'a std::collections::BTreeSet<String>,
}

static NO_KEYS: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

impl Skip<'static> {
    pub(crate) const NONE: Skip<'static> = Skip { fields: &[], except: &NO_KEYS };
}

struct Reader<'a> {
    db: &'a Db,
    at: u64,
    it: rocksdb::DBRawIteratorWithThreadMode<'a, rocksdb::DB>,
}

impl Reader<'_> {
    fn status(&self) -> Result<()> {
        self.it
            .status()
            .map_err(|e| Error::Storage(format!("cannot read {CF_VIEW_ROWS} in {}: {e}", self.db.path().display())))
    }

    fn table_or_rows<K: RowKey, V: DeserializeOwned>(
        &mut self,
        table: u8,
        whole: bool,
        keys: &std::collections::BTreeSet<K>,
        out: &mut Table<K, V>,
    ) -> Result<()> {
        if whole {
            self.table(table, out, Skip::NONE)
        } else {
            self.rows(table, keys, out)
        }
    }

    fn rows<K: RowKey, V: DeserializeOwned>(
        &mut self,
        table: u8,
        keys: &std::collections::BTreeSet<K>,
        out: &mut Table<K, V>,
    ) -> Result<()> {
        for key in keys {
            if let Some(row) = self.row(table, &key.bytes())? {
                out.restore(key.clone(), row);
            }
        }
        Ok(())
    }

    /// The newest version at or before `at` of one row.
    fn row<V: DeserializeOwned>(&mut self, table: u8, key: &[u8]) -> Result<Option<V>> {
        self.it.seek_for_prev(row_key(table, key, self.at));
        self.status()?;
        match (self.it.key(), self.it.value()) {
            (Some(k), Some(v)) => match split(k) {
                Some((t, rk, _)) if t == table && rk == key => Ok(Some(decode_packed(CF_VIEW_ROWS, k, v)?)),
                Some(_) => Ok(None),
                None => Err(Error::decode(format!("record {CF_VIEW_ROWS}/{}", show_key(k)), "not a view row key")),
            },
            _ => Ok(None),
        }
    }

    /// Every row of `table` as of `at`, in one forward pass: each row key's
    /// versions are stepped through oldest first (those after `at`
    /// included: a step costs far less than a seek, and most rows have a
    /// handful of versions), keeping the last at or before `at`; a row key
    /// with many versions (a node changes at every checkpoint) is crossed
    /// with two seeks instead. Only the kept version is decoded.
    /// Rows `skip` names no exception for are decoded without its fields.
    fn table<K: RowKey, V: DeserializeOwned>(&mut self, table: u8, out: &mut Table<K, V>, skip: Skip) -> Result<()> {
        const STEPS: usize = 8;
        self.it.seek([table]);
        let mut prefix = Vec::new();
        let mut newest = Vec::new();
        loop {
            self.status()?;
            let Some(k) = self.it.key() else { return Ok(()) };
            let bad_key = || Error::decode(format!("record {CF_VIEW_ROWS}/{}", show_key(k)), "not a view row key");
            let (t, key, _) = split(k).ok_or_else(bad_key)?;
            if t != table {
                return Ok(());
            }
            let parsed = K::parse(key).ok_or_else(bad_key)?;
            prefix.clear();
            push_row_prefix(&mut prefix, table, key);
            let same_row = |k: &[u8]| k.len() == prefix.len() + 8 && k.starts_with(&prefix);
            let mut newest_seq = None;
            let mut steps = 0;
            while let (Some(k), Some(v)) = (self.it.key(), self.it.value()) {
                if !same_row(k) {
                    break;
                }
                steps += 1;
                if steps > STEPS {
                    self.it.seek_for_prev(row_key(table, &prefix[5..], self.at));
                    self.status()?;
                    if let (Some(k), Some(v)) = (self.it.key(), self.it.value()) {
                        if let Some((_, _, seq)) = split(k).filter(|_| same_row(k)) {
                            newest.clear();
                            newest.extend_from_slice(v);
                            newest_seq = Some(seq);
                        }
                    }
                    // Past this row key's later versions.
                    self.it.seek(row_key(table, &prefix[5..], u64::MAX));
                    if self.it.key().is_some_and(same_row) {
                        self.it.next();
                    }
                    break;
                }
                let seq = split(k).map_or(u64::MAX, |(_, _, seq)| seq);
                if seq <= self.at {
                    newest.clear();
                    newest.extend_from_slice(v);
                    newest_seq = Some(seq);
                }
                self.it.next();
            }
            self.status()?;
            if let Some(seq) = newest_seq {
                let k = row_key(table, &prefix[5..], seq);
                let whole = std::str::from_utf8(&prefix[5..]).is_ok_and(|k| skip.except.contains(k));
                let fields = if whole { &[] } else { skip.fields };
                out.restore(parsed, decode_skipping(CF_VIEW_ROWS, &k, &newest, fields)?);
            }
        }
    }
}

/// Removes the meta row of the checkpoint at `seq`, as if it were lost.
#[cfg(test)]
pub(crate) fn delete_meta_for_test(db: &Db, seq: u64) {
    let cf = db.cf(CF_VIEW_ROWS).expect("cf");
    let mut batch = WriteBatch::default();
    batch.delete_cf(&cf, row_key(META, &[], seq));
    db.write(batch, false).expect("delete");
}

#[cfg(test)]
pub(crate) fn rows_stored_at(db: &Db, seq: u64) -> Result<usize> {
    let mut n = 0;
    db.scan(CF_VIEW_ROWS, &[MEMBERS], |k, _| {
        if split(k).is_some_and(|(_, _, s)| s == seq) {
            n += 1;
        }
        Ok(true)
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use claw_commands::{Placement, WorkloadSpec, WorkloadStatus};
    use claw_projections::MemberRow;

    use super::*;
    use crate::db::PACKED;

    fn workload(id: &str, seq: u64) -> WorkloadRow {
        WorkloadRow {
            id: id.into(),
            spec: WorkloadSpec {
                name: format!("job-{id}"),
                image: "busybox".into(),
                labels: [("team".to_string(), "ml".to_string())].into(),
                ..WorkloadSpec::default()
            },
            status: WorkloadStatus::Placed,
            submitted_by: "alice".into(),
            submitted_ms: 1_700_000_000_000,
            submitted_seq: seq,
            node: Some("node-a".into()),
            cancel_requested: false,
            cancel_reason: None,
            exit_code: None,
            started_ms: None,
            finished_ms: None,
            changed_seq: seq + 1,
            gpu_uuids: vec!["GPU-1".into()],
            placement: Some(Placement {
                strategy: "binpack".into(),
                considered: vec![NodeVerdict {
                    node: "node-a".into(),
                    failed_filter: None,
                    detail: "fits: 1 of 8 GPUs free".into(),
                    score: Some(0.5),
                }],
                chosen: Some("node-a".into()),
                summary: "placed on node-a; 1 node considered".into(),
            }),
            unschedulable: None,
            oom_killed: false,
            lost_count: 0,
        }
    }

    /// Data directories written before rows were MessagePack hold JSON
    /// rows; a past view mixing both reads exactly what was written.
    #[test]
    fn json_rows_written_before_messagepack_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), false).expect("open");
        let cf = db.cf(CF_VIEW_ROWS).expect("cf");
        let old = workload("w-old", 3);
        let (old_row, old_verdicts) = split_verdicts(&old);
        let meta = ViewMeta {
            last_seq: 10,
            last_hash: "h10".into(),
            last_time_ms: 5,
            event_counts: BTreeMap::new(),
            previous: None,
            changed_workloads: None,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf, row_key(META, &[], 10), serde_json::to_vec(&meta).expect("json"));
        batch.put_cf(&cf, row_key(WORKLOADS, b"w-old", 10), serde_json::to_vec(&old_row).expect("json"));
        batch.put_cf(&cf, row_key(WORKLOAD_VERDICTS, b"w-old", 10), serde_json::to_vec(&old_verdicts).expect("json"));
        db.write(batch, false).expect("write json rows");

        let mut view = load(&db, 10, ViewTables::ALL, &RowKeys::default(), true, Skip::NONE).expect("load json");
        assert_eq!(view.workloads.get("w-old"), Some(&old));
        let new = workload("w-new", 12);
        view.workloads.insert("w-new".into(), new.clone());
        view.members.insert(
            1,
            MemberRow { id: 1, addr: "127.0.0.1:1".into(), voter: true, added_seq: 11, added_by: "bootstrap".into() },
        );
        view.last_seq = 20;
        let changed = view.take_touched();
        let mut batch = WriteBatch::default();
        put_checkpoint(&db, &mut batch, &view, changed).expect("checkpoint");
        db.write(batch, false).expect("write");

        let stored = db.get_raw(CF_VIEW_ROWS, &row_key(WORKLOADS, b"w-new", 20)).expect("read").expect("stored");
        assert_eq!(stored[0], PACKED);
        let as_json = serde_json::to_vec(&split_verdicts(&new).0).expect("json");
        assert!(stored.len() < as_json.len(), "MessagePack {} bytes, JSON {}", stored.len(), as_json.len());

        let at20 = load(&db, 20, ViewTables::ALL, &RowKeys::default(), true, Skip::NONE).expect("load mixed");
        assert_eq!(at20.workloads.get("w-old"), Some(&old), "the JSON row, with its verdicts");
        assert_eq!(at20.workloads.get("w-new"), Some(&new), "the MessagePack row, with its verdicts");
        assert_eq!(at20.members, view.members);
        assert_eq!(at20.last_seq, 20);
        let at10 = load(&db, 10, ViewTables::ALL, &RowKeys::default(), false, Skip::NONE).expect("load json again");
        assert!(!at10.workloads.contains_key("w-new"));
        assert_eq!(at10.workloads.len(), 1);
    }

    /// A damaged MessagePack row is an error naming the record, never a
    /// panic or a row made up from the damage.
    #[test]
    fn damaged_messagepack_rows_are_errors_naming_the_record() {
        let good = crate::db::encode_packed("view row", &split_verdicts(&workload("w-1", 1)).0).expect("encode");
        let key = row_key(WORKLOADS, b"w-1", 7);
        let named = |e: Error| {
            let msg = e.to_string();
            assert!(msg.contains(&format!("view_rows/{}", show_key(&key))), "{msg}");
            assert!(msg.contains("MessagePack"), "{msg}");
        };
        for cut in 1..good.len() {
            match decode_packed::<WorkloadRow>(CF_VIEW_ROWS, &key, &good[..cut]) {
                Err(e) => named(e),
                Ok(row) => panic!("a row cut at {cut} of {} bytes decoded: {row:?}", good.len()),
            }
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = 1 + (x as usize) % (bytes.len() - 1);
                bytes[i] = (x >> 32) as u8;
            }
            if let Err(e) = decode_packed::<WorkloadRow>(CF_VIEW_ROWS, &key, &bytes) {
                named(e);
            }
        }
    }

    #[test]
    fn keys_split_back_and_sort_by_row_then_seq() {
        let a = row_key(WORKLOADS, b"w-1", 7);
        assert_eq!(split(&a), Some((WORKLOADS, &b"w-1"[..], 7)));
        assert!(row_key(WORKLOADS, b"w-1", 7) < row_key(WORKLOADS, b"w-1", 300));
        assert!(row_key(WORKLOADS, b"w-1", u64::MAX) < row_key(WORKLOADS, b"w-2", 0));
        assert!(row_key(NODES, b"zzz", u64::MAX) < row_key(WORKLOADS, b"", 0));
        assert_eq!(split(&a[..a.len() - 1]), None);
        assert_eq!(split(&row_key(META, &[], 3)), Some((META, &[][..], 3)));
    }
}
