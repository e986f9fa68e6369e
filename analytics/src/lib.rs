//! SQL over the cluster's history: DataFusion tables read straight from the
//! event log (`events`, `metrics`), the live projection tables (`members`,
//! `nodes`, `gpus`, `workloads`, `proposals`), seance functions that return
//! those tables as they were at any past seq or time (`nodes_at(x)`, …),
//! exports of the history to Parquet or JSON lines, and an Arrow Flight SQL
//! service so standard Arrow clients (ADBC, JDBC) can query without our code.
//!
//! Everything here only reads: queries are planned read-only, and the log is
//! reached through `claw_log::EventStore`. This crate does not mount its
//! services or define the client API's RPCs (`clawd` does). The only data it
//! keeps is derived: columnar copies of the workload table as of some row
//! checkpoints (`seance_base`), stored beside them so `workloads_at(x)` on a
//! long history need not decode every row; every answer is the log's.

mod analytics;
mod error;
mod events_batch;
mod export_format;
mod flight_sql_server;
mod log_scan;
mod log_scan_exec;
mod log_table;
mod metrics_batch;
mod rollup_table;
mod scan_stats;
mod seance_base;
mod seance_function;
mod view_kind;
mod view_table;

#[cfg(test)]
mod tests;

pub use analytics::{batches_to_ipc, Analytics};
pub use error::{Error, Result};
pub use export_format::ExportFormat;
pub use flight_sql_server::FlightSqlServer;
pub use scan_stats::ScanStats;
pub use seance_base::{default_spacing, WorkloadBases};

/// DataFusion and Arrow as this crate uses them, so callers need no
/// separate dependency on matching versions.
pub use datafusion;
