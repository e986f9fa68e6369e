use serde::{Deserialize, Serialize};

/// The scheduler's verdict on one node for one workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeVerdict {
    pub node: String,
    /// The first filter the node failed: `"gpu_count"`, `"gpu_model"`,
    /// `"gpu_memory"`, `"node_selector"`, `"draining"` or `"not_ready"`;
    /// `None` when the node fits.
    pub failed_filter: Option<String>,
    /// Why, in words, with the numbers that decided it.
    pub detail: String,
    /// The node's score when it fits (higher is better).
    pub score: Option<f64>,
}

/// Why a workload went where it went, or why it could not go anywhere.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// `"binpack"` or `"spread"`.
    pub strategy: String,
    /// The nodes the scheduler looked at, best first. On large clusters only
    /// the first [`Placement::MAX_VERDICTS`] are kept; `summary` counts all.
    pub considered: Vec<NodeVerdict>,
    pub chosen: Option<String>,
    /// One line: the outcome and, per filter, how many nodes failed it.
    pub summary: String,
}

impl Placement {
    /// How many node verdicts a placement carries at most, so that events
    /// stay small on clusters with thousands of nodes.
    pub const MAX_VERDICTS: usize = 16;
}

/// The filter names a [`NodeVerdict`] may carry, in the order they are checked.
pub const FILTERS: &[&str] = &["not_ready", "draining", "node_selector", "gpu_model", "gpu_memory", "gpu_count"];
