use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;

use claw_commands::{decide, evolve, Event, EventRecord};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;

use crate::checkpoint::CheckpointRef;
use crate::db::{decode_json, encode_json};
use crate::dedup_row::DedupRow;
use crate::event_store::Live;
use crate::keys::{decode_u64, dedup_key, u64_key, SmMetaKey, CF_DEDUP, CF_EVENTS, CF_SM_META, CF_SUBJECTS};
use crate::snapshot_builder::SnapshotBuilder;
use crate::snapshot_data::SnapshotData;
use crate::snapshot_install;
use crate::snapshot_payload::SnapshotRecord;
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

    /// Installs a received snapshot (see [`snapshot_install`]), read from
    /// `open`'s readers, then makes its state the live one. `spool` is the
    /// file `open` reads, if any: an install interrupted after it began
    /// writing resumes from it when the store next opens.
    fn install<'a>(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        open: &dyn Fn() -> Result<Box<dyn Read + 'a>>,
        spool: Option<&std::path::Path>,
    ) -> Result<()> {
        let cp = snapshot_install::check(meta, open)?;
        // Past-state readers retry while the generation is odd or moved.
        let installs = &self.store.shared.installs;
        installs.fetch_add(1, Ordering::AcqRel);
        let written = snapshot_install::write(self.store.db(), self.store.checkpoints(), meta, cp, open, spool).map(
            |checkpoint| {
                let last_seq = checkpoint.last_seq;
                let mut live = self.store.write_live();
                live.last_seq = last_seq;
                live.last_hash = checkpoint.last_hash;
                live.decision = checkpoint.decision;
                live.view = checkpoint.view;
                live.oldest_seq = 1;
                live.last_applied = meta.last_log_id;
                live.membership = meta.last_membership.clone();
                live.last_full_seq = last_seq;
                self.store.shared.subjects_from.store(1, Ordering::Release);
                last_seq
            },
        );
        installs.fetch_add(1, Ordering::AcqRel);
        let last_seq = written?;
        self.store.shared.counters.applied_index.store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        self.store.publish(last_seq);
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
        let mut snapshot = snapshot;
        let installed = match snapshot.spooled_path().map(std::path::Path::to_path_buf) {
            // The receive file goes when `snapshot` does, after the install,
            // unless an install that began writing failed: the next open
            // resumes it from the file.
            Some(path) => {
                let open = || -> Result<Box<dyn Read>> {
                    let file = std::fs::File::open(&path).map_err(reading)?;
                    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
                };
                let installed = self.install(meta, &open, Some(&path));
                if installed.is_err() && snapshot_install::interrupted(self.store.db()).unwrap_or(true) {
                    snapshot.keep_file();
                }
                installed
            }
            None => match snapshot.into_bytes() {
                Ok(bytes) => {
                    let open =
                        || -> Result<Box<dyn Read + '_>> { Ok(Box::new(std::io::Cursor::new(bytes.as_slice()))) };
                    self.install(meta, &open, None)
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
