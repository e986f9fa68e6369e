use serde::{Deserialize, Serialize};

use crate::{Placement, ProposalAction, Rejection, WorkloadSpec};

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
    /// SM clock in MHz (0 when NVML cannot read it).
    #[serde(default)]
    pub sm_clock_mhz: u32,
    /// Volatile ECC error counts since the driver loaded (0 without ECC).
    #[serde(default)]
    pub ecc_corrected: u64,
    #[serde(default)]
    pub ecc_uncorrected: u64,
    /// Active clock throttle reasons, as NVML names them in snake case
    /// (`hw_thermal_slowdown`, `sw_power_cap`, ...). Idle is not listed.
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
    /// XID error codes the driver raised for this GPU since the last sample.
    #[serde(default)]
    pub xid_errors: Vec<u64>,
}

/// One device's outcome of the GPU health check (a matrix multiply checked
/// against a CPU reference). Numbers are always finite: the agent stores a
/// non-finite measurement as 0 with `passed` false, because JSON has no NaN.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuHealthResult {
    /// `"cuda"` or `"wgpu"`.
    pub runtime: String,
    /// The adapter or GPU name the runtime reported (e.g. `llvmpipe`).
    pub device: String,
    pub device_index: u32,
    pub matrix_size: u32,
    pub passed: bool,
    pub gflops: f64,
    pub checksum: f64,
    pub reference_checksum: f64,
    pub max_abs_error: f64,
    pub elapsed_ms: f64,
    pub detail: String,
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
        /// The kernel's OOM killer ended the container.
        #[serde(default)]
        oom_killed: bool,
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
    /// The scheduler assigned the workload to `node` and these GPUs; the
    /// node agent starts it.
    WorkloadPlaced {
        workload_id: String,
        node: String,
        gpu_uuids: Vec<String>,
        placement: Placement,
    },
    /// No node fits the workload; recorded when the reason changes, not on
    /// every scheduler pass.
    WorkloadUnschedulable {
        workload_id: String,
        placement: Placement,
    },
    /// A piece of a workload's output, as the node agent read it.
    WorkloadLogChunk {
        workload_id: String,
        node: String,
        /// `"stdout"` or `"stderr"`.
        stream: String,
        data: String,
    },
    /// The node stopped answering (or was declared gone); nothing new is
    /// placed on it until it heartbeats again.
    NodeNotReady {
        node: String,
        reason: String,
    },
    /// A workload placed on or running on a node that became not ready.
    /// `requeued`: it went back to Pending (GPUs freed); otherwise it is Lost.
    WorkloadLost {
        workload_id: String,
        node: String,
        reason: String,
        requeued: bool,
    },
    /// Someone asked the node's agent to run the GPU health check.
    GpuHealthCheckRequested {
        node: String,
        check_id: String,
    },
    /// The node's agent ran (or failed to run) the GPU health check.
    GpuHealthChecked {
        node: String,
        check_id: String,
        results: Vec<GpuHealthResult>,
        error: Option<String>,
    },
    /// A detector saw trouble in the observations: `incident_kind` is one of
    /// `INCIDENT_KINDS`, `subject` what it is about (`gpu:<uuid>`,
    /// `node:<name>`, `workload:<name>`), `signals` what matched (used to
    /// recall similar resolved incidents).
    IncidentOpened {
        incident_id: String,
        incident_kind: String,
        subject: String,
        /// The node it happened on ("" when none).
        node: String,
        signals: Vec<String>,
        summary: String,
    },
    /// Someone closed the incident and wrote down what it was and what fixed it.
    IncidentResolved {
        incident_id: String,
        root_cause: String,
        resolution: String,
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
        "WorkloadPlaced",
        "WorkloadUnschedulable",
        "WorkloadLogChunk",
        "NodeNotReady",
        "WorkloadLost",
        "GpuHealthCheckRequested",
        "GpuHealthChecked",
        "IncidentOpened",
        "IncidentResolved",
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
            Event::WorkloadPlaced { .. } => "WorkloadPlaced",
            Event::WorkloadUnschedulable { .. } => "WorkloadUnschedulable",
            Event::WorkloadLogChunk { .. } => "WorkloadLogChunk",
            Event::NodeNotReady { .. } => "NodeNotReady",
            Event::WorkloadLost { .. } => "WorkloadLost",
            Event::GpuHealthCheckRequested { .. } => "GpuHealthCheckRequested",
            Event::GpuHealthChecked { .. } => "GpuHealthChecked",
            Event::IncidentOpened { .. } => "IncidentOpened",
            Event::IncidentResolved { .. } => "IncidentResolved",
        }
    }

    /// The workload this event is about, if any (used by watch filters).
    pub fn workload_id(&self) -> Option<&str> {
        match self {
            Event::WorkloadSubmitted { workload_id, .. }
            | Event::WorkloadCancelRequested { workload_id, .. }
            | Event::WorkloadStarted { workload_id, .. }
            | Event::WorkloadExited { workload_id, .. }
            | Event::WorkloadPlaced { workload_id, .. }
            | Event::WorkloadUnschedulable { workload_id, .. }
            | Event::WorkloadLogChunk { workload_id, .. }
            | Event::WorkloadLost { workload_id, .. } => Some(workload_id),
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
            | Event::WorkloadExited { node, .. }
            | Event::WorkloadPlaced { node, .. }
            | Event::WorkloadLogChunk { node, .. }
            | Event::NodeNotReady { node, .. }
            | Event::WorkloadLost { node, .. }
            | Event::GpuHealthCheckRequested { node, .. }
            | Event::GpuHealthChecked { node, .. } => Some(node),
            Event::ProposalCreated { action: ProposalAction::DrainNode { node }, .. } => Some(node),
            Event::IncidentOpened { node, .. } if !node.is_empty() => Some(node),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_variant_once() {
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Event::KINDS.len());
        let lost =
            Event::WorkloadLost { workload_id: "w".into(), node: "n".into(), reason: "r".into(), requeued: true };
        assert!(Event::KINDS.contains(&lost.kind()));
        assert_eq!((lost.node(), lost.workload_id()), (Some("n"), Some("w")));
    }

    #[test]
    fn old_exit_records_still_decode() {
        let json = r#"{"kind":"WorkloadExited","workload_id":"w","node":"n","exit_code":0}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert!(matches!(e, Event::WorkloadExited { oom_killed: false, .. }));
    }
}
