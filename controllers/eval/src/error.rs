//! Errors of the evaluation crate.

use thiserror::Error;

/// Why an evaluation could not run.
#[derive(Debug, Error)]
pub enum EvalError {
    /// The simulator rejected the pipeline, a plan or a setting.
    #[error("simulator: {0}")]
    Sim(#[from] infadapt_sim::SimError),
    /// A policy could not be built for the scenario.
    #[error("policy `{policy}`: {problem}")]
    Policy { policy: String, problem: String },
    /// No policy has this name.
    #[error("unknown policy `{0}` (known: {known})", known = crate::policies::NAMES.join(", "))]
    UnknownPolicy(String),
    /// The workload or the scenario is unusable.
    #[error("scenario: {0}")]
    Scenario(String),
}
