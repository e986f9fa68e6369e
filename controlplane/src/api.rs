use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Instant;

use claw_analytics::{batches_to_ipc, Analytics};
use claw_commands::{derive_id, Actor, ActorKind, Command, CommandEnvelope, Event, Rejection};
use claw_log::{ApplyResponse, EventFilter, LogNode, ViewTables};
use claw_proto::v1::{self, claw_server::Claw, Consistency};
use claw_proto::{command_from_pb, event_to_pb};
use futures::{Stream, StreamExt};
use openraft::{BasicNode, ChangeMembers};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::forward::{Forwarder, ACTOR_KEY, FORWARDED_KEY, LEADER_KEY};

/// The `claw.v1.Claw` gRPC service of one member. Writes and linearizable
/// reads that reach a follower are forwarded to the leader.
pub struct ClawApi {
    node: LogNode,
    id: u64,
    forward: Forwarder,
    analytics: Analytics,
}

/// Who issued a request. This is the one place that decides it: until
/// authentication lands, the actor is what the client states in the
/// `claw-actor` metadata (`name` or `kind:name`); authentication replaces
/// this function.
pub fn actor_from_request(md: &MetadataMap) -> Result<Actor, Status> {
    let Some(raw) = md.get(ACTOR_KEY) else {
        return Ok(Actor::user("anonymous"));
    };
    let raw = raw.to_str().map_err(|_| Status::invalid_argument("claw-actor metadata must be ASCII"))?;
    let (kind, name) = match raw.split_once(':') {
        Some((k, n)) => (k.parse::<ActorKind>().map_err(Status::invalid_argument)?, n),
        None => (ActorKind::User, raw),
    };
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Status::invalid_argument(format!(
            "claw-actor {raw:?}: the name must be 1 to 128 printable characters without spaces"
        )));
    }
    Ok(Actor { kind, name: name.to_string() })
}

fn rejection_status(r: &Rejection, seq: Option<u64>) -> Status {
    let msg = match seq {
        Some(s) => format!("{r} (rejection recorded as seq {s})"),
        None => r.to_string(),
    };
    match r {
        Rejection::InvalidArgument { .. } => Status::invalid_argument(msg),
        Rejection::NotFound { .. } => Status::not_found(msg),
        Rejection::FailedPrecondition { .. } => Status::failed_precondition(msg),
        Rejection::AlreadyExists { .. } => Status::already_exists(msg),
    }
}

fn unavailable(msg: String, leader_addr: Option<&str>) -> Status {
    let mut st = Status::unavailable(msg);
    if let Some(addr) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
        st.metadata_mut().insert(LEADER_KEY, addr);
    }
    st
}

fn filter_from_pb(f: Option<v1::EventFilter>) -> Result<EventFilter, Status> {
    let f = f.unwrap_or_default();
    for k in &f.kinds {
        if !Event::KINDS.contains(&k.as_str()) {
            return Err(Status::invalid_argument(format!(
                "filter.kinds: unknown event kind {k:?} (known: {})",
                Event::KINDS.join(", ")
            )));
        }
    }
    let opt = |s: String| if s.is_empty() { None } else { Some(s) };
    Ok(EventFilter { kinds: f.kinds, node: opt(f.node), workload: opt(f.workload) })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding the answer failed: {e}")))
}

fn past_state_error(e: claw_log::Error) -> Status {
    match e {
        claw_log::Error::BeyondEnd { .. } | claw_log::Error::Compacted { .. } => Status::out_of_range(e.to_string()),
        other => Status::internal(format!("reading past state failed: {other}")),
    }
}

/// Where a request that needs the leader should go.
enum Route {
    Here,
    Leader(String),
}

impl ClawApi {
    pub fn new(node: LogNode, id: u64, analytics: Analytics) -> Self {
        ClawApi { node, id, forward: Forwarder::default(), analytics }
    }

    fn leader_addr(&self, leader: Option<u64>) -> Option<String> {
        let m = self.node.raft.metrics().borrow().membership_config.clone();
        leader.and_then(|id| m.membership().get_node(&id).map(|n| n.addr.clone()))
    }

    /// Decides where a request that must run on the leader goes, or answers
    /// Unavailable when there is no leader or it was forwarded already.
    fn route(&self, md: &MetadataMap, leader: Option<u64>) -> Result<Route, Status> {
        match leader {
            Some(id) if id == self.id => Ok(Route::Here),
            Some(id) => {
                let addr = self.leader_addr(Some(id));
                if md.get(FORWARDED_KEY).is_some() {
                    return Err(unavailable(
                        format!("member {} is not the leader (leader is member {id}); retry", self.id),
                        addr.as_deref(),
                    ));
                }
                match addr {
                    Some(a) => Ok(Route::Leader(a)),
                    None => Err(unavailable(format!("leader member {id} has no known address; retry"), None)),
                }
            }
            None => Err(unavailable("no leader is elected at the moment; retry shortly".into(), None)),
        }
    }

    fn current_leader(&self) -> Option<u64> {
        self.node.raft.metrics().borrow().current_leader
    }

    /// Makes a read linearizable: confirms leadership with a quorum and waits
    /// until the state machine has applied everything committed before it.
    async fn read_route(&self, md: &MetadataMap, consistency: i32) -> Result<Route, Status> {
        if consistency == Consistency::Stale as i32 {
            return Ok(Route::Here);
        }
        match self.node.raft.ensure_linearizable().await {
            Ok(_) => Ok(Route::Here),
            Err(e) => match e.forward_to_leader() {
                Some(f) => self.route(md, f.leader_id),
                None => Err(unavailable(format!("cannot confirm leadership for a linearizable read: {e}"), None)),
            },
        }
    }

    /// Fills what the server decides for a command: ids derived from the
    /// command id, and the basis of a proposal.
    fn complete(&self, command: &mut Command, command_id: &str) {
        match command {
            Command::SubmitWorkload { workload_id, .. } if workload_id.is_empty() => {
                *workload_id = derive_id("w", command_id)
            }
            Command::RequestHealthCheck { check_id, .. } if check_id.is_empty() => {
                *check_id = derive_id("hc", command_id)
            }
            Command::CreateProposal { proposal_id, basis_seq, .. } => {
                if proposal_id.is_empty() {
                    *proposal_id = derive_id("p", command_id);
                }
                if *basis_seq == 0 {
                    *basis_seq = self.node.store.last_seq();
                }
            }
            _ => {}
        }
    }

    /// Proposes an envelope on this member (which believes it leads).
    async fn propose(&self, env: CommandEnvelope) -> Result<(ApplyResponse, u64), ProposeError> {
        self.node.propose(env).await.map_err(|e| match e {
            claw_log::ProposeError::NotLeader { leader_id } => ProposeError::NotLeader(leader_id),
            claw_log::ProposeError::Other(msg) => {
                ProposeError::Other(Status::unavailable(format!("the write did not commit: {msg}")))
            }
        })
    }

    /// Appends a command on behalf of the cluster itself (e.g. membership records).
    pub async fn propose_system(
        &self,
        actor: Actor,
        command: Command,
        command_id: String,
    ) -> Result<ApplyResponse, Status> {
        let env = CommandEnvelope { correlation_id: command_id.clone(), command_id, actor, time_ms: now_ms(), command };
        match self.propose(env).await {
            Ok((r, _)) => Ok(r),
            Err(ProposeError::NotLeader(l)) => {
                Err(unavailable("leadership moved; retry".into(), self.leader_addr(l).as_deref()))
            }
            Err(ProposeError::Other(s)) => Err(s),
        }
    }
}

enum ProposeError {
    NotLeader(Option<u64>),
    Other(Status),
}

/// The leader's wall clock, milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn submit_response(
    r: ApplyResponse,
    raft_index: u64,
    object_id: String,
) -> Result<Response<v1::SubmitResponse>, Status> {
    if let Some(rej) = &r.rejection {
        return Err(rejection_status(rej, r.events.first().map(|e| e.seq)));
    }
    for e in &r.events {
        if let Event::ProposalSuperseded { proposal_id, reason, .. } = &e.event {
            return Err(Status::failed_precondition(format!(
                "proposal \"{proposal_id}\" was not approved, it is superseded: {reason} (recorded as seq {})",
                e.seq
            )));
        }
    }
    Ok(Response::new(v1::SubmitResponse {
        command_id: r.command_id.clone(),
        object_id,
        events: r.events.iter().map(event_to_pb).collect(),
        duplicate: r.duplicate,
        raft_index,
    }))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchResponse, Status>> + Send + 'static>>;
type QueryStream = Pin<Box<dyn Stream<Item = Result<v1::QueryResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Claw for ClawApi {
    async fn submit(&self, req: Request<v1::SubmitRequest>) -> Result<Response<v1::SubmitResponse>, Status> {
        let actor = actor_from_request(req.metadata())?;
        let md = req.metadata().clone();
        let mut msg = req.into_inner();
        if msg.command_id.is_empty() {
            msg.command_id = uuid::Uuid::now_v7().to_string();
        }
        if msg.command_id.len() > 128 {
            return Err(Status::invalid_argument("command_id: longer than 128 bytes"));
        }
        let mut command = command_from_pb(msg.command.clone()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut leader = self.current_leader();
        for _attempt in 0..3 {
            match self.route(&md, leader)? {
                Route::Leader(addr) => {
                    let mut client = self.forward.client(&addr)?;
                    return client.submit(Forwarder::request(&md, msg)).await;
                }
                Route::Here => {
                    self.complete(&mut command, &msg.command_id);
                    let object_id = match &command {
                        Command::SubmitWorkload { workload_id, .. } => workload_id.clone(),
                        Command::CreateProposal { proposal_id, .. } => proposal_id.clone(),
                        Command::RequestHealthCheck { check_id, .. } => check_id.clone(),
                        _ => String::new(),
                    };
                    let env = CommandEnvelope {
                        command_id: msg.command_id.clone(),
                        actor: actor.clone(),
                        time_ms: now_ms(),
                        correlation_id: if msg.correlation_id.is_empty() {
                            msg.command_id.clone()
                        } else {
                            msg.correlation_id.clone()
                        },
                        command: command.clone(),
                    };
                    match self.propose(env).await {
                        Ok((r, idx)) => return submit_response(r, idx, object_id),
                        Err(ProposeError::NotLeader(l)) => leader = l,
                        Err(ProposeError::Other(s)) => return Err(s),
                    }
                }
            }
        }
        Err(unavailable("leadership kept moving while submitting; retry".into(), self.leader_addr(leader).as_deref()))
    }

    async fn get_object(&self, req: Request<v1::GetObjectRequest>) -> Result<Response<v1::GetObjectResponse>, Status> {
        if let Route::Leader(addr) = self.read_route(req.metadata(), req.get_ref().consistency).await? {
            let md = req.metadata().clone();
            return self.forward.client(&addr)?.get_object(Forwarder::request(&md, req.into_inner())).await;
        }
        let r = req.into_inner();
        let (json, seq) = self.node.store.with_view(|v| {
            let json = match r.kind.as_str() {
                "workload" => v.find_workload(&r.id).map(to_json),
                "proposal" => v.proposals.get(&r.id).map(to_json),
                "node" => v.nodes.get(&r.id).map(to_json),
                "member" => r.id.parse::<u64>().ok().and_then(|id| v.members.get(&id)).map(to_json),
                "incident" => v.incident_detail(&r.id).map(|d| to_json(&d)),
                other => {
                    return (
                        Some(Err(Status::invalid_argument(format!(
                            "kind: {other:?} is not one of workload, proposal, node, member, incident"
                        )))),
                        v.last_seq,
                    )
                }
            };
            (json, v.last_seq)
        });
        match json {
            Some(j) => Ok(Response::new(v1::GetObjectResponse { json: j?, as_of_seq: seq })),
            None => Err(Status::not_found(format!("{} \"{}\" not found (see: clawctl {} list)", r.kind, r.id, r.kind))),
        }
    }

    async fn list_objects(
        &self,
        req: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        if let Route::Leader(addr) = self.read_route(req.metadata(), req.get_ref().consistency).await? {
            let md = req.metadata().clone();
            return self.forward.client(&addr)?.list_objects(Forwarder::request(&md, req.into_inner())).await;
        }
        let r = req.into_inner();
        let (items, seq) = self.node.store.with_view(|v| {
            let items: Result<Vec<String>, Status> = match r.kind.as_str() {
                "workload" => v
                    .workloads
                    .values()
                    .filter(|w| r.node.is_empty() || w.node.as_deref() == Some(r.node.as_str()))
                    .map(to_json)
                    .collect(),
                "proposal" => v.proposals.values().map(to_json).collect(),
                "node" => v.nodes.values().map(to_json).collect(),
                "member" => v.members.values().map(to_json).collect(),
                "incident" => {
                    v.incidents.values().filter(|i| r.node.is_empty() || i.node == r.node).map(to_json).collect()
                }
                "gpu" => v.gpus().iter().filter(|g| r.node.is_empty() || g.node == r.node).map(to_json).collect(),
                other => Err(Status::invalid_argument(format!(
                    "kind: {other:?} is not one of workload, proposal, node, member, incident, gpu"
                ))),
            };
            (items, v.last_seq)
        });
        Ok(Response::new(v1::ListObjectsResponse { items_json: items?, as_of_seq: seq }))
    }

    async fn list_events(
        &self,
        req: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        if let Route::Leader(addr) = self.read_route(req.metadata(), req.get_ref().consistency).await? {
            let md = req.metadata().clone();
            return self.forward.client(&addr)?.list_events(Forwarder::request(&md, req.into_inner())).await;
        }
        let r = req.into_inner();
        let filter = filter_from_pb(r.filter)?;
        let from = r.from_seq.max(1);
        let oldest = self.node.store.oldest_seq();
        if from < oldest {
            return Err(Status::out_of_range(format!("from_seq {from} is compacted, oldest available is {oldest}")));
        }
        let to = if r.to_seq == 0 { None } else { Some(r.to_seq) };
        if let Some(t) = to {
            if t < from {
                return Err(Status::invalid_argument(format!("to_seq {t} is before from_seq {from}")));
            }
        }
        let limit = if r.limit == 0 { 1000 } else { r.limit.min(10_000) } as usize;
        let last_seq = self.node.store.last_seq();
        let events = self
            .node
            .store
            .events(from, to, limit, &filter)
            .map_err(|e| Status::internal(format!("reading events failed: {e}")))?;
        Ok(Response::new(v1::ListEventsResponse { events: events.iter().map(event_to_pb).collect(), last_seq }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let filter = filter_from_pb(r.filter)?;
        let from = r.from_seq.max(1);
        let oldest = self.node.store.oldest_seq();
        if from < oldest {
            return Err(Status::out_of_range(format!("from_seq {from} is compacted, oldest available is {oldest}")));
        }
        let stream = self.node.store.watch(from, filter).map(|item| match item {
            Ok(rec) => Ok(v1::WatchResponse { event: Some(event_to_pb(&rec)) }),
            Err(claw_log::Error::Compacted { requested, oldest }) => {
                Err(Status::out_of_range(format!("seq {requested} is compacted, oldest available is {oldest}")))
            }
            Err(e) => Err(Status::internal(format!("watch failed: {e}"))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cluster_status(
        &self,
        _req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let committed =
            self.node.raft.with_raft_state(|s| s.committed.map(|l| l.index).unwrap_or(0)).await.unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| v1::Member {
                id: *id,
                addr: n.addr.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                leader: m.current_leader == Some(*id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0),
            })
            .collect();
        Ok(Response::new(v1::ClusterStatusResponse {
            member_id: self.id,
            state: format!("{:?}", m.state),
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr: self.leader_addr(m.current_leader).unwrap_or_default(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: committed,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_seq: self.node.store.last_seq(),
            members,
            last_hash: self.node.store.last_hash(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn get_state(&self, req: Request<v1::GetStateRequest>) -> Result<Response<v1::GetStateResponse>, Status> {
        if let Route::Leader(addr) = self.read_route(req.metadata(), req.get_ref().consistency).await? {
            let md = req.metadata().clone();
            return self.forward.client(&addr)?.get_state(Forwarder::request(&md, req.into_inner())).await;
        }
        let req = req.into_inner();
        let detail = v1::StateDetail::try_from(req.detail)
            .map_err(|_| Status::invalid_argument(format!("unknown state detail {}", req.detail)))?;
        let at = req.at;
        let store = self.node.store.clone();
        // A past state is a checkpoint load plus a bounded replay: blocking
        // IO; encoding a long history's view takes a while too.
        let response = tokio::task::spawn_blocking(move || {
            let last_seq = store.last_seq();
            let seq = match at {
                None => last_seq,
                Some(v1::get_state_request::At::Seq(seq)) => seq,
                Some(v1::get_state_request::At::TimeMs(t)) => store.seq_at_time(t).map_err(past_state_error)?,
            };
            let started = Instant::now();
            let view = match detail {
                v1::StateDetail::Head => {
                    let time_ms = store.time_at(seq).map_err(past_state_error)?;
                    return Ok(v1::GetStateResponse {
                        view_json: String::new(),
                        seq,
                        time_ms,
                        last_seq,
                        ..Default::default()
                    });
                }
                v1::StateDetail::Summaries => store.view_at_summaries(seq, ViewTables::ALL),
                v1::StateDetail::Full => store.view_at(seq),
            }
            .map_err(past_state_error)?;
            let build_us = micros(started);
            let started = Instant::now();
            let view_json = to_json(&view)?;
            Ok::<_, Status>(v1::GetStateResponse {
                view_json,
                seq: view.last_seq,
                time_ms: view.last_time_ms,
                last_seq,
                build_us,
                encode_us: micros(started),
            })
        })
        .await
        .map_err(|e| Status::internal(format!("state read task failed: {e}")))??;
        Ok(Response::new(response))
    }

    type QueryStream = QueryStream;

    async fn query(&self, req: Request<v1::QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        if let Route::Leader(addr) = self.read_route(req.metadata(), req.get_ref().consistency).await? {
            let md = req.metadata().clone();
            let stream = self.forward.client(&addr)?.query(Forwarder::request(&md, req.into_inner())).await?;
            return Ok(Response::new(Box::pin(stream.into_inner())));
        }
        let sql = req.into_inner().sql;
        // Planning errors (syntax, unknown table or column) are the user's:
        // InvalidArgument with DataFusion's message and position.
        let mut batches = self.analytics.query_stream(&sql).await.map_err(Status::from)?;
        let schema = batches.schema();
        let stream = async_stream::stream! {
            let mut sent = false;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| Status::from(claw_analytics::Error::from(e)))?;
                let bytes = batches_to_ipc(&schema, &[batch]).map_err(Status::from)?;
                sent = true;
                yield Ok(v1::QueryResponse { arrow_ipc: bytes });
            }
            if !sent {
                yield batches_to_ipc(&schema, &[]).map(|bytes| v1::QueryResponse { arrow_ipc: bytes }).map_err(Status::from);
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn add_member(&self, req: Request<v1::AddMemberRequest>) -> Result<Response<v1::AddMemberResponse>, Status> {
        let actor = actor_from_request(req.metadata())?;
        let md = req.metadata().clone();
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: member ids start at 1"));
        }
        let valid_addr =
            r.addr.rsplit_once(':').map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()).unwrap_or(false);
        if !valid_addr {
            return Err(Status::invalid_argument(format!("addr: {:?} must be host:port", r.addr)));
        }
        if let Route::Leader(addr) = self.route(&md, self.current_leader())? {
            return self.forward.client(&addr)?.add_member(Forwarder::request(&md, r)).await;
        }
        let raft = &self.node.raft;
        let already_voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == r.id);
        if !already_voter {
            raft.add_learner(r.id, BasicNode::new(r.addr.clone()), true)
                .await
                .map_err(|e| Status::failed_precondition(format!("adding member {} as learner failed: {e}", r.id)))?;
        }
        if r.voter && !already_voter {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([r.id])), false)
                .await
                .map_err(|e| Status::failed_precondition(format!("promoting member {} to voter failed: {e}", r.id)))?;
        }
        let command =
            Command::RecordMemberAdded { member_id: r.id, addr: r.addr.clone(), voter: r.voter || already_voter };
        let command_id = format!("member-{}-{}-{}", r.id, if r.voter { "voter" } else { "learner" }, now_ms());
        self.propose_system(actor, command, command_id).await?;
        let status = self.cluster_status(Request::new(v1::ClusterStatusRequest {})).await?.into_inner();
        Ok(Response::new(v1::AddMemberResponse { members: status.members }))
    }
}

/// Microseconds since `started`.
fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_comes_from_metadata() {
        let mut md = MetadataMap::new();
        assert_eq!(actor_from_request(&md).unwrap(), Actor::user("anonymous"));
        md.insert(ACTOR_KEY, MetadataValue::from_static("alice"));
        assert_eq!(actor_from_request(&md).unwrap(), Actor::user("alice"));
        md.insert(ACTOR_KEY, MetadataValue::from_static("scheduler:binpack"));
        assert_eq!(actor_from_request(&md).unwrap().kind, ActorKind::Scheduler);
        md.insert(ACTOR_KEY, MetadataValue::from_static("robot:x"));
        assert_eq!(actor_from_request(&md).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn rejections_map_to_grpc_codes() {
        assert_eq!(rejection_status(&Rejection::not_found("workload", "w"), Some(3)).code(), tonic::Code::NotFound);
        let s = rejection_status(&Rejection::invalid("spec.image", "must not be empty"), Some(4));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("spec.image") && s.message().contains("seq 4"), "{}", s.message());
    }
}
