//! The planning model as a mixed-integer programme, solved by branch and bound.
//!
//! No mix: a binary `x` per (stage, option) with exactly one per stage, the latency and host
//! limits as knapsack rows, and the objective Σ (α·accuracy − penalty)·x. In product mode the
//! accuracy product is linearised exactly: `p_0 = Σ acc·x_0`, and for later stages
//! `z ≤ x`, `z ≤ p_{k−1}`, `z ≥ p_{k−1} − (1 − x)`, `p_k = Σ acc·z` (valid as accuracies lie
//! in [0, 1]); the objective is α·p_last − Σ penalty·x.
//!
//! Mix (single stage): a binary `x` and a continuous share `s` per option, with
//! `(lo/λ)·x ≤ s ≤ (hi/λ)·x` where `[lo, hi]` is the load interval on which the option meets
//! the SLO, at most one option per variant, Σ s = 1, and the objective
//! Σ α·accuracy·s − Σ penalty·x. A stage `min_replicas` above 1 adds the row
//! Σ replicas·x ≥ min_replicas (the stage total, every assignment counted).

use std::time::Duration;

use infadapt_model::{Placement, Plan};

use crate::linear::{LinearModel, ModelOutcome, Sense, VarKind};
use crate::mix::{MixOption, mix_options, optimal_loads};
use crate::options::{MIX_MAX_REPLICAS, StageOption, mix_candidates, mix_min_replicas, stage_load};
use crate::placement::{
    ReplicaNeed, distribute, placement_fits, placements, plan_groups, repair, replica_need,
};
use crate::problem::{AccuracyMode, Problem};
use crate::report::{Selected, build_solution};
use crate::solution::{Constraint, PlanError, Solution};

/// A model with the meaning of its decision variables.
#[derive(Debug, Clone)]
pub(crate) struct BuiltModel {
    pub model: LinearModel,
    pub kind: ModelKind,
    /// The per-node replica counts, when the problem has nodes.
    pub placement: Option<PlacementVars>,
}

/// Placement block: `y[i][n]`, the replicas needing `needs[i]` on node `n` (an integer,
/// absent where one such replica does not fit the node), with the rows
/// `Σ_n y[i][n] = Σ_{options o with need i} replicas_o·x_o` and, per node,
/// `Σ_i cpus_i·y[i][n] ≤ cpus_n` and `Σ_i gpus_i·y[i][n] ≤ gpus_n`. Replicas with equal
/// needs are interchangeable on a node, so counting them per need rather than per option
/// loses nothing and keeps the block small. Of nodes with equal CPUs and GPUs each holds at
/// least the CPUs of the next such node (`order_n…` rows), which removes their symmetry.
#[derive(Debug, Clone)]
pub(crate) struct PlacementVars {
    pub needs: Vec<ReplicaNeed>,
    pub y: Vec<Vec<Option<usize>>>,
}

/// What the variables of a built model stand for.
#[derive(Debug, Clone)]
pub(crate) enum ModelKind {
    /// `x[k][o]` is the variable of option `o` of stage `k`.
    Chain {
        options: Vec<Vec<StageOption>>,
        x: Vec<Vec<usize>>,
    },
    /// Options of the single stage with their selection and share variables.
    Mix {
        options: Vec<MixOption>,
        x: Vec<usize>,
        load_rps: f64,
    },
}

fn describe(problem: &Problem, o: &StageOption) -> String {
    let stage = &problem.pipeline.stages[o.stage];
    format!(
        "stage `{}` variant `{}` batch {} cores {} replicas {}",
        stage.name, stage.variants[o.variant].name, o.batch, o.cores, o.replicas
    )
}

/// Builds the MILP of `problem` (assumed valid), with the placement block when it has nodes.
pub(crate) fn build_model(problem: &Problem) -> BuiltModel {
    let mut built = build_unplaced(problem);
    if !problem.nodes.is_empty() {
        add_placement(problem, &mut built);
    }
    built
}

/// Builds the MILP of `problem` (assumed valid) without regard to its nodes.
fn build_unplaced(problem: &Problem) -> BuiltModel {
    if problem.allow_mix && problem.load_rps > 0.0 {
        build_mix(problem)
    } else {
        build_chain(problem, crate::no_mix_options(problem))
    }
}

/// The selection variables of `built` with their options.
fn selections(built: &BuiltModel) -> Vec<(usize, &StageOption)> {
    match &built.kind {
        ModelKind::Chain { options, x } => options
            .iter()
            .zip(x)
            .flat_map(|(os, xs)| xs.iter().copied().zip(os.iter()))
            .collect(),
        ModelKind::Mix { options, x, .. } => x
            .iter()
            .copied()
            .zip(options.iter().map(|mo| &mo.option))
            .collect(),
    }
}

/// Adds the placement block (see [`PlacementVars`]).
fn add_placement(problem: &Problem, built: &mut BuiltModel) {
    let need_of = |o: &StageOption| {
        replica_need(
            &problem.pipeline.stages[o.stage].variants[o.variant],
            o.cores,
        )
    };
    let chosen: Vec<(usize, ReplicaNeed, u32)> = selections(built)
        .into_iter()
        .map(|(x, o)| (x, need_of(o), o.replicas))
        .collect();
    let mut needs: Vec<ReplicaNeed> = chosen.iter().map(|c| c.1).collect();
    needs.sort();
    needs.dedup();
    let nodes = &problem.nodes;
    let m = &mut built.model;
    let mut y = Vec::with_capacity(needs.len());
    for (i, need) in needs.iter().enumerate() {
        let row: Vec<Option<usize>> = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let fits = |offered: f64, each: u32| {
                    if each == 0 {
                        f64::from(MIX_MAX_REPLICAS) * 1024.0
                    } else {
                        ((offered + 1e-9) / f64::from(each)).floor().max(0.0)
                    }
                };
                let most = fits(node.cpus, need.cpus).min(fits(node.gpus, need.gpus));
                (most >= 1.0).then(|| {
                    m.add_var(
                        format!("y_r{i}_n{n}"),
                        0.0,
                        (0.0, most),
                        VarKind::Integer,
                        format!(
                            "replicas of {} CPUs and {} GPUs on node `{}`",
                            need.cpus, need.gpus, node.id
                        ),
                    )
                })
            })
            .collect();
        let mut terms: Vec<(usize, f64)> = row.iter().flatten().map(|&v| (v, 1.0)).collect();
        terms.extend(
            chosen
                .iter()
                .filter(|c| c.1 == *need)
                .map(|c| (c.0, -f64::from(c.2))),
        );
        m.add_row(format!("placed_r{i}"), terms, Sense::Eq, 0.0);
        y.push(row);
    }
    for (n, node) in nodes.iter().enumerate() {
        let cpu_terms: Vec<(usize, f64)> = needs
            .iter()
            .zip(&y)
            .filter_map(|(need, row)| row[n].map(|v| (v, f64::from(need.cpus))))
            .filter(|t| t.1 > 0.0)
            .collect();
        if !cpu_terms.is_empty() {
            m.add_row(format!("cpus_n{n}"), cpu_terms, Sense::Le, node.cpus);
        }
        let gpu_terms: Vec<(usize, f64)> = needs
            .iter()
            .zip(&y)
            .filter_map(|(need, row)| row[n].map(|v| (v, f64::from(need.gpus))))
            .filter(|t| t.1 > 0.0)
            .collect();
        if !gpu_terms.is_empty() {
            m.add_row(format!("gpus_n{n}"), gpu_terms, Sense::Le, node.gpus);
        }
    }
    // Nodes with equal CPUs and GPUs are interchangeable: of such nodes, in their order,
    // each holds at least the CPUs of the next (any placement can be permuted so), which
    // spares the branch and bound the permutations of one placement.
    let used = |n: usize| -> Vec<(usize, f64)> {
        needs
            .iter()
            .zip(&y)
            .filter_map(|(need, row)| row[n].map(|v| (v, f64::from(need.cpus))))
            .filter(|t| t.1 > 0.0)
            .collect()
    };
    for (n, node) in nodes.iter().enumerate() {
        let twin = nodes
            .iter()
            .enumerate()
            .skip(n + 1)
            .find(|(_, other)| other.cpus == node.cpus && other.gpus == node.gpus);
        if let Some((next, _)) = twin {
            let mut terms = used(n);
            terms.extend(used(next).into_iter().map(|(v, c)| (v, -c)));
            if !terms.is_empty() {
                m.add_row(format!("order_n{n}_n{next}"), terms, Sense::Ge, 0.0);
            }
        }
    }
    built.placement = Some(PlacementVars { needs, y });
}

fn build_chain(problem: &Problem, options: Vec<Vec<StageOption>>) -> BuiltModel {
    let mut m = LinearModel::default();
    let alpha = problem.weights.alpha;
    let product = problem.accuracy_mode == AccuracyMode::Product;
    let mut x: Vec<Vec<usize>> = Vec::with_capacity(options.len());
    for (k, stage_options) in options.iter().enumerate() {
        let vars = stage_options
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let objective = if product {
                    -o.penalty
                } else {
                    alpha * o.accuracy - o.penalty
                };
                m.add_var(
                    format!("x_s{k}_o{i}"),
                    objective,
                    (0.0, 1.0),
                    VarKind::Binary,
                    describe(problem, o),
                )
            })
            .collect::<Vec<_>>();
        m.add_row(
            format!("one_s{k}"),
            vars.iter().map(|&v| (v, 1.0)).collect(),
            Sense::Eq,
            1.0,
        );
        x.push(vars);
    }
    let all = |f: &dyn Fn(&StageOption) -> f64| -> Vec<(usize, f64)> {
        options
            .iter()
            .zip(&x)
            .flat_map(|(os, xs)| os.iter().zip(xs).map(|(o, &v)| (v, f(o))))
            .collect()
    };
    m.add_row(
        "latency".to_owned(),
        all(&|o| o.latency.total_ms),
        Sense::Le,
        problem.pipeline.slo_ms,
    );
    if let Some(limit) = problem.limits.total_cores {
        m.add_row(
            "host_cores".to_owned(),
            all(&|o| o.cores_used as f64),
            Sense::Le,
            f64::from(limit),
        );
    }
    if let Some(limit) = problem.limits.gpu_mem_mb {
        m.add_row(
            "host_gpu_mb".to_owned(),
            all(&|o| o.gpu_mb),
            Sense::Le,
            limit,
        );
    }
    if product {
        let mut previous: Option<usize> = None;
        for (k, stage_options) in options.iter().enumerate() {
            let last = k + 1 == options.len();
            let p = m.add_var(
                format!("p_s{k}"),
                if last { alpha } else { 0.0 },
                (0.0, 1.0),
                VarKind::Continuous,
                format!("accuracy product of stages 0..={k}"),
            );
            let mut terms = vec![(p, 1.0)];
            match previous {
                None => terms.extend(
                    stage_options
                        .iter()
                        .zip(&x[k])
                        .map(|(o, &v)| (v, -o.accuracy)),
                ),
                Some(prev) => {
                    for (i, (o, &xv)) in stage_options.iter().zip(&x[k]).enumerate() {
                        let z = m.add_var(
                            format!("z_s{k}_o{i}"),
                            0.0,
                            (0.0, 1.0),
                            VarKind::Continuous,
                            format!("x_s{k}_o{i} · p_s{}", k - 1),
                        );
                        m.add_row(
                            format!("zx_s{k}_o{i}"),
                            vec![(z, 1.0), (xv, -1.0)],
                            Sense::Le,
                            0.0,
                        );
                        m.add_row(
                            format!("zp_s{k}_o{i}"),
                            vec![(z, 1.0), (prev, -1.0)],
                            Sense::Le,
                            0.0,
                        );
                        m.add_row(
                            format!("zl_s{k}_o{i}"),
                            vec![(z, 1.0), (prev, -1.0), (xv, -1.0)],
                            Sense::Ge,
                            -1.0,
                        );
                        terms.push((z, -o.accuracy));
                    }
                }
            }
            m.add_row(format!("prod_s{k}"), terms, Sense::Eq, 0.0);
            previous = Some(p);
        }
    }
    BuiltModel {
        model: m,
        kind: ModelKind::Chain { options, x },
        placement: None,
    }
}

fn build_mix(problem: &Problem) -> BuiltModel {
    let load = stage_load(problem);
    let options = mix_options(problem, mix_candidates(problem, load));
    let alpha = problem.weights.alpha;
    let mut m = LinearModel::default();
    let mut x = Vec::with_capacity(options.len());
    let mut share = Vec::with_capacity(options.len());
    for (i, mo) in options.iter().enumerate() {
        let o = &mo.option;
        let xv = m.add_var(
            format!("x_s0_o{i}"),
            -o.penalty,
            (0.0, 1.0),
            VarKind::Binary,
            describe(problem, o),
        );
        let (lo, hi) = (mo.lo_rps / load, mo.hi_rps / load);
        let sv = m.add_var(
            format!("s_s0_o{i}"),
            alpha * o.accuracy,
            (0.0, hi),
            VarKind::Continuous,
            format!("share of the load on x_s0_o{i}, feasible in [{lo}, {hi}]"),
        );
        m.add_row(
            format!("share_hi_o{i}"),
            vec![(sv, 1.0), (xv, -hi)],
            Sense::Le,
            0.0,
        );
        m.add_row(
            format!("share_lo_o{i}"),
            vec![(sv, 1.0), (xv, -lo)],
            Sense::Ge,
            0.0,
        );
        x.push(xv);
        share.push(sv);
    }
    let variants = problem.pipeline.stages[0].variants.len();
    for v in 0..variants {
        let terms: Vec<(usize, f64)> = options
            .iter()
            .zip(&x)
            .filter(|(mo, _)| mo.option.variant == v)
            .map(|(_, &xv)| (xv, 1.0))
            .collect();
        if terms.len() > 1 {
            m.add_row(format!("one_variant_v{v}"), terms, Sense::Le, 1.0);
        }
    }
    m.add_row(
        "load".to_owned(),
        share.iter().map(|&s| (s, 1.0)).collect(),
        Sense::Eq,
        1.0,
    );
    if let Some(limit) = problem.limits.total_cores {
        let terms = options
            .iter()
            .zip(&x)
            .map(|(mo, &xv)| (xv, mo.option.cores_used as f64))
            .collect();
        m.add_row("host_cores".to_owned(), terms, Sense::Le, f64::from(limit));
    }
    if let Some(limit) = problem.limits.gpu_mem_mb {
        let terms = options
            .iter()
            .zip(&x)
            .map(|(mo, &xv)| (xv, mo.option.gpu_mb))
            .collect();
        m.add_row("host_gpu_mb".to_owned(), terms, Sense::Le, limit);
    }
    let min_replicas = mix_min_replicas(problem);
    if min_replicas > 1 {
        let terms = options
            .iter()
            .zip(&x)
            .map(|(mo, &xv)| (xv, f64::from(mo.option.replicas)))
            .collect();
        m.add_row(
            "min_replicas".to_owned(),
            terms,
            Sense::Ge,
            f64::from(min_replicas),
        );
    }
    BuiltModel {
        model: m,
        kind: ModelKind::Mix {
            options,
            x,
            load_rps: load,
        },
        placement: None,
    }
}

/// Selected assignments from variable values, or why they cannot be used.
fn decode(
    problem: &Problem,
    built: &BuiltModel,
    values: &[f64],
) -> Result<Vec<Vec<Selected>>, PlanError> {
    let on = |v: usize| values[v] > 0.5;
    match &built.kind {
        ModelKind::Chain { options, x } => {
            let load = stage_load(problem);
            let mut stages = Vec::with_capacity(options.len());
            let mut latency = 0.0;
            let (mut cores, mut gpu) = (0u64, 0.0);
            for (os, xs) in options.iter().zip(x) {
                let chosen: Vec<usize> = (0..os.len()).filter(|&i| on(xs[i])).collect();
                let [i] = chosen[..] else {
                    return Err(PlanError::OptionsPerStage(chosen.len()));
                };
                latency += os[i].latency.total_ms;
                cores += os[i].cores_used;
                gpu += os[i].gpu_mb;
                stages.push(vec![Selected::whole(os[i].clone(), load)]);
            }
            let over_cores = problem
                .limits
                .total_cores
                .is_some_and(|l| cores > u64::from(l));
            let over_gpu = problem.limits.gpu_mem_mb.is_some_and(|l| gpu > l);
            if latency > problem.pipeline.slo_ms || over_cores || over_gpu {
                return Err(PlanError::BrokenAfterRounding);
            }
            Ok(stages)
        }
        ModelKind::Mix {
            options,
            x,
            load_rps,
            ..
        } => {
            let set: Vec<&MixOption> = options
                .iter()
                .zip(x)
                .filter(|(_, xv)| on(**xv))
                .map(|(mo, _)| mo)
                .collect();
            let replicas: u32 = set.iter().map(|mo| mo.option.replicas).sum();
            if replicas < mix_min_replicas(problem) {
                return Err(PlanError::MixBelowMinReplicas);
            }
            let loads = optimal_loads(problem.weights.alpha, &set, *load_rps)
                .ok_or(PlanError::MixCannotCarryLoad)?;
            Ok(vec![
                set.iter()
                    .zip(loads)
                    .map(|(mo, l)| Selected::part(problem, mo.option.clone(), l, *load_rps))
                    .collect(),
            ])
        }
    }
}

/// Solves `problem` (assumed valid) with the MILP, falling back to the Pareto-DP on the
/// no-mix problem when the solver fails or stops at its time limit. `Ok(None)`: infeasible.
pub fn solve_milp(problem: &Problem) -> Result<Option<Solution>, PlanError> {
    let built = build_unplaced(problem);
    if let ModelKind::Chain { options, .. } = &built.kind
        && options.iter().any(Vec::is_empty)
    {
        return Ok(None);
    }
    if let ModelKind::Mix { options, .. } = &built.kind
        && options.is_empty()
    {
        return Ok(None);
    }
    let limit = Duration::from_millis(problem.time_limit_ms);
    let fallback =
        |reason: String, incumbent: Option<Solution>| -> Result<Option<Solution>, PlanError> {
            let warning = format!(
                "milp fallback: {reason}; the plan comes from the pareto-dp without variant mixes"
            );
            let dp = crate::solve_with_dp(
                problem,
                format!("pareto-dp (milp fallback: {reason})"),
                vec![warning],
            );
            Ok(match (dp, incumbent) {
                (Some(d), Some(i)) => Some(if i.objective > d.objective { i } else { d }),
                (d, i) => d.or(i),
            })
        };
    match built.model.solve(limit) {
        ModelOutcome::Infeasible => Ok(None),
        ModelOutcome::Failed(reason) => fallback(reason, None),
        ModelOutcome::Solved { values, proven } => match decode(problem, &built, &values) {
            Err(reason) => fallback(reason.to_string(), None),
            Ok(stages) if proven => Ok(Some(build_solution(
                problem,
                stages,
                "milp".to_owned(),
                Vec::new(),
            ))),
            Ok(stages) => {
                let reason = format!("time limit of {} ms reached", problem.time_limit_ms);
                let warning = format!(
                    "milp stopped at its {} ms time limit; the plan may not be optimal",
                    problem.time_limit_ms
                );
                let incumbent = build_solution(
                    problem,
                    stages,
                    "milp (time limit)".to_owned(),
                    vec![warning],
                );
                fallback(reason, Some(incumbent))
            }
        },
    }
}

/// The placement of a decoded solution from the values of the placement block, checked
/// against the nodes.
fn decode_placement(
    problem: &Problem,
    block: &PlacementVars,
    plan: &Plan,
    values: &[f64],
) -> Result<Vec<Placement>, PlanError> {
    let groups = plan_groups(&problem.pipeline, plan);
    let mut per_need: Vec<Vec<u32>> = block
        .y
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| v.map_or(0, |v| values[v].round().max(0.0) as u32))
                .collect()
        })
        .collect();
    let counts = distribute(&groups, &block.needs, &mut per_need, problem.nodes.len());
    let placement = placements(&groups, &counts, &problem.nodes);
    if placement_fits(&problem.pipeline, plan, &placement, &problem.nodes) {
        Ok(placement)
    } else {
        Err(PlanError::BrokenAfterRounding)
    }
}

/// Solves `problem` (assumed valid, with nodes) with the MILP and its placement block.
/// Exact when the search finishes; at its time limit the incumbent (which places) is kept
/// with a warning; when the solver fails the placement repair takes over
/// ([`crate::placement::repair`]) and says so. `Ok(None)`: no plan places.
pub(crate) fn solve_milp_placed(problem: &Problem) -> Result<Option<Solution>, PlanError> {
    let built = build_model(problem);
    if selections(&built).is_empty()
        || matches!(&built.kind, ModelKind::Chain { options, .. } if options.iter().any(Vec::is_empty))
    {
        return Ok(None);
    }
    let Some(block) = &built.placement else {
        return Ok(None);
    };
    let limit = Duration::from_millis(problem.time_limit_ms);
    let placed = |values: &[f64], solver: &str, warnings: Vec<String>| {
        let stages = decode(problem, &built, values)?;
        let mut solution = build_solution(problem, stages, solver.to_owned(), warnings);
        solution.placement = decode_placement(problem, block, &solution.plan, values)?;
        if !solution.binding.contains(&Constraint::NodePlacement) {
            solution.binding.push(Constraint::NodePlacement);
        }
        Ok::<Solution, PlanError>(solution)
    };
    match built.model.solve(limit) {
        ModelOutcome::Infeasible => Ok(None),
        ModelOutcome::Failed(reason) => Ok(repair(problem, &reason)),
        ModelOutcome::Solved { values, proven } => {
            let (solver, warnings) = if proven {
                ("milp (placement)".to_owned(), Vec::new())
            } else {
                (
                    "milp (placement, time limit)".to_owned(),
                    vec![format!(
                        "milp with placement stopped at its {} ms time limit; the plan places \
                         but may not be optimal",
                        problem.time_limit_ms
                    )],
                )
            };
            match placed(&values, &solver, warnings) {
                Ok(solution) => Ok(Some(solution)),
                Err(reason) => Ok(repair(problem, &reason.to_string())),
            }
        }
    }
}
