//! An in-process stand-in for `clawd`'s gRPC surface, so tests exercise the
//! client's wire behaviour (metadata, retries, paging) over a real HTTP/2
//! connection. It implements the protocol, not the rules: the real server's
//! behaviour is tested in `claw-tests` against `clawd` itself.

use std::sync::{Arc, Mutex};

use claw_commands::{Actor, Event, EventRecord, GENESIS_HASH};
use claw_proto::v1::{self, claw_server::Claw, claw_server::ClawServer};
use tonic::{Request, Response, Status};

use crate::client::{Target, ACTOR_METADATA_KEY};

/// What the fake saw and how it should answer.
#[derive(Default)]
pub struct State {
    /// (actor header, command id) of every Submit attempt.
    pub submits: Vec<(String, String)>,
    /// Answer this many Submits with Unavailable before succeeding.
    pub unavailable_submits: usize,
    pub events: Vec<EventRecord>,
}

#[derive(Clone, Default)]
pub struct FakeClaw {
    pub state: Arc<Mutex<State>>,
}

impl FakeClaw {
    /// Serves on an ephemeral port; returns a target pointing at it.
    pub async fn serve(self) -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder().add_service(ClawServer::new(self)).serve_with_incoming(incoming),
        );
        Target { server: addr.to_string(), actor: "alice".into(), stale: false }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

/// A valid hash chain of `n` intents.
pub fn chain(n: u64) -> Vec<EventRecord> {
    let mut prev = GENESIS_HASH.to_string();
    (1..=n)
        .map(|seq| {
            let r = EventRecord::seal(
                seq,
                seq,
                1_700_000_000_000 + seq as i64,
                Actor::user("alice"),
                format!("c-{seq}"),
                format!("c-{seq}"),
                Event::IntentStated { text: format!("intent {seq}") },
                prev.clone(),
            );
            prev = r.hash.clone();
            r
        })
        .collect()
}

fn actor<T>(request: &Request<T>) -> String {
    request.metadata().get(ACTOR_METADATA_KEY).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

#[tonic::async_trait]
impl Claw for FakeClaw {
    async fn submit(&self, request: Request<v1::SubmitRequest>) -> Result<Response<v1::SubmitResponse>, Status> {
        let mut state = self.state();
        let command_id = request.get_ref().command_id.clone();
        state.submits.push((actor(&request), command_id.clone()));
        if state.unavailable_submits > 0 {
            state.unavailable_submits -= 1;
            return Err(Status::unavailable("leader changed"));
        }
        let seq = state.events.len() as u64 + 1;
        let prev = state.events.last().map_or(GENESIS_HASH.to_string(), |e| e.hash.clone());
        let text = match request.into_inner().command {
            Some(v1::submit_request::Command::StateIntent(i)) => i.text,
            _ => return Err(Status::unimplemented("the fake only takes intents")),
        };
        let record = EventRecord::seal(
            seq,
            seq,
            0,
            Actor::user("alice"),
            command_id.clone(),
            command_id.clone(),
            Event::IntentStated { text },
            prev,
        );
        state.events.push(record.clone());
        Ok(Response::new(v1::SubmitResponse {
            command_id,
            object_id: String::new(),
            events: vec![claw_proto::event_to_pb(&record)],
            duplicate: false,
            raft_index: seq,
        }))
    }

    async fn get_object(&self, _: Request<v1::GetObjectRequest>) -> Result<Response<v1::GetObjectResponse>, Status> {
        Err(Status::not_found("nothing here"))
    }

    async fn list_objects(
        &self,
        _: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        Ok(Response::new(v1::ListObjectsResponse::default()))
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let state = self.state();
        let to = if r.to_seq == 0 { u64::MAX } else { r.to_seq };
        let limit = if r.limit == 0 { 1000 } else { r.limit } as usize;
        let events = state
            .events
            .iter()
            .filter(|e| e.seq >= r.from_seq && e.seq <= to)
            .take(limit)
            .map(claw_proto::event_to_pb)
            .collect();
        Ok(Response::new(v1::ListEventsResponse { events, last_seq: state.events.len() as u64 }))
    }

    type WatchStream = futures::stream::Iter<std::vec::IntoIter<Result<v1::WatchResponse, Status>>>;

    async fn watch(&self, _: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        // Echo the actor back through `state`, so a test can see the header
        // arrived on a non-submit call too.
        Ok(Response::new(v1::ClusterStatusResponse { state: actor(&request), ..Default::default() }))
    }

    async fn add_member(&self, _: Request<v1::AddMemberRequest>) -> Result<Response<v1::AddMemberResponse>, Status> {
        Err(Status::unimplemented("add_member"))
    }

    async fn get_state(&self, _: Request<v1::GetStateRequest>) -> Result<Response<v1::GetStateResponse>, Status> {
        Err(Status::unimplemented("get_state"))
    }

    type QueryStream = futures::stream::Iter<std::vec::IntoIter<Result<v1::QueryResponse, Status>>>;

    async fn query(&self, _: Request<v1::QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        Err(Status::unimplemented("query"))
    }
}
