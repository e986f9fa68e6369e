use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Rejection;

/// What a user asks to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub gpus: u32,
    pub gpu_model: Option<String>,
    pub min_gpu_memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    /// Labels a node must carry (in `NodeCapabilities::labels`) to run this workload.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

pub const MAX_GPUS_PER_WORKLOAD: u32 = 1024;

/// Names are DNS-label-like so they read well in tables and URLs.
pub fn validate_name(field: &str, name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if name.len() > 63 {
        return Err(Rejection::invalid(field, format!("{name:?} is longer than 63 characters")));
    }
    let ok = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_');
    if !ok || name.starts_with('-') {
        return Err(Rejection::invalid(
            field,
            format!(
                "{name:?} may only contain lowercase letters, digits, '-', '_' and '.', and must not start with '-'"
            ),
        ));
    }
    Ok(())
}

impl WorkloadSpec {
    pub fn validate(&self) -> Result<(), Rejection> {
        validate_name("spec.name", &self.name)?;
        if self.image.trim().is_empty() {
            return Err(Rejection::invalid("spec.image", "must not be empty"));
        }
        if self.image.chars().any(char::is_whitespace) {
            return Err(Rejection::invalid("spec.image", format!("{:?} contains whitespace", self.image)));
        }
        if self.gpus > MAX_GPUS_PER_WORKLOAD {
            return Err(Rejection::invalid("spec.gpus", format!("{} is more than {MAX_GPUS_PER_WORKLOAD}", self.gpus)));
        }
        if let Some(model) = &self.gpu_model {
            if model.trim().is_empty() {
                return Err(Rejection::invalid("spec.gpu_model", "must not be empty when given"));
            }
            if self.gpus == 0 {
                return Err(Rejection::invalid("spec.gpu_model", "a GPU model needs --gpus of at least 1"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(Rejection::invalid("spec.env", format!("variable name {k:?} is empty or contains '='")));
            }
        }
        for k in self.labels.keys() {
            if k.is_empty() {
                return Err(Rejection::invalid("spec.labels", "label keys must not be empty"));
            }
        }
        for k in self.node_selector.keys() {
            if k.is_empty() {
                return Err(Rejection::invalid("spec.node_selector", "label keys must not be empty"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadStatus {
    Pending,
    Placed,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl WorkloadStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkloadStatus::Succeeded | WorkloadStatus::Failed | WorkloadStatus::Cancelled | WorkloadStatus::Lost
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadStatus::Pending => "Pending",
            WorkloadStatus::Placed => "Placed",
            WorkloadStatus::Running => "Running",
            WorkloadStatus::Succeeded => "Succeeded",
            WorkloadStatus::Failed => "Failed",
            WorkloadStatus::Cancelled => "Cancelled",
            WorkloadStatus::Lost => "Lost",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Open,
    Approved,
    Rejected,
    Superseded,
}

impl ProposalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::Open => "Open",
            ProposalStatus::Approved => "Approved",
            ProposalStatus::Rejected => "Rejected",
            ProposalStatus::Superseded => "Superseded",
        }
    }
}
