//! `static-max` and `static-min`: one plan chosen before the run and never changed.

use infadapt_control::{Decision, Observation, Policy};
use infadapt_model::Plan;

/// A policy that always answers with the same plan.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    name: String,
    plan: Plan,
    provisioned_rps: f64,
}

impl StaticPolicy {
    /// Runs `plan`, sized for `provisioned_rps`, for the whole run.
    pub fn new(name: &str, plan: Plan, provisioned_rps: f64) -> StaticPolicy {
        StaticPolicy {
            name: name.to_owned(),
            plan,
            provisioned_rps,
        }
    }
}

impl Policy for StaticPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn interval_s(&self) -> f64 {
        60.0
    }

    fn initial_plan(&self) -> Plan {
        self.plan.clone()
    }

    fn decide(&mut self, observation: &Observation) -> Decision {
        Decision {
            time_s: observation.time_s,
            plan: self.plan.clone(),
            provisioned_rps: self.provisioned_rps,
            headroom: 1.0,
            ..Decision::default()
        }
    }
}
