//! The one owner of the conversions between the domain model, the plugin ABI's messages and
//! the control loop's observation, so that every caller of [`infadapt_control::Policy`]
//! feeds it the same way:
//!
//! ```text
//! Plan ⇄ PlanMessage                       plan_to_message / plan_from_message
//! (Plan, [Placement]) ⇄ PlanMessage        placed_plan_to_message / placement_from_message
//! [NodeMessage] → [NodeCapacity]            node_capacities (what a cluster offers the next plan)
//! SimObservation → PluginObservation       sim_observation_message (what a simulated backend reports)
//! PluginObservation → Observation          observation_from_plugin (what the loop sees)
//! SimPulse / PluginObservation → Pulse      pulse_from_sim / pulse_from_plugin (the fast path)
//! [PluginObservation] → PluginObservation   merge_observations (per-second reports → one period)
//! ```
//!
//! The daemon converts every backend's observation with [`observation_from_plugin`]; the
//! simulator plugin reports its host with [`sim_observation_message`]; the evaluation
//! harness chains the two, so a policy evaluated in the simulator sees exactly what the
//! daemon on the simulated backend sees.
//!
//! # Which plan is `deployed`
//!
//! A backend's message reports what serves now (`deployed`: ready replicas, retiring ones
//! left out), as the ABI defines. The control loop's [`Observation::deployed`] is instead the
//! plan in force: the plan the backend last accepted, which it may still be starting. The
//! loop damps every proposal against `deployed` (dwell time between variant switches, the
//! scale-down window, deadband, step limits) and its caller applies a decision only when it
//! differs from the plan last applied. Were `deployed` the ready replicas, a decision taken
//! while a change is cold-starting would damp against the configuration being replaced: a
//! switch still inside its dwell time would be "held" back to the old variant and a scale-up
//! within the deadband "held" at the ready replicas, and applying that would cancel the
//! change in flight. Readiness is not lost: `stages[].ready_replicas` and
//! `starting_replicas` carry it to the headroom feedback. The caller passes the plan in
//! force ([`observation_from_plugin`]'s `in_force`): the daemon its last applied plan (the
//! backend's report in a dry run, where nothing is applied), the harness the simulator's
//! target plan.

use infadapt_control::{NodeCapacity, Observation, Pulse, StageObservation};
use infadapt_model::{Assignment, Placement, Plan, StagePlan};
use infadapt_plugin_abi::{
    AssignmentMessage, NodeMessage, ObservedStage, PlacementMessage, PlanMessage,
    PluginObservation, SCHEMA_VERSION, StagePlanMessage,
};
use infadapt_sim::{LaneMode, SimObservation, SimPulse};

/// The domain plan of a plan message.
pub fn plan_from_message(message: &PlanMessage) -> Plan {
    Plan {
        stages: message
            .stages
            .iter()
            .map(|s| StagePlan {
                stage: s.stage.clone(),
                assignments: s
                    .assignments
                    .iter()
                    .map(|a| Assignment {
                        variant: a.variant.clone(),
                        batch: a.batch,
                        cores: a.cores,
                        replicas: a.replicas,
                        share: a.share,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The message of a domain plan, at this ABI's schema version, with no placement (a plan for
/// one host).
pub fn plan_to_message(plan: &Plan) -> PlanMessage {
    placed_plan_to_message(plan, &[])
}

/// The message of a domain plan and where its replicas go (`placement`, empty for one
/// host), at this ABI's schema version.
pub fn placed_plan_to_message(plan: &Plan, placement: &[Placement]) -> PlanMessage {
    PlanMessage {
        schema: SCHEMA_VERSION,
        stages: plan
            .stages
            .iter()
            .map(|s| StagePlanMessage {
                stage: s.stage.clone(),
                assignments: s
                    .assignments
                    .iter()
                    .map(|a| AssignmentMessage {
                        variant: a.variant.clone(),
                        batch: a.batch,
                        cores: a.cores,
                        replicas: a.replicas,
                        share: a.share,
                    })
                    .collect(),
            })
            .collect(),
        placement: placement
            .iter()
            .map(|p| PlacementMessage {
                stage: p.stage.clone(),
                variant: p.variant.clone(),
                node: p.node.clone(),
                replicas: p.replicas,
            })
            .collect(),
    }
}

/// The placement a plan message carries (planned, or running in an observation's
/// `placement`).
pub fn placement_from_message(placement: &[PlacementMessage]) -> Vec<Placement> {
    placement
        .iter()
        .map(|p| Placement {
            stage: p.stage.clone(),
            variant: p.variant.clone(),
            node: p.node.clone(),
            replicas: p.replicas,
        })
        .collect()
}

/// What the nodes a backend reports offer the pipeline's next plan: alive nodes only, each
/// with its free CPUs and GPUs plus those the pipeline's own replicas hold (the next plan
/// replaces them). Figures that are negative or not finite count as 0; a node listed again
/// under the same id is counted once (the first).
pub fn node_capacities(nodes: &[NodeMessage]) -> Vec<NodeCapacity> {
    let sane = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let mut out: Vec<NodeCapacity> = Vec::with_capacity(nodes.len());
    for n in nodes.iter().filter(|n| n.alive) {
        if out.iter().any(|seen| seen.id == n.id) {
            continue;
        }
        out.push(NodeCapacity {
            id: n.id.clone(),
            cpus: sane(n.cpus_free) + sane(n.cpus_owned),
            gpus: sane(n.gpus_free) + sane(n.gpus_owned),
            held_cpus: sane(n.cpus_owned),
            held_gpus: sane(n.gpus_owned),
        });
    }
    out
}

/// What a simulated backend reports for a simulator observation: arrivals per second,
/// completions, drops, SLO misses (late completions plus drops), p99, per-stage queues and
/// replicas, and as `deployed` the replicas that serve now (ready minus retiring, per
/// variant and core count, of the variants not switched off or draining).
pub fn sim_observation_message(observation: &SimObservation) -> PluginObservation {
    let mut deployed = PlanMessage {
        schema: SCHEMA_VERSION,
        stages: Vec::with_capacity(observation.stages.len()),
        placement: Vec::new(),
    };
    let stages = observation
        .stages
        .iter()
        .map(|stage| {
            let mut assignments = Vec::new();
            for variant in &stage.variants {
                if variant.mode == LaneMode::Off || variant.mode == LaneMode::Draining {
                    continue;
                }
                for pool in &variant.pools {
                    let serving = pool.ready.saturating_sub(pool.retiring);
                    if serving > 0 {
                        assignments.push(AssignmentMessage {
                            variant: variant.variant.clone(),
                            batch: variant.batch,
                            cores: pool.cores,
                            replicas: serving,
                            share: variant.planned_share,
                        });
                    }
                }
            }
            deployed.stages.push(StagePlanMessage {
                stage: stage.stage.clone(),
                assignments,
            });
            ObservedStage {
                stage: stage.stage.clone(),
                queue_len: stage.queue_len as f64,
                busy_fraction: stage.busy_fraction,
                ready_replicas: stage.ready_replicas,
                starting_replicas: stage.starting_replicas,
            }
        })
        .collect();
    PluginObservation {
        schema: SCHEMA_VERSION,
        arrivals_per_second: observation
            .arrivals_per_second
            .iter()
            .map(|&n| f64::from(n))
            .collect(),
        completed: observation.completed,
        dropped: observation.dropped,
        slo_misses: observation.slo_misses + observation.dropped,
        latency_p99_ms: observation.latency_p99_ms,
        stages,
        deployed,
        endpoints: Vec::new(),
        nodes: Vec::new(),
        placement: Vec::new(),
    }
}

/// What the control loop sees of a backend's message taken at `time_s`, with `in_force`
/// as its deployed plan (see the crate docs for why that is not the message's `deployed`).
/// The window is one second per reported arrival count.
pub fn observation_from_plugin(
    message: &PluginObservation,
    time_s: f64,
    in_force: &Plan,
) -> Observation {
    Observation {
        time_s,
        window_s: message.arrivals_per_second.len() as f64,
        arrivals_per_second: message.arrivals_per_second.clone(),
        completed: message.completed,
        dropped: message.dropped,
        slo_misses: message.slo_misses,
        latency_p99_ms: message.latency_p99_ms,
        stages: message
            .stages
            .iter()
            .map(|s| StageObservation {
                stage: s.stage.clone(),
                queue_len: s.queue_len,
                busy_fraction: s.busy_fraction,
                ready_replicas: s.ready_replicas,
                starting_replicas: s.starting_replicas,
            })
            .collect(),
        deployed: in_force.clone(),
        nodes: node_capacities(&message.nodes),
        placement: placement_from_message(&message.placement),
    }
}

/// A backend's report made fit to act on: arrival rates that are negative or not finite
/// read as 0, a p99 that is negative or not finite as unknown, queue lengths and busy
/// fractions as 0 (busy fractions above 1 as 1). Returns the report and one line per field
/// it changed (empty for a sane report), for the caller to log and count.
pub fn sanitise_observation(message: &PluginObservation) -> (PluginObservation, Vec<String>) {
    let mut clean = message.clone();
    let mut problems = Vec::new();
    for (i, rate) in clean.arrivals_per_second.iter_mut().enumerate() {
        if !(rate.is_finite() && *rate >= 0.0) {
            problems.push(format!(
                "arrivals_per_second[{i}] = {rate} is not a rate; read as 0"
            ));
            *rate = 0.0;
        }
    }
    if let Some(p99) = clean.latency_p99_ms
        && !(p99.is_finite() && p99 >= 0.0)
    {
        problems.push(format!(
            "latency_p99_ms = {p99} is not a latency; read as unknown"
        ));
        clean.latency_p99_ms = None;
    }
    for stage in &mut clean.stages {
        if !(stage.queue_len.is_finite() && stage.queue_len >= 0.0) {
            problems.push(format!(
                "stage `{}`: queue_len = {} read as 0",
                stage.stage, stage.queue_len
            ));
            stage.queue_len = 0.0;
        }
        if !(stage.busy_fraction.is_finite() && (0.0..=1.0).contains(&stage.busy_fraction)) {
            let read = if stage.busy_fraction > 1.0 { 1.0 } else { 0.0 };
            problems.push(format!(
                "stage `{}`: busy_fraction = {} read as {read}",
                stage.stage, stage.busy_fraction
            ));
            stage.busy_fraction = read;
        }
    }
    (clean, problems)
}

/// What the control loop sees of a simulator observation, time shifted by `offset_s`: the
/// simulated backend's report ([`sim_observation_message`]) read as the daemon reads any
/// backend's ([`observation_from_plugin`]), with the simulator's target plan in force.
pub fn observation_from_sim(observation: &SimObservation, offset_s: f64) -> Observation {
    observation_from_plugin(
        &sim_observation_message(observation),
        observation.time_s + offset_s,
        &observation.target,
    )
}

/// What the fast path sees of a simulator pulse, time shifted by `offset_s`, with the
/// simulator's target plan in force.
pub fn pulse_from_sim(pulse: &SimPulse, offset_s: f64) -> Pulse {
    Pulse {
        time_s: pulse.time_s + offset_s,
        arrivals_per_second: vec![f64::from(pulse.arrivals_last_second)],
        queue_len: pulse.queue_len as f64,
        deployed: pulse.target.clone(),
    }
}

/// What the fast path sees of a backend's short report (a second or so) taken at
/// `time_s`: its arrivals and the requests waiting in every stage (garbage counts 0).
pub fn pulse_from_plugin(message: &PluginObservation, time_s: f64, in_force: &Plan) -> Pulse {
    Pulse {
        time_s,
        arrivals_per_second: message.arrivals_per_second.clone(),
        queue_len: message
            .stages
            .iter()
            .map(|s| s.queue_len)
            .filter(|q| q.is_finite() && *q > 0.0)
            .sum(),
        deployed: in_force.clone(),
    }
}

/// One report for consecutive windows (oldest first), as if the backend had been observed
/// once over their union: arrivals concatenated, counts summed, the state (stages' queues
/// and replicas, deployed plan, endpoints) of the last, busy fractions weighted by window
/// length. A p99 cannot be merged exactly; the largest window p99 is kept (an upper
/// bound). `None` for no windows.
pub fn merge_observations(parts: &[PluginObservation]) -> Option<PluginObservation> {
    let last = parts.last()?;
    let mut merged = last.clone();
    merged.arrivals_per_second = parts
        .iter()
        .flat_map(|p| p.arrivals_per_second.iter().copied())
        .collect();
    merged.completed = parts
        .iter()
        .fold(0u64, |t, p| t.saturating_add(p.completed));
    merged.dropped = parts.iter().fold(0u64, |t, p| t.saturating_add(p.dropped));
    merged.slo_misses = parts
        .iter()
        .fold(0u64, |t, p| t.saturating_add(p.slo_misses));
    merged.latency_p99_ms = parts
        .iter()
        .filter_map(|p| p.latency_p99_ms)
        .filter(|v| v.is_finite())
        .reduce(f64::max);
    for stage in &mut merged.stages {
        let mut weighted = 0.0;
        let mut seconds = 0.0;
        for part in parts {
            if let Some(seen) = part.stages.iter().find(|s| s.stage == stage.stage)
                && seen.busy_fraction.is_finite()
            {
                let length = part.arrivals_per_second.len().max(1) as f64;
                weighted += seen.busy_fraction * length;
                seconds += length;
            }
        }
        if seconds > 0.0 {
            stage.busy_fraction = weighted / seconds;
        }
    }
    Some(merged)
}

#[cfg(test)]
mod tests;
