use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use claw_proto::raft::raft_client::RaftClient;
use claw_proto::raft::RaftPayload;
use futures::channel::mpsc;
use futures::SinkExt;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode, RaftNetwork};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::db::{encode_as, unpack};
use crate::TypeConfig;

/// The largest gRPC message a member sends or accepts on the Raft RPC.
pub(crate) const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// The Raft RPC client to one member. Requests and responses are openraft's
/// own types as MessagePack in a `RaftPayload` (responses from a member of an
/// earlier version, JSON, read too); a transport failure is reported as
/// `Unreachable` so that openraft backs off before retrying.
///
/// AppendEntries go over one long-lived `AppendEntriesStream` (openraft
/// sends them one at a time per client, so each answer is the next message
/// on the stream); votes and snapshot chunks go as single calls.
pub(crate) struct NetworkClient {
    target: u64,
    node: BasicNode,
    client: Result<RaftClient<Channel>, String>,
    /// The member reads only JSON (an earlier version): learnt from its
    /// rejection of a MessagePack request, kept for this client's life.
    json_only: bool,
    /// The open AppendEntries stream; dropped (and opened again by the next
    /// request) on any failure or timeout, so an answer is never matched to
    /// the wrong request.
    stream: Option<AppendStream>,
    /// The member has no `AppendEntriesStream` (an earlier version): learnt
    /// from its UNIMPLEMENTED, kept for this client's life.
    unary_only: bool,
}

struct AppendStream {
    requests: mpsc::Sender<RaftPayload>,
    answers: Streaming<RaftPayload>,
}

impl AppendStream {
    /// Sends one request and reads the next answer. The stream comes back
    /// only with an answer; on an error it is dropped, which resets it.
    async fn exchange(mut self, request: RaftPayload) -> Result<(RaftPayload, AppendStream), Status> {
        let closed = || Status::unavailable("the member closed the AppendEntries stream");
        self.requests.send(request).await.map_err(|_| closed())?;
        let answer = self.answers.message().await?.ok_or_else(closed)?;
        Ok((answer, self))
    }
}

/// `work`'s result, or DEADLINE_EXCEEDED saying `what` within `ttl`.
async fn within<T>(ttl: Duration, what: &str, work: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(ttl, work)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("{what} within {ttl:?}"))))
}

/// How a member of an earlier version, which reads only JSON, rejects a
/// request it cannot decode (its `RaftRpcService` error text).
const JSON_ONLY_REJECTION: &str = "RaftPayload.data is not a JSON ";

impl NetworkClient {
    pub(crate) fn new(target: u64, node: BasicNode) -> NetworkClient {
        let client = Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|e| {
                let channel = e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy();
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE)
            })
            .map_err(|e| format!("member {target} has an invalid address {:?}: {e}", node.addr));
        NetworkClient { target, node, client, json_only: false, stream: None, unary_only: false }
    }

    /// Sends one request and waits for its answer, within `ttl`.
    async fn send(
        &mut self,
        client: &mut RaftClient<Channel>,
        rpc: Rpc,
        data: Vec<u8>,
        ttl: Duration,
    ) -> Result<RaftPayload, Status> {
        let payload = RaftPayload { data, error: Vec::new() };
        if matches!(rpc, Rpc::AppendEntries) && !self.unary_only {
            let started = tokio::time::Instant::now();
            if self.stream.is_none() {
                self.stream = self.open_stream(client, ttl).await?;
            }
            if let Some(stream) = self.stream.take() {
                let ttl = ttl.saturating_sub(started.elapsed());
                let (answer, stream) = within(ttl, "no answer", stream.exchange(payload)).await?;
                self.stream = Some(stream);
                return Ok(answer);
            }
        }
        let mut request = tonic::Request::new(payload);
        request.set_timeout(ttl);
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        result.map(tonic::Response::into_inner)
    }

    /// Opens an AppendEntries stream, or learns that the member has none.
    async fn open_stream(
        &mut self,
        client: &mut RaftClient<Channel>,
        ttl: Duration,
    ) -> Result<Option<AppendStream>, Status> {
        let (requests, outgoing) = mpsc::channel(1);
        // No deadline on the stream itself: it outlives any one request.
        match within(ttl, "the stream did not open", client.append_entries_stream(outgoing)).await {
            Ok(answers) => Ok(Some(AppendStream { requests, answers: answers.into_inner() })),
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::info!(
                    member = self.target,
                    addr = %self.node.addr,
                    "member has no AppendEntries stream (an earlier version); sending it single AppendEntries calls"
                );
                self.unary_only = true;
                Ok(None)
            }
            Err(status) => Err(status),
        }
    }

    async fn call<Req, Resp, E>(&mut self, rpc: Rpc, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(msg) => return Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(msg)))),
        };
        let payload = loop {
            let data = encode_as(req, !self.json_only)
                .map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
            match self.send(&mut client, rpc, data, option.hard_ttl()).await {
                Ok(payload) => break payload,
                Err(status)
                    if !self.json_only
                        && status.code() == Code::InvalidArgument
                        && status.message().starts_with(JSON_ONLY_REJECTION) =>
                {
                    tracing::warn!(
                        member = self.target,
                        addr = %self.node.addr,
                        "member reads only JSON raft messages (an earlier version); sending it JSON on this connection"
                    );
                    self.json_only = true;
                }
                Err(status) => {
                    let err = AnyError::error(format!("member {} at {}: {status}", self.target, self.node.addr));
                    return Err(match status.code() {
                        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                            RPCError::Unreachable(Unreachable::new(&err))
                        }
                        _ => RPCError::Network(NetworkError::new(&err)),
                    });
                }
            }
        };
        if !payload.error.is_empty() {
            let remote: RaftError<u64, E> = unpack(&payload.error).map_err(|e| {
                RPCError::Network(NetworkError::new(&AnyError::error(format!(
                    "member {} sent an undecodable raft error: {e}",
                    self.target
                ))))
            })?;
            return Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), remote)));
        }
        unpack(&payload.data).map_err(|e| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "member {} sent an undecodable response: {e}",
                self.target
            ))))
        })
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use claw_proto::raft::raft_server::{Raft, RaftServer};
    use openraft::{CommittedLeaderId, LeaderId, LogId, Vote};
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::Server;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::db::PACKED;
    use crate::raft_rpc_service::{answer, AppendEntriesReplies};

    /// A member of an earlier version: it reads and answers only JSON, and
    /// rejects anything else the way that version did. Keeps each request.
    #[derive(Clone, Default)]
    struct JsonOnlyMember {
        seen: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    #[tonic::async_trait]
    impl Raft for JsonOnlyMember {
        async fn append_entries(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        type AppendEntriesStreamStream = AppendEntriesReplies;

        async fn append_entries_stream(
            &self,
            _: Request<Streaming<RaftPayload>>,
        ) -> Result<Response<AppendEntriesReplies>, Status> {
            Err(Status::unimplemented("not in that version"))
        }

        async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            let data = request.into_inner().data;
            self.seen.lock().expect("lock").push(data.clone());
            let rpc: VoteRequest<u64> = serde_json::from_slice(&data)
                .map_err(|e| Status::invalid_argument(format!("RaftPayload.data is not a JSON VoteRequest: {e}")))?;
            let resp = VoteResponse { vote: rpc.vote, vote_granted: true, last_log_id: rpc.last_log_id };
            Ok(Response::new(RaftPayload { data: serde_json::to_vec(&resp).expect("json"), error: Vec::new() }))
        }

        async fn install_snapshot(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not used here"))
        }
    }

    /// A current member (with `has_stream`) or one of the version before
    /// the AppendEntries stream. It answers each AppendEntries with the
    /// request's own `prev_log_id`, so an answer names its request, and ends
    /// each stream after `answers_per_stream` answers.
    #[derive(Clone)]
    struct CountingMember {
        has_stream: bool,
        answers_per_stream: usize,
        streams: Arc<AtomicUsize>,
        single_calls: Arc<AtomicUsize>,
    }

    impl CountingMember {
        fn new(has_stream: bool, answers_per_stream: usize) -> Self {
            CountingMember { has_stream, answers_per_stream, streams: Arc::default(), single_calls: Arc::default() }
        }

        fn answer(request: &RaftPayload) -> Result<RaftPayload, Status> {
            let rpc: AppendEntriesRequest<TypeConfig> = unpack(&request.data).map_err(Status::invalid_argument)?;
            answer::<_, ()>(Ok(AppendEntriesResponse::<u64>::PartialSuccess(rpc.prev_log_id)), true)
        }
    }

    #[tonic::async_trait]
    impl Raft for CountingMember {
        async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            self.single_calls.fetch_add(1, Ordering::SeqCst);
            Self::answer(request.get_ref()).map(Response::new)
        }

        type AppendEntriesStreamStream = AppendEntriesReplies;

        async fn append_entries_stream(
            &self,
            request: Request<Streaming<RaftPayload>>,
        ) -> Result<Response<AppendEntriesReplies>, Status> {
            if !self.has_stream {
                return Err(Status::unimplemented("unknown method AppendEntriesStream"));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            let state = (request.into_inner(), self.answers_per_stream);
            let answers = futures::stream::unfold(state, |(mut requests, left)| async move {
                if left == 0 {
                    return None;
                }
                let request = requests.message().await.ok()??;
                Some((Self::answer(&request), (requests, left - 1)))
            });
            Ok(Response::new(Box::pin(answers)))
        }

        async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        async fn install_snapshot(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not used here"))
        }
    }

    async fn serve(member: impl Raft) -> (NetworkClient, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(RaftServer::new(member))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        (NetworkClient::new(2, BasicNode::new(addr.to_string())), server)
    }

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    async fn append(client: &mut NetworkClient, index: u64) -> RpcResult<AppendEntriesResponse<u64>> {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(index)),
            entries: Vec::new(),
            leader_commit: Some(log_id(index)),
        };
        client.append_entries(rpc, RPCOption::new(Duration::from_secs(5))).await
    }

    /// Replication to a current member: every AppendEntries goes over one
    /// stream and each gets its own answer, in order.
    #[tokio::test]
    async fn append_entries_share_one_stream_and_each_gets_its_own_answer() {
        let member = CountingMember::new(true, usize::MAX);
        let (streams, single_calls) = (member.streams.clone(), member.single_calls.clone());
        let (mut client, server) = serve(member).await;
        for index in 1..=50 {
            let resp = append(&mut client, index).await.expect("answered");
            assert_eq!(resp, AppendEntriesResponse::PartialSuccess(Some(log_id(index))));
        }
        assert_eq!(streams.load(Ordering::SeqCst), 1, "one stream for all fifty");
        assert_eq!(single_calls.load(Ordering::SeqCst), 0);
        server.abort();
    }

    /// A stream the member ends (a restart, a proxy's idle timeout) fails
    /// the request in flight as unreachable, so openraft retries it, and
    /// the next request opens a new stream.
    #[tokio::test]
    async fn a_closed_stream_fails_one_request_and_the_next_opens_another() {
        let member = CountingMember::new(true, 2);
        let streams = member.streams.clone();
        let (mut client, server) = serve(member).await;
        assert!(append(&mut client, 1).await.is_ok());
        assert!(append(&mut client, 2).await.is_ok());
        match append(&mut client, 3).await {
            Err(RPCError::Unreachable(e)) => assert!(e.to_string().contains("member 2 at "), "{e}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
        let resp = append(&mut client, 3).await.expect("answered on a new stream");
        assert_eq!(resp, AppendEntriesResponse::PartialSuccess(Some(log_id(3))));
        assert_eq!(streams.load(Ordering::SeqCst), 2);
        server.abort();
    }

    /// During a rolling upgrade a member of the version before the stream
    /// answers UNIMPLEMENTED once; from then on it gets single calls.
    #[tokio::test]
    async fn a_member_without_the_stream_gets_single_calls() {
        let member = CountingMember::new(false, usize::MAX);
        let single_calls = member.single_calls.clone();
        let (mut client, server) = serve(member).await;
        for index in 1..=3 {
            let resp = append(&mut client, index).await.expect("answered");
            assert_eq!(resp, AppendEntriesResponse::PartialSuccess(Some(log_id(index))));
        }
        assert_eq!(single_calls.load(Ordering::SeqCst), 3);
        assert!(client.unary_only);
        server.abort();
    }

    fn vote_request() -> VoteRequest<u64> {
        VoteRequest::new(Vote::new(3, 1), Some(LogId::new(CommittedLeaderId::new(2, 1), 40)))
    }

    /// During a rolling upgrade a new leader must still reach members that
    /// read only JSON: the first MessagePack request is rejected, the same
    /// request goes again as JSON, and later ones go as JSON at once.
    #[tokio::test]
    async fn a_member_that_reads_only_json_gets_json_after_its_first_rejection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let old = JsonOnlyMember::default();
        let seen = old.seen.clone();
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(RaftServer::new(old))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        let mut client = NetworkClient::new(2, BasicNode::new(addr.to_string()));
        let option = RPCOption::new(Duration::from_secs(5));
        for _ in 0..2 {
            let resp = client.vote(vote_request(), option.clone()).await.expect("the old member answers");
            assert!(resp.vote_granted);
            assert_eq!(resp.vote, Vote::new(3, 1));
            assert_eq!(resp.last_log_id, Some(LogId::new(CommittedLeaderId::new(2, 1), 40)));
        }
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 3, "one rejected MessagePack request, then JSON only");
        assert_eq!(seen[0].first(), Some(&PACKED));
        assert!(seen[1..].iter().all(|d| d.first() == Some(&b'{')), "later requests are JSON");
        server.abort();
    }

    /// The server answers in the request's format: JSON to a member of an
    /// earlier version, MessagePack to a current one; both decode.
    #[test]
    fn replies_follow_the_request_format() {
        let resp = VoteResponse { vote: Vote::new(3, 1), vote_granted: false, last_log_id: None };
        let json = answer::<_, ()>(Ok(resp.clone()), false).expect("reply");
        let back: VoteResponse<u64> = serde_json::from_slice(&json.data).expect("plain JSON");
        assert_eq!(back, resp);
        let packed = answer::<_, ()>(Ok(resp.clone()), true).expect("reply");
        assert_eq!(packed.data.first(), Some(&PACKED));
        assert_eq!(unpack::<VoteResponse<u64>>(&packed.data).expect("MessagePack"), resp);
        let err = answer::<VoteResponse<u64>, _>(Err(LeaderId::new(1, 2)), false).expect("reply");
        assert!(err.data.is_empty());
        assert_eq!(serde_json::from_slice::<LeaderId<u64>>(&err.error).expect("JSON error"), LeaderId::new(1, 2));
    }
}
