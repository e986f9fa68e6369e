/// A protobuf message that cannot become a domain value; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub type Result<T, E = ConversionError> = std::result::Result<T, E>;
