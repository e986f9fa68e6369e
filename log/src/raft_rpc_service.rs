use claw_proto::raft::raft_server::Raft;
use claw_proto::raft::RaftPayload;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::db::{pack_into, unpack};
use crate::{ClawRaft, TypeConfig};

/// The member-to-member Raft RPC server: it decodes openraft's requests
/// (MessagePack, or JSON from a member of an earlier version), hands them to
/// the local raft, and encodes the answer (or the raft error, in
/// `RaftPayload.error`) as MessagePack.
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

fn pack<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, Status> {
    let mut buf = Vec::with_capacity(128);
    pack_into(&mut buf, value).map_err(|e| Status::internal(format!("cannot encode raft {what}: {e}")))?;
    Ok(buf)
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftPayload>, Status> {
    let payload = match result {
        Ok(v) => RaftPayload { data: pack("response", &v)?, error: Vec::new() },
        Err(e) => RaftPayload { data: Vec::new(), error: pack("error", &e)? },
    };
    Ok(Response::new(payload))
}

#[tonic::async_trait]
impl Raft for RaftRpcService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref(), "AppendEntriesRequest")?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(request.get_ref(), "VoteRequest")?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref(), "InstallSnapshotRequest")?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}
