//! Evaluation harness: runs autoscaling policies, ours and the ones it is compared with,
//! against the serving simulator on the same workload, and measures SLO violations, latency,
//! accuracy, cost and how often and how erratically each one reconfigures.
//!
//! Pure: no files, no wall clock. [`run_policy`] drives one [`infadapt_control::Policy`] on a
//! virtual clock; [`policies::build`] makes every compared policy by name for a
//! [`Scenario`]; [`compare`] runs several on one workload.

pub mod changes;
pub mod error;
pub mod harness;
pub mod paired;
pub mod policies;
pub mod scenario;

pub use changes::{ChangeCounter, StageShape, plan_capacity, shapes};
pub use error::EvalError;
pub use harness::{
    DEFAULT_REVERSAL_WINDOW_S, PolicyReport, Progress, RunOptions, TimelinePoint, run_policy,
    to_observation,
};
pub use paired::{Metric, PairedDifference, PolicySummary, SeedRun, Spread, summarize};
pub use policies::{NAMES, PolicyName};
pub use scenario::{LoopSettings, Scenario, WorkloadStats};

/// Least warm-up, in seconds, that the policies sized from statistics (`hpa`, `vpa`,
/// `static-*`) are sized from; with less they are sized from the measured window and their
/// reports say `oracle`.
pub const MIN_SIZING_HISTORY_S: usize = 600;

/// Runs the policy `name` on `workload` in `scenario`: the first `scenario.warmup_s`
/// seconds warm it up, the rest is measured.
///
/// The policies sized from workload statistics are sized from the warm-up when it lasts
/// [`MIN_SIZING_HISTORY_S`] or more, else from the measured part (and marked `oracle`).
///
/// # Errors
///
/// [`EvalError::UnknownPolicy`] for a name not in [`PolicyName::ALL`]; when the policy
/// cannot be built or the simulator rejects the scenario.
pub fn evaluate(
    name: &str,
    scenario: &Scenario,
    workload: &[f64],
    timeline: bool,
    progress: Option<Progress<'_>>,
) -> Result<PolicyReport, EvalError> {
    let policy_name: PolicyName = name.parse()?;
    let warmup = scenario.warmup_s.min(workload.len());
    // Sized from the warm-up (history) when there is enough of it; from the measured window
    // otherwise, which makes the policies sized from statistics oracles.
    let from_window = warmup < MIN_SIZING_HISTORY_S;
    let sizing = if from_window {
        &workload[warmup..]
    } else {
        &workload[..warmup]
    };
    let stats = WorkloadStats::of(sizing);
    let mut policy = policies::build(policy_name, scenario, &stats)?;
    let options = RunOptions {
        sim: scenario.sim.clone(),
        warmup_s: warmup,
        reversal_window_s: DEFAULT_REVERSAL_WINDOW_S,
        timeline,
    };
    let mut report = run_policy(
        policy.as_mut(),
        &scenario.problem.pipeline,
        workload,
        &options,
        progress,
    )?;
    report.oracle = from_window && policy_name.sized_from_statistics();
    Ok(report)
}

/// Runs each policy of `names` in turn (see [`evaluate`]).
///
/// # Errors
///
/// The first policy that cannot run.
pub fn compare(
    names: &[&str],
    scenario: &Scenario,
    workload: &[f64],
    timeline: bool,
) -> Result<Vec<PolicyReport>, EvalError> {
    names
        .iter()
        .map(|name| evaluate(name, scenario, workload, timeline, None))
        .collect()
}
