//! Planning problems: the pipeline, the load to provision for and the objective weights.

use infadapt_model::{Pipeline, Plan};

use crate::placement::NodeCapacity;
use serde::Serialize;

/// How stage accuracies combine into the pipeline accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyMode {
    /// Sum over stages (each stage's accuracy as given in the catalog).
    #[default]
    Sum,
    /// Product over stages (accuracies in [0, 1] that compound along the chain).
    Product,
}

/// The name used in files and output: `sum` or `product`.
impl std::fmt::Display for AccuracyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccuracyMode::Sum => "sum",
            AccuracyMode::Product => "product",
        })
    }
}

/// What to do with profile estimates outside the measured batch/core ranges.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum ExtrapolationPolicy {
    /// Use fitted points up to `max_factor` beyond the measured range and list them as
    /// warnings in the solution.
    Warn { max_factor: f64 },
    /// Use measured and interpolated points only.
    Forbid,
}

impl Default for ExtrapolationPolicy {
    fn default() -> Self {
        ExtrapolationPolicy::Warn { max_factor: 2.0 }
    }
}

/// Which exact method solves the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SolverChoice {
    /// Pareto-DP when the problem separates per stage, MILP when it does not (variant mixes).
    #[default]
    Auto,
    /// Pareto dynamic programme over per-stage options (exact; cannot do mixes).
    ParetoDp,
    /// Mixed-integer programme with branch and bound (exact within the time limit).
    Milp,
}

/// How a stage's latency is judged against the SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LatencyModel {
    /// Batch fill `(b−1)/λ` + batch p99 + the M/G/n queueing wait of batches (this
    /// project's model).
    #[default]
    Queueing,
    /// Batch fill `(b−1)/λ` + batch p99, no queueing wait: IPA's latency constraint
    /// (`Optimizer.gurobi_optmizer` in IPA's `optimizer/optimizer.py`), with the fill
    /// term on the batch size rather than IPA's 0/1 selection variable.
    BatchWaitOnly,
}

/// A variant held at one core count per replica (IPA's `allocation_mode: base`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedCores {
    pub stage: String,
    pub variant: String,
    pub cores: u32,
}

/// Objective weights: maximise α·accuracy − β·cores − β_gpu·GPU GiB − γ·cold-start seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    pub alpha: f64,
    pub beta_per_core: f64,
    pub beta_per_gpu_gib: f64,
    pub gamma_per_cold_start_s: f64,
}

impl Default for Weights {
    fn default() -> Self {
        // InfAdapter's figures: α = 0.05 on accuracy against 20 cores priced at 0.05/20.
        Weights {
            alpha: 1.0,
            beta_per_core: 0.0025,
            beta_per_gpu_gib: 0.0,
            gamma_per_cold_start_s: 0.0001,
        }
    }
}

/// Capacity of the host shared by all stages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct HostLimits {
    pub total_cores: Option<u32>,
    pub gpu_mem_mb: Option<f64>,
}

/// One planning problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub pipeline: Pipeline,
    /// Load to provision for (requests per second entering the pipeline).
    pub load_rps: f64,
    /// What is deployed now; the change cost is measured against it.
    pub current: Option<Plan>,
    pub weights: Weights,
    pub accuracy_mode: AccuracyMode,
    pub limits: HostLimits,
    /// Highest planned utilisation of a replica set, in (0, 1].
    pub utilisation_cap: f64,
    /// Allow a single-stage pipeline to split its load over several variants.
    pub allow_mix: bool,
    pub extrapolation: ExtrapolationPolicy,
    /// Replica counts considered beyond the minimum that covers the load (more replicas
    /// shorten queueing, which can make a slower variant fit the SLO).
    pub extra_replicas: u32,
    /// Squared coefficient of variation of batch service time used in the queueing bound.
    pub service_cv2: f64,
    pub solver: SolverChoice,
    /// Time limit of the MILP search, in milliseconds.
    pub time_limit_ms: u64,
    /// How stage latency is judged. Default [`LatencyModel::Queueing`].
    pub latency_model: LatencyModel,
    /// Variants whose cores per replica are fixed; the others choose among their stage's
    /// `core_options`. Default empty.
    pub pinned_cores: Vec<PinnedCores>,
    /// The nodes of a cluster the plan must place its replicas on (see
    /// [`crate::placement`]); empty for one host (only `limits` apply). Default empty.
    pub nodes: Vec<NodeCapacity>,
}

impl Problem {
    /// A problem with default weights and settings.
    pub fn new(pipeline: Pipeline, load_rps: f64) -> Problem {
        Problem {
            pipeline,
            load_rps,
            current: None,
            weights: Weights::default(),
            accuracy_mode: AccuracyMode::default(),
            limits: HostLimits::default(),
            utilisation_cap: 0.8,
            allow_mix: false,
            extrapolation: ExtrapolationPolicy::default(),
            extra_replicas: 2,
            service_cv2: 0.1,
            solver: SolverChoice::default(),
            time_limit_ms: 1000,
            latency_model: LatencyModel::default(),
            pinned_cores: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The core counts variant `variant` of stage `stage` may run with: its pinned count,
    /// or the stage's options. Every solver and the brute force enumerate through this.
    pub fn core_options(&self, stage: usize, variant: usize) -> Vec<u32> {
        let Some(st) = self.pipeline.stages.get(stage) else {
            return Vec::new();
        };
        let Some(v) = st.variants.get(variant) else {
            return Vec::new();
        };
        match self
            .pinned_cores
            .iter()
            .find(|p| p.stage == st.name && p.variant == v.name)
        {
            Some(pinned) => vec![pinned.cores],
            None => st.core_options.clone(),
        }
    }
}
