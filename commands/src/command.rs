use serde::{Deserialize, Serialize};

use crate::{GpuHealthResult, GpuSample, NodeCapabilities, Placement, WorkloadSpec};

/// The action a proposal asks to take once approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProposalAction {
    CancelWorkload { workload_id: String },
    DrainNode { node: String },
}

impl ProposalAction {
    /// The objects whose change since the basis makes the proposal stale.
    pub fn touches(&self) -> (&'static str, &str) {
        match self {
            ProposalAction::CancelWorkload { workload_id } => ("workload", workload_id),
            ProposalAction::DrainNode { node } => ("node", node),
        }
    }
}

impl std::fmt::Display for ProposalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposalAction::CancelWorkload { workload_id } => write!(f, "cancel workload {workload_id}"),
            ProposalAction::DrainNode { node } => write!(f, "drain node {node}"),
        }
    }
}

/// What someone asks the cluster to do. Released variants are never reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    SubmitWorkload {
        workload_id: String,
        spec: WorkloadSpec,
    },
    /// `workload` is an id or the name of an active workload.
    CancelWorkload {
        workload: String,
        reason: String,
    },
    RequestNodeDrain {
        node: String,
        reason: String,
    },
    StateIntent {
        text: String,
    },
    CreateProposal {
        proposal_id: String,
        action: ProposalAction,
        basis_seq: u64,
        reason: String,
    },
    ApproveProposal {
        proposal_id: String,
        comment: String,
    },
    RejectProposal {
        proposal_id: String,
        reason: String,
    },
    RegisterNode {
        node: String,
        capabilities: NodeCapabilities,
    },
    Heartbeat {
        node: String,
    },
    ObserveGpuMetrics {
        node: String,
        samples: Vec<GpuSample>,
    },
    ReportWorkloadStarted {
        workload_id: String,
        node: String,
    },
    ReportWorkloadExited {
        workload_id: String,
        node: String,
        exit_code: i32,
        #[serde(default)]
        oom_killed: bool,
    },
    RecordMemberAdded {
        member_id: u64,
        addr: String,
        voter: bool,
    },
    /// Proposed by the scheduler in `clawd` only; `decide` re-checks every
    /// constraint against the state at apply time.
    PlaceWorkload {
        workload_id: String,
        node: String,
        gpu_uuids: Vec<String>,
        placement: Placement,
    },
    /// Proposed by the scheduler in `clawd` only.
    RecordUnschedulable {
        workload_id: String,
        placement: Placement,
    },
    ReportWorkloadLogs {
        workload_id: String,
        node: String,
        stream: String,
        data: String,
    },
    /// Proposed by `clawd`'s node monitor only.
    MarkNodeNotReady {
        node: String,
        reason: String,
        /// Put the node's workloads back to Pending instead of marking them Lost.
        requeue: bool,
    },
    /// Asks the node's agent to run the GPU health check on its devices.
    /// `check_id` may be empty: the API layer derives one from the command id.
    RequestHealthCheck {
        node: String,
        check_id: String,
    },
    /// The agent's answer to `RequestHealthCheck`: one result per device, or
    /// `error` when the check could not run at all (no usable adapter).
    ReportHealthCheck {
        node: String,
        check_id: String,
        results: Vec<GpuHealthResult>,
        error: Option<String>,
    },
    /// Closes an open incident with what caused it and what fixed it; both
    /// are kept so a similar incident later recalls them.
    ResolveIncident {
        incident_id: String,
        root_cause: String,
        resolution: String,
    },
}

impl Command {
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SubmitWorkload { .. } => "SubmitWorkload",
            Command::CancelWorkload { .. } => "CancelWorkload",
            Command::RequestNodeDrain { .. } => "RequestNodeDrain",
            Command::StateIntent { .. } => "StateIntent",
            Command::CreateProposal { .. } => "CreateProposal",
            Command::ApproveProposal { .. } => "ApproveProposal",
            Command::RejectProposal { .. } => "RejectProposal",
            Command::RegisterNode { .. } => "RegisterNode",
            Command::Heartbeat { .. } => "Heartbeat",
            Command::ObserveGpuMetrics { .. } => "ObserveGpuMetrics",
            Command::ReportWorkloadStarted { .. } => "ReportWorkloadStarted",
            Command::ReportWorkloadExited { .. } => "ReportWorkloadExited",
            Command::RecordMemberAdded { .. } => "RecordMemberAdded",
            Command::PlaceWorkload { .. } => "PlaceWorkload",
            Command::RecordUnschedulable { .. } => "RecordUnschedulable",
            Command::ReportWorkloadLogs { .. } => "ReportWorkloadLogs",
            Command::MarkNodeNotReady { .. } => "MarkNodeNotReady",
            Command::RequestHealthCheck { .. } => "RequestHealthCheck",
            Command::ReportHealthCheck { .. } => "ReportHealthCheck",
            Command::ResolveIncident { .. } => "ResolveIncident",
        }
    }
}
