//! The one error type of the simulator crate.

use thiserror::Error;

/// Everything the simulator or the workload helpers can reject.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SimError {
    /// The pipeline itself is not usable.
    #[error("pipeline: {0}")]
    Pipeline(#[from] infadapt_model::ModelError),
    /// A configuration value is out of range.
    #[error("config: {field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    /// A plan does not fit the pipeline (stage or variant unknown, zero replicas, bad share).
    #[error("plan: {0}")]
    Plan(String),
    /// A workload text could not be read; `line` counts from 1.
    #[error("workload line {line}: {problem}")]
    Parse { line: usize, problem: String },
    /// A workload slice or generator parameter is out of range.
    #[error("workload: {0}")]
    Workload(String),
}
