use claw_commands::{CommandEnvelope, EventRecord, Rejection};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The openraft types of the Clawbernetes log: entries carry a
    /// [`CommandBatch`], applying one yields a [`BatchResponse`].
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft instance of one member.
pub type ClawRaft = openraft::Raft<TypeConfig>;

/// The payload of one raft entry: envelopes proposed together, applied in order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandBatch(pub Vec<CommandEnvelope>);

/// What applying one raft entry produced: one response per envelope of its
/// [`CommandBatch`], in the same order (none for blank and membership entries).
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct BatchResponse(pub Vec<ApplyResponse>);

/// What applying one command produced.
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
