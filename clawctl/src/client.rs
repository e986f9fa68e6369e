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

/// The gRPC metadata key that names who is acting. `clawd` records it as
/// the actor of every command (as a user) and may use it for access checks.
pub const ACTOR_METADATA_KEY: &str = "claw-actor";

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
        if actor.is_empty() {
            bail!("--as must not be empty");
        }
        let actor = MetadataValue::try_from(actor).map_err(|_| {
            anyhow!("--as {actor:?} must be printable ASCII (it travels as the gRPC header {ACTOR_METADATA_KEY})")
        })?;
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
            // A page of 1000 events with large payloads can exceed tonic's 4 MiB default.
            .max_decoding_message_size(64 * 1024 * 1024);
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
    pub fn first_seq(&self) -> Option<u64> {
        self.seqs.first().copied()
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
        let request = v1::GetObjectRequest { kind: kind.to_string(), id: id.to_string(), consistency: self.consistency };
        match self.grpc.clone().get_object(request).await {
            Ok(response) => serde_json::from_str(&response.into_inner().json)
                .map_err(|e| GetError::Other(anyhow!("clawd sent a {kind} this clawctl cannot read: {e}"))),
            Err(status) if status.code() == Code::NotFound => Err(GetError::NotFound),
            Err(status) => Err(GetError::Other(status.into())),
        }
    }

    pub async fn list_objects<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        let request = v1::ListObjectsRequest { kind: kind.to_string(), consistency: self.consistency };
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
    Ok(SubmitOutcome {
        command_id: response.command_id,
        object_id: response.object_id,
        duplicate: response.duplicate,
        raft_index: response.raft_index,
        seqs: events.iter().map(|e| e.seq).collect(),
        events,
    })
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
    if code == Code::Unavailable && is_connection_failure(message) {
        return format!("{message} (code: Unavailable; is clawd running? see --server)");
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

    #[test]
    fn interceptor_sets_the_actor_header() {
        let mut interceptor = ActorInterceptor::new("alice").unwrap();
        let request = interceptor.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get(ACTOR_METADATA_KEY).unwrap(), "alice");
    }

    #[test]
    fn actor_must_be_ascii_and_non_empty() {
        assert!(ActorInterceptor::new("").is_err());
        let err = ActorInterceptor::new("zoë\n").err().unwrap().to_string();
        assert!(err.contains("--as"), "{err}");
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
}
