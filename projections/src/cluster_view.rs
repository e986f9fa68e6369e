use std::collections::BTreeMap;

use claw_commands::{
    Actor, Event, EventRecord, GpuHealthResult, GpuSample, NodeCapabilities, Placement, ProposalAction, ProposalStatus,
    WorkloadSpec, WorkloadStatus,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    pub added_seq: u64,
    pub added_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRow {
    pub node: String,
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
    pub last_sample: Option<GpuSample>,
    pub last_sample_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub capabilities: NodeCapabilities,
    pub draining: bool,
    pub drain_reason: Option<String>,
    pub registered_ms: i64,
    pub last_heartbeat_ms: i64,
    pub changed_seq: u64,
    /// False from `NodeNotReady` until the next heartbeat or registration.
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default)]
    pub not_ready_reason: Option<String>,
    /// GPU uuid → id of the workload holding it.
    #[serde(default)]
    pub allocated_gpus: BTreeMap<String, String>,
    /// The node agent's last answer to a GPU health check.
    #[serde(default)]
    pub last_health_check: Option<HealthCheckRow>,
}

/// One `GpuHealthChecked`: per-device results, or why the check could not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckRow {
    pub check_id: String,
    /// When the report was recorded.
    pub time_ms: i64,
    pub seq: u64,
    pub results: Vec<GpuHealthResult>,
    pub error: Option<String>,
}

impl HealthCheckRow {
    /// Every device passed and the check ran at all.
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.results.is_empty() && self.results.iter().all(|r| r.passed)
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRow {
    pub id: String,
    pub spec: WorkloadSpec,
    pub status: WorkloadStatus,
    pub submitted_by: String,
    pub submitted_ms: i64,
    pub submitted_seq: u64,
    pub node: Option<String>,
    pub cancel_requested: bool,
    pub cancel_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub changed_seq: u64,
    /// The GPUs it holds while Placed or Running.
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// Why it went where it went (the last placement).
    #[serde(default)]
    pub placement: Option<Placement>,
    /// Why it is still pending; cleared once it is placed.
    #[serde(default)]
    pub unschedulable: Option<Placement>,
    #[serde(default)]
    pub oom_killed: bool,
    /// How many times it was lost with its node.
    #[serde(default)]
    pub lost_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRow {
    pub id: String,
    pub action: ProposalAction,
    pub basis_seq: u64,
    pub reason: String,
    pub status: ProposalStatus,
    pub created_by: String,
    pub created_ms: i64,
    pub created_seq: u64,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub decision_note: Option<String>,
}

/// The cluster as the log says it is after `last_seq`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    pub last_seq: u64,
    pub last_hash: String,
    pub last_time_ms: i64,
    pub members: BTreeMap<u64, MemberRow>,
    pub nodes: BTreeMap<String, NodeRow>,
    pub workloads: BTreeMap<String, WorkloadRow>,
    pub proposals: BTreeMap<String, ProposalRow>,
    /// Count of events per kind, for a quick overview.
    pub event_counts: BTreeMap<String, u64>,
}

fn who(a: &Actor) -> String {
    a.to_string()
}

impl ClusterView {
    /// Every GPU of every node, in node then index order.
    pub fn gpus(&self) -> Vec<GpuRow> {
        let mut out = Vec::new();
        for n in self.nodes.values() {
            for g in &n.capabilities.gpus {
                out.push(GpuRow {
                    node: n.name.clone(),
                    index: g.index,
                    uuid: g.uuid.clone(),
                    model: g.model.clone(),
                    memory_mb: g.memory_mb,
                    last_sample: None,
                    last_sample_ms: None,
                });
            }
        }
        out
    }

    /// Finds a workload by id, or by the name of its most recent submission.
    pub fn find_workload(&self, id_or_name: &str) -> Option<&WorkloadRow> {
        if let Some(w) = self.workloads.get(id_or_name) {
            return Some(w);
        }
        self.workloads.values().filter(|w| w.spec.name == id_or_name).max_by_key(|w| w.submitted_seq)
    }

    /// Folds one stored event into the view.
    pub fn apply(&mut self, rec: &EventRecord) {
        self.last_seq = rec.seq;
        self.last_hash = rec.hash.clone();
        self.last_time_ms = rec.time_ms;
        *self.event_counts.entry(rec.event.kind().to_string()).or_default() += 1;
        let t = rec.time_ms;
        let seq = rec.seq;
        match &rec.event {
            Event::WorkloadSubmitted { workload_id, spec } => {
                self.workloads.insert(
                    workload_id.clone(),
                    WorkloadRow {
                        id: workload_id.clone(),
                        spec: spec.clone(),
                        status: WorkloadStatus::Pending,
                        submitted_by: who(&rec.actor),
                        submitted_ms: t,
                        submitted_seq: seq,
                        node: None,
                        cancel_requested: false,
                        cancel_reason: None,
                        exit_code: None,
                        started_ms: None,
                        finished_ms: None,
                        changed_seq: seq,
                        gpu_uuids: Vec::new(),
                        placement: None,
                        unschedulable: None,
                        oom_killed: false,
                        lost_count: 0,
                    },
                );
            }
            Event::WorkloadCancelRequested { workload_id, reason } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    w.cancel_requested = true;
                    w.cancel_reason = Some(reason.clone());
                    w.changed_seq = seq;
                    // Mirrors `claw_commands::evolve`: a workload that is not
                    // running yet ends here and frees its GPUs.
                    if matches!(w.status, WorkloadStatus::Pending | WorkloadStatus::Placed) {
                        w.status = WorkloadStatus::Cancelled;
                        w.finished_ms = Some(t);
                        release(&mut self.nodes, w);
                    }
                }
            }
            Event::WorkloadStarted { workload_id, node } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    w.status = WorkloadStatus::Running;
                    w.node = Some(node.clone());
                    w.started_ms = Some(t);
                    w.changed_seq = seq;
                }
            }
            Event::WorkloadExited { workload_id, exit_code, oom_killed, .. } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    release(&mut self.nodes, w);
                    w.oom_killed = *oom_killed;
                    w.exit_code = Some(*exit_code);
                    w.finished_ms = Some(t);
                    w.changed_seq = seq;
                    w.status = if w.cancel_requested {
                        WorkloadStatus::Cancelled
                    } else if *exit_code == 0 {
                        WorkloadStatus::Succeeded
                    } else {
                        WorkloadStatus::Failed
                    };
                }
            }
            Event::NodeRegistered { node, capabilities } => {
                let prev = self.nodes.get(node);
                let draining = prev.map(|n| n.draining).unwrap_or(false);
                let drain_reason = prev.and_then(|n| n.drain_reason.clone());
                let allocated_gpus = prev.map(|n| n.allocated_gpus.clone()).unwrap_or_default();
                let last_health_check = prev.and_then(|n| n.last_health_check.clone());
                self.nodes.insert(
                    node.clone(),
                    NodeRow {
                        name: node.clone(),
                        capabilities: capabilities.clone(),
                        draining,
                        drain_reason,
                        registered_ms: t,
                        last_heartbeat_ms: t,
                        changed_seq: seq,
                        ready: true,
                        not_ready_reason: None,
                        allocated_gpus,
                        last_health_check,
                    },
                );
            }
            Event::NodeHeartbeat { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.last_heartbeat_ms = t;
                    if !n.ready {
                        n.ready = true;
                        n.not_ready_reason = None;
                        n.changed_seq = seq;
                    }
                }
            }
            Event::NodeNotReady { node, reason } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.ready = false;
                    n.not_ready_reason = Some(reason.clone());
                    n.changed_seq = seq;
                }
            }
            Event::WorkloadPlaced { workload_id, node, gpu_uuids, placement } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    w.status = WorkloadStatus::Placed;
                    w.node = Some(node.clone());
                    w.gpu_uuids = gpu_uuids.clone();
                    w.placement = Some(placement.clone());
                    w.unschedulable = None;
                    w.changed_seq = seq;
                    if let Some(n) = self.nodes.get_mut(node) {
                        for uuid in gpu_uuids {
                            n.allocated_gpus.insert(uuid.clone(), workload_id.clone());
                        }
                    }
                }
            }
            Event::WorkloadUnschedulable { workload_id, placement } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    w.unschedulable = Some(placement.clone());
                }
            }
            Event::WorkloadLost { workload_id, requeued, .. } => {
                if let Some(w) = self.workloads.get_mut(workload_id) {
                    release(&mut self.nodes, w);
                    w.lost_count += 1;
                    w.changed_seq = seq;
                    if *requeued {
                        w.status = WorkloadStatus::Pending;
                        w.node = None;
                        w.placement = None;
                        w.started_ms = None;
                    } else {
                        w.status = if w.cancel_requested { WorkloadStatus::Cancelled } else { WorkloadStatus::Lost };
                        w.finished_ms = Some(t);
                    }
                }
            }
            Event::GpuMetricsObserved { node, .. } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.last_heartbeat_ms = t;
                }
            }
            Event::NodeDrainRequested { node, reason } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.draining = true;
                    n.drain_reason = Some(reason.clone());
                    n.changed_seq = seq;
                }
            }
            Event::ProposalCreated { proposal_id, action, basis_seq, reason } => {
                self.proposals.insert(
                    proposal_id.clone(),
                    ProposalRow {
                        id: proposal_id.clone(),
                        action: action.clone(),
                        basis_seq: *basis_seq,
                        reason: reason.clone(),
                        status: ProposalStatus::Open,
                        created_by: who(&rec.actor),
                        created_ms: t,
                        created_seq: seq,
                        decided_by: None,
                        decided_ms: None,
                        decision_note: None,
                    },
                );
            }
            Event::ProposalApproved { proposal_id, comment } => {
                self.decide_proposal(proposal_id, ProposalStatus::Approved, rec, comment)
            }
            Event::ProposalRejected { proposal_id, reason } => {
                self.decide_proposal(proposal_id, ProposalStatus::Rejected, rec, reason)
            }
            Event::ProposalSuperseded { proposal_id, reason, .. } => {
                self.decide_proposal(proposal_id, ProposalStatus::Superseded, rec, reason)
            }
            Event::MemberAdded { member_id, addr, voter } => {
                let row = self.members.entry(*member_id).or_insert_with(|| MemberRow {
                    id: *member_id,
                    addr: addr.clone(),
                    voter: *voter,
                    added_seq: seq,
                    added_by: who(&rec.actor),
                });
                row.addr = addr.clone();
                row.voter = *voter;
            }
            Event::GpuHealthChecked { node, check_id, results, error } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.last_health_check = Some(HealthCheckRow {
                        check_id: check_id.clone(),
                        time_ms: t,
                        seq,
                        results: results.clone(),
                        error: error.clone(),
                    });
                }
            }
            Event::IntentStated { .. }
            | Event::CommandRejected { .. }
            | Event::WorkloadLogChunk { .. }
            | Event::GpuHealthCheckRequested { .. } => {}
        }
    }

    fn decide_proposal(&mut self, id: &str, status: ProposalStatus, rec: &EventRecord, note: &str) {
        if let Some(p) = self.proposals.get_mut(id) {
            p.status = status;
            p.decided_by = Some(who(&rec.actor));
            p.decided_ms = Some(rec.time_ms);
            p.decision_note = Some(note.to_string());
        }
    }
}

/// Frees the GPUs a workload holds on its node's row.
fn release(nodes: &mut BTreeMap<String, NodeRow>, w: &mut WorkloadRow) {
    let gpus = std::mem::take(&mut w.gpu_uuids);
    if let Some(n) = w.node.as_ref().and_then(|n| nodes.get_mut(n)) {
        for uuid in &gpus {
            n.allocated_gpus.remove(uuid);
        }
    }
}
