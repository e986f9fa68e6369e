//! When to build a snapshot. Building one copies the whole state (the view
//! and decision state, encoded as one record), so on a long history with
//! many workloads a fixed interval of entries would make it a large share
//! of the work. The pacer asks raft for a snapshot once
//! `snapshot_logs_since_last` entries have been applied since the last one,
//! or eight per row of the view when that is more (the same spacing as the
//! whole-state checkpoints), so its cost per entry stays bounded.

use std::time::{Duration, Instant};

use crate::state_machine::full_checkpoint_spacing;
use crate::{ClawRaft, EventStore};

/// A snapshot asked for and not built in this long is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Runs until raft stops.
pub(crate) fn spawn(raft: ClawRaft, store: EventStore, logs_since_last: u64) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The snapshot index when a build was last asked for, and when.
        let mut asked: Option<(u64, Instant)> = None;
        while metrics.changed().await.is_ok() {
            let (applied, snapshot) = {
                let m = metrics.borrow_and_update();
                (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
            };
            if asked.is_some_and(|(at, when)| at == snapshot && when.elapsed() < RETRY_AFTER) {
                continue;
            }
            let spacing = store.with_view(|v| full_checkpoint_spacing(logs_since_last, v));
            if applied >= snapshot.saturating_add(spacing) {
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
                asked = Some((snapshot, Instant::now()));
            }
        }
    });
}
