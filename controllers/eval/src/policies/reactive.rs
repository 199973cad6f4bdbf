//! `hpa`: reactive horizontal replica scaling on a utilisation target, with a fixed variant,
//! batch size and cores per replica.
//!
//! Rules (the usual horizontal autoscaling algorithm): every `interval_s`, per stage,
//! `desired = ceil(replicas × busy / target)`, unless `|busy / target − 1| ≤ tolerance`
//! (then unchanged). Scale-up takes effect at once, limited per tick to
//! `max(2 × replicas, replicas + 4)`; scale-down takes the highest recommendation of the
//! stabilization window, so replicas fall only after the load stayed low for the whole
//! window. Replicas stay within `[1, max_replicas]` and the host's cores.

use std::collections::VecDeque;

use infadapt_control::{Decision, Observation, Policy};
use infadapt_model::{Pipeline, Plan};

/// Settings of the reactive policy.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaRules {
    pub interval_s: f64,
    /// Busy fraction the replicas should run at.
    pub target_utilisation: f64,
    /// Relative deviation from the target that triggers no change.
    pub tolerance: f64,
    /// Scale-down stabilization window, seconds.
    pub scale_down_window_s: f64,
}

impl Default for HpaRules {
    fn default() -> HpaRules {
        HpaRules {
            interval_s: 15.0,
            target_utilisation: 0.7,
            tolerance: 0.1,
            scale_down_window_s: 300.0,
        }
    }
}

/// Reactive horizontal scaling of a fixed configuration.
#[derive(Debug)]
pub struct Hpa {
    rules: HpaRules,
    pipeline: Pipeline,
    initial: Plan,
    total_cores: Option<u32>,
    /// Per stage: (time, recommendation) within the stabilization window.
    recommendations: Vec<VecDeque<(f64, u32)>>,
}

impl Hpa {
    /// Scales the replicas of `initial` (one assignment per stage).
    pub fn new(
        rules: HpaRules,
        pipeline: Pipeline,
        initial: Plan,
        total_cores: Option<u32>,
    ) -> Hpa {
        let stages = pipeline.stages.len();
        Hpa {
            rules,
            pipeline,
            initial,
            total_cores,
            recommendations: vec![VecDeque::new(); stages],
        }
    }

    /// The recommendation for one stage from its replicas and busy fraction.
    pub fn desired(&self, replicas: u32, busy: f64) -> u32 {
        let ratio = busy / self.rules.target_utilisation;
        if !ratio.is_finite() || (ratio - 1.0).abs() <= self.rules.tolerance {
            return replicas;
        }
        let want = (f64::from(replicas) * ratio).ceil().max(1.0);
        let up_limit = (2 * replicas).max(replicas + 4);
        (want.min(f64::from(u32::MAX)) as u32).min(up_limit)
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        "hpa"
    }

    fn interval_s(&self) -> f64 {
        self.rules.interval_s
    }

    fn initial_plan(&self) -> Plan {
        self.initial.clone()
    }

    fn decide(&mut self, observation: &Observation) -> Decision {
        let now = observation.time_s;
        let mut plan = observation.deployed.clone();
        let mut held_back = Vec::new();
        for (k, stage) in self.pipeline.stages.iter().enumerate() {
            let Some(stage_plan) = plan.stages.iter_mut().find(|s| s.stage == stage.name) else {
                continue;
            };
            let Some(assignment) = stage_plan.assignments.first_mut() else {
                continue;
            };
            let busy = observation
                .stages
                .iter()
                .find(|s| s.stage == stage.name)
                .map_or(0.0, |s| s.busy_fraction);
            let current = assignment.replicas.max(1);
            let desired = self.desired(current, busy).clamp(1, stage.max_replicas);
            let window = &mut self.recommendations[k];
            window.push_back((now, desired));
            while window
                .front()
                .is_some_and(|&(t, _)| t <= now - self.rules.scale_down_window_s)
            {
                window.pop_front();
            }
            let stabilized = window.iter().map(|&(_, r)| r).max().unwrap_or(desired);
            if stabilized > desired && stabilized < current {
                held_back.push(format!(
                    "{}: scale-down to {desired} held at {stabilized} by the stabilization window",
                    stage.name
                ));
            }
            let next = if desired > current {
                desired
            } else {
                stabilized.min(current)
            };
            assignment.replicas = next;
        }
        if let Some(limit) = self.total_cores {
            fit_cores(&mut plan, &observation.deployed, u64::from(limit));
        }
        Decision {
            time_s: now,
            provisioned_rps: 0.0,
            headroom: 1.0,
            held_back,
            plan,
            ..Decision::default()
        }
    }
}

/// Takes replicas back from the stages that grew most until the plan fits `limit` cores.
fn fit_cores(plan: &mut Plan, deployed: &Plan, limit: u64) {
    while plan.cores() > limit {
        let grown = plan
            .stages
            .iter_mut()
            .filter_map(|s| {
                let before = deployed
                    .stage(&s.stage)
                    .map_or(0, |d| d.assignments.iter().map(|a| a.replicas).sum::<u32>());
                let a = s.assignments.first_mut()?;
                (a.replicas > 1).then_some((i64::from(a.replicas) - i64::from(before), a))
            })
            .max_by_key(|(growth, a)| (*growth, a.replicas));
        match grown {
            Some((_, a)) => a.replicas -= 1,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::tests::{observation, one_stage};

    fn hpa(replicas: u32) -> Hpa {
        let (pipeline, plan) = one_stage(replicas);
        Hpa::new(HpaRules::default(), pipeline, plan, Some(64))
    }

    fn replicas(d: &Decision) -> u32 {
        d.plan.stages[0].assignments[0].replicas
    }

    #[test]
    fn scales_to_the_utilisation_target_with_a_tolerance() {
        let h = hpa(4);
        assert_eq!(h.desired(4, 0.7), 4);
        assert_eq!(h.desired(4, 0.75), 4, "within 10 %");
        assert_eq!(h.desired(4, 1.0), 6, "ceil(4 × 1/0.7)");
        assert_eq!(h.desired(4, 0.35), 2);
        assert_eq!(h.desired(2, 1.0), 3);
        assert_eq!(h.desired(10, 1.0), 15);
    }

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_for_the_window() {
        let mut h = hpa(4);
        let d = h.decide(&observation(15.0, 1.0, &h.initial_plan()));
        assert_eq!(replicas(&d), 6);
        // Load falls: the recommendation of 2 is held at 6 for 300 s.
        let mut deployed = d.plan;
        let mut t = 30.0;
        while t < 300.0 {
            let d = h.decide(&observation(t, 0.2, &deployed));
            assert_eq!(replicas(&d), 6, "at {t}");
            deployed = d.plan;
            t += 15.0;
        }
        let d = h.decide(&observation(330.0, 0.2, &deployed));
        assert!(replicas(&d) < 6, "after the window: {}", replicas(&d));
    }

    #[test]
    fn stays_within_host_cores() {
        let (pipeline, plan) = one_stage(4);
        // 4 cores per replica, 24 cores: at most 6 replicas.
        let mut h = Hpa::new(HpaRules::default(), pipeline, plan.clone(), Some(24));
        let d = h.decide(&observation(15.0, 1.0, &plan));
        assert_eq!(replicas(&d), 6);
        let d = h.decide(&observation(30.0, 1.0, &d.plan));
        assert_eq!(replicas(&d), 6);
    }
}
