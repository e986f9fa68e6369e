use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::telemetry::LogMetrics;

/// Counters for benchmarks: events per fsync is `entries_synced / fsyncs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStats {
    /// Synced (fsynced) RocksDB writes made by the raft log writer.
    pub fsyncs: u64,
    /// Raft log entries made durable by those writes.
    pub entries_synced: u64,
    /// The last raft index applied to the state machine.
    pub applied_index: u64,
}

/// The live counters behind [`LogStats`] and [`LogMetrics`], shared by the
/// writer thread, the state machine and the event store.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) entries_synced: AtomicU64,
    pub(crate) applied_index: AtomicU64,
    pub(crate) metrics: LogMetrics,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LogStats {
        LogStats {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            entries_synced: self.entries_synced.load(Ordering::Relaxed),
            applied_index: self.applied_index.load(Ordering::Relaxed),
        }
    }
}
