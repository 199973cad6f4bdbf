//! Conversions between the plugin ABI's JSON messages and the control loop's types.

use infadapt_control::{Observation, StageObservation};
use infadapt_model::{Assignment, Plan, StagePlan};
use infadapt_plugin_abi::{
    AssignmentMessage, PlanMessage, PluginObservation, SCHEMA_VERSION, StagePlanMessage,
};

/// A plan as handed to a backend's `apply`.
pub fn plan_to_message(plan: &Plan) -> PlanMessage {
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
    }
}

/// A plan reported by a backend.
pub fn message_to_plan(message: &PlanMessage) -> Plan {
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

/// The control loop's view of a backend observation taken at `time_s`.
pub fn observation_from_plugin(message: &PluginObservation, time_s: f64) -> Observation {
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
        deployed: message_to_plan(&message.deployed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_through_messages() {
        let plan = Plan {
            stages: vec![StagePlan {
                stage: "s".into(),
                assignments: vec![Assignment {
                    variant: "v".into(),
                    batch: 4,
                    cores: 2,
                    replicas: 3,
                    share: 0.5,
                }],
            }],
        };
        assert_eq!(message_to_plan(&plan_to_message(&plan)), plan);
    }
}
