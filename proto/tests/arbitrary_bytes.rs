//! Arbitrary and mutated bytes for the protobuf decoders of the `claw.v1`
//! API and the Raft RPC envelope, and for `command_from_pb` /
//! `event_from_pb` behind them. Nothing may panic; a rejection must say
//! what it rejected; and a command that is accepted must survive the log:
//! stored as JSON, decided, sealed into the hash chain and read back with
//! its hashes intact. The seeds are in `tests/corpus/`.

#[path = "../../tests/corpus/mutate.rs"]
mod mutate;

use claw_commands::{
    decide, evolve, verify_chain, Actor, Command, CommandEnvelope, DecisionState, Event, EventRecord, NodeCapabilities,
    GENESIS_HASH,
};
use claw_proto::raft::RaftPayload;
use claw_proto::{command_from_pb, event_from_pb, event_to_pb, v1, ConversionError};
use proptest::prelude::*;
use prost::Message;

use self::mutate::{corpus, inputs, Input, Seed};

const TIME_MS: i64 = 1_700_000_000_000;

/// A prost rejection; its text is prost's own, which names the message
/// and field where it can.
fn assert_prost_error(input: &Input, e: &prost::DecodeError) {
    let msg = e.to_string();
    assert!(
        msg.starts_with("failed to decode Protobuf message: ")
            && msg.len() > "failed to decode Protobuf message: ".len(),
        "{input:?}: unclear protobuf error {msg:?}"
    );
}

/// A conversion rejection must name the field, as a protobuf field path.
fn assert_names_field(input: &Input, e: &ConversionError) {
    let field = match e {
        ConversionError::Missing(field) => field,
        ConversionError::Invalid { field, reason } => {
            assert!(!reason.trim().is_empty(), "{input:?}: {field} is invalid, but the error gives no reason");
            field
        }
    };
    let is_path = !field.is_empty() && field.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    assert!(is_path, "{input:?}: {e} does not name a field");
    assert!(e.to_string().contains(field), "{input:?}: {e} does not show the field {field}");
}

/// The node a command is about, if any.
fn node_of(command: &Command) -> Option<&str> {
    match command {
        Command::Heartbeat { node }
        | Command::RequestNodeDrain { node, .. }
        | Command::ObserveGpuMetrics { node, .. }
        | Command::ReportWorkloadStarted { node, .. }
        | Command::ReportWorkloadExited { node, .. }
        | Command::ReportWorkloadLogs { node, .. }
        | Command::RequestHealthCheck { node, .. }
        | Command::ReportHealthCheck { node, .. } => Some(node),
        _ => None,
    }
}

fn envelope(command_id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: command_id.into(),
        actor: Actor::user("fuzz"),
        time_ms: TIME_MS,
        correlation_id: "fuzz".into(),
        command,
    }
}

/// A decision state in which the node the command names is registered (and
/// has been asked for the health check it reports), so that node reports
/// are accepted and their measurements reach the events.
fn state_for(command: &Command) -> DecisionState {
    let mut state = DecisionState::default();
    let Some(node) = node_of(command) else {
        return state;
    };
    let mut setup = vec![Command::RegisterNode { node: node.into(), capabilities: NodeCapabilities::default() }];
    if let Command::ReportHealthCheck { check_id, .. } = command {
        setup.push(Command::RequestHealthCheck { node: node.into(), check_id: check_id.clone() });
    }
    let mut seq = 0;
    for (i, c) in setup.into_iter().enumerate() {
        let env = envelope(&format!("setup-{i}"), c);
        for event in decide(&state, &env).unwrap_or_default() {
            seq += 1;
            evolve(&mut state, seq, TIME_MS, &event);
        }
    }
    state
}

/// What the log does with an accepted command: the envelope is stored as
/// JSON in a raft entry, decided on every member, and its events are
/// sealed, stored as JSON and verified when read back. All of it must hold
/// for whatever a client can get past `command_from_pb`.
fn assert_survives_the_log(input: &Input, command: Command) {
    let env = envelope("fuzz-1", command);
    let json =
        serde_json::to_vec(&env).unwrap_or_else(|e| panic!("{input:?}: an accepted command does not encode: {e}"));
    let back: CommandEnvelope = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{input:?}: an accepted command does not read back from the log: {e}"));
    assert_eq!(back, env, "{input:?}: the command reads back from the log changed");

    let events = match decide(&state_for(&env.command), &env) {
        Ok(events) => events,
        Err(rejection) => vec![Event::CommandRejected { command_kind: env.command.kind().into(), rejection }],
    };
    let mut prev = GENESIS_HASH.to_string();
    let mut sealed = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let rec = EventRecord::seal(
            i as u64 + 1,
            1,
            env.time_ms,
            env.actor.clone(),
            env.command_id.clone(),
            env.correlation_id.clone(),
            event,
            prev,
        );
        prev = rec.hash.clone();
        sealed.push(rec);
    }
    let stored: Vec<EventRecord> = sealed
        .iter()
        .map(|r| {
            let bytes = serde_json::to_vec(r).unwrap_or_else(|e| panic!("{input:?}: an event does not encode: {e}"));
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{input:?}: a stored event does not decode: {e}"))
        })
        .collect();
    assert_eq!(verify_chain(GENESIS_HASH, &stored), Ok(prev), "{input:?}: stored events do not verify");
    for rec in &sealed {
        assert_eq!(event_from_pb(&event_to_pb(rec)).as_ref(), Ok(rec), "{input:?}: the wire form of an event differs");
    }
}

/// Every `claw.v1` request a client sends other than `SubmitRequest`.
fn decode_api_request(name: &str, bytes: &[u8]) -> Result<(), prost::DecodeError> {
    match name {
        "get_object_request" => v1::GetObjectRequest::decode(bytes).map(drop),
        "list_objects_request" => v1::ListObjectsRequest::decode(bytes).map(drop),
        "list_events_request" => v1::ListEventsRequest::decode(bytes).map(drop),
        "watch_request" => v1::WatchRequest::decode(bytes).map(drop),
        "cluster_status_request" => v1::ClusterStatusRequest::decode(bytes).map(drop),
        "add_member_request" => v1::AddMemberRequest::decode(bytes).map(drop),
        "get_state_request" => v1::GetStateRequest::decode(bytes).map(drop),
        "query_request" => v1::QueryRequest::decode(bytes).map(drop),
        other => panic!("{other}: not a claw.v1 request"),
    }
}

const API_REQUESTS: &[&str] = &[
    "get_object_request",
    "list_objects_request",
    "list_events_request",
    "watch_request",
    "cluster_status_request",
    "add_member_request",
    "get_state_request",
    "query_request",
];

/// The stored events of the corpus in their wire form.
fn event_seeds() -> Vec<Seed> {
    corpus("event_record")
        .into_iter()
        .map(|s| {
            let rec: EventRecord = serde_json::from_slice(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            Seed { name: s.name, bytes: event_to_pb(&rec).encode_to_vec() }
        })
        .collect()
}

/// The Raft RPC seeds in their protobuf envelope.
fn raft_payload_seeds() -> Vec<Seed> {
    corpus("raft_rpc")
        .into_iter()
        .map(|s| Seed { name: s.name, bytes: RaftPayload { data: s.bytes, error: Vec::new() }.encode_to_vec() })
        .collect()
}

fn check_event(input: &Input, e: &v1::Event) {
    match event_from_pb(e) {
        Ok(rec) => assert_eq!(event_from_pb(&event_to_pb(&rec)), Ok(rec), "{input:?}: the wire form differs"),
        Err(err) => {
            let prefix = "invalid field event.record_json: ";
            let msg = err.to_string();
            assert!(msg.starts_with(prefix) && msg.len() > prefix.len(), "{input:?}: unclear error {msg:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `Submit`: prost, then `command_from_pb`, then the log.
    #[test]
    fn submit_requests_never_panic_and_rejections_name_the_field(input in inputs(corpus("submit_request"))) {
        match v1::SubmitRequest::decode(input.bytes.as_slice()) {
            Err(e) => assert_prost_error(&input, &e),
            Ok(req) => match command_from_pb(req.command) {
                Err(e) => assert_names_field(&input, &e),
                Ok(command) => assert_survives_the_log(&input, command),
            },
        }
    }

    /// Every other request, each seed fed to every request decoder.
    #[test]
    fn api_requests_never_panic(input in inputs(corpus("api_request"))) {
        for name in API_REQUESTS {
            if let Err(e) = decode_api_request(name, &input.bytes) {
                assert_prost_error(&input, &e);
            }
        }
    }

    /// `Event` as clients receive it (Submit, ListEvents, Watch), then `event_from_pb`.
    #[test]
    fn events_never_panic_and_rejections_name_the_field(input in inputs(event_seeds())) {
        match v1::Event::decode(input.bytes.as_slice()) {
            Err(e) => assert_prost_error(&input, &e),
            Ok(e) => check_event(&input, &e),
        }
    }

    /// `event_from_pb` with the record JSON itself mutated.
    #[test]
    fn event_record_json_never_panics_and_rejections_name_the_field(input in inputs(corpus("event_record"))) {
        let e = v1::Event { record_json: String::from_utf8_lossy(&input.bytes).into_owned(), ..Default::default() };
        check_event(&input, &e);
    }

    /// The protobuf envelope of the member-to-member Raft RPC (its JSON
    /// content is `claw-log`'s to decode).
    #[test]
    fn raft_payloads_never_panic(input in inputs(raft_payload_seeds())) {
        if let Err(e) = RaftPayload::decode(input.bytes.as_slice()) {
            assert_prost_error(&input, &e);
        }
    }
}

/// Every seed decodes (and every submit seed converts): a stale corpus
/// would test only the error paths.
#[test]
fn every_seed_is_valid() {
    for s in corpus("submit_request") {
        let req = v1::SubmitRequest::decode(s.bytes.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        command_from_pb(req.command).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    for s in corpus("api_request") {
        let name = s.name.trim_start_matches("api_request/").trim_end_matches(".bin");
        decode_api_request(name, &s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    for s in event_seeds() {
        let e = v1::Event::decode(s.bytes.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        event_from_pb(&e).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}
