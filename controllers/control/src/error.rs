//! The one error type of the control crate.

use infadapt_damping::DampingError;
use infadapt_forecast::ForecastError;
use infadapt_planner::PlanError;
use thiserror::Error;

/// Why a control loop cannot be built.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ControlError {
    /// A setting of the loop is out of range.
    #[error("invalid control configuration: {0}")]
    InvalidConfig(String),
    /// The forecaster cannot be built.
    #[error("forecaster: {0}")]
    Forecast(#[from] ForecastError),
    /// No initial plan exists.
    #[error("initial plan: {0}")]
    Plan(#[from] PlanError),
    /// The stability layer's settings are out of range.
    #[error(transparent)]
    Damping(#[from] DampingError),
}
