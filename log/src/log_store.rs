use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, Vote};
use tokio::sync::oneshot;

use crate::db::{decode_json, encode_json, Db};
use crate::keys::{decode_u64, show_key, u64_key, RaftMetaKey, CF_RAFT_LOG, CF_RAFT_META};
use crate::log_stats::Counters;
use crate::log_writer::{LogOp, LogWriter, Pending};
use crate::{Error, Result, TypeConfig};

/// The raft log of one member in RocksDB. Reads go to RocksDB directly
/// (overlaid with entries still queued for writing); every write goes through
/// the single "raft-log-writer" thread, so log IO is serialized and appends
/// are group-committed.
pub(crate) struct LogStore {
    reader: LogReader,
    writer: LogWriter,
    next_op_id: u64,
    counters: Arc<Counters>,
}

/// A cheap reader of the raft log, used by openraft's replication tasks.
#[derive(Clone)]
pub(crate) struct LogReader {
    db: Arc<Db>,
    pending: Pending,
}

impl LogStore {
    pub(crate) fn open(db: Arc<Db>, counters: Arc<Counters>) -> Result<LogStore> {
        let pending = Pending::default();
        let writer = LogWriter::start(db.clone(), pending.clone(), counters.clone())?;
        Ok(LogStore { reader: LogReader { db, pending }, writer, next_op_id: 0, counters })
    }

    async fn submit_and_wait(&self, op: impl FnOnce(oneshot::Sender<Result<()>>) -> LogOp) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer.submit(op(tx))?;
        rx.await.map_err(|_| Error::Storage("the raft-log-writer thread stopped before answering".into()))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: RaftMetaKey) -> Result<Option<T>> {
        self.reader.db.get_json(CF_RAFT_META, &key.encode())
    }
}

impl LogReader {
    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>> {
        // Holding the read lock keeps the writer from retiring pending entries
        // between the RocksDB read and the overlay, so no entry is missed.
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        self.db.scan(CF_RAFT_LOG, &u64_key(start), |k, v| {
            let index = decode_u64(k)
                .ok_or_else(|| Error::decode(format!("key {CF_RAFT_LOG}/{}", show_key(k)), "not a u64"))?;
            if end.is_some_and(|e| index >= e) {
                return Ok(false);
            }
            out.insert(index, decode_json(CF_RAFT_LOG, k, v)?);
            Ok(true)
        })?;
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (index, (_, entry)) in pending.range((Bound::Included(start), upper)) {
            out.insert(*index, entry.clone());
        }
        Ok(out.into_values().collect())
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, (_, entry))) = pending.last_key_value() {
            return Ok(Some(*entry.get_log_id()));
        }
        match self.db.last(CF_RAFT_LOG)? {
            Some((k, v)) => {
                let entry: Entry<TypeConfig> = decode_json(CF_RAFT_LOG, &k, &v)?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (start, end) = bounds(&range);
        self.entries(start, end).map_err(Error::into_read)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_meta(RaftMetaKey::LastPurged).map_err(Error::into_read)?;
        let last_log_id = self.reader.last_log_id().map_err(Error::into_read)?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let value = encode_json("vote", vote).map_err(Error::into_write)?;
        self.submit_and_wait(|done| LogOp::Meta { key: RaftMetaKey::Vote, value, sync: true, done: Some(done) })
            .await
            .map_err(Error::into_write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_meta(RaftMetaKey::Vote).map_err(Error::into_read)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        self.counters.metrics.committed_index.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        let value = encode_json("committed log id", &committed).map_err(Error::into_write)?;
        // Neither synced nor awaited: losing it only means re-applying from an
        // older point, and waiting would stall raft behind the pending fsync.
        // The writer thread still orders it after the appends before it.
        self.writer
            .submit(LogOp::Meta { key: RaftMetaKey::Committed, value, sync: false, done: None })
            .map_err(Error::into_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let committed: Option<Option<LogId<u64>>> = self.read_meta(RaftMetaKey::Committed).map_err(Error::into_read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.next_op_id += 1;
        let op_id = self.next_op_id;
        let mut encoded = Vec::new();
        {
            let mut pending = self.reader.pending.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes = encode_json("raft log entry", &entry).map_err(Error::into_write)?;
                encoded.push((index, bytes));
                pending.insert(index, (op_id, entry));
            }
        }
        self.writer.submit(LogOp::Append { op_id, entries: encoded, callback }).map_err(Error::into_write)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.submit_and_wait(|done| LogOp::Truncate { from: log_id.index, done }).await.map_err(Error::into_write)?;
        // Entries still queued past the cut were written and then deleted by
        // the truncate above; drop any that a reader could still see.
        let mut pending = self.reader.pending.write().unwrap_or_else(PoisonError::into_inner);
        pending.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let last_purged = encode_json("last purged log id", &Some(log_id)).map_err(Error::into_write)?;
        self.submit_and_wait(|done| LogOp::Purge { upto: log_id.index, last_purged, done })
            .await
            .map_err(Error::into_write)
    }
}
