use serde::{Deserialize, Serialize};

use crate::Command;

/// Who issued a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Node,
    Scheduler,
    Reasoner,
    Market,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Node => "node",
            ActorKind::Scheduler => "scheduler",
            ActorKind::Reasoner => "reasoner",
            ActorKind::Market => "market",
            ActorKind::System => "system",
        }
    }
}

impl std::str::FromStr for ActorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "user" => ActorKind::User,
            "node" => ActorKind::Node,
            "scheduler" => ActorKind::Scheduler,
            "reasoner" => ActorKind::Reasoner,
            "market" => ActorKind::Market,
            "system" => ActorKind::System,
            other => {
                return Err(format!(
                    "unknown actor kind {other:?} (expected user, node, scheduler, reasoner, market or system)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
}

impl Actor {
    pub fn user(name: impl Into<String>) -> Self {
        Actor { kind: ActorKind::User, name: name.into() }
    }
    pub fn system() -> Self {
        Actor { kind: ActorKind::System, name: "clawd".into() }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// One Raft log entry's payload: a command plus the header the leader stamps
/// on it once, at propose time. Replay never reads a clock: `time_ms` is the
/// only time the state machine sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// Idempotency key chosen by the client; a resubmission returns the first outcome.
    pub command_id: String,
    pub actor: Actor,
    /// Leader's wall clock at propose time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The intent this command belongs to (defaults to the command id).
    pub correlation_id: String,
    pub command: Command,
}

impl std::fmt::Display for CommandEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} by {}", self.command_id, self.command.kind(), self.actor)
    }
}
