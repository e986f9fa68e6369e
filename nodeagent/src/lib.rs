//! `clawnode`, the Clawbernetes node agent. It registers this machine with
//! the control plane (CPUs and memory from `/proc`, GPUs through NVML loaded
//! at run time), heartbeats, reports GPU metrics, and runs the workloads the
//! scheduler places on this node: it watches `WorkloadPlaced` and
//! `WorkloadCancelRequested` from the last event it handled, starts each
//! workload through a [`Runtime`] (Docker containers via bollard, or local
//! processes), streams their output and reports how they end.
//!
//! It decides nothing: placement is the control plane's, and every report is
//! a command the control plane may refuse. It keeps no database (one small
//! state file holds the last handled seq), never invents GPUs or readings on
//! a machine without the NVIDIA driver, and never pulls images.

mod agent;
mod config;
mod control_plane;
mod docker_runtime;
mod error;
mod exec_runtime;
mod gpu;
mod health_check;
mod host;
mod log_chunker;
mod runtime;
mod state;

pub use agent::{Agent, AgentHandle, AgentStatus, WATCHED_KINDS};
pub use config::{format_duration, parse_duration, Flags, LogOptions, Options, RuntimeKind};
pub use control_plane::{ControlPlane, WorkloadView};
pub use docker_runtime::{container_name, DockerRuntime, LABEL_NODE, LABEL_WORKLOAD};
pub use error::{Error, Result};
pub use exec_runtime::{ExecRuntime, EXIT_LOST};
pub use gpu::{GpuInventory, Gpus};
pub use health_check::{
    pick_runtime, run_health_check, HealthCheckError, HealthCheckOptions, HealthCheckReport, HealthCheckRuntime,
    MAX_MATRIX_SIZE,
};
pub use host::HostInfo;
pub use log_chunker::{LogChunk, LogChunker, OutputStream};
pub use runtime::{Exit, Found, Launch, Output, Runtime};
pub use state::{AgentState, StateFile};
