use claw_proto::raft::raft_server::Raft;
use claw_proto::raft::RaftPayload;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

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
}

impl RaftRpcService {
    pub fn new(raft: ClawRaft) -> Self {
        RaftRpcService { raft }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, Status> {
    unpack(&payload.data).map_err(|e| Status::invalid_argument(format!("RaftPayload.data is not a valid {what}: {e}")))
}

/// Whether `request` came as MessagePack (else JSON, from an earlier version).
fn packed(request: &RaftPayload) -> bool {
    request.data.first() == Some(&PACKED)
}

pub(crate) fn reply<T: Serialize, E: Serialize>(
    result: Result<T, E>,
    packed: bool,
) -> Result<Response<RaftPayload>, Status> {
    let failed = |what: &str, e: String| Status::internal(format!("cannot encode raft {what}: {e}"));
    let payload = match result {
        Ok(v) => RaftPayload { data: encode_as(&v, packed).map_err(|e| failed("response", e))?, error: Vec::new() },
        Err(e) => RaftPayload { data: Vec::new(), error: encode_as(&e, packed).map_err(|e| failed("error", e))? },
    };
    Ok(Response::new(payload))
}

#[tonic::async_trait]
impl Raft for RaftRpcService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref(), "AppendEntriesRequest")?;
        reply(self.raft.append_entries(rpc).await, packed(request.get_ref()))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(request.get_ref(), "VoteRequest")?;
        reply(self.raft.vote(rpc).await, packed(request.get_ref()))
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref(), "InstallSnapshotRequest")?;
        reply(self.raft.install_snapshot(rpc).await, packed(request.get_ref()))
    }
}
