//! Planner helpers the comparison policies share: solving with a fallback when the load is
//! more than the host can carry, restricting a pipeline to fixed choices, and the reference
//! plans (most accurate, cheapest, most accurate that fits a load), and IPA's base
//! allocation of cores per variant.

use infadapt_model::{Pipeline, Plan, Stage};
use infadapt_planner::{PinnedCores, PlanError, Problem, Solution, Weights, solve};

/// Solves `problem`; when no plan carries its load, plans for the most load some plan
/// carries instead (the planner's diagnosis says how much), so a policy under overload
/// still provisions as much as it can.
pub fn solve_or_saturate(problem: &Problem) -> Result<Solution, PlanError> {
    match solve(problem) {
        Ok(solution) => Ok(solution),
        Err(PlanError::Infeasible(why)) => {
            let Some(max) = why.max_sustainable_load_rps.filter(|m| m.is_finite()) else {
                return Err(PlanError::Infeasible(why));
            };
            if max >= problem.load_rps {
                return Err(PlanError::Infeasible(why));
            }
            let mut reduced = problem.clone();
            for factor in [0.999, 0.99, 0.95, 0.9] {
                reduced.load_rps = (max * factor).max(0.0);
                if let Ok(solution) = solve(&reduced) {
                    return Ok(solution);
                }
            }
            Err(PlanError::Infeasible(why))
        }
        Err(other) => Err(other),
    }
}

/// The pipeline with each stage limited to one variant (by name, per stage), and,
/// when given, to one batch size and one core count.
pub fn restrict(
    pipeline: &Pipeline,
    variants: &[String],
    batch_cores: Option<&[(u32, u32)]>,
) -> Pipeline {
    let mut out = pipeline.clone();
    for (k, stage) in out.stages.iter_mut().enumerate() {
        if let Some(name) = variants.get(k) {
            stage.variants.retain(|v| &v.name == name);
        }
        if let Some(&(batch, cores)) = batch_cores.and_then(|bc| bc.get(k)) {
            stage.batch_sizes = vec![batch];
            stage.core_options = vec![cores];
        }
    }
    out
}

/// The variant of each stage with the highest accuracy.
pub fn most_accurate(pipeline: &Pipeline) -> Vec<String> {
    pipeline
        .stages
        .iter()
        .map(|s| {
            s.variants
                .iter()
                .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy))
                .map_or_else(String::new, |v| v.name.clone())
        })
        .collect()
}

/// Best throughput per core of a variant over the stage's batch and core options.
fn throughput_per_core(stage: &Stage, variant: usize) -> f64 {
    let v = &stage.variants[variant];
    let mut best: f64 = 0.0;
    for &b in &stage.batch_sizes {
        for &c in &stage.core_options {
            let rps = v.profile.estimate(b, c).throughput_rps;
            if rps.is_finite() {
                best = best.max(rps / f64::from(c));
            }
        }
    }
    best
}

/// The variant of each stage that serves the most requests per core (the cheapest).
pub fn cheapest(pipeline: &Pipeline) -> Vec<String> {
    pipeline
        .stages
        .iter()
        .map(|s| {
            (0..s.variants.len())
                .max_by(|&a, &b| throughput_per_core(s, a).total_cmp(&throughput_per_core(s, b)))
                .map_or_else(String::new, |i| s.variants[i].name.clone())
        })
        .collect()
}

/// The most accurate plan that carries `load_rps` (accuracy first, cores only break ties),
/// or the most accurate that carries the most load when none carries all of it.
pub fn most_accurate_fitting(template: &Problem, load_rps: f64) -> Result<Solution, PlanError> {
    let mut problem = template.clone();
    problem.load_rps = load_rps;
    problem.current = None;
    problem.allow_mix = false;
    problem.weights = Weights {
        alpha: 1.0,
        beta_per_core: 1e-7,
        beta_per_gpu_gib: 0.0,
        gamma_per_cold_start_s: 0.0,
    };
    solve_or_saturate(&problem)
}

/// A plan for `pipeline` at `load_rps` with the template's weights and limits.
pub fn plan_at(
    template: &Problem,
    pipeline: &Pipeline,
    load_rps: f64,
) -> Result<Solution, PlanError> {
    let mut problem = template.clone();
    problem.pipeline = pipeline.clone();
    problem.load_rps = load_rps;
    problem.current = None;
    problem.allow_mix = problem.allow_mix && pipeline.stages.len() == 1;
    solve_or_saturate(&problem)
}

/// Per stage, the variant, batch and cores of the first assignment of `plan`.
pub fn choices(pipeline: &Pipeline, plan: &Plan) -> (Vec<String>, Vec<(u32, u32)>) {
    pipeline
        .stages
        .iter()
        .map(|s| {
            plan.stage(&s.name)
                .and_then(|p| p.assignments.iter().max_by_key(|a| a.replicas))
                .map_or_else(
                    || (String::new(), (1, 1)),
                    |a| (a.variant.clone(), (a.batch, a.cores)),
                )
        })
        .unzip()
}

/// IPA's `threshold` (requests/s a base allocation must sustain) in 33 of its 36
/// experiment configurations.
pub const IPA_BASE_THRESHOLD_RPS: f64 = 4.0;

/// Each stage's share of the SLO as IPA derives its per-task SLA (`Task.sla` in IPA's
/// `optimizer/models.py`: the latency of the smallest batch on the smallest allocation,
/// averaged over the variants; the pipeline SLA is the sum over tasks): the SLO split in
/// proportion to that mean latency. Equal shares when a stage has no usable profile point.
fn ipa_stage_slo_shares(pipeline: &Pipeline) -> Vec<f64> {
    let base: Vec<f64> = pipeline
        .stages
        .iter()
        .map(|s| {
            let (Some(&b), Some(&c)) = (s.batch_sizes.iter().min(), s.core_options.iter().min())
            else {
                return f64::NAN;
            };
            let lat: Vec<f64> = s
                .variants
                .iter()
                .map(|v| v.profile.estimate(b, c).p99_ms)
                .filter(|l| l.is_finite() && *l > 0.0)
                .collect();
            if lat.is_empty() {
                f64::NAN
            } else {
                lat.iter().sum::<f64>() / lat.len() as f64
            }
        })
        .collect();
    let n = pipeline.stages.len().max(1) as f64;
    let total: f64 = base.iter().sum();
    base.iter()
        .map(|&m| {
            if total.is_finite() && total > 0.0 && m.is_finite() {
                pipeline.slo_ms * m / total
            } else {
                pipeline.slo_ms / n
            }
        })
        .collect()
}

/// IPA's base allocation (`allocation_mode: base`; `Task.base_allocations` in IPA's
/// `optimizer/models.py`) on this project's profiles: the cores per replica each variant is
/// held at.
///
/// For each core option `c` (ascending) of a stage and each variant, IPA counts the batch
/// sizes at which one replica sustains `threshold_rps` within the stage's SLO share
/// (`ipa_stage_slo_shares`). It then walks the variants from the least to the most
/// accurate with one index into the core options that never goes down: the first variant
/// takes the smallest count that is not 0; each next one moves one option up when the next
/// option sustains more batch sizes for it, and further up while its count is 0. A variant
/// with no such option (IPA raises an error there) is held at the stage's largest option.
pub fn ipa_base_allocation(pipeline: &Pipeline, threshold_rps: f64) -> Vec<PinnedCores> {
    let shares = ipa_stage_slo_shares(pipeline);
    let mut out = Vec::new();
    for (stage, &share) in pipeline.stages.iter().zip(&shares) {
        let mut cores = stage.core_options.clone();
        cores.sort_unstable();
        cores.dedup();
        let Some(&largest) = cores.last() else {
            continue;
        };
        let sustains = |v: usize, c: u32| -> usize {
            stage
                .batch_sizes
                .iter()
                .filter(|&&b| {
                    let e = stage.variants[v].profile.estimate(b, c);
                    e.throughput_rps.is_finite()
                        && e.throughput_rps >= threshold_rps
                        && e.p99_ms.is_finite()
                        && e.p99_ms <= share
                })
                .count()
        };
        let mut order: Vec<usize> = (0..stage.variants.len()).collect();
        order.sort_by(|&a, &b| {
            stage.variants[a]
                .accuracy
                .total_cmp(&stage.variants[b].accuracy)
        });
        let mut index = 0usize;
        for (rank, &v) in order.iter().enumerate() {
            let mut chosen = None;
            while index < cores.len() {
                if rank > 0
                    && index + 1 < cores.len()
                    && sustains(v, cores[index + 1]) > sustains(v, cores[index])
                {
                    index += 1;
                }
                if sustains(v, cores[index]) == 0 {
                    index += 1;
                    continue;
                }
                chosen = Some(cores[index]);
                break;
            }
            out.push(PinnedCores {
                stage: stage.name.clone(),
                variant: stage.variants[v].name.clone(),
                cores: chosen.unwrap_or(largest),
            });
            index = index.min(cores.len().saturating_sub(1));
        }
    }
    out
}
