use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;

use claw_commands::{decide, evolve, verify_chain, ChainError, Event, EventRecord, GENESIS_HASH};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;

use crate::checkpoint::{Checkpoint, CheckpointRef};
use crate::db::{decode_json, encode_json};
use crate::dedup_row::DedupRow;
use crate::event_store::Live;
use crate::keys::{decode_u64, dedup_key, u64_key, SmMetaKey, CF_DEDUP, CF_EVENTS, CF_SM_META, CF_SUBJECTS};
use crate::snapshot_builder::SnapshotBuilder;
use crate::snapshot_data::SnapshotData;
use crate::snapshot_payload::{visit_payload, PayloadVisit, SnapshotRecord};
use crate::subject_index;
use crate::view_rows;
use crate::{ApplyResponse, BatchResponse, CommandBatch, Error, EventStore, Result, TypeConfig};

/// The replicated state machine: decides each committed command, seals the
/// resulting events into the hash chain, and stores them with the dedup rows
/// and applied position in one RocksDB write batch per `apply` call.
pub(crate) struct StateMachine {
    store: EventStore,
}

impl StateMachine {
    pub(crate) fn new(store: EventStore) -> StateMachine {
        StateMachine { store }
    }

    fn apply_entries(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<BatchResponse>> {
        let db = self.store.db().clone();
        let events_cf = db.cf(CF_EVENTS)?;
        let dedup_cf = db.cf(CF_DEDUP)?;
        let sm_cf = db.cf(CF_SM_META)?;
        let subjects_cf = db.cf(CF_SUBJECTS)?;
        let mut batch = WriteBatch::default();
        let mut responses = Vec::with_capacity(entries.len());
        let mut new_records: Vec<EventRecord> = Vec::new();
        let mut new_dedup: HashMap<String, DedupRow> = HashMap::new();
        let mut last_applied = None;
        let mut membership = None;

        // Phase 1: decide and evolve the decision state; build the batch.
        let (published, last_seq, last_hash) = {
            let mut guard = self.store.write_live();
            let live: &mut Live = &mut guard;
            let published = live.last_seq;
            let mut last_seq = live.last_seq;
            let mut last_hash = live.last_hash.clone();
            // Event times never go backwards along the log, whichever member
            // stamped the envelope: that makes the seq-keyed history a time
            // index too (`EventStore::seq_at_time`).
            let mut last_time = live.view.last_time_ms;
            for entry in entries {
                let log_id = entry.log_id;
                last_applied = Some(log_id);
                let envs = match entry.payload {
                    EntryPayload::Blank => {
                        responses.push(BatchResponse::default());
                        continue;
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(log_id), m));
                        responses.push(BatchResponse::default());
                        continue;
                    }
                    EntryPayload::Normal(CommandBatch(envs)) => envs,
                };
                let mut entry_responses = Vec::with_capacity(envs.len());
                for env in envs {
                    let prior = if env.command_id.is_empty() {
                        None
                    } else if let Some(row) = new_dedup.get(&env.command_id) {
                        Some(row.clone())
                    } else {
                        db.get_json::<DedupRow>(CF_DEDUP, dedup_key(&env.command_id))?
                    };
                    if let Some(row) = prior {
                        let events = if row.first_seq > published {
                            // Its events are in this very batch, not yet in RocksDB.
                            new_records
                                .iter()
                                .filter(|r| r.seq >= row.first_seq && r.seq <= row.last_seq)
                                .cloned()
                                .collect()
                        } else {
                            self.store.read_range(row.first_seq, row.last_seq)?
                        };
                        entry_responses.push(ApplyResponse {
                            command_id: row.command_id,
                            raft_index: row.raft_index,
                            events,
                            rejection: row.rejection,
                            duplicate: true,
                        });
                        continue;
                    }
                    let (events, rejection) = match decide(&live.decision, &env) {
                        Ok(events) => (events, None),
                        Err(rejection) => (
                            vec![Event::CommandRejected {
                                command_kind: env.command.kind().to_string(),
                                rejection: rejection.clone(),
                            }],
                            Some(rejection),
                        ),
                    };
                    let first_seq = last_seq + 1;
                    let time_ms = env.time_ms.max(last_time);
                    last_time = time_ms;
                    let mut records = Vec::with_capacity(events.len());
                    for event in events {
                        last_seq += 1;
                        let rec = EventRecord::seal(
                            last_seq,
                            log_id.index,
                            time_ms,
                            env.actor.clone(),
                            env.command_id.clone(),
                            env.correlation_id.clone(),
                            event,
                            last_hash,
                        );
                        evolve(&mut live.decision, last_seq, rec.time_ms, &rec.event);
                        last_hash = rec.hash.clone();
                        batch.put_cf(&events_cf, u64_key(last_seq), encode_json("event record", &rec)?);
                        subject_index::put(&subjects_cf, &mut batch, &rec);
                        records.push(rec);
                    }
                    new_records.extend(records.iter().cloned());
                    if !env.command_id.is_empty() {
                        let row = DedupRow {
                            command_id: env.command_id.clone(),
                            raft_index: log_id.index,
                            first_seq,
                            last_seq,
                            rejection: rejection.clone(),
                        };
                        batch.put_cf(&dedup_cf, dedup_key(&env.command_id), encode_json("dedup row", &row)?);
                        new_dedup.insert(env.command_id.clone(), row);
                    }
                    entry_responses.push(ApplyResponse {
                        command_id: env.command_id,
                        raft_index: log_id.index,
                        events: records,
                        rejection,
                        duplicate: false,
                    });
                }
                responses.push(BatchResponse(entry_responses));
            }
            (published, last_seq, last_hash)
        };
        if let Some(log_id) = &last_applied {
            batch.put_cf(&sm_cf, SmMetaKey::LastApplied.encode(), encode_json("last applied log id", log_id)?);
        }
        if let Some(m) = &membership {
            batch.put_cf(&sm_cf, SmMetaKey::Membership.encode(), encode_json("membership", m)?);
        }

        // Phase 2: one unsynced write. The raft log is the durable source;
        // RocksDB's single WAL orders this write before any later synced one.
        db.write(batch, false)?;

        // Phase 3: publish.
        {
            let mut live = self.store.write_live();
            for rec in &new_records {
                live.view.apply(rec);
            }
            // A row checkpoint whenever the batch crosses a multiple of K:
            // the rows changed since the previous one. Written after the
            // events; a crash between the two loses only this checkpoint
            // (the restart stores every row at the next one).
            let every = self.store.checkpoints().rows_every;
            if last_seq / every != published / every {
                let changed = live.view.take_touched();
                let mut rows = WriteBatch::default();
                let written =
                    view_rows::put_checkpoint(&db, &mut rows, &live.view, changed).and_then(|()| db.write(rows, false));
                // Derived data: the events are stored, so apply goes on; past
                // states replay from the previous checkpoint until the next.
                if let Err(e) = written {
                    tracing::warn!(seq = last_seq, error = %e, "could not store a row checkpoint of the view");
                    live.view.touch_all();
                }
            }
            // A whole-state checkpoint (for restarts and snapshots) whenever
            // the batch crosses a multiple of its interval, once the state has
            // grown enough events since the last one. Each serialises the
            // whole view and decision state under this lock (by reference:
            // no copy of the state), so they are rare and their spacing grows
            // with the state: the cost per event stays bounded however many
            // workloads the history holds. Written after the events, like
            // the row checkpoint: a crash in between makes the restart replay
            // from the previous one.
            let every = self.store.checkpoints().full_every;
            if last_seq / every != published / every
                && last_seq - live.last_full_seq >= full_checkpoint_spacing(every, &live.view)
            {
                let cp = CheckpointRef { last_seq, last_hash: &last_hash, decision: &live.decision, view: &live.view };
                let written = encode_json("checkpoint", &cp).and_then(|bytes| {
                    let mut one = WriteBatch::default();
                    one.put_cf(&sm_cf, SmMetaKey::Checkpoint(last_seq).encode(), bytes);
                    db.write(one, false)
                });
                match written {
                    Ok(()) => live.last_full_seq = last_seq,
                    Err(e) => tracing::warn!(seq = last_seq, error = %e, "could not store a whole-state checkpoint"),
                }
            }
            live.last_seq = last_seq;
            live.last_hash = last_hash;
            if last_applied.is_some() {
                live.last_applied = last_applied;
            }
            if let Some(m) = membership {
                live.membership = m;
            }
        }
        if let Some(log_id) = last_applied {
            self.store.shared.counters.applied_index.store(log_id.index, Ordering::Relaxed);
        }
        self.store.publish(last_seq);
        Ok(responses)
    }

    /// Installs a received snapshot, read twice from `open`'s readers: a
    /// first pass checks it (its hash chain, its length against its
    /// checkpoint, its dedup rows against its events) and writes nothing,
    /// so a broken snapshot leaves the store as it was; a second folds and
    /// stores it in one atomic write. Neither holds the decoded history.
    fn install<'a>(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        open: &dyn Fn() -> Result<Box<dyn Read + 'a>>,
    ) -> Result<()> {
        let what = format!("snapshot {}", meta.snapshot_id);
        let mut check = InstallCheck::new(&what);
        visit_payload(open()?, &what, &mut check)?;
        let mut cp = check.finish()?;
        cp.decision.reindex();

        let db = self.store.db().clone();
        let events_cf = db.cf(CF_EVENTS)?;
        let dedup_cf = db.cf(CF_DEDUP)?;
        let sm_cf = db.cf(CF_SM_META)?;
        let subjects_cf = db.cf(CF_SUBJECTS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&events_cf, u64_key(0), u64_key(u64::MAX));
        batch.delete_cf(&events_cf, u64_key(u64::MAX));
        // Command ids are UTF-8, which never contains the byte 0xFF.
        batch.delete_range_cf(&dedup_cf, &[][..], &[0xFFu8][..]);
        let (cp_from, cp_to) = SmMetaKey::checkpoint_range();
        batch.delete_range_cf(&sm_cf, cp_from, cp_to);
        view_rows::delete_all(&db, &mut batch)?;
        subject_index::reset(&db, &mut batch)?;
        // Rebuild the periodic checkpoints the snapshot's history spans, so
        // past states are as cheap to read here as on the member that sent
        // it: row checkpoints all along, whole-state ones only where no row
        // checkpoint precedes them (past states read nothing else there).
        let mut fold = InstallFold {
            db: &db,
            batch,
            events_cf: &events_cf,
            dedup_cf: &dedup_cf,
            sm_cf: &sm_cf,
            subjects_cf: &subjects_cf,
            every: self.store.checkpoints(),
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
        let checkpoint = Checkpoint { last_seq: cp.last_seq, last_hash: cp.last_hash.clone(), decision, view };
        batch.put_cf(&sm_cf, SmMetaKey::Checkpoint(cp.last_seq).encode(), encode_json("checkpoint", &checkpoint)?);
        match &meta.last_log_id {
            Some(l) => batch.put_cf(&sm_cf, SmMetaKey::LastApplied.encode(), encode_json("last applied log id", l)?),
            None => batch.delete_cf(&sm_cf, SmMetaKey::LastApplied.encode()),
        }
        batch.put_cf(&sm_cf, SmMetaKey::Membership.encode(), encode_json("membership", &meta.last_membership)?);
        let record = SnapshotRecord { meta: meta.clone(), last_seq: cp.last_seq, last_hash: cp.last_hash.clone() };
        batch.put_cf(&sm_cf, SmMetaKey::Snapshot.encode(), encode_json("snapshot record", &record)?);
        // Past-state readers retry while the generation is odd or moved.
        let installs = &self.store.shared.installs;
        installs.fetch_add(1, Ordering::AcqRel);
        let written = db.write(batch, true);
        if written.is_ok() {
            let mut live = self.store.write_live();
            live.last_seq = checkpoint.last_seq;
            live.last_hash = checkpoint.last_hash;
            live.decision = checkpoint.decision;
            live.view = checkpoint.view;
            live.oldest_seq = 1;
            live.last_applied = meta.last_log_id;
            live.membership = meta.last_membership.clone();
            live.last_full_seq = live.last_seq;
            self.store.shared.subjects_from.store(1, Ordering::Release);
        }
        installs.fetch_add(1, Ordering::AcqRel);
        written?;
        self.store.shared.counters.applied_index.store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        self.store.publish(checkpoint.last_seq);
        Ok(())
    }

    /// The snapshot last built: its meta now, its payload (the checkpoint,
    /// every event and the dedup rows) when a member reads it to send it.
    /// openraft asks at every start-up for the meta alone.
    fn current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let db = self.store.db().clone();
        let Some(record) = db.get_json::<SnapshotRecord>(CF_SM_META, &SmMetaKey::Snapshot.encode())? else {
            return Ok(None);
        };
        let store = self.store.clone();
        let meta = record.meta.clone();
        let data = SnapshotData::streamed(std::sync::Arc::new(move || {
            Box::new(PayloadPieces::new(store.clone(), record.clone())) as crate::snapshot_data::Pieces
        }));
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}

/// Events per row of the view between two whole-state checkpoints, at least.
const FULL_CHECKPOINT_EVENTS_PER_ROW: u64 = 8;

/// The fewest events between two whole-state checkpoints: the configured
/// interval, or eight per row of the view when that is more. A checkpoint
/// costs about one row's encoding per row, so this keeps it under an eighth
/// of a row per event, while a restart replays at most that many events.
pub(crate) fn full_checkpoint_spacing(every: u64, view: &claw_projections::ClusterView) -> u64 {
    let rows =
        view.members.len() + view.nodes.len() + view.workloads.len() + view.proposals.len() + view.incidents.len();
    every.max(rows as u64 * FULL_CHECKPOINT_EVENTS_PER_ROW)
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
/// subject index, checkpoints and dedup rows into one write batch.
struct InstallFold<'a> {
    db: &'a crate::db::Db,
    batch: WriteBatch,
    events_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    dedup_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    sm_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    subjects_cf: &'a std::sync::Arc<rocksdb::BoundColumnFamily<'a>>,
    every: crate::log_node::Checkpoints,
    last_seq: u64,
    decision: claw_commands::DecisionState,
    view: claw_projections::ClusterView,
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
        Ok(())
    }

    fn dedup(&mut self, rows: Vec<DedupRow>) -> Result<()> {
        for row in &rows {
            self.batch.put_cf(self.dedup_cf, dedup_key(&row.command_id), encode_json("dedup row", row)?);
        }
        Ok(())
    }
}

/// About this many bytes per piece of a snapshot's payload.
const PAYLOAD_PIECE_BYTES: usize = 1 << 20;

/// A snapshot's payload ([`SnapshotPayload`]'s JSON) produced piece by
/// piece from RocksDB: the header with the stored whole-state checkpoint,
/// then every event up to it (their stored JSON, copied; events are
/// immutable, so every pass yields the same bytes), then the dedup rows of
/// the entries it covers. Holds one piece at a time, never the history.
pub(crate) struct PayloadPieces {
    store: EventStore,
    record: SnapshotRecord,
    step: PayloadStep,
    piece_bytes: usize,
}

enum PayloadStep {
    Header,
    /// The next event's seq.
    Events(u64),
    /// Dedup rows from this key on; whether one was written yet.
    Dedup {
        from: Vec<u8>,
        wrote: bool,
    },
    Done,
}

impl PayloadPieces {
    pub(crate) fn new(store: EventStore, record: SnapshotRecord) -> PayloadPieces {
        PayloadPieces { store, record, step: PayloadStep::Header, piece_bytes: PAYLOAD_PIECE_BYTES }
    }

    #[cfg(test)]
    pub(crate) fn with_piece_bytes(mut self, piece_bytes: usize) -> PayloadPieces {
        self.piece_bytes = piece_bytes;
        self
    }

    fn header(&self) -> Result<Vec<u8>> {
        let record = &self.record;
        let key = SmMetaKey::Checkpoint(record.last_seq).encode();
        let checkpoint = self.store.db().get_raw(CF_SM_META, &key)?.ok_or_else(|| {
            Error::Storage(format!(
                "snapshot {} needs the checkpoint at seq {}, which is missing from {CF_SM_META}",
                record.meta.snapshot_id, record.last_seq
            ))
        })?;
        let mut out = Vec::with_capacity(checkpoint.len() + 256);
        out.extend_from_slice(b"{\"last_applied\":");
        out.extend(encode_json("snapshot meta", &record.meta.last_log_id)?);
        out.extend_from_slice(b",\"membership\":");
        out.extend(encode_json("snapshot meta", &record.meta.last_membership)?);
        out.extend_from_slice(b",\"checkpoint\":");
        out.extend(checkpoint);
        out.extend_from_slice(b",\"events\":[");
        Ok(out)
    }

    /// Events from `from` on, up to about a piece's bytes; the next seq.
    fn events(&self, from: u64) -> Result<(Vec<u8>, u64)> {
        let last = self.record.last_seq;
        let mut out = Vec::with_capacity(self.piece_bytes + 4096);
        let mut next = from;
        self.store.db().scan(CF_EVENTS, &u64_key(from), |k, v| {
            if decode_u64(k) != Some(next) || next > last {
                return Ok(false);
            }
            if next > 1 {
                out.push(b',');
            }
            out.extend_from_slice(v);
            next += 1;
            Ok(out.len() < self.piece_bytes && next <= last)
        })?;
        if next == from && from <= last {
            return Err(Error::Storage(format!(
                "snapshot {} needs event {from}, which is missing from {}",
                self.record.meta.snapshot_id,
                self.store.db().path().display()
            )));
        }
        Ok((out, next))
    }

    /// Dedup rows from key `start` on, up to about a piece's bytes, each
    /// after a comma once `wrote` says one was written; where to go on
    /// from, or `None` when none is left.
    fn dedup(&self, start: &[u8], wrote: &mut bool) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let upto = self.record.meta.last_log_id.map(|l| l.index);
        let mut out = Vec::new();
        let mut go_on = None;
        self.store.db().scan(CF_DEDUP, start, |k, v| {
            if out.len() >= self.piece_bytes {
                go_on = Some(k.to_vec());
                return Ok(false);
            }
            let row: DedupRow = decode_json(CF_DEDUP, k, v)?;
            if upto.is_some_and(|u| row.raft_index <= u) {
                if *wrote {
                    out.push(b',');
                }
                *wrote = true;
                out.extend_from_slice(v);
            }
            Ok(true)
        })?;
        Ok((out, go_on))
    }

    fn step(&mut self) -> Result<Option<Vec<u8>>> {
        let (mut piece, next) = match std::mem::replace(&mut self.step, PayloadStep::Done) {
            PayloadStep::Done => return Ok(None),
            PayloadStep::Header => (self.header()?, PayloadStep::Events(1)),
            PayloadStep::Events(from) if from <= self.record.last_seq => {
                let (piece, next) = self.events(from)?;
                (piece, PayloadStep::Events(next))
            }
            PayloadStep::Events(_) => {
                (b"],\"dedup\":[".to_vec(), PayloadStep::Dedup { from: Vec::new(), wrote: false })
            }
            PayloadStep::Dedup { from, mut wrote } => {
                let (piece, go_on) = self.dedup(&from, &mut wrote)?;
                match go_on {
                    Some(from) => (piece, PayloadStep::Dedup { from, wrote }),
                    None => (piece, PayloadStep::Done),
                }
            }
        };
        if matches!(next, PayloadStep::Done) {
            piece.extend_from_slice(b"]}");
        }
        self.step = next;
        Ok(Some(piece))
    }
}

impl Iterator for PayloadPieces {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        self.step().transpose()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let live = self.store.read_live();
        Ok((live.last_applied, live.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let started = std::time::Instant::now();
        let responses = self
            .apply_entries(entries)
            .map_err(|e| StorageError::from(openraft::StorageIOError::write_state_machine(&e)))?;
        self.store.shared.counters.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::capture(&self.store)
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<u64>> {
        // Received into a file beside the database: a snapshot holds the
        // whole history, more than memory on a long one.
        let dir = self.store.db().path().to_path_buf();
        let data = SnapshotData::spool(&dir).await.map_err(|e| {
            let e = Error::Storage(format!("cannot create a file to receive a snapshot in {}: {e}", dir.display()));
            StorageError::from(openraft::StorageIOError::write_snapshot(None, &e))
        })?;
        Ok(Box::new(data))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<u64>> {
        let reading = |e: std::io::Error| Error::Storage(format!("reading snapshot {}: {e}", meta.snapshot_id));
        let installed = match snapshot.spooled_path() {
            // The receive file goes when `snapshot` does, after the install.
            Some(path) => self.install(meta, &|| {
                let file = std::fs::File::open(path).map_err(reading)?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)) as Box<dyn Read>)
            }),
            None => match snapshot.into_bytes() {
                Ok(bytes) => {
                    self.install(meta, &|| Ok(Box::new(std::io::Cursor::new(bytes.as_slice())) as Box<dyn Read>))
                }
                Err(e) => Err(reading(e)),
            },
        };
        installed.map_err(|e| StorageError::from(openraft::StorageIOError::write_snapshot(Some(meta.signature()), &e)))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.current_snapshot().map_err(|e| StorageError::from(openraft::StorageIOError::read_snapshot(None, &e)))
    }
}

#[cfg(test)]
pub(crate) mod tests;
