//! Per-stage options: every admissible (variant, batch, cores, replicas) of a stage with its
//! latency, accuracy and cost at the stage load, and the dominance pruning the solvers use.

use infadapt_model::{Estimate, Variant};

use crate::latency::{
    LatencyBreakdown, cold_start_s, estimate_usable, extrapolation_allowed, min_replicas,
    min_replicas_unbounded, penalty, stage_latency_in,
};
use crate::placement::{ReplicaNeed, fits_some_node, replica_need};
use crate::problem::{AccuracyMode, Problem};

/// One configuration a stage can run.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOption {
    /// Index of the stage in the pipeline.
    pub stage: usize,
    /// Index of the variant in the stage.
    pub variant: usize,
    pub batch: u32,
    pub cores: u32,
    pub replicas: u32,
    pub estimate: Estimate,
    /// Latency at the full stage load (for mixes: at the whole stage load, informative only).
    pub latency: LatencyBreakdown,
    pub accuracy: f64,
    /// Cores held: cores per replica × replicas.
    pub cores_used: u64,
    /// GPU memory held, in MiB.
    pub gpu_mb: f64,
    pub cold_start_s: f64,
    /// β·cores + β_gpu·GiB + γ·cold-start seconds.
    pub penalty: f64,
}

/// Load each stage of the pipeline sees: every request visits every stage of the chain.
pub fn stage_load(problem: &Problem) -> f64 {
    problem.load_rps
}

/// Whether GPU memory enters the problem: a host GPU-memory limit or a GPU cost (β_gpu ≠ 0).
pub fn gpu_memory_counts(problem: &Problem) -> bool {
    problem.limits.gpu_mem_mb.is_some() || problem.weights.beta_per_gpu_gib != 0.0
}

/// Whether `variant` may be planned: a variant whose GPU memory was not measured is left
/// out wherever GPU memory counts, never read as 0 (free). Every solver and the brute
/// force build their options through this rule.
pub fn gpu_memory_admissible(problem: &Problem, variant: &Variant) -> bool {
    variant.gpu_mem_mb.is_some() || !gpu_memory_counts(problem)
}

/// `(stage, variant)` names of the variants [`gpu_memory_admissible`] leaves out.
pub fn unmeasured_gpu_excluded(problem: &Problem) -> Vec<(String, String)> {
    problem
        .pipeline
        .stages
        .iter()
        .flat_map(|st| {
            st.variants
                .iter()
                .filter(|v| !gpu_memory_admissible(problem, v))
                .map(|v| (st.name.clone(), v.name.clone()))
        })
        .collect()
}

/// Whether one replica of variant `variant` of stage `stage` with `cores` cores fits some
/// node of the problem's cluster (always when it has no nodes): a configuration that fits
/// no node is no option, for every solver and the brute force alike.
pub fn fits_a_node(problem: &Problem, stage: usize, variant: usize, cores: u32) -> bool {
    problem.nodes.is_empty()
        || fits_some_node(
            replica_need(&problem.pipeline.stages[stage].variants[variant], cores),
            &problem.nodes,
        )
}

/// Builds an option for a fixed point, or `None` when the profile point is unusable or
/// excluded by the extrapolation policy or the GPU-memory rule.
pub(crate) fn make_option(
    problem: &Problem,
    stage: usize,
    variant: usize,
    batch: u32,
    cores: u32,
    replicas: u32,
    load_rps: f64,
) -> Option<StageOption> {
    let v = &problem.pipeline.stages[stage].variants[variant];
    if !gpu_memory_admissible(problem, v) || !fits_a_node(problem, stage, variant, cores) {
        return None;
    }
    let estimate = v.profile.estimate(batch, cores);
    if !estimate_usable(&estimate) || !extrapolation_allowed(problem.extrapolation, estimate.source)
    {
        return None;
    }
    Some(option_at(
        problem, stage, variant, batch, cores, replicas, load_rps, estimate,
    ))
}

/// Builds an option from an admissible estimate.
#[allow(clippy::too_many_arguments)]
fn option_at(
    problem: &Problem,
    stage: usize,
    variant: usize,
    batch: u32,
    cores: u32,
    replicas: u32,
    load_rps: f64,
    estimate: Estimate,
) -> StageOption {
    let st = &problem.pipeline.stages[stage];
    let v = &st.variants[variant];
    let latency = stage_latency_in(
        problem.latency_model,
        load_rps,
        batch,
        replicas,
        &estimate,
        problem.service_cv2,
    );
    let cores_used = u64::from(cores) * u64::from(replicas);
    // Unmeasured memory reaches here only where GPU memory counts nowhere
    // (`gpu_memory_admissible`); the solution then warns that its GPU figure leaves it out.
    let gpu_mb = v.gpu_mem_mb.unwrap_or(0.0) * f64::from(replicas);
    let cold = cold_start_s(
        problem.current.as_ref(),
        &st.name,
        v,
        batch,
        cores,
        replicas,
    );
    StageOption {
        stage,
        variant,
        batch,
        cores,
        replicas,
        estimate,
        latency,
        accuracy: v.accuracy,
        cores_used,
        gpu_mb,
        cold_start_s: cold,
        penalty: penalty(&problem.weights, cores_used, gpu_mb, cold),
    }
}

/// All feasible options of stage `stage` when it alone takes `load_rps` (no mix): replicas
/// from the minimum that covers the load (never below the stage's `min_replicas`) to
/// `extra_replicas` more, within `max_replicas`, keeping those whose own latency is within
/// the SLO.
pub fn stage_options(problem: &Problem, stage: usize, load_rps: f64) -> Vec<StageOption> {
    let st = &problem.pipeline.stages[stage];
    let slo = problem.pipeline.slo_ms;
    let mut out = Vec::new();
    for variant in 0..st.variants.len() {
        if !gpu_memory_admissible(problem, &st.variants[variant]) {
            continue;
        }
        for &batch in &st.batch_sizes {
            for cores in problem.core_options(stage, variant) {
                if !fits_a_node(problem, stage, variant, cores) {
                    continue;
                }
                let estimate = st.variants[variant].profile.estimate(batch, cores);
                if !estimate_usable(&estimate)
                    || !extrapolation_allowed(problem.extrapolation, estimate.source)
                {
                    continue;
                }
                let Some(n_min) = min_replicas(
                    load_rps,
                    estimate.throughput_rps,
                    problem.utilisation_cap,
                    st.max_replicas,
                ) else {
                    continue;
                };
                let n_min = n_min.max(st.min_replicas);
                let n_max = n_min
                    .saturating_add(problem.extra_replicas)
                    .min(st.max_replicas);
                for replicas in n_min..=n_max {
                    let latency = stage_latency_in(
                        problem.latency_model,
                        load_rps,
                        batch,
                        replicas,
                        &estimate,
                        problem.service_cv2,
                    );
                    if latency.total_ms <= slo {
                        out.push(option_at(
                            problem, stage, variant, batch, cores, replicas, load_rps, estimate,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Most replicas one assignment of a mix may have (bounds the candidate list).
pub const MIX_MAX_REPLICAS: u32 = 4096;

/// Candidate options of a single-stage mix: replicas from 1 up to what the whole load would
/// need plus `extra_replicas`, or the stage's `min_replicas` when that is more (within
/// `max_replicas`), since a share can be any part of the load and one assignment may have to
/// hold the stage's minimum alone. Latency is judged per share later, on the option's
/// feasible load interval; the minimum counts the whole stage (see [`mix_min_replicas`]).
pub fn mix_candidates(problem: &Problem, load_rps: f64) -> Vec<StageOption> {
    let st = &problem.pipeline.stages[0];
    let mut out = Vec::new();
    for variant in 0..st.variants.len() {
        if !gpu_memory_admissible(problem, &st.variants[variant]) {
            continue;
        }
        for &batch in &st.batch_sizes {
            for cores in problem.core_options(0, variant) {
                if !fits_a_node(problem, 0, variant, cores) {
                    continue;
                }
                let estimate = st.variants[variant].profile.estimate(batch, cores);
                if !estimate_usable(&estimate)
                    || !extrapolation_allowed(problem.extrapolation, estimate.source)
                {
                    continue;
                }
                let n_need = min_replicas_unbounded(
                    load_rps,
                    estimate.throughput_rps,
                    problem.utilisation_cap,
                );
                let n_max = n_need
                    .saturating_add(problem.extra_replicas)
                    .max(st.min_replicas)
                    .min(st.max_replicas);
                for replicas in 1..=n_max {
                    out.push(option_at(
                        problem, 0, variant, batch, cores, replicas, load_rps, estimate,
                    ));
                }
            }
        }
    }
    out
}

/// The least total replicas of a mix of the single stage (its `min_replicas`): every
/// assignment of the mix counts, like the horizontal autoscaler's `minReplicas` counts every
/// pod of a workload.
pub fn mix_min_replicas(problem: &Problem) -> u32 {
    problem
        .pipeline
        .stages
        .first()
        .map_or(1, |stage| stage.min_replicas)
}

/// What the dominance test compares, per option or per partial plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Key {
    pub latency: f64,
    /// Higher is better: the score (sum mode) or α·accuracy product (product mode).
    pub gain: f64,
    /// Lower is better: the penalty (product mode; 0 in sum mode).
    pub cost: f64,
    pub cores: u64,
    pub gpu_mb: f64,
    /// With nodes (0 otherwise): what one replica needs and how many there are. An option
    /// whose replicas are no more and each no larger places wherever the other does.
    pub replica: ReplicaNeed,
    pub replicas: u32,
}

impl Key {
    pub(crate) fn dominates(&self, other: &Key) -> bool {
        self.latency <= other.latency
            && self.gain >= other.gain
            && self.cost <= other.cost
            && self.cores <= other.cores
            && self.gpu_mb <= other.gpu_mb
            && self.replica.cpus <= other.replica.cpus
            && self.replica.gpus <= other.replica.gpus
            && self.replicas <= other.replicas
    }
}

/// The dominance key of one option: in product mode a partial product P ≥ 0 multiplies the
/// option's accuracy, so α·accuracy orders options for every prefix.
pub(crate) fn option_key(problem: &Problem, o: &StageOption) -> Key {
    let alpha = problem.weights.alpha;
    let (gain, cost) = match problem.accuracy_mode {
        AccuracyMode::Sum => (alpha * o.accuracy - o.penalty, 0.0),
        AccuracyMode::Product => (alpha * o.accuracy, o.penalty),
    };
    Key {
        latency: o.latency.total_ms,
        gain,
        cost,
        cores: if problem.limits.total_cores.is_some() {
            o.cores_used
        } else {
            0
        },
        gpu_mb: if problem.limits.gpu_mem_mb.is_some() {
            o.gpu_mb
        } else {
            0.0
        },
        replica: if problem.nodes.is_empty() {
            ReplicaNeed::NONE
        } else {
            replica_need(
                &problem.pipeline.stages[o.stage].variants[o.variant],
                o.cores,
            )
        },
        replicas: if problem.nodes.is_empty() {
            0
        } else {
            o.replicas
        },
    }
}

/// Drops options another option of the same stage is at least as good as on every dimension
/// that matters (exactness is kept: a dominated option never beats its dominator).
pub fn prune_dominated(problem: &Problem, options: Vec<StageOption>) -> Vec<StageOption> {
    let keys: Vec<Key> = options.iter().map(|o| option_key(problem, o)).collect();
    let mut order: Vec<usize> = (0..options.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&keys[a], &keys[b]);
        a.latency
            .total_cmp(&b.latency)
            .then(b.gain.total_cmp(&a.gain))
            .then(a.cost.total_cmp(&b.cost))
            .then(a.cores.cmp(&b.cores))
            .then(a.gpu_mb.total_cmp(&b.gpu_mb))
    });
    let two_dimensional = problem.accuracy_mode == AccuracyMode::Sum
        && problem.nodes.is_empty()
        && problem.limits.total_cores.is_none()
        && problem.limits.gpu_mem_mb.is_none();
    let mut kept: Vec<usize> = Vec::with_capacity(order.len().min(64));
    let mut best_gain = f64::NEG_INFINITY;
    for i in order {
        let key = &keys[i];
        let dominated = if two_dimensional {
            // Sorted by latency: only a higher gain than every faster option survives.
            key.gain <= best_gain
        } else {
            kept.iter().any(|&k| keys[k].dominates(key))
        };
        if !dominated {
            best_gain = best_gain.max(key.gain);
            kept.push(i);
        }
    }
    let mut slots: Vec<Option<StageOption>> = options.into_iter().map(Some).collect();
    kept.into_iter().filter_map(|i| slots[i].take()).collect()
}
