//! The readable difference between two cluster views: which members, nodes,
//! workloads, proposals and incidents appeared, disappeared or changed, and for a
//! changed one, each field that changed with its old and new value.

use std::collections::BTreeMap;

use claw_projections::ClusterView;
use serde::Serialize;
use serde_json::Value;

/// One object's change between two views.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `member`, `node`, `workload`, `proposal` or `incident`.
    pub kind: &'static str,
    pub id: String,
    /// `added`, `removed` or `changed`.
    pub what: &'static str,
    /// For `changed`: each differing field (dotted path) with old and new value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub old: Value,
    pub new: Value,
}

/// Bookkeeping fields that change with every event and say nothing about
/// the object itself.
const IGNORED_FIELDS: &[&str] = &["changed_seq"];

/// Every object that differs between `before` and `after`, members first,
/// then nodes, workloads, proposals and incidents, each in id order.
pub fn diff(before: &ClusterView, after: &ClusterView) -> Vec<Change> {
    let mut out = Vec::new();
    diff_map("member", &before.members, &after.members, &mut out);
    diff_map("node", &before.nodes, &after.nodes, &mut out);
    diff_map("workload", &before.workloads, &after.workloads, &mut out);
    diff_map("proposal", &before.proposals, &after.proposals, &mut out);
    diff_map("incident", &before.incidents, &after.incidents, &mut out);
    out
}

fn diff_map<K, V>(kind: &'static str, before: &BTreeMap<K, V>, after: &BTreeMap<K, V>, out: &mut Vec<Change>)
where
    K: Ord + ToString,
    V: PartialEq + Serialize,
{
    let mut ids: Vec<&K> = before.keys().chain(after.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let change = match (before.get(id), after.get(id)) {
            (None, Some(_)) => Change { kind, id: id.to_string(), what: "added", fields: Vec::new() },
            (Some(_), None) => Change { kind, id: id.to_string(), what: "removed", fields: Vec::new() },
            // Rows compare cheaply; only the ones that differ are rendered.
            (Some(a), Some(b)) if a != b => {
                let mut fields = Vec::new();
                diff_values("", &to_value(a), &to_value(b), &mut fields);
                fields.retain(|f| !IGNORED_FIELDS.contains(&f.path.as_str()));
                if fields.is_empty() {
                    continue;
                }
                Change { kind, id: id.to_string(), what: "changed", fields }
            }
            _ => continue,
        };
        out.push(change);
    }
}

fn to_value<V: Serialize>(v: &V) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Descends into objects; arrays and scalars are compared whole, so a
/// changed list of GPUs reads as one old → new line.
fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_values(&sub, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ => out.push(FieldChange { path: path.to_string(), old: a.clone(), new: b.clone() }),
    }
}

/// One line per change, fields indented under it:
/// `~ node gpu-a` / `    ready: true → false`.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let mark = match c.what {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        out.push_str(&format!("{mark} {} {}\n", c.kind, c.id));
        for f in &c.fields {
            out.push_str(&format!("    {}: {} → {}\n", f.path, show(&f.old), show(&f.new)));
        }
    }
    out
}

/// A value on one line, cut when long.
fn show(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    crate::output::truncate(&text, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use claw_commands::{Actor, Event, EventRecord, NodeCapabilities, GENESIS_HASH};

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord::seal(
            seq,
            seq,
            1_000 * seq as i64,
            Actor::user("ada"),
            String::new(),
            String::new(),
            event,
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn names_added_changed_and_untouched_objects() {
        let mut v0 = ClusterView::default();
        v0.apply(&rec(1, Event::NodeRegistered { node: "gpu-a".into(), capabilities: NodeCapabilities::default() }));
        let mut v1 = v0.clone();
        v1.apply(&rec(2, Event::NodeDrainRequested { node: "gpu-a".into(), reason: "maintenance".into() }));
        v1.apply(&rec(3, Event::NodeRegistered { node: "gpu-b".into(), capabilities: NodeCapabilities::default() }));

        let changes = diff(&v0, &v1);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!((changes[0].kind, changes[0].id.as_str(), changes[0].what), ("node", "gpu-a", "changed"));
        let paths: Vec<&str> = changes[0].fields.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"draining") && paths.contains(&"drain_reason"), "{paths:?}");
        assert!(!paths.contains(&"changed_seq"));
        assert_eq!((changes[1].id.as_str(), changes[1].what), ("gpu-b", "added"));

        let text = render(&changes);
        assert!(text.contains("~ node gpu-a\n    drain_reason: - → \"maintenance\"\n"), "{text}");
        assert!(text.contains("    draining: false → true\n"), "{text}");
        assert!(text.contains("+ node gpu-b\n"), "{text}");
        assert!(diff(&v1, &v1).is_empty());
        assert_eq!(diff(&v1, &v0)[1].what, "removed");
    }
}
