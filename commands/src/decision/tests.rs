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
        evolve(state, seq, e);
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

#[test]
fn lifecycle_reports_must_match_the_node() {
    let mut s = DecisionState::default();
    run(&mut s, "c1", Command::SubmitWorkload { workload_id: "w-1".into(), spec: spec("a") }).unwrap();
    let err = run(&mut s, "c2", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "ghost".into() })
        .unwrap_err();
    assert_eq!(err, Rejection::not_found("node", "ghost"));
    run(&mut s, "c3", Command::RegisterNode { node: "n1".into(), capabilities: Default::default() }).unwrap();
    run(&mut s, "c4", Command::ReportWorkloadStarted { workload_id: "w-1".into(), node: "n1".into() }).unwrap();
    let err =
        run(&mut s, "c5", Command::ReportWorkloadExited { workload_id: "w-1".into(), node: "n2".into(), exit_code: 0 });
    assert!(err.is_err());
    run(&mut s, "c6", Command::ReportWorkloadExited { workload_id: "w-1".into(), node: "n1".into(), exit_code: 3 })
        .unwrap();
    assert_eq!(s.workloads["w-1"].status, WorkloadStatus::Failed);
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
        (arb_text(), arb_text(), any::<i32>())
            .prop_map(|(workload_id, node, exit_code)| Command::ReportWorkloadExited { workload_id, node, exit_code }),
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
                evolve(&mut s, seq, e);
            }
            prop_assert_eq!(s.last_seq, seq);
        }
    }
}
