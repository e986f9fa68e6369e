use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys::{show_key, ALL_CFS};
use crate::{Error, Result};

/// A stored `(key, value)` pair.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// One member's RocksDB database with the log store's column families.
pub(crate) struct Db {
    inner: DB,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Arc<Db>> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Storage(format!("cannot create data directory {}: {e}", path.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let inner = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| Error::Storage(format!("cannot open RocksDB at {}: {e}", path.display())))?;
        Ok(Arc::new(Db { inner, path: path.to_path_buf() }))
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

/// Decodes a stored JSON value; the error names the column family and key.
pub(crate) fn decode_json<T: DeserializeOwned>(cf: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::decode(format!("record {cf}/{}", show_key(key)), e))
}

/// Encodes a value for storage; `what` names it in the (unlikely) error.
pub(crate) fn encode_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Storage(format!("cannot encode {what}: {e}")))
}
