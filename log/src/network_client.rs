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

use crate::db::{pack_into, unpack};
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
}

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
        NetworkClient { target, node, client }
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
        let mut data = Vec::with_capacity(256);
        pack_into(&mut data, req).map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
        let mut request = tonic::Request::new(RaftPayload { data, error: Vec::new() });
        request.set_timeout(option.hard_ttl());
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let payload = match result {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                let err = AnyError::error(format!("member {} at {}: {status}", self.target, self.node.addr));
                return Err(match status.code() {
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
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
