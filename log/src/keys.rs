//! RocksDB key layouts of the log store. Integers are big-endian so that
//! keys sort in numeric order; every metadata key starts with a one-byte
//! prefix that is never reused once released.

/// Column family holding the raft log: `index` (u64 BE) → serde_json `Entry`.
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
/// Column family holding raft metadata (vote, committed, last purged).
pub(crate) const CF_RAFT_META: &str = "raft_meta";
/// Column family holding the event history: `seq` (u64 BE) → serde_json `EventRecord`.
pub(crate) const CF_EVENTS: &str = "events";
/// Column family holding state-machine metadata and checkpoints.
pub(crate) const CF_SM_META: &str = "sm_meta";
/// Column family holding idempotency rows: `command_id` (UTF-8) → serde_json `DedupRow`.
pub(crate) const CF_DEDUP: &str = "dedup";

/// Column family holding GPU metric rollups (derived from the events; see `rollup.rs`).
pub(crate) const CF_ROLLUPS: &str = "rollups";

/// Column family holding row checkpoints of the cluster view: `(table, row
/// key, seq)` → serde_json row (see `view_rows.rs`).
pub(crate) const CF_VIEW_ROWS: &str = "view_rows";

/// Column family indexing events by node and by workload: `(subject, seq)`
/// → empty (see `subject_index.rs`).
pub(crate) const CF_SUBJECTS: &str = "subjects";

/// Every column family of the store, in creation order.
pub(crate) const ALL_CFS: &[&str] =
    &[CF_RAFT_LOG, CF_RAFT_META, CF_EVENTS, CF_SM_META, CF_DEDUP, CF_ROLLUPS, CF_VIEW_ROWS, CF_SUBJECTS];

/// Keys of the `raft_meta` column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RaftMetaKey {
    Vote,
    Committed,
    LastPurged,
}

impl RaftMetaKey {
    pub(crate) fn encode(self) -> [u8; 1] {
        match self {
            RaftMetaKey::Vote => [0x01],
            RaftMetaKey::Committed => [0x02],
            RaftMetaKey::LastPurged => [0x03],
        }
    }
}

/// Keys of the `sm_meta` column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SmMetaKey {
    /// The `LogId` of the last applied raft entry.
    LastApplied,
    /// The last applied `StoredMembership`.
    Membership,
    /// The `SnapshotRecord` of the last built or installed snapshot.
    Snapshot,
    /// A `Checkpoint` of the decision state and view after event `seq`.
    Checkpoint(u64),
    /// The first seq the subject index covers.
    SubjectsFrom,
    /// A snapshot install under way (`snapshot_install`).
    Installing,
}

const SM_LAST_APPLIED: u8 = 0x01;
const SM_MEMBERSHIP: u8 = 0x02;
const SM_SNAPSHOT: u8 = 0x03;
const SM_SUBJECTS_FROM: u8 = 0x04;
const SM_INSTALLING: u8 = 0x05;
const SM_CHECKPOINT: u8 = 0x10;

impl SmMetaKey {
    pub(crate) fn encode(self) -> Vec<u8> {
        match self {
            SmMetaKey::LastApplied => vec![SM_LAST_APPLIED],
            SmMetaKey::Membership => vec![SM_MEMBERSHIP],
            SmMetaKey::Snapshot => vec![SM_SNAPSHOT],
            SmMetaKey::SubjectsFrom => vec![SM_SUBJECTS_FROM],
            SmMetaKey::Installing => vec![SM_INSTALLING],
            SmMetaKey::Checkpoint(seq) => {
                let mut k = Vec::with_capacity(9);
                k.push(SM_CHECKPOINT);
                k.extend_from_slice(&seq.to_be_bytes());
                k
            }
        }
    }

    /// The half-open key range holding every checkpoint.
    pub(crate) fn checkpoint_range() -> (Vec<u8>, Vec<u8>) {
        (vec![SM_CHECKPOINT], vec![SM_CHECKPOINT + 1])
    }

    /// Decodes a checkpoint key back to its seq.
    pub(crate) fn checkpoint_seq(key: &[u8]) -> Option<u64> {
        match key {
            [SM_CHECKPOINT, rest @ ..] => decode_u64(rest),
            _ => None,
        }
    }
}

/// The key of raft log entry `index` or event `seq`.
pub(crate) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a big-endian u64 key; `None` when it is not 8 bytes long.
pub(crate) fn decode_u64(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The key of a dedup row.
pub(crate) fn dedup_key(command_id: &str) -> &[u8] {
    command_id.as_bytes()
}

/// A key rendered for error messages: UTF-8 when printable, hex otherwise.
pub(crate) fn show_key(key: &[u8]) -> String {
    if key.len() == 8 {
        if let Some(n) = decode_u64(key) {
            return n.to_string();
        }
    }
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_keys_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 0, 255, 256].iter().map(|n| u64_key(*n)).collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().filter_map(|k| decode_u64(k)).collect();
        assert_eq!(back, vec![0, 2, 255, 256, 300, 1 << 40]);
    }

    #[test]
    fn checkpoint_keys_round_trip_and_stay_in_range() {
        let (lo, hi) = SmMetaKey::checkpoint_range();
        for seq in [0u64, 1, 1000, u64::MAX] {
            let k = SmMetaKey::Checkpoint(seq).encode();
            assert_eq!(SmMetaKey::checkpoint_seq(&k), Some(seq));
            assert!(k.as_slice() >= lo.as_slice() && k.as_slice() < hi.as_slice());
        }
        assert!(SmMetaKey::checkpoint_seq(&SmMetaKey::Snapshot.encode()).is_none());
    }
}
