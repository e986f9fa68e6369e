//! The read side: rich views folded from the event log (cluster view with
//! members, nodes, GPUs, workloads and proposals). Every view is a pure fold
//! over [`claw_commands::EventRecord`]s, so the view at any past seq is the
//! fold of the events up to it.
//!
//! This crate does no IO (no tokio, no RocksDB); `claw-log` stores the
//! checkpoints it produces, and the read side never feeds a decision.

mod cluster_view;
mod error;
mod table;
mod view_tables;

pub use cluster_view::{
    ClusterView, GpuRow, HealthCheckRow, IncidentDetail, IncidentRow, MemberRow, NodeRow, ProposalRow, RowKeys,
    SeenBefore, WorkloadRow, SEEN_BEFORE_MIN_SIMILARITY,
};
pub use error::{Error, Result};
pub use table::Table;
pub use view_tables::ViewTables;
