use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::incident::{self, IncidentDecision};
use crate::{
    validate_name, Command, CommandEnvelope, Event, GpuInfo, NodeCapabilities, ProposalAction, ProposalStatus,
    Rejection, WorkloadSpec, WorkloadStatus,
};

/// Largest `data` of one `ReportWorkloadLogs` command.
pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;

/// What the rules need to know about a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadDecision {
    pub name: String,
    pub status: WorkloadStatus,
    pub node: Option<String>,
    pub cancel_requested: bool,
    /// Seq of the last event that changed this workload's decision-relevant state.
    pub changed_seq: u64,
    #[serde(default)]
    pub spec: WorkloadSpec,
    /// The GPUs it holds while Placed or Running (empty otherwise).
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// Seq of its `WorkloadSubmitted`, the queue order among equal priorities.
    #[serde(default)]
    pub submitted_seq: u64,
    /// Summary of the last recorded `WorkloadUnschedulable`, cleared once placed.
    #[serde(default)]
    pub unschedulable: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDecision {
    pub draining: bool,
    pub gpus: u32,
    pub changed_seq: u64,
    #[serde(default)]
    pub capabilities: NodeCapabilities,
    /// False after `NodeNotReady` until the node heartbeats or registers again.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Envelope time of the last registration, heartbeat or metrics report.
    #[serde(default)]
    pub last_heartbeat_ms: i64,
    /// GPU uuid → workload id, for this node's GPUs that are held.
    #[serde(default)]
    pub allocated: BTreeMap<String, String>,
}

impl NodeDecision {
    pub fn new(capabilities: NodeCapabilities, changed_seq: u64, time_ms: i64) -> NodeDecision {
        NodeDecision {
            draining: false,
            gpus: capabilities.gpus.len() as u32,
            changed_seq,
            capabilities,
            ready: true,
            last_heartbeat_ms: time_ms,
            allocated: BTreeMap::new(),
        }
    }

    /// The node's GPUs that are not held by any workload, in index order.
    pub fn free_gpus(&self) -> impl Iterator<Item = &GpuInfo> {
        let mut gpus: Vec<&GpuInfo> =
            self.capabilities.gpus.iter().filter(|g| !self.allocated.contains_key(&g.uuid)).collect();
        gpus.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.uuid.cmp(&b.uuid)));
        gpus.into_iter()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalDecision {
    pub status: ProposalStatus,
    pub action: ProposalAction,
    pub basis_seq: u64,
}

/// The small state the rules decide on. It is folded from events only, so
/// every member holds the same one after applying the same log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DecisionState {
    /// Seq of the last event folded in (0 before the first).
    pub last_seq: u64,
    pub workloads: BTreeMap<String, WorkloadDecision>,
    /// Name → id for workloads that have not finished.
    pub active_names: BTreeMap<String, String>,
    pub nodes: BTreeMap<String, NodeDecision>,
    pub proposals: BTreeMap<String, ProposalDecision>,
    pub members: BTreeMap<u64, String>,
    /// GPU uuid → workload id, for every GPU held by a Placed or Running
    /// workload. A uuid is in here at most once, so no GPU is ever assigned
    /// twice.
    #[serde(default)]
    pub gpu_allocations: BTreeMap<String, String>,
    /// Every incident ever opened, by id.
    #[serde(default)]
    pub incidents: BTreeMap<String, IncidentDecision>,
    /// `kind|subject` → id of the open incident: one open incident per
    /// kind and subject, so a GPU that keeps throttling opens one, not many.
    #[serde(default)]
    pub open_incidents: BTreeMap<String, String>,
    /// GPU uuid → the highest uncorrected ECC count reported, so only new
    /// errors open an incident.
    #[serde(default)]
    pub gpu_ecc_seen: BTreeMap<String, u64>,
    /// Workload name → times of its recent failed exits (crash-loop window).
    #[serde(default)]
    pub recent_failures: BTreeMap<String, Vec<i64>>,
    /// The Pending workloads in the order the scheduler serves them, kept
    /// by `evolve` so the scheduler never walks every workload ever
    /// submitted. Derived from `workloads`: not stored, and rebuilt by
    /// [`DecisionState::reindex`] after a state is decoded.
    #[serde(skip)]
    pending: BTreeSet<QueueKey>,
}

/// A Pending workload's place in the queue: priority (higher first), then
/// submission order, then id.
type QueueKey = (Reverse<i32>, u64, String);

fn queue_key(id: &str, w: &WorkloadDecision) -> QueueKey {
    (Reverse(w.spec.priority), w.submitted_seq, id.to_string())
}

impl DecisionState {
    /// The ids of the Pending workloads in the order the scheduler serves
    /// them: priority (higher first), then submission order.
    pub fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(|(_, _, id)| id.as_str())
    }

    /// Whether any workload is Pending.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Rebuilds the derived indexes from the stored fields: call it on a
    /// state decoded from storage or the network.
    pub fn reindex(&mut self) {
        self.pending = self
            .workloads
            .iter()
            .filter(|(_, w)| w.status == WorkloadStatus::Pending)
            .map(|(id, w)| queue_key(id, w))
            .collect();
    }

    /// Moves one workload in or out of the pending queue after an event
    /// changed it (`before`: its queue key before the event, if it was Pending).
    fn requeue(&mut self, id: &str, before: Option<QueueKey>) {
        if let Some(k) = before {
            self.pending.remove(&k);
        }
        if let Some(w) = self.workloads.get(id).filter(|w| w.status == WorkloadStatus::Pending) {
            self.pending.insert(queue_key(id, w));
        }
    }

    /// Resolves an id, or the name of an active workload, to an id.
    pub fn resolve_workload(&self, id_or_name: &str) -> Option<&str> {
        if let Some((id, _)) = self.workloads.get_key_value(id_or_name) {
            return Some(id);
        }
        self.active_names.get(id_or_name).map(String::as_str)
    }

    fn changed_seq(&self, kind: &str, id: &str) -> Option<u64> {
        match kind {
            "workload" => self.workloads.get(id).map(|w| w.changed_seq),
            "node" => self.nodes.get(id).map(|n| n.changed_seq),
            _ => None,
        }
    }
}

fn require_text(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.len() > max {
        return Err(Rejection::invalid(field, format!("is {} bytes, more than {max}", value.len())));
    }
    Ok(())
}

fn require_node<'a>(state: &'a DecisionState, node: &str) -> Result<&'a NodeDecision, Rejection> {
    state.nodes.get(node).ok_or_else(|| Rejection::not_found("node", node))
}

fn check_action(state: &DecisionState, action: &ProposalAction) -> Result<(), Rejection> {
    match action {
        ProposalAction::CancelWorkload { workload_id } => {
            let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
            if w.status.is_terminal() {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is already {}",
                    w.status.as_str()
                )));
            }
            if w.cancel_requested {
                return Err(Rejection::precondition(format!("workload \"{workload_id}\" is already being cancelled")));
            }
        }
        ProposalAction::DrainNode { node } => {
            if require_node(state, node)?.draining {
                return Err(Rejection::precondition(format!("node \"{node}\" is already draining")));
            }
        }
    }
    Ok(())
}

fn action_events(action: &ProposalAction, reason: &str) -> Event {
    match action {
        ProposalAction::CancelWorkload { workload_id } => {
            Event::WorkloadCancelRequested { workload_id: workload_id.clone(), reason: reason.to_string() }
        }
        ProposalAction::DrainNode { node } => {
            Event::NodeDrainRequested { node: node.clone(), reason: reason.to_string() }
        }
    }
}

/// Decides what a command means against the current state. Pure and total:
/// it never panics, reads no clock and does no IO, so every member reaches
/// the same verdict for the same log.
pub fn decide(state: &DecisionState, env: &CommandEnvelope) -> Result<Vec<Event>, Rejection> {
    if env.command_id.is_empty() {
        return Err(Rejection::invalid("command_id", "must not be empty"));
    }
    if env.actor.name.is_empty() {
        return Err(Rejection::invalid("actor", "must name who issued the command"));
    }
    match &env.command {
        Command::SubmitWorkload { workload_id, spec } => {
            validate_name("workload_id", workload_id)?;
            spec.validate()?;
            if state.workloads.contains_key(workload_id) {
                return Err(Rejection::AlreadyExists { kind: "workload".into(), id: workload_id.clone() });
            }
            if let Some(existing) = state.active_names.get(&spec.name) {
                return Err(Rejection::precondition(format!(
                    "a workload named \"{}\" is already active ({existing}); cancel it or choose another name",
                    spec.name
                )));
            }
            Ok(vec![Event::WorkloadSubmitted { workload_id: workload_id.clone(), spec: spec.clone() }])
        }
        Command::CancelWorkload { workload, reason } => {
            require_text("reason", reason, 4096)?;
            let id = state.resolve_workload(workload).ok_or_else(|| Rejection::not_found("workload", workload))?;
            let action = ProposalAction::CancelWorkload { workload_id: id.to_string() };
            check_action(state, &action)?;
            Ok(vec![action_events(&action, reason)])
        }
        Command::RequestNodeDrain { node, reason } => {
            require_text("reason", reason, 4096)?;
            let action = ProposalAction::DrainNode { node: node.clone() };
            check_action(state, &action)?;
            Ok(vec![action_events(&action, reason)])
        }
        Command::StateIntent { text } => {
            if text.trim().is_empty() {
                return Err(Rejection::invalid("text", "must not be empty"));
            }
            require_text("text", text, 64 * 1024)?;
            Ok(vec![Event::IntentStated { text: text.clone() }])
        }
        Command::CreateProposal { proposal_id, action, basis_seq, reason } => {
            validate_name("proposal_id", proposal_id)?;
            require_text("reason", reason, 16 * 1024)?;
            if state.proposals.contains_key(proposal_id) {
                return Err(Rejection::AlreadyExists { kind: "proposal".into(), id: proposal_id.clone() });
            }
            if *basis_seq > state.last_seq {
                return Err(Rejection::invalid(
                    "basis_seq",
                    format!("{basis_seq} is ahead of the log (last seq is {})", state.last_seq),
                ));
            }
            check_action(state, action)?;
            Ok(vec![Event::ProposalCreated {
                proposal_id: proposal_id.clone(),
                action: action.clone(),
                basis_seq: *basis_seq,
                reason: reason.clone(),
            }])
        }
        Command::ApproveProposal { proposal_id, comment } => {
            require_text("comment", comment, 16 * 1024)?;
            let p = open_proposal(state, proposal_id)?;
            let (kind, id) = p.action.touches();
            let changed = state.changed_seq(kind, id).unwrap_or(0);
            if changed > p.basis_seq {
                return Ok(vec![Event::ProposalSuperseded {
                    proposal_id: proposal_id.clone(),
                    reason: format!(
                        "{kind} \"{id}\" changed at seq {changed}, after the proposal's basis seq {}; create a new proposal against the current state",
                        p.basis_seq
                    ),
                    changed_seq: changed,
                }]);
            }
            if let Err(r) = check_action(state, &p.action) {
                return Ok(vec![Event::ProposalSuperseded {
                    proposal_id: proposal_id.clone(),
                    reason: format!("the action can no longer be taken: {r}"),
                    changed_seq: state.last_seq,
                }]);
            }
            let reason = format!("approved proposal {proposal_id}");
            Ok(vec![
                Event::ProposalApproved { proposal_id: proposal_id.clone(), comment: comment.clone() },
                action_events(&p.action, &reason),
            ])
        }
        Command::RejectProposal { proposal_id, reason } => {
            require_text("reason", reason, 16 * 1024)?;
            open_proposal(state, proposal_id)?;
            Ok(vec![Event::ProposalRejected { proposal_id: proposal_id.clone(), reason: reason.clone() }])
        }
        Command::RegisterNode { node, capabilities } => {
            validate_name("node", node)?;
            for (i, g) in capabilities.gpus.iter().enumerate() {
                if g.uuid.is_empty() {
                    return Err(Rejection::invalid(&format!("capabilities.gpus[{i}].uuid"), "must not be empty"));
                }
            }
            Ok(vec![Event::NodeRegistered { node: node.clone(), capabilities: capabilities.clone() }])
        }
        Command::Heartbeat { node } => {
            require_node(state, node)?;
            Ok(vec![Event::NodeHeartbeat { node: node.clone() }])
        }
        Command::ObserveGpuMetrics { node, samples } => {
            require_node(state, node)?;
            if samples.is_empty() {
                return Err(Rejection::invalid("samples", "must hold at least one sample"));
            }
            for (i, s) in samples.iter().enumerate() {
                let finite = s.utilization_pct.is_finite() && s.temperature_c.is_finite() && s.power_w.is_finite();
                if !finite {
                    return Err(Rejection::invalid(&format!("samples[{i}]"), "readings must be finite numbers"));
                }
                if s.xid_errors.len() > 64 {
                    return Err(Rejection::invalid(&format!("samples[{i}].xid_errors"), "holds more than 64 codes"));
                }
                if s.throttle_reasons.len() > 32 || s.throttle_reasons.iter().any(|r| r.is_empty() || r.len() > 64) {
                    return Err(Rejection::invalid(
                        &format!("samples[{i}].throttle_reasons"),
                        "must hold at most 32 names of 1 to 64 bytes",
                    ));
                }
            }
            let mut events = vec![Event::GpuMetricsObserved { node: node.clone(), samples: samples.clone() }];
            events.extend(incident::detect_gpu(state, env, node, samples));
            Ok(events)
        }
        Command::ReportWorkloadStarted { workload_id, node } => {
            require_node(state, node)?;
            let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
            if w.status != WorkloadStatus::Placed {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is {}, only a Placed workload can start",
                    w.status.as_str()
                )));
            }
            if w.node.as_deref() != Some(node.as_str()) {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is placed on node \"{}\", not \"{node}\"",
                    w.node.as_deref().unwrap_or("-")
                )));
            }
            Ok(vec![Event::WorkloadStarted { workload_id: workload_id.clone(), node: node.clone() }])
        }
        Command::ReportWorkloadExited { workload_id, node, exit_code, oom_killed } => {
            let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
            // A Placed workload may exit without having started (image pull or
            // container creation failed), so the agent reports that as an exit too.
            let live = matches!(w.status, WorkloadStatus::Placed | WorkloadStatus::Running);
            if !live || w.node.as_deref() != Some(node.as_str()) {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is not placed or running on node \"{node}\" (it is {})",
                    w.status.as_str()
                )));
            }
            let mut events = vec![Event::WorkloadExited {
                workload_id: workload_id.clone(),
                node: node.clone(),
                exit_code: *exit_code,
                oom_killed: *oom_killed,
            }];
            events.extend(incident::detect_exit(state, env, w, node, *exit_code, *oom_killed));
            Ok(events)
        }
        Command::RecordMemberAdded { member_id, addr, voter } => {
            if addr.is_empty() {
                return Err(Rejection::invalid("addr", "must not be empty"));
            }
            Ok(vec![Event::MemberAdded { member_id: *member_id, addr: addr.clone(), voter: *voter }])
        }
        Command::PlaceWorkload { workload_id, node, gpu_uuids, placement } => {
            check_placement(state, workload_id, node, gpu_uuids)?;
            Ok(vec![Event::WorkloadPlaced {
                workload_id: workload_id.clone(),
                node: node.clone(),
                gpu_uuids: gpu_uuids.clone(),
                placement: placement.clone(),
            }])
        }
        Command::RecordUnschedulable { workload_id, placement } => {
            let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
            if w.status != WorkloadStatus::Pending {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is {}, not Pending",
                    w.status.as_str()
                )));
            }
            // The same reason again is no news: nothing is appended.
            if w.unschedulable.as_deref() == Some(placement.summary.as_str()) {
                return Ok(vec![]);
            }
            Ok(vec![Event::WorkloadUnschedulable { workload_id: workload_id.clone(), placement: placement.clone() }])
        }
        Command::ReportWorkloadLogs { workload_id, node, stream, data } => {
            if !matches!(stream.as_str(), "stdout" | "stderr") {
                return Err(Rejection::invalid("stream", format!("{stream:?} is not \"stdout\" or \"stderr\"")));
            }
            require_text("data", data, MAX_LOG_CHUNK_BYTES)?;
            require_node(state, node)?;
            let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
            if w.node.as_deref() != Some(node.as_str()) {
                return Err(Rejection::precondition(format!(
                    "workload \"{workload_id}\" is not assigned to node \"{node}\""
                )));
            }
            Ok(vec![Event::WorkloadLogChunk {
                workload_id: workload_id.clone(),
                node: node.clone(),
                stream: stream.clone(),
                data: data.clone(),
            }])
        }
        Command::MarkNodeNotReady { node, reason, requeue } => {
            require_text("reason", reason, 4096)?;
            let n = require_node(state, node)?;
            if !n.ready {
                return Err(Rejection::precondition(format!("node \"{node}\" is already not ready")));
            }
            let mut events = vec![Event::NodeNotReady { node: node.clone(), reason: reason.clone() }];
            for (id, w) in &state.workloads {
                let live = matches!(w.status, WorkloadStatus::Placed | WorkloadStatus::Running);
                if live && w.node.as_deref() == Some(node.as_str()) {
                    events.push(Event::WorkloadLost {
                        workload_id: id.clone(),
                        node: node.clone(),
                        reason: reason.clone(),
                        // A workload being cancelled ends here rather than run again.
                        requeued: *requeue && !w.cancel_requested,
                    });
                }
            }
            events.extend(incident::detect_node_lost(state, env, node, reason));
            Ok(events)
        }
        Command::RequestHealthCheck { node, check_id } => {
            require_node(state, node)?;
            validate_name("check_id", check_id)?;
            Ok(vec![Event::GpuHealthCheckRequested { node: node.clone(), check_id: check_id.clone() }])
        }
        Command::ReportHealthCheck { node, check_id, results, error } => {
            require_node(state, node)?;
            validate_name("check_id", check_id)?;
            if let Some(e) = error {
                require_text("error", e, 16 * 1024)?;
            }
            for (i, r) in results.iter().enumerate() {
                let numbers = [r.gflops, r.checksum, r.reference_checksum, r.max_abs_error, r.elapsed_ms];
                if numbers.iter().any(|x| !x.is_finite()) {
                    return Err(Rejection::invalid(&format!("results[{i}]"), "numbers must be finite"));
                }
                require_text(&format!("results[{i}].detail"), &r.detail, 4096)?;
            }
            Ok(vec![Event::GpuHealthChecked {
                node: node.clone(),
                check_id: check_id.clone(),
                results: results.clone(),
                error: error.clone(),
            }])
        }
        Command::ResolveIncident { incident_id, root_cause, resolution } => {
            let i = state.incidents.get(incident_id).ok_or_else(|| Rejection::not_found("incident", incident_id))?;
            if !i.open {
                return Err(Rejection::precondition(format!("incident \"{incident_id}\" is already resolved")));
            }
            for (field, text) in [("root_cause", root_cause), ("resolution", resolution)] {
                if text.trim().is_empty() {
                    return Err(Rejection::invalid(field, "must not be empty: say what it was, for the next time"));
                }
                require_text(field, text, 16 * 1024)?;
            }
            Ok(vec![Event::IncidentResolved {
                incident_id: incident_id.clone(),
                root_cause: root_cause.clone(),
                resolution: resolution.clone(),
            }])
        }
    }
}

/// Everything a placement must satisfy at the moment it is applied. The
/// scheduler computed it against an older state, possibly on another
/// leader, so nothing it saw is trusted.
fn check_placement(
    state: &DecisionState,
    workload_id: &str,
    node: &str,
    gpu_uuids: &[String],
) -> Result<(), Rejection> {
    let w = state.workloads.get(workload_id).ok_or_else(|| Rejection::not_found("workload", workload_id))?;
    if w.status != WorkloadStatus::Pending {
        return Err(Rejection::precondition(format!(
            "workload \"{workload_id}\" is {}, not Pending",
            w.status.as_str()
        )));
    }
    let n = require_node(state, node)?;
    if !n.ready {
        return Err(Rejection::precondition(format!("node \"{node}\" is not ready")));
    }
    if n.draining {
        return Err(Rejection::precondition(format!("node \"{node}\" is draining")));
    }
    let spec = &w.spec;
    if gpu_uuids.len() != spec.gpus as usize {
        return Err(Rejection::invalid(
            "gpu_uuids",
            format!("holds {} GPUs, workload \"{workload_id}\" needs {}", gpu_uuids.len(), spec.gpus),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for uuid in gpu_uuids {
        if !seen.insert(uuid) {
            return Err(Rejection::invalid("gpu_uuids", format!("GPU {uuid} is listed twice")));
        }
        let gpu = n
            .capabilities
            .gpus
            .iter()
            .find(|g| &g.uuid == uuid)
            .ok_or_else(|| Rejection::precondition(format!("GPU {uuid} is not a GPU of node \"{node}\"")))?;
        if let Some(holder) = state.gpu_allocations.get(uuid) {
            return Err(Rejection::precondition(format!("GPU {uuid} is already held by workload \"{holder}\"")));
        }
        if let Some(model) = &spec.gpu_model {
            if &gpu.model != model {
                return Err(Rejection::precondition(format!(
                    "GPU {uuid} is a {}, the workload needs {model}",
                    gpu.model
                )));
            }
        }
        if gpu.memory_mb < spec.min_gpu_memory_mb {
            return Err(Rejection::precondition(format!(
                "GPU {uuid} has {} MB, the workload needs at least {} MB",
                gpu.memory_mb, spec.min_gpu_memory_mb
            )));
        }
    }
    for (k, v) in &spec.node_selector {
        if n.capabilities.labels.get(k) != Some(v) {
            return Err(Rejection::precondition(format!("node \"{node}\" does not carry the label {k}={v}")));
        }
    }
    Ok(())
}

fn open_proposal<'a>(state: &'a DecisionState, id: &str) -> Result<&'a ProposalDecision, Rejection> {
    let p = state.proposals.get(id).ok_or_else(|| Rejection::not_found("proposal", id))?;
    if p.status != ProposalStatus::Open {
        return Err(Rejection::precondition(format!("proposal \"{id}\" is already {}", p.status.as_str())));
    }
    Ok(p)
}

/// Folds one event (with the seq it was stored under and its envelope's
/// time) into the state. The time is the leader's clock stamped at propose
/// time, so replay reads no clock.
pub fn evolve(state: &mut DecisionState, seq: u64, time_ms: i64, event: &Event) {
    let queued = event.workload_id().map(|id| {
        let before = state.workloads.get(id).filter(|w| w.status == WorkloadStatus::Pending).map(|w| queue_key(id, w));
        (id, before)
    });
    evolve_rows(state, seq, time_ms, event);
    if let Some((id, before)) = queued {
        state.requeue(id, before);
    }
}

fn evolve_rows(state: &mut DecisionState, seq: u64, time_ms: i64, event: &Event) {
    state.last_seq = seq;
    match event {
        Event::WorkloadSubmitted { workload_id, spec } => {
            state.workloads.insert(
                workload_id.clone(),
                WorkloadDecision {
                    name: spec.name.clone(),
                    status: WorkloadStatus::Pending,
                    node: None,
                    cancel_requested: false,
                    changed_seq: seq,
                    spec: spec.clone(),
                    gpu_uuids: Vec::new(),
                    submitted_seq: seq,
                    unschedulable: None,
                },
            );
            state.active_names.insert(spec.name.clone(), workload_id.clone());
        }
        Event::WorkloadCancelRequested { workload_id, .. } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                w.cancel_requested = true;
                w.changed_seq = seq;
                // Nothing runs yet for a Pending workload, so it ends here. A
                // Placed one ends here too and frees its GPUs at once: the node
                // agent watches WorkloadCancelRequested and stops the container
                // if it already created one (its later Started or Exited report
                // is then refused, which it may ignore). A Running one stays
                // Running until the agent reports the exit.
                if matches!(w.status, WorkloadStatus::Pending | WorkloadStatus::Placed) {
                    w.status = WorkloadStatus::Cancelled;
                    state.active_names.remove(&w.name);
                    release_gpus(&mut state.gpu_allocations, &mut state.nodes, w);
                }
            }
        }
        Event::WorkloadStarted { workload_id, node } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                w.status = WorkloadStatus::Running;
                w.node = Some(node.clone());
                w.changed_seq = seq;
            }
        }
        Event::WorkloadExited { workload_id, exit_code, oom_killed, .. } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                if !w.cancel_requested && (*exit_code != 0 || *oom_killed) {
                    incident::remember_failure(&mut state.recent_failures, &w.name, time_ms);
                }
                w.status = if w.cancel_requested {
                    WorkloadStatus::Cancelled
                } else if *exit_code == 0 {
                    WorkloadStatus::Succeeded
                } else {
                    WorkloadStatus::Failed
                };
                w.changed_seq = seq;
                state.active_names.remove(&w.name);
                release_gpus(&mut state.gpu_allocations, &mut state.nodes, w);
            }
        }
        Event::WorkloadPlaced { workload_id, node, gpu_uuids, .. } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                w.status = WorkloadStatus::Placed;
                w.node = Some(node.clone());
                w.gpu_uuids = gpu_uuids.clone();
                w.unschedulable = None;
                w.changed_seq = seq;
                let n = state.nodes.get_mut(node);
                for uuid in gpu_uuids {
                    state.gpu_allocations.insert(uuid.clone(), workload_id.clone());
                }
                if let Some(n) = n {
                    for uuid in gpu_uuids {
                        n.allocated.insert(uuid.clone(), workload_id.clone());
                    }
                }
            }
        }
        Event::WorkloadUnschedulable { workload_id, placement } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                w.unschedulable = Some(placement.summary.clone());
            }
        }
        Event::WorkloadLost { workload_id, requeued, .. } => {
            if let Some(w) = state.workloads.get_mut(workload_id) {
                release_gpus(&mut state.gpu_allocations, &mut state.nodes, w);
                w.changed_seq = seq;
                if *requeued {
                    w.status = WorkloadStatus::Pending;
                    w.node = None;
                    w.unschedulable = None;
                } else {
                    w.status = if w.cancel_requested { WorkloadStatus::Cancelled } else { WorkloadStatus::Lost };
                    state.active_names.remove(&w.name);
                }
            }
        }
        Event::NodeNotReady { node, .. } => {
            if let Some(n) = state.nodes.get_mut(node) {
                n.ready = false;
                n.changed_seq = seq;
            }
        }
        Event::NodeRegistered { node, capabilities } => match state.nodes.get_mut(node) {
            // Re-registration (an agent restart) keeps the drain flag and the
            // allocations of workloads it still runs.
            Some(n) => {
                n.gpus = capabilities.gpus.len() as u32;
                n.capabilities = capabilities.clone();
                n.ready = true;
                n.last_heartbeat_ms = time_ms;
                n.changed_seq = seq;
            }
            None => {
                state.nodes.insert(node.clone(), NodeDecision::new(capabilities.clone(), seq, time_ms));
            }
        },
        Event::NodeHeartbeat { node } => {
            if let Some(n) = state.nodes.get_mut(node) {
                n.last_heartbeat_ms = time_ms;
                if !n.ready {
                    n.ready = true;
                    n.changed_seq = seq;
                }
            }
        }
        Event::GpuMetricsObserved { node, samples } => {
            if let Some(n) = state.nodes.get_mut(node) {
                n.last_heartbeat_ms = time_ms;
            }
            // Only GPUs that ever reported uncorrected errors are kept (the
            // common zero needs no entry and no allocation on the apply path).
            for s in samples {
                let seen = state.gpu_ecc_seen.get(&s.gpu_uuid).copied().unwrap_or(0);
                if s.ecc_uncorrected > seen {
                    state.gpu_ecc_seen.insert(s.gpu_uuid.clone(), s.ecc_uncorrected);
                }
            }
        }
        Event::IncidentOpened { incident_id, incident_kind: kind, subject, .. } => {
            state.open_incidents.insert(incident::open_key(kind, subject), incident_id.clone());
            state.incidents.insert(
                incident_id.clone(),
                IncidentDecision { kind: kind.clone(), subject: subject.clone(), open: true },
            );
        }
        Event::IncidentResolved { incident_id, .. } => {
            if let Some(i) = state.incidents.get_mut(incident_id) {
                i.open = false;
                state.open_incidents.remove(&incident::open_key(&i.kind, &i.subject));
            }
        }
        Event::NodeDrainRequested { node, .. } => {
            if let Some(n) = state.nodes.get_mut(node) {
                n.draining = true;
                n.changed_seq = seq;
            }
        }
        Event::ProposalCreated { proposal_id, action, basis_seq, .. } => {
            state.proposals.insert(
                proposal_id.clone(),
                ProposalDecision { status: ProposalStatus::Open, action: action.clone(), basis_seq: *basis_seq },
            );
        }
        Event::ProposalApproved { proposal_id, .. } => set_proposal(state, proposal_id, ProposalStatus::Approved),
        Event::ProposalRejected { proposal_id, .. } => set_proposal(state, proposal_id, ProposalStatus::Rejected),
        Event::ProposalSuperseded { proposal_id, .. } => set_proposal(state, proposal_id, ProposalStatus::Superseded),
        Event::MemberAdded { member_id, addr, .. } => {
            state.members.insert(*member_id, addr.clone());
        }
        Event::IntentStated { .. }
        | Event::CommandRejected { .. }
        | Event::WorkloadLogChunk { .. }
        | Event::GpuHealthCheckRequested { .. }
        | Event::GpuHealthChecked { .. } => {}
    }
}

/// Frees the GPUs a workload holds, in the global map and on its node.
fn release_gpus(
    allocations: &mut BTreeMap<String, String>,
    nodes: &mut BTreeMap<String, NodeDecision>,
    w: &mut WorkloadDecision,
) {
    let node = w.node.as_ref().and_then(|n| nodes.get_mut(n));
    let gpus = std::mem::take(&mut w.gpu_uuids);
    if let Some(n) = node {
        for uuid in &gpus {
            n.allocated.remove(uuid);
        }
    }
    for uuid in &gpus {
        allocations.remove(uuid);
    }
}

fn set_proposal(state: &mut DecisionState, id: &str, status: ProposalStatus) {
    if let Some(p) = state.proposals.get_mut(id) {
        p.status = status;
    }
}

#[cfg(test)]
mod tests;
