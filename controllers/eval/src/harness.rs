//! The harness: drives one policy against the serving simulator on a virtual clock and
//! measures what it did.
//!
//! Each workload second is one [`HostSim::step_second`]; every `policy.interval_s()` seconds
//! (rounded to whole seconds, at least 1) the harness observes the host, converts the
//! observation into the control loop's [`Observation`], asks the policy to decide, and
//! applies the decision when its plan differs from the deployed one. Every other second the
//! policy gets a [`Pulse`] (that second's arrivals, the queues now, the plan in force) and
//! may answer with a decision to apply at once (the fast path); those count as decisions
//! and reconfigurations like the ticks' do.
//!
//! An optional warm-up prefix of the workload lets forecasters learn before measuring: it
//! runs on its own simulator, then the measured part starts on a fresh simulator with the
//! plan the policy had reached deployed and ready, so every figure of the report covers the
//! measured seconds only. The policy keeps its state across the switch and sees one
//! continuous clock.

use infadapt_control::{Decision, Observation, Policy, Pulse};
use infadapt_model::{Pipeline, Plan};
use infadapt_sim::{HostSim, SimConfig, SimObservation};
use serde::Serialize;

use crate::EvalError;
use crate::changes::{ChangeCounter, plan_capacity, shapes};

/// How a run is measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Simulator settings (seed, SLO, timeouts, noise).
    pub sim: SimConfig,
    /// Leading workload seconds that only warm the policy up (not measured).
    pub warmup_s: usize,
    /// Window of the reversal definition, seconds (see [`crate::changes`]).
    pub reversal_window_s: f64,
    /// Whether to keep one [`TimelinePoint`] per decision.
    pub timeline: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            sim: SimConfig::default(),
            warmup_s: 0,
            reversal_window_s: DEFAULT_REVERSAL_WINDOW_S,
            timeline: true,
        }
    }
}

/// Default reversal window: 300 s, the usual scale-down stabilization window.
pub const DEFAULT_REVERSAL_WINDOW_S: f64 = 300.0;

/// What the harness saw at one decision (for plots).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the start of the measured part.
    pub time_s: f64,
    /// Mean arrival rate of the window, requests/s.
    pub observed_rps: f64,
    /// Highest per-second arrivals of the window.
    pub observed_peak_rps: f64,
    pub forecast_rps: Option<f64>,
    pub upper_rps: Option<f64>,
    /// Load the policy sized its plan for.
    pub provisioned_rps: f64,
    /// Profiled capacity of the plan deployed after the decision (smallest stage).
    pub capacity_rps: f64,
    /// Capacity of the replicas ready at the observation (smallest stage).
    pub ready_capacity_rps: f64,
    /// End-to-end p99 of the requests completed in the window.
    pub p99_ms: Option<f64>,
    pub slo_ms: f64,
    /// Variants per stage after the decision (`a+b` for a mix).
    pub variants: Vec<String>,
    /// Replicas per stage after the decision.
    pub replicas: Vec<u32>,
    /// Cores held by the plan after the decision.
    pub cores: u64,
    /// Whether the decision reconfigured the host.
    pub changed: bool,
    /// Variants per stage the planner proposed before damping (empty without a proposal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proposed_variants: Vec<String>,
    /// Why the damper held back or overrode part of the proposal, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<String>,
    /// Set for a decision taken between ticks: what the fast path saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<String>,
}

/// The measured outcome of one policy on one workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    /// Whether the policy is an oracle: sized from the measured window it is scored on, so
    /// not a policy that could run online (tables label it).
    pub oracle: bool,
    /// Measured seconds.
    pub seconds: u64,
    pub requests: u64,
    pub completed: u64,
    pub dropped: u64,
    /// Dropped plus completed after the SLO.
    pub slo_violations: u64,
    /// `slo_violations / (completed + dropped)`.
    pub slo_violation_rate: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    /// Composed accuracy of the requests that completed within the SLO, summed and divided
    /// by every request that arrived: late, dropped and unfinished requests count 0.
    pub on_time_accuracy: f64,
    /// Mean composed accuracy of the completed requests, late ones included (secondary).
    pub mean_accuracy: f64,
    pub cost_core_hours: f64,
    /// GPU memory held over the run (every replica that existed), GiB-hours.
    pub cost_gpu_gib_hours: f64,
    /// Applies that changed the host.
    pub reconfigurations: u64,
    /// Stage changes that moved back within the reversal window.
    pub reversals: u64,
    pub variant_switches: u64,
    pub replicas_started: u64,
    pub decisions: u64,
    /// Decisions that carried an error (the policy kept the deployed plan).
    pub decision_errors: u64,
    /// Plans the simulator rejected.
    pub apply_errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
}

/// Converts a simulator observation into the control loop's, with `offset_s` added to time:
/// through the simulated backend's report, as the daemon on that backend sees it (see
/// [`infadapt_bridge`]; the plan in force is the simulator's target plan).
pub fn to_observation(sim: &SimObservation, offset_s: f64) -> Observation {
    infadapt_bridge::observation_from_sim(sim, offset_s)
}

/// Progress callback: `(measured seconds done, measured seconds in all)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What the host showed when a decision was taken (for the timeline).
struct Seen {
    time_s: f64,
    ready_capacity_rps: f64,
    /// End-to-end p99 of the window (ticks only).
    p99_ms: Option<f64>,
}

/// Mutable state of one run.
struct Run<'p> {
    pipeline: &'p Pipeline,
    counter: ChangeCounter,
    timeline: Vec<TimelinePoint>,
    keep_timeline: bool,
    decisions: u64,
    decision_errors: u64,
    apply_errors: u64,
    variant_switches: u64,
    replicas_started: u64,
}

impl Run<'_> {
    /// One decision: observe, decide, apply; counted when `measuring`.
    fn tick(&mut self, policy: &mut dyn Policy, sim: &mut HostSim, offset_s: f64, measuring: bool) {
        let seen = sim.observe();
        let observation = to_observation(&seen, offset_s);
        let decision = policy.decide(&observation);
        let at = Seen {
            time_s: seen.time_s,
            ready_capacity_rps: seen
                .stages
                .iter()
                .map(|s| s.capacity_rps)
                .fold(f64::INFINITY, f64::min)
                .min(f64::MAX),
            p99_ms: seen.latency_p99_ms,
        };
        self.carry_out(sim, &at, &observation, &decision, measuring);
    }

    /// One pulse between ticks: the policy may decide at once (the fast path).
    fn pulse(
        &mut self,
        policy: &mut dyn Policy,
        sim: &mut HostSim,
        offset_s: f64,
        measuring: bool,
    ) {
        let pulse: Pulse = infadapt_bridge::pulse_from_sim(&sim.pulse(), offset_s);
        let Some(decision) = policy.react(&pulse) else {
            return;
        };
        // The timeline shows the window since the last tick without closing it.
        let observation = Observation {
            time_s: pulse.time_s,
            arrivals_per_second: pulse.arrivals_per_second.clone(),
            deployed: pulse.deployed.clone(),
            ..Observation::default()
        };
        let at = Seen {
            time_s: sim.now_s(),
            ready_capacity_rps: sim.ready_capacity_rps(),
            p99_ms: None,
        };
        self.carry_out(sim, &at, &observation, &decision, measuring);
    }

    /// Applies `decision` when it changes the plan, and counts it when `measuring`.
    fn carry_out(
        &mut self,
        sim: &mut HostSim,
        seen: &Seen,
        observation: &Observation,
        decision: &Decision,
        measuring: bool,
    ) {
        let before = sim.target_plan().clone();
        let mut changed = false;
        if decision.plan != before {
            match sim.apply(&decision.plan) {
                Ok(report) => {
                    changed = report.changed();
                    if measuring {
                        self.counter.record(
                            seen.time_s,
                            changed,
                            &shapes(self.pipeline, &before),
                            &shapes(self.pipeline, &decision.plan),
                        );
                        self.variant_switches += u64::from(report.variant_switches());
                        self.replicas_started += u64::from(report.replicas_started());
                    }
                }
                Err(_) => {
                    if measuring {
                        self.apply_errors += 1;
                    }
                }
            }
        }
        if !measuring {
            return;
        }
        self.decisions += 1;
        if decision.error.is_some() {
            self.decision_errors += 1;
        }
        if self.keep_timeline {
            let point = self.point(seen, observation, decision, sim.target_plan(), changed);
            self.timeline.push(point);
        }
    }

    fn point(
        &self,
        seen: &Seen,
        observation: &Observation,
        decision: &Decision,
        deployed: &Plan,
        changed: bool,
    ) -> TimelinePoint {
        let pipeline = self.pipeline;
        TimelinePoint {
            time_s: seen.time_s,
            observed_rps: observation.mean_rps(),
            observed_peak_rps: observation.peak_rps(),
            forecast_rps: decision.forecast_rps,
            upper_rps: decision.upper_rps,
            provisioned_rps: decision.provisioned_rps,
            capacity_rps: plan_capacity(pipeline, deployed),
            ready_capacity_rps: seen.ready_capacity_rps,
            p99_ms: seen.p99_ms,
            slo_ms: pipeline.slo_ms,
            variants: variants_per_stage(pipeline, deployed),
            replicas: pipeline
                .stages
                .iter()
                .map(|s| {
                    deployed
                        .stage(&s.name)
                        .map_or(0, |p| p.assignments.iter().map(|a| a.replicas).sum())
                })
                .collect(),
            cores: deployed.cores(),
            changed,
            proposed_variants: decision
                .proposed
                .as_ref()
                .map_or_else(Vec::new, |p| variants_per_stage(pipeline, p)),
            held_back: decision.held_back.clone(),
            fast_path: decision.fast_path.clone(),
        }
    }
}

/// The variants serving each stage of `plan`, in pipeline order (`a+b` for a mix).
fn variants_per_stage(pipeline: &Pipeline, plan: &Plan) -> Vec<String> {
    pipeline
        .stages
        .iter()
        .map(|s| {
            plan.stage(&s.name).map_or_else(String::new, |p| {
                p.assignments
                    .iter()
                    .filter(|a| a.replicas > 0)
                    .map(|a| a.variant.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            })
        })
        .collect()
}

/// Runs `policy` on `workload` (requests per second, one value per second) against a
/// simulated host serving `pipeline`, and reports what it achieved.
///
/// # Errors
///
/// [`EvalError::Sim`] when the simulator rejects the pipeline, the settings or the
/// policy's initial plan.
pub fn run_policy(
    policy: &mut dyn Policy,
    pipeline: &Pipeline,
    workload: &[f64],
    options: &RunOptions,
    mut progress: Option<Progress<'_>>,
) -> Result<PolicyReport, EvalError> {
    let interval = policy.interval_s();
    let interval = if interval.is_finite() {
        (interval.round() as usize).max(1)
    } else {
        1
    };
    let warmup = options.warmup_s.min(workload.len());
    let measured = (workload.len() - warmup) as u64;
    let mut run = Run {
        pipeline,
        counter: ChangeCounter::new(pipeline.stages.len(), options.reversal_window_s),
        timeline: Vec::new(),
        keep_timeline: options.timeline,
        decisions: 0,
        decision_errors: 0,
        apply_errors: 0,
        variant_switches: 0,
        replicas_started: 0,
    };
    let mut sim = HostSim::new(pipeline, &policy.initial_plan(), options.sim.clone())?;
    for (second, &rate) in workload[..warmup].iter().enumerate() {
        sim.step_second(rate);
        if (second + 1).is_multiple_of(interval) {
            run.tick(policy, &mut sim, 0.0, false);
        } else {
            run.pulse(policy, &mut sim, 0.0, false);
        }
    }
    if warmup > 0 {
        let reached = sim.target_plan().clone();
        sim = HostSim::new(pipeline, &reached, options.sim.clone())?;
    }
    let offset = warmup as f64;
    let report_every = (measured / 200).max(interval as u64);
    for (i, &rate) in workload[warmup..].iter().enumerate() {
        sim.step_second(rate);
        if (warmup + i + 1).is_multiple_of(interval) {
            run.tick(policy, &mut sim, offset, true);
        } else {
            run.pulse(policy, &mut sim, offset, true);
        }
        let done = i as u64 + 1;
        if let Some(progress) = progress.as_mut()
            && (done.is_multiple_of(report_every) || done == measured)
        {
            progress(done, measured);
        }
    }
    let totals = sim.totals();
    Ok(PolicyReport {
        policy: policy.name().to_owned(),
        oracle: false,
        seconds: totals.seconds,
        requests: totals.requests,
        completed: totals.completed,
        dropped: totals.dropped,
        slo_violations: totals.slo_violations,
        slo_violation_rate: totals.slo_violation_rate,
        p50_latency_ms: totals.p50_latency_ms,
        p99_latency_ms: totals.p99_latency_ms,
        on_time_accuracy: totals.on_time_accuracy,
        mean_accuracy: totals.mean_accuracy,
        cost_core_hours: totals.cost_core_hours,
        cost_gpu_gib_hours: totals.gpu_mib_seconds / 1024.0 / 3600.0,
        reconfigurations: run.counter.reconfigurations(),
        reversals: run.counter.reversals(),
        variant_switches: run.variant_switches,
        replicas_started: run.replicas_started,
        decisions: run.decisions,
        decision_errors: run.decision_errors,
        apply_errors: run.apply_errors,
        timeline: run.timeline,
    })
}
