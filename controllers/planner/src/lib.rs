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

pub mod problem;
pub mod solution;

pub use problem::{AccuracyMode, ExtrapolationPolicy, HostLimits, Problem, SolverChoice, Weights};
pub use solution::{Constraint, Infeasible, ObjectiveTerms, PlanError, Solution, StageReport};
