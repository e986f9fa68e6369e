//! Incident memory, write side: detectors that turn observations into
//! `IncidentOpened` events, and the signal matching that recalls how a
//! similar incident was resolved before.
//!
//! Detectors run inside [`crate::decide`], after the observation they look at
//! has been validated, so they are pure and every member opens the same
//! incidents with the same ids for the same log.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{derive_id, CommandEnvelope, DecisionState, Event, GpuSample, WorkloadDecision};

/// What kinds of trouble the detectors recognise.
pub const INCIDENT_KINDS: &[&str] = &["gpu_xid", "gpu_ecc", "thermal_throttling", "crash_loop", "node_lost"];

/// A workload name that fails this many times within [`CRASH_LOOP_WINDOW_MS`]
/// is crash-looping.
pub const CRASH_LOOP_FAILURES: usize = 3;
pub const CRASH_LOOP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// NVML throttle reasons that mean the GPU is too hot.
pub const THERMAL_THROTTLE_REASONS: &[&str] = &["hw_thermal_slowdown", "sw_thermal_slowdown"];

/// What the rules remember about an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDecision {
    pub kind: String,
    pub subject: String,
    pub open: bool,
}

/// The key under which at most one incident of a kind is open per subject.
pub fn open_key(kind: &str, subject: &str) -> String {
    format!("{kind}|{subject}")
}

/// How alike two incidents' signals are: the Jaccard index of the two sets
/// (1.0 for the same signals, 0.0 for none in common).
pub fn signal_similarity(a: &[String], b: &[String]) -> f64 {
    let a: BTreeSet<&str> = a.iter().map(String::as_str).collect();
    let b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// A detector's finding before it gets its id.
struct Finding {
    kind: &'static str,
    subject: String,
    node: String,
    signals: Vec<String>,
    summary: String,
}

impl Finding {
    fn into_event(self, state: &DecisionState, env: &CommandEnvelope, taken: &mut BTreeSet<String>) -> Option<Event> {
        let key = open_key(self.kind, &self.subject);
        if state.open_incidents.contains_key(&key) || !taken.insert(key.clone()) {
            return None;
        }
        // Derived from the command id, so a retried command opens nothing new
        // (the retry is answered from the dedup table) and replay agrees.
        let mut incident_id = derive_id("inc", &format!("{}|{key}", env.command_id));
        let mut n = 1;
        while state.incidents.contains_key(&incident_id) {
            n += 1;
            incident_id = derive_id("inc", &format!("{}|{key}|{n}", env.command_id));
        }
        let mut signals = self.signals;
        signals.sort();
        signals.dedup();
        Some(Event::IncidentOpened {
            incident_id,
            incident_kind: self.kind.to_string(),
            subject: self.subject,
            node: self.node,
            signals,
            summary: self.summary,
        })
    }
}

fn model_signal(state: &DecisionState, node: &str, gpu_uuid: &str) -> Option<String> {
    let n = state.nodes.get(node)?;
    let g = n.capabilities.gpus.iter().find(|g| g.uuid == gpu_uuid)?;
    Some(format!("gpu_model:{}", g.model))
}

/// Incidents a GPU metrics report opens: XID errors, new uncorrected ECC
/// errors, thermal throttling.
pub(crate) fn detect_gpu(
    state: &DecisionState,
    env: &CommandEnvelope,
    node: &str,
    samples: &[GpuSample],
) -> Vec<Event> {
    let mut findings = Vec::new();
    for s in samples {
        let subject = format!("gpu:{}", s.gpu_uuid);
        let model = model_signal(state, node, &s.gpu_uuid);
        if !s.xid_errors.is_empty() {
            let mut codes: Vec<u64> = s.xid_errors.clone();
            codes.sort_unstable();
            codes.dedup();
            let mut signals: Vec<String> = codes.iter().map(|c| format!("xid:{c}")).collect();
            signals.extend(model.clone());
            let list = codes.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            findings.push(Finding {
                kind: "gpu_xid",
                subject: subject.clone(),
                node: node.to_string(),
                signals,
                summary: format!("GPU {} on node {node} reported XID {list}", s.gpu_uuid),
            });
        }
        let seen = state.gpu_ecc_seen.get(&s.gpu_uuid).copied().unwrap_or(0);
        if s.ecc_uncorrected > seen {
            let mut signals = vec!["ecc_uncorrected".to_string()];
            signals.extend(model.clone());
            findings.push(Finding {
                kind: "gpu_ecc",
                subject: subject.clone(),
                node: node.to_string(),
                signals,
                summary: format!(
                    "GPU {} on node {node}: {} new uncorrected ECC error(s) ({} in all)",
                    s.gpu_uuid,
                    s.ecc_uncorrected - seen,
                    s.ecc_uncorrected
                ),
            });
        }
        let thermal: Vec<&String> =
            s.throttle_reasons.iter().filter(|r| THERMAL_THROTTLE_REASONS.contains(&r.as_str())).collect();
        if !thermal.is_empty() {
            let mut signals = vec!["thermal_throttle".to_string()];
            signals.extend(thermal.iter().map(|r| format!("throttle:{r}")));
            signals.extend(model);
            findings.push(Finding {
                kind: "thermal_throttling",
                subject,
                node: node.to_string(),
                signals,
                summary: format!(
                    "GPU {} on node {node} is throttled ({}) at {:.0} °C",
                    s.gpu_uuid,
                    thermal.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
                    s.temperature_c
                ),
            });
        }
    }
    into_events(state, env, findings)
}

/// A failed exit that makes its workload name crash-loop opens an incident.
pub(crate) fn detect_exit(
    state: &DecisionState,
    env: &CommandEnvelope,
    w: &WorkloadDecision,
    node: &str,
    exit_code: i32,
    oom_killed: bool,
) -> Vec<Event> {
    if w.cancel_requested || (exit_code == 0 && !oom_killed) {
        return Vec::new();
    }
    let recent = state
        .recent_failures
        .get(&w.name)
        .map(|times| times.iter().filter(|t| env.time_ms - **t < CRASH_LOOP_WINDOW_MS).count())
        .unwrap_or(0);
    if recent + 1 < CRASH_LOOP_FAILURES {
        return Vec::new();
    }
    let mut signals =
        vec!["crash_loop".to_string(), format!("exit_code:{exit_code}"), format!("image:{}", w.spec.image)];
    if oom_killed {
        signals.push("oom_killed".into());
    }
    let finding = Finding {
        kind: "crash_loop",
        subject: format!("workload:{}", w.name),
        node: node.to_string(),
        signals,
        summary: format!(
            "workload {} failed {} times within {} minutes (last exit code {exit_code}{})",
            w.name,
            recent + 1,
            CRASH_LOOP_WINDOW_MS / 60_000,
            if oom_killed { ", OOM-killed" } else { "" }
        ),
    };
    into_events(state, env, vec![finding])
}

/// A node declared not ready is lost until it comes back.
pub(crate) fn detect_node_lost(state: &DecisionState, env: &CommandEnvelope, node: &str, reason: &str) -> Vec<Event> {
    let mut signals = vec!["node_lost".to_string()];
    if let Some(n) = state.nodes.get(node) {
        let models: BTreeSet<&str> = n.capabilities.gpus.iter().map(|g| g.model.as_str()).collect();
        signals.extend(models.into_iter().map(|m| format!("gpu_model:{m}")));
    }
    let finding = Finding {
        kind: "node_lost",
        subject: format!("node:{node}"),
        node: node.to_string(),
        signals,
        summary: format!("node {node} was lost: {reason}"),
    };
    into_events(state, env, vec![finding])
}

fn into_events(state: &DecisionState, env: &CommandEnvelope, findings: Vec<Finding>) -> Vec<Event> {
    let mut taken = BTreeSet::new();
    findings.into_iter().filter_map(|f| f.into_event(state, env, &mut taken)).collect()
}

/// Keeps only the failure times inside the crash-loop window ending at `now`.
pub(crate) fn remember_failure(failures: &mut BTreeMap<String, Vec<i64>>, name: &str, now: i64) {
    let times = failures.entry(name.to_string()).or_default();
    times.retain(|t| now - *t < CRASH_LOOP_WINDOW_MS);
    times.push(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn similarity_is_the_share_of_signals_in_common() {
        assert_eq!(signal_similarity(&s(&["a", "b"]), &s(&["b", "a"])), 1.0);
        assert_eq!(signal_similarity(&s(&["a", "b"]), &s(&["b", "c"])), 1.0 / 3.0);
        assert_eq!(signal_similarity(&s(&["a"]), &s(&["c"])), 0.0);
        assert_eq!(signal_similarity(&[], &[]), 0.0);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut f = BTreeMap::new();
        remember_failure(&mut f, "job", 0);
        remember_failure(&mut f, "job", CRASH_LOOP_WINDOW_MS - 1);
        remember_failure(&mut f, "job", CRASH_LOOP_WINDOW_MS + 5);
        assert_eq!(f["job"], vec![CRASH_LOOP_WINDOW_MS - 1, CRASH_LOOP_WINDOW_MS + 5]);
    }
}
