use claw_commands::Rejection;
use serde::{Deserialize, Serialize};

/// The first outcome of a command id, without its events: they are re-read
/// from the events column family (`first_seq..=last_seq`) when needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DedupRow {
    pub(crate) command_id: String,
    pub(crate) raft_index: u64,
    pub(crate) first_seq: u64,
    /// Inclusive; `first_seq - 1` when the command produced no event.
    pub(crate) last_seq: u64,
    pub(crate) rejection: Option<Rejection>,
}
