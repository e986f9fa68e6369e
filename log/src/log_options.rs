use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How one member opens its log. Every field has a default that works for a
/// single member on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// This member's raft node id; unique within the cluster.
    pub node_id: u64,
    /// Directory of this member's RocksDB database.
    pub data_dir: PathBuf,
    /// `host:port` of this member's gRPC server, stored in `BasicNode.addr`.
    pub advertise_addr: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one,
    /// or eight per row of the cluster view when that is more (a snapshot
    /// copies the whole state).
    pub snapshot_logs_since_last: u64,
    /// Raft entries kept below the last snapshot so lagging followers catch up without it.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a leader waits for a member to take the last piece of a
    /// snapshot, which includes installing it: on a long history that is
    /// minutes. A shorter wait makes the leader send the whole snapshot
    /// again while the member is still installing the last one.
    pub install_snapshot_timeout_ms: u64,
    /// A checkpoint of the projections' rows is stored every this many
    /// events, so the state at any past seq costs one checkpoint load plus
    /// about this many events of replay. Each stores only the rows that
    /// changed since the previous one. Smaller is faster to query and
    /// costlier to write.
    pub checkpoint_every: u64,
    /// A checkpoint of the whole state (decision state and view) is stored
    /// every this many events, or eight per row of the cluster view when
    /// that is more: a restart loads the newest and replays the events
    /// after it. Each costs a copy of the whole state.
    pub full_checkpoint_every: u64,
    /// Read every table file and check its block checksums when opening, so
    /// a damaged file stops the start with its name (costs one sequential
    /// read of the database).
    pub verify_checksums_on_open: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            advertise_addr: "127.0.0.1:7400".to_string(),
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 1_000,
            install_snapshot_timeout_ms: 600_000,
            checkpoint_every: 1_000,
            full_checkpoint_every: 20_000,
            verify_checksums_on_open: true,
        }
    }
}
