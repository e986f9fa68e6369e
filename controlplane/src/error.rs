#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("log: {0}")]
    Log(#[from] claw_log::Error),
    #[error("server: {0}")]
    Server(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
