use serde::{Deserialize, Serialize};

use crate::{ProposalAction, Rejection, WorkloadSpec};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeCapabilities {
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: Vec<GpuInfo>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One GPU's reading at one moment, as reported by a node agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuSample {
    pub gpu_uuid: String,
    pub utilization_pct: f64,
    pub memory_used_mb: u64,
    pub temperature_c: f64,
    pub power_w: f64,
}

/// Something that happened. Events are facts: they are never edited, and a
/// released variant is never reused or repurposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Event {
    WorkloadSubmitted {
        workload_id: String,
        spec: WorkloadSpec,
    },
    WorkloadCancelRequested {
        workload_id: String,
        reason: String,
    },
    NodeDrainRequested {
        node: String,
        reason: String,
    },
    IntentStated {
        text: String,
    },
    ProposalCreated {
        proposal_id: String,
        action: ProposalAction,
        basis_seq: u64,
        reason: String,
    },
    ProposalApproved {
        proposal_id: String,
        comment: String,
    },
    ProposalRejected {
        proposal_id: String,
        reason: String,
    },
    /// The state the proposal was made against changed before it was approved.
    ProposalSuperseded {
        proposal_id: String,
        reason: String,
        changed_seq: u64,
    },
    NodeRegistered {
        node: String,
        capabilities: NodeCapabilities,
    },
    NodeHeartbeat {
        node: String,
    },
    GpuMetricsObserved {
        node: String,
        samples: Vec<GpuSample>,
    },
    WorkloadStarted {
        workload_id: String,
        node: String,
    },
    WorkloadExited {
        workload_id: String,
        node: String,
        exit_code: i32,
    },
    /// A command that `decide` refused, kept so the audit trail shows denied attempts.
    CommandRejected {
        command_kind: String,
        rejection: Rejection,
    },
    MemberAdded {
        member_id: u64,
        addr: String,
        voter: bool,
    },
}

impl Event {
    pub const KINDS: &'static [&'static str] = &[
        "WorkloadSubmitted",
        "WorkloadCancelRequested",
        "NodeDrainRequested",
        "IntentStated",
        "ProposalCreated",
        "ProposalApproved",
        "ProposalRejected",
        "ProposalSuperseded",
        "NodeRegistered",
        "NodeHeartbeat",
        "GpuMetricsObserved",
        "WorkloadStarted",
        "WorkloadExited",
        "CommandRejected",
        "MemberAdded",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Event::WorkloadSubmitted { .. } => "WorkloadSubmitted",
            Event::WorkloadCancelRequested { .. } => "WorkloadCancelRequested",
            Event::NodeDrainRequested { .. } => "NodeDrainRequested",
            Event::IntentStated { .. } => "IntentStated",
            Event::ProposalCreated { .. } => "ProposalCreated",
            Event::ProposalApproved { .. } => "ProposalApproved",
            Event::ProposalRejected { .. } => "ProposalRejected",
            Event::ProposalSuperseded { .. } => "ProposalSuperseded",
            Event::NodeRegistered { .. } => "NodeRegistered",
            Event::NodeHeartbeat { .. } => "NodeHeartbeat",
            Event::GpuMetricsObserved { .. } => "GpuMetricsObserved",
            Event::WorkloadStarted { .. } => "WorkloadStarted",
            Event::WorkloadExited { .. } => "WorkloadExited",
            Event::CommandRejected { .. } => "CommandRejected",
            Event::MemberAdded { .. } => "MemberAdded",
        }
    }

    /// The workload this event is about, if any (used by watch filters).
    pub fn workload_id(&self) -> Option<&str> {
        match self {
            Event::WorkloadSubmitted { workload_id, .. }
            | Event::WorkloadCancelRequested { workload_id, .. }
            | Event::WorkloadStarted { workload_id, .. }
            | Event::WorkloadExited { workload_id, .. } => Some(workload_id),
            Event::ProposalCreated { action: ProposalAction::CancelWorkload { workload_id }, .. } => Some(workload_id),
            _ => None,
        }
    }

    /// The node this event is about, if any (used by watch filters).
    pub fn node(&self) -> Option<&str> {
        match self {
            Event::NodeDrainRequested { node, .. }
            | Event::NodeRegistered { node, .. }
            | Event::NodeHeartbeat { node }
            | Event::GpuMetricsObserved { node, .. }
            | Event::WorkloadStarted { node, .. }
            | Event::WorkloadExited { node, .. } => Some(node),
            Event::ProposalCreated { action: ProposalAction::DrainNode { node }, .. } => Some(node),
            _ => None,
        }
    }
}
