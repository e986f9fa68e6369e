#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("checkpoint could not be decoded: {0}")]
    Checkpoint(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
