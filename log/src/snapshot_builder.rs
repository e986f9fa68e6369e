use openraft::{
    BasicNode, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::WriteBatch;

use crate::checkpoint::CheckpointRef;
use crate::db::encode_json;
use crate::keys::{SmMetaKey, CF_SM_META};
use crate::snapshot_data::SnapshotData;
use crate::snapshot_payload::SnapshotRecord;
use crate::view_rows;
use crate::{Error, EventStore, Result, TypeConfig};

/// Builds a snapshot of the state captured when openraft asked for a
/// builder; applying may continue meanwhile, since the captured events are
/// immutable and the newer ones are left out by seq and raft index.
pub(crate) struct SnapshotBuilder {
    store: EventStore,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    last_seq: u64,
    last_hash: String,
    /// The whole-state checkpoint at `last_seq`, encoded when captured (a
    /// copy of the state would take several times the memory of its JSON).
    checkpoint: Result<Vec<u8>>,
}

impl SnapshotBuilder {
    pub(crate) fn capture(store: &EventStore) -> SnapshotBuilder {
        let live = store.read_live();
        SnapshotBuilder {
            store: store.clone(),
            last_applied: live.last_applied,
            membership: live.membership.clone(),
            last_seq: live.last_seq,
            last_hash: live.last_hash.clone(),
            checkpoint: encode_json(
                "checkpoint",
                &CheckpointRef {
                    last_seq: live.last_seq,
                    last_hash: &live.last_hash,
                    decision: &live.decision,
                    view: &live.view,
                },
            ),
        }
    }

    fn build(&mut self) -> Result<Snapshot<TypeConfig>> {
        let snapshot_id = match &self.last_applied {
            Some(l) => format!("{}-{}-seq{}", l.leader_id, l.index, self.last_seq),
            None => format!("none-seq{}", self.last_seq),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let record = SnapshotRecord { meta: meta.clone(), last_seq: self.last_seq, last_hash: self.last_hash.clone() };
        let db = self.store.db().clone();
        let sm_cf = db.cf(CF_SM_META)?;
        let mut batch = WriteBatch::default();
        // Whole-state checkpoints serve restarts (the newest) and snapshots
        // (the one a snapshot record names); past states read the row
        // checkpoints wherever those exist. Each copies the whole state, so
        // the ones from the first row checkpoint up to the previous
        // snapshot's (kept: a member may be sending it right now) go.
        let previous: Option<SnapshotRecord> = db.get_json(CF_SM_META, &SmMetaKey::Snapshot.encode())?;
        if let (Some(previous), Some(first_rows)) = (previous, view_rows::first_checkpoint(&db)?) {
            if first_rows < previous.last_seq && previous.last_seq <= self.last_seq {
                batch.delete_range_cf(
                    &sm_cf,
                    SmMetaKey::Checkpoint(first_rows).encode(),
                    SmMetaKey::Checkpoint(previous.last_seq).encode(),
                );
            }
        }
        let checkpoint =
            std::mem::replace(&mut self.checkpoint, Err(Error::Storage("this snapshot was built already".into())))?;
        batch.put_cf(&sm_cf, SmMetaKey::Checkpoint(self.last_seq).encode(), checkpoint);
        batch.put_cf(&sm_cf, SmMetaKey::Snapshot.encode(), encode_json("snapshot record", &record)?);
        db.write(batch, false)?;
        // openraft keeps only the meta of a snapshot it asked to build (its
        // state-machine worker drops the data), and the events are immutable
        // in RocksDB already. So building records the checkpoint and the
        // snapshot record only: O(state), not O(history). The full payload is
        // materialised by `get_current_snapshot` when a member needs it.
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::new(Vec::new())) })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.build().map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))
    }
}
