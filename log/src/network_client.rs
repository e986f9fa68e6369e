use std::error::Error as StdError;
use std::time::Duration;

use claw_proto::raft::raft_client::RaftClient;
use claw_proto::raft::RaftPayload;
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
use tonic::Code;

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
pub(crate) struct NetworkClient {
    target: u64,
    node: BasicNode,
    client: Result<RaftClient<Channel>, String>,
    /// The member reads only JSON (an earlier version): learnt from its
    /// rejection of a MessagePack request, kept for this client's life.
    json_only: bool,
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
        NetworkClient { target, node, client, json_only: false }
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
            let mut request = tonic::Request::new(RaftPayload { data, error: Vec::new() });
            request.set_timeout(option.hard_ttl());
            let result = match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            };
            match result {
                Ok(resp) => break resp.into_inner(),
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
    use std::sync::{Arc, Mutex};

    use claw_proto::raft::raft_server::{Raft, RaftServer};
    use openraft::{CommittedLeaderId, LeaderId, LogId, Vote};
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::Server;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::db::PACKED;
    use crate::raft_rpc_service::reply;

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
        let json = reply::<_, ()>(Ok(resp.clone()), false).expect("reply").into_inner();
        let back: VoteResponse<u64> = serde_json::from_slice(&json.data).expect("plain JSON");
        assert_eq!(back, resp);
        let packed = reply::<_, ()>(Ok(resp.clone()), true).expect("reply").into_inner();
        assert_eq!(packed.data.first(), Some(&PACKED));
        assert_eq!(unpack::<VoteResponse<u64>>(&packed.data).expect("MessagePack"), resp);
        let err = reply::<VoteResponse<u64>, _>(Err(LeaderId::new(1, 2)), false).expect("reply").into_inner();
        assert!(err.data.is_empty());
        assert_eq!(serde_json::from_slice::<LeaderId<u64>>(&err.error).expect("JSON error"), LeaderId::new(1, 2));
    }
}
