//! The damper: turns the planner's proposal into the plan to apply, holding back changes
//! that would make the loop flap, and saying why.

use std::collections::{BTreeMap, VecDeque};

use infadapt_model::{Pipeline, Plan, Stage, StagePlan};
use infadapt_planner::HostLimits;
use serde::Serialize;

use crate::capacity::{pipeline_stage, plan_gpu_mem_mb, plan_latency_ms, stage_capacity_rps};
use crate::{DampingConfig, DampingError};

/// Slack on time comparisons (virtual clocks add tick lengths in floating point).
const TIME_EPS_S: f64 = 1e-6;

/// What the damper needs at one tick. Time is passed in; nothing here reads a clock.
#[derive(Debug, Clone, Copy)]
pub struct DampingInput<'a> {
    /// Time of the decision, seconds.
    pub now_s: f64,
    /// The pipeline whose profiles give each configuration's capacity and latency.
    pub pipeline: &'a Pipeline,
    /// The planner's proposal.
    pub proposed: &'a Plan,
    /// What runs now.
    pub deployed: &'a Plan,
    /// Demand observed over the last period (mean arrival rate), requests/s: the damped
    /// plan always carries it within the utilisation cap.
    pub demand_rps: f64,
    /// The load the proposal was sized for, requests/s: an increase the deployed plan
    /// needs to carry it is never delayed.
    pub planned_load_rps: f64,
    /// Highest planned utilisation of a replica set, in (0, 1] (the planner's cap).
    pub utilisation_cap: f64,
    /// What the host holds (the planner's limits): a damped plan never exceeds them.
    pub limits: HostLimits,
}

/// The damped plan and what was held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Damped {
    /// The plan to apply.
    pub plan: Plan,
    /// One human-readable line per change held back or overridden.
    pub held_back: Vec<String>,
}

/// One proposal of a stage, remembered for the stabilization window.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Recommendation {
    time_s: f64,
    plan: StagePlan,
    capacity_rps: f64,
    /// The load that tick had to carry (planned load or observed demand, the larger).
    required_rps: f64,
}

/// What the damper remembers about one stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
struct StageMemory {
    recommendations: VecDeque<Recommendation>,
    last_switch_s: Option<f64>,
    /// A switch the damper let through and the deployed plan has not shown yet: when
    /// and to which shape. It starts the dwell time once the plan in force has that
    /// shape, so a switch that is never applied (a dry run) holds nothing back.
    pending_switch: Option<(f64, Vec<(String, u32)>)>,
}

/// The stability layer's state: recent recommendations and the time of the last variant
/// switch, per stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Damper {
    config: DampingConfig,
    stages: BTreeMap<String, StageMemory>,
}

/// The variants and cores per replica of a stage plan: changing them starts replicas of a
/// new kind (a switch, subject to the dwell time); batch and replica counts are not part.
fn shape(plan: &StagePlan) -> Vec<(&str, u32)> {
    let mut shape: Vec<(&str, u32)> = plan
        .assignments
        .iter()
        .map(|a| (a.variant.as_str(), a.cores))
        .collect();
    shape.sort_unstable();
    shape
}

/// [`shape`] with owned names, to be remembered.
fn owned_shape(plan: &StagePlan) -> Vec<(String, u32)> {
    shape(plan)
        .into_iter()
        .map(|(v, c)| (v.to_owned(), c))
        .collect()
}

/// Starts the dwell time of a pending switch once the plan in force shows its shape.
fn confirm_switch(memory: &mut StageMemory, deployed: &StagePlan) {
    if let Some((time_s, target)) = &memory.pending_switch
        && owned_shape(deployed) == *target
    {
        memory.last_switch_s = Some(*time_s);
        memory.pending_switch = None;
    }
}

/// The recommendations of the last `window_s` seconds (one exactly that old still counts).
/// Where the scale-up window lets an optional increase go.
enum ScaleUpTarget {
    /// To this stage plan, of this capacity (requests/s).
    To(StagePlan, f64),
    /// Nowhere: the window holds the increase, for this reason.
    Held(String),
}

fn within(
    memory: &StageMemory,
    now_s: f64,
    window_s: f64,
) -> impl DoubleEndedIterator<Item = &Recommendation> {
    let oldest = now_s - window_s - TIME_EPS_S;
    memory
        .recommendations
        .iter()
        .filter(move |r| r.time_s >= oldest)
}

fn total_replicas(plan: &StagePlan) -> u64 {
    plan.assignments.iter().map(|a| u64::from(a.replicas)).sum()
}

/// The variants of a stage plan with their cores per replica, for messages
/// (`det-l/2c+det-x/4c`): a change of cores alone is a switch too.
fn variants_of(plan: &StagePlan) -> String {
    let names: Vec<String> = plan
        .assignments
        .iter()
        .map(|a| format!("{}/{}c", a.variant, a.cores))
        .collect();
    names.join("+")
}

/// The deployed stage scaled (same variants, batch and cores) so that it carries
/// `load_rps` within `cap`, or `None` when that exceeds the stage's replica limit.
fn scale_deployed(
    stage: &Stage,
    deployed: &StagePlan,
    deployed_capacity_rps: f64,
    load_rps: f64,
    cap: f64,
) -> Option<StagePlan> {
    if deployed.assignments.is_empty()
        || deployed_capacity_rps.is_nan()
        || deployed_capacity_rps <= 0.0
    {
        return None;
    }
    let factor = load_rps / (cap * deployed_capacity_rps);
    if !factor.is_finite() {
        return None;
    }
    let mut scaled = deployed.clone();
    for assignment in &mut scaled.assignments {
        let wanted = (f64::from(assignment.replicas.max(1)) * factor).ceil();
        if wanted > f64::from(stage.max_replicas) {
            return None;
        }
        assignment.replicas = assignment.replicas.max(wanted as u32).max(1);
    }
    let capacity = stage_capacity_rps(stage, &scaled).ok()?;
    (capacity * cap >= load_rps).then_some(scaled)
}

/// Moves the replica counts of `target` (same shape as `from`) at most `limit` replicas
/// away from `from` in total, assignment by assignment.
fn limit_step(from: &StagePlan, target: &StagePlan, limit: u64) -> StagePlan {
    let mut budget = u32::try_from(limit).unwrap_or(u32::MAX);
    let mut out = target.clone();
    for assignment in &mut out.assignments {
        let current = from
            .assignments
            .iter()
            .find(|a| a.variant == assignment.variant && a.cores == assignment.cores)
            .map_or(0, |a| a.replicas);
        let step = assignment.replicas.abs_diff(current).min(budget);
        budget -= step;
        assignment.replicas = if assignment.replicas >= current {
            current + step
        } else {
            current - step
        };
    }
    out
}

impl Damper {
    /// A damper with no history.
    ///
    /// # Errors
    ///
    /// [`DampingError::InvalidConfig`] when a setting is out of range.
    pub fn new(config: DampingConfig) -> Result<Damper, DampingError> {
        config.validate()?;
        Ok(Damper {
            config,
            stages: BTreeMap::new(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DampingConfig {
        &self.config
    }

    /// Time of the last variant (or cores) switch of `stage` that the damper let through
    /// and the plan in force then took up.
    pub fn last_switch_s(&self, stage: &str) -> Option<f64> {
        self.stages.get(stage).and_then(|m| m.last_switch_s)
    }

    /// Damps one proposal.
    ///
    /// # Errors
    ///
    /// [`DampingError::InvalidInput`] for a non-finite time or a negative or non-finite
    /// load, [`DampingError::PlanMismatch`] when a plan names a stage or variant the
    /// pipeline lacks. Nothing is remembered from a rejected call.
    pub fn damp(&mut self, input: &DampingInput<'_>) -> Result<Damped, DampingError> {
        check_input(input)?;
        if !self.config.enabled {
            return Ok(Damped {
                plan: input.proposed.clone(),
                held_back: Vec::new(),
            });
        }
        // Capacities first, so that a mismatch leaves the state untouched.
        let mut capacities = Vec::with_capacity(input.proposed.stages.len());
        for proposed in &input.proposed.stages {
            let stage = pipeline_stage(input.pipeline, &proposed.stage)?;
            let proposed_capacity = stage_capacity_rps(stage, proposed)?;
            let deployed = input.deployed.stage(&proposed.stage);
            let deployed_capacity = match deployed {
                Some(d) => Some(stage_capacity_rps(stage, d)?),
                None => None,
            };
            capacities.push((stage, proposed_capacity, deployed_capacity));
        }

        let required_rps = input.planned_load_rps.max(input.demand_rps);
        let mut held_back = Vec::new();
        let mut stages = Vec::with_capacity(input.proposed.stages.len());
        for (proposed, &(stage, proposed_capacity, deployed_capacity)) in
            input.proposed.stages.iter().zip(&capacities)
        {
            let (Some(deployed), Some(deployed_capacity)) =
                (input.deployed.stage(&proposed.stage), deployed_capacity)
            else {
                stages.push(proposed.clone());
                continue;
            };
            let memory = self.stages.entry(proposed.stage.clone()).or_default();
            confirm_switch(memory, deployed);
            remember(
                memory,
                &self.config,
                input.now_s,
                proposed,
                proposed_capacity,
                required_rps,
            );
            let context = StageContext {
                config: &self.config,
                stage,
                memory,
                now_s: input.now_s,
                required_rps,
                cap: input.utilisation_cap,
            };
            let (chosen, reason) =
                context.decide(proposed, proposed_capacity, deployed, deployed_capacity);
            held_back.extend(reason);
            stages.push(chosen);
        }
        let mut plan = Plan { stages };

        self.enforce_min_replicas(input, &mut plan, &mut held_back)?;
        self.enforce_demand_floor(input, &mut plan, &mut held_back)?;
        self.enforce_latency_slo(input, &mut plan, &mut held_back, required_rps)?;
        self.enforce_host_limits(input, &mut plan, &mut held_back)?;

        for stage_plan in &plan.stages {
            // What the damper applies counts as a recommendation too when it exceeds every
            // recommendation in the window (a scaled deployed variant, a demand-floor
            // override), so the stabilization window protects it like any increase. The
            // deployed plan held as it is does not: holding is no increase, and counting it
            // would restart the window every time it ran out.
            let held = input.deployed.stage(&stage_plan.stage) == Some(stage_plan);
            if !held
                && let (Ok(stage), Some(memory)) = (
                    pipeline_stage(input.pipeline, &stage_plan.stage),
                    self.stages.get_mut(&stage_plan.stage),
                )
                && let Ok(capacity) = stage_capacity_rps(stage, stage_plan)
                && within(memory, input.now_s, self.config.stabilization_window_s)
                    .all(|r| r.capacity_rps < capacity)
            {
                memory.recommendations.push_back(Recommendation {
                    time_s: input.now_s,
                    plan: stage_plan.clone(),
                    capacity_rps: capacity,
                    required_rps,
                });
            }
            let switched = input
                .deployed
                .stage(&stage_plan.stage)
                .is_some_and(|d| shape(d) != shape(stage_plan));
            if switched && let Some(memory) = self.stages.get_mut(&stage_plan.stage) {
                memory.pending_switch = Some((input.now_s, owned_shape(stage_plan)));
            }
        }
        Ok(Damped { plan, held_back })
    }

    /// Never run a stage below its `min_replicas`: a damped stage with fewer replicas (the
    /// deployed plan held while the minimum was raised) takes the proposal when that has
    /// enough, as the planner's proposals do.
    fn enforce_min_replicas(
        &self,
        input: &DampingInput<'_>,
        plan: &mut Plan,
        held_back: &mut Vec<String>,
    ) -> Result<(), DampingError> {
        for (damped, proposed) in plan.stages.iter_mut().zip(&input.proposed.stages) {
            let stage = pipeline_stage(input.pipeline, &damped.stage)?;
            let minimum = u64::from(stage.min_replicas);
            let replicas = total_replicas(damped);
            if replicas < minimum && total_replicas(proposed) >= minimum {
                held_back.push(format!(
                    "stage {}: {replicas} replicas would be below its min_replicas of \
                     {minimum}; the proposal applies",
                    damped.stage
                ));
                *damped = proposed.clone();
            }
        }
        Ok(())
    }

    /// Never provision below observed demand: a stage whose damped capacity at the cap is
    /// below the demand takes the proposal if that carries it, else keeps the deployed
    /// stage if that does, else takes whichever of the three carries the most.
    fn enforce_demand_floor(
        &self,
        input: &DampingInput<'_>,
        plan: &mut Plan,
        held_back: &mut Vec<String>,
    ) -> Result<(), DampingError> {
        let cap = input.utilisation_cap;
        let demand = input.demand_rps;
        for (damped, proposed) in plan.stages.iter_mut().zip(&input.proposed.stages) {
            let stage = pipeline_stage(input.pipeline, &damped.stage)?;
            let damped_capacity = stage_capacity_rps(stage, damped)?;
            if damped_capacity * cap >= demand {
                continue;
            }
            let mut candidates = vec![(proposed.clone(), stage_capacity_rps(stage, proposed)?)];
            if let Some(deployed) = input.deployed.stage(&damped.stage) {
                candidates.push((deployed.clone(), stage_capacity_rps(stage, deployed)?));
            }
            let choice = candidates
                .iter()
                .find(|(_, capacity)| capacity * cap >= demand)
                .or_else(|| candidates.iter().max_by(|a, b| a.1.total_cmp(&b.1)))
                .filter(|(_, capacity)| *capacity > damped_capacity);
            if let Some((chosen, capacity)) = choice {
                held_back.push(format!(
                    "stage {}: {:.1} rps at the cap would not carry the observed demand of \
                     {demand:.1} rps; kept {:.1} rps",
                    damped.stage,
                    damped_capacity * cap,
                    capacity * cap
                ));
                *damped = chosen.clone();
            }
        }
        Ok(())
    }

    /// A damped plan predicted to break the latency SLO where the proposal meets it gives
    /// way to the proposal (correctness over stability).
    fn enforce_latency_slo(
        &self,
        input: &DampingInput<'_>,
        plan: &mut Plan,
        held_back: &mut Vec<String>,
        load_rps: f64,
    ) -> Result<(), DampingError> {
        if plan == input.proposed {
            return Ok(());
        }
        let slo = input.pipeline.slo_ms;
        let damped_ms = plan_latency_ms(input.pipeline, plan, load_rps)?;
        if damped_ms <= slo {
            return Ok(());
        }
        let proposed_ms = plan_latency_ms(input.pipeline, input.proposed, load_rps)?;
        if proposed_ms <= slo || proposed_ms < damped_ms {
            held_back.push(format!(
                "damping overridden: the damped plan's predicted latency {damped_ms:.0} ms \
                 at {load_rps:.1} rps breaks the {slo:.0} ms SLO, the proposal's is \
                 {proposed_ms:.0} ms"
            ));
            *plan = input.proposed.clone();
        }
        Ok(())
    }
}

impl Damper {
    /// A damped plan that needs more cores or GPU memory than the host has gives way to
    /// the proposal, which the planner fitted within them: holding the deployed plan of
    /// one stage while another grows, or growing the deployed variant instead of
    /// switching, must not oversubscribe the host. Correctness over stability, like the
    /// latency check.
    fn enforce_host_limits(
        &self,
        input: &DampingInput<'_>,
        plan: &mut Plan,
        held_back: &mut Vec<String>,
    ) -> Result<(), DampingError> {
        if plan == input.proposed {
            return Ok(());
        }
        let cores = plan.cores();
        let over_cores = input
            .limits
            .total_cores
            .filter(|&limit| cores > u64::from(limit));
        let gpu_mb = plan_gpu_mem_mb(input.pipeline, plan)?;
        // Unmeasured GPU memory cannot be shown to fit a GPU limit: the proposal, which
        // the planner built without such variants, applies.
        let over_gpu = input
            .limits
            .gpu_mem_mb
            .filter(|&limit| gpu_mb.is_none_or(|mb| mb > limit));
        let excess = match (over_cores, over_gpu, gpu_mb) {
            (Some(limit), _, _) => format!("{cores} cores of the host's {limit}"),
            (None, Some(limit), Some(mb)) => {
                format!("{mb:.0} MB of GPU memory of the host's {limit:.0} MB")
            }
            (None, Some(limit), None) => format!(
                "GPU memory that was not measured (a variant's gpu_mem_mb is unmeasured) within the host's {limit:.0} MB"
            ),
            (None, None, _) => return Ok(()),
        };
        held_back.push(format!(
            "damping overridden: the damped plan needs {excess}; the proposal applies"
        ));
        *plan = input.proposed.clone();
        Ok(())
    }
}

fn check_input(input: &DampingInput<'_>) -> Result<(), DampingError> {
    if !input.now_s.is_finite() {
        return Err(DampingError::InvalidInput {
            field: "now_s",
            value: input.now_s,
        });
    }
    for (field, value) in [
        ("demand_rps", input.demand_rps),
        ("planned_load_rps", input.planned_load_rps),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(DampingError::InvalidInput { field, value });
        }
    }
    let cap = input.utilisation_cap;
    if !(cap.is_finite() && cap > 0.0 && cap <= 1.0) {
        return Err(DampingError::InvalidInput {
            field: "utilisation_cap",
            value: cap,
        });
    }
    Ok(())
}

/// Records a proposal and forgets those older than the window (a recommendation exactly
/// `stabilization_window_s` old still counts).
fn remember(
    memory: &mut StageMemory,
    config: &DampingConfig,
    now_s: f64,
    proposed: &StagePlan,
    proposed_capacity: f64,
    required_rps: f64,
) {
    // A clock that went backwards invalidates the history.
    if memory
        .recommendations
        .back()
        .is_some_and(|r| r.time_s > now_s + TIME_EPS_S)
    {
        memory.recommendations.clear();
        memory.last_switch_s = None;
        memory.pending_switch = None;
    }
    memory.recommendations.push_back(Recommendation {
        time_s: now_s,
        plan: proposed.clone(),
        capacity_rps: proposed_capacity,
        required_rps,
    });
    // Kept for the longer of the two windows; each rule looks at its own (`within`).
    let window_s = config
        .stabilization_window_s
        .max(config.scale_up_stabilization_window_s);
    let oldest = now_s - window_s - TIME_EPS_S;
    while memory
        .recommendations
        .front()
        .is_some_and(|r| r.time_s < oldest)
    {
        memory.recommendations.pop_front();
    }
}

/// Everything one stage's decision depends on.
struct StageContext<'a> {
    config: &'a DampingConfig,
    stage: &'a Stage,
    memory: &'a StageMemory,
    now_s: f64,
    required_rps: f64,
    cap: f64,
}

impl StageContext<'_> {
    fn dwell_left_s(&self) -> f64 {
        match self.memory.last_switch_s {
            Some(last) => (last + self.config.min_dwell_s - self.now_s).max(0.0),
            None => 0.0,
        }
    }

    /// Whether moving from `from` to `to` (same shape) is small enough to ignore.
    fn within_deadband(
        &self,
        from: &StagePlan,
        from_capacity: f64,
        to: &StagePlan,
        to_capacity: f64,
    ) -> bool {
        let replicas = total_replicas(from).abs_diff(total_replicas(to));
        let relative = if from_capacity > 0.0 {
            (to_capacity - from_capacity).abs() / from_capacity
        } else {
            f64::INFINITY
        };
        relative < self.config.deadband_fraction
            || (self.config.deadband_replicas > 0
                && replicas <= u64::from(self.config.deadband_replicas))
    }

    /// The stage plan to apply and, when something was held back, why.
    fn decide(
        &self,
        proposed: &StagePlan,
        proposed_capacity: f64,
        deployed: &StagePlan,
        deployed_capacity: f64,
    ) -> (StagePlan, Option<String>) {
        if proposed == deployed {
            return (deployed.clone(), None);
        }
        let name = &self.stage.name;
        let same_shape = shape(proposed) == shape(deployed);
        let dwell_left = self.dwell_left_s();
        if proposed_capacity > deployed_capacity {
            let needed = deployed_capacity * self.cap < self.required_rps;
            if needed {
                // Scale-up needed to carry the load: never delayed.
                if same_shape || dwell_left <= 0.0 {
                    return (proposed.clone(), None);
                }
                if let Some(scaled) = scale_deployed(
                    self.stage,
                    deployed,
                    deployed_capacity,
                    self.required_rps,
                    self.cap,
                ) {
                    return (
                        scaled,
                        Some(format!(
                            "stage {name}: switch {} → {} held by the dwell time \
                             ({dwell_left:.0} s left); scaled {} to carry {:.1} rps instead",
                            variants_of(deployed),
                            variants_of(proposed),
                            variants_of(deployed),
                            self.required_rps
                        )),
                    );
                }
                return (proposed.clone(), None);
            }
            // An optional increase: the scale-up window, then the rate policies.
            let (target, target_capacity) =
                match self.scale_up_target(proposed, proposed_capacity, deployed_capacity) {
                    ScaleUpTarget::To(plan, capacity) => (plan, capacity),
                    ScaleUpTarget::Held(reason) => return (deployed.clone(), Some(reason)),
                };
            return self.optional_change(
                &target,
                target_capacity,
                deployed,
                deployed_capacity,
                "increase",
                self.config.scale_up_limit(total_replicas(deployed)),
            );
        }
        // A decrease (or a change at equal capacity): the stabilization window.
        let window_s = self.config.stabilization_window_s;
        let highest = within(self.memory, self.now_s, window_s)
            .rev()
            .max_by(|a, b| a.capacity_rps.total_cmp(&b.capacity_rps));
        let Some(highest) = highest else {
            return (deployed.clone(), None);
        };
        if highest.capacity_rps >= deployed_capacity {
            return (
                deployed.clone(),
                Some(format!(
                    "stage {name}: decrease to {:.1} rps held by the {:.0} s stabilization \
                     window (highest recent recommendation {:.1} rps, deployed {:.1} rps)",
                    proposed_capacity,
                    self.config.stabilization_window_s,
                    highest.capacity_rps,
                    deployed_capacity
                )),
            );
        }
        // Hysteresis: a decrease leaves the deadband fraction of headroom at the cap for
        // the highest load of the window. The planner sizes its proposal to the cap
        // exactly, so without this a load that hovers at that limit scales the stage down
        // and, a few ticks later, up again. The target is the window's highest
        // recommendation grown to that headroom, applied only while it is a decrease.
        // Variant switches are left to the dwell time; no deadband, no hysteresis.
        let window_load = within(self.memory, self.now_s, window_s)
            .map(|r| r.required_rps)
            .fold(0.0, f64::max);
        let headroom = 1.0 - self.config.deadband_fraction;
        let (target, target_capacity) = if self.config.deadband_fraction > 0.0
            && shape(&highest.plan) == shape(deployed)
            && window_load > highest.capacity_rps * self.cap * headroom
        {
            let grown = scale_deployed(
                self.stage,
                &highest.plan,
                highest.capacity_rps,
                window_load / headroom,
                self.cap,
            )
            .and_then(|plan| {
                let capacity = stage_capacity_rps(self.stage, &plan).ok()?;
                (capacity < deployed_capacity).then_some((plan, capacity))
            });
            match grown {
                Some(grown) => grown,
                None => {
                    return (
                        deployed.clone(),
                        Some(format!(
                            "stage {name}: decrease to {:.1} rps held: the window's highest \
                                 load {window_load:.1} rps needs {:.0} % headroom",
                            highest.capacity_rps,
                            self.config.deadband_fraction * 100.0
                        )),
                    );
                }
            }
        } else {
            (highest.plan.clone(), highest.capacity_rps)
        };
        self.optional_change(
            &target,
            target_capacity,
            deployed,
            deployed_capacity,
            "decrease",
            self.config.max_replicas_removed_per_tick.map(u64::from),
        )
    }

    /// Where an optional increase may go: with a scale-up window, the lowest capacity
    /// recommended within it (the latest of equals), or [`ScaleUpTarget::Held`] with the
    /// reason when that is no increase over the deployed stage. Without one, the proposal.
    fn scale_up_target(
        &self,
        proposed: &StagePlan,
        proposed_capacity: f64,
        deployed_capacity: f64,
    ) -> ScaleUpTarget {
        let window_s = self.config.scale_up_stabilization_window_s;
        if window_s <= 0.0 {
            return ScaleUpTarget::To(proposed.clone(), proposed_capacity);
        }
        let lowest = within(self.memory, self.now_s, window_s)
            .rev()
            .min_by(|a, b| a.capacity_rps.total_cmp(&b.capacity_rps));
        match lowest {
            Some(lowest) if lowest.capacity_rps > deployed_capacity => {
                ScaleUpTarget::To(lowest.plan.clone(), lowest.capacity_rps)
            }
            Some(lowest) => ScaleUpTarget::Held(format!(
                "stage {}: increase to {:.1} rps held by the {window_s:.0} s scale-up \
                 stabilization window (lowest recent recommendation {:.1} rps, deployed \
                 {:.1} rps)",
                self.stage.name, proposed_capacity, lowest.capacity_rps, deployed_capacity
            )),
            None => ScaleUpTarget::To(proposed.clone(), proposed_capacity),
        }
    }

    /// A change the load does not require: subject to the dwell time, the deadband and
    /// the step limit.
    fn optional_change(
        &self,
        target: &StagePlan,
        target_capacity: f64,
        deployed: &StagePlan,
        deployed_capacity: f64,
        direction: &str,
        step_limit: Option<u64>,
    ) -> (StagePlan, Option<String>) {
        let name = &self.stage.name;
        if shape(target) != shape(deployed) {
            let dwell_left = self.dwell_left_s();
            if dwell_left > 0.0 {
                return (
                    deployed.clone(),
                    Some(format!(
                        "stage {name}: switch {} → {} held by the dwell time ({dwell_left:.0} s \
                         left)",
                        variants_of(deployed),
                        variants_of(target)
                    )),
                );
            }
            return (target.clone(), None);
        }
        if self.within_deadband(deployed, deployed_capacity, target, target_capacity) {
            return (
                deployed.clone(),
                Some(format!(
                    "stage {name}: {direction} {:.1} → {:.1} rps within the deadband",
                    deployed_capacity, target_capacity
                )),
            );
        }
        if let Some(limit) = step_limit
            && total_replicas(deployed).abs_diff(total_replicas(target)) > limit
        {
            return (
                limit_step(deployed, target, limit),
                Some(format!(
                    "stage {name}: {direction} of {} → {} replicas limited to {limit} per tick",
                    total_replicas(deployed),
                    total_replicas(target)
                )),
            );
        }
        (target.clone(), None)
    }
}
