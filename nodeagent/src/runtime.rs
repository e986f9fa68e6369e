use std::time::Duration;

use claw_commands::WorkloadSpec;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::{OutputStream, Result};

/// Everything needed to start one placed workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub workload_id: String,
    pub node: String,
    pub spec: WorkloadSpec,
    /// The GPUs the scheduler assigned; empty for a CPU-only workload.
    pub gpu_uuids: Vec<String>,
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why, when the runtime knows more than the code (shown as a stderr log
    /// chunk): "image not found", "lost on agent restart".
    pub message: Option<String>,
}

impl Exit {
    pub fn code(exit_code: i32) -> Exit {
        Exit { exit_code, oom_killed: false, message: None }
    }
}

/// What the runtime holds for a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Running,
    Exited(Exit),
}

/// A piece of a workload's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

/// Runs workloads on this machine. Every method is keyed by workload id and
/// idempotent, so the agent can repeat any step after a crash.
///
/// The futures are boxed so the agent can hold `Arc<dyn Runtime>` and pick
/// the runtime at start-up.
pub trait Runtime: Send + Sync + 'static {
    /// "docker" or "exec", for logs.
    fn name(&self) -> &'static str;

    /// The workloads of `node` this runtime still holds (after an agent
    /// restart), running or exited but not removed.
    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<(String, Found)>>>;

    /// The state of one workload, `None` when the runtime holds nothing for it.
    fn find<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<Option<Found>>>;

    /// Creates and starts the workload. Fails with [`crate::Error::Launch`]
    /// when it cannot start at all (missing image, command not found); the
    /// agent reports that as an exit.
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<()>>;

    /// Follows a started workload until it exits, sending its output to
    /// `output` (`from_start`: all of it; otherwise from now on, for a
    /// re-attached one), and returns how it ended.
    fn wait<'a>(
        &'a self,
        workload_id: &'a str,
        from_start: bool,
        output: mpsc::Sender<Output>,
    ) -> BoxFuture<'a, Result<Exit>>;

    /// Asks the workload to stop (SIGTERM), and kills it after `grace`.
    /// [`Runtime::wait`] then returns its exit.
    fn stop<'a>(&'a self, workload_id: &'a str, grace: Duration) -> BoxFuture<'a, Result<()>>;

    /// Forgets an exited workload (removes its container). Idempotent.
    fn remove<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<()>>;
}
