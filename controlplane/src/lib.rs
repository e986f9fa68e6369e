//! `clawd`, a Clawbernetes control-plane member: configuration, the
//! `claw.v1` gRPC API (with forwarding to the leader), the scheduler loop
//! (placement and node timeouts, on the leader only), and the wiring of the
//! replicated log from `claw-log` into one gRPC server.
//!
//! It holds no domain rules (those are `claw-commands`) and no storage code
//! (that is `claw-log`). It does not talk to Docker or GPUs.

mod api;
mod config;
mod error;
mod forward;
mod scheduler;
mod server;
mod telemetry;

pub use api::{actor_from_request, ClawApi};
pub use config::{Flags, HistoryOptions, LogFormatOptions, MetricsOptions, Options, RaftOptions, StorageOptions};
pub use error::{Error, Result};
pub use forward::{ACTOR_KEY, LEADER_KEY};
pub use scheduler::{plan_pass, Scheduler, SchedulerOptions};
pub use server::Server;
pub use telemetry::Telemetry;
