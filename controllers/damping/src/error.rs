//! The one error type of the damping crate.

use thiserror::Error;

/// What can go wrong in the stability layer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DampingError {
    /// A configuration value is out of range.
    #[error("invalid damping configuration: {field} {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: String,
    },
    /// A plan names a stage or variant the pipeline does not have.
    #[error("plan does not fit the pipeline: {0}")]
    PlanMismatch(String),
    /// An input figure is not a finite, non-negative number.
    #[error("invalid input: {field} must be a finite number ≥ 0, got {value}")]
    InvalidInput { field: &'static str, value: f64 },
}
