//! Planner helpers the comparison policies share: solving with a fallback when the load is
//! more than the host can carry, restricting a pipeline to fixed choices, and the reference
//! plans (most accurate, cheapest, most accurate that fits a load).

use infadapt_model::{Pipeline, Plan, Stage};
use infadapt_planner::{PlanError, Problem, Solution, Weights, solve};

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
