//! The wire form of Clawbernetes: generated tonic/prost code for the
//! `claw.v1` API and the `claw.raft.v1` member-to-member Raft RPC, plus the
//! conversions between protobuf and the domain types of `claw-commands`.
//!
//! Only this crate knows protobuf. It does no IO of its own.

mod convert;
mod error;

/// Generated code of `proto/claw.proto`.
pub mod v1 {
    tonic::include_proto!("claw.v1");
}

/// etcd v3's KV client (Put only, `proto/etcd/rpc.proto`), for
/// `clawctl bench append --etcd`.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Generated code of `proto/raft.proto`.
pub mod raft {
    tonic::include_proto!("claw.raft.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("claw_descriptor");

pub use convert::{command_from_pb, event_from_pb, event_to_pb};
pub use error::{ConversionError, Result};
