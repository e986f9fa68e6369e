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

    /// The workload row fields that no column in `projection` reads, so a
    /// past view built for it may leave them out (see
    /// `EventStore::view_at_summaries_without`); none for other tables or
    /// when every column is read.
    pub(crate) fn unread_row_fields(self, projection: Option<&[usize]>) -> Vec<&'static str> {
        let (ViewKind::Workloads, Some(projection)) = (self, projection) else { return Vec::new() };
        let schema = self.schema();
        let read: Vec<&str> =
            projection.iter().filter_map(|&i| schema.fields().get(i)).map(|f| workload_row_field(f.name())).collect();
        SKIPPABLE_WORKLOAD_FIELDS.iter().copied().filter(|f| !read.contains(f)).collect()
    }

    /// The table's rows in `view`, every column.
    #[cfg(test)]
    pub(crate) fn batch(self, view: &ClusterView) -> Result<RecordBatch> {
        self.batch_of(view, None)
    }

    /// The table's rows in `view`, only the columns `projection` names (by
    /// index into [`ViewKind::schema`], in its order), or all of them: a
    /// query that reads two columns of 50,000 workloads builds two arrays,
    /// and `count(*)` builds none.
    pub(crate) fn batch_of(self, view: &ClusterView, projection: Option<&[usize]>) -> Result<RecordBatch> {
        let schema = self.schema();
        let mut c = Columns { want: projection, arrays: vec![None; schema.fields().len()], next: 0 };
        let rows = match self {
            ViewKind::Members => members(view, &mut c),
            ViewKind::Nodes => nodes(view, &mut c)?,
            ViewKind::Gpus => gpus(view, &mut c),
            ViewKind::Workloads => workloads(view, &mut c)?,
            ViewKind::Proposals => proposals(view, &mut c)?,
            ViewKind::Incidents => incidents(view, &mut c)?,
        };
        let (schema, arrays) = match projection {
            None => (schema, c.arrays.into_iter().flatten().collect()),
            Some(p) => {
                let arrays = p
                    .iter()
                    .map(|&i| {
                        c.arrays.get_mut(i).and_then(Option::take).ok_or_else(|| {
                            Error::Encode(format!("{}: no column {i} (the table has {})", self.table(), c.next))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                (Arc::new(schema.project(p)?), arrays)
            }
        };
        batch(schema, arrays, rows)
    }
}

/// The workload row fields that are optional or default when absent and
/// worth not decoding (collections and text).
const SKIPPABLE_WORKLOAD_FIELDS: [&str; 6] =
    ["spec", "node", "gpu_uuids", "cancel_reason", "placement", "unschedulable"];

/// The row field a `workloads` column is built from (its own name for
/// columns built from a field of that name or from scalars).
fn workload_row_field(column: &str) -> &str {
    match column {
        "name" | "image" | "gpus" | "gpu_model" | "min_gpu_memory_mb" | "priority" | "labels" => "spec",
        other => other,
    }
}

/// The columns of one table being built: each is computed only when the
/// projection asks for it, in schema order.
struct Columns<'p> {
    want: Option<&'p [usize]>,
    arrays: Vec<Option<ArrayRef>>,
    next: usize,
}

impl Columns<'_> {
    fn add(&mut self, make: impl FnOnce() -> ArrayRef) {
        let _ = self.try_add(|| Ok(make()));
    }

    fn try_add(&mut self, make: impl FnOnce() -> Result<ArrayRef>) -> Result<()> {
        let i = self.next;
        self.next += 1;
        if self.want.is_none_or(|p| p.contains(&i)) {
            if let Some(slot) = self.arrays.get_mut(i) {
                *slot = Some(make()?);
            }
        }
        Ok(())
    }
}

fn members(view: &ClusterView, c: &mut Columns) -> usize {
    let m: Vec<_> = view.members.values().collect();
    c.add(|| u64s(m.iter().map(|r| r.id)));
    c.add(|| strs(m.iter().map(|r| Some(r.addr.as_str()))));
    c.add(|| bools(m.iter().map(|r| r.voter)));
    c.add(|| u64s(m.iter().map(|r| r.added_seq)));
    c.add(|| strs(m.iter().map(|r| Some(r.added_by.as_str()))));
    m.len()
}

fn nodes(view: &ClusterView, c: &mut Columns) -> Result<usize> {
    let n: Vec<_> = view.nodes.values().collect();
    c.add(|| strs(n.iter().map(|r| Some(r.name.as_str()))));
    c.add(|| bools(n.iter().map(|r| r.ready)));
    c.add(|| strs(n.iter().map(|r| r.not_ready_reason.as_deref())));
    c.add(|| bools(n.iter().map(|r| r.draining)));
    c.add(|| strs(n.iter().map(|r| r.drain_reason.as_deref())));
    c.add(|| u32s(n.iter().map(|r| r.capabilities.cpus)));
    c.add(|| u64s(n.iter().map(|r| r.capabilities.memory_mb)));
    c.add(|| u32s(n.iter().map(|r| r.capabilities.gpus.len() as u32)));
    c.add(|| u32s(n.iter().map(|r| r.allocated_gpus.len() as u32)));
    c.add(|| strs(n.iter().map(|r| r.capabilities.driver_version.as_deref())));
    c.add(|| strs(n.iter().map(|r| r.capabilities.cuda_version.as_deref())));
    c.try_add(|| jsons(n.iter().map(|r| &r.capabilities.labels)))?;
    c.add(|| times(n.iter().map(|r| Some(r.registered_ms))));
    c.add(|| times(n.iter().map(|r| Some(r.last_heartbeat_ms))));
    c.add(|| u64s(n.iter().map(|r| r.changed_seq)));
    Ok(n.len())
}

fn gpus(view: &ClusterView, c: &mut Columns) -> usize {
    let g = view.gpus();
    let holder = |node: &str, uuid: &str| view.nodes.get(node)?.allocated_gpus.get(uuid).map(String::as_str);
    let sample = |i: usize| g[i].last_sample.as_ref();
    let idx = 0..g.len();
    c.add(|| strs(g.iter().map(|r| Some(r.node.as_str()))));
    c.add(|| u32s(g.iter().map(|r| r.index)));
    c.add(|| strs(g.iter().map(|r| Some(r.uuid.as_str()))));
    c.add(|| strs(g.iter().map(|r| Some(r.model.as_str()))));
    c.add(|| u64s(g.iter().map(|r| r.memory_mb)));
    c.add(|| strs(g.iter().map(|r| holder(&r.node, &r.uuid))));
    c.add(|| times(g.iter().map(|r| r.last_sample_ms)));
    c.add(|| Arc::new(idx.clone().map(|i| sample(i).map(|s| s.utilization_pct)).collect::<Float64Array>()));
    c.add(|| Arc::new(idx.clone().map(|i| sample(i).map(|s| s.memory_used_mb)).collect::<UInt64Array>()));
    c.add(|| Arc::new(idx.clone().map(|i| sample(i).map(|s| s.temperature_c)).collect::<Float64Array>()));
    c.add(|| Arc::new(idx.clone().map(|i| sample(i).map(|s| s.power_w)).collect::<Float64Array>()));
    g.len()
}

fn workloads(view: &ClusterView, c: &mut Columns) -> Result<usize> {
    let w: Vec<_> = view.workloads.values().collect();
    c.add(|| strs(w.iter().map(|r| Some(r.id.as_str()))));
    c.add(|| strs(w.iter().map(|r| Some(r.spec.name.as_str()))));
    c.add(|| strs(w.iter().map(|r| Some(r.spec.image.as_str()))));
    c.add(|| strs(w.iter().map(|r| Some(r.status.as_str()))));
    c.add(|| strs(w.iter().map(|r| r.node.as_deref())));
    c.add(|| u32s(w.iter().map(|r| r.spec.gpus)));
    c.add(|| strs(w.iter().map(|r| r.spec.gpu_model.as_deref())));
    c.add(|| u64s(w.iter().map(|r| r.spec.min_gpu_memory_mb)));
    c.try_add(|| jsons(w.iter().map(|r| &r.gpu_uuids)))?;
    c.add(|| Arc::new(w.iter().map(|r| r.spec.priority).collect::<Int32Array>()));
    c.try_add(|| jsons(w.iter().map(|r| &r.spec.labels)))?;
    c.add(|| strs(w.iter().map(|r| Some(r.submitted_by.as_str()))));
    c.add(|| times(w.iter().map(|r| Some(r.submitted_ms))));
    c.add(|| u64s(w.iter().map(|r| r.submitted_seq)));
    c.add(|| times(w.iter().map(|r| r.started_ms)));
    c.add(|| times(w.iter().map(|r| r.finished_ms)));
    c.add(|| Arc::new(w.iter().map(|r| r.exit_code).collect::<Int32Array>()));
    c.add(|| bools(w.iter().map(|r| r.oom_killed)));
    c.add(|| bools(w.iter().map(|r| r.cancel_requested)));
    c.add(|| strs(w.iter().map(|r| r.cancel_reason.as_deref())));
    c.add(|| u32s(w.iter().map(|r| r.lost_count)));
    c.add(|| strs(w.iter().map(|r| r.placement.as_ref().map(|p| p.summary.as_str()))));
    c.add(|| strs(w.iter().map(|r| r.unschedulable.as_ref().map(|p| p.summary.as_str()))));
    c.add(|| u64s(w.iter().map(|r| r.changed_seq)));
    Ok(w.len())
}

fn proposals(view: &ClusterView, c: &mut Columns) -> Result<usize> {
    let p: Vec<_> = view.proposals.values().collect();
    c.add(|| strs(p.iter().map(|r| Some(r.id.as_str()))));
    c.add(|| {
        let actions: Vec<String> = p.iter().map(|r| r.action.to_string()).collect();
        strs(actions.iter().map(|s| Some(s.as_str())))
    });
    c.try_add(|| {
        // The action's serde tag names its type without a match on the
        // variants, so new actions show up here unchanged.
        let types = p
            .iter()
            .map(|r| {
                let v = serde_json::to_value(&r.action).map_err(|e| Error::Encode(e.to_string()))?;
                Ok(v.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(strs(types.iter().map(|s| Some(s.as_str()))))
    })?;
    c.add(|| strs(p.iter().map(|r| Some(r.action.touches().1))));
    c.add(|| u64s(p.iter().map(|r| r.basis_seq)));
    c.add(|| strs(p.iter().map(|r| Some(r.reason.as_str()))));
    c.add(|| strs(p.iter().map(|r| Some(r.status.as_str()))));
    c.add(|| strs(p.iter().map(|r| Some(r.created_by.as_str()))));
    c.add(|| times(p.iter().map(|r| Some(r.created_ms))));
    c.add(|| u64s(p.iter().map(|r| r.created_seq)));
    c.add(|| strs(p.iter().map(|r| r.decided_by.as_deref())));
    c.add(|| times(p.iter().map(|r| r.decided_ms)));
    c.add(|| strs(p.iter().map(|r| r.decision_note.as_deref())));
    Ok(p.len())
}

fn incidents(view: &ClusterView, c: &mut Columns) -> Result<usize> {
    let i: Vec<_> = view.incidents.values().collect();
    c.add(|| strs(i.iter().map(|r| Some(r.id.as_str()))));
    c.add(|| strs(i.iter().map(|r| Some(r.kind.as_str()))));
    c.add(|| strs(i.iter().map(|r| Some(r.status.as_str()))));
    c.add(|| strs(i.iter().map(|r| Some(r.subject.as_str()))));
    c.add(|| strs(i.iter().map(|r| Some(r.node.as_str()).filter(|n| !n.is_empty()))));
    c.try_add(|| jsons(i.iter().map(|r| &r.signals)))?;
    c.add(|| strs(i.iter().map(|r| Some(r.summary.as_str()))));
    c.add(|| strs(i.iter().map(|r| Some(r.opened_by.as_str()))));
    c.add(|| times(i.iter().map(|r| Some(r.opened_ms))));
    c.add(|| u64s(i.iter().map(|r| r.opened_seq)));
    c.add(|| strs(i.iter().map(|r| r.resolved_by.as_deref())));
    c.add(|| times(i.iter().map(|r| r.resolved_ms)));
    c.add(|| Arc::new(i.iter().map(|r| r.resolved_seq).collect::<UInt64Array>()));
    c.add(|| strs(i.iter().map(|r| r.root_cause.as_deref())));
    c.add(|| strs(i.iter().map(|r| r.resolution.as_deref())));
    Ok(i.len())
}

/// Each value as JSON text, one string per row.
fn jsons<'a, T: serde::Serialize + 'a>(v: impl Iterator<Item = &'a T>) -> Result<ArrayRef> {
    let texts = v.map(json).collect::<Result<Vec<_>>>()?;
    Ok(strs(texts.iter().map(|s| Some(s.as_str()))))
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
