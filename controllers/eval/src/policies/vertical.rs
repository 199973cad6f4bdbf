//! `vpa`: vertical scaling of the cores per replica from observed usage, with a fixed
//! variant, batch size and replica count.
//!
//! Rules (the usual vertical autoscaling recommender, simplified to one resource): every
//! `interval_s`, per stage, record the cores in use per replica (`busy × cores`); the
//! recommendation is the `percentile` of the samples of the last `history_s` seconds times
//! `1 + margin`, rounded up to the stage's next core option. Replicas are resized (restarted
//! with the new cores, make-before-break) only when the recommended option differs from the
//! deployed one, within the host's cores.

use std::collections::VecDeque;

use infadapt_control::{Decision, Observation, Policy};
use infadapt_model::{Pipeline, Plan};

/// Settings of the vertical policy.
#[derive(Debug, Clone, PartialEq)]
pub struct VpaRules {
    pub interval_s: f64,
    /// Seconds of usage samples the recommendation looks at.
    pub history_s: f64,
    /// Percentile of the usage samples, in (0, 1].
    pub percentile: f64,
    /// Safety margin on the percentile (0.15 = +15 %).
    pub margin: f64,
}

impl Default for VpaRules {
    fn default() -> VpaRules {
        VpaRules {
            interval_s: 60.0,
            history_s: 600.0,
            percentile: 0.9,
            margin: 0.15,
        }
    }
}

/// Vertical scaling of a fixed configuration.
#[derive(Debug)]
pub struct Vpa {
    rules: VpaRules,
    pipeline: Pipeline,
    initial: Plan,
    total_cores: Option<u32>,
    /// Per stage: (time, cores used per replica).
    usage: Vec<VecDeque<(f64, f64)>>,
}

impl Vpa {
    /// Resizes the replicas of `initial` (one assignment per stage).
    pub fn new(
        rules: VpaRules,
        pipeline: Pipeline,
        initial: Plan,
        total_cores: Option<u32>,
    ) -> Vpa {
        let stages = pipeline.stages.len();
        Vpa {
            rules,
            pipeline,
            initial,
            total_cores,
            usage: vec![VecDeque::new(); stages],
        }
    }

    /// The core option recommended for usage samples `samples` among `options`.
    pub fn recommend(&self, samples: &[f64], options: &[u32]) -> Option<u32> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            ((self.rules.percentile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let want = sorted[rank - 1] * (1.0 + self.rules.margin);
        let mut options = options.to_vec();
        options.sort_unstable();
        options
            .iter()
            .copied()
            .find(|&c| f64::from(c) >= want)
            .or_else(|| options.last().copied())
    }
}

impl Policy for Vpa {
    fn name(&self) -> &str {
        "vpa"
    }

    fn interval_s(&self) -> f64 {
        self.rules.interval_s
    }

    fn initial_plan(&self) -> Plan {
        self.initial.clone()
    }

    fn decide(&mut self, observation: &Observation) -> Decision {
        let now = observation.time_s;
        let deployed = &observation.deployed;
        let mut plan = deployed.clone();
        let mut held_back = Vec::new();
        for (k, stage) in self.pipeline.stages.iter().enumerate() {
            let Some(cores) = plan
                .stage(&stage.name)
                .and_then(|s| s.assignments.first())
                .map(|a| a.cores)
            else {
                continue;
            };
            let busy = observation
                .stages
                .iter()
                .find(|s| s.stage == stage.name)
                .map_or(0.0, |s| s.busy_fraction);
            let samples = &mut self.usage[k];
            samples.push_back((now, busy.clamp(0.0, 1.0) * f64::from(cores)));
            while samples
                .front()
                .is_some_and(|&(t, _)| t <= now - self.rules.history_s)
            {
                samples.pop_front();
            }
            let values: Vec<f64> = samples.iter().map(|&(_, u)| u).collect();
            let Some(recommended) = self.recommend(&values, &stage.core_options) else {
                continue;
            };
            if recommended == cores {
                continue;
            }
            let Some(assignment) = plan
                .stages
                .iter_mut()
                .find(|s| s.stage == stage.name)
                .and_then(|s| s.assignments.first_mut())
            else {
                continue;
            };
            let old = assignment.cores;
            assignment.cores = recommended;
            if let Some(limit) = self.total_cores
                && plan.cores() > u64::from(limit)
            {
                held_back.push(format!(
                    "{}: {recommended} cores per replica do not fit the host",
                    stage.name
                ));
                if let Some(a) = plan
                    .stages
                    .iter_mut()
                    .find(|s| s.stage == stage.name)
                    .and_then(|s| s.assignments.first_mut())
                {
                    a.cores = old;
                }
            }
        }
        Decision {
            time_s: now,
            plan,
            headroom: 1.0 + self.rules.margin,
            held_back,
            ..Decision::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::tests::{observation, one_stage};

    fn cores(d: &Decision) -> u32 {
        d.plan.stages[0].assignments[0].cores
    }

    #[test]
    fn recommends_the_next_option_above_the_percentile_with_margin() {
        let (pipeline, plan) = one_stage(2);
        let v = Vpa::new(VpaRules::default(), pipeline, plan, None);
        let options = [1, 2, 4, 8];
        assert_eq!(v.recommend(&[1.0; 10], &options), Some(2), "1 × 1.15 → 2");
        assert_eq!(v.recommend(&[3.0; 10], &options), Some(4));
        assert_eq!(v.recommend(&[4.0; 10], &options), Some(8), "4.6 → 8");
        assert_eq!(
            v.recommend(&[10.0], &options),
            Some(8),
            "capped at the largest"
        );
        assert_eq!(v.recommend(&[], &options), None);
        // 90th percentile of 0.1..=1.0 is 0.9 → 1.035 → 2.
        let samples: Vec<f64> = (1..=10).map(|i| f64::from(i) / 10.0).collect();
        assert_eq!(v.recommend(&samples, &options), Some(2));
    }

    #[test]
    fn changes_cores_only() {
        let (pipeline, plan) = one_stage(3);
        let mut v = Vpa::new(VpaRules::default(), pipeline, plan.clone(), None);
        // Saturated 4-core replicas: usage 4 → 4.6 → 8 cores; replicas and variant stay.
        let d = v.decide(&observation(60.0, 1.0, &plan));
        assert_eq!(cores(&d), 8);
        let a = &d.plan.stages[0].assignments[0];
        assert_eq!(a.replicas, 3);
        assert_eq!(a.variant, plan.stages[0].assignments[0].variant);
        assert_eq!(a.batch, plan.stages[0].assignments[0].batch);
    }

    #[test]
    fn respects_host_cores() {
        let (pipeline, plan) = one_stage(3);
        let mut v = Vpa::new(VpaRules::default(), pipeline, plan.clone(), Some(12));
        let d = v.decide(&observation(60.0, 1.0, &plan));
        assert_eq!(cores(&d), 4);
        assert_eq!(d.held_back.len(), 1);
    }
}
