//! The write side of Clawbernetes: command, event and envelope types, and the
//! decider (`decide` + `evolve` over a small [`DecisionState`]).
//!
//! Everything here is pure: no clock, no randomness, no IO, no async. The
//! state machine in `claw-log` calls [`decide`] for every committed
//! [`CommandEnvelope`] on every member, so the same log always yields the same
//! events. Read models for queries live in `claw-projections`, not here.

mod command;
mod decision;
mod envelope;
mod error;
mod event;
mod record;
mod workload;

pub use command::{Command, ProposalAction};
pub use decision::{decide, evolve, DecisionState, NodeDecision, ProposalDecision, WorkloadDecision};
pub use envelope::{Actor, ActorKind, CommandEnvelope};
pub use error::{Error, Rejection, Result};
pub use event::{Event, GpuInfo, GpuSample, NodeCapabilities};
pub use record::{derive_id, verify_chain, ChainError, EventRecord, GENESIS_HASH};
pub use workload::{validate_name, ProposalStatus, WorkloadSpec, WorkloadStatus};
