use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use claw_commands::{evolve, verify_chain, Actor, DecisionState, EventRecord};
use claw_projections::{ClusterView, RowKeys, ViewTables};
use futures::Stream;
use openraft::{BasicNode, LogId, StoredMembership};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, CheckpointView};
use crate::db::{decode_json, Db};
use crate::keys::{decode_u64, show_key, u64_key, SmMetaKey, CF_EVENTS, CF_SM_META};
use crate::log_node::Checkpoints;
use crate::log_stats::Counters;
use crate::subject_index;
use crate::telemetry::{add_watcher, WatcherSlot};
use crate::view_rows;
use crate::{Error, EventFilter, LogMetrics, LogStats, Result};

/// How many matching records a watcher reads from RocksDB at a time.
const WATCH_CHUNK: usize = 512;

/// The in-memory state of the state machine, kept current on apply.
pub(crate) struct Live {
    pub(crate) decision: DecisionState,
    pub(crate) view: ClusterView,
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
    pub(crate) oldest_seq: u64,
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
    /// The seq of the newest whole-state checkpoint (a restart replays from it).
    pub(crate) last_full_seq: u64,
}

pub(crate) struct Shared {
    pub(crate) db: Arc<Db>,
    pub(crate) live: RwLock<Live>,
    /// The last seq whose event is durable in RocksDB.
    pub(crate) watch_tx: watch::Sender<u64>,
    pub(crate) counters: Arc<Counters>,
    /// How often checkpoints are stored.
    pub(crate) every: Checkpoints,
    /// Odd while a snapshot install rewrites the stored history and its
    /// checkpoints; bumped twice per install. Past-state reads made of
    /// several RocksDB reads retry when it moved under them.
    pub(crate) installs: AtomicU64,
    /// The first seq the subject index covers (`subject_index.rs`).
    pub(crate) subjects_from: AtomicU64,
}

/// A page of [`EventStore::events_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    pub records: Vec<EventRecord>,
    /// Every event in the range up to this seq that matches is in `records`.
    pub examined_to: u64,
    /// How many stored events were read to find them.
    pub read: u64,
}

/// The read side of one member's log: the stored event history, the live
/// decision state and cluster view, and a watch of new events. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) shared: Arc<Shared>,
}

impl EventStore {
    /// Loads the state machine from `db`: the newest checkpoint, then a
    /// replay of the events stored after it.
    pub(crate) fn load(db: Arc<Db>, counters: Arc<Counters>, every: Checkpoints) -> Result<EventStore> {
        let last_applied: Option<LogId<u64>> = db.get_json(CF_SM_META, &SmMetaKey::LastApplied.encode())?;
        let membership: StoredMembership<u64, BasicNode> =
            db.get_json(CF_SM_META, &SmMetaKey::Membership.encode())?.unwrap_or_default();
        let (_, end) = SmMetaKey::checkpoint_range();
        let checkpoint = match db.last_at_or_before(CF_SM_META, &end)? {
            Some((k, v)) if SmMetaKey::checkpoint_seq(&k).is_some() => {
                let mut cp = decode_json::<Checkpoint>(CF_SM_META, &k, &v)?;
                cp.decision.reindex();
                // The key says which seq the checkpoint is at; a damaged one
                // must not send the replay elsewhere (or past u64::MAX).
                if SmMetaKey::checkpoint_seq(&k) != Some(cp.last_seq) || cp.last_seq == u64::MAX {
                    return Err(Error::decode(
                        format!("record {CF_SM_META}/{}", show_key(&k)),
                        format!("the checkpoint says seq {}, its key another", cp.last_seq),
                    ));
                }
                cp
            }
            _ => Checkpoint::default(),
        };
        let last_full_seq = checkpoint.last_seq;
        let Checkpoint { mut last_seq, mut last_hash, mut decision, mut view } = checkpoint;
        db.scan(CF_EVENTS, &u64_key(last_seq + 1), |k, v| {
            let rec: EventRecord = decode_json(CF_EVENTS, k, v)?;
            if decode_u64(k) != Some(rec.seq) || rec.seq != last_seq + 1 {
                return Err(Error::Storage(format!(
                    "event history in {} has a gap: key {CF_EVENTS}/{} holds seq {} after seq {last_seq}",
                    db.path().display(),
                    show_key(k),
                    rec.seq
                )));
            }
            last_hash = verify_chain(&last_hash, [&rec])
                .map_err(|e| Error::Storage(format!("event history in {} is corrupt: {e}", db.path().display())))?;
            last_seq = rec.seq;
            evolve(&mut decision, rec.seq, rec.time_ms, &rec.event);
            view.apply(&rec);
            Ok(true)
        })?;
        // The row checkpoints on disk may end before the state just loaded
        // (they are written after the events): the next one stores every row.
        view.touch_all();
        let oldest_seq = match db.first_key(CF_EVENTS)? {
            Some(k) => {
                decode_u64(&k).ok_or_else(|| Error::decode(format!("key {CF_EVENTS}/{}", show_key(&k)), "not a u64"))?
            }
            None => last_seq + 1,
        };
        counters.applied_index.store(last_applied.map_or(0, |l| l.index), std::sync::atomic::Ordering::Relaxed);
        let subjects_from = subject_index::open(&db, last_seq)?;
        let live = Live { decision, view, last_seq, last_hash, oldest_seq, last_applied, membership, last_full_seq };
        let (watch_tx, _) = watch::channel(last_seq);
        Ok(EventStore {
            shared: Arc::new(Shared {
                db,
                live: RwLock::new(live),
                watch_tx,
                counters,
                every,
                installs: AtomicU64::new(0),
                subjects_from: AtomicU64::new(subjects_from),
            }),
        })
    }

    pub(crate) fn read_live(&self) -> RwLockReadGuard<'_, Live> {
        self.shared.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_live(&self) -> RwLockWriteGuard<'_, Live> {
        self.shared.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn checkpoints(&self) -> Checkpoints {
        self.shared.every
    }

    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.shared.db
    }

    /// Publishes `last_seq` to watchers once its events are durable.
    pub(crate) fn publish(&self, last_seq: u64) {
        self.shared.watch_tx.send_if_modified(|v| {
            let changed = *v != last_seq;
            *v = last_seq;
            changed
        });
    }

    /// The seq of the last stored event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.read_live().last_seq
    }

    /// The hash of the last stored event (`GENESIS_HASH` before the first).
    pub fn last_hash(&self) -> String {
        self.read_live().last_hash.clone()
    }

    /// The oldest seq still stored: 1 (history is never purged yet), or
    /// `last_seq + 1` while the history is empty.
    pub fn oldest_seq(&self) -> u64 {
        self.read_live().oldest_seq
    }

    /// A clone of the live cluster view.
    pub fn view(&self) -> ClusterView {
        self.read_live().view.clone()
    }

    /// Runs `f` on the live cluster view under a read lock, without cloning it.
    pub fn with_view<T>(&self, f: impl FnOnce(&ClusterView) -> T) -> T {
        f(&self.read_live().view)
    }

    /// Reads the live decision state in place, without cloning it.
    pub fn with_decision<T>(&self, f: impl FnOnce(&DecisionState) -> T) -> T {
        f(&self.read_live().decision)
    }

    /// A clone of the live decision state.
    pub fn decision(&self) -> DecisionState {
        self.read_live().decision.clone()
    }

    /// The cluster view right after event `seq` (the empty view for seq 0):
    /// the nearest stored checkpoint at or before `seq`, plus a replay of at
    /// about `checkpoint_every` events after it. Never reads the live state,
    /// so it is exactly the fold of the first `seq` events.
    pub fn view_at(&self, seq: u64) -> Result<ClusterView> {
        self.view_at_with(seq, ViewTables::ALL)
    }

    /// [`EventStore::view_at`] for a reader of only the tables `tables`
    /// names: those are exact, the others hold only the rows the replay
    /// needed. Loads only those tables' rows from the checkpoint.
    pub fn view_at_with(&self, seq: u64, tables: ViewTables) -> Result<ClusterView> {
        self.view_at_retrying(seq, tables, true, &[])
    }

    /// [`EventStore::view_at_with`] without the scheduler's per-node
    /// verdicts: every workload's `placement` and `unschedulable` keep their
    /// summary, strategy and chosen node, and an empty `considered`. Those
    /// verdicts are most of a workload row's bytes, so a reader that shows
    /// only summaries (SQL) reads a fraction of the checkpoint.
    pub fn view_at_summaries(&self, seq: u64, tables: ViewTables) -> Result<ClusterView> {
        self.view_at_summaries_without(seq, tables, &[])
    }

    /// [`EventStore::view_at_summaries`] for a reader of some of the
    /// workload table's columns: workload rows read whole from the
    /// checkpoint leave the fields named in `skip_workload_fields` (e.g.
    /// `spec`, `placement`) at their defaults, and are decoded without
    /// building them. Rows the replay changes are read whole, so every
    /// field not skipped is exact.
    pub fn view_at_summaries_without(
        &self,
        seq: u64,
        tables: ViewTables,
        skip_workload_fields: &[&str],
    ) -> Result<ClusterView> {
        let mut view = self.view_at_retrying(seq, tables, false, skip_workload_fields)?;
        clear_verdicts(&mut view);
        Ok(view)
    }

    fn view_at_retrying(&self, seq: u64, tables: ViewTables, verdicts: bool, skip: &[&str]) -> Result<ClusterView> {
        self.read_consistently(seq, || self.view_at_once(seq, tables, verdicts, skip))
    }

    /// Runs `read`, a read of the state at `seq` through several of this
    /// store's calls (a checkpoint lookup, its rows and the replay after
    /// it; a table base's head, its parts and the rows changed since it),
    /// again until no snapshot install ran during it, so that what it read
    /// all comes from one history. Calls that read the state at a seq
    /// through one call are already consistent on their own.
    pub fn read_consistently<T, E: From<Error>>(
        &self,
        seq: u64,
        read: impl Fn() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        // The checkpoint lookup, its rows and the replay are separate reads:
        // a snapshot install between them (it rewrites all three) could mix
        // two histories' checkpoints. Retry until none ran meanwhile.
        for attempt in 0..10_000u32 {
            let before = self.shared.installs.load(Ordering::Acquire);
            if before.is_multiple_of(2) {
                let out = read();
                if self.shared.installs.load(Ordering::Acquire) == before {
                    return out;
                }
            }
            if attempt < 16 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Err(Error::Storage(format!(
            "the state at seq {seq} could not be read: a snapshot install kept rewriting the history"
        ))
        .into())
    }

    /// The newest row checkpoint at or before `seq`, if any: the seqs a
    /// table base can be stored at.
    pub fn row_checkpoint_at_or_before(&self, seq: u64) -> Result<Option<u64>> {
        view_rows::checkpoint_at_or_before(&self.shared.db, seq)
    }

    /// Stores a copy of the whole workload table as of the row checkpoint
    /// at `seq` in a format of the caller's (the analytics layer's columnar
    /// bases): `head`, for [`EventStore::workloads_base_at_or_before`], and
    /// `parts` (at most 255), each read alone by
    /// [`EventStore::workloads_base_part`]. Refused where no row checkpoint
    /// is stored at `seq`. Derived data: removed with the row checkpoints
    /// when a snapshot is installed.
    pub fn put_workloads_base(&self, seq: u64, head: &[u8], parts: &[Vec<u8>]) -> Result<()> {
        let db = &self.shared.db;
        if view_rows::checkpoint_at_or_before(db, seq)? != Some(seq) {
            return Err(Error::Storage(format!("no row checkpoint is stored at seq {seq} to keep a table base at")));
        }
        view_rows::put_table_base(db, view_rows::WORKLOADS_TABLE, seq, head, parts)
    }

    /// The head of the newest workload table base stored at or before
    /// `seq`, with the seq it is as of.
    pub fn workloads_base_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>> {
        view_rows::table_base_at_or_before(&self.shared.db, view_rows::WORKLOADS_TABLE, seq)
    }

    /// Part `part` (counted from 0) of the workload table base at `seq`;
    /// `None` when it is not stored (a snapshot install removed it since
    /// its head was read, or it was never written).
    pub fn workloads_base_part(&self, seq: u64, part: usize) -> Result<Option<Vec<u8>>> {
        view_rows::table_base_part(&self.shared.db, view_rows::WORKLOADS_TABLE, seq, part)
    }

    /// The workload rows changed between the row checkpoints at `base` and
    /// `at`; `None` where the stored checkpoints cannot say (see
    /// [`WorkloadOverlay`]).
    pub fn workload_changes(&self, base: u64, at: u64) -> Result<Option<BTreeSet<String>>> {
        self.read_consistently(at, || view_rows::workload_changes(&self.shared.db, base, at))
    }

    /// What turns the workload table as of the row checkpoint at `base`
    /// into the table right after event `seq`: the keys of every row that
    /// may differ, and those rows as they are at `seq` (keys of rows that
    /// did not exist then have none). Reads the changed lists of the row
    /// checkpoints in between, the changed rows, and replays at most about
    /// K events, never the whole table. `None` when the stored checkpoints
    /// cannot say which rows changed (none at or after `base` and at or
    /// before `seq`, or a link of the chain is missing); the caller then
    /// reads the whole table. Rows carry summaries, not per-node verdicts.
    pub fn workloads_changed_since(&self, base: u64, seq: u64) -> Result<Option<WorkloadOverlay>> {
        self.read_consistently(seq, || self.workloads_changed_once(base, seq))
    }

    fn workloads_changed_once(&self, base: u64, seq: u64) -> Result<Option<WorkloadOverlay>> {
        let last = self.last_seq();
        if seq > last {
            return Err(Error::BeyondEnd { requested: seq, last });
        }
        let db = &self.shared.db;
        let Some(at) = view_rows::checkpoint_at_or_before(db, seq)? else { return Ok(None) };
        let Some(mut changed) = view_rows::workload_changes(db, base, at)? else { return Ok(None) };
        let tables = ViewTables { workloads: true, ..ViewTables::default() };
        let replay = self.read_range_for(at + 1, seq, tables.with_dependencies())?;
        let rows = rows_used_by(&replay);
        changed.extend(rows.workloads.iter().cloned());
        let keys = RowKeys { workloads: changed.clone(), ..RowKeys::default() };
        let mut view = view_rows::load(db, at, ViewTables::default(), &keys, false, view_rows::Skip::NONE)?;
        replay_onto(&mut view, &replay);
        clear_verdicts(&mut view);
        Ok(Some(WorkloadOverlay { view, changed }))
    }

    fn view_at_once(&self, seq: u64, tables: ViewTables, verdicts: bool, skip: &[&str]) -> Result<ClusterView> {
        let last = self.last_seq();
        if seq > last {
            return Err(Error::BeyondEnd { requested: seq, last });
        }
        let db = &self.shared.db;
        if let Some(at) = view_rows::checkpoint_at_or_before(db, seq)? {
            // Only the events that can change the tables read (or the ones
            // their fold reads) are decoded whole; the rest move the view's
            // scalars. Of other tables, only the rows those events read.
            let needed = tables.with_dependencies();
            // Node events (heartbeats, GPU samples) are most of a fleet's
            // history: a reader of nodes decodes every event whole once
            // rather than most of them twice.
            let replay = if needed.nodes {
                self.read_range(at + 1, seq)?.into_iter().map(|rec| Replayed::Event(Box::new(rec))).collect()
            } else {
                self.read_range_for(at + 1, seq, needed)?
            };
            let outside = needed.without(tables);
            let rows = if outside != ViewTables::default() || !skip.is_empty() {
                rows_used_by(&replay)
            } else {
                RowKeys::default()
            };
            // Workload rows the replay changes are read whole.
            let changed = if skip.is_empty() { Default::default() } else { rows.workloads.clone() };
            let skip = view_rows::Skip { fields: skip, except: &changed };
            let mut view = view_rows::load(db, at, tables, &outside.keep(rows), verdicts, skip)?;
            replay_onto(&mut view, &replay);
            return Ok(view);
        }
        // No row checkpoint this early (a history written before they
        // existed, or younger than K events): the whole-view checkpoints.
        let mut view = match db.last_at_or_before(CF_SM_META, &SmMetaKey::Checkpoint(seq).encode())? {
            Some((k, v)) if SmMetaKey::checkpoint_seq(&k).is_some() => {
                decode_json::<CheckpointView>(CF_SM_META, &k, &v)?.view
            }
            _ => ClusterView::default(),
        };
        if view.last_seq < seq {
            for rec in self.read_range(view.last_seq + 1, seq)? {
                view.apply(&rec);
            }
        }
        Ok(view)
    }

    /// The time of event `seq` (0 for seq 0, before the first event): what
    /// a state read at `seq` says its moment is, without building the state.
    pub fn time_at(&self, seq: u64) -> Result<i64> {
        let last = self.last_seq();
        if seq > last {
            return Err(Error::BeyondEnd { requested: seq, last });
        }
        if seq == 0 {
            return Ok(0);
        }
        self.stored_time(seq)
    }

    fn stored_time(&self, seq: u64) -> Result<i64> {
        let rec: EventHead = self.shared.db.get_json(CF_EVENTS, &u64_key(seq))?.ok_or_else(|| {
            Error::Storage(format!("event {seq} is missing from {}", self.shared.db.path().display()))
        })?;
        Ok(rec.time_ms)
    }

    /// The seq of the last event stamped at or before `time_ms` (0 when
    /// the history starts later). Event times never decrease along the log,
    /// so the seq-keyed history is searched in O(log n) point reads.
    pub fn seq_at_time(&self, time_ms: i64) -> Result<u64> {
        let (oldest, last) = {
            let live = self.read_live();
            (live.oldest_seq, live.last_seq)
        };
        if last == 0 || oldest > last {
            return Ok(0);
        }
        if self.stored_time(oldest)? > time_ms {
            return Ok(oldest - 1);
        }
        // Invariant: time(lo) <= time_ms; the answer is in lo..=hi.
        let (mut lo, mut hi) = (oldest, last);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.stored_time(mid)? <= time_ms {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Stored events with `from_seq <= seq <= to_seq` (to the last one when
    /// `to_seq` is `None`) that match `filter`, at most `limit` of them
    /// (`limit == 0` means no limit). Seqs start at 1, so `from_seq == 0`
    /// reads from the first event.
    pub fn events(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>> {
        let (from, to, limit) = self.read_bounds(from_seq, to_seq, limit)?;
        Ok(self.scan_events(from, to, limit, filter)?.0)
    }

    /// The inclusive seq range and the limit a read of `from_seq..=to_seq`
    /// covers, or [`Error::Compacted`] when it starts before the history.
    fn read_bounds(&self, from_seq: u64, to_seq: Option<u64>, limit: usize) -> Result<(u64, u64, usize)> {
        let from = from_seq.max(1);
        let (last, oldest) = {
            let live = self.read_live();
            (live.last_seq, live.oldest_seq)
        };
        if from < oldest {
            return Err(Error::Compacted { requested: from, oldest });
        }
        let to = to_seq.map_or(last, |t| t.min(last));
        Ok((from, to, if limit == 0 { usize::MAX } else { limit }))
    }

    /// Reads matching records in `from..=to`, at most `limit`; also returns
    /// the seq after the last one examined, where the next read continues.
    pub(crate) fn scan_events(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<(Vec<EventRecord>, u64)> {
        let page = self.read_page(from, to, limit, filter)?;
        Ok((page.records, page.examined_to + 1))
    }

    /// Stored events with `from_seq <= seq <= to_seq` that `filter`
    /// matches, at most `limit` (0: no limit), with how far the read got and
    /// how many stored events it read: a filter on a node or a workload
    /// reads only that subject's events (through its index), any other
    /// every event in the range.
    pub fn events_page(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventsPage> {
        let (from, to, limit) = self.read_bounds(from_seq, to_seq, limit)?;
        self.read_page(from, to, limit, filter)
    }

    fn read_page(&self, from: u64, to: u64, limit: usize, filter: &EventFilter) -> Result<EventsPage> {
        if from >= self.shared.subjects_from.load(Ordering::Acquire) {
            if let Some(p) = subject_index::read(&self.shared.db, from, to, limit, filter)? {
                return Ok(EventsPage { records: p.records, examined_to: p.examined_to, read: p.read });
            }
        }
        let (records, next) = self.scan_as(from, to, limit, |rec: &EventRecord| filter.matches(rec))?;
        // Seqs are read in order, each once: `from..next` was read.
        Ok(EventsPage { records, examined_to: next.saturating_sub(1), read: next.saturating_sub(from) })
    }

    /// Stored events with `from_seq <= seq <= to_seq` (to the last one when
    /// `to_seq` is `None`) of any of `kinds` (any kind when empty), at most
    /// `limit` of them (`limit == 0`: no limit), as [`EventHead`]s: for
    /// readers that need no event fields, at a fraction of the cost of
    /// [`EventStore::events`].
    pub fn event_heads(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: usize,
        kinds: &[String],
    ) -> Result<Vec<EventHead>> {
        let (from, to, limit) = self.read_bounds(from_seq, to_seq, limit)?;
        let wanted = |h: &EventHead| kinds.is_empty() || kinds.contains(&h.event.kind);
        Ok(self.scan_as(from, to, limit, wanted)?.0)
    }

    /// Reads the records in `from..=to` as `T`, keeping those `keep`
    /// accepts, at most `limit`; also returns the seq after the last one
    /// examined.
    fn scan_as<T: DeserializeOwned>(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<(Vec<T>, u64)> {
        self.scan_with(from, to, limit, |k, v| {
            let rec: T = decode_json(CF_EVENTS, k, v)?;
            Ok(keep(&rec).then_some(rec))
        })
    }

    /// Reads the records in `from..=to` through `decode`, keeping what it
    /// returns, at most `limit`; also returns the seq after the last one
    /// examined.
    fn scan_with<T>(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        mut decode: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>,
    ) -> Result<(Vec<T>, u64)> {
        let mut out = Vec::new();
        let mut next = from;
        if from > to || limit == 0 {
            return Ok((out, next));
        }
        self.shared.db.scan(CF_EVENTS, &u64_key(from), |k, v| {
            let seq =
                decode_u64(k).ok_or_else(|| Error::decode(format!("key {CF_EVENTS}/{}", show_key(k)), "not a u64"))?;
            if seq > to {
                return Ok(false);
            }
            next = seq + 1;
            out.extend(decode(k, v)?);
            Ok(out.len() < limit)
        })?;
        Ok((out, next))
    }

    /// Every stored record in `from..=to`, which must all be present.
    pub(crate) fn read_range(&self, from: u64, to: u64) -> Result<Vec<EventRecord>> {
        let (recs, _) = self.scan_events(from, to, usize::MAX, &EventFilter::default())?;
        self.check_complete(from, to, recs.len(), recs.first().map(|r| r.seq))?;
        Ok(recs)
    }

    /// Every stored record in `from..=to`, which must all be present; those
    /// whose kind can change a table of `tables` decoded whole, the others
    /// only as far as their position, time, hash and kind.
    fn read_range_for(&self, from: u64, to: u64, tables: ViewTables) -> Result<Vec<Replayed>> {
        let (steps, _) = self.scan_with(from, to, usize::MAX, |k, v| {
            let head: EventHead = decode_json(CF_EVENTS, k, v)?;
            Ok(Some(if ViewTables::changed_by(&head.event.kind).intersects(tables) {
                Replayed::Event(Box::new(decode_json(CF_EVENTS, k, v)?))
            } else {
                Replayed::Skipped(head)
            }))
        })?;
        self.check_complete(from, to, steps.len(), steps.first().map(Replayed::seq))?;
        Ok(steps)
    }

    /// Seqs are dense keys: `found` records starting at `first` fill `from..=to` exactly when
    /// the count is right and the first is `from`.
    fn check_complete(&self, from: u64, to: u64, found: usize, first: Option<u64>) -> Result<()> {
        let expected = to.saturating_add(1).saturating_sub(from);
        if found as u64 != expected || first.is_some_and(|s| s != from) {
            return Err(Error::Storage(format!(
                "events {from}..={to} are not all stored in {} (found {found} of {expected})",
                self.shared.db.path().display(),
            )));
        }
        Ok(())
    }

    /// The seq of the last applied event, bumped after each apply batch is durable in RocksDB.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.watch_tx.subscribe()
    }

    /// The stored events from `from_seq` that match `filter`, then the live
    /// tail as it is applied: no gap, no duplicate. When `from_seq` is older
    /// than [`EventStore::oldest_seq`] the stream yields
    /// [`Error::Compacted`] and ends. Otherwise it never ends on its own:
    /// drop it to stop watching (it keeps the store open while it lives).
    pub fn watch(
        &self,
        from_seq: u64,
        filter: EventFilter,
    ) -> impl Stream<Item = Result<EventRecord>> + Send + 'static {
        let from = from_seq.max(1);
        let oldest = self.oldest_seq();
        let start = if from < oldest {
            WatchPhase::Failed(Error::Compacted { requested: from, oldest })
        } else {
            WatchPhase::Running(Box::new(Watcher {
                slot: add_watcher(&self.shared.counters, from - 1),
                store: self.clone(),
                rx: self.subscribe(),
                next: from,
                filter,
                buf: VecDeque::new(),
            }))
        };
        futures::stream::unfold(start, |phase| async move {
            let mut w = match phase {
                WatchPhase::Failed(e) => return Some((Err(e), WatchPhase::Done)),
                WatchPhase::Done => return None,
                WatchPhase::Running(w) => w,
            };
            loop {
                if let Some(rec) = w.buf.pop_front() {
                    w.slot.position.store(rec.seq, Ordering::Relaxed);
                    return Some((Ok(rec), WatchPhase::Running(w)));
                }
                let last = *w.rx.borrow_and_update();
                // Everything before `next` is delivered or filtered out.
                w.slot.position.store(w.next - 1, Ordering::Relaxed);
                if w.next <= last {
                    match w.store.scan_events(w.next, last, WATCH_CHUNK, &w.filter) {
                        Ok((recs, next)) => {
                            w.buf.extend(recs);
                            w.next = next;
                        }
                        Err(e) => return Some((Err(e), WatchPhase::Done)),
                    }
                } else if w.rx.changed().await.is_err() {
                    return None;
                }
            }
        })
    }

    /// Counters for benchmarks.
    pub fn stats(&self) -> LogStats {
        self.shared.counters.snapshot()
    }

    /// RocksDB's memory for this member's database, read now.
    pub fn storage_memory(&self) -> crate::StorageMemory {
        self.shared.db.memory()
    }

    /// The log's measurements, for the member's metrics endpoint.
    pub fn metrics(&self) -> &LogMetrics {
        &self.shared.counters.metrics
    }
}

/// A stored event without the event's own fields (`EventRecord` less its
/// payload): position, time, actor, ids, hash and kind. Decoding it skips
/// the payload (GPU samples, placement reasons), which is most of the cost
/// of reading a record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventHead {
    pub seq: u64,
    pub raft_index: u64,
    pub time_ms: i64,
    pub actor: Actor,
    pub command_id: String,
    pub correlation_id: String,
    pub hash: String,
    pub event: EventKind,
}

/// The kind of a stored event (`Event::kind()`), read without its fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventKind {
    pub kind: String,
}

/// One step of a past-state replay.
enum Replayed {
    Event(Box<EventRecord>),
    Skipped(EventHead),
}

impl Replayed {
    fn seq(&self) -> u64 {
        match self {
            Replayed::Event(rec) => rec.seq,
            Replayed::Skipped(head) => head.seq,
        }
    }
}

struct Watcher {
    /// Where this watcher is, for the lag metric; dropped with the stream.
    slot: WatcherSlot,
    store: EventStore,
    rx: watch::Receiver<u64>,
    next: u64,
    filter: EventFilter,
    buf: VecDeque<EventRecord>,
}

enum WatchPhase {
    Running(Box<Watcher>),
    Failed(Error),
    Done,
}

/// Applies replayed events to `view`: whole ones in full, skipped ones to
/// the view's scalars.
fn replay_onto(view: &mut ClusterView, replay: &[Replayed]) {
    for step in replay {
        match step {
            Replayed::Event(rec) => view.apply(rec),
            Replayed::Skipped(h) => view.apply_scalars(h.seq, h.time_ms, &h.hash, &h.event.kind),
        }
    }
}

/// The rows applying the whole events of `replay` reads or writes.
fn rows_used_by(replay: &[Replayed]) -> RowKeys {
    let mut rows = RowKeys::default();
    for step in replay {
        if let Replayed::Event(rec) = step {
            rows.extend(ClusterView::rows_used_by(&rec.event));
        }
    }
    rows
}

/// Empties the per-node verdicts of the workload rows that carry them (the
/// rows a replay changed got them from the events), so every row holds
/// summaries only.
fn clear_verdicts(view: &mut ClusterView) {
    let has = |p: &Option<claw_commands::Placement>| p.as_ref().is_some_and(|p| !p.considered.is_empty());
    let replayed: Vec<String> = view
        .workloads
        .iter()
        .filter(|(_, w)| has(&w.placement) || has(&w.unschedulable))
        .map(|(id, _)| id.clone())
        .collect();
    for id in replayed {
        if let Some(w) = view.workloads.get_mut(&id) {
            for p in [w.placement.as_mut(), w.unschedulable.as_mut()].into_iter().flatten() {
                p.considered.clear();
            }
        }
    }
}

/// The difference between the workload table as of a row checkpoint (a
/// table base) and right after a later event: see
/// [`EventStore::workloads_changed_since`].
#[derive(Debug)]
pub struct WorkloadOverlay {
    /// The view right after the event, holding in its workload table only
    /// the changed rows (those that existed then).
    pub view: ClusterView,
    /// The key of every row that may differ from the base: a base row with
    /// one of these keys is replaced by `view`'s row, or dropped if `view`
    /// has none.
    pub changed: BTreeSet<String>,
}
