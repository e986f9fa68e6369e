use std::collections::BTreeMap;

use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig, TestCaseError};
use proptest::strategy::Strategy as _;

use super::*;
use crate::{decide, evolve, Actor, Command, CommandEnvelope, Event, GpuInfo, NodeCapabilities, Rejection};

fn env(id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope { command_id: id.into(), actor: Actor::user("t"), time_ms: 1, correlation_id: id.into(), command }
}

fn run(s: &mut DecisionState, command: Command) -> Result<Vec<Event>, Rejection> {
    let id = format!("c{}", s.last_seq);
    let events = decide(s, &env(&id, command))?;
    for e in &events {
        let seq = s.last_seq + 1;
        evolve(s, seq, 1, e);
    }
    Ok(events)
}

fn caps(node: &str, models: &[(&str, u64)], labels: &[(&str, &str)]) -> NodeCapabilities {
    NodeCapabilities {
        gpus: models
            .iter()
            .enumerate()
            .map(|(i, (m, mem))| GpuInfo {
                index: i as u32,
                uuid: format!("{node}-g{i}"),
                model: m.to_string(),
                memory_mb: *mem,
            })
            .collect(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn submit(s: &mut DecisionState, id: &str, spec: WorkloadSpec) {
    run(s, Command::SubmitWorkload { workload_id: id.into(), spec }).unwrap();
}

fn gpus(name: &str, n: u32) -> WorkloadSpec {
    WorkloadSpec { name: name.into(), image: "busybox".into(), gpus: n, ..Default::default() }
}

/// Plans and, when a node was chosen, applies the placement through `decide`.
fn place(s: &mut DecisionState, id: &str, strategy: Strategy) -> Plan {
    let p = plan(s, id, strategy);
    if let Some(node) = &p.placement.chosen {
        run(
            s,
            Command::PlaceWorkload {
                workload_id: id.into(),
                node: node.clone(),
                gpu_uuids: p.gpu_uuids.clone(),
                placement: p.placement.clone(),
            },
        )
        .unwrap();
    }
    p
}

fn two_nodes() -> DecisionState {
    let mut s = DecisionState::default();
    let h100 = [("H100", 80_000); 4];
    run(&mut s, Command::RegisterNode { node: "a".into(), capabilities: caps("a", &h100, &[("zone", "eu")]) }).unwrap();
    run(&mut s, Command::RegisterNode { node: "b".into(), capabilities: caps("b", &h100, &[("zone", "us")]) }).unwrap();
    s
}

#[test]
fn binpack_fills_one_node_and_spread_alternates() {
    let mut s = two_nodes();
    for i in 0..3 {
        submit(&mut s, &format!("w{i}"), gpus(&format!("w{i}"), 1));
    }
    let chosen: Vec<_> =
        (0..3).map(|i| place(&mut s, &format!("w{i}"), Strategy::BinPack).placement.chosen.unwrap()).collect();
    assert_eq!(chosen, ["a", "a", "a"]);
    assert_eq!(s.workloads["w1"].gpu_uuids, ["a-g1"], "lowest free index first");

    let mut s = two_nodes();
    for i in 0..3 {
        submit(&mut s, &format!("w{i}"), gpus(&format!("w{i}"), 1));
    }
    let chosen: Vec<_> =
        (0..3).map(|i| place(&mut s, &format!("w{i}"), Strategy::Spread).placement.chosen.unwrap()).collect();
    assert_eq!(chosen, ["a", "b", "a"]);
}

#[test]
fn every_filter_is_named() {
    let mut s = two_nodes();
    let mut big = gpus("big", 5);
    submit(&mut s, "big", big.clone());
    let p = schedule(&s, "big", Strategy::BinPack);
    assert_eq!(p.chosen, None);
    assert!(p.considered.iter().all(|v| v.failed_filter.as_deref() == Some("gpu_count")), "{p:?}");
    assert!(p.summary.contains("2 gpu_count"), "{}", p.summary);
    assert!(p.considered[0].detail.contains("needs 5 GPUs, 4 of 4"), "{}", p.considered[0].detail);

    big.name = "model".into();
    big.gpus = 1;
    big.gpu_model = Some("A100".into());
    submit(&mut s, "model", big.clone());
    let p = schedule(&s, "model", Strategy::BinPack);
    assert_eq!(p.considered[0].failed_filter.as_deref(), Some("gpu_model"));
    assert!(p.considered[0].detail.contains("4xH100"), "{}", p.considered[0].detail);

    big.name = "mem".into();
    big.gpu_model = None;
    big.min_gpu_memory_mb = 100_000;
    submit(&mut s, "mem", big.clone());
    assert_eq!(schedule(&s, "mem", Strategy::BinPack).considered[0].failed_filter.as_deref(), Some("gpu_memory"));

    let mut sel = gpus("sel", 1);
    sel.node_selector.insert("zone".into(), "us".into());
    submit(&mut s, "sel", sel);
    run(&mut s, Command::RequestNodeDrain { node: "b".into(), reason: String::new() }).unwrap();
    let p = schedule(&s, "sel", Strategy::BinPack);
    let filters: BTreeMap<_, _> =
        p.considered.iter().map(|v| (v.node.as_str(), v.failed_filter.as_deref().unwrap())).collect();
    assert_eq!(filters, BTreeMap::from([("a", "node_selector"), ("b", "draining")]));

    run(&mut s, Command::MarkNodeNotReady { node: "a".into(), reason: "silent".into(), requeue: true }).unwrap();
    let p = schedule(&s, "sel", Strategy::BinPack);
    assert_eq!(p.considered.iter().find(|v| v.node == "a").unwrap().failed_filter.as_deref(), Some("not_ready"));
}

#[test]
fn queue_order_is_priority_then_submission() {
    let mut s = DecisionState::default();
    submit(&mut s, "w-low", WorkloadSpec { priority: -1, ..gpus("low", 1) });
    submit(&mut s, "w-a", gpus("a", 1));
    submit(&mut s, "w-high", WorkloadSpec { priority: 5, ..gpus("high", 1) });
    submit(&mut s, "w-b", gpus("b", 1));
    assert_eq!(pending_in_order(&s), ["w-high", "w-a", "w-b", "w-low"]);
}

#[test]
fn large_clusters_keep_placements_small() {
    let mut s = DecisionState::default();
    for i in 0..500 {
        let node = format!("n{i:04}");
        run(&mut s, Command::RegisterNode { capabilities: caps(&node, &[("SIM", 1)], &[]), node }).unwrap();
    }
    submit(&mut s, "w", gpus("w", 1));
    let p = schedule(&s, "w", Strategy::BinPack);
    assert_eq!(p.considered.len(), Placement::MAX_VERDICTS);
    assert!(p.summary.contains("500 of 500 nodes fit"), "{}", p.summary);
    assert_eq!(p.chosen.as_deref(), Some("n0000"), "ties go to the first name");
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        gpus: u32,
        model: Option<&'static str>,
        min_mem: u64,
        zone: Option<&'static str>,
        priority: i32,
    },
    /// One scheduler pass over every pending workload.
    Pass {
        spread: bool,
    },
    /// A placement planned on the state as it was `age` steps ago, as a
    /// stale scheduler or a former leader would propose it.
    StalePass {
        age: usize,
    },
    Start {
        pick: usize,
    },
    Exit {
        pick: usize,
    },
    Cancel {
        pick: usize,
    },
    NotReady {
        node: usize,
        requeue: bool,
    },
    Heartbeat {
        node: usize,
    },
    Drain {
        node: usize,
    },
}

const MODELS: &[&str] = &["H100", "A100"];
const ZONES: &[&str] = &["eu", "us"];

fn arb_node() -> impl proptest::strategy::Strategy<Value = NodeCapabilities> {
    (
        proptest::collection::vec((0..MODELS.len(), prop_oneof![Just(40_000u64), Just(80_000u64)]), 0..5),
        proptest::option::of(0..ZONES.len()),
    )
        .prop_map(|(gpus, zone)| NodeCapabilities {
            gpus: gpus
                .into_iter()
                .enumerate()
                .map(|(i, (m, mem))| GpuInfo {
                    index: i as u32,
                    uuid: String::new(),
                    model: MODELS[m].into(),
                    memory_mb: mem,
                })
                .collect(),
            labels: zone.map(|z| [("zone".to_string(), ZONES[z].to_string())].into()).unwrap_or_default(),
            ..Default::default()
        })
}

fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5u32, proptest::option::of(0..MODELS.len()), prop_oneof![Just(0u64), Just(60_000u64)],
             proptest::option::of(0..ZONES.len()), -2..3i32)
            .prop_map(|(gpus, m, min_mem, z, priority)| Op::Submit {
                gpus,
                model: m.filter(|_| gpus > 0).map(|m| MODELS[m]),
                min_mem,
                zone: z.map(|z| ZONES[z]),
                priority,
            }),
        3 => any::<bool>().prop_map(|spread| Op::Pass { spread }),
        1 => (1..4usize).prop_map(|age| Op::StalePass { age }),
        2 => any::<usize>().prop_map(|pick| Op::Start { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Exit { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(node, requeue)| Op::NotReady { node, requeue }),
        1 => any::<usize>().prop_map(|node| Op::Heartbeat { node }),
        1 => any::<usize>().prop_map(|node| Op::Drain { node }),
    ]
}

/// No GPU is held twice, and the three views of who holds what agree.
fn check_allocations(s: &DecisionState) -> Result<(), TestCaseError> {
    let mut held: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, w) in &s.workloads {
        let live = matches!(w.status, WorkloadStatus::Placed | WorkloadStatus::Running);
        prop_assert!(live || w.gpu_uuids.is_empty(), "{id} is {:?} but holds {:?}", w.status, w.gpu_uuids);
        for g in &w.gpu_uuids {
            prop_assert!(held.insert(g, id).is_none(), "GPU {g} double-booked");
            let node = &s.nodes[w.node.as_ref().unwrap()];
            prop_assert_eq!(node.allocated.get(g), Some(id));
        }
    }
    let global: BTreeMap<&str, &str> = s.gpu_allocations.iter().map(|(g, w)| (g.as_str(), w.as_str())).collect();
    prop_assert_eq!(&held, &global);
    let per_node: usize = s.nodes.values().map(|n| n.allocated.len()).sum();
    prop_assert_eq!(per_node, held.len());
    Ok(())
}

/// What an accepted placement must satisfy.
fn check_fits(s: &DecisionState, id: &str) -> Result<(), TestCaseError> {
    let w = &s.workloads[id];
    let node = &s.nodes[w.node.as_ref().unwrap()];
    prop_assert!(node.ready && !node.draining);
    prop_assert_eq!(w.gpu_uuids.len(), w.spec.gpus as usize);
    for g in &w.gpu_uuids {
        let gpu = node.capabilities.gpus.iter().find(|x| &x.uuid == g).unwrap();
        prop_assert!(w.spec.gpu_model.as_ref().is_none_or(|m| &gpu.model == m));
        prop_assert!(gpu.memory_mb >= w.spec.min_gpu_memory_mb);
    }
    for (k, v) in &w.spec.node_selector {
        prop_assert_eq!(node.capabilities.labels.get(k), Some(v));
    }
    Ok(())
}

fn pick(s: &DecisionState, pick: usize, status: &[WorkloadStatus]) -> Option<(String, String)> {
    let ids: Vec<(String, String)> = s
        .workloads
        .iter()
        .filter(|(_, w)| status.contains(&w.status))
        .map(|(id, w)| (id.clone(), w.node.clone().unwrap_or_default()))
        .collect();
    if ids.is_empty() {
        None
    } else {
        Some(ids[pick % ids.len()].clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn placements_never_double_book_and_always_fit(
        nodes in proptest::collection::vec(arb_node(), 1..6),
        ops in proptest::collection::vec(arb_op(), 1..50),
    ) {
        let mut s = DecisionState::default();
        let names: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
        for (name, mut c) in names.iter().cloned().zip(nodes) {
            for g in &mut c.gpus {
                g.uuid = format!("{name}-g{}", g.index);
            }
            run(&mut s, Command::RegisterNode { node: name, capabilities: c }).unwrap();
        }
        let mut history = vec![s.clone()];
        let mut next_id = 0;
        for op in ops {
            match op {
                Op::Submit { gpus, model, min_mem, zone, priority } => {
                    next_id += 1;
                    let mut spec = WorkloadSpec {
                        name: format!("w{next_id}"),
                        image: "busybox".into(),
                        gpus,
                        gpu_model: model.map(String::from),
                        min_gpu_memory_mb: min_mem,
                        priority,
                        ..Default::default()
                    };
                    if let Some(z) = zone {
                        spec.node_selector.insert("zone".into(), z.into());
                    }
                    submit(&mut s, &format!("w{next_id}"), spec);
                }
                Op::Pass { spread } => {
                    let strategy = if spread { Strategy::Spread } else { Strategy::BinPack };
                    for id in pending_in_order(&s) {
                        let p = plan(&s, &id, strategy);
                        match &p.placement.chosen {
                            Some(node) => {
                                let cmd = Command::PlaceWorkload {
                                    workload_id: id.clone(),
                                    node: node.clone(),
                                    gpu_uuids: p.gpu_uuids.clone(),
                                    placement: p.placement.clone(),
                                };
                                let r = run(&mut s, cmd);
                                prop_assert!(r.is_ok(), "a fresh plan must be accepted: {:?} {:?}", r, p);
                                check_fits(&s, &id)?;
                            }
                            None => {
                                // Every node is explained, each by the filter it failed.
                                prop_assert_eq!(p.placement.considered.len(), s.nodes.len());
                                for v in &p.placement.considered {
                                    let f = v.failed_filter.as_deref();
                                    prop_assert!(f.is_some_and(|f| crate::FILTERS.contains(&f)), "{:?}", v);
                                    prop_assert!(!v.detail.is_empty());
                                }
                                run(&mut s, Command::RecordUnschedulable { workload_id: id.clone(), placement: p.placement }).unwrap();
                            }
                        }
                    }
                }
                Op::StalePass { age } => {
                    let old = &history[history.len().saturating_sub(age)];
                    for id in pending_in_order(old) {
                        let p = plan(old, &id, Strategy::BinPack);
                        if let Some(node) = p.placement.chosen.clone() {
                            let cmd = Command::PlaceWorkload { workload_id: id.clone(), node, gpu_uuids: p.gpu_uuids, placement: p.placement };
                            if run(&mut s, cmd).is_ok() {
                                check_fits(&s, &id)?;
                            }
                        }
                    }
                }
                Op::Start { pick: i } => {
                    if let Some((id, node)) = pick(&s, i, &[WorkloadStatus::Placed]) {
                        run(&mut s, Command::ReportWorkloadStarted { workload_id: id.clone(), node }).unwrap();
                    }
                }
                Op::Exit { pick: i } => {
                    if let Some((id, node)) = pick(&s, i, &[WorkloadStatus::Placed, WorkloadStatus::Running]) {
                        let cmd = Command::ReportWorkloadExited { workload_id: id.clone(), node, exit_code: 0, oom_killed: false };
                        run(&mut s, cmd).unwrap();
                    }
                }
                Op::Cancel { pick: i } => {
                    if let Some((id, _)) = pick(&s, i, &[WorkloadStatus::Pending, WorkloadStatus::Placed, WorkloadStatus::Running]) {
                        let _ = run(&mut s, Command::CancelWorkload { workload: id.clone(), reason: String::new() });
                    }
                }
                Op::NotReady { node, requeue } => {
                    let node = names[node % names.len()].clone();
                    let _ = run(&mut s, Command::MarkNodeNotReady { node, reason: "silent".into(), requeue });
                }
                Op::Heartbeat { node } => {
                    run(&mut s, Command::Heartbeat { node: names[node % names.len()].clone() }).unwrap();
                }
                Op::Drain { node } => {
                    let _ = run(&mut s, Command::RequestNodeDrain { node: names[node % names.len()].clone(), reason: String::new() });
                }
            }
            check_allocations(&s)?;
            check_queue(&s)?;
            history.push(s.clone());
        }
    }
}

/// The pending queue `evolve` keeps is exactly the Pending workloads sorted
/// by priority (higher first), submission, id, and a decoded copy of the
/// state rebuilds the same queue.
fn check_queue(s: &DecisionState) -> Result<(), TestCaseError> {
    let mut want: Vec<(i32, u64, &String)> = s
        .workloads
        .iter()
        .filter(|(_, w)| w.status == WorkloadStatus::Pending)
        .map(|(id, w)| (w.spec.priority, w.submitted_seq, id))
        .collect();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then_with(|| a.2.cmp(b.2)));
    let want: Vec<String> = want.into_iter().map(|(_, _, id)| id.clone()).collect();
    prop_assert_eq!(&pending_in_order(s), &want);
    let mut decoded: DecisionState = serde_json::from_slice(&serde_json::to_vec(s).unwrap()).unwrap();
    decoded.reindex();
    prop_assert_eq!(&decoded, s);
    Ok(())
}
