use std::collections::{BTreeMap, BTreeSet};

use claw_commands::{
    Actor, Event, EventRecord, GpuHealthResult, GpuSample, NodeCapabilities, Placement, ProposalAction, ProposalStatus,
    WorkloadSpec, WorkloadStatus,
};
use serde::{Deserialize, Serialize};

use crate::table::Table;

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
    /// GPU uuid → its latest metrics sample and when it was recorded.
    #[serde(default)]
    pub gpu_samples: BTreeMap<String, (GpuSample, i64)>,
}

/// An incident opened by a detector, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRow {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub node: String,
    pub signals: Vec<String>,
    pub summary: String,
    /// `open` or `resolved`.
    pub status: String,
    pub opened_seq: u64,
    pub opened_ms: i64,
    pub opened_by: String,
    pub resolved_seq: Option<u64>,
    pub resolved_ms: Option<i64>,
    pub resolved_by: Option<String>,
    pub root_cause: Option<String>,
    pub resolution: Option<String>,
}

/// A resolved incident whose signals match another's: what was learned then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenBefore {
    pub incident_id: String,
    pub similarity: f64,
    pub subject: String,
    pub opened_ms: i64,
    pub resolved_by: Option<String>,
    pub root_cause: Option<String>,
    pub resolution: Option<String>,
}

/// An incident with what similar resolved incidents taught (`clawctl incident get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentRow,
    pub seen_before: Vec<SeenBefore>,
}

/// Resolved incidents of the same kind sharing at least this share of signals
/// are shown as "seen before".
pub const SEEN_BEFORE_MIN_SIMILARITY: f64 = 0.5;

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
    /// Defaults when absent only so that a past-state read of a few
    /// columns can skip decoding it; every stored row has it.
    #[serde(default)]
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
    pub members: Table<u64, MemberRow>,
    pub nodes: Table<String, NodeRow>,
    pub workloads: Table<String, WorkloadRow>,
    pub proposals: Table<String, ProposalRow>,
    /// Count of events per kind, for a quick overview.
    pub event_counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub incidents: Table<String, IncidentRow>,
}

/// Row keys per table of a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowKeys {
    pub members: BTreeSet<u64>,
    pub nodes: BTreeSet<String>,
    pub workloads: BTreeSet<String>,
    pub proposals: BTreeSet<String>,
    pub incidents: BTreeSet<String>,
}

impl RowKeys {
    /// Adds `other`'s keys to these.
    pub fn extend(&mut self, other: RowKeys) {
        self.members.extend(other.members);
        self.nodes.extend(other.nodes);
        self.workloads.extend(other.workloads);
        self.proposals.extend(other.proposals);
        self.incidents.extend(other.incidents);
    }
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
                    last_sample: n.gpu_samples.get(&g.uuid).map(|(s, _)| s.clone()),
                    last_sample_ms: n.gpu_samples.get(&g.uuid).map(|(_, t)| *t),
                });
            }
        }
        out
    }

    /// Resolved incidents of the same kind whose signals match this one's,
    /// most similar first (then most recent): what fixed it last time.
    pub fn seen_before(&self, incident_id: &str) -> Vec<SeenBefore> {
        let Some(this) = self.incidents.get(incident_id) else { return Vec::new() };
        let mut out: Vec<SeenBefore> = self
            .incidents
            .values()
            .filter(|i| i.id != this.id && i.kind == this.kind && i.status == "resolved")
            .filter_map(|i| {
                let similarity = claw_commands::signal_similarity(&this.signals, &i.signals);
                (similarity >= SEEN_BEFORE_MIN_SIMILARITY).then(|| SeenBefore {
                    incident_id: i.id.clone(),
                    similarity,
                    subject: i.subject.clone(),
                    opened_ms: i.opened_ms,
                    resolved_by: i.resolved_by.clone(),
                    root_cause: i.root_cause.clone(),
                    resolution: i.resolution.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(b.opened_ms.cmp(&a.opened_ms)));
        out
    }

    pub fn incident_detail(&self, incident_id: &str) -> Option<IncidentDetail> {
        let incident = self.incidents.get(incident_id)?.clone();
        Some(IncidentDetail { incident, seen_before: self.seen_before(incident_id) })
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
        self.apply_scalars(rec.seq, rec.time_ms, &rec.hash, rec.event.kind());
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
                let gpu_samples = prev.map(|n| n.gpu_samples.clone()).unwrap_or_default();
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
                        gpu_samples,
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
            Event::GpuMetricsObserved { node, samples } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.last_heartbeat_ms = t;
                    for s in samples {
                        // Only GPUs the node registered: a stray uuid would
                        // make the row grow without bound.
                        if n.capabilities.gpus.iter().any(|g| g.uuid == s.gpu_uuid) {
                            n.gpu_samples.insert(s.gpu_uuid.clone(), (s.clone(), t));
                        }
                    }
                }
            }
            Event::IncidentOpened { incident_id, incident_kind, subject, node, signals, summary } => {
                self.incidents.insert(
                    incident_id.clone(),
                    IncidentRow {
                        id: incident_id.clone(),
                        kind: incident_kind.clone(),
                        subject: subject.clone(),
                        node: node.clone(),
                        signals: signals.clone(),
                        summary: summary.clone(),
                        status: "open".into(),
                        opened_seq: seq,
                        opened_ms: t,
                        opened_by: who(&rec.actor),
                        resolved_seq: None,
                        resolved_ms: None,
                        resolved_by: None,
                        root_cause: None,
                        resolution: None,
                    },
                );
            }
            Event::IncidentResolved { incident_id, root_cause, resolution } => {
                if let Some(i) = self.incidents.get_mut(incident_id) {
                    i.status = "resolved".into();
                    i.resolved_seq = Some(seq);
                    i.resolved_ms = Some(t);
                    i.resolved_by = Some(who(&rec.actor));
                    i.root_cause = Some(root_cause.clone());
                    i.resolution = Some(resolution.clone());
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
                let row = self.members.get_or_insert_with(*member_id, || MemberRow {
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

    /// Folds an event of `kind` into the view's scalars (position, hash,
    /// time, event counts) and not into its tables: for a reader that needs
    /// only tables [`crate::ViewTables::changed_by`] says this kind leaves alone.
    pub fn apply_scalars(&mut self, seq: u64, time_ms: i64, hash: &str, kind: &str) {
        self.last_seq = seq;
        hash.clone_into(&mut self.last_hash);
        self.last_time_ms = time_ms;
        match self.event_counts.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.event_counts.insert(kind.to_string(), 1);
            }
        }
    }

    /// The keys of the rows changed since the last call, per table, and
    /// forgets them (see [`Table::take_touched`]).
    pub fn take_touched(&mut self) -> RowKeys {
        RowKeys {
            members: self.members.take_touched(),
            nodes: self.nodes.take_touched(),
            workloads: self.workloads.take_touched(),
            proposals: self.proposals.take_touched(),
            incidents: self.incidents.take_touched(),
        }
    }

    /// Marks every row of every table touched.
    pub fn touch_all(&mut self) {
        self.members.touch_all();
        self.nodes.touch_all();
        self.workloads.touch_all();
        self.proposals.touch_all();
        self.incidents.touch_all();
    }

    /// The rows [`ClusterView::apply`] reads or writes for `event`, named by
    /// the event itself. Applying a workload event may also free GPUs on the
    /// node the workload row names (not always the event's): a view loaded
    /// with only these rows keeps exact the tables it holds whole, and the
    /// workload rows; other node rows may miss such a change.
    pub fn rows_used_by(event: &Event) -> RowKeys {
        let mut keys = RowKeys::default();
        match event {
            Event::NodeRegistered { node: n, .. }
            | Event::NodeHeartbeat { node: n }
            | Event::NodeNotReady { node: n, .. }
            | Event::GpuMetricsObserved { node: n, .. }
            | Event::NodeDrainRequested { node: n, .. }
            | Event::GpuHealthChecked { node: n, .. } => {
                keys.nodes.insert(n.clone());
            }
            Event::WorkloadPlaced { node: n, workload_id, .. } => {
                keys.nodes.insert(n.clone());
                keys.workloads.insert(workload_id.clone());
            }
            Event::WorkloadSubmitted { workload_id, .. }
            | Event::WorkloadCancelRequested { workload_id, .. }
            | Event::WorkloadStarted { workload_id, .. }
            | Event::WorkloadExited { workload_id, .. }
            | Event::WorkloadUnschedulable { workload_id, .. }
            | Event::WorkloadLost { workload_id, .. } => {
                keys.workloads.insert(workload_id.clone());
            }
            Event::IncidentOpened { incident_id, .. } | Event::IncidentResolved { incident_id, .. } => {
                keys.incidents.insert(incident_id.clone());
            }
            Event::ProposalCreated { proposal_id, .. }
            | Event::ProposalApproved { proposal_id, .. }
            | Event::ProposalRejected { proposal_id, .. }
            | Event::ProposalSuperseded { proposal_id, .. } => {
                keys.proposals.insert(proposal_id.clone());
            }
            Event::MemberAdded { member_id, .. } => {
                keys.members.insert(*member_id);
            }
            Event::IntentStated { .. }
            | Event::CommandRejected { .. }
            | Event::WorkloadLogChunk { .. }
            | Event::GpuHealthCheckRequested { .. } => {}
        }
        keys
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
fn release(nodes: &mut Table<String, NodeRow>, w: &mut WorkloadRow) {
    let gpus = std::mem::take(&mut w.gpu_uuids);
    if let Some(n) = w.node.as_ref().and_then(|n| nodes.get_mut(n)) {
        for uuid in &gpus {
            n.allocated_gpus.remove(uuid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claw_commands::{GpuInfo, GENESIS_HASH};

    fn rec(seq: u64, t: i64, actor: Actor, event: Event) -> EventRecord {
        EventRecord {
            seq,
            raft_index: seq,
            time_ms: t,
            command_id: format!("c{seq}"),
            correlation_id: format!("c{seq}"),
            actor,
            event,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    fn opened(id: &str, subject: &str, signals: &[&str]) -> Event {
        Event::IncidentOpened {
            incident_id: id.into(),
            incident_kind: "gpu_xid".into(),
            subject: subject.into(),
            node: "n1".into(),
            signals: signals.iter().map(|s| s.to_string()).collect(),
            summary: "xid".into(),
        }
    }

    #[test]
    fn a_new_incident_recalls_how_a_similar_one_was_resolved() {
        let mut v = ClusterView::default();
        let node = Actor { kind: claw_commands::ActorKind::Node, name: "n1".into() };
        v.apply(&rec(1, 10, node.clone(), opened("inc-a", "gpu:A", &["gpu_model:H100", "xid:79"])));
        v.apply(&rec(2, 20, node.clone(), opened("inc-b", "gpu:B", &["gpu_model:A100", "xid:48"])));
        v.apply(&rec(
            3,
            30,
            Actor::user("alice"),
            Event::IncidentResolved {
                incident_id: "inc-a".into(),
                root_cause: "GPU fell off the bus: loose riser".into(),
                resolution: "reseated the riser".into(),
            },
        ));
        // Same XID on another H100: inc-a is recalled, with alice's notes.
        v.apply(&rec(4, 40, node.clone(), opened("inc-c", "gpu:C", &["gpu_model:H100", "xid:79"])));
        let seen = v.seen_before("inc-c");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].incident_id, "inc-a");
        assert_eq!(seen[0].similarity, 1.0);
        assert_eq!(seen[0].resolved_by.as_deref(), Some("user:alice"));
        assert_eq!(seen[0].resolution.as_deref(), Some("reseated the riser"));
        // inc-b is still open, and its signals differ: nothing to recall.
        assert!(v.seen_before("inc-b").is_empty());
        assert_eq!(v.incidents["inc-a"].status, "resolved");
        assert_eq!(v.incidents["inc-c"].status, "open");
    }

    #[test]
    fn the_latest_sample_of_each_registered_gpu_is_kept() {
        let mut v = ClusterView::default();
        let node = Actor { kind: claw_commands::ActorKind::Node, name: "n1".into() };
        let caps = NodeCapabilities {
            gpus: vec![GpuInfo { index: 0, uuid: "GPU-0".into(), model: "H100".into(), memory_mb: 81_559 }],
            ..Default::default()
        };
        v.apply(&rec(1, 10, node.clone(), Event::NodeRegistered { node: "n1".into(), capabilities: caps.clone() }));
        let sample = |u: &str, util| GpuSample { gpu_uuid: u.into(), utilization_pct: util, ..Default::default() };
        v.apply(&rec(
            2,
            20,
            node.clone(),
            Event::GpuMetricsObserved { node: "n1".into(), samples: vec![sample("GPU-0", 10.0), sample("GPU-X", 1.0)] },
        ));
        v.apply(&rec(
            3,
            30,
            node.clone(),
            Event::GpuMetricsObserved { node: "n1".into(), samples: vec![sample("GPU-0", 97.0)] },
        ));
        // A re-registration (agent restart) keeps the last reading.
        v.apply(&rec(4, 40, node, Event::NodeRegistered { node: "n1".into(), capabilities: caps }));
        let gpus = v.gpus();
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].last_sample.as_ref().map(|s| s.utilization_pct), Some(97.0));
        assert_eq!(gpus[0].last_sample_ms, Some(30));
        assert!(!v.nodes["n1"].gpu_samples.contains_key("GPU-X"), "unregistered GPUs are not kept");
    }
}
