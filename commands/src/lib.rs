//! The write side of Clawbernetes: command, event and envelope types, and the
//! decider (`decide` + `evolve` over a small [`DecisionState`]).
//!
//! Everything here is pure: no clock, no randomness, no IO, no async. The
//! state machine in `claw-log` calls [`decide`] for every committed
//! [`CommandEnvelope`] on every member, so the same log always yields the same
//! events. The scheduler's placement logic ([`schedule`]) is pure too; the
//! loop that runs it lives in `clawd`. Read models for queries live in
//! `claw-projections`, not here.

mod command;
mod decision;
mod envelope;
mod error;
mod event;
mod incident;
mod placement;
mod record;
mod scheduler;
mod workload;

pub use command::{Command, ProposalAction};
pub use decision::{
    decide, evolve, DecisionState, NodeDecision, ProposalDecision, WorkloadDecision, MAX_LOG_CHUNK_BYTES,
};
pub use envelope::{Actor, ActorKind, CommandEnvelope};
pub use error::{Error, Rejection, Result};
pub use event::{Event, GpuHealthResult, GpuInfo, GpuSample, NodeCapabilities};
pub use incident::{
    signal_similarity, IncidentDecision, CRASH_LOOP_FAILURES, CRASH_LOOP_WINDOW_MS, INCIDENT_KINDS,
    THERMAL_THROTTLE_REASONS,
};
pub use placement::{NodeVerdict, Placement, FILTERS};
pub use record::{derive_id, verify_chain, ChainError, EventRecord, GENESIS_HASH};
pub use scheduler::{pending_in_order, plan, schedule, Plan, Strategy};
pub use workload::{validate_name, ProposalStatus, WorkloadSpec, WorkloadStatus};
