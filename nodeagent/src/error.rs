use std::path::PathBuf;

/// Errors of the node agent. Each says what failed, with the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    /// The workload could not be started at all (missing image, command not
    /// found); it is reported as exited with `exit_code`.
    #[error("cannot start workload {workload_id}: {reason}")]
    Launch { workload_id: String, reason: String, exit_code: i32 },
    #[error("container runtime ({runtime}): {reason}")]
    Runtime { runtime: &'static str, reason: String },
    #[error("control plane: {0}")]
    ControlPlane(#[from] tonic::Status),
    #[error("control plane at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("event {seq}: {reason}")]
    BadEvent { seq: u64, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn docker(e: impl std::fmt::Display) -> Error {
        Error::Runtime { runtime: "docker", reason: e.to_string() }
    }
    pub(crate) fn exec(e: impl std::fmt::Display) -> Error {
        Error::Runtime { runtime: "exec", reason: e.to_string() }
    }

    /// The gRPC status when the control plane refused the request.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::ControlPlane(s) => Some(s),
            _ => None,
        }
    }
}
