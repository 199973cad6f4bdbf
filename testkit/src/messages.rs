//! Builders for the plugin messages the backend tests hand to a plugin: plans as `apply`
//! receives them (`PlanMessage`), the message counterparts of [`crate::fixtures`]' plans.

use infadapt_plugin_abi::{AssignmentMessage, PlanMessage, StagePlanMessage};

/// `replicas` replicas of `variant` at `batch` on `cores`, carrying `share` of the load.
pub fn assignment_message(
    variant: &str,
    batch: u32,
    cores: u32,
    replicas: u32,
    share: f64,
) -> AssignmentMessage {
    AssignmentMessage {
        variant: variant.to_owned(),
        batch,
        cores,
        replicas,
        share,
    }
}

/// A plan message from `(stage, assignments)` pairs, at the current schema.
pub fn plan_message(stages: &[(&str, Vec<AssignmentMessage>)]) -> PlanMessage {
    PlanMessage {
        stages: stages
            .iter()
            .map(|(name, assignments)| StagePlanMessage {
                stage: (*name).to_owned(),
                assignments: assignments.clone(),
            })
            .collect(),
        ..PlanMessage::default()
    }
}

/// A one-stage plan message on `cores` per replica: one assignment per
/// `(variant, batch, replicas, share)`.
pub fn stage_plan_message(
    stage: &str,
    cores: u32,
    assignments: &[(&str, u32, u32, f64)],
) -> PlanMessage {
    plan_message(&[(
        stage,
        assignments
            .iter()
            .map(|&(variant, batch, replicas, share)| {
                assignment_message(variant, batch, cores, replicas, share)
            })
            .collect(),
    )])
}

/// A one-stage plan message: `replicas` replicas of `variant` at `batch` on `cores` in
/// `stage`, carrying all the load.
pub fn single_plan_message(
    stage: &str,
    variant: &str,
    batch: u32,
    cores: u32,
    replicas: u32,
) -> PlanMessage {
    plan_message(&[(
        stage,
        vec![assignment_message(variant, batch, cores, replicas, 1.0)],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_plan_message_reads_as_the_json_a_plugin_receives() {
        let built = single_plan_message("s", "w", 4, 2, 3);
        let read: PlanMessage = serde_json::from_str(
            r#"{ "schema": 1, "stages": [{ "stage": "s", "assignments": [
                { "variant": "w", "batch": 4, "cores": 2, "replicas": 3, "share": 1.0 }] }] }"#,
        )
        .expect("plan message");
        assert_eq!(built, read);
    }
}
