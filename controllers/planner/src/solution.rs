//! What the planner answers: an optimal plan with its explanation, or why none exists.

use infadapt_model::{EstimateSource, Placement, Plan};
use serde::Serialize;
use thiserror::Error;

/// The parts of the objective, so that a decision can say why it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct ObjectiveTerms {
    /// Pipeline accuracy (sum or product over stages, mixes share-weighted).
    pub accuracy: f64,
    /// Cores held by the plan.
    pub cores: f64,
    /// GPU memory held by the plan, in GiB.
    pub gpu_gib: f64,
    /// Cold-start seconds of the replicas the change must start.
    pub cold_start_s: f64,
}

/// Latency breakdown and utilisation of one stage of the chosen plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub latency_ms: f64,
    pub batch_fill_ms: f64,
    pub service_ms: f64,
    pub queueing_ms: f64,
    pub utilisation: f64,
    /// Where the profile figures of the chosen point come from (per assignment).
    pub sources: Vec<EstimateSource>,
}

/// A constraint of the planning model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Constraint {
    /// End-to-end latency ≤ SLO.
    LatencySlo,
    /// Capacity of the replicas ≥ load (at the utilisation cap), incl. the replica limit.
    Capacity { stage: String },
    /// Total cores ≤ the host's.
    HostCores,
    /// Total GPU memory ≤ the host's.
    HostGpuMemory,
    /// The replicas fit on the cluster's nodes, each within one node's CPUs and GPUs.
    NodePlacement,
}

/// The constraint in words: `end-to-end latency SLO`, `capacity of stage detect`,
/// `host cores`, `host GPU memory`, `placement on the nodes`.
impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::LatencySlo => f.write_str("end-to-end latency SLO"),
            Constraint::Capacity { stage } => write!(f, "capacity of stage {stage}"),
            Constraint::HostCores => f.write_str("host cores"),
            Constraint::HostGpuMemory => f.write_str("host GPU memory"),
            Constraint::NodePlacement => f.write_str("placement on the nodes"),
        }
    }
}

/// An optimal plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Solution {
    /// α·accuracy − β·cores − β_gpu·GiB − γ·cold-start seconds.
    pub objective: f64,
    pub terms: ObjectiveTerms,
    pub plan: Plan,
    /// Predicted end-to-end latency, in milliseconds.
    pub latency_ms: f64,
    pub stages: Vec<StageReport>,
    /// Constraints with (almost) no slack at the optimum.
    pub binding: Vec<Constraint>,
    /// Caveats, e.g. profile points the plan relies on that were extrapolated.
    pub warnings: Vec<String>,
    /// The method that produced the plan (`pareto-dp`, `milp`, ...).
    pub solver: String,
    /// Where the replicas go, per stage, variant and node, when the problem has `nodes`
    /// (empty otherwise); the counts of a variant add up to its replicas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<Placement>,
}

/// Why a problem has no solution, with the closest feasible alternative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Infeasible {
    pub binding: Constraint,
    pub message: String,
    /// Highest load some configuration sustains within every other constraint.
    pub max_sustainable_load_rps: Option<f64>,
    /// Lowest end-to-end latency any configuration reaches at this load.
    pub min_latency_ms: Option<f64>,
}

/// Errors of the planner crate.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PlanError {
    #[error("no feasible plan: {}", .0.message)]
    Infeasible(Box<Infeasible>),
    #[error("invalid problem: {0}")]
    InvalidProblem(String),
    #[error("solver failed: {0}")]
    Solver(String),
    /// The MILP's answer does not give one option per stage: a reason for the fallback to
    /// the Pareto-DP (as are the next three), never returned by `solve`.
    #[error("{0} options chosen for one stage")]
    OptionsPerStage(usize),
    #[error("the solver's plan breaks a constraint after rounding")]
    BrokenAfterRounding,
    #[error("the chosen variants hold fewer than min_replicas")]
    MixBelowMinReplicas,
    #[error("the chosen variants cannot carry the load after rounding")]
    MixCannotCarryLoad,
    /// A plan's replicas do not fit on the nodes (from [`crate::placement::place_plan`]).
    #[error("the plan does not place: {0}")]
    Unplaceable(String),
}
