//! What a backend reports each control period, and what a policy decides. Callers build an
//! [`Observation`] from a backend's report with `infadapt_bridge`, the daemon and the
//! simulator harness alike.

use infadapt_model::{Placement, Plan};
use infadapt_planner::NodeCapacity;
use serde::Serialize;

/// Per-stage state reported by the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct StageObservation {
    pub stage: String,
    /// Requests waiting in the stage's queues now.
    pub queue_len: f64,
    /// Fraction of replica time spent serving in the window, in [0, 1].
    pub busy_fraction: f64,
    /// Replicas serving now.
    pub ready_replicas: u32,
    /// Replicas still starting (cold start).
    pub starting_replicas: u32,
}

/// What the backend reports at the end of one control period.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Observation {
    /// Time of the observation, in seconds (virtual in the simulator, wall in the daemon).
    pub time_s: f64,
    /// Length of the window it covers, in seconds.
    pub window_s: f64,
    /// Arrival rate per second of the window, oldest first (the forecaster's input).
    pub arrivals_per_second: Vec<f64>,
    pub completed: u64,
    pub dropped: u64,
    /// Requests that missed the SLO (completed late or dropped).
    pub slo_misses: u64,
    pub latency_p99_ms: Option<f64>,
    pub stages: Vec<StageObservation>,
    /// The plan in force: the one the backend last accepted, which it may still be
    /// starting (`stages` say how many replicas are ready). Policies damp their proposals
    /// against it; why it is not the ready replicas is in `infadapt_bridge`'s docs.
    pub deployed: Plan,
    /// The nodes of a cluster backend with what each offers the pipeline's next plan
    /// (empty for one host): the loop plans and places within them until the next
    /// observation (see `docs/planner.md`, "Cluster placement").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeCapacity>,
    /// Where the backend's replicas run now, per stage, variant and node (a backend with
    /// nodes): the loop places its plans near it, so that a change moves few replicas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<Placement>,
}

/// What a policy decided at one tick, with the reasons an operator needs.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Decision {
    pub time_s: f64,
    /// The plan to apply (equal to the deployed plan when nothing should change).
    pub plan: Plan,
    /// Where `plan`'s replicas go, per stage, variant and node, when the observation had
    /// nodes and the loop planned (empty otherwise); the counts of a variant add up to its
    /// replicas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<Placement>,
    /// The planner's answer before damping, when the planner ran.
    pub proposed: Option<Plan>,
    /// Point forecast of the peak load over the horizon, requests/s.
    pub forecast_rps: Option<f64>,
    /// Calibrated upper bound of the peak load, requests/s.
    pub upper_rps: Option<f64>,
    /// Load the plan was sized for (after headroom), requests/s.
    pub provisioned_rps: f64,
    /// Multiplicative headroom applied by the feedback loop (1.0 = none).
    pub headroom: f64,
    pub objective: Option<f64>,
    /// Constraints binding at the planner's optimum, as text.
    pub binding: Vec<String>,
    /// What the stability layer held back, and why.
    pub held_back: Vec<String>,
    /// Why planning failed (the deployed plan is kept), if it did.
    pub error: Option<String>,
    /// Set when the decision came between ticks: what the fast path saw (see
    /// [`crate::fast_path`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<String>,
    /// Set when the tick planned above the forecast to keep warm spare capacity for
    /// bursts: how much, and why it pays (see [`crate::spare`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_spare: Option<String>,
}

impl Observation {
    /// Mean arrival rate over the window (0 when empty).
    pub fn mean_rps(&self) -> f64 {
        if self.arrivals_per_second.is_empty() {
            return 0.0;
        }
        self.arrivals_per_second.iter().sum::<f64>() / self.arrivals_per_second.len() as f64
    }

    /// Largest per-second arrival rate in the window (0 when empty).
    pub fn peak_rps(&self) -> f64 {
        self.arrivals_per_second.iter().copied().fold(0.0, f64::max)
    }
}
