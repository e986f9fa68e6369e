//! The scheduler loop of `clawd`: while this member leads, it places
//! pending workloads (pure planning by `claw_commands::plan`, proposed as
//! `PlaceWorkload`, which `decide` checks again at apply time) and marks
//! nodes that stopped heartbeating as not ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use claw_commands::{evolve, pending_in_order, plan, Actor, ActorKind, Command, DecisionState, Event, Strategy};
use claw_log::LogNode;
use futures::StreamExt;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::api::{now_ms, ClawApi};

/// Most commands one pass proposes; the next pass follows at once.
const MAX_PROPOSALS_PER_PASS: usize = 2048;
/// Proposals in flight at a time (Raft batches them into few fsyncs).
const CONCURRENT_PROPOSALS: usize = 256;

/// The `[scheduler]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerOptions {
    /// `"binpack"` (fill nodes) or `"spread"` (balance nodes).
    pub strategy: Strategy,
    /// A Ready node whose last heartbeat is older than this is marked
    /// NotReady and its workloads are requeued.
    pub node_timeout_ms: u64,
    /// The scheduler also runs this often when nothing changes (node timeouts).
    pub interval_ms: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { strategy: Strategy::BinPack, node_timeout_ms: 30_000, interval_ms: 200 }
    }
}

impl SchedulerOptions {
    pub fn build(self, node: LogNode, api: Arc<ClawApi>) -> Scheduler {
        Scheduler { opts: self, node, api }
    }
}

/// The scheduler service; `run` until `shutdown` turns true.
pub struct Scheduler {
    opts: SchedulerOptions,
    node: LogNode,
    api: Arc<ClawApi>,
}

impl Scheduler {
    fn is_leader(&self) -> bool {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node.node_id())
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.node.store.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(self.opts.interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_since: Option<Instant> = None;
        // The seq the last pass planned against, when it proposed nothing:
        // the same state would plan the same way again.
        let mut idle_at: Option<u64> = None;
        loop {
            // Node silence is judged on the tick; a store change (every apply
            // batch, heartbeats included) only matters for pending workloads.
            let mut ticked = false;
            tokio::select! {
                _ = shutdown.changed() => {}
                r = changes.changed() => if r.is_err() { return },
                _ = tick.tick() => ticked = true,
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.is_leader() {
                leader_since = None;
                idle_at = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            // A new leader (or a cluster back from an outage) gives nodes one
            // full timeout to heartbeat before judging them.
            if ticked && since.elapsed() >= Duration::from_millis(self.opts.node_timeout_ms) && self.any_silent_node() {
                let state = self.node.store.decision();
                if self.check_nodes(&state).await > 0 {
                    idle_at = None;
                    continue;
                }
            }
            // Look before cloning: with nothing pending, or nothing changed
            // since a pass that proposed nothing, there is no pass to make.
            let Some(state) = self
                .node
                .store
                .with_decision(|d| (idle_at != Some(d.last_seq) && d.has_pending()).then(|| pass_state(d)))
            else {
                continue;
            };
            let seq = state.last_seq;
            let proposed = self.schedule_pass(state).await;
            idle_at = if proposed == 0 { Some(seq) } else { None };
        }
    }

    /// Whether a Ready node has been silent past the timeout (read in place).
    fn any_silent_node(&self) -> bool {
        let now = now_ms();
        let timeout = self.opts.node_timeout_ms as i64;
        self.node.store.with_decision(|d| d.nodes.values().any(|n| n.ready && now - n.last_heartbeat_ms > timeout))
    }

    /// Proposes `MarkNodeNotReady` for Ready nodes that have been silent
    /// for longer than the node timeout; returns how many it proposed.
    async fn check_nodes(&self, state: &DecisionState) -> usize {
        let now = now_ms();
        let timeout = self.opts.node_timeout_ms as i64;
        let mut proposed = 0;
        for (name, n) in &state.nodes {
            let silent = now - n.last_heartbeat_ms;
            if !n.ready || silent <= timeout {
                continue;
            }
            let cmd = Command::MarkNodeNotReady {
                node: name.clone(),
                reason: format!("no heartbeat for {}s (node timeout {}s)", silent / 1000, timeout / 1000),
                requeue: true,
            };
            // Deterministic id: a second leader judging the same silence dedups.
            let id = format!("node-not-ready-{name}-{}", n.last_heartbeat_ms);
            match self.api.propose_system(Actor::system(), cmd, id).await {
                Ok(r) => {
                    proposed += 1;
                    tracing::warn!(node = %name, silent_ms = silent, rejected = r.rejection.is_some(), "node marked not ready");
                }
                Err(e) => tracing::debug!(node = %name, error = %e, "marking node not ready failed"),
            }
        }
        proposed
    }

    /// Plans every pending workload against one snapshot of the state,
    /// assuming its own placements as it goes, and proposes the result.
    async fn schedule_pass(&self, state: DecisionState) -> usize {
        let strategy = self.opts.strategy;
        let commands = match tokio::task::spawn_blocking(move || plan_pass(state, strategy)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "scheduler planning panicked");
                return 0;
            }
        };
        let n = commands.len();
        if n == 0 {
            return 0;
        }
        let actor = Actor { kind: ActorKind::Scheduler, name: strategy.as_str().to_string() };
        let results: Vec<_> = futures::stream::iter(commands)
            .map(|cmd| {
                let api = self.api.clone();
                let actor = actor.clone();
                async move { api.propose_system(actor, cmd, format!("sched-{}", uuid::Uuid::now_v7())).await }
            })
            .buffer_unordered(CONCURRENT_PROPOSALS)
            .collect()
            .await;
        let rejected = results.iter().filter(|r| matches!(r, Ok(a) if a.rejection.is_some())).count();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if rejected + failed > 0 {
            tracing::debug!(proposed = n, rejected, failed, "scheduler pass");
        }
        n
    }
}

/// What one pass plans against: the nodes, the GPU allocations and the
/// pending workloads, not every workload ever submitted. Planning reads
/// nothing else, so a pass costs what is pending, however long the history.
pub fn pass_state(d: &DecisionState) -> DecisionState {
    let mut state = DecisionState::default();
    state.last_seq = d.last_seq;
    state.nodes = d.nodes.clone();
    state.gpu_allocations = d.gpu_allocations.clone();
    for id in d.pending_ids() {
        if let Some(w) = d.workloads.get(id) {
            state.workloads.insert(id.to_string(), w.clone());
        }
    }
    state.reindex();
    state
}

/// One scheduler pass, pure: the commands to propose for `state` (the
/// whole decision state or its [`pass_state`]: both plan the same).
pub fn plan_pass(mut state: DecisionState, strategy: Strategy) -> Vec<Command> {
    let mut out = Vec::new();
    for id in pending_in_order(&state) {
        if out.len() >= MAX_PROPOSALS_PER_PASS {
            break;
        }
        let p = plan(&state, &id, strategy);
        match p.placement.chosen.clone() {
            Some(node) => {
                // Assume it on the local copy so later plans of this pass see it.
                let placed = Event::WorkloadPlaced {
                    workload_id: id.clone(),
                    node: node.clone(),
                    gpu_uuids: p.gpu_uuids.clone(),
                    placement: Default::default(),
                };
                let seq = state.last_seq;
                evolve(&mut state, seq, 0, &placed);
                out.push(Command::PlaceWorkload {
                    workload_id: id,
                    node,
                    gpu_uuids: p.gpu_uuids,
                    placement: p.placement,
                });
            }
            None => {
                let known = state.workloads.get(&id).and_then(|w| w.unschedulable.as_deref());
                if known != Some(p.placement.summary.as_str()) {
                    out.push(Command::RecordUnschedulable { workload_id: id, placement: p.placement });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use claw_commands::{decide, CommandEnvelope, GpuInfo, NodeCapabilities, WorkloadSpec};

    use super::*;

    fn apply(s: &mut DecisionState, command: Command) {
        let env = CommandEnvelope {
            command_id: format!("c{}", s.last_seq),
            actor: Actor::system(),
            time_ms: 1,
            correlation_id: String::new(),
            command,
        };
        for e in decide(s, &env).unwrap() {
            let seq = s.last_seq + 1;
            evolve(s, seq, 1, &e);
        }
    }

    #[test]
    fn a_pass_does_not_assign_a_gpu_twice_and_reports_unschedulable_once() {
        let mut s = DecisionState::default();
        let gpus =
            (0..2).map(|i| GpuInfo { index: i, uuid: format!("g{i}"), model: "H100".into(), memory_mb: 1 }).collect();
        apply(
            &mut s,
            Command::RegisterNode { node: "n".into(), capabilities: NodeCapabilities { gpus, ..Default::default() } },
        );
        for i in 0..3 {
            let spec = WorkloadSpec { name: format!("w{i}"), image: "i".into(), gpus: 1, ..Default::default() };
            apply(&mut s, Command::SubmitWorkload { workload_id: format!("w{i}"), spec });
        }
        let cmds = plan_pass(s.clone(), Strategy::BinPack);
        assert_eq!(cmds.len(), 3);
        for c in cmds {
            apply(&mut s, c);
        }
        assert_eq!(s.gpu_allocations.len(), 2);
        assert!(s.workloads["w2"].unschedulable.is_some());
        assert!(plan_pass(s, Strategy::BinPack).is_empty(), "same reason: nothing new to record");
    }

    #[test]
    fn a_pass_over_the_pending_workloads_alone_plans_what_the_whole_state_plans() {
        let mut s = DecisionState::default();
        for n in ["a", "b"] {
            let gpus = (0..4)
                .map(|i| GpuInfo { index: i, uuid: format!("{n}{i}"), model: "H100".into(), memory_mb: 1 })
                .collect();
            apply(
                &mut s,
                Command::RegisterNode { node: n.into(), capabilities: NodeCapabilities { gpus, ..Default::default() } },
            );
        }
        let spec = |i: u32, gpus: u32, priority: i32| WorkloadSpec {
            name: format!("w{i}"),
            image: "i".into(),
            gpus,
            priority,
            ..Default::default()
        };
        // A history: placed ones that ended, placed ones that hold GPUs,
        // then a queue of mixed priorities, one that fits nowhere.
        for i in 0..40 {
            apply(&mut s, Command::SubmitWorkload { workload_id: format!("w{i}"), spec: spec(i, 1, 0) });
            for c in plan_pass(pass_state(&s), Strategy::BinPack) {
                apply(&mut s, c);
            }
            if i < 36 {
                let node = s.workloads[&format!("w{i}")].node.clone().expect("placed");
                apply(
                    &mut s,
                    Command::ReportWorkloadExited {
                        workload_id: format!("w{i}"),
                        node,
                        exit_code: 0,
                        oom_killed: false,
                    },
                );
            }
        }
        for (i, gpus, priority) in [(40, 2, 0), (41, 9, 5), (42, 1, -1), (43, 2, 3), (44, 1, 0)] {
            apply(&mut s, Command::SubmitWorkload { workload_id: format!("w{i}"), spec: spec(i, gpus, priority) });
        }
        let pass = pass_state(&s);
        assert_eq!(pass.workloads.len(), 5, "only the pending workloads are copied");
        assert_eq!(pending_in_order(&pass), ["w41", "w43", "w40", "w44", "w42"]);
        let planned = plan_pass(pass, Strategy::BinPack);
        assert_eq!(planned, plan_pass(s.clone(), Strategy::BinPack));
        let placed = planned.iter().filter(|c| matches!(c, Command::PlaceWorkload { .. })).count();
        assert_eq!((planned.len(), placed), (5, 2), "w43 and w40 fill node b, the rest wait: {planned:?}");
    }
}
