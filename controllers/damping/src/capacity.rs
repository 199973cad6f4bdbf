//! Capacity, predicted latency and cold-start figures of plans, from the variant profiles
//! (the planner's model), and the lead-time rule for the forecast horizon.

use infadapt_model::{Assignment, Pipeline, Plan, Stage, StagePlan, Variant};
use infadapt_planner::latency::stage_latency;

use crate::DampingError;

/// Squared coefficient of variation of batch service time assumed by the latency check
/// (the planner's default).
const SERVICE_CV2: f64 = 0.1;

/// The variant an assignment runs, or an error when the stage has no such variant.
fn assignment_variant<'a>(
    stage: &'a Stage,
    assignment: &Assignment,
) -> Result<&'a Variant, DampingError> {
    stage.variant(&assignment.variant).ok_or_else(|| {
        DampingError::PlanMismatch(format!(
            "stage `{}` has no variant `{}`",
            stage.name, assignment.variant
        ))
    })
}

/// Throughput of one replica of an assignment (requests/s at full utilisation), or an
/// error when the variant is unknown.
fn replica_throughput(stage: &Stage, assignment: &Assignment) -> Result<f64, DampingError> {
    let variant = assignment_variant(stage, assignment)?;
    let throughput = variant
        .profile
        .estimate(assignment.batch.max(1), assignment.cores.max(1))
        .throughput_rps;
    Ok(if throughput.is_finite() && throughput > 0.0 {
        throughput
    } else {
        0.0
    })
}

/// Requests per second a stage plan serves at full utilisation.
///
/// One assignment: replicas × replica throughput. A mix whose shares are all positive is
/// limited by its most loaded assignment (`min replicas·μ / share`); otherwise the
/// assignments' capacities add up.
pub fn stage_capacity_rps(stage: &Stage, plan: &StagePlan) -> Result<f64, DampingError> {
    let mut per_assignment = Vec::with_capacity(plan.assignments.len());
    for assignment in &plan.assignments {
        let capacity = f64::from(assignment.replicas) * replica_throughput(stage, assignment)?;
        per_assignment.push((capacity, assignment.share));
    }
    let shares_usable = per_assignment.len() > 1
        && per_assignment
            .iter()
            .all(|&(_, share)| share.is_finite() && share > 0.0);
    Ok(if shares_usable {
        per_assignment
            .iter()
            .map(|&(capacity, share)| capacity / share)
            .fold(f64::INFINITY, f64::min)
    } else {
        per_assignment.iter().map(|&(capacity, _)| capacity).sum()
    })
}

/// The pipeline stage a stage plan is for.
pub fn pipeline_stage<'a>(pipeline: &'a Pipeline, name: &str) -> Result<&'a Stage, DampingError> {
    pipeline
        .stages
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| DampingError::PlanMismatch(format!("pipeline has no stage `{name}`")))
}

/// Requests per second the whole plan serves at full utilisation: the smallest stage
/// capacity (every request visits every stage). 0 for a plan without stages.
pub fn plan_capacity_rps(pipeline: &Pipeline, plan: &Plan) -> Result<f64, DampingError> {
    let mut capacity = f64::INFINITY;
    for stage_plan in &plan.stages {
        let stage = pipeline_stage(pipeline, &stage_plan.stage)?;
        capacity = capacity.min(stage_capacity_rps(stage, stage_plan)?);
    }
    Ok(if capacity.is_finite() { capacity } else { 0.0 })
}

/// GPU memory the whole plan holds (variant memory × replicas over every assignment), MB;
/// `None` when a variant it runs has unmeasured GPU memory (never counted as 0).
pub fn plan_gpu_mem_mb(pipeline: &Pipeline, plan: &Plan) -> Result<Option<f64>, DampingError> {
    let mut total = Some(0.0);
    for stage_plan in &plan.stages {
        let stage = pipeline_stage(pipeline, &stage_plan.stage)?;
        for assignment in &stage_plan.assignments {
            let variant = assignment_variant(stage, assignment)?;
            total = total
                .zip(variant.gpu_mem_mb)
                .map(|(sum, mb)| sum + mb * f64::from(assignment.replicas));
        }
    }
    Ok(total)
}

/// Predicted p99 latency of a stage plan at `load_rps` (the planner's model; a mix is as
/// slow as its slowest assignment at its share), milliseconds.
pub fn stage_latency_ms(
    stage: &Stage,
    plan: &StagePlan,
    load_rps: f64,
) -> Result<f64, DampingError> {
    let single = plan.assignments.len() == 1;
    let mut worst: f64 = 0.0;
    for assignment in &plan.assignments {
        let variant = assignment_variant(stage, assignment)?;
        let estimate = variant
            .profile
            .estimate(assignment.batch.max(1), assignment.cores.max(1));
        let share = if single {
            1.0
        } else if assignment.share.is_finite() {
            assignment.share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let latency = stage_latency(
            load_rps * share,
            assignment.batch.max(1),
            assignment.replicas,
            &estimate,
            SERVICE_CV2,
        );
        worst = worst.max(latency.total_ms);
    }
    Ok(worst)
}

/// Predicted end-to-end p99 latency of a plan at `load_rps`, milliseconds.
pub fn plan_latency_ms(
    pipeline: &Pipeline,
    plan: &Plan,
    load_rps: f64,
) -> Result<f64, DampingError> {
    let mut total = 0.0;
    for stage_plan in &plan.stages {
        let stage = pipeline_stage(pipeline, &stage_plan.stage)?;
        total += stage_latency_ms(stage, stage_plan, load_rps)?;
    }
    Ok(total)
}

/// Longest cold start among the variants of the pipeline, seconds (0 when none is finite).
pub fn max_cold_start_s(pipeline: &Pipeline) -> f64 {
    pipeline
        .stages
        .iter()
        .flat_map(|s| s.variants.iter())
        .map(|v| v.load_time_s)
        .filter(|t| t.is_finite() && *t > 0.0)
        .fold(0.0, f64::max)
}

/// The lead-time rule: the forecast horizon a decision taken now must cover.
///
/// Capacity decided now must carry the load until capacity decided at the *next* tick is
/// ready, i.e. for one control period plus the longest cold start of anything a plan may
/// add: `interval_s + max load_time_s`. Non-finite or negative inputs count as 0; the
/// result is at least 1 s.
pub fn lead_time_horizon_s(pipeline: &Pipeline, interval_s: f64) -> f64 {
    let interval = if interval_s.is_finite() && interval_s > 0.0 {
        interval_s
    } else {
        0.0
    };
    (interval + max_cold_start_s(pipeline)).max(1.0)
}

/// Seconds until every replica a change from `deployed` to `target` starts is ready: the
/// longest load time among variants whose replicas (same variant and cores; a batch
/// change is a batcher setting) grow.
pub fn change_cold_start_s(pipeline: &Pipeline, deployed: &Plan, target: &Plan) -> f64 {
    let mut longest: f64 = 0.0;
    for stage_plan in &target.stages {
        let Ok(stage) = pipeline_stage(pipeline, &stage_plan.stage) else {
            continue;
        };
        for assignment in &stage_plan.assignments {
            let running = deployed
                .stage(&stage_plan.stage)
                .into_iter()
                .flat_map(|s| s.assignments.iter())
                .filter(|a| a.variant == assignment.variant && a.cores == assignment.cores)
                .map(|a| a.replicas)
                .max()
                .unwrap_or(0);
            if assignment.replicas > running
                && let Some(variant) = stage.variant(&assignment.variant)
                && variant.load_time_s.is_finite()
            {
                longest = longest.max(variant.load_time_s);
            }
        }
    }
    longest
}
