use claw_commands::EventRecord;
use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::dedup_row::DedupRow;

/// The content of a snapshot: the full event history up to the checkpoint,
/// so a member installing it answers time-travel queries like any other.
/// Its size grows with the history (see the crate notes on retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
    pub(crate) checkpoint: Checkpoint,
    /// Events `1..=checkpoint.last_seq`, in order.
    pub(crate) events: Vec<EventRecord>,
    pub(crate) dedup: Vec<DedupRow>,
}

/// What `sm_meta` remembers of the last built or installed snapshot, enough
/// to rebuild its payload exactly from the immutable events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) meta: SnapshotMeta<u64, BasicNode>,
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
}
