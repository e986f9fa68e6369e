use std::pin::Pin;
use std::time::Instant;

use claw_proto::raft::raft_server::Raft;
use claw_proto::raft::RaftPayload;
use futures::Stream;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::db::{encode_as, unpack, PACKED};
use crate::{ClawRaft, TypeConfig};

/// The member-to-member Raft RPC server: it decodes openraft's requests
/// (MessagePack, or JSON from a member of an earlier version), hands them to
/// the local raft, and encodes the answer (or the raft error, in
/// `RaftPayload.error`) in the request's format, so a member of an earlier
/// version, which reads only JSON, can still talk to this one during a
/// rolling upgrade.
#[derive(Clone)]
pub struct RaftRpcService {
    raft: ClawRaft,
    /// Where each AppendEntries' handling time goes, if anywhere.
    append_seconds: Option<Histogram>,
}

impl RaftRpcService {
    pub fn new(raft: ClawRaft) -> Self {
        RaftRpcService { raft, append_seconds: None }
    }

    /// Observes each AppendEntries' handling time in `histogram`.
    pub(crate) fn with_append_histogram(mut self, histogram: Histogram) -> Self {
        self.append_seconds = Some(histogram);
        self
    }
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, Status> {
    unpack(&payload.data).map_err(|e| Status::invalid_argument(format!("RaftPayload.data is not a valid {what}: {e}")))
}

/// Whether `request` came as MessagePack (else JSON, from an earlier version).
fn packed(request: &RaftPayload) -> bool {
    request.data.first() == Some(&PACKED)
}

/// The answer to a request: raft's response in `data`, or its error in
/// `error`, in the request's format.
pub(crate) fn answer<T: Serialize, E: Serialize>(result: Result<T, E>, packed: bool) -> Result<RaftPayload, Status> {
    let failed = |what: &str, e: String| Status::internal(format!("cannot encode raft {what}: {e}"));
    Ok(match result {
        Ok(v) => RaftPayload { data: encode_as(&v, packed).map_err(|e| failed("response", e))?, error: Vec::new() },
        Err(e) => RaftPayload { data: Vec::new(), error: encode_as(&e, packed).map_err(|e| failed("error", e))? },
    })
}

/// One AppendEntries, whether it came alone or on a stream.
async fn append(raft: &ClawRaft, request: &RaftPayload, seconds: Option<&Histogram>) -> Result<RaftPayload, Status> {
    let started = Instant::now();
    let rpc: AppendEntriesRequest<TypeConfig> = decode(request, "AppendEntriesRequest")?;
    let answer = answer(raft.append_entries(rpc).await, packed(request));
    if let Some(seconds) = seconds {
        seconds.observe(started.elapsed().as_secs_f64());
    }
    answer
}

/// The answers on an AppendEntries stream.
pub type AppendEntriesReplies = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Raft for RaftRpcService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        append(&self.raft, request.get_ref(), self.append_seconds.as_ref()).await.map(Response::new)
    }

    type AppendEntriesStreamStream = AppendEntriesReplies;

    /// Answers each request on the stream in turn, in the order they came.
    /// The answers are produced as hyper asks for the next one, so a request
    /// costs no task of its own. A request that cannot be decoded ends the
    /// stream with that error (the sender opens a new stream for its next
    /// request); a raft error is an answer like any other.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<AppendEntriesReplies>, Status> {
        let state = Some((request.into_inner(), self.raft.clone(), self.append_seconds.clone()));
        let replies = futures::stream::unfold(state, |state| async move {
            let (mut requests, raft, seconds) = state?;
            match requests.message().await {
                Ok(Some(request)) => {
                    let answer = append(&raft, &request, seconds.as_ref()).await;
                    let next = answer.is_ok().then_some((requests, raft, seconds));
                    Some((answer, next))
                }
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(request.get_ref(), "VoteRequest")?;
        answer(self.raft.vote(rpc).await, packed(request.get_ref())).map(Response::new)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref(), "InstallSnapshotRequest")?;
        answer(self.raft.install_snapshot(rpc).await, packed(request.get_ref())).map(Response::new)
    }
}
