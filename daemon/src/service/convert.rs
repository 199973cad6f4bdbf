//! Conversions between the plugin ABI's JSON messages and the control loop's types.

use infadapt_control::{Observation, StageObservation};
use infadapt_plugin_abi::PluginObservation;

// The model ↔ message conversion lives with the linked-in simulator backend, which needs
// it too (the ABI crate itself knows no domain types): one copy serves both.
pub use infadapt_plugin_sim::{plan_from_message as message_to_plan, plan_to_message};

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
    use infadapt_model::{Assignment, Plan, StagePlan};

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
