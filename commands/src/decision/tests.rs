use proptest::prelude::*;

use super::*;
use crate::{Actor, GpuInfo, NodeCapabilities, WorkloadSpec};

fn env(id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: id.into(),
        actor: Actor::user("alice"),
        time_ms: 1,
        correlation_id: id.into(),
        command,
    }
}

/// Applies a command like the state machine does, returning the events.
fn run(state: &mut DecisionState, id: &str, command: Command) -> Result<Vec<Event>, Rejection> {
    let events = decide(state, &env(id, command))?;
    for e in &events {
        let seq = state.last_seq + 1;
        evolve(state, seq, 1, e);
    }
    Ok(events)
}

fn spec(name: &str) -> WorkloadSpec {
    WorkloadSpec {
        name: name.into(),
        image: "busybox".into(),
        gpus: 2,
        gpu_model: Some("H100".into()),
        ..Default::default()
    }
}

#[test]
fn submit_then_duplicate_name_is_refused_until_finished() {
    let mut s = DecisionState::default();
    run(&mut s, "c1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("train-1") }).unwrap();
    let err =
        run(&mut s, "c2", Command::SubmitWorkload { workload_id: "w-2".into(), spec: spec("train-1") }).unwrap_err();
    assert!(matches!(err, Rejection::FailedPrecondition { .. }), "{err:?}");
    run(&mut s, "c3", Command::CancelWorkload { workload: "train-1".into(), reason: "no".into() }).unwrap();
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Cancelled);
    run(&mut s, "c4", Command::SubmitWorkload { workload_id: "w-2".into(), spec: spec("train-1") }).unwrap();
}

#[test]
fn invalid_spec_names_the_field() {
    let s = DecisionState::default();
    let mut bad = spec("x");
    bad.image = String::new();
    let err = decide(&s, &env("c", Command::SubmitWorkload { workload_id: "w".into(), spec: bad })).unwrap_err();
    assert_eq!(err, Rejection::invalid("spec.image", "must not be empty"));
    let err =
        decide(&s, &env("c", Command::SubmitWorkload { workload_id: "w".into(), spec: spec("Bad Name") })).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "spec.name"), "{err:?}");
}

#[test]
fn approving_a_stale_proposal_supersedes_it_and_approving_twice_is_refused() {
    let mut s = DecisionState::default();
    run(&mut s, "c1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    let node =
        NodeCapabilities { gpus: vec![GpuInfo { uuid: "GPU-1".into(), ..Default::default() }], ..Default::default() };
    run(&mut s, "c2", Command::RegisterNode { node: "n1".into(), capabilities: node }).unwrap();
    let basis = s.last_seq;
    let action = ProposalAction::DrainNode { node: "n1".into() };
    run(
        &mut s,
        "c3",
        Command::CreateProposal {
            proposal_id: "p1".into(),
            action: action.clone(),
            basis_seq: basis,
            reason: "r".into(),
        },
    )
    .unwrap();
    run(
        &mut s,
        "c4",
        Command::CreateProposal { proposal_id: "p2".into(), action, basis_seq: basis, reason: "r".into() },
    )
    .unwrap();

    let ev = run(&mut s, "c5", Command::ApproveProposal { proposal_id: "p1".into(), comment: "ok".into() }).unwrap();
    assert_eq!(ev[0].kind(), "ProposalApproved");
    assert_eq!(ev[1].kind(), "NodeDrainRequested");
    assert!(s.nodes["n1"].draining);

    let err =
        run(&mut s, "c6", Command::ApproveProposal { proposal_id: "p1".into(), comment: "again".into() }).unwrap_err();
    assert_eq!(err, Rejection::precondition("proposal \"p1\" is already Approved"));

    // p2 was made against the same basis, but the node changed since.
    let ev = run(&mut s, "c7", Command::ApproveProposal { proposal_id: "p2".into(), comment: "ok".into() }).unwrap();
    assert!(matches!(&ev[0], Event::ProposalSuperseded { proposal_id, .. } if proposal_id == "p2"), "{ev:?}");
    assert_eq!(s.proposals["p2"].status, ProposalStatus::Superseded);
}

fn gpus(node: &str, n: u32, model: &str) -> NodeCapabilities {
    NodeCapabilities {
        gpus: (0..n)
            .map(|i| GpuInfo { index: i, uuid: format!("{node}-gpu-{i}"), model: model.into(), memory_mb: 80_000 })
            .collect(),
        ..Default::default()
    }
}

fn place(s: &mut DecisionState, id: &str, workload: &str, node: &str, uuids: &[&str]) -> Result<Vec<Event>, Rejection> {
    run(
        s,
        id,
        Command::PlaceWorkload {
            workload_id: workload.into(),
            node: node.into(),
            gpu_uuids: uuids.iter().map(|u| u.to_string()).collect(),
            placement: Default::default(),
        },
    )
}

#[test]
fn lifecycle_reports_must_match_the_node() {
    let mut s = DecisionState::default();
    run(&mut s, "c1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    let err = run(&mut s, "c2", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "ghost".into() })
        .unwrap_err();
    assert_eq!(err, Rejection::not_found("node", "ghost"));
    run(&mut s, "c3", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 2, "H100") }).unwrap();
    run(&mut s, "c3b", Command::RegisterNode { node: "n2".into(), capabilities: gpus("n2", 2, "H100") }).unwrap();
    // Only a placed workload can start, and only on its node.
    let err =
        run(&mut s, "c4", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "n1".into() }).unwrap_err();
    assert!(matches!(err, Rejection::FailedPrecondition { .. }), "{err:?}");
    place(&mut s, "c4b", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    let err = run(&mut s, "c4c", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "n2".into() })
        .unwrap_err();
    assert!(matches!(err, Rejection::FailedPrecondition { .. }), "{err:?}");
    run(&mut s, "c4d", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "n1".into() }).unwrap();
    let exited = |node: &str, exit_code| Command::ReportWorkloadExited {
        workload_id: "w-1".into(),
        node: node.into(),
        exit_code,
        oom_killed: false,
    };
    assert!(run(&mut s, "c5", exited("n2", 0)).is_err());
    run(&mut s, "c6", exited("n1", 3)).unwrap();
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Failed);
    assert!(s.gpu_allocations.is_empty() && s.nodes["n1"].allocated.is_empty(), "exit frees the GPUs");
}

#[test]
fn placement_is_rechecked_at_apply_time() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 4, "H100") }).unwrap();
    run(&mut s, "r2", Command::RegisterNode { node: "n2".into(), capabilities: gpus("n2", 4, "A100") }).unwrap();
    run(&mut s, "s1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    run(&mut s, "s2", Command::SubmitWorkload { workload_id: "w-2".into(), spec: spec("b") }).unwrap();

    let err = place(&mut s, "p1", "w-1", "n1", &["n1-gpu-0"]).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "gpu_uuids"), "count: {err:?}");
    let err = place(&mut s, "p2", "w-1", "n1", &["n1-gpu-0", "n1-gpu-0"]).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "gpu_uuids"), "dup: {err:?}");
    let err = place(&mut s, "p3", "w-1", "n1", &["n1-gpu-0", "n2-gpu-0"]).unwrap_err();
    assert!(err.to_string().contains("not a GPU of node"), "{err}");
    let err = place(&mut s, "p4", "w-1", "n2", &["n2-gpu-0", "n2-gpu-1"]).unwrap_err();
    assert!(err.to_string().contains("needs H100"), "model: {err}");

    place(&mut s, "p5", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Placed);
    // A racing scheduler that saw the same free GPUs is refused.
    let err = place(&mut s, "p6", "w-2", "n1", &["n1-gpu-1", "n1-gpu-2"]).unwrap_err();
    assert!(err.to_string().contains("already held by workload \"w-1\""), "{err}");
    let err = place(&mut s, "p7", "w-1", "n1", &["n1-gpu-2", "n1-gpu-3"]).unwrap_err();
    assert!(err.to_string().contains("not Pending"), "{err}");

    let mut sel = spec("c");
    sel.node_selector.insert("zone".into(), "eu".into());
    run(&mut s, "s3", Command::SubmitWorkload { workload_id: "w-3".into(), spec: sel }).unwrap();
    let err = place(&mut s, "p8", "w-3", "n1", &["n1-gpu-2", "n1-gpu-3"]).unwrap_err();
    assert!(err.to_string().contains("zone=eu"), "{err}");

    run(&mut s, "d1", Command::RequestNodeDrain { node: "n1".into(), reason: String::new() }).unwrap();
    let err = place(&mut s, "p9", "w-2", "n1", &["n1-gpu-2", "n1-gpu-3"]).unwrap_err();
    assert!(err.to_string().contains("draining"), "{err}");
}

#[test]
fn cancelling_a_placed_workload_frees_its_gpus_at_once() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 2, "H100") }).unwrap();
    run(&mut s, "s1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    place(&mut s, "p1", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    run(&mut s, "c1", Command::CancelWorkload { workload: "w-1".into(), reason: "no".into() }).unwrap();
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Cancelled);
    assert!(s.gpu_allocations.is_empty());
    let err = run(&mut s, "st", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "n1".into() });
    assert!(err.is_err(), "a cancelled workload does not start");
}

#[test]
fn a_node_that_goes_silent_loses_its_workloads_and_comes_back_with_a_heartbeat() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 4, "H100") }).unwrap();
    run(&mut s, "s1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    run(&mut s, "s2", Command::SubmitWorkload { workload_id: "w-2".into(), spec: spec("b") }).unwrap();
    place(&mut s, "p1", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    place(&mut s, "p2", "w-2", "n1", &["n1-gpu-2", "n1-gpu-3"]).unwrap();
    run(&mut s, "st", Command::ReportWorkloadStarted { workload_id: "w-2".into(), node: "n1".into() }).unwrap();

    let ev = run(
        &mut s,
        "nr",
        Command::MarkNodeNotReady { node: "n1".into(), reason: "no heartbeat for 30s".into(), requeue: true },
    )
    .unwrap();
    let kinds: Vec<&str> = ev.iter().map(Event::kind).collect();
    assert_eq!(kinds, ["NodeNotReady", "WorkloadLost", "WorkloadLost", "IncidentOpened"]);
    assert!(!s.nodes["n1"].ready);
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Pending);
    assert_eq!(s.workloads["w-2"].status, WorkloadStatus::Pending);
    assert!(s.gpu_allocations.is_empty());
    let err = place(&mut s, "p3", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap_err();
    assert!(err.to_string().contains("not ready"), "{err}");

    run(&mut s, "hb", Command::Heartbeat { node: "n1".into() }).unwrap();
    assert!(s.nodes["n1"].ready);
    place(&mut s, "p4", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    let ev = run(&mut s, "nr2", Command::MarkNodeNotReady { node: "n1".into(), reason: "gone".into(), requeue: false })
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Lost);
    assert!(!s.active_names.contains_key("a"));
}

#[test]
fn heartbeats_record_the_envelope_time() {
    let mut s = DecisionState::default();
    let e = Event::NodeRegistered { node: "n1".into(), capabilities: Default::default() };
    evolve(&mut s, 1, 1_000, &e);
    assert_eq!(s.nodes["n1"].last_heartbeat_ms, 1_000);
    evolve(&mut s, 2, 5_000, &Event::NodeHeartbeat { node: "n1".into() });
    assert_eq!(s.nodes["n1"].last_heartbeat_ms, 5_000);
}

#[test]
fn unschedulable_is_recorded_when_the_reason_changes() {
    let mut s = DecisionState::default();
    run(&mut s, "s1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    let rec = |summary: &str| Command::RecordUnschedulable {
        workload_id: "w-1".into(),
        placement: crate::Placement { summary: summary.into(), ..Default::default() },
    };
    assert_eq!(run(&mut s, "u1", rec("no nodes")).unwrap().len(), 1);
    assert_eq!(run(&mut s, "u2", rec("no nodes")).unwrap().len(), 0, "same reason: nothing appended");
    assert_eq!(run(&mut s, "u3", rec("0 of 1 nodes fit")).unwrap().len(), 1);
}

#[test]
fn log_chunks_are_bounded_and_tied_to_the_node() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 2, "H100") }).unwrap();
    run(&mut s, "s1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    place(&mut s, "p1", "w-1", "n1", &["n1-gpu-0", "n1-gpu-1"]).unwrap();
    let logs = |stream: &str, data: String| Command::ReportWorkloadLogs {
        workload_id: "w-1".into(),
        node: "n1".into(),
        stream: stream.into(),
        data,
    };
    run(&mut s, "l1", logs("stdout", "hello\n".into())).unwrap();
    let err = run(&mut s, "l2", logs("stdout", "x".repeat(MAX_LOG_CHUNK_BYTES + 1))).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "data"), "{err:?}");
    let err = run(&mut s, "l3", logs("stdin", "x".into())).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "stream"), "{err:?}");
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9-]{1,8}", ".{0,40}", Just("w-1".to_string()), Just("n1".to_string())]
}

fn arb_command() -> impl Strategy<Value = Command> {
    let spec = (arb_text(), arb_text(), any::<u32>(), proptest::option::of(arb_text()))
        .prop_map(|(name, image, gpus, gpu_model)| WorkloadSpec { name, image, gpus, gpu_model, ..Default::default() });
    let action = prop_oneof![
        arb_text().prop_map(|workload_id| ProposalAction::CancelWorkload { workload_id }),
        arb_text().prop_map(|node| ProposalAction::DrainNode { node }),
    ];
    prop_oneof![
        (arb_text(), spec).prop_map(|(workload_id, spec)| Command::SubmitWorkload { workload_id, spec }),
        (arb_text(), arb_text()).prop_map(|(workload, reason)| Command::CancelWorkload { workload, reason }),
        (arb_text(), arb_text()).prop_map(|(node, reason)| Command::RequestNodeDrain { node, reason }),
        arb_text().prop_map(|text| Command::StateIntent { text }),
        (arb_text(), action, any::<u64>(), arb_text()).prop_map(|(proposal_id, action, basis_seq, reason)| {
            Command::CreateProposal { proposal_id, action, basis_seq: basis_seq % 64, reason }
        }),
        (arb_text(), arb_text()).prop_map(|(proposal_id, comment)| Command::ApproveProposal { proposal_id, comment }),
        (arb_text(), arb_text()).prop_map(|(proposal_id, reason)| Command::RejectProposal { proposal_id, reason }),
        arb_text().prop_map(|node| Command::RegisterNode { node, capabilities: Default::default() }),
        arb_text().prop_map(|node| Command::Heartbeat { node }),
        (arb_text(), arb_text()).prop_map(|(workload_id, node)| Command::ReportWorkloadStarted { workload_id, node }),
        (arb_text(), arb_text(), any::<i32>(), any::<bool>()).prop_map(|(workload_id, node, exit_code, oom_killed)| {
            Command::ReportWorkloadExited { workload_id, node, exit_code, oom_killed }
        }),
        (arb_text(), arb_text(), proptest::collection::vec(arb_text(), 0..3)).prop_map(
            |(workload_id, node, gpu_uuids)| {
                Command::PlaceWorkload { workload_id, node, gpu_uuids, placement: Default::default() }
            }
        ),
        (arb_text(), arb_text()).prop_map(|(workload_id, summary)| Command::RecordUnschedulable {
            workload_id,
            placement: crate::Placement { summary, ..Default::default() }
        }),
        (arb_text(), arb_text(), arb_text(), arb_text()).prop_map(|(workload_id, node, stream, data)| {
            Command::ReportWorkloadLogs { workload_id, node, stream, data }
        }),
        (arb_text(), arb_text(), any::<bool>()).prop_map(|(node, reason, requeue)| Command::MarkNodeNotReady {
            node,
            reason,
            requeue
        }),
        (arb_text(), arb_text(), arb_text()).prop_map(|(incident_id, root_cause, resolution)| {
            Command::ResolveIncident { incident_id, root_cause, resolution }
        }),
        (arb_text(), arb_text(), any::<u64>(), proptest::collection::vec(any::<u64>(), 0..3)).prop_map(
            |(node, gpu_uuid, ecc_uncorrected, xid_errors)| Command::ObserveGpuMetrics {
                node,
                samples: vec![crate::GpuSample {
                    gpu_uuid,
                    ecc_uncorrected: ecc_uncorrected % 3,
                    xid_errors,
                    throttle_reasons: vec!["hw_thermal_slowdown".into()],
                    ..Default::default()
                }]
            }
        ),
    ]
}

proptest! {
    /// `decide` is total: any sequence of commands, valid or not, yields
    /// events or a rejection, never a panic, and evolve keeps seq dense.
    #[test]
    fn decide_never_panics(commands in proptest::collection::vec((arb_text(), arb_command()), 1..60)) {
        let mut s = DecisionState::default();
        let mut seq = 0;
        for (id, c) in commands {
            let events = decide(&s, &env(&id, c)).unwrap_or_else(|r| vec![Event::CommandRejected { command_kind: "x".into(), rejection: r }]);
            for e in &events {
                seq += 1;
                evolve(&mut s, seq, 1, e);
            }
            prop_assert_eq!(s.last_seq, seq);
        }
    }
}

fn sealed_chain(texts: &[String]) -> Vec<crate::EventRecord> {
    let mut prev = crate::GENESIS_HASH.to_string();
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let r = crate::EventRecord::seal(
            i as u64 + 1,
            i as u64 + 1,
            i as i64,
            Actor::user("alice"),
            format!("c{i}"),
            format!("c{i}"),
            Event::IntentStated { text: t.clone() },
            prev,
        );
        prev = r.hash.clone();
        out.push(r);
    }
    out
}

proptest! {
    /// A sealed chain verifies, and changing any field of any record, or
    /// dropping a record, is detected.
    #[test]
    fn the_hash_chain_verifies_and_detects_tampering(
        texts in proptest::collection::vec(".{0,20}", 1..40),
        victim in any::<prop::sample::Index>(),
        how in 0u8..3,
    ) {
        let chain = sealed_chain(&texts);
        let head = crate::verify_chain(crate::GENESIS_HASH, &chain).expect("a sealed chain verifies");
        prop_assert_eq!(&head, &chain.last().expect("non-empty").hash);

        let mut bad = chain.clone();
        let i = victim.index(bad.len());
        match how {
            0 => bad[i].event = Event::IntentStated { text: format!("{}!", texts[i]) },
            1 => bad[i].actor = Actor::user("mallory"),
            _ => { bad.remove(i); }
        }
        if how == 2 && i == chain.len() - 1 {
            // Dropping the head leaves a valid, shorter chain; its head differs.
            let head2 = crate::verify_chain(crate::GENESIS_HASH, &bad).expect("prefix verifies");
            prop_assert_ne!(head2, head);
        } else {
            prop_assert!(crate::verify_chain(crate::GENESIS_HASH, &bad).is_err());
        }
    }
}

#[test]
fn health_check_needs_a_known_node_and_becomes_an_event() {
    let mut s = DecisionState::default();
    let ask = |node: &str| Command::RequestHealthCheck { node: node.into(), check_id: "hc-1".into() };
    let err = run(&mut s, "h1", ask("n1")).unwrap_err();
    assert_eq!(err, Rejection::not_found("node", "n1"));
    run(&mut s, "h2", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 1, "H100") }).unwrap();
    let events = run(&mut s, "h3", ask("n1")).unwrap();
    assert_eq!(events, vec![Event::GpuHealthCheckRequested { node: "n1".into(), check_id: "hc-1".into() }]);
    let err =
        run(&mut s, "h4", Command::RequestHealthCheck { node: "n1".into(), check_id: String::new() }).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "check_id"), "{err:?}");
}

#[test]
fn health_report_is_recorded_and_non_finite_numbers_are_refused() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 1, "H100") }).unwrap();
    let result = crate::GpuHealthResult {
        runtime: "wgpu".into(),
        device: "llvmpipe".into(),
        passed: true,
        gflops: 12.5,
        checksum: 3.0,
        reference_checksum: 3.0,
        ..Default::default()
    };
    let report = |results: Vec<crate::GpuHealthResult>| Command::ReportHealthCheck {
        node: "n1".into(),
        check_id: "hc-1".into(),
        results,
        error: None,
    };
    let events = run(&mut s, "r2", report(vec![result.clone()])).unwrap();
    assert!(
        matches!(&events[..], [Event::GpuHealthChecked { results, .. }] if results == std::slice::from_ref(&result))
    );
    let bad = crate::GpuHealthResult { gflops: f64::NAN, ..result };
    let err = run(&mut s, "r3", report(vec![bad])).unwrap_err();
    assert!(matches!(err, Rejection::InvalidArgument { ref field, .. } if field == "results[0]"), "{err:?}");
}

fn sample(uuid: &str) -> crate::GpuSample {
    crate::GpuSample { gpu_uuid: uuid.into(), temperature_c: 60.0, ..Default::default() }
}

fn incidents_in(events: &[Event]) -> Vec<(String, String, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened { incident_kind: kind, subject, signals, .. } => {
                Some((kind.clone(), subject.clone(), signals.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn gpu_trouble_opens_one_incident_per_kind_and_gpu_until_resolved() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 2, "H100") }).unwrap();
    let healthy =
        run(&mut s, "m0", Command::ObserveGpuMetrics { node: "n1".into(), samples: vec![sample("n1-gpu-0")] }).unwrap();
    assert_eq!(healthy.len(), 1, "a healthy sample opens nothing");

    let mut hot = sample("n1-gpu-0");
    hot.throttle_reasons = vec!["hw_thermal_slowdown".into(), "sw_power_cap".into()];
    hot.xid_errors = vec![79, 79];
    hot.ecc_uncorrected = 2;
    let ev = run(&mut s, "m1", Command::ObserveGpuMetrics { node: "n1".into(), samples: vec![hot.clone()] }).unwrap();
    let found = incidents_in(&ev);
    assert_eq!(
        found,
        vec![
            ("gpu_xid".into(), "gpu:n1-gpu-0".into(), vec!["gpu_model:H100".to_string(), "xid:79".into()]),
            ("gpu_ecc".into(), "gpu:n1-gpu-0".into(), vec!["ecc_uncorrected".into(), "gpu_model:H100".into()]),
            (
                "thermal_throttling".into(),
                "gpu:n1-gpu-0".into(),
                vec!["gpu_model:H100".into(), "thermal_throttle".into(), "throttle:hw_thermal_slowdown".into()]
            ),
        ]
    );
    // Still hot, same ECC count: the open incidents are not opened again.
    let again =
        run(&mut s, "m2", Command::ObserveGpuMetrics { node: "n1".into(), samples: vec![hot.clone()] }).unwrap();
    assert!(incidents_in(&again).is_empty(), "{again:?}");

    let thermal_id = s.open_incidents["thermal_throttling|gpu:n1-gpu-0"].clone();
    let err = run(
        &mut s,
        "x1",
        Command::ResolveIncident { incident_id: thermal_id.clone(), root_cause: " ".into(), resolution: "fan".into() },
    )
    .unwrap_err();
    assert!(err.to_string().contains("root_cause"), "{err}");
    run(
        &mut s,
        "x2",
        Command::ResolveIncident {
            incident_id: thermal_id.clone(),
            root_cause: "blocked air intake".into(),
            resolution: "cleaned the filter".into(),
        },
    )
    .unwrap();
    let twice = run(
        &mut s,
        "x3",
        Command::ResolveIncident { incident_id: thermal_id, root_cause: "a".into(), resolution: "b".into() },
    )
    .unwrap_err();
    assert!(twice.to_string().contains("already resolved"), "{twice}");
    // Resolved while the GPU is still hot: the next sample opens a new one.
    let ev = run(&mut s, "m3", Command::ObserveGpuMetrics { node: "n1".into(), samples: vec![hot] }).unwrap();
    let kinds: Vec<String> = incidents_in(&ev).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(kinds, ["thermal_throttling"]);
}

#[test]
fn a_workload_name_that_keeps_failing_is_a_crash_loop() {
    let mut s = DecisionState::default();
    run(&mut s, "r1", Command::RegisterNode { node: "n1".into(), capabilities: gpus("n1", 2, "H100") }).unwrap();
    let mut opened = Vec::new();
    for i in 0..4 {
        let id = format!("w-{i}");
        let mut sp = spec("trainer");
        sp.gpu_model = None;
        sp.gpus = 0;
        run(&mut s, &format!("s{i}"), Command::SubmitWorkload { workload_id: id.clone(), spec: sp }).unwrap();
        place(&mut s, &format!("p{i}"), &id, "n1", &[]).unwrap();
        let ev = run(
            &mut s,
            &format!("e{i}"),
            Command::ReportWorkloadExited { workload_id: id, node: "n1".into(), exit_code: 137, oom_killed: true },
        )
        .unwrap();
        opened.push(incidents_in(&ev));
    }
    // The third failure opens it; the fourth finds it open.
    assert_eq!(opened.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 1, 0]);
    let (kind, subject, signals) = opened[2][0].clone();
    assert_eq!((kind.as_str(), subject.as_str()), ("crash_loop", "workload:trainer"));
    assert_eq!(signals, ["crash_loop", "exit_code:137", "image:busybox", "oom_killed"]);
    // Every failure inside the window is remembered.
    assert_eq!(s.recent_failures["trainer"].len(), 4);
}
