use claw_commands::EventRecord;
use serde::{Deserialize, Serialize};

/// Which events a reader or watcher wants. Empty fields match everything;
/// set fields must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Event kinds (`Event::kind()`), any of which matches.
    pub kinds: Vec<String>,
    /// Only events about this node.
    pub node: Option<String>,
    /// Only events about this workload.
    pub workload: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, rec: &EventRecord) -> bool {
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == rec.event.kind()) {
            return false;
        }
        if let Some(node) = &self.node {
            if rec.event.node() != Some(node.as_str()) {
                return false;
            }
        }
        if let Some(workload) = &self.workload {
            if rec.event.workload_id() != Some(workload.as_str()) {
                return false;
            }
        }
        true
    }
}
