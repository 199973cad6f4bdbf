//! Checks a problem before any solver sees it, so that no data (NaN, empty ranges, unknown
//! names) can make a solver panic or return nonsense.

use crate::problem::{AccuracyMode, ExtrapolationPolicy, Problem, SolverChoice};
use crate::solution::PlanError;

/// Validates `problem`, naming the first thing that is wrong.
pub fn validate(problem: &Problem) -> Result<(), PlanError> {
    let bad = |message: String| Err(PlanError::InvalidProblem(message));
    problem
        .pipeline
        .validate()
        .map_err(|e| PlanError::InvalidProblem(e.to_string()))?;
    if !(problem.load_rps.is_finite() && problem.load_rps >= 0.0) {
        return bad(format!(
            "load_rps must be finite and >= 0, got {}",
            problem.load_rps
        ));
    }
    let cap = problem.utilisation_cap;
    if !(cap.is_finite() && cap > 0.0 && cap <= 1.0) {
        return bad(format!("utilisation_cap must be in (0, 1], got {cap}"));
    }
    let w = &problem.weights;
    for (name, value) in [
        ("alpha", w.alpha),
        ("beta_per_core", w.beta_per_core),
        ("beta_per_gpu_gib", w.beta_per_gpu_gib),
        ("gamma_per_cold_start_s", w.gamma_per_cold_start_s),
    ] {
        if !value.is_finite() {
            return bad(format!("weight {name} must be finite, got {value}"));
        }
    }
    if let Some(gpu) = problem.limits.gpu_mem_mb
        && !(gpu.is_finite() && gpu >= 0.0)
    {
        return bad(format!(
            "gpu memory limit must be finite and >= 0, got {gpu}"
        ));
    }
    for (i, node) in problem.nodes.iter().enumerate() {
        if !(node.cpus.is_finite() && node.cpus >= 0.0 && node.gpus.is_finite() && node.gpus >= 0.0)
        {
            return bad(format!(
                "node `{}`: cpus and gpus must be finite and >= 0, got {} and {}",
                node.id, node.cpus, node.gpus
            ));
        }
        if problem.nodes[..i].iter().any(|other| other.id == node.id) {
            return bad(format!("node `{}` is listed twice", node.id));
        }
    }
    if problem.extra_replicas > 1000 {
        return bad(format!(
            "extra_replicas must be at most 1000, got {}",
            problem.extra_replicas
        ));
    }
    if !(problem.service_cv2.is_finite() && problem.service_cv2 >= 0.0) {
        return bad(format!(
            "service_cv2 must be finite and >= 0, got {}",
            problem.service_cv2
        ));
    }
    for pinned in &problem.pinned_cores {
        let known = problem.pipeline.stages.iter().any(|st| {
            st.name == pinned.stage && st.variants.iter().any(|v| v.name == pinned.variant)
        });
        if !known || pinned.cores == 0 {
            return bad(format!(
                "pinned cores: stage `{}` variant `{}` at {} cores is not a variant of the \
                 pipeline with at least one core",
                pinned.stage, pinned.variant, pinned.cores
            ));
        }
    }
    if let ExtrapolationPolicy::Warn { max_factor } = problem.extrapolation
        && !(max_factor.is_finite() && max_factor >= 1.0)
    {
        return bad(format!(
            "extrapolation max_factor must be finite and >= 1, got {max_factor}"
        ));
    }
    for stage in &problem.pipeline.stages {
        for v in &stage.variants {
            if !v.accuracy.is_finite() {
                return bad(format!(
                    "stage `{}` variant `{}`: accuracy must be finite",
                    stage.name, v.name
                ));
            }
            if problem.accuracy_mode == AccuracyMode::Product && !(0.0..=1.0).contains(&v.accuracy)
            {
                return bad(format!(
                    "stage `{}` variant `{}`: accuracy {} must be in [0, 1] in product mode",
                    stage.name, v.name, v.accuracy
                ));
            }
            if !(v.load_time_s.is_finite() && v.load_time_s >= 0.0) {
                return bad(format!(
                    "stage `{}` variant `{}`: load_time_s must be finite and >= 0",
                    stage.name, v.name
                ));
            }
            if v.gpu_mem_mb
                .is_some_and(|mb| !(mb.is_finite() && mb >= 0.0))
            {
                return bad(format!(
                    "stage `{}` variant `{}`: gpu_mem_mb must be finite and >= 0",
                    stage.name, v.name
                ));
            }
        }
    }
    for (i, stage) in problem.pipeline.stages.iter().enumerate() {
        if problem.pipeline.stages[..i]
            .iter()
            .any(|s| s.name == stage.name)
        {
            return bad(format!("stage `{}` appears twice", stage.name));
        }
    }
    if let Some(current) = &problem.current {
        for sp in &current.stages {
            let Some(stage) = problem.pipeline.stages.iter().find(|s| s.name == sp.stage) else {
                return bad(format!("current plan names unknown stage `{}`", sp.stage));
            };
            for a in &sp.assignments {
                if stage.variant(&a.variant).is_none() {
                    return bad(format!(
                        "current plan names unknown variant `{}` in stage `{}`",
                        a.variant, sp.stage
                    ));
                }
            }
        }
    }
    if problem.allow_mix {
        if problem.pipeline.stages.len() != 1 {
            return bad(format!(
                "variant mixes need a single-stage pipeline, `{}` has {} stages",
                problem.pipeline.name,
                problem.pipeline.stages.len()
            ));
        }
        if problem.solver == SolverChoice::ParetoDp {
            return bad(
                "the pareto-dp solver cannot plan variant mixes; use milp or auto".to_owned(),
            );
        }
    }
    Ok(())
}
