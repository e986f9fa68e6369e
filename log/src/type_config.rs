use claw_commands::{EventRecord, Rejection};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The openraft types of the Clawbernetes log: entries carry a
    /// [`claw_commands::CommandEnvelope`], applying one yields an [`ApplyResponse`].
    pub TypeConfig:
        D = claw_commands::CommandEnvelope,
        R = ApplyResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft instance of one member.
pub type ClawRaft = openraft::Raft<TypeConfig>;

/// What applying one raft entry produced.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct ApplyResponse {
    pub command_id: String,
    /// The raft index of the entry that first carried this command.
    pub raft_index: u64,
    /// The events the command produced; for a rejection, the single `CommandRejected` record.
    pub events: Vec<EventRecord>,
    pub rejection: Option<Rejection>,
    /// True when the command id had been applied before; nothing new was recorded.
    pub duplicate: bool,
}
