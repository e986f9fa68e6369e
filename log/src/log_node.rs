use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use claw_commands::CommandEnvelope;
use claw_proto::raft::raft_server::RaftServer;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::db::Db;
use crate::log_stats::Counters;
use crate::log_store::LogStore;
use crate::network::Network;
use crate::network_client::MAX_RAFT_MESSAGE;
use crate::proposer::{Proposer, MAX_BATCH_BYTES};
use crate::snapshot_pacer;
use crate::state_machine::StateMachine;
use crate::{ApplyResponse, ClawRaft, Error, EventStore, LogOptions, ProposeError, RaftRpcService, Result};

/// Snapshot chunks are sent as JSON byte arrays (up to 4 bytes per byte),
/// so they are kept well under the gRPC message limit.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// Entries per AppendEntries RPC: each entry is a batch of up to about
/// `MAX_BATCH_BYTES` of commands, so this keeps an RPC well under the gRPC
/// message limit.
const MAX_PAYLOAD_ENTRIES: u64 = (MAX_RAFT_MESSAGE / 2 / MAX_BATCH_BYTES) as u64;

/// One member of the replicated log: its raft instance and its event store.
#[derive(Clone)]
pub struct LogNode {
    pub raft: ClawRaft,
    pub store: EventStore,
    proposer: Proposer,
    node_id: u64,
    advertise_addr: String,
}

/// Opens the RocksDB database at `dir` and builds the log store, the state
/// machine and the event store over it.
#[cfg(test)]
pub(crate) fn open_storage(dir: &Path, checkpoint_every: u64) -> Result<(LogStore, StateMachine, EventStore)> {
    open_storage_with(dir, Checkpoints { rows_every: checkpoint_every, full_every: checkpoint_every }, true)
}

/// How often the state machine stores checkpoints, in events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpoints {
    /// Row checkpoints of the view, for past states (`LogOptions::checkpoint_every`).
    pub(crate) rows_every: u64,
    /// Whole-state checkpoints, for restarts (`LogOptions::full_checkpoint_every`).
    pub(crate) full_every: u64,
}

/// [`open_storage`] with the choice of verifying every table file's checksums.
pub(crate) fn open_storage_with(
    dir: &Path,
    every: Checkpoints,
    verify_checksums: bool,
) -> Result<(LogStore, StateMachine, EventStore)> {
    if every.rows_every == 0 || every.full_every == 0 {
        return Err(Error::Storage("checkpoint_every and full_checkpoint_every must be at least 1".to_string()));
    }
    let db = Db::open(dir, verify_checksums)?;
    crate::snapshot_install::resume(&db, every)?;
    crate::snapshot_data::remove_stale_spools(dir)
        .map_err(|e| Error::Storage(format!("cannot remove unfinished snapshot files in {}: {e}", dir.display())))?;
    let counters = Arc::new(Counters::default());
    let store = EventStore::load(db.clone(), counters.clone(), every)?;
    let log = LogStore::open(db, counters)?;
    Ok((log, StateMachine::new(store.clone()), store))
}

impl LogNode {
    /// Opens the RocksDB database at `opts.data_dir` and starts raft with the
    /// gRPC network. The member does nothing until it is initialized or added
    /// to a cluster.
    pub async fn open(opts: LogOptions) -> Result<LogNode> {
        let (log, sm, store) = open_storage_with(
            &opts.data_dir,
            Checkpoints { rows_every: opts.checkpoint_every, full_every: opts.full_checkpoint_every },
            opts.verify_checksums_on_open,
        )?;
        let config = Config {
            cluster_name: "clawbernetes".to_string(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_timeout_min_ms,
            election_timeout_max: opts.election_timeout_max_ms,
            // Paced by `snapshot_pacer`: the spacing grows with the state.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: opts.max_in_snapshot_log_to_keep,
            install_snapshot_timeout: opts.install_snapshot_timeout_ms,
            // Purge in batches, but never wait for more entries than a snapshot spans.
            purge_batch_size: opts.snapshot_logs_since_last.clamp(1, 1024),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(format!("invalid raft options: {e}")))?;
        let raft = ClawRaft::new(opts.node_id, Arc::new(config), Network, log, sm)
            .await
            .map_err(|e| Error::Raft(format!("cannot start raft for member {}: {e}", opts.node_id)))?;
        snapshot_pacer::spawn(raft.clone(), store.clone(), opts.snapshot_logs_since_last);
        let proposer = Proposer::start(raft.clone());
        Ok(LogNode { raft, store, proposer, node_id: opts.node_id, advertise_addr: opts.advertise_addr })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn advertise_addr(&self) -> &str {
        &self.advertise_addr
    }

    /// Makes this member a one-member cluster, unless raft is already
    /// initialized (so it is idempotent across restarts).
    pub async fn initialize_single(&self) -> Result<()> {
        let initialized = self.raft.is_initialized().await.map_err(|e| Error::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members = BTreeMap::from([(self.node_id, BasicNode::new(&self.advertise_addr))]);
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Raft(format!("cannot initialize member {}: {e}", self.node_id))),
        }
    }

    /// The member-to-member Raft RPC server, to mount on this member's gRPC port.
    pub fn raft_service(&self) -> RaftServer<RaftRpcService> {
        let seconds = self.store.shared.counters.metrics.append_entries_seconds.clone();
        RaftServer::new(RaftRpcService::new(self.raft.clone()).with_append_histogram(seconds))
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }

    /// Proposes one command on this member (which should lead). Concurrent
    /// proposals are gathered into one raft entry; the answer is this
    /// command's own response and the raft index of that entry, once it is
    /// committed and applied.
    pub async fn propose(&self, env: CommandEnvelope) -> std::result::Result<(ApplyResponse, u64), ProposeError> {
        let started = std::time::Instant::now();
        let r = self.proposer.propose(env).await;
        if r.is_ok() {
            self.store.shared.counters.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        r
    }

    /// Stops the proposal batcher and raft. The event store stays readable
    /// while clones of it live.
    pub async fn shutdown(&self) -> Result<()> {
        self.proposer.stop();
        self.raft.shutdown().await.map_err(|e| Error::Raft(format!("raft shutdown failed: {e}")))?;
        // Everything is already durable in the WAL; flushing it to table
        // files spares the next start a WAL replay.
        self.store.db().flush()
    }
}
