use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// How much of the log a scan of `events` or `metrics` read, against how
/// many rows it handed to the query: the measure of filter pushdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanStats {
    /// Which table was scanned (`events` or `metrics`).
    pub table: &'static str,
    /// Records read from RocksDB (examined by the scan).
    pub rows_read: u64,
    /// Rows the scan returned after its own filters and limit.
    pub rows_returned: u64,
}

/// The live counters of one running scan.
#[derive(Debug)]
pub(crate) struct ScanCounters {
    table: &'static str,
    read: AtomicU64,
    returned: AtomicU64,
}

impl ScanCounters {
    pub(crate) fn new(table: &'static str) -> Self {
        ScanCounters { table, read: AtomicU64::new(0), returned: AtomicU64::new(0) }
    }

    pub(crate) fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_returned(&self, n: u64) {
        self.returned.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ScanStats {
        ScanStats {
            table: self.table,
            rows_read: self.read.load(Ordering::Relaxed),
            rows_returned: self.returned.load(Ordering::Relaxed),
        }
    }
}

/// Remembers the most recently started log scan of one `Analytics`, so a
/// benchmark or test can read its counters after the query.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanStatsSink(Arc<Mutex<Option<Arc<ScanCounters>>>>);

impl ScanStatsSink {
    pub(crate) fn started(&self, counters: Arc<ScanCounters>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(counters);
    }

    pub(crate) fn last(&self) -> Option<ScanStats> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|c| c.snapshot())
    }
}
