//! Brute force for small instances, as a reference for the tests: enumerates every
//! combination of configurations straight from the model definitions, without the option
//! pruning, look-ahead or dominance of the solvers. With nodes, a combination counts only
//! when its replicas pack onto them, decided by the placement search without a step budget.
#![doc(hidden)]

use crate::latency::within_capacity;
use crate::mix::{MixOption, load_interval, optimal_loads};
use crate::options::{StageOption, make_option};
use crate::placement::{Group, Packing, pack, placements, replica_need};
use crate::problem::Problem;
use crate::report::{Selected, build_solution, objective_of};
use crate::solution::Solution;

/// The exact packing of `chosen` onto the problem's nodes: `Some(None)` with no nodes,
/// `Some(Some(placement))` when it places, `None` when it does not.
fn exact_placement(
    problem: &Problem,
    chosen: &[&StageOption],
) -> Option<Option<Vec<infadapt_model::Placement>>> {
    if problem.nodes.is_empty() {
        return Some(None);
    }
    let groups: Vec<Group> = chosen
        .iter()
        .map(|o| {
            let stage = &problem.pipeline.stages[o.stage];
            let variant = &stage.variants[o.variant];
            Group {
                stage: stage.name.clone(),
                variant: variant.name.clone(),
                need: replica_need(variant, o.cores),
                count: o.replicas,
            }
        })
        .collect();
    match pack(&groups, &problem.nodes, None) {
        Packing::Placed(counts) => Some(Some(placements(&groups, &counts, &problem.nodes))),
        Packing::Impossible(_) | Packing::Undecided => None,
    }
}

/// Replica counts scanned at most (the brute force is for small instances).
const MAX_SCAN: u32 = 10_000;

/// Smallest replica count within capacity by a linear scan, up to `limit`.
fn scan_min_replicas(problem: &Problem, throughput_rps: f64, limit: u32) -> Option<u32> {
    (1..=limit.min(MAX_SCAN))
        .find(|&n| within_capacity(problem.load_rps, n, throughput_rps, problem.utilisation_cap))
}

/// Every configuration of stage `k` with the whole load, unfiltered by latency.
fn raw_options(problem: &Problem, k: usize) -> Vec<StageOption> {
    let stage = &problem.pipeline.stages[k];
    let mut out = Vec::new();
    for v in 0..stage.variants.len() {
        for &b in &stage.batch_sizes {
            for c in problem.core_options(k, v) {
                let Some(probe) = make_option(problem, k, v, b, c, 1, problem.load_rps) else {
                    continue;
                };
                let Some(covers) =
                    scan_min_replicas(problem, probe.estimate.throughput_rps, stage.max_replicas)
                else {
                    continue;
                };
                let n_min = covers.max(stage.min_replicas);
                for n in 1..=stage.max_replicas.min(MAX_SCAN) {
                    if n >= n_min && n - n_min <= problem.extra_replicas {
                        out.extend(make_option(problem, k, v, b, c, n, problem.load_rps));
                    }
                }
            }
        }
    }
    out
}

/// The optimal plan by exhaustive search, or `None` when none is feasible.
pub fn brute_force(problem: &Problem) -> Option<Solution> {
    if problem.allow_mix && problem.load_rps > 0.0 {
        return brute_force_mix(problem);
    }
    let stages: Vec<Vec<StageOption>> = (0..problem.pipeline.stages.len())
        .map(|k| raw_options(problem, k))
        .collect();
    let mut best: Option<(f64, Vec<usize>, Option<Vec<infadapt_model::Placement>>)> = None;
    let mut index = vec![0usize; stages.len()];
    if stages.iter().any(Vec::is_empty) {
        return None;
    }
    loop {
        let chosen: Vec<&StageOption> = index
            .iter()
            .enumerate()
            .map(|(k, &i)| &stages[k][i])
            .collect();
        let latency = chosen.iter().fold(0.0, |acc, o| acc + o.latency.total_ms);
        let cores: u64 = chosen.iter().map(|o| o.cores_used).sum();
        let gpu = chosen.iter().fold(0.0, |acc, o| acc + o.gpu_mb);
        let fits = latency <= problem.pipeline.slo_ms
            && problem
                .limits
                .total_cores
                .is_none_or(|l| cores <= u64::from(l))
            && problem.limits.gpu_mem_mb.is_none_or(|l| gpu <= l);
        if fits {
            let selected: Vec<Vec<Selected>> = chosen
                .iter()
                .map(|o| vec![Selected::whole((*o).clone(), problem.load_rps)])
                .collect();
            let (objective, _) = objective_of(problem, &selected);
            if best.as_ref().is_none_or(|(b, _, _)| objective > *b)
                && let Some(placement) = exact_placement(problem, &chosen)
            {
                best = Some((objective, index.clone(), placement));
            }
        }
        // Next combination (odometer).
        let mut k = 0;
        loop {
            if k == index.len() {
                let (_, idx, placement) = best?;
                let selected = idx
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| vec![Selected::whole(stages[k][i].clone(), problem.load_rps)]);
                let mut solution = build_solution(
                    problem,
                    selected.collect(),
                    "brute-force".to_owned(),
                    Vec::new(),
                );
                solution.placement = placement.unwrap_or_default();
                return Some(solution);
            }
            index[k] += 1;
            if index[k] < stages[k].len() {
                break;
            }
            index[k] = 0;
            k += 1;
        }
    }
}

/// Mix candidates by their own enumeration: replicas from 1 to what the whole load needs plus
/// `extra_replicas` (or `min_replicas` when that is more), within `max_replicas`, with a
/// non-empty feasible load interval.
fn raw_mix_options(problem: &Problem) -> Vec<MixOption> {
    let stage = &problem.pipeline.stages[0];
    let mut out = Vec::new();
    for v in 0..stage.variants.len() {
        for &b in &stage.batch_sizes {
            for c in problem.core_options(0, v) {
                let Some(probe) = make_option(problem, 0, v, b, c, 1, problem.load_rps) else {
                    continue;
                };
                let need = scan_min_replicas(problem, probe.estimate.throughput_rps, MAX_SCAN)
                    .unwrap_or(MAX_SCAN);
                let top = need
                    .saturating_add(problem.extra_replicas)
                    .max(stage.min_replicas)
                    .min(stage.max_replicas)
                    .min(MAX_SCAN);
                for n in 1..=top {
                    let Some(option) = make_option(problem, 0, v, b, c, n, problem.load_rps) else {
                        continue;
                    };
                    if let Some((lo_rps, hi_rps)) = load_interval(problem, &option) {
                        out.push(MixOption {
                            option,
                            lo_rps,
                            hi_rps,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Exhaustive search over subsets of variants with one option each and the exact optimal
/// split of the load (a continuous knapsack) for each subset.
fn brute_force_mix(problem: &Problem) -> Option<Solution> {
    let options = raw_mix_options(problem);
    let variants = problem.pipeline.stages[0].variants.len();
    let per_variant: Vec<Vec<&MixOption>> = (0..variants)
        .map(|v| options.iter().filter(|m| m.option.variant == v).collect())
        .collect();
    let load = problem.load_rps;
    // choice[v] = 0: variant unused, i > 0: option i − 1 of variant v.
    let mut choice = vec![0usize; variants];
    let mut best: Option<(f64, Vec<Selected>, Option<Vec<infadapt_model::Placement>>)> = None;
    loop {
        let set: Vec<&MixOption> = choice
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(v, &c)| per_variant[v][c - 1])
            .collect();
        let cores: u64 = set.iter().map(|m| m.option.cores_used).sum();
        let gpu = set.iter().fold(0.0, |acc, m| acc + m.option.gpu_mb);
        let replicas: u32 = set.iter().map(|m| m.option.replicas).sum();
        let fits = problem
            .limits
            .total_cores
            .is_none_or(|l| cores <= u64::from(l))
            && problem.limits.gpu_mem_mb.is_none_or(|l| gpu <= l)
            && replicas >= problem.pipeline.stages[0].min_replicas;
        if fits && let Some(loads) = optimal_loads(problem.weights.alpha, &set, load) {
            let selected: Vec<Selected> = set
                .iter()
                .zip(loads)
                .map(|(m, l)| Selected::part(problem, m.option.clone(), l, load))
                .collect();
            let (objective, _) = objective_of(problem, std::slice::from_ref(&selected));
            let options: Vec<&StageOption> = set.iter().map(|m| &m.option).collect();
            if best.as_ref().is_none_or(|(b, _, _)| objective > *b)
                && let Some(placement) = exact_placement(problem, &options)
            {
                best = Some((objective, selected, placement));
            }
        }
        let mut v = 0;
        loop {
            if v == variants {
                let (_, selected, placement) = best?;
                let mut solution = build_solution(
                    problem,
                    vec![selected],
                    "brute-force".to_owned(),
                    Vec::new(),
                );
                solution.placement = placement.unwrap_or_default();
                return Some(solution);
            }
            choice[v] += 1;
            if choice[v] <= per_variant[v].len() {
                break;
            }
            choice[v] = 0;
            v += 1;
        }
    }
}
