//! The placement logic: which node (and which of its GPUs) a pending
//! workload should go to, and why. Pure, like `decide`: the scheduler loop
//! in `clawd` calls it on a copy of the decision state and proposes the
//! result as a `PlaceWorkload` command, which `decide` checks again.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DecisionState, NodeDecision, NodeVerdict, Placement, WorkloadSpec, WorkloadStatus};

/// How fitting nodes are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Prefer the node that ends up most full, keeping whole nodes free for
    /// large jobs.
    #[default]
    BinPack,
    /// Prefer the node that ends up least full, spreading load and risk.
    Spread,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BinPack => "binpack",
            Strategy::Spread => "spread",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "binpack" => Ok(Strategy::BinPack),
            "spread" => Ok(Strategy::Spread),
            other => Err(format!("unknown scheduling strategy {other:?} (expected \"binpack\" or \"spread\")")),
        }
    }
}

/// A placement decision and, when a node was chosen, the GPUs to assign.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub placement: Placement,
    /// The chosen node's free eligible GPUs, lowest index first; empty when
    /// nothing was chosen or the workload needs no GPU.
    pub gpu_uuids: Vec<String>,
}

/// The outcome of the filters for one node, without any text yet (text is
/// only rendered for the verdicts a placement keeps).
enum Check {
    Fail(&'static str),
    Fit { used_after: usize, total: usize },
}

fn check(n: &NodeDecision, spec: &WorkloadSpec) -> Check {
    if !n.ready {
        return Check::Fail("not_ready");
    }
    if n.draining {
        return Check::Fail("draining");
    }
    if spec.node_selector.iter().any(|(k, v)| n.capabilities.labels.get(k) != Some(v)) {
        return Check::Fail("node_selector");
    }
    let total = n.capabilities.gpus.len();
    let need = spec.gpus as usize;
    if need == 0 {
        return Check::Fit { used_after: n.allocated.len(), total };
    }
    let unconstrained = spec.gpu_model.is_none() && spec.min_gpu_memory_mb == 0;
    if unconstrained {
        // Fast path for clusters with thousands of nodes: no per-GPU checks.
        let free = total.saturating_sub(n.allocated.len());
        return if free >= need {
            Check::Fit { used_after: n.allocated.len() + need, total }
        } else {
            Check::Fail("gpu_count")
        };
    }
    // One pass over the node's GPUs, without allocating: whether any GPU
    // has the model, whether any also has the memory, and how many of
    // those are free (the same count as `free_gpus().filter(eligible)`).
    let (mut any_model, mut any_eligible, mut free) = (false, false, 0usize);
    for g in &n.capabilities.gpus {
        if spec.gpu_model.as_ref().is_some_and(|m| &g.model != m) {
            continue;
        }
        any_model = true;
        if g.memory_mb < spec.min_gpu_memory_mb {
            continue;
        }
        any_eligible = true;
        if !n.allocated.contains_key(&g.uuid) {
            free += 1;
        }
    }
    if !any_model {
        return Check::Fail("gpu_model");
    }
    if !any_eligible {
        return Check::Fail("gpu_memory");
    }
    if free >= need {
        Check::Fit { used_after: n.allocated.len() + need, total }
    } else {
        Check::Fail("gpu_count")
    }
}

fn score(strategy: Strategy, used_after: usize, total: usize) -> f64 {
    let full = if total == 0 { 0.0 } else { used_after as f64 / total as f64 };
    match strategy {
        Strategy::BinPack => full,
        Strategy::Spread => 1.0 - full,
    }
}

fn models(n: &NodeDecision) -> String {
    if n.capabilities.gpus.is_empty() {
        return "no GPUs".to_string();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &n.capabilities.gpus {
        *counts.entry(g.model.as_str()).or_default() += 1;
    }
    counts.iter().map(|(m, c)| format!("{c}x{m}")).collect::<Vec<_>>().join(", ")
}

fn fail_detail(filter: &str, n: &NodeDecision, spec: &WorkloadSpec) -> String {
    match filter {
        "not_ready" => "node is not ready (no recent heartbeat)".to_string(),
        "draining" => "node is draining".to_string(),
        "node_selector" => {
            let missing: Vec<String> = spec
                .node_selector
                .iter()
                .filter(|(k, v)| n.capabilities.labels.get(*k) != Some(v))
                .map(|(k, v)| match n.capabilities.labels.get(k) {
                    Some(has) => format!("needs label {k}={v}, node has {k}={has}"),
                    None => format!("needs label {k}={v}, node has no {k} label"),
                })
                .collect();
            missing.join("; ")
        }
        "gpu_model" => {
            format!("needs {}, node has {}", spec.gpu_model.as_deref().unwrap_or("any"), models(n))
        }
        "gpu_memory" => {
            let best = n
                .capabilities
                .gpus
                .iter()
                .filter(|g| spec.gpu_model.as_ref().is_none_or(|m| &g.model == m))
                .map(|g| g.memory_mb)
                .max()
                .unwrap_or(0);
            format!("needs at least {} MB per GPU, the largest matching GPU has {best} MB", spec.min_gpu_memory_mb)
        }
        _ => {
            let eligible = |g: &&crate::GpuInfo| {
                spec.gpu_model.as_ref().is_none_or(|m| &g.model == m) && g.memory_mb >= spec.min_gpu_memory_mb
            };
            let total = n.capabilities.gpus.iter().filter(eligible).count();
            let free = n.free_gpus().filter(eligible).count();
            format!("needs {} GPUs, {free} of {total} eligible GPUs free", spec.gpus)
        }
    }
}

fn filter_counts(failed: &BTreeMap<&'static str, usize>) -> String {
    crate::placement::FILTERS
        .iter()
        .filter_map(|f| failed.get(f).map(|c| format!("{c} {f}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plans the placement of one pending workload against `state`: every node
/// is filtered (not_ready, draining, node_selector, gpu_model, gpu_memory,
/// gpu_count, in that order), the fitting ones are scored by `strategy`, and
/// the best (ties: node name) is chosen with its lowest-index free GPUs.
pub fn plan(state: &DecisionState, workload_id: &str, strategy: Strategy) -> Plan {
    let none = |summary: String| Plan {
        placement: Placement { strategy: strategy.as_str().to_string(), considered: vec![], chosen: None, summary },
        gpu_uuids: vec![],
    };
    let Some(w) = state.workloads.get(workload_id) else {
        return none(format!("workload \"{workload_id}\" does not exist"));
    };
    if w.status != WorkloadStatus::Pending {
        return none(format!("workload \"{workload_id}\" is {}, not Pending", w.status.as_str()));
    }
    if state.nodes.is_empty() {
        return none("no nodes are registered".to_string());
    }
    let spec = &w.spec;
    let mut fits: Vec<(f64, &String, &NodeDecision, usize, usize)> = Vec::new();
    let mut fails: Vec<(&'static str, &String, &NodeDecision)> = Vec::new();
    let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, n) in &state.nodes {
        match check(n, spec) {
            Check::Fit { used_after, total } => {
                fits.push((score(strategy, used_after, total), name, n, used_after, total))
            }
            Check::Fail(f) => {
                *failed.entry(f).or_default() += 1;
                if fails.len() < Placement::MAX_VERDICTS {
                    fails.push((f, name, n));
                }
            }
        }
    }
    let by_rank = |a: &(f64, &String, &NodeDecision, usize, usize), b: &(f64, &String, &NodeDecision, usize, usize)| {
        b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then_with(|| a.1.cmp(b.1))
    };
    let fit_count = fits.len();
    if fits.len() > Placement::MAX_VERDICTS {
        fits.select_nth_unstable_by(Placement::MAX_VERDICTS, by_rank);
        fits.truncate(Placement::MAX_VERDICTS);
    }
    fits.sort_by(by_rank);

    let mut considered = Vec::with_capacity((fits.len() + fails.len()).min(Placement::MAX_VERDICTS));
    for (s, name, _, used_after, total) in &fits {
        considered.push(NodeVerdict {
            node: (*name).clone(),
            failed_filter: None,
            detail: format!("fits: {used_after} of {total} GPUs in use after placement"),
            score: Some(*s),
        });
    }
    for (f, name, n) in &fails {
        if considered.len() >= Placement::MAX_VERDICTS {
            break;
        }
        considered.push(NodeVerdict {
            node: (*name).clone(),
            failed_filter: Some((*f).to_string()),
            detail: fail_detail(f, n, spec),
            score: None,
        });
    }
    let total_nodes = state.nodes.len();
    let filtered = filter_counts(&failed);
    let Some((best_score, best, best_node, _, _)) = fits.first() else {
        return Plan {
            placement: Placement {
                strategy: strategy.as_str().to_string(),
                considered,
                chosen: None,
                summary: format!("no node fits: 0 of {total_nodes} nodes pass the filters ({filtered})"),
            },
            gpu_uuids: vec![],
        };
    };
    let eligible = |g: &&crate::GpuInfo| {
        spec.gpu_model.as_ref().is_none_or(|m| &g.model == m) && g.memory_mb >= spec.min_gpu_memory_mb
    };
    let gpus: Vec<&crate::GpuInfo> = best_node.free_gpus().filter(eligible).take(spec.gpus as usize).collect();
    let indexes = gpus.iter().map(|g| g.index.to_string()).collect::<Vec<_>>().join(",");
    let mut summary = format!(
        "placed on {best} (GPUs [{indexes}], {} score {best_score:.3}); {fit_count} of {total_nodes} nodes fit",
        strategy.as_str()
    );
    if !filtered.is_empty() {
        summary.push_str(&format!(" ({filtered})"));
    }
    Plan {
        placement: Placement {
            strategy: strategy.as_str().to_string(),
            considered,
            chosen: Some((*best).clone()),
            summary,
        },
        gpu_uuids: gpus.iter().map(|g| g.uuid.clone()).collect(),
    }
}

/// The placement of one pending workload, with the reasons; see [`plan`].
pub fn schedule(state: &DecisionState, workload_id: &str, strategy: Strategy) -> Placement {
    plan(state, workload_id, strategy).placement
}

/// Pending workloads in the order the scheduler serves them: priority
/// (higher first), then submission order.
pub fn pending_in_order(state: &DecisionState) -> Vec<String> {
    state.pending_ids().map(str::to_string).collect()
}

#[cfg(test)]
mod tests;
