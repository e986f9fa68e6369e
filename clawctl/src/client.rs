//! The connection to `clawd`: one channel, the actor sent as metadata on
//! every request, idempotent retries for submits, and decoding of the
//! answers into domain types.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use claw_commands::{Event, EventRecord};
use claw_proto::v1::{self, claw_client::ClawClient, submit_request, Consistency};
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::events::summary;

/// The gRPC metadata key that names who is acting. `clawd` records it as
/// the actor of every command (as a user) and may use it for access checks.
pub const ACTOR_METADATA_KEY: &str = "claw-actor";

/// Set by clawd on `Unavailable` answers: the leader's address, when known.
pub const LEADER_METADATA_KEY: &str = "claw-leader";

/// How often a submit is retried after `Unavailable` (a leader change, a
/// member restarting). Retrying is safe because every attempt carries the
/// same command id, so the log applies the command at most once.
const SUBMIT_RETRIES: u32 = 3;

/// Adds `claw-actor` to every request, unary and streaming alike, so no
/// call site can forget it.
#[derive(Clone)]
pub struct ActorInterceptor {
    actor: MetadataValue<Ascii>,
}

impl ActorInterceptor {
    pub fn new(actor: &str) -> Result<Self> {
        // The same rule clawd applies; checking here names the flag. HTTP
        // header values would let non-ASCII bytes through, so check first.
        if actor.is_empty() || actor.len() > 128 || !actor.chars().all(|c| c.is_ascii_graphic()) {
            bail!(
                "--as {actor:?}: the actor must be 1 to 128 printable ASCII characters without spaces \
                 (it travels as the gRPC header {ACTOR_METADATA_KEY})"
            );
        }
        let actor = MetadataValue::try_from(actor).map_err(|e| anyhow!("--as {actor:?}: {e}"))?;
        Ok(ActorInterceptor { actor })
    }
}

impl Interceptor for ActorInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert(ACTOR_METADATA_KEY, self.actor.clone());
        Ok(request)
    }
}

pub type Grpc = ClawClient<InterceptedService<Channel, ActorInterceptor>>;

/// Where and as whom to connect, from the global flags.
#[derive(Clone, Debug)]
pub struct Target {
    pub server: String,
    pub actor: String,
    pub stale: bool,
}

impl Target {
    pub fn consistency(&self) -> i32 {
        if self.stale {
            Consistency::Stale as i32
        } else {
            Consistency::Linearizable as i32
        }
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let uri = if self.server.contains("://") { self.server.clone() } else { format!("http://{}", self.server) };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| anyhow!("--server {:?} is not a valid address: {}", self.server, error_chain(&e)))?;
        Ok(endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Keeps `events --follow` alive through idle NAT/proxy timeouts.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }

    /// Opens a new HTTP/2 connection. Connecting eagerly gives the operator
    /// one clear message when `clawd` is not there, instead of a transport
    /// error on the first call.
    pub async fn channel(&self) -> Result<Channel> {
        let endpoint = self.endpoint()?;
        endpoint.connect().await.map_err(|e| {
            anyhow!("cannot reach clawd at {}: {} (is clawd running? see --server)", self.server, error_chain(&e))
        })
    }

    pub fn client_on(&self, channel: Channel) -> Result<Client> {
        let grpc = ClawClient::with_interceptor(channel, ActorInterceptor::new(&self.actor)?)
            // A page of 1000 events with large payloads can exceed tonic's 4 MiB
            // default, and the whole view of a long history (GetState: every
            // workload ever submitted, with its placement reasons) reaches
            // ~70 MiB at 10 M events.
            .max_decoding_message_size(1 << 30);
        Ok(Client { grpc, consistency: self.consistency() })
    }

    pub async fn connect(&self) -> Result<Client> {
        // Validate --as before touching the network, so a bad flag is
        // reported as such even when clawd is down.
        ActorInterceptor::new(&self.actor)?;
        let channel = self.channel().await?;
        self.client_on(channel)
    }
}

/// A cheap-to-clone handle on one connection.
#[derive(Clone)]
pub struct Client {
    pub grpc: Grpc,
    consistency: i32,
}

/// A submit's answer with its events decoded.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitOutcome {
    pub command_id: String,
    pub object_id: String,
    pub duplicate: bool,
    pub raft_index: u64,
    pub seqs: Vec<u64>,
    pub events: Vec<EventRecord>,
}

impl SubmitOutcome {
    /// Said after the result when the server answered from its idempotency
    /// record rather than applying the command now.
    pub fn duplicate_note(&self) -> &'static str {
        if self.duplicate {
            " [already applied: this command id was submitted before]"
        } else {
            ""
        }
    }

    /// `seq 12 WorkloadCancelRequested w-1 reason="…"`, one line per event.
    pub fn events_lines(&self) -> String {
        if self.events.is_empty() {
            return format!("no events{}", self.duplicate_note());
        }
        let mut lines: Vec<String> =
            self.events.iter().map(|r| format!("seq {} {} {}", r.seq, r.event.kind(), summary(&r.event))).collect();
        if self.duplicate {
            lines.push(self.duplicate_note().trim().to_string());
        }
        lines.join("\n")
    }

    /// `seq 12`, or `seqs 12, 13` when the command produced several events.
    pub fn seq_text(&self) -> String {
        match self.seqs.as_slice() {
            [] => "no events".to_string(),
            [one] => format!("seq {one}"),
            many => format!("seqs {}", many.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// A fresh idempotency key. UUIDv7 sorts by time, which keeps the keys the
/// server stores in roughly insertion order.
pub fn new_command_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Wait before retry number `attempt` (1-based): 100 ms, 200 ms, 400 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.saturating_sub(1).min(6))
}

impl Client {
    pub fn consistency(&self) -> i32 {
        self.consistency
    }

    /// Submits `command` under `command_id` (a fresh one when `None`),
    /// retrying the same id on `Unavailable`.
    pub async fn submit(&self, command_id: Option<String>, command: submit_request::Command) -> Result<SubmitOutcome> {
        let request = v1::SubmitRequest {
            command_id: command_id.unwrap_or_else(new_command_id),
            correlation_id: String::new(),
            command: Some(command),
        };
        let response = self.submit_raw(request).await?;
        let outcome = decode_submit(response)?;
        check_rejected(&outcome)?;
        Ok(outcome)
    }

    /// The retry loop alone, for callers (the bench) that measure it.
    pub async fn submit_raw(&self, request: v1::SubmitRequest) -> Result<v1::SubmitResponse, Status> {
        let mut attempt = 0;
        loop {
            let mut grpc = self.grpc.clone();
            match grpc.submit(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable && attempt < SUBMIT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(status) => return Err(status),
            }
        }
    }

    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusResponse> {
        Ok(self.grpc.clone().cluster_status(v1::ClusterStatusRequest {}).await?.into_inner())
    }

    /// One projection row, deserialised from the JSON the server sends.
    pub async fn get_object<T: serde::de::DeserializeOwned>(&self, kind: &str, id: &str) -> Result<T, GetError> {
        let request =
            v1::GetObjectRequest { kind: kind.to_string(), id: id.to_string(), consistency: self.consistency };
        match self.grpc.clone().get_object(request).await {
            Ok(response) => serde_json::from_str(&response.into_inner().json)
                .map_err(|e| GetError::Other(anyhow!("clawd sent a {kind} this clawctl cannot read: {e}"))),
            Err(status) if status.code() == Code::NotFound => Err(GetError::NotFound),
            Err(status) => Err(GetError::Other(status.into())),
        }
    }

    pub async fn list_objects<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        let request =
            v1::ListObjectsRequest { kind: kind.to_string(), consistency: self.consistency, node: String::new() };
        let response = self.grpc.clone().list_objects(request).await?.into_inner();
        response
            .items_json
            .iter()
            .map(|item| {
                serde_json::from_str(item).with_context(|| format!("clawd sent a {kind} this clawctl cannot read"))
            })
            .collect()
    }
}

/// `get_object` tells "not there" apart so callers can try another lookup
/// (a workload by name) or say what to do next.
#[derive(Debug)]
pub enum GetError {
    NotFound,
    Other(anyhow::Error),
}

impl GetError {
    /// Turns NotFound into the user-facing message for `kind` `id`.
    pub fn or_not_found(self, kind: &str, id: &str) -> anyhow::Error {
        match self {
            GetError::NotFound => anyhow!("{kind} {id:?} not found (see: clawctl {kind} list)"),
            GetError::Other(e) => e,
        }
    }
}

pub fn decode_events(events: &[v1::Event]) -> Result<Vec<EventRecord>> {
    events
        .iter()
        .map(|e| claw_proto::event_from_pb(e).with_context(|| format!("cannot decode event seq {}", e.seq)))
        .collect()
}

pub fn decode_submit(response: v1::SubmitResponse) -> Result<SubmitOutcome> {
    let events = decode_events(&response.events)?;
    // The creating event is authoritative for the new object's id, should
    // the server leave `object_id` empty.
    let object_id = if response.object_id.is_empty() {
        events.iter().find_map(|r| created_object(&r.event)).unwrap_or_default()
    } else {
        response.object_id
    };
    Ok(SubmitOutcome {
        command_id: response.command_id,
        object_id,
        duplicate: response.duplicate,
        raft_index: response.raft_index,
        seqs: events.iter().map(|e| e.seq).collect(),
        events,
    })
}

fn created_object(event: &Event) -> Option<String> {
    match event {
        Event::WorkloadSubmitted { workload_id, .. } => Some(workload_id.clone()),
        Event::ProposalCreated { proposal_id, .. } => Some(proposal_id.clone()),
        Event::GpuHealthCheckRequested { check_id, .. } => Some(check_id.clone()),
        _ => None,
    }
}

/// The proto says rejections come back as error statuses, but a duplicate
/// submit of a command that was rejected the first time may answer with the
/// recorded `CommandRejected`; either way the operator sees a failure.
pub fn check_rejected(outcome: &SubmitOutcome) -> Result<()> {
    for record in &outcome.events {
        if let Event::CommandRejected { command_kind, rejection } = &record.event {
            bail!("{command_kind} rejected: {rejection} (recorded at seq {})", record.seq);
        }
    }
    Ok(())
}

/// `a: b: c` from an error and its sources, skipping tonic's uninformative
/// top-level "transport error".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        // Hyper and tonic repeat their source's text in their own message
        // at times; keep each piece once.
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// The line `main` prints for a failed command: gRPC errors as their
/// message and code, anything else as its context chain.
pub fn describe_error(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<Status>() {
        return describe_status(status);
    }
    format!("{err:#}")
}

pub fn describe_status(status: &Status) -> String {
    let message = status.message();
    let code = status.code();
    if code == Code::Unavailable {
        // clawd names the leader when it cannot forward to it itself.
        if let Some(leader) = status.metadata().get(LEADER_METADATA_KEY).and_then(|v| v.to_str().ok()) {
            return format!("{message} (code: Unavailable; the leader is at {leader}, try --server {leader})");
        }
        if is_connection_failure(message) {
            return format!("{message} (code: Unavailable; is clawd running? see --server)");
        }
    }
    if message.is_empty() {
        format!("{} (code: {code:?})", code.description())
    } else {
        format!("{message} (code: {code:?})")
    }
}

fn is_connection_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("connect") || m.contains("connection") || m.contains("transport")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeClaw;

    #[test]
    fn interceptor_sets_the_actor_header() {
        let mut interceptor = ActorInterceptor::new("alice").unwrap();
        let request = interceptor.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get(ACTOR_METADATA_KEY).unwrap(), "alice");
    }

    #[test]
    fn actor_must_be_ascii_and_non_empty() {
        assert!(ActorInterceptor::new("").is_err());
        for bad in ["zoë", "a b", "a\n"] {
            let err = ActorInterceptor::new(bad).err().unwrap().to_string();
            assert!(err.contains("--as"), "{err}");
        }
        assert!(ActorInterceptor::new("scheduler:binpack").is_ok());
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
    }

    #[test]
    fn command_ids_are_uuid_v7() {
        let id = uuid::Uuid::parse_str(&new_command_id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_ne!(new_command_id(), new_command_id());
    }

    #[test]
    fn statuses_print_message_and_code() {
        let s = Status::not_found("workload \"w-7\" not found");
        assert_eq!(describe_status(&s), "workload \"w-7\" not found (code: NotFound)");
        let s = Status::failed_precondition("");
        assert!(describe_status(&s).ends_with("(code: FailedPrecondition)"));
        let mut s = Status::unavailable("not the leader");
        s.metadata_mut().insert(LEADER_METADATA_KEY, MetadataValue::from_static("10.0.0.2:7400"));
        assert!(describe_status(&s).ends_with("try --server 10.0.0.2:7400)"), "{}", describe_status(&s));
        let err: anyhow::Error = Status::invalid_argument("invalid spec.name").into();
        assert_eq!(describe_error(&err), "invalid spec.name (code: InvalidArgument)");
    }

    #[test]
    fn server_addresses_get_a_scheme() {
        let target = Target { server: "127.0.0.1:7400".into(), actor: "a".into(), stale: false };
        assert_eq!(target.endpoint().unwrap().uri().to_string(), "http://127.0.0.1:7400/");
        let target = Target { server: "https://claw.example:7400".into(), ..target };
        assert_eq!(target.endpoint().unwrap().uri().to_string(), "https://claw.example:7400/");
    }

    fn intent() -> submit_request::Command {
        submit_request::Command::StateIntent(v1::StateIntent { text: "hi".into() })
    }

    #[tokio::test]
    async fn every_request_carries_the_actor() {
        let client = FakeClaw::default().serve().await.connect().await.unwrap();
        // The fake echoes the header it saw as the status's `state`.
        assert_eq!(client.cluster_status().await.unwrap().state, "alice");
    }

    #[tokio::test]
    async fn unavailable_submits_retry_with_the_same_command_id() {
        let fake = FakeClaw::default();
        fake.state().unavailable_submits = 2;
        let client = fake.clone().serve().await.connect().await.unwrap();
        let outcome = client.submit(Some("cmd-1".into()), intent()).await.unwrap();
        assert_eq!(outcome.seqs, vec![1]);
        let submits = fake.state().submits.clone();
        assert_eq!(submits, vec![("alice".to_string(), "cmd-1".to_string()); 3]);
    }

    #[tokio::test]
    async fn submits_give_up_after_three_retries() {
        let fake = FakeClaw::default();
        fake.state().unavailable_submits = 10;
        let client = fake.clone().serve().await.connect().await.unwrap();
        let err = client.submit(None, intent()).await.unwrap_err();
        assert_eq!(err.downcast_ref::<Status>().map(Status::code), Some(Code::Unavailable));
        let submits = fake.state().submits.clone();
        assert_eq!(submits.len(), 4);
        assert!(submits.iter().all(|s| s == &submits[0]), "{submits:?}");
    }

    #[test]
    fn submit_outcomes_name_the_created_object() {
        let record = claw_commands::EventRecord::seal(
            7,
            7,
            0,
            claw_commands::Actor::user("alice"),
            "c".into(),
            "c".into(),
            Event::WorkloadSubmitted { workload_id: "w-9".into(), spec: Default::default() },
            claw_commands::GENESIS_HASH.into(),
        );
        let response = v1::SubmitResponse {
            command_id: "c".into(),
            events: vec![claw_proto::event_to_pb(&record)],
            raft_index: 7,
            ..Default::default()
        };
        let outcome = decode_submit(response).unwrap();
        assert_eq!((outcome.object_id.as_str(), outcome.seq_text()), ("w-9", "seq 7".to_string()));
        let json = crate::output::render_value(crate::output::Format::Json, &outcome).unwrap();
        assert!(json.contains("\"seqs\": [\n    7\n  ]") && json.contains("\"kind\": \"WorkloadSubmitted\""), "{json}");
    }

    #[test]
    fn recorded_rejections_fail_the_command() {
        let record = claw_commands::EventRecord::seal(
            3,
            3,
            0,
            claw_commands::Actor::user("alice"),
            "c".into(),
            "c".into(),
            Event::CommandRejected {
                command_kind: "SubmitWorkload".into(),
                rejection: claw_commands::Rejection::invalid("spec.name", "must not be empty"),
            },
            claw_commands::GENESIS_HASH.into(),
        );
        let outcome = decode_submit(v1::SubmitResponse {
            events: vec![claw_proto::event_to_pb(&record)],
            duplicate: true,
            ..Default::default()
        })
        .unwrap();
        let err = check_rejected(&outcome).unwrap_err().to_string();
        assert!(err.contains("spec.name") && err.contains("seq 3"), "{err}");
    }
}
