//! The subject index: for every event about a node or a workload, a key
//! `(subject, seq)` with an empty value in the `subjects` column family, so
//! a read of one node's or one workload's events (`EventFilter::node` /
//! `workload`) reads those events only, not every event in the seq range.
//!
//! Written in the same batch as the events. A store created before the
//! index existed has it only from the seq it was opened at with this build
//! (`SmMetaKey::SubjectsFrom`); reads starting earlier scan as before.

use claw_commands::EventRecord;
use rocksdb::WriteBatch;

use crate::db::{decode_json, encode_json, Db};
use crate::keys::{decode_u64, show_key, u64_key, SmMetaKey, CF_EVENTS, CF_SM_META, CF_SUBJECTS};
use crate::{Error, EventFilter, Result};

const NODE: u8 = 1;
const WORKLOAD: u8 = 2;

/// `[kind][name length u32 BE][name]`: one subject's keys sit together.
fn prefix(kind: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 4 + name.len() + 8);
    k.push(kind);
    k.extend_from_slice(&(name.len() as u32).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn key(kind: u8, name: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(kind, name);
    k.extend_from_slice(&u64_key(seq));
    k
}

/// Adds `rec`'s index keys to `batch` (`cf`: the `subjects` column family).
pub(crate) fn put(cf: &impl rocksdb::AsColumnFamilyRef, batch: &mut WriteBatch, rec: &EventRecord) {
    if let Some(n) = rec.event.node() {
        batch.put_cf(cf, key(NODE, n, rec.seq), []);
    }
    if let Some(w) = rec.event.workload_id() {
        batch.put_cf(cf, key(WORKLOAD, w, rec.seq), []);
    }
}

/// Adds to `batch` the removal of the whole index, which from then on
/// covers the history from seq 1 (a snapshot install rewrites all of it).
pub(crate) fn reset(db: &Db, batch: &mut WriteBatch) -> Result<()> {
    let cf = db.cf(CF_SUBJECTS)?;
    batch.delete_range_cf(&cf, [0u8].as_slice(), [0xFFu8].as_slice());
    let sm = db.cf(CF_SM_META)?;
    batch.put_cf(&sm, SmMetaKey::SubjectsFrom.encode(), encode_json("subject index start", &1u64)?);
    Ok(())
}

/// The first seq the index covers; on a store that has none yet, records
/// that it starts after `last_seq` (every later event is indexed).
pub(crate) fn open(db: &Db, last_seq: u64) -> Result<u64> {
    if let Some(from) = db.get_json::<u64>(CF_SM_META, &SmMetaKey::SubjectsFrom.encode())? {
        return Ok(from);
    }
    let from = last_seq + 1;
    let mut batch = WriteBatch::default();
    batch.put_cf(&db.cf(CF_SM_META)?, SmMetaKey::SubjectsFrom.encode(), encode_json("subject index start", &from)?);
    db.write(batch, true)?;
    Ok(from)
}

/// A page of a read through the index.
pub(crate) struct Page {
    pub(crate) records: Vec<EventRecord>,
    /// The last seq the read can vouch for: everything in `from..=examined_to`
    /// that matches is in `records`.
    pub(crate) examined_to: u64,
    /// Events read from the history to find them.
    pub(crate) read: u64,
}

/// The events in `from..=to` that `filter` matches, at most `limit`, read
/// through the index of its node (or, without one, its workload). `None`
/// when the filter names neither.
pub(crate) fn read(db: &Db, from: u64, to: u64, limit: usize, filter: &EventFilter) -> Result<Option<Page>> {
    let subject = match (&filter.node, &filter.workload) {
        (Some(n), _) => prefix(NODE, n),
        (None, Some(w)) => prefix(WORKLOAD, w),
        (None, None) => return Ok(None),
    };
    let mut page = Page { records: Vec::new(), examined_to: to, read: 0 };
    if from > to || limit == 0 {
        return Ok(Some(page));
    }
    let mut start = subject.clone();
    start.extend_from_slice(&u64_key(from));
    db.scan(CF_SUBJECTS, &start, |k, _| {
        let Some(seq) = k.strip_prefix(subject.as_slice()).and_then(decode_u64) else {
            return Ok(false);
        };
        if seq > to {
            return Ok(false);
        }
        let seq_key = u64_key(seq);
        let bytes = db.get_raw(CF_EVENTS, &seq_key)?.ok_or_else(|| {
            Error::Storage(format!(
                "the subject index of {} names event {seq}, which is not stored",
                db.path().display()
            ))
        })?;
        page.read += 1;
        let rec: EventRecord = decode_json(CF_EVENTS, &seq_key, &bytes)?;
        if rec.seq != seq {
            return Err(Error::decode(format!("record {CF_EVENTS}/{}", show_key(&seq_key)), "holds another seq"));
        }
        if filter.matches(&rec) {
            page.records.push(rec);
            if page.records.len() >= limit {
                page.examined_to = seq;
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    Ok(Some(page))
}
