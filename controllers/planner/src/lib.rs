//! The planner: turns a load forecast into the best configuration per stage.
//!
//! A [`Problem`] holds a pipeline, the load to provision for, the currently deployed plan and
//! the objective weights; [`solve`] returns the optimal [`Solution`] or an [`Infeasible`]
//! diagnosis naming the binding constraint and the closest feasible alternative.
//!
//! Model (per stage, for variant v, batch b, cores c, replicas n, stage load λ):
//! - replica throughput μ and batch latency (p99, mean) come from the variant profile;
//! - capacity: λ ≤ u_cap · n · μ;
//! - stage latency = batch fill `(b − 1)/λ` + batch p99 + queueing wait of batches at
//!   utilisation ρ = λ/(n·μ) (Sakasegawa's M/G/n approximation with the Erlang-b
//!   inter-arrival variability `1/b`); the end-to-end latency is the sum over stages ≤ SLO;
//! - objective: α·accuracy (sum or product over stages; a mix counts share-weighted)
//!   − β·cores − β_gpu·GPU GiB − γ·cold-start seconds of replicas the change must start.
//!
//! Conventions:
//! - every request visits every stage, so each stage of a chain sees the whole load;
//! - an idle stage (load 0) has no batch-fill delay and no queueing, and keeps one replica;
//! - replicas range from the fewest that carry the load within the cap (never fewer than the
//!   stage's `min_replicas`) to `extra_replicas` more (more replicas shorten queueing),
//!   never above `max_replicas`;
//! - with no current plan the first plan pays no change cost; otherwise replicas of an
//!   assignment with the same variant, batch and cores are reused and the others start cold;
//! - a variant mix (single-stage pipelines only) splits the load over at most one assignment
//!   per variant; each assignment must meet the SLO at its own share of the load, with
//!   1 to (replicas the whole load needs + `extra_replicas`, or `min_replicas` when more)
//!   replicas, at most [`options::MIX_MAX_REPLICAS`]; the mix's replicas together are at
//!   least the stage's `min_replicas`. With no load at all a mix degenerates to a single
//!   assignment.
//!
//! Solvers: [`SolverChoice::ParetoDp`] is an exact Pareto dynamic programme over per-stage
//! options; [`SolverChoice::Milp`] solves the same model as a mixed-integer programme (and
//! is the only one that plans mixes). Should the MILP fail or stop at its time limit, the
//! planner falls back to the Pareto-DP on the no-mix problem and says so in
//! [`Solution::solver`] and [`Solution::warnings`].
//!
//! Cluster placement: with [`Problem::nodes`] set, a plan must also place, every replica on
//! one node within its CPUs and GPUs, and the solution says where each replica goes
//! ([`Solution::placement`]); see [`placement`].

pub mod brute;
pub mod diagnose;
pub mod dp;
pub mod latency;
pub(crate) mod linear;
pub mod lp_export;
pub mod milp;
pub mod mix;
pub mod options;
pub mod placement;
pub mod problem;
pub mod report;
pub mod solution;
pub mod validate;

pub use lp_export::export_lp;
pub use placement::{NodeCapacity, place_plan, place_plan_near};
pub use problem::{
    AccuracyMode, ExtrapolationPolicy, HostLimits, LatencyModel, PinnedCores, Problem,
    SolverChoice, Weights,
};
pub use solution::{Constraint, Infeasible, ObjectiveTerms, PlanError, Solution, StageReport};

use options::{StageOption, prune_dominated, stage_load, stage_options};
use report::{Selected, build_solution};

/// Solves a planning problem exactly.
///
/// # Errors
///
/// [`PlanError::InvalidProblem`] when the problem is malformed, [`PlanError::Infeasible`]
/// with a diagnosis when no plan meets every constraint, [`PlanError::Solver`] when the
/// solver fails and no fallback applies.
pub fn solve(problem: &Problem) -> Result<Solution, PlanError> {
    validate::validate(problem)?;
    let found = if problem.nodes.is_empty() {
        solve_unplaced(problem)?
    } else {
        placement::solve_placed(problem)?
    };
    match found {
        Some(solution) => Ok(solution),
        None => Err(PlanError::Infeasible(Box::new(diagnose::diagnose(problem)))),
    }
}

/// The best plan of `problem` (assumed valid) without regard to its `nodes`; `Ok(None)`
/// when none is feasible.
pub(crate) fn solve_unplaced(problem: &Problem) -> Result<Option<Solution>, PlanError> {
    let use_milp = match problem.solver {
        SolverChoice::Auto => problem.allow_mix,
        SolverChoice::ParetoDp => false,
        SolverChoice::Milp => true,
    };
    Ok(if use_milp {
        milp::solve_milp(problem)?
    } else {
        solve_with_dp(problem, "pareto-dp".to_owned(), Vec::new())
    })
}

/// Pruned options of every stage for the no-mix problem.
pub fn no_mix_options(problem: &Problem) -> Vec<Vec<StageOption>> {
    let load = stage_load(problem);
    (0..problem.pipeline.stages.len())
        .map(|k| prune_dominated(problem, stage_options(problem, k, load)))
        .collect()
}

/// The no-mix problem solved by the Pareto-DP, or `None` when infeasible.
pub(crate) fn solve_with_dp(
    problem: &Problem,
    solver: String,
    warnings: Vec<String>,
) -> Option<Solution> {
    let options = no_mix_options(problem);
    let (choice, _) = dp::solve_dp(problem, &options);
    let choice = choice?;
    let selected = choice
        .iter()
        .enumerate()
        .map(|(k, &i)| vec![Selected::whole(options[k][i].clone(), stage_load(problem))])
        .collect();
    Some(build_solution(problem, selected, solver, warnings))
}

/// Whether some plan meets every constraint of `problem` (assumed valid).
pub(crate) fn is_feasible(problem: &Problem) -> bool {
    if !problem.nodes.is_empty() {
        return matches!(placement::solve_placed(problem), Ok(Some(_)));
    }
    if problem.allow_mix && problem.load_rps > 0.0 {
        matches!(milp::solve_milp(problem), Ok(Some(_)))
    } else {
        let options = no_mix_options(problem);
        dp::solve_dp(problem, &options).0.is_some()
    }
}
