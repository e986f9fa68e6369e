use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Direction,
    FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys::{show_key, ALL_CFS, CF_DEDUP, CF_VIEW_ROWS};
use crate::{Error, Result};

/// The options of one column family. Every command's id is looked up in
/// `dedup` before it is decided, and nearly every lookup misses: a bloom
/// filter (10 bits per key, ~1% false positives) answers a miss without
/// searching each table file's index, however long the history grows.
/// Table files written before the filter was configured simply have none.
///
/// Every table file is LZ4-compressed: the history is JSON, which LZ4
/// shrinks several times over at a cost far below a disk read. (RocksDB's
/// default is Snappy, which this build does not include, so without this
/// the files were stored uncompressed.) Files written before keep their
/// format and are rewritten compressed as compaction reaches them.
///
/// In the view rows, values of [`MIN_BLOB_BYTES`] or more (the analytics
/// layer's table bases, a few MB each) are kept in blob files beside the
/// table files, uncompressed: a seek that passes one reads only its small
/// reference, a read of one is a plain file read rather than a multi-MB
/// block decompressed and cached whole, and compaction does not rewrite them.
fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    if name == CF_VIEW_ROWS {
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(MIN_BLOB_BYTES);
        opts.set_blob_compression_type(DBCompressionType::None);
        opts.set_enable_blob_gc(true);
    }
    if name == CF_DEDUP {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
    }
    opts
}

/// The smallest view-rows value kept in a blob file (rows are far smaller).
const MIN_BLOB_BYTES: u64 = 64 << 10;

/// A WAL file can be deleted only once every column family's data in it is
/// flushed; a family written rarely (the raft vote) would otherwise keep
/// every WAL since its last write, so the WAL grew with the whole history
/// (4.5 GB at 1 M events) and a restart replayed all of it. Past this
/// total, RocksDB flushes the families holding the oldest WAL.
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

/// A stored `(key, value)` pair.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// One member's RocksDB database with the log store's column families.
pub(crate) struct Db {
    inner: DB,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database at `path`. With
    /// `verify_checksums`, every block of every table file is read and its
    /// checksum checked before the database is used, so a damaged file is
    /// named at start-up instead of failing a read later.
    pub(crate) fn open(path: &Path, verify_checksums: bool) -> Result<Arc<Db>> {
        Db::open_with_wal_limit(path, verify_checksums, MAX_TOTAL_WAL_BYTES)
    }

    fn open_with_wal_limit(path: &Path, verify_checksums: bool, max_wal: u64) -> Result<Arc<Db>> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Storage(format!("cannot create data directory {}: {e}", path.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_paranoid_checks(true);
        // A record torn by a crash at the end of the WAL was never acknowledged
        // (writes are synced before they are), so it is dropped; damage anywhere
        // else in the WAL stops the open instead of silently cutting the history
        // short (RocksDB's default, point-in-time recovery, would).
        opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_max_total_wal_size(max_wal);
        let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
        let inner = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| corrupt_or_unreadable(path, &e))?;
        let db = Db { inner, path: path.to_path_buf() };
        if verify_checksums {
            db.verify_checksums()?;
        }
        Ok(Arc::new(db))
    }

    /// Reads every key of every column family with checksum verification
    /// (without filling the block cache).
    fn verify_checksums(&self) -> Result<()> {
        for name in ALL_CFS {
            let handle = self.cf(name)?;
            let mut ro = ReadOptions::default();
            ro.set_verify_checksums(true);
            ro.fill_cache(false);
            ro.set_readahead_size(4 << 20);
            for item in self.inner.iterator_cf_opt(&handle, ro, IteratorMode::Start) {
                item.map_err(|e| corrupt_or_unreadable(&self.path, &e))?;
            }
        }
        Ok(())
    }

    /// Flushes every column family's memtable to table files (a clean
    /// shutdown does this, so the next start has no WAL to replay).
    pub(crate) fn flush(&self) -> Result<()> {
        let handles = ALL_CFS.iter().map(|name| self.cf(name)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Arc<BoundColumnFamily<'_>>> = handles.iter().collect();
        self.inner
            .flush_cfs_opt(&refs, &FlushOptions::default())
            .map_err(|e| Error::Storage(format!("cannot flush RocksDB at {}: {e}", self.path.display())))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.inner
            .cf_handle(name)
            .ok_or_else(|| Error::Storage(format!("column family {name} is missing in {}", self.path.display())))
    }

    pub(crate) fn get_json<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        let handle = self.cf(cf)?;
        let bytes = self
            .inner
            .get_pinned_cf(&handle, key)
            .map_err(|e| Error::Storage(format!("cannot read {cf}/{}: {e}", show_key(key))))?;
        bytes.map(|b| decode_json(cf, key, &b)).transpose()
    }

    pub(crate) fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = self.cf(cf)?;
        self.inner.get_cf(&handle, key).map_err(|e| Error::Storage(format!("cannot read {cf}/{}: {e}", show_key(key))))
    }

    /// Deletes the keys of `cf` in `from..to`.
    pub(crate) fn delete_range(&self, cf: &str, from: &[u8], to: &[u8]) -> Result<()> {
        let handle = self.cf(cf)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&handle, from, to);
        self.write(batch, false)
    }

    /// Visits `(key, value)` pairs of `cf` from `start` onwards, in key order,
    /// until `f` returns `false`.
    pub(crate) fn scan(&self, cf: &str, start: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>) -> Result<()> {
        let handle = self.cf(cf)?;
        for item in self.inner.iterator_cf(&handle, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(|e| Error::Storage(format!("cannot scan {cf}: {e}")))?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// The last `(key, value)` of `cf` at or before `at`.
    pub(crate) fn last_at_or_before(&self, cf: &str, at: &[u8]) -> Result<Option<KeyValue>> {
        let handle = self.cf(cf)?;
        let mut it = self.inner.iterator_cf(&handle, IteratorMode::From(at, Direction::Reverse));
        it.next().transpose().map_err(|e| Error::Storage(format!("cannot scan {cf}: {e}")))
    }

    /// A raw iterator over `cf`, for seeks.
    pub(crate) fn raw_iter(&self, cf: &str) -> Result<rocksdb::DBRawIteratorWithThreadMode<'_, DB>> {
        let handle = self.cf(cf)?;
        Ok(self.inner.raw_iterator_cf(&handle))
    }

    /// The first key of `cf`.
    pub(crate) fn first_key(&self, cf: &str) -> Result<Option<Box<[u8]>>> {
        let handle = self.cf(cf)?;
        let mut it = self.inner.iterator_cf(&handle, IteratorMode::Start);
        Ok(it.next().transpose().map_err(|e| Error::Storage(format!("cannot scan {cf}: {e}")))?.map(|(k, _)| k))
    }

    /// The last `(key, value)` of `cf`.
    pub(crate) fn last(&self, cf: &str) -> Result<Option<KeyValue>> {
        let handle = self.cf(cf)?;
        let mut it = self.inner.iterator_cf(&handle, IteratorMode::End);
        it.next().transpose().map_err(|e| Error::Storage(format!("cannot scan {cf}: {e}")))
    }

    /// Writes a batch; `sync` makes it durable (fsync of the WAL) before returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.inner
            .write_opt(batch, &wo)
            .map_err(|e| Error::Storage(format!("cannot write to RocksDB at {}: {e}", self.path.display())))
    }
}

/// The error for a database RocksDB cannot open or read. Corruption gets
/// what to do about it: RocksDB's message names the damaged file.
fn corrupt_or_unreadable(path: &Path, e: &rocksdb::Error) -> Error {
    if matches!(e.kind(), rocksdb::ErrorKind::Corruption) {
        Error::Storage(format!(
            "the RocksDB database at {} is corrupt: {e}. This member must not start from it: \
             move the data directory aside and restore the member from the other members \
             (start it empty with --join and add it again) or from a backup",
            path.display()
        ))
    } else {
        Error::Storage(format!("cannot open RocksDB at {}: {e}", path.display()))
    }
}

/// Decodes a stored JSON value; the error names the column family and key.
pub(crate) fn decode_json<T: DeserializeOwned>(cf: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::decode(format!("record {cf}/{}", show_key(key)), e))
}

/// The first byte of a value stored or sent as MessagePack (view rows, raft
/// log entries, member-to-member raft messages). Values written before it
/// are JSON, whose text never starts with this byte, so both read.
pub(crate) const PACKED: u8 = 0x01;

/// Encodes a value as [`PACKED`], then MessagePack with named fields (a map,
/// like JSON, so a field added with `#[serde(default)]` still reads old
/// values). About half JSON's bytes for our records and several times
/// cheaper to decode: past-state reads decode tens of thousands of view rows
/// per query, and every raft entry is encoded once per member and once per
/// follower it is sent to.
pub(crate) fn encode_packed<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    encode_as(value, true).map_err(|e| Error::Storage(format!("cannot encode {what}: {e}")))
}

/// Encodes `value` as [`encode_packed`] does, or as JSON when `packed` is
/// false (for a member of an earlier version, which reads only JSON).
pub(crate) fn encode_as<T: Serialize + ?Sized>(value: &T, packed: bool) -> std::result::Result<Vec<u8>, String> {
    if !packed {
        return serde_json::to_vec(value).map_err(|e| e.to_string());
    }
    let mut buf = Vec::with_capacity(256);
    buf.push(PACKED);
    rmp_serde::encode::write_named(&mut buf, value).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Decodes bytes written by [`encode_as`] in either format; the
/// error says which format was read and why it failed.
pub(crate) fn unpack<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match bytes.split_first() {
        Some((&PACKED, body)) => rmp_serde::from_slice(body).map_err(|e| format!("MessagePack: {e}")),
        _ => serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}")),
    }
}

/// Decodes a value written by [`encode_packed`], or a JSON value written
/// before it; the error names the column family, the key and the format.
pub(crate) fn decode_packed<T: DeserializeOwned>(cf: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    unpack(bytes).map_err(|e| Error::decode(format!("record {cf}/{}", show_key(key)), e))
}

/// Memory RocksDB holds for a member's database, summed over its column
/// families: what `/metrics` reports so an operator can tell a growing
/// resident size from RocksDB's own buffers apart from the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageMemory {
    /// Memtables: writes not yet flushed to table files (active and immutable).
    pub memtable_bytes: u64,
    /// Open table files' index and filter blocks held outside the block cache.
    pub table_reader_bytes: u64,
    /// Blocks in the block caches.
    pub block_cache_bytes: u64,
}

impl Db {
    /// RocksDB's memory, read from its properties now. A property RocksDB
    /// does not report counts as 0.
    pub(crate) fn memory(&self) -> StorageMemory {
        let mut memory = StorageMemory::default();
        for name in ALL_CFS {
            let Ok(cf) = self.cf(name) else { continue };
            let read = |property: &str| self.inner.property_int_value_cf(&cf, property).ok().flatten().unwrap_or(0);
            memory.memtable_bytes += read("rocksdb.cur-size-all-mem-tables");
            memory.table_reader_bytes += read("rocksdb.estimate-table-readers-mem");
            memory.block_cache_bytes += read("rocksdb.block-cache-usage");
        }
        memory
    }
}

/// Encodes a value for storage; `what` names it in the (unlikely) error.
pub(crate) fn encode_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Storage(format!("cannot encode {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::CF_EVENTS;

    /// The number after `name=` in RocksDB's table-properties text.
    fn table_property(props: &str, name: &str) -> Option<u64> {
        props.split(';').find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('=')?.trim().parse().ok())
    }

    /// Unflushed writes show as memtable memory, and a flush moves them out.
    #[test]
    fn memory_reports_memtables_until_they_are_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), true).expect("open");
        let empty = db.memory().memtable_bytes;
        let mut batch = WriteBatch::default();
        let cf = db.cf(CF_EVENTS).expect("cf");
        for i in 0..10_000u64 {
            batch.put_cf(&cf, i.to_be_bytes(), [b'x'; 200]);
        }
        db.write(batch, true).expect("write");
        let written = db.memory().memtable_bytes;
        assert!(written >= empty + 2_000_000, "10,000 rows of 200 bytes in memtables: {empty} -> {written}");
        db.flush().expect("flush");
        let flushed = db.memory().memtable_bytes;
        assert!(flushed < written / 2, "after a flush: {written} -> {flushed}");
    }

    #[test]
    fn dedup_table_files_carry_a_bloom_filter_and_events_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), true).expect("open");
        let mut batch = WriteBatch::default();
        for name in [CF_DEDUP, CF_EVENTS] {
            let cf = db.cf(name).expect("cf");
            for i in 0..1_000u64 {
                batch.put_cf(&cf, format!("cmd-{i}"), b"{}");
            }
        }
        db.write(batch, true).expect("write");
        db.flush().expect("flush");
        let filter_bytes = |name: &str| {
            let cf = db.cf(name).expect("cf");
            let props = db.inner.property_value_cf(&cf, "rocksdb.aggregated-table-properties").expect("read property");
            let props = props.unwrap_or_else(|| panic!("{name}: no table properties"));
            table_property(&props, "filter block size").unwrap_or_else(|| panic!("{name}: no filter size in {props}"))
        };
        assert!(filter_bytes(CF_DEDUP) > 0, "a dedup miss should not search every table file");
        assert_eq!(filter_bytes(CF_EVENTS), 0);
    }

    #[test]
    fn table_files_are_compressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), true).expect("open");
        let cf = db.cf(CF_EVENTS).expect("cf");
        let mut batch = WriteBatch::default();
        for i in 0..2_000u64 {
            let value = format!(
                r#"{{"seq":{i},"event":{{"kind":"GpuMetricsObserved","node":"n-{}","utilization_pct":{}}}}}"#,
                i % 7,
                i % 100
            );
            batch.put_cf(&cf, i.to_be_bytes(), value);
        }
        let props = {
            db.write(batch, true).expect("write");
            db.flush().expect("flush");
            db.inner.property_value_cf(&cf, "rocksdb.aggregated-table-properties").expect("read property")
        };
        let props = props.expect("table properties");
        let raw = table_property(&props, "raw value size").expect("raw value size");
        let stored = table_property(&props, "data block size").expect("data block size");
        assert!(stored * 2 < raw, "JSON values should shrink at least twofold: {stored} bytes stored for {raw}");
    }

    /// A family written once (like the raft vote) does not keep every later
    /// WAL file alive.
    #[test]
    fn wal_files_do_not_pile_up_behind_a_quiet_column_family() {
        use crate::keys::CF_RAFT_META;
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = 4 << 20;
        let db = Db::open_with_wal_limit(dir.path(), true, limit).expect("open");
        let mut once = WriteBatch::default();
        once.put_cf(&db.cf(CF_RAFT_META).expect("cf"), b"vote", b"{}");
        db.write(once, true).expect("write");
        for i in 0..48u64 {
            let mut batch = WriteBatch::default();
            let cf = db.cf(CF_EVENTS).expect("cf");
            for j in 0..64u64 {
                let value: Vec<u8> = (0..16_384u64).map(|k| ((i * 64 + j) * 7 + k * k) as u8).collect();
                batch.put_cf(&cf, (i * 64 + j).to_be_bytes(), value);
            }
            drop(cf);
            db.write(batch, false).expect("write");
        }
        let wal_bytes: u64 = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(wal_bytes < 4 * limit, "{wal_bytes} bytes of WAL for 48 MiB written with a {limit}-byte limit");
        assert!(db.get_raw(CF_RAFT_META, b"vote").expect("read").is_some());
    }

    /// A database with a few MiB of events flushed to table files; returns the largest one.
    fn flushed_db(dir: &Path) -> PathBuf {
        let db = Db::open(dir, true).expect("open");
        let cf = db.cf(CF_EVENTS).expect("cf");
        let mut batch = WriteBatch::default();
        for i in 0..4_000u64 {
            // Varied bytes, so compression leaves the blocks large.
            let value: Vec<u8> = (0..1_000u64).map(|j| (i.wrapping_mul(31).wrapping_add(j * j) % 251) as u8).collect();
            batch.put_cf(&cf, i.to_be_bytes(), value);
        }
        drop(cf);
        db.write(batch, true).expect("write");
        db.flush().expect("flush");
        drop(db);
        let mut tables: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sst"))
            .map(|p| (std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0), p))
            .collect();
        tables.sort();
        tables.pop().expect("a table file after the flush").1
    }

    fn file_name(p: &Path) -> String {
        p.file_name().and_then(|n| n.to_str()).expect("file name").to_string()
    }

    #[test]
    fn a_flipped_byte_in_a_table_file_is_named_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sst = flushed_db(dir.path());
        let mut bytes = std::fs::read(&sst).expect("read sst");
        let mid = bytes.len() / 3;
        for b in &mut bytes[mid..mid + 8] {
            *b ^= 0x5a;
        }
        std::fs::write(&sst, &bytes).expect("write sst");
        let err = Db::open(dir.path(), true).err().expect("a damaged table file must stop the open").to_string();
        assert!(err.contains("is corrupt") && err.contains(&file_name(&sst)), "{err}");
        // Without the check the damage would only surface on a later read.
        assert!(Db::open(dir.path(), false).is_ok(), "RocksDB alone does not read data blocks at open");
    }

    #[test]
    fn a_truncated_table_file_is_named_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sst = flushed_db(dir.path());
        let len = std::fs::metadata(&sst).expect("stat").len();
        std::fs::OpenOptions::new().write(true).open(&sst).and_then(|f| f.set_len(len / 2)).expect("truncate");
        let err = Db::open(dir.path(), false).err().expect("a truncated table file must stop the open").to_string();
        assert!(err.contains(&file_name(&sst)), "{err}");
    }

    #[test]
    fn an_intact_database_reopens_with_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        flushed_db(dir.path());
        let db = Db::open(dir.path(), true).expect("reopen");
        assert!(db.get_raw(CF_EVENTS, &3_999u64.to_be_bytes()).expect("read").is_some());
    }
}
