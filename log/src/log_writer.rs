use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use openraft::storage::LogFlushed;
use openraft::Entry;
use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use crate::db::Db;
use crate::keys::{u64_key, RaftMetaKey, CF_RAFT_LOG, CF_RAFT_META};
use crate::log_stats::Counters;
use crate::{Error, Result, TypeConfig};

/// The most recently appended raft entries, keyed by index: those handed to
/// the writer but not yet written (tagged with the id of the append that
/// writes them), and the newest written ones, kept so that replication and
/// apply read them without decoding them from RocksDB again. Readers overlay
/// these on what RocksDB holds, so an appended entry is readable as soon as
/// `append` returns, as openraft requires.
///
/// The indexes held are contiguous and end at the last log index (appends
/// are contiguous, truncation and purge cut both RocksDB and the cache), so
/// a range the cache covers needs no RocksDB read at all.
pub(crate) type SharedCache = Arc<RwLock<EntryCache>>;

/// Written entries kept beyond this many (or this many encoded bytes) are
/// dropped from the front; entries not yet written are never dropped.
pub(crate) const CACHE_ENTRIES: usize = 1024;
pub(crate) const CACHE_BYTES: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct EntryCache {
    pub(crate) entries: BTreeMap<u64, Cached>,
    /// The encoded size of everything in `entries`.
    bytes: usize,
}

pub(crate) struct Cached {
    /// The append writing it, until it is written.
    pub(crate) unwritten_by: Option<u64>,
    /// Its encoded size.
    pub(crate) bytes: usize,
    pub(crate) entry: Entry<TypeConfig>,
}

impl EntryCache {
    /// Adds (or replaces) the entry at `index`, to be written by `op_id`.
    pub(crate) fn insert(&mut self, index: u64, op_id: u64, bytes: usize, entry: Entry<TypeConfig>) {
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(index, Cached { unwritten_by: Some(op_id), bytes, entry }) {
            self.bytes -= old.bytes;
        }
    }

    /// Marks what `op_id` wrote as written, unless a later append replaced it.
    pub(crate) fn written(&mut self, op_id: u64, indexes: impl Iterator<Item = u64>) {
        for index in indexes {
            if let Some(c) = self.entries.get_mut(&index) {
                if c.unwritten_by == Some(op_id) {
                    c.unwritten_by = None;
                }
            }
        }
    }

    /// Drops the oldest written entries while the cache is over its bounds.
    pub(crate) fn shrink(&mut self) {
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            match self.entries.first_entry() {
                Some(first) if first.get().unwritten_by.is_none() => {
                    self.bytes -= first.remove().bytes;
                }
                _ => break,
            }
        }
    }

    /// Drops every entry at or after `from`.
    pub(crate) fn truncate(&mut self, from: u64) {
        for (_, c) in self.entries.split_off(&from) {
            self.bytes -= c.bytes;
        }
    }

    /// Drops every entry up to and including `upto`.
    pub(crate) fn purge(&mut self, upto: u64) {
        let kept = match upto.checked_add(1) {
            Some(next) => self.entries.split_off(&next),
            None => BTreeMap::new(),
        };
        for (_, c) in std::mem::replace(&mut self.entries, kept) {
            self.bytes -= c.bytes;
        }
    }
}

/// One unit of raft log IO, executed in submission order.
pub(crate) enum LogOp {
    Append {
        op_id: u64,
        entries: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// `done` is `None` for a write nobody waits for (the committed log id).
    Meta {
        key: RaftMetaKey,
        value: Vec<u8>,
        sync: bool,
        done: Option<oneshot::Sender<Result<()>>>,
    },
    /// Deletes every entry at or after `from`.
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<()>>,
    },
    /// Records `last_purged` and deletes every entry up to and including `upto`.
    Purge {
        upto: u64,
        last_purged: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
}

/// The "raft-log-writer" thread: it owns all raft log writes, and turns every
/// request queued while the previous write was syncing into one synced
/// RocksDB write (group commit).
pub(crate) struct LogWriter {
    tx: Option<mpsc::Sender<LogOp>>,
    join: Option<JoinHandle<()>>,
}

impl LogWriter {
    pub(crate) fn start(db: Arc<Db>, cache: SharedCache, counters: Arc<Counters>) -> Result<LogWriter> {
        let (tx, rx) = mpsc::channel::<LogOp>();
        let join = std::thread::Builder::new()
            .name("raft-log-writer".to_string())
            .spawn(move || run(&db, &cache, &counters, rx))
            .map_err(|e| Error::Storage(format!("cannot start the raft-log-writer thread: {e}")))?;
        Ok(LogWriter { tx: Some(tx), join: Some(join) })
    }

    pub(crate) fn submit(&self, op: LogOp) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::Storage("the raft log writer is stopped".into()))?;
        tx.send(op).map_err(|_| Error::Storage("the raft-log-writer thread has stopped".into()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and exit;
        // joining it releases its handle on the database before we return.
        self.tx.take();
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                tracing::error!("the raft-log-writer thread panicked");
            }
        }
    }
}

fn run(db: &Db, shared: &SharedCache, counters: &Counters, rx: mpsc::Receiver<LogOp>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        let result = write_ops(db, &ops, counters);
        if result.is_ok() {
            let mut cache = shared.write().unwrap_or_else(PoisonError::into_inner);
            for op in &ops {
                if let LogOp::Append { op_id, entries, .. } = op {
                    cache.written(*op_id, entries.iter().map(|(index, _)| *index));
                }
            }
            cache.shrink();
        }
        for op in ops {
            let r = result.as_ref().map(|_| ()).map_err(|e| Error::Storage(e.to_string()));
            match op {
                LogOp::Append { callback, .. } => callback.log_io_completed(r.map_err(std::io::Error::other)),
                LogOp::Meta { done: None, key, .. } => {
                    if let Err(e) = r {
                        tracing::warn!(?key, "raft metadata write failed: {e}");
                    }
                }
                LogOp::Meta { done: Some(done), .. } | LogOp::Truncate { done, .. } | LogOp::Purge { done, .. } => {
                    // The requester may have given up waiting; nothing to do then.
                    let _ = done.send(r);
                }
            }
        }
    }
}

fn write_ops(db: &Db, ops: &[LogOp], counters: &Counters) -> Result<()> {
    let log = db.cf(CF_RAFT_LOG)?;
    let meta = db.cf(CF_RAFT_META)?;
    let mut batch = WriteBatch::default();
    let mut sync = false;
    let mut entries = 0u64;
    for op in ops {
        match op {
            LogOp::Append { entries: es, .. } => {
                for (index, bytes) in es {
                    batch.put_cf(&log, u64_key(*index), bytes);
                }
                entries += es.len() as u64;
                sync = true;
            }
            LogOp::Meta { key, value, sync: s, .. } => {
                batch.put_cf(&meta, key.encode(), value);
                sync |= *s;
            }
            LogOp::Truncate { from, .. } => {
                batch.delete_range_cf(&log, u64_key(*from), u64_key(u64::MAX));
                batch.delete_cf(&log, u64_key(u64::MAX));
                sync = true;
            }
            LogOp::Purge { upto, last_purged, .. } => {
                batch.put_cf(&meta, RaftMetaKey::LastPurged.encode(), last_purged);
                batch.delete_range_cf(&log, u64_key(0), u64_key(upto.saturating_add(1)));
                sync = true;
            }
        }
    }
    let started = Instant::now();
    db.write(batch, sync)?;
    if sync {
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        counters.entries_synced.fetch_add(entries, Ordering::Relaxed);
        counters.metrics.observe_fsync(started.elapsed(), entries);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_queued_during_a_sync_share_one_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), true).expect("open");
        let counters = Arc::new(Counters::default());
        let writer = LogWriter::start(db.clone(), SharedCache::default(), counters.clone()).expect("start");
        let mut waits = Vec::new();
        for i in 0..200u32 {
            let (done, rx) = oneshot::channel();
            let value = i.to_be_bytes().to_vec();
            writer.submit(LogOp::Meta { key: RaftMetaKey::Vote, value, sync: true, done: Some(done) }).expect("submit");
            waits.push(rx);
        }
        for rx in waits {
            rx.await.expect("answered").expect("written");
        }
        let fsyncs = counters.fsyncs.load(Ordering::Relaxed);
        assert!((1..200).contains(&fsyncs), "200 synced requests took {fsyncs} fsyncs");
        let last: Option<Box<[u8]>> = db.last(CF_RAFT_META).expect("read").map(|(_, v)| v);
        assert_eq!(last.as_deref(), Some(&199u32.to_be_bytes()[..]), "the last request wins");
    }
}
