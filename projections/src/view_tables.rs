use crate::cluster_view::RowKeys;

/// A set of the [`crate::ClusterView`]'s tables: which ones a reader of a
/// past state needs complete, and which ones an event kind can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewTables {
    pub members: bool,
    pub nodes: bool,
    pub workloads: bool,
    pub proposals: bool,
    pub incidents: bool,
}

impl ViewTables {
    /// Every table: the whole view.
    pub const ALL: ViewTables =
        ViewTables { members: true, nodes: true, workloads: true, proposals: true, incidents: true };

    const NONE: ViewTables =
        ViewTables { members: false, nodes: false, workloads: false, proposals: false, incidents: false };

    /// The tables [`crate::ClusterView::apply`] can change for an event of
    /// `kind` (an [`claw_commands::Event::kind`] name). A kind this build
    /// does not know may change anything, so it gets every table.
    pub fn changed_by(kind: &str) -> ViewTables {
        let none = ViewTables::NONE;
        match kind {
            "WorkloadSubmitted" | "WorkloadStarted" | "WorkloadUnschedulable" => ViewTables { workloads: true, ..none },
            // These take or free GPUs on a node row.
            "WorkloadCancelRequested" | "WorkloadExited" | "WorkloadPlaced" | "WorkloadLost" => {
                ViewTables { workloads: true, nodes: true, ..none }
            }
            "NodeRegistered" | "NodeHeartbeat" | "NodeNotReady" | "GpuMetricsObserved" | "NodeDrainRequested"
            | "GpuHealthChecked" => ViewTables { nodes: true, ..none },
            "IncidentOpened" | "IncidentResolved" => ViewTables { incidents: true, ..none },
            "ProposalCreated" | "ProposalApproved" | "ProposalRejected" | "ProposalSuperseded" => {
                ViewTables { proposals: true, ..none }
            }
            "MemberAdded" => ViewTables { members: true, ..none },
            "IntentStated" | "CommandRejected" | "WorkloadLogChunk" | "GpuHealthCheckRequested" => none,
            _ => ViewTables::ALL,
        }
    }

    /// These tables plus the ones their fold reads: node rows change with
    /// workload events according to the workload's row (which node, which
    /// GPUs), so replaying the node table needs the workload rows too.
    pub fn with_dependencies(self) -> ViewTables {
        ViewTables { workloads: self.workloads || self.nodes, ..self }
    }

    /// Whether the two sets share a table.
    pub fn intersects(self, other: ViewTables) -> bool {
        (self.members && other.members)
            || (self.nodes && other.nodes)
            || (self.workloads && other.workloads)
            || (self.proposals && other.proposals)
            || (self.incidents && other.incidents)
    }

    /// These tables less `other`'s.
    pub fn without(self, other: ViewTables) -> ViewTables {
        ViewTables {
            members: self.members && !other.members,
            nodes: self.nodes && !other.nodes,
            workloads: self.workloads && !other.workloads,
            proposals: self.proposals && !other.proposals,
            incidents: self.incidents && !other.incidents,
        }
    }

    /// `keys` with only the keys of these tables.
    pub fn keep(self, mut keys: RowKeys) -> RowKeys {
        if !self.members {
            keys.members.clear();
        }
        if !self.nodes {
            keys.nodes.clear();
        }
        if !self.workloads {
            keys.workloads.clear();
        }
        if !self.proposals {
            keys.proposals.clear();
        }
        if !self.incidents {
            keys.incidents.clear();
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use claw_commands::{
        Actor, Event, EventRecord, GpuHealthResult, GpuInfo, GpuSample, NodeCapabilities, Placement, ProposalAction,
        Rejection, WorkloadSpec, GENESIS_HASH,
    };

    use super::*;
    use crate::ClusterView;

    /// A story that uses every event kind, on rows that exist, so each
    /// event changes what it can.
    fn story() -> Vec<Event> {
        let s = |x: &str| x.to_string();
        let gpu = GpuInfo { index: 0, uuid: s("G0"), model: s("H100"), memory_mb: 80_000 };
        let sample = GpuSample { gpu_uuid: s("G0"), utilization_pct: 90.0, ..Default::default() };
        let placed = |w: &str| Event::WorkloadPlaced {
            workload_id: s(w),
            node: s("n1"),
            gpu_uuids: vec![s("G0")],
            placement: Placement::default(),
        };
        let spec = WorkloadSpec { name: s("train"), image: s("img"), gpus: 1, ..Default::default() };
        vec![
            Event::MemberAdded { member_id: 2, addr: s("127.0.0.1:7401"), voter: true },
            Event::NodeRegistered {
                node: s("n1"),
                capabilities: NodeCapabilities { gpus: vec![gpu], ..Default::default() },
            },
            Event::NodeHeartbeat { node: s("n1") },
            Event::GpuMetricsObserved { node: s("n1"), samples: vec![sample] },
            Event::IntentStated { text: s("train llama") },
            Event::WorkloadSubmitted { workload_id: s("w1"), spec: spec.clone() },
            placed("w1"),
            Event::WorkloadStarted { workload_id: s("w1"), node: s("n1") },
            Event::WorkloadLogChunk { workload_id: s("w1"), node: s("n1"), stream: s("stdout"), data: s("hi") },
            Event::GpuHealthCheckRequested { node: s("n1"), check_id: s("h1") },
            Event::GpuHealthChecked {
                node: s("n1"),
                check_id: s("h1"),
                results: vec![GpuHealthResult { passed: true, ..Default::default() }],
                error: None,
            },
            Event::NodeNotReady { node: s("n1"), reason: s("silent") },
            Event::WorkloadLost { workload_id: s("w1"), node: s("n1"), reason: s("node lost"), requeued: true },
            Event::NodeHeartbeat { node: s("n1") },
            placed("w1"),
            Event::WorkloadExited { workload_id: s("w1"), node: s("n1"), exit_code: 0, oom_killed: false },
            Event::WorkloadSubmitted { workload_id: s("w2"), spec },
            Event::WorkloadUnschedulable { workload_id: s("w2"), placement: Placement::default() },
            placed("w2"),
            Event::WorkloadCancelRequested { workload_id: s("w2"), reason: s("not needed") },
            Event::CommandRejected {
                command_kind: s("CancelWorkload"),
                rejection: Rejection::NotFound { kind: s("workload"), id: s("w9") },
            },
            Event::ProposalCreated {
                proposal_id: s("p1"),
                action: ProposalAction::DrainNode { node: s("n1") },
                basis_seq: 1,
                reason: s("idle"),
            },
            Event::ProposalApproved { proposal_id: s("p1"), comment: s("ok") },
            Event::ProposalRejected { proposal_id: s("p1"), reason: s("no") },
            Event::ProposalSuperseded { proposal_id: s("p1"), reason: s("moved on"), changed_seq: 3 },
            Event::NodeDrainRequested { node: s("n1"), reason: s("maintenance") },
            Event::IncidentOpened {
                incident_id: s("i1"),
                incident_kind: s("gpu_xid"),
                subject: s("G0"),
                node: s("n1"),
                signals: vec![s("xid:79")],
                summary: s("xid 79"),
            },
            Event::IncidentResolved { incident_id: s("i1"), root_cause: s("riser"), resolution: s("reseated") },
        ]
    }

    /// Applying an event leaves every table its kind does not name as it
    /// was, so a past-state read may skip it for those tables.
    #[test]
    fn an_event_changes_only_the_tables_its_kind_names() {
        let events = story();
        for kind in Event::KINDS {
            assert!(events.iter().any(|e| e.kind() == *kind), "the story lacks {kind}");
            assert_ne!(ViewTables::changed_by(kind), ViewTables::ALL, "{kind} has no declared tables");
        }
        let mut view = ClusterView::default();
        for (i, event) in events.into_iter().enumerate() {
            let kind = event.kind();
            let before = view.clone();
            let seq = i as u64 + 1;
            let rec = EventRecord {
                seq,
                raft_index: seq,
                time_ms: 1_000 * seq as i64,
                actor: Actor::user("ada"),
                command_id: format!("c{seq}"),
                correlation_id: format!("c{seq}"),
                event,
                prev_hash: GENESIS_HASH.into(),
                hash: format!("h{seq}"),
            };
            view.apply(&rec);
            let changed = ViewTables {
                members: view.members != before.members,
                nodes: view.nodes != before.nodes,
                workloads: view.workloads != before.workloads,
                proposals: view.proposals != before.proposals,
                incidents: view.incidents != before.incidents,
            };
            let declared = ViewTables::changed_by(kind);
            assert_eq!(changed.without(declared), ViewTables::default(), "{kind} changed {changed:?}");
            assert_ne!(changed.intersects(declared), declared == ViewTables::default(), "{kind}: {changed:?}");
        }
        assert_eq!(ViewTables::changed_by("SomethingNewer"), ViewTables::ALL);
    }

    #[test]
    fn node_tables_need_the_workload_rows() {
        let nodes = ViewTables { nodes: true, ..Default::default() };
        assert_eq!(nodes.with_dependencies(), ViewTables { nodes: true, workloads: true, ..Default::default() });
        let members = ViewTables { members: true, ..Default::default() };
        assert_eq!(members.with_dependencies(), members);
    }
}
