//! Why a problem has no plan: the binding constraint, a concrete message and the closest
//! feasible alternative (the highest sustainable load, the lowest reachable latency).
//!
//! Checked in order: (a) the SLO is below the fastest configuration at this load even with
//! unlimited replicas and host; (b) the load exceeds what the replicas (at most
//! `max_replicas` per stage) sustain within the SLO; (c) the host's cores or GPU memory are
//! too small for any plan that meets the SLO. With nodes: when some plan meets the SLO
//! and the host limits but none places on the nodes, the placement is binding and the
//! message names the nodes; otherwise the diagnosis is the one-host one, with the highest
//! sustainable load found with placement.

use crate::latency::min_replicas_unbounded;
use crate::options::{
    StageOption, gpu_memory_admissible, make_option, stage_load, stage_options,
    unmeasured_gpu_excluded,
};
use crate::placement::{describe_nodes, place_plan};
use crate::problem::{HostLimits, Problem, Weights};
use crate::report::round_for_message;
use crate::solution::{Constraint, Infeasible, PlanError};

/// Bisection steps on the load.
const LOAD_STEPS: usize = 40;

/// The fastest option of a stage at `load_rps` with unlimited replicas and host.
fn fastest_option(problem: &Problem, k: usize, load_rps: f64) -> Option<StageOption> {
    let stage = &problem.pipeline.stages[k];
    let mut best: Option<StageOption> = None;
    for v in 0..stage.variants.len() {
        for &b in &stage.batch_sizes {
            for c in problem.core_options(k, v) {
                let Some(probe) = make_option(problem, k, v, b, c, 1, load_rps) else {
                    continue;
                };
                let n_min = min_replicas_unbounded(
                    load_rps,
                    probe.estimate.throughput_rps,
                    problem.utilisation_cap,
                );
                if n_min == u32::MAX {
                    continue;
                }
                let n_max = n_min
                    .max(stage.min_replicas)
                    .saturating_add(problem.extra_replicas);
                // Queueing only falls with more replicas: the largest count is the fastest.
                let Some(o) = make_option(problem, k, v, b, c, n_max, load_rps) else {
                    continue;
                };
                if best
                    .as_ref()
                    .is_none_or(|x| o.latency.total_ms < x.latency.total_ms)
                {
                    best = Some(o);
                }
            }
        }
    }
    best
}

fn with_load(problem: &Problem, load_rps: f64) -> Problem {
    Problem {
        load_rps,
        ..problem.clone()
    }
}

/// Load samples tried before the final bisection.
const LOAD_SAMPLES: usize = 48;

/// Load samples and bisection steps with nodes.
const NODE_LOAD_SAMPLES: usize = 12;
const NODE_LOAD_STEPS: usize = 16;

/// Highest load in `[0, upper]` at which `problem` is feasible, or `None` when none is.
///
/// Feasibility is not monotone in the load (the batch-fill delay falls as load rises), so
/// the range is sampled first and the boundary above the highest feasible sample is then
/// refined by bisection.
fn max_sustainable_load(problem: &Problem, upper: f64) -> Option<f64> {
    // With nodes a feasibility check may solve the placement MILP: fewer, coarser steps
    // (the boundary to within upper / 12 / 2^16).
    let (samples, steps) = if problem.nodes.is_empty() {
        (LOAD_SAMPLES, LOAD_STEPS)
    } else {
        (NODE_LOAD_SAMPLES, NODE_LOAD_STEPS)
    };
    let feasible = |load: f64| crate::is_feasible(&with_load(problem, load));
    if feasible(upper) {
        return Some(upper);
    }
    let step = upper / samples as f64;
    let mut good = None;
    for i in (0..samples).rev() {
        let load = step * i as f64;
        if feasible(load) {
            good = Some(load);
            break;
        }
    }
    let mut good = good?;
    let mut bad = good + step;
    for _ in 0..steps {
        let mid = 0.5 * (good + bad);
        if feasible(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

/// Diagnoses an infeasible (valid) problem. Variants left out because their GPU memory is
/// unmeasured (see [`gpu_memory_admissible`]) are named: as the cause when they are all a
/// stage has, else after the diagnosis.
pub fn diagnose(problem: &Problem) -> Infeasible {
    if problem.nodes.is_empty() {
        return diagnose_one_host(problem);
    }
    let one_host = Problem {
        nodes: Vec::new(),
        ..problem.clone()
    };
    let load = stage_load(problem);
    let max_load = || max_sustainable_load(problem, load);
    if crate::is_feasible(&one_host) {
        return Infeasible {
            binding: Constraint::NodePlacement,
            message: placement_message(problem, &one_host),
            max_sustainable_load_rps: max_load(),
            min_latency_ms: None,
        };
    }
    let mut infeasible = diagnose_one_host(&one_host);
    if infeasible.max_sustainable_load_rps.is_some() {
        infeasible.max_sustainable_load_rps = max_load();
    }
    infeasible
}

/// Why no plan places: the nodes, and how the plan that needs the fewest cores without
/// placement fails to place.
fn placement_message(problem: &Problem, one_host: &Problem) -> String {
    let fewest_cores = Problem {
        weights: Weights {
            alpha: 0.0,
            beta_per_core: 1.0,
            beta_per_gpu_gib: 0.0,
            gamma_per_cold_start_s: 0.0,
        },
        current: None,
        ..one_host.clone()
    };
    let smallest = if fewest_cores.allow_mix && fewest_cores.load_rps > 0.0 {
        crate::milp::solve_milp(&fewest_cores).ok().flatten()
    } else {
        crate::solve_with_dp(&fewest_cores, String::new(), Vec::new())
    };
    let detail = smallest
        .map(
            |s| match place_plan(&problem.pipeline, &s.plan, &problem.nodes) {
                Err(PlanError::Unplaceable(why)) => format!(
                    "; the plan with the fewest cores, {}, does not place: {why}",
                    s.plan
                ),
                Err(e) => format!("; the plan with the fewest cores, {}: {e}", s.plan),
                Ok(_) => String::new(),
            },
        )
        .unwrap_or_default();
    format!(
        "no plan that meets the slo at {} rps places its replicas on the nodes {}{detail}",
        round_for_message(stage_load(problem)),
        describe_nodes(&problem.nodes)
    )
}

/// The diagnosis of a problem without nodes.
fn diagnose_one_host(problem: &Problem) -> Infeasible {
    let excluded = unmeasured_gpu_excluded(problem);
    if excluded.is_empty() {
        return diagnose_measured(problem);
    }
    let names = |stage: &str| {
        excluded
            .iter()
            .filter(|(s, _)| s == stage)
            .map(|(_, v)| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(stage) = problem.pipeline.stages.iter().find(|st| {
        !st.variants
            .iter()
            .any(|v| gpu_memory_admissible(problem, v))
    }) {
        return Infeasible {
            binding: Constraint::HostGpuMemory,
            message: format!(
                "stage `{}` has no variant with measured gpu memory ({} unmeasured) and a gpu memory limit or gpu cost applies: measure them with `infadaptd profile` on a gpu host or set gpu_mem_mb in the catalog",
                stage.name,
                names(&stage.name)
            ),
            max_sustainable_load_rps: None,
            min_latency_ms: None,
        };
    }
    let mut infeasible = diagnose_measured(problem);
    let mut stages: Vec<&str> = excluded.iter().map(|(s, _)| s.as_str()).collect();
    stages.dedup();
    let listed: Vec<String> = stages
        .iter()
        .map(|s| format!("stage `{s}` {}", names(s)))
        .collect();
    infeasible.message.push_str(&format!(
        " (not considered, gpu memory unmeasured: {})",
        listed.join("; ")
    ));
    infeasible
}

/// The diagnosis over the variants the planner considers.
fn diagnose_measured(problem: &Problem) -> Infeasible {
    let pipeline = &problem.pipeline;
    let load = stage_load(problem);
    let slo = pipeline.slo_ms;
    // (a) the fastest configuration at this load.
    let mut fastest = Vec::with_capacity(pipeline.stages.len());
    for (k, stage) in pipeline.stages.iter().enumerate() {
        match fastest_option(problem, k, load) {
            Some(o) => fastest.push(o),
            None => {
                return Infeasible {
                    binding: Constraint::LatencySlo,
                    message: format!(
                        "stage `{}` has no usable configuration: every profile point is excluded by the extrapolation policy or saturated",
                        stage.name
                    ),
                    max_sustainable_load_rps: None,
                    min_latency_ms: None,
                };
            }
        }
    }
    let min_latency = fastest.iter().fold(0.0, |acc, o| acc + o.latency.total_ms);
    if min_latency > slo {
        let parts: Vec<String> = fastest
            .iter()
            .map(|o| {
                let stage = &pipeline.stages[o.stage];
                format!(
                    "stage `{}` variant `{}` batch {} cores {} replicas {} ({} ms)",
                    stage.name,
                    stage.variants[o.variant].name,
                    o.batch,
                    o.cores,
                    o.replicas,
                    round_for_message(o.latency.total_ms)
                )
            })
            .collect();
        let total = if parts.len() > 1 {
            format!(" = {} ms", round_for_message(min_latency))
        } else {
            String::new()
        };
        return Infeasible {
            binding: Constraint::LatencySlo,
            message: format!(
                "slo {} ms is below the fastest configuration at {} rps: {}{total}",
                round_for_message(slo),
                round_for_message(load),
                parts.join(" + "),
            ),
            max_sustainable_load_rps: None,
            min_latency_ms: Some(min_latency),
        };
    }
    let unlimited = Problem {
        limits: HostLimits::default(),
        ..problem.clone()
    };
    let max_load = max_sustainable_load(problem, load);
    // (b) the replicas cannot carry the load within the SLO.
    if !crate::is_feasible(&unlimited) {
        // The stage with the lowest throughput ceiling (max_replicas at the cap, over
        // configurations whose batch service fits the SLO) when it is below the load; else
        // the stage whose replica limit costs the most latency (or leaves no option at all).
        let ceiling = |k: usize| {
            let stage = &pipeline.stages[k];
            let mut best: f64 = 0.0;
            for v in 0..stage.variants.len() {
                for &b in &stage.batch_sizes {
                    for c in problem.core_options(k, v) {
                        if let Some(o) = make_option(problem, k, v, b, c, stage.max_replicas, load)
                            && o.estimate.p99_ms <= slo
                        {
                            best = best.max(
                                problem.utilisation_cap
                                    * f64::from(stage.max_replicas)
                                    * o.estimate.throughput_rps,
                            );
                        }
                    }
                }
            }
            best
        };
        let lowest = (0..pipeline.stages.len())
            .map(|k| (k, ceiling(k)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let mut worst: Option<(usize, f64)> = None;
        if let Some((k, c)) = lowest
            && c < load
        {
            worst = Some((k, f64::INFINITY));
        } else {
            for (k, o) in fastest.iter().enumerate() {
                let capped = stage_options(problem, k, load)
                    .iter()
                    .map(|x| x.latency.total_ms)
                    .fold(f64::INFINITY, f64::min);
                let loss = capped - o.latency.total_ms;
                if worst.is_none_or(|(_, w)| loss > w) {
                    worst = Some((k, loss));
                }
            }
        }
        let k = worst.map_or(0, |w| w.0);
        let stage = &pipeline.stages[k];
        let sustained = match max_load {
            Some(l) if l > 0.0 => {
                format!("the pipeline sustains at most {} rps", round_for_message(l))
            }
            Some(_) => "only an idle pipeline fits".to_owned(),
            None => "no load is sustainable within the host limits".to_owned(),
        };
        return Infeasible {
            binding: Constraint::Capacity {
                stage: stage.name.clone(),
            },
            message: format!(
                "load {} rps exceeds what stage `{}` sustains within the slo with at most {} {}; {sustained}",
                round_for_message(load),
                stage.name,
                stage.max_replicas,
                if stage.max_replicas == 1 {
                    "replica"
                } else {
                    "replicas"
                }
            ),
            max_sustainable_load_rps: max_load,
            min_latency_ms: Some(min_latency),
        };
    }
    // (c) the host is too small.
    let needed = |limits: HostLimits, weights: Weights| {
        let p = Problem {
            limits,
            weights,
            current: None,
            ..problem.clone()
        };
        if p.allow_mix && p.load_rps > 0.0 {
            crate::milp::solve_milp(&p).ok().flatten()
        } else {
            crate::solve_with_dp(&p, String::new(), Vec::new())
        }
    };
    let cores_only = Weights {
        alpha: 0.0,
        beta_per_core: 1.0,
        beta_per_gpu_gib: 0.0,
        gamma_per_cold_start_s: 0.0,
    };
    let gpu_only = Weights {
        alpha: 0.0,
        beta_per_core: 0.0,
        beta_per_gpu_gib: 1.0,
        gamma_per_cold_start_s: 0.0,
    };
    let limits = problem.limits;
    let (binding, message) = if let Some(cores) = limits.total_cores
        && let Some(s) = needed(
            HostLimits {
                total_cores: None,
                ..limits
            },
            cores_only,
        ) {
        (
            Constraint::HostCores,
            format!(
                "the plan needs at least {} cores but the host has {cores}",
                round_for_message(s.terms.cores)
            ),
        )
    } else if let Some(gpu) = limits.gpu_mem_mb
        && let Some(s) = needed(
            HostLimits {
                gpu_mem_mb: None,
                ..limits
            },
            gpu_only,
        )
    {
        (
            Constraint::HostGpuMemory,
            format!(
                "the plan needs at least {} mib of gpu memory but the host has {} mib",
                round_for_message(s.terms.gpu_gib * 1024.0),
                round_for_message(gpu)
            ),
        )
    } else {
        let cores = needed(HostLimits::default(), cores_only).map_or(0.0, |s| s.terms.cores);
        let gpu = needed(HostLimits::default(), gpu_only).map_or(0.0, |s| s.terms.gpu_gib * 1024.0);
        (
            Constraint::HostCores,
            format!(
                "host cores and gpu memory together are too small: a plan needs at least {} cores and at least {} mib of gpu memory, the host has {} cores and {} mib",
                round_for_message(cores),
                round_for_message(gpu),
                limits
                    .total_cores
                    .map_or("unlimited".to_owned(), |c| c.to_string()),
                limits
                    .gpu_mem_mb
                    .map_or("unlimited".to_owned(), round_for_message)
            ),
        )
    };
    Infeasible {
        binding,
        message,
        max_sustainable_load_rps: max_load,
        min_latency_ms: Some(min_latency),
    }
}
