use std::sync::Arc;

use claw_log::ViewTables;
use claw_projections::ClusterView;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::events_batch::{batch, time_type};
use crate::{Error, Result};

/// One of the projection tables. The live table (`nodes`) and its seance
/// function (`nodes_at(x)`) both build their rows with [`ViewKind::batch`],
/// from the live view or from the view at a past seq, so they agree by
/// construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewKind {
    Members,
    Nodes,
    Gpus,
    Workloads,
    Proposals,
    Incidents,
}

impl ViewKind {
    pub(crate) const ALL: [ViewKind; 6] = [
        ViewKind::Members,
        ViewKind::Nodes,
        ViewKind::Gpus,
        ViewKind::Workloads,
        ViewKind::Proposals,
        ViewKind::Incidents,
    ];

    /// The tables of the view its rows come from: a seance function loads
    /// only these from the checkpoint.
    pub(crate) fn tables(self) -> ViewTables {
        let none = ViewTables::default();
        match self {
            ViewKind::Members => ViewTables { members: true, ..none },
            ViewKind::Nodes | ViewKind::Gpus => ViewTables { nodes: true, ..none },
            ViewKind::Workloads => ViewTables { workloads: true, ..none },
            ViewKind::Proposals => ViewTables { proposals: true, ..none },
            ViewKind::Incidents => ViewTables { incidents: true, ..none },
        }
    }

    /// The live table's name; the seance function is this plus `_at`.
    pub(crate) fn table(self) -> &'static str {
        match self {
            ViewKind::Members => "members",
            ViewKind::Nodes => "nodes",
            ViewKind::Gpus => "gpus",
            ViewKind::Workloads => "workloads",
            ViewKind::Proposals => "proposals",
            ViewKind::Incidents => "incidents",
        }
    }

    pub(crate) fn schema(self) -> SchemaRef {
        use DataType::*;
        let s = |name: &str, nullable: bool| Field::new(name, Utf8, nullable);
        let t = |name: &str, nullable: bool| Field::new(name, time_type(), nullable);
        let f = |name: &str, ty: DataType, nullable: bool| Field::new(name, ty, nullable);
        let fields = match self {
            ViewKind::Members => vec![
                f("id", UInt64, false),
                s("addr", false),
                f("voter", Boolean, false),
                f("added_seq", UInt64, false),
                s("added_by", false),
            ],
            ViewKind::Nodes => vec![
                s("name", false),
                f("ready", Boolean, false),
                s("not_ready_reason", true),
                f("draining", Boolean, false),
                s("drain_reason", true),
                f("cpus", UInt32, false),
                f("memory_mb", UInt64, false),
                f("gpu_count", UInt32, false),
                f("gpus_allocated", UInt32, false),
                s("driver_version", true),
                s("cuda_version", true),
                s("labels", false),
                t("registered", false),
                t("last_heartbeat", false),
                f("changed_seq", UInt64, false),
            ],
            ViewKind::Gpus => vec![
                s("node", false),
                f("index", UInt32, false),
                s("uuid", false),
                s("model", false),
                f("memory_mb", UInt64, false),
                s("workload", true),
                t("last_sample_time", true),
                f("utilization_pct", Float64, true),
                f("memory_used_mb", UInt64, true),
                f("temperature_c", Float64, true),
                f("power_w", Float64, true),
            ],
            ViewKind::Workloads => vec![
                s("id", false),
                s("name", false),
                s("image", false),
                s("status", false),
                s("node", true),
                f("gpus", UInt32, false),
                s("gpu_model", true),
                f("min_gpu_memory_mb", UInt64, false),
                s("gpu_uuids", false),
                f("priority", Int32, false),
                s("labels", false),
                s("submitted_by", false),
                t("submitted", false),
                f("submitted_seq", UInt64, false),
                t("started", true),
                t("finished", true),
                f("exit_code", Int32, true),
                f("oom_killed", Boolean, false),
                f("cancel_requested", Boolean, false),
                s("cancel_reason", true),
                f("lost_count", UInt32, false),
                s("placement", true),
                s("unschedulable", true),
                f("changed_seq", UInt64, false),
            ],
            ViewKind::Proposals => vec![
                s("id", false),
                s("action", false),
                s("action_type", false),
                s("target", false),
                f("basis_seq", UInt64, false),
                s("reason", false),
                s("status", false),
                s("created_by", false),
                t("created", false),
                f("created_seq", UInt64, false),
                s("decided_by", true),
                t("decided", true),
                s("decision_note", true),
            ],
            ViewKind::Incidents => vec![
                s("id", false),
                s("kind", false),
                s("status", false),
                s("subject", false),
                s("node", true),
                s("signals", false),
                s("summary", false),
                s("opened_by", false),
                t("opened", false),
                f("opened_seq", UInt64, false),
                s("resolved_by", true),
                t("resolved", true),
                f("resolved_seq", UInt64, true),
                s("root_cause", true),
                s("resolution", true),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// The table's rows in `view`.
    pub(crate) fn batch(self, view: &ClusterView) -> Result<RecordBatch> {
        let cols = match self {
            ViewKind::Members => members(view),
            ViewKind::Nodes => nodes(view)?,
            ViewKind::Gpus => gpus(view),
            ViewKind::Workloads => workloads(view)?,
            ViewKind::Proposals => proposals(view)?,
            ViewKind::Incidents => incidents(view)?,
        };
        let rows = cols.first().map_or(0, |c| c.len());
        batch(self.schema(), cols, rows)
    }
}

fn members(view: &ClusterView) -> Vec<ArrayRef> {
    let m: Vec<_> = view.members.values().collect();
    vec![
        u64s(m.iter().map(|r| r.id)),
        strs(m.iter().map(|r| Some(r.addr.as_str()))),
        bools(m.iter().map(|r| r.voter)),
        u64s(m.iter().map(|r| r.added_seq)),
        strs(m.iter().map(|r| Some(r.added_by.as_str()))),
    ]
}

fn nodes(view: &ClusterView) -> Result<Vec<ArrayRef>> {
    let n: Vec<_> = view.nodes.values().collect();
    let labels = n.iter().map(|r| json(&r.capabilities.labels)).collect::<Result<Vec<_>>>()?;
    Ok(vec![
        strs(n.iter().map(|r| Some(r.name.as_str()))),
        bools(n.iter().map(|r| r.ready)),
        strs(n.iter().map(|r| r.not_ready_reason.as_deref())),
        bools(n.iter().map(|r| r.draining)),
        strs(n.iter().map(|r| r.drain_reason.as_deref())),
        u32s(n.iter().map(|r| r.capabilities.cpus)),
        u64s(n.iter().map(|r| r.capabilities.memory_mb)),
        u32s(n.iter().map(|r| r.capabilities.gpus.len() as u32)),
        u32s(n.iter().map(|r| r.allocated_gpus.len() as u32)),
        strs(n.iter().map(|r| r.capabilities.driver_version.as_deref())),
        strs(n.iter().map(|r| r.capabilities.cuda_version.as_deref())),
        strs(labels.iter().map(|s| Some(s.as_str()))),
        times(n.iter().map(|r| Some(r.registered_ms))),
        times(n.iter().map(|r| Some(r.last_heartbeat_ms))),
        u64s(n.iter().map(|r| r.changed_seq)),
    ])
}

fn gpus(view: &ClusterView) -> Vec<ArrayRef> {
    let g = view.gpus();
    let holder = |node: &str, uuid: &str| view.nodes.get(node)?.allocated_gpus.get(uuid).map(String::as_str);
    let sample = |i: usize| g[i].last_sample.as_ref();
    let idx = 0..g.len();
    vec![
        strs(g.iter().map(|r| Some(r.node.as_str()))),
        u32s(g.iter().map(|r| r.index)),
        strs(g.iter().map(|r| Some(r.uuid.as_str()))),
        strs(g.iter().map(|r| Some(r.model.as_str()))),
        u64s(g.iter().map(|r| r.memory_mb)),
        strs(g.iter().map(|r| holder(&r.node, &r.uuid))),
        times(g.iter().map(|r| r.last_sample_ms)),
        Arc::new(idx.clone().map(|i| sample(i).map(|s| s.utilization_pct)).collect::<Float64Array>()),
        Arc::new(idx.clone().map(|i| sample(i).map(|s| s.memory_used_mb)).collect::<UInt64Array>()),
        Arc::new(idx.clone().map(|i| sample(i).map(|s| s.temperature_c)).collect::<Float64Array>()),
        Arc::new(idx.map(|i| sample(i).map(|s| s.power_w)).collect::<Float64Array>()),
    ]
}

fn workloads(view: &ClusterView) -> Result<Vec<ArrayRef>> {
    let w: Vec<_> = view.workloads.values().collect();
    let gpu_uuids = w.iter().map(|r| json(&r.gpu_uuids)).collect::<Result<Vec<_>>>()?;
    let labels = w.iter().map(|r| json(&r.spec.labels)).collect::<Result<Vec<_>>>()?;
    Ok(vec![
        strs(w.iter().map(|r| Some(r.id.as_str()))),
        strs(w.iter().map(|r| Some(r.spec.name.as_str()))),
        strs(w.iter().map(|r| Some(r.spec.image.as_str()))),
        strs(w.iter().map(|r| Some(r.status.as_str()))),
        strs(w.iter().map(|r| r.node.as_deref())),
        u32s(w.iter().map(|r| r.spec.gpus)),
        strs(w.iter().map(|r| r.spec.gpu_model.as_deref())),
        u64s(w.iter().map(|r| r.spec.min_gpu_memory_mb)),
        strs(gpu_uuids.iter().map(|s| Some(s.as_str()))),
        Arc::new(w.iter().map(|r| r.spec.priority).collect::<Int32Array>()),
        strs(labels.iter().map(|s| Some(s.as_str()))),
        strs(w.iter().map(|r| Some(r.submitted_by.as_str()))),
        times(w.iter().map(|r| Some(r.submitted_ms))),
        u64s(w.iter().map(|r| r.submitted_seq)),
        times(w.iter().map(|r| r.started_ms)),
        times(w.iter().map(|r| r.finished_ms)),
        Arc::new(w.iter().map(|r| r.exit_code).collect::<Int32Array>()),
        bools(w.iter().map(|r| r.oom_killed)),
        bools(w.iter().map(|r| r.cancel_requested)),
        strs(w.iter().map(|r| r.cancel_reason.as_deref())),
        u32s(w.iter().map(|r| r.lost_count)),
        strs(w.iter().map(|r| r.placement.as_ref().map(|p| p.summary.as_str()))),
        strs(w.iter().map(|r| r.unschedulable.as_ref().map(|p| p.summary.as_str()))),
        u64s(w.iter().map(|r| r.changed_seq)),
    ])
}

fn proposals(view: &ClusterView) -> Result<Vec<ArrayRef>> {
    let p: Vec<_> = view.proposals.values().collect();
    let actions: Vec<String> = p.iter().map(|r| r.action.to_string()).collect();
    // The action's serde tag names its type without a match on the variants,
    // so new actions show up here unchanged.
    let types = p
        .iter()
        .map(|r| {
            let v = serde_json::to_value(&r.action).map_err(|e| Error::Encode(e.to_string()))?;
            Ok(v.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![
        strs(p.iter().map(|r| Some(r.id.as_str()))),
        strs(actions.iter().map(|s| Some(s.as_str()))),
        strs(types.iter().map(|s| Some(s.as_str()))),
        strs(p.iter().map(|r| Some(r.action.touches().1))),
        u64s(p.iter().map(|r| r.basis_seq)),
        strs(p.iter().map(|r| Some(r.reason.as_str()))),
        strs(p.iter().map(|r| Some(r.status.as_str()))),
        strs(p.iter().map(|r| Some(r.created_by.as_str()))),
        times(p.iter().map(|r| Some(r.created_ms))),
        u64s(p.iter().map(|r| r.created_seq)),
        strs(p.iter().map(|r| r.decided_by.as_deref())),
        times(p.iter().map(|r| r.decided_ms)),
        strs(p.iter().map(|r| r.decision_note.as_deref())),
    ])
}

fn incidents(view: &ClusterView) -> Result<Vec<ArrayRef>> {
    let i: Vec<_> = view.incidents.values().collect();
    let signals = i.iter().map(|r| json(&r.signals)).collect::<Result<Vec<_>>>()?;
    Ok(vec![
        strs(i.iter().map(|r| Some(r.id.as_str()))),
        strs(i.iter().map(|r| Some(r.kind.as_str()))),
        strs(i.iter().map(|r| Some(r.status.as_str()))),
        strs(i.iter().map(|r| Some(r.subject.as_str()))),
        strs(i.iter().map(|r| Some(r.node.as_str()).filter(|n| !n.is_empty()))),
        strs(signals.iter().map(|s| Some(s.as_str()))),
        strs(i.iter().map(|r| Some(r.summary.as_str()))),
        strs(i.iter().map(|r| Some(r.opened_by.as_str()))),
        times(i.iter().map(|r| Some(r.opened_ms))),
        u64s(i.iter().map(|r| r.opened_seq)),
        strs(i.iter().map(|r| r.resolved_by.as_deref())),
        times(i.iter().map(|r| r.resolved_ms)),
        Arc::new(i.iter().map(|r| r.resolved_seq).collect::<UInt64Array>()),
        strs(i.iter().map(|r| r.root_cause.as_deref())),
        strs(i.iter().map(|r| r.resolution.as_deref())),
    ])
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Encode(e.to_string()))
}

fn strs<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn u64s(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(v))
}

fn u32s(v: impl Iterator<Item = u32>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(v))
}

fn bools(v: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(v.map(Some).collect::<BooleanArray>())
}

fn times(v: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.collect::<TimestampMillisecondArray>().with_timezone("UTC"))
}
