//! Measurements of the log's own work, for the member's Prometheus
//! endpoint: how long proposals take to commit and apply, how long each
//! fsync takes and how many raft entries it makes durable, the committed
//! index, and where each watcher is. `clawd` registers them
//! ([`LogMetrics::register`]) next to its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::log_stats::Counters;

/// The log's histograms and scrape-time values. Histograms are cheap to
/// observe from any thread; cloning one shares its counts.
pub struct LogMetrics {
    pub(crate) commit_seconds: Histogram,
    pub(crate) apply_seconds: Histogram,
    pub(crate) fsync_seconds: Histogram,
    pub(crate) entries_per_fsync: Histogram,
    pub(crate) append_entries_seconds: Histogram,
    pub(crate) committed_index: AtomicU64,
    watchers: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    next_id: u64,
    /// Per live watcher: the seq it has delivered (or skipped by its filter) up to.
    positions: BTreeMap<u64, Arc<AtomicU64>>,
}

/// A watcher's place in [`LogMetrics`]; dropping it removes the watcher.
pub(crate) struct WatcherSlot {
    metrics: Arc<Counters>,
    id: u64,
    pub(crate) position: Arc<AtomicU64>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.metrics.metrics.watchers.lock().unwrap_or_else(PoisonError::into_inner).positions.remove(&self.id);
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s: fsyncs on NVMe are tens of µs, a slow disk's are tens of ms.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for LogMetrics {
    fn default() -> Self {
        LogMetrics {
            commit_seconds: latency_histogram(),
            apply_seconds: latency_histogram(),
            fsync_seconds: latency_histogram(),
            entries_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            append_entries_seconds: latency_histogram(),
            committed_index: AtomicU64::new(0),
            watchers: Mutex::default(),
        }
    }
}

impl LogMetrics {
    /// Adds the log's histograms to `registry` (they keep counting where they are).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "claw_proposal_commit",
            "Time from proposing a command on the leader to its raft entry being committed and applied",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "claw_apply",
            "Time the state machine takes to apply one batch of committed raft entries (decide, evolve, store)",
            Unit::Seconds,
            self.apply_seconds.clone(),
        );
        registry.register_with_unit(
            "claw_fsync",
            "Duration of each synced RocksDB write of the raft log (WAL fsync included)",
            Unit::Seconds,
            self.fsync_seconds.clone(),
        );
        registry.register(
            "claw_entries_per_fsync",
            "Raft log entries made durable by each synced write (group commit)",
            self.entries_per_fsync.clone(),
        );
        registry.register_with_unit(
            "claw_raft_append_entries",
            "Time this member takes to handle one AppendEntries from its leader (decode, append to its log, \
             answer), whether it came as a single call or on the AppendEntries stream",
            Unit::Seconds,
            self.append_entries_seconds.clone(),
        );
    }

    /// The highest raft index this member knows to be committed.
    pub fn committed_index(&self) -> u64 {
        self.committed_index.load(Ordering::Relaxed)
    }

    /// The position of every live watcher (the seq it has handled up to).
    pub fn watcher_positions(&self) -> Vec<u64> {
        let w = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        w.positions.values().map(|p| p.load(Ordering::Relaxed)).collect()
    }

    pub(crate) fn observe_fsync(&self, took: Duration, entries: u64) {
        self.fsync_seconds.observe(took.as_secs_f64());
        if entries > 0 {
            self.entries_per_fsync.observe(entries as f64);
        }
    }
}

/// Registers a new watcher starting after `position`.
pub(crate) fn add_watcher(counters: &Arc<Counters>, position: u64) -> WatcherSlot {
    let mut w = counters.metrics.watchers.lock().unwrap_or_else(PoisonError::into_inner);
    let id = w.next_id;
    w.next_id += 1;
    let position = Arc::new(AtomicU64::new(position));
    w.positions.insert(id, position.clone());
    WatcherSlot { metrics: counters.clone(), id, position }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_listed_while_they_live() {
        let counters = Arc::new(Counters::default());
        let a = add_watcher(&counters, 3);
        let b = add_watcher(&counters, 7);
        b.position.store(9, Ordering::Relaxed);
        assert_eq!(counters.metrics.watcher_positions(), vec![3, 9]);
        drop(a);
        assert_eq!(counters.metrics.watcher_positions(), vec![9]);
        drop(b);
        assert!(counters.metrics.watcher_positions().is_empty());
    }

    #[test]
    fn histograms_are_exposed_in_the_text_format() {
        let m = LogMetrics::default();
        m.observe_fsync(Duration::from_micros(300), 12);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("claw_fsync_seconds_count 1"), "{text}");
        assert!(text.contains("claw_entries_per_fsync_sum 12.0"), "{text}");
        assert!(text.contains("# TYPE claw_proposal_commit_seconds histogram"), "{text}");
    }
}
