//! Turns a chosen set of options into a [`Solution`]: plan, objective terms, latency
//! breakdown, binding constraints and warnings. Every solver goes through here, so equal
//! plans always get equal objectives.

use infadapt_model::{Assignment, EstimateSource, Plan, StagePlan};

use crate::latency::{LatencyBreakdown, stage_latency_in};
use crate::options::{StageOption, unmeasured_gpu_excluded};
use crate::problem::{AccuracyMode, Problem};
use crate::solution::{Constraint, ObjectiveTerms, Solution, StageReport};

/// One assignment of the chosen plan with the load routed to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub option: StageOption,
    pub load_rps: f64,
    pub share: f64,
    pub latency: LatencyBreakdown,
}

impl Selected {
    /// The option taking the whole stage load.
    pub fn whole(option: StageOption, load_rps: f64) -> Selected {
        let latency = option.latency;
        Selected {
            load_rps,
            option,
            share: 1.0,
            latency,
        }
    }

    /// The option taking `load_rps` of a stage load `total_rps`.
    pub fn part(problem: &Problem, option: StageOption, load_rps: f64, total_rps: f64) -> Selected {
        let latency = stage_latency_in(
            problem.latency_model,
            load_rps,
            option.batch,
            option.replicas,
            &option.estimate,
            problem.service_cv2,
        );
        let share = if total_rps > 0.0 {
            load_rps / total_rps
        } else {
            1.0
        };
        Selected {
            option,
            load_rps,
            share,
            latency,
        }
    }
}

/// Objective and its terms for a plan given as selected assignments per stage.
pub fn objective_of(problem: &Problem, stages: &[Vec<Selected>]) -> (f64, ObjectiveTerms) {
    let stage_accuracy =
        |s: &Vec<Selected>| s.iter().map(|a| a.share * a.option.accuracy).sum::<f64>();
    let accuracy = match problem.accuracy_mode {
        AccuracyMode::Sum => stages.iter().map(stage_accuracy).sum(),
        AccuracyMode::Product => stages.iter().map(stage_accuracy).product(),
    };
    let all = || stages.iter().flatten();
    let terms = ObjectiveTerms {
        accuracy,
        cores: all().map(|a| a.option.cores_used as f64).sum(),
        gpu_gib: all().map(|a| a.option.gpu_mb).sum::<f64>() / 1024.0,
        cold_start_s: all().map(|a| a.option.cold_start_s).sum(),
    };
    let w = &problem.weights;
    let objective = w.alpha * terms.accuracy
        - w.beta_per_core * terms.cores
        - w.beta_per_gpu_gib * terms.gpu_gib
        - w.gamma_per_cold_start_s * terms.cold_start_s;
    (objective, terms)
}

/// Relative slack under which a constraint counts as binding.
const BINDING_SLACK: f64 = 0.02;

/// Builds the full solution.
pub fn build_solution(
    problem: &Problem,
    stages: Vec<Vec<Selected>>,
    solver: String,
    mut warnings: Vec<String>,
) -> Solution {
    let (objective, terms) = objective_of(problem, &stages);
    let pipeline = &problem.pipeline;
    let mut plan = Plan::default();
    let mut reports = Vec::with_capacity(stages.len());
    let mut binding = Vec::new();
    let mut latency_ms = 0.0;
    for (k, selected) in stages.iter().enumerate() {
        let stage = &pipeline.stages[k];
        let mut assignments = Vec::with_capacity(selected.len());
        let mut sources = Vec::with_capacity(selected.len());
        let mut slowest: Option<&Selected> = None;
        let mut at_capacity = false;
        for a in selected {
            let o = &a.option;
            let variant = &stage.variants[o.variant];
            assignments.push(Assignment {
                variant: variant.name.clone(),
                batch: o.batch,
                cores: o.cores,
                replicas: o.replicas,
                share: a.share,
            });
            sources.push(o.estimate.source);
            if variant.gpu_mem_mb.is_none() {
                warnings.push(format!(
                    "stage `{}` variant `{}`: GPU memory unmeasured, left out of the plan's GPU memory",
                    stage.name, variant.name
                ));
            }
            if let EstimateSource::Extrapolated { factor } = o.estimate.source {
                warnings.push(format!(
                    "stage `{}` variant `{}` batch {} cores {} relies on a fit {}× beyond the measured range",
                    stage.name,
                    variant.name,
                    o.batch,
                    o.cores,
                    round_for_message(factor)
                ));
            }
            if slowest.is_none_or(|s| a.latency.total_ms > s.latency.total_ms) {
                slowest = Some(a);
            }
            if o.replicas == stage.max_replicas
                && a.latency.utilisation >= problem.utilisation_cap * (1.0 - BINDING_SLACK)
            {
                at_capacity = true;
            }
        }
        if at_capacity {
            binding.push(Constraint::Capacity {
                stage: stage.name.clone(),
            });
        }
        let lat = slowest.map(|s| s.latency).unwrap_or(LatencyBreakdown {
            fill_ms: 0.0,
            service_ms: 0.0,
            queue_ms: 0.0,
            total_ms: 0.0,
            utilisation: 0.0,
        });
        latency_ms += lat.total_ms;
        reports.push(StageReport {
            stage: stage.name.clone(),
            latency_ms: lat.total_ms,
            batch_fill_ms: lat.fill_ms,
            service_ms: lat.service_ms,
            queueing_ms: lat.queue_ms,
            utilisation: selected
                .iter()
                .map(|a| a.latency.utilisation)
                .fold(0.0, f64::max),
            sources,
        });
        plan.stages.push(StagePlan {
            stage: stage.name.clone(),
            assignments,
        });
    }
    for (stage, variant) in unmeasured_gpu_excluded(problem) {
        warnings.push(format!(
            "stage `{stage}` variant `{variant}`: not planned, its GPU memory is unmeasured and a GPU memory limit or GPU cost applies (measure it with `infadaptd profile` on a GPU host or set gpu_mem_mb in the catalog)"
        ));
    }
    if pipeline.slo_ms - latency_ms < BINDING_SLACK * pipeline.slo_ms {
        binding.insert(0, Constraint::LatencySlo);
    }
    if let Some(limit) = problem.limits.total_cores
        && terms.cores >= f64::from(limit)
    {
        binding.push(Constraint::HostCores);
    }
    if let Some(limit) = problem.limits.gpu_mem_mb
        && limit > 0.0
        && terms.gpu_gib * 1024.0 >= limit * (1.0 - BINDING_SLACK)
    {
        binding.push(Constraint::HostGpuMemory);
    }
    Solution {
        objective,
        terms,
        plan,
        latency_ms,
        stages: reports,
        binding,
        warnings,
        solver,
        placement: Vec::new(),
    }
}

/// A number with at most two decimals, for messages.
pub(crate) fn round_for_message(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}
