//! The one error type of the forecast crate.

use thiserror::Error;

/// Everything that can go wrong while parsing traces, fitting or loading models.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ForecastError {
    /// A trace line is neither a number nor a `timestamp,value` pair.
    #[error("line {line}: {reason}")]
    MalformedLine {
        /// 1-based line number in the input text.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The trace holds no usable sample.
    #[error("trace has no samples")]
    EmptyTrace,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Too little data to fit or train a model.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// A saved model could not be read.
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    /// A saved model was written by an incompatible version.
    #[error("unsupported model schema version {found} (expected {expected})")]
    UnsupportedSchema {
        /// Version found in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
}

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, ForecastError>;
