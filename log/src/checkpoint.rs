use claw_commands::{DecisionState, GENESIS_HASH};
use claw_projections::ClusterView;
use serde::{Deserialize, Serialize};

/// The in-memory state after event `last_seq`, stored so that a restart (or
/// a past-state query) replays only the events after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
    pub(crate) decision: DecisionState,
    pub(crate) view: ClusterView,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
            decision: DecisionState::default(),
            view: ClusterView::default(),
        }
    }
}

/// A checkpoint encoded from the live state by reference: the same JSON as
/// [`Checkpoint`] without copying the whole state first (on a long history
/// the view and decision state are hundreds of MiB in memory).
#[derive(Serialize)]
pub(crate) struct CheckpointRef<'a> {
    pub(crate) last_seq: u64,
    pub(crate) last_hash: &'a str,
    pub(crate) decision: &'a DecisionState,
    pub(crate) view: &'a ClusterView,
}

/// Only the view of a stored checkpoint: past-state reads skip decoding the
/// decision state.
#[derive(Debug, Deserialize)]
pub(crate) struct CheckpointView {
    pub(crate) view: ClusterView,
}
