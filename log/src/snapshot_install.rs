//! Installing a snapshot a leader sent: every event since the first, which
//! on a long history is more than memory. It is read twice from the file
//! it was received into, one event at a time. The first pass checks it (its
//! hash chain, its length against its checkpoint, its dedup rows against
//! its events) and writes nothing, so a broken snapshot leaves the store as
//! it was. The second folds it and writes it in batches: the first batch
//! clears the old history and records that an install is under way (and
//! from which file); the last stores the state and removes that record. A
//! member stopped in between finds the record when it opens and runs the
//! install again from the file before anything reads the store.

use std::io::Read;
use std::path::{Path, PathBuf};

use claw_commands::{evolve, verify_chain, ChainError, EventRecord, GENESIS_HASH};
use openraft::{BasicNode, SnapshotMeta};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointRef};
use crate::db::{encode_json, Db};
use crate::dedup_row::DedupRow;
use crate::keys::{dedup_key, u64_key, SmMetaKey, CF_DEDUP, CF_EVENTS, CF_SM_META, CF_SUBJECTS};
use crate::log_node::Checkpoints;
use crate::snapshot_payload::{visit_payload, PayloadVisit, SnapshotRecord};
use crate::subject_index;
use crate::view_rows;
use crate::{Error, Result};

/// About this many bytes per write batch of an install.
const BATCH_BYTES: usize = 32 << 20;

/// An install under way (`SmMetaKey::Installing`): the snapshot, and the
/// file it is read from (none for one installed from memory).
#[derive(Debug, Serialize, Deserialize)]
struct Installing {
    meta: SnapshotMeta<u64, BasicNode>,
    file: Option<PathBuf>,
}

fn name(meta: &SnapshotMeta<u64, BasicNode>) -> String {
    format!("snapshot {}", meta.snapshot_id)
}

/// The first pass: the snapshot's checkpoint (its decision state
/// reindexed), once its events were seen to match it. Writes nothing.
pub(crate) fn check<'a>(
    meta: &SnapshotMeta<u64, BasicNode>,
    open: &dyn Fn() -> Result<Box<dyn Read + 'a>>,
) -> Result<Checkpoint> {
    let what = name(meta);
    let mut check = InstallCheck::new(&what);
    visit_payload(open()?, &what, &mut check)?;
    let mut cp = check.finish()?;
    cp.decision.reindex();
    Ok(cp)
}

/// Whether an install began writing and did not finish.
pub(crate) fn interrupted(db: &Db) -> Result<bool> {
    Ok(db.get_raw(CF_SM_META, &SmMetaKey::Installing.encode())?.is_some())
}

/// The second pass: replaces the store's history, checkpoints, dedup rows
/// and applied position with the snapshot's (checked by [`check`], which
/// gave `cp`). Returns the state folded from its events.
pub(crate) fn write<'a>(
    db: &Db,
    every: Checkpoints,
    meta: &SnapshotMeta<u64, BasicNode>,
    cp: Checkpoint,
    open: &dyn Fn() -> Result<Box<dyn Read + 'a>>,
    file: Option<&Path>,
) -> Result<Checkpoint> {
    let what = name(meta);
    if let Some(file) = file {
        // The file must outlive a crash for the install to resume from it.
        let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(file)
            .and_then(|()| file.parent().map_or(Ok(()), sync))
            .map_err(|e| Error::Storage(format!("cannot sync {}: {e}", file.display())))?;
    }
    let events_cf = db.cf(CF_EVENTS)?;
    let dedup_cf = db.cf(CF_DEDUP)?;
    let sm_cf = db.cf(CF_SM_META)?;
    let subjects_cf = db.cf(CF_SUBJECTS)?;
    let mut batch = WriteBatch::default();
    let installing = Installing { meta: meta.clone(), file: file.map(Path::to_path_buf) };
    batch.put_cf(&sm_cf, SmMetaKey::Installing.encode(), encode_json("install record", &installing)?);
    batch.delete_range_cf(&events_cf, u64_key(0), u64_key(u64::MAX));
    batch.delete_cf(&events_cf, u64_key(u64::MAX));
    // Command ids are UTF-8, which never contains the byte 0xFF.
    batch.delete_range_cf(&dedup_cf, &[][..], &[0xFFu8][..]);
    let (cp_from, cp_to) = SmMetaKey::checkpoint_range();
    batch.delete_range_cf(&sm_cf, cp_from, cp_to);
    view_rows::delete_all(db, &mut batch)?;
    subject_index::reset(db, &mut batch)?;
    db.write(batch, true)?;
    // Rebuild the periodic checkpoints the snapshot's history spans, so
    // past states are as cheap to read here as on the member that sent
    // it: row checkpoints all along, whole-state ones only where no row
    // checkpoint precedes them (past states read nothing else there).
    let mut fold = InstallFold {
        db,
        batch: WriteBatch::default(),
        batches: 0,
        events_cf: &events_cf,
        dedup_cf: &dedup_cf,
        sm_cf: &sm_cf,
        subjects_cf: &subjects_cf,
        every,
        last_seq: cp.last_seq,
        decision: claw_commands::DecisionState::default(),
        view: claw_projections::ClusterView::default(),
    };
    visit_payload(open()?, &what, &mut fold)?;
    let InstallFold { mut batch, decision, view, .. } = fold;
    // The state is the fold of the (hash-verified) events; the sender's
    // checkpoint is not trusted for it. A disagreement means the sender
    // runs other rules or its checkpoint was damaged: say so.
    if decision != cp.decision || view != cp.view {
        tracing::warn!(
            snapshot = %meta.snapshot_id,
            last_seq = cp.last_seq,
            "the snapshot's checkpoint state differs from the fold of its events; installing the fold"
        );
    }
    // Only its position is needed from here on: free its state before the
    // fold is encoded (on a long history each is hundreds of MiB).
    let Checkpoint { last_seq, last_hash, .. } = cp;
    let checkpoint = Checkpoint { last_seq, last_hash, decision, view };
    let cp = &checkpoint;
    batch.put_cf(&sm_cf, SmMetaKey::Checkpoint(cp.last_seq).encode(), encode_json("checkpoint", &checkpoint)?);
    match &meta.last_log_id {
        Some(l) => batch.put_cf(&sm_cf, SmMetaKey::LastApplied.encode(), encode_json("last applied log id", l)?),
        None => batch.delete_cf(&sm_cf, SmMetaKey::LastApplied.encode()),
    }
    batch.put_cf(&sm_cf, SmMetaKey::Membership.encode(), encode_json("membership", &meta.last_membership)?);
    let record = SnapshotRecord { meta: meta.clone(), last_seq: cp.last_seq, last_hash: cp.last_hash.clone() };
    batch.put_cf(&sm_cf, SmMetaKey::Snapshot.encode(), encode_json("snapshot record", &record)?);
    batch.delete_cf(&sm_cf, SmMetaKey::Installing.encode());
    db.write(batch, true)?;
    Ok(checkpoint)
}

/// Finishes an install a stop interrupted, from the file it was reading;
/// runs when the store opens, before anything reads it.
pub(crate) fn resume(db: &Db, every: Checkpoints) -> Result<()> {
    let key = SmMetaKey::Installing.encode();
    let Some(installing) = db.get_json::<Installing>(CF_SM_META, &key)? else {
        return Ok(());
    };
    let what = name(&installing.meta);
    let gone = |why: String| {
        Error::Storage(format!(
            "installing {what} was interrupted and cannot be finished: {why}. The history in {} is incomplete: \
             remove that directory and add this member to the cluster again",
            db.path().display()
        ))
    };
    let file = installing.file.ok_or_else(|| gone("it was installed from memory".into()))?;
    if !file.exists() {
        return Err(gone(format!("its file {} is gone", file.display())));
    }
    tracing::warn!(snapshot = %installing.meta.snapshot_id, file = %file.display(), "finishing an interrupted snapshot install");
    let open = || -> Result<Box<dyn Read>> {
        let f = std::fs::File::open(&file).map_err(|e| Error::Storage(format!("reading {}: {e}", file.display())))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    };
    let cp = check(&installing.meta, &open)?;
    write(db, every, &installing.meta, cp, &open, Some(&file))?;
    Ok(())
}

/// The first pass over a received snapshot: checks it, writes nothing.
struct InstallCheck<'a> {
    what: &'a str,
    checkpoint: Option<Checkpoint>,
    last_hash: String,
    first_seq: Option<u64>,
    next_seq: Option<u64>,
    /// Per event (seq `i + 1`): its raft index and a hash of its command id,
    /// what the dedup rows are checked against.
    commands: Vec<(u64, u64)>,
}

fn command_hash(command_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    command_id.hash(&mut h);
    h.finish()
}

impl<'a> InstallCheck<'a> {
    fn new(what: &'a str) -> Self {
        InstallCheck {
            what,
            checkpoint: None,
            last_hash: GENESIS_HASH.to_string(),
            first_seq: None,
            next_seq: None,
            commands: Vec::new(),
        }
    }

    /// The snapshot's checkpoint, once its events were seen to match it.
    fn finish(self) -> Result<Checkpoint> {
        let cp = self.checkpoint.ok_or_else(|| Error::decode(self.what, "it has no checkpoint"))?;
        let first_ok = self.first_seq.is_none_or(|s| s == 1);
        if !first_ok || self.commands.len() as u64 != cp.last_seq || self.last_hash != cp.last_hash {
            return Err(Error::decode(
                self.what,
                format!(
                    "it holds {} events ending in hash {}, but its checkpoint is at seq {} with hash {}",
                    self.commands.len(),
                    self.last_hash,
                    cp.last_seq,
                    cp.last_hash
                ),
            ));
        }
        Ok(cp)
    }
}

impl PayloadVisit for InstallCheck<'_> {
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<()> {
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    fn event(&mut self, rec: EventRecord) -> Result<()> {
        let broken = |e: ChainError| Error::decode(self.what, format!("its event history is broken: {e}"));
        if let Some(expected) = self.next_seq.filter(|e| *e != rec.seq) {
            return Err(broken(ChainError::Gap { seq: rec.seq, expected }));
        }
        self.last_hash = verify_chain(&self.last_hash, [&rec]).map_err(broken)?;
        self.first_seq.get_or_insert(rec.seq);
        // Nothing follows u64::MAX: any later record is a gap (expected 0).
        self.next_seq = Some(rec.seq.checked_add(1).unwrap_or(0));
        self.commands.push((rec.raft_index, command_hash(&rec.command_id)));
        Ok(())
    }

    // Dedup rows are not covered by the hash chain: each must point at
    // events of its own command inside this history, or a retry of that
    // command would later fail (or stop) this member's apply.
    fn dedup(&mut self, rows: Vec<DedupRow>) -> Result<()> {
        for row in &rows {
            // Seqs start at 1: events `first..=last` are `commands[first - 1..last]`.
            let events = usize::try_from(row.first_seq)
                .ok()
                .filter(|first| *first >= 1)
                .zip(usize::try_from(row.last_seq).ok())
                .and_then(|(first, last)| self.commands.get(first - 1..last));
            let id = command_hash(&row.command_id);
            let ok = events.is_some_and(|evs| !evs.is_empty() && evs.iter().all(|&e| e == (row.raft_index, id)));
            if !ok {
                return Err(Error::decode(
                    self.what,
                    format!(
                        "its dedup row for command {:?} names events {}..={} at raft index {}, which are not that \
                         command's events in its history of {} events",
                        row.command_id,
                        row.first_seq,
                        row.last_seq,
                        row.raft_index,
                        self.commands.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The second pass over a received (and checked) snapshot: its events,
/// subject index, checkpoints and dedup rows, written in batches of about
/// [`BATCH_BYTES`].
struct InstallFold<'a> {
    db: &'a Db,
    batch: WriteBatch,
    batches: usize,
    events_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    dedup_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    sm_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    subjects_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    every: crate::log_node::Checkpoints,
    last_seq: u64,
    decision: claw_commands::DecisionState,
    view: claw_projections::ClusterView,
}

impl InstallFold<'_> {
    /// Writes the batch so far, unsynced: the last batch is synced, and the
    /// WAL keeps them in order, so the last one durable means all are.
    fn flush(&mut self) -> Result<()> {
        #[cfg(test)]
        if tests::FAIL_AFTER_BATCHES.with(|f| f.get()).is_some_and(|n| self.batches >= n) {
            return Err(Error::Storage("injected: the member stopped while installing".into()));
        }
        self.db.write(std::mem::take(&mut self.batch), false)?;
        self.batches += 1;
        Ok(())
    }
}

impl PayloadVisit for InstallFold<'_> {
    fn checkpoint(&mut self, _: Checkpoint) -> Result<()> {
        Ok(())
    }

    fn event(&mut self, rec: EventRecord) -> Result<()> {
        self.batch.put_cf(self.events_cf, u64_key(rec.seq), encode_json("event record", &rec)?);
        subject_index::put(self.subjects_cf, &mut self.batch, &rec);
        evolve(&mut self.decision, rec.seq, rec.time_ms, &rec.event);
        self.view.apply(&rec);
        if rec.seq.is_multiple_of(self.every.rows_every) || rec.seq == self.last_seq {
            let changed = self.view.take_touched();
            view_rows::put_checkpoint(self.db, &mut self.batch, &self.view, changed)?;
        }
        if rec.seq.is_multiple_of(self.every.full_every) && rec.seq < self.every.rows_every && rec.seq != self.last_seq
        {
            let periodic =
                CheckpointRef { last_seq: rec.seq, last_hash: &rec.hash, decision: &self.decision, view: &self.view };
            self.batch.put_cf(
                self.sm_cf,
                SmMetaKey::Checkpoint(rec.seq).encode(),
                encode_json("checkpoint", &periodic)?,
            );
        }
        #[cfg(test)]
        let batch_bytes = tests::BATCH_BYTES.with(|b| b.get()).unwrap_or(BATCH_BYTES);
        #[cfg(not(test))]
        let batch_bytes = BATCH_BYTES;
        if self.batch.size_in_bytes() >= batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn dedup(&mut self, rows: Vec<DedupRow>) -> Result<()> {
        for row in &rows {
            self.batch.put_cf(self.dedup_cf, dedup_key(&row.command_id), encode_json("dedup row", row)?);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    thread_local! {
        /// Makes an install fail after this many of its batches were written.
        pub(crate) static FAIL_AFTER_BATCHES: Cell<Option<usize>> = const { Cell::new(None) };
        /// Overrides [`super::BATCH_BYTES`].
        pub(crate) static BATCH_BYTES: Cell<Option<usize>> = const { Cell::new(None) };
    }
}
