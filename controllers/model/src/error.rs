//! Errors raised while building or validating domain values.

use thiserror::Error;

use crate::settings::{Bounds, message_number};

/// Everything that can be wrong with a profile, catalog or pipeline description.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("profile point {index}: {problem}")]
    BadPoint { index: usize, problem: String },
    #[error("profile has no measured points")]
    EmptyProfile,
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("variant `{variant}`: {problem}")]
    BadVariant { variant: String, problem: String },
    #[error("stage `{stage}`: {problem}")]
    BadStage { stage: String, problem: String },
    #[error("pipeline `{pipeline}`: {problem}")]
    BadPipeline { pipeline: String, problem: String },
    /// A setting's value is outside its key's range; the message every reader and validator
    /// gives after the key's name.
    #[error("must be in {bounds}, got {}", message_number(*.value))]
    OutOfRange { bounds: Bounds, value: f64 },
}
