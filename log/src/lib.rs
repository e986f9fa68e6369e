//! The replicated event log of Clawbernetes: openraft over one RocksDB
//! database per member. The raft log stores batches of `CommandEnvelope`s
//! (`CommandBatch`, one per raft entry, gathered by `LogNode::propose`) with
//! synced, group-committed writes; the state machine decides each committed command
//! (`claw_commands::decide`), seals the resulting events into a dense,
//! hash-chained history, keeps the decision state and cluster view current,
//! and lets readers page through or watch the history. Snapshots carry the
//! whole history, so every member answers time-travel queries alike.
//!
//! This crate does not serve the client API, schedule, or query with SQL:
//! those live in `claw-controlplane` and `claw-analytics`. It only mounts the
//! member-to-member Raft RPC (`RaftRpcService`).

mod checkpoint;
mod db;
mod dedup_row;
mod error;
mod event_filter;
mod event_store;
mod keys;
mod log_node;
mod log_options;
mod log_stats;
mod log_store;
mod log_writer;
mod network;
mod network_client;
mod proposer;
mod raft_rpc_service;
mod rollup;
mod skip_fields;
mod snapshot_builder;
mod snapshot_data;
mod snapshot_install;
mod snapshot_pacer;
mod snapshot_payload;
mod state_machine;
mod subject_index;
mod telemetry;
mod type_config;
mod view_rows;

#[cfg(test)]
mod decode_tests;

pub use claw_projections::ViewTables;
pub use db::StorageMemory;
pub use error::{Error, Result};
pub use event_filter::EventFilter;
pub use event_store::{EventHead, EventKind, EventStore, EventsPage, WorkloadOverlay};
pub use log_node::LogNode;
pub use log_options::LogOptions;
pub use log_stats::LogStats;
pub use proposer::ProposeError;
pub use raft_rpc_service::RaftRpcService;
pub use rollup::{Resolution, RollupProgress, RollupRow, Stat};
pub use snapshot_data::SnapshotData;
pub use telemetry::LogMetrics;
pub use type_config::{ApplyResponse, BatchResponse, ClawRaft, CommandBatch, TypeConfig};
