//! The policies the evaluation compares, built by name for a scenario.
//!
//! | name | rules (source) |
//! |---|---|
//! | `infadapt` | this project's control loop with its default configuration |
//! | `ipa` | IPA as published: forecast of the next-20-s peak, 10 s decisions, one variant per stage, no damping, no change cost, capacity at the profiled maximum throughput |
//! | `infadapter` | InfAdapter: forecast of the next-60-s peak +10 %, 30 s decisions, a variant mix on single-stage services, capacity × 0.8, a scale-down skipped up to 4 decisions in a row |
//! | `ms+` | one variant per stage chosen once (the most accurate that carries the peak), predictive replica scaling with InfAdapter's forecast, margin and interval, no damping |
//! | `hpa` | reactive horizontal replica scaling on a 0.7 utilisation target, 10 % tolerance, 300 s scale-down stabilization, fixed variant |
//! | `vpa` | vertical scaling of cores per replica from the 90th percentile of usage + 15 %, fixed variant and replicas |
//! | `static-max` | the most accurate variant per stage provisioned for the peak of the workload |
//! | `static-min` | the cheapest variant per stage provisioned for the mean of the workload |
//!
//! `infadapt`, `ipa`, `infadapter` and `ms+` are the same [`ControlLoop`] with different
//! settings ([`ControlConfig::ipa`], [`ControlConfig::infadapter`]), so they share the
//! planner and differ only in the published rules. IPA and InfAdapter published LSTM
//! forecasters; an LSTM needs a trained model file, so they run with ARIMA here (see
//! docs/evaluation.md).

pub mod fixed;
pub mod planning;
pub mod reactive;
pub mod vertical;

use infadapt_control::{ControlConfig, ControlLoop, DampingConfig, Policy};
use infadapt_forecast::models::ModelKind;

use crate::{EvalError, Scenario, WorkloadStats};
use fixed::StaticPolicy;
use planning::{cheapest, choices, most_accurate, most_accurate_fitting, plan_at, restrict};
use reactive::{Hpa, HpaRules};
use vertical::{Vpa, VpaRules};

/// Every policy name, ours first.
pub const NAMES: [&str; 8] = [
    "infadapt",
    "ipa",
    "infadapter",
    "ms+",
    "hpa",
    "vpa",
    "static-max",
    "static-min",
];

/// Per stage, the variant and (batch, cores) a fixed-variant policy keeps.
type FixedChoices = (Vec<String>, Vec<(u32, u32)>);

/// The control loop with `config`, boxed.
fn loop_policy(config: ControlConfig) -> Result<Box<dyn Policy>, String> {
    ControlLoop::new(config)
        .map(|p| Box::new(p) as Box<dyn Policy>)
        .map_err(|e| e.to_string())
}

/// Builds the policy `name` for `scenario`; `stats` describe the measured workload (the
/// static and fixed-variant policies are sized from them, as an operator would from
/// history).
///
/// # Errors
///
/// [`EvalError::UnknownPolicy`] for an unknown name, [`EvalError::Policy`] when the
/// scenario admits no plan for it.
pub fn build(
    name: &str,
    scenario: &Scenario,
    stats: &WorkloadStats,
) -> Result<Box<dyn Policy>, EvalError> {
    let fail = |problem: String| EvalError::Policy {
        policy: name.to_owned(),
        problem,
    };
    let template = &scenario.problem;
    let pipeline = &template.pipeline;
    let total_cores = template.limits.total_cores;
    let single_stage = pipeline.stages.len() == 1;
    // The fixed-variant policies keep what the most accurate plan carrying the peak uses.
    let fixed = || -> Result<FixedChoices, EvalError> {
        let best =
            most_accurate_fitting(template, stats.peak_rps).map_err(|e| fail(e.to_string()))?;
        Ok(choices(pipeline, &best.plan))
    };
    let policy: Box<dyn Policy> = match name {
        "infadapt" => {
            let mut config = ControlConfig::new(template.clone());
            scenario.loop_settings.apply_to(&mut config);
            config.problem.load_rps = stats.mean_rps;
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(fail)?
        }
        "ipa" => {
            let mut problem = template.clone();
            // Replicas sized at the profiled maximum throughput (no capacity margin).
            problem.utilisation_cap = 1.0;
            problem.load_rps = stats.mean_rps;
            let mut config = ControlConfig::ipa(problem, ModelKind::Arima);
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(fail)?
        }
        "infadapter" => {
            let mut problem = template.clone();
            problem.load_rps = stats.mean_rps;
            let mut config = ControlConfig::infadapter(problem, ModelKind::Arima);
            // Capacity × 0.8; mixes only where the planner supports them (one stage).
            config.problem.utilisation_cap = 0.8;
            config.problem.allow_mix = single_stage;
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(fail)?
        }
        "ms+" => {
            let (variants, points) = fixed()?;
            let mut problem = template.clone();
            problem.pipeline = restrict(pipeline, &variants, Some(&points));
            problem.load_rps = stats.mean_rps;
            let mut config = ControlConfig::infadapter(problem, ModelKind::Arima);
            config.name = "ms+".to_owned();
            config.problem.allow_mix = false;
            config.damping = DampingConfig::disabled();
            loop_policy(config).map_err(fail)?
        }
        "hpa" => {
            let (variants, points) = fixed()?;
            let fixed_pipeline = restrict(pipeline, &variants, Some(&points));
            let initial = plan_at(template, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(Hpa::new(
                HpaRules::default(),
                fixed_pipeline,
                initial,
                total_cores,
            ))
        }
        "vpa" => {
            let (variants, points) = fixed()?;
            let mut fixed_pipeline = restrict(pipeline, &variants, None);
            for (stage, &(batch, _)) in fixed_pipeline.stages.iter_mut().zip(&points) {
                stage.batch_sizes = vec![batch];
            }
            let initial = plan_at(template, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(Vpa::new(
                VpaRules::default(),
                fixed_pipeline,
                initial,
                total_cores,
            ))
        }
        "static-max" => {
            let fixed_pipeline = restrict(pipeline, &most_accurate(pipeline), None);
            let mut problem = template.clone();
            problem.allow_mix = false;
            let plan = plan_at(&problem, &fixed_pipeline, stats.peak_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(StaticPolicy::new("static-max", plan, stats.peak_rps))
        }
        "static-min" => {
            let fixed_pipeline = restrict(pipeline, &cheapest(pipeline), None);
            let mut problem = template.clone();
            problem.allow_mix = false;
            let plan = plan_at(&problem, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(StaticPolicy::new("static-min", plan, stats.mean_rps))
        }
        other => return Err(EvalError::UnknownPolicy(other.to_owned())),
    };
    Ok(policy)
}

#[cfg(test)]
pub(crate) mod tests {
    use infadapt_control::{Observation, StageObservation};
    use infadapt_model::{
        Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
    };

    /// A variant whose replica serves `per_core` requests/s per core at batch 1.
    pub fn variant(name: &str, accuracy: f64, per_core: f64) -> Variant {
        let points = [1u32, 2, 4, 8]
            .iter()
            .map(|&c| ProfilePoint {
                batch: 1,
                cores: c,
                mean_ms: Some(1000.0 / (per_core * f64::from(c))),
                p99_ms: Some(1500.0 / (per_core * f64::from(c))),
                throughput_rps: Some(per_core * f64::from(c)),
            })
            .collect();
        Variant {
            name: name.to_owned(),
            accuracy,
            load_time_s: 2.0,
            gpu_mem_mb: 0.0,
            profile: Profile::new(points).expect("profile"),
        }
    }

    /// A one-stage pipeline (variants `small` and `big`) and a plan of `replicas` × 4 cores
    /// of `small`.
    pub fn one_stage(replicas: u32) -> (Pipeline, Plan) {
        let pipeline = Pipeline {
            name: "p".into(),
            slo_ms: 1000.0,
            stages: vec![Stage {
                name: "s".into(),
                variants: vec![variant("small", 0.7, 10.0), variant("big", 0.8, 4.0)],
                batch_sizes: vec![1],
                core_options: vec![1, 2, 4, 8],
                max_replicas: 32,
            }],
        };
        let plan = Plan {
            stages: vec![StagePlan {
                stage: "s".into(),
                assignments: vec![Assignment {
                    variant: "small".into(),
                    batch: 1,
                    cores: 4,
                    replicas,
                    share: 1.0,
                }],
            }],
        };
        (pipeline, plan)
    }

    /// An observation of stage `s` at `busy` with `plan` deployed.
    pub fn observation(time_s: f64, busy: f64, plan: &Plan) -> Observation {
        Observation {
            time_s,
            window_s: 15.0,
            arrivals_per_second: vec![10.0; 15],
            stages: vec![StageObservation {
                stage: "s".into(),
                busy_fraction: busy,
                ready_replicas: plan.stages[0].assignments[0].replicas,
                ..StageObservation::default()
            }],
            deployed: plan.clone(),
            ..Observation::default()
        }
    }
}
