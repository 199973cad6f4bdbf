//! The process backend's error type and its mapping onto the plugin ABI's status codes.

use infadapt_plugin_abi::BackendError;

/// What can go wrong in the process backend.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The backend configuration is invalid; every problem is listed, one per line.
    #[error("process backend config:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// A plan names something the configuration cannot run.
    #[error("plan: {0}")]
    Plan(String),
    /// The state file of recorded workers cannot be read or written.
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
    /// A worker could not be started.
    #[error("{stage}/{variant}: cannot start worker: {message}")]
    Spawn {
        stage: String,
        variant: String,
        message: String,
    },
}

impl From<ProcessError> for BackendError {
    fn from(error: ProcessError) -> BackendError {
        match &error {
            ProcessError::Config(_) | ProcessError::Plan(_) => {
                BackendError::invalid(error.to_string())
            }
            ProcessError::State { .. } | ProcessError::Spawn { .. } => {
                BackendError::failed(error.to_string())
            }
        }
    }
}
