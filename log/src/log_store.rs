use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, Vote};
use tokio::sync::oneshot;

use crate::db::{decode_packed, encode_json, encode_packed, Db};
use crate::keys::{decode_u64, show_key, u64_key, RaftMetaKey, CF_RAFT_LOG, CF_RAFT_META};
use crate::log_stats::Counters;
use crate::log_writer::{Cached, LogOp, LogWriter, SharedCache};
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
    cache: SharedCache,
}

impl LogStore {
    pub(crate) fn open(db: Arc<Db>, counters: Arc<Counters>) -> Result<LogStore> {
        let cache = SharedCache::default();
        let writer = LogWriter::start(db.clone(), cache.clone(), counters.clone())?;
        Ok(LogStore { reader: LogReader { db, cache }, writer, next_op_id: 0, counters })
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
        // Holding the read lock keeps the writer from dropping cached entries
        // between the RocksDB read and the overlay, so no entry is missed.
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        // The cache ends at the last log index: a range it holds every index
        // of, from `start` to `end` or that last index, is answered from
        // memory (nothing past the last index exists).
        if let (Some((&first, _)), Some((&last, _))) = (cache.entries.first_key_value(), cache.entries.last_key_value())
        {
            let stop = end.map_or(last.saturating_add(1), |e| e.min(last.saturating_add(1)));
            let held: Vec<&Cached> = cache.entries.range((Bound::Included(start), upper)).map(|(_, c)| c).collect();
            if start >= first && held.len() as u64 == stop.saturating_sub(start) {
                return Ok(held.into_iter().map(|c| c.entry.clone()).collect());
            }
        }
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        self.db.scan(CF_RAFT_LOG, &u64_key(start), |k, v| {
            let index = decode_u64(k)
                .ok_or_else(|| Error::decode(format!("key {CF_RAFT_LOG}/{}", show_key(k)), "not a u64"))?;
            if end.is_some_and(|e| index >= e) {
                return Ok(false);
            }
            out.insert(index, decode_packed(CF_RAFT_LOG, k, v)?);
            Ok(true)
        })?;
        for (index, c) in cache.entries.range((Bound::Included(start), upper)) {
            out.insert(*index, c.entry.clone());
        }
        Ok(out.into_values().collect())
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = cache.entries.last_key_value() {
            return Ok(Some(*c.entry.get_log_id()));
        }
        match self.db.last(CF_RAFT_LOG)? {
            Some((k, v)) => {
                let entry: Entry<TypeConfig> = decode_packed(CF_RAFT_LOG, &k, &v)?;
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
            let mut cache = self.reader.cache.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes = encode_packed("raft log entry", &entry).map_err(Error::into_write)?;
                cache.insert(index, op_id, bytes.len(), entry);
                encoded.push((index, bytes));
            }
        }
        self.writer.submit(LogOp::Append { op_id, entries: encoded, callback }).map_err(Error::into_write)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.submit_and_wait(|done| LogOp::Truncate { from: log_id.index, done }).await.map_err(Error::into_write)?;
        // Entries cached past the cut (written, or queued and then deleted by
        // the truncate above) must not be read again.
        self.reader.cache.write().unwrap_or_else(PoisonError::into_inner).truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let last_purged = encode_json("last purged log id", &Some(log_id)).map_err(Error::into_write)?;
        self.submit_and_wait(|done| LogOp::Purge { upto: log_id.index, last_purged, done })
            .await
            .map_err(Error::into_write)?;
        self.reader.cache.write().unwrap_or_else(PoisonError::into_inner).purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};
    use rocksdb::WriteBatch;

    use super::*;
    use crate::log_writer::{CACHE_BYTES, CACHE_ENTRIES};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    /// (term, index) of each entry read.
    fn read(reader: &LogReader, start: u64, end: Option<u64>) -> Vec<(u64, u64)> {
        let entries = reader.entries(start, end).expect("read entries");
        entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
    }

    /// RocksDB holds 1..=5 (term 1; 1..=3 as JSON, as members before
    /// MessagePack stored them, 4 and 5 packed); the cache holds 4..=7
    /// (term 2), of which 6 and 7 are not written yet.
    fn reader_with_cache() -> (tempfile::TempDir, LogReader) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), true).expect("open");
        let mut batch = WriteBatch::default();
        let cf = db.cf(CF_RAFT_LOG).expect("cf");
        for i in 1..=3 {
            batch.put_cf(&cf, u64_key(i), encode_json("entry", &entry(1, i)).expect("encode"));
        }
        for i in 4..=5 {
            batch.put_cf(&cf, u64_key(i), encode_packed("entry", &entry(1, i)).expect("encode"));
        }
        drop(cf);
        db.write(batch, true).expect("write");
        let shared = SharedCache::default();
        {
            let mut cache = shared.write().expect("lock");
            for i in 4..=7 {
                cache.insert(i, i, 10, entry(2, i));
            }
            cache.written(4, [4].into_iter());
            cache.written(5, [5].into_iter());
        }
        (dir, LogReader { db, cache: shared })
    }

    #[test]
    fn reads_overlay_the_cache_on_rocksdb_and_ranges_it_covers_skip_rocksdb() {
        let (_dir, reader) = reader_with_cache();
        let all = vec![(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6), (2, 7)];
        assert_eq!(read(&reader, 0, None), all, "the cache wins where both hold an index");
        assert_eq!(read(&reader, 3, Some(6)), all[2..5].to_vec());
        assert_eq!(read(&reader, 5, Some(7)), vec![(2, 5), (2, 6)]);
        assert_eq!(read(&reader, 6, None), vec![(2, 6), (2, 7)]);
        assert_eq!(read(&reader, 5, Some(100)), vec![(2, 5), (2, 6), (2, 7)], "nothing exists past the last index");
        assert!(read(&reader, 8, None).is_empty());
        assert!(read(&reader, 6, Some(3)).is_empty(), "an empty range is empty, not a panic");
        assert_eq!(reader.last_log_id().expect("last").map(|l| l.index), Some(7));
    }

    #[test]
    fn truncate_and_purge_cut_the_cache() {
        let (_dir, reader) = reader_with_cache();
        reader.cache.write().expect("lock").truncate(6);
        assert_eq!(read(&reader, 4, None), vec![(2, 4), (2, 5)]);
        assert_eq!(reader.last_log_id().expect("last").map(|l| l.index), Some(5));
        reader.cache.write().expect("lock").purge(4);
        assert_eq!(read(&reader, 5, None), vec![(2, 5)]);
        reader.cache.write().expect("lock").purge(u64::MAX);
        assert_eq!(read(&reader, 4, None), vec![(1, 4), (1, 5)], "with the cache empty, RocksDB answers");
    }

    #[test]
    fn the_cache_keeps_unwritten_entries_and_drops_the_oldest_written_ones_past_its_bounds() {
        let mut cache = crate::log_writer::EntryCache::default();
        let n = CACHE_ENTRIES as u64 + 10;
        for i in 1..=n {
            cache.insert(i, i, 1, entry(1, i));
        }
        // Index 2 was replaced by a later append before its first write finished.
        cache.insert(2, n + 1, 1, entry(2, 2));
        for i in 1..=n {
            cache.written(i, [i].into_iter());
        }
        cache.shrink();
        assert_eq!(cache.entries.len(), n as usize - 1, "nothing past the unwritten index 2 may be dropped");
        assert_eq!(cache.entries.keys().next(), Some(&2));
        cache.written(n + 1, [2].into_iter());
        cache.shrink();
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        assert_eq!(cache.entries.keys().next(), Some(&11));
        // One huge entry: the byte bound drops everything written before it.
        cache.insert(n + 1, n + 2, CACHE_BYTES, entry(1, n + 1));
        cache.written(n + 2, [n + 1].into_iter());
        cache.shrink();
        assert_eq!(cache.entries.keys().copied().collect::<Vec<_>>(), vec![n + 1]);
    }
}
