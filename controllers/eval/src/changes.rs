//! Counting what a policy changes: reconfigurations and reversals.
//!
//! Definitions (also in docs/evaluation.md):
//! - A **reconfiguration** is an apply that changed something on the host (a replica started
//!   or stopped, a variant added or removed, a batch size, cores per replica or load shares
//!   changed); an apply of the plan already deployed is not one.
//! - The **shape** of a stage is its provisioned capacity (Σ replicas × profiled throughput
//!   at each assignment's batch and cores, requests/s) and its set of variants.
//! - A stage change at time `t` is a **reversal** when, within the reversal window
//!   `(t − window, t]`, the same stage had a change that moved its capacity in the opposite
//!   direction (up then down, or down then up), or when the change brings back the exact
//!   variant set that an earlier change in the window had left (A → B → A). Each stage change
//!   counts as at most one reversal; a reconfiguration touching several stages may count
//!   several.

use std::collections::VecDeque;

use infadapt_model::{Pipeline, Plan, StagePlan};

/// Capacity of a stage within which two shapes count as equal (relative).
const CAPACITY_TOLERANCE: f64 = 1e-6;

/// What a stage provides: capacity and the variants that serve.
#[derive(Debug, Clone, PartialEq)]
pub struct StageShape {
    /// Σ replicas × profiled throughput, requests/s.
    pub capacity_rps: f64,
    /// Names of the variants with at least one replica, sorted.
    pub variants: Vec<String>,
}

/// Profiled capacity of one stage plan (0 when a variant is unknown to the stage).
pub fn stage_capacity(pipeline: &Pipeline, plan: &StagePlan) -> f64 {
    let Some(stage) = pipeline.stages.iter().find(|s| s.name == plan.stage) else {
        return 0.0;
    };
    plan.assignments
        .iter()
        .filter_map(|a| {
            let variant = stage.variant(&a.variant)?;
            let rps = variant.profile.estimate(a.batch, a.cores).throughput_rps;
            rps.is_finite()
                .then(|| rps.max(0.0) * f64::from(a.replicas))
        })
        .sum()
}

/// Capacity of the whole pipeline: the smallest stage capacity (every request visits every
/// stage). Stages missing from the plan count as 0.
pub fn plan_capacity(pipeline: &Pipeline, plan: &Plan) -> f64 {
    pipeline
        .stages
        .iter()
        .map(|s| {
            plan.stage(&s.name)
                .map_or(0.0, |p| stage_capacity(pipeline, p))
        })
        .fold(f64::INFINITY, f64::min)
        .min(f64::MAX)
}

/// The shape of every stage of the pipeline under `plan`, in pipeline order.
pub fn shapes(pipeline: &Pipeline, plan: &Plan) -> Vec<StageShape> {
    pipeline
        .stages
        .iter()
        .map(|s| match plan.stage(&s.name) {
            Some(p) => {
                let mut variants: Vec<String> = p
                    .assignments
                    .iter()
                    .filter(|a| a.replicas > 0)
                    .map(|a| a.variant.clone())
                    .collect();
                variants.sort();
                variants.dedup();
                StageShape {
                    capacity_rps: stage_capacity(pipeline, p),
                    variants,
                }
            }
            None => StageShape {
                capacity_rps: 0.0,
                variants: Vec::new(),
            },
        })
        .collect()
}

/// One change of one stage, remembered for the reversal window.
#[derive(Debug, Clone)]
struct StageChange {
    time_s: f64,
    /// +1 capacity up, −1 down, 0 unchanged.
    direction: i8,
    /// The variant set the change left, when it changed the set.
    left_variants: Option<Vec<String>>,
}

/// Counts reconfigurations and reversals over a run.
#[derive(Debug, Clone)]
pub struct ChangeCounter {
    window_s: f64,
    history: Vec<VecDeque<StageChange>>,
    reconfigurations: u64,
    reversals: u64,
}

impl ChangeCounter {
    /// A counter for `stages` stages with a reversal window of `window_s` seconds.
    pub fn new(stages: usize, window_s: f64) -> ChangeCounter {
        ChangeCounter {
            window_s: if window_s.is_finite() {
                window_s.max(0.0)
            } else {
                0.0
            },
            history: vec![VecDeque::new(); stages],
            reconfigurations: 0,
            reversals: 0,
        }
    }

    /// Records an apply at `time_s` that changed the host (`changed`) from `before` to
    /// `after`; returns the reversals it made.
    pub fn record(
        &mut self,
        time_s: f64,
        changed: bool,
        before: &[StageShape],
        after: &[StageShape],
    ) -> u64 {
        if !changed {
            return 0;
        }
        self.reconfigurations += 1;
        let mut found = 0;
        for (k, history) in self.history.iter_mut().enumerate() {
            let (Some(old), Some(new)) = (before.get(k), after.get(k)) else {
                continue;
            };
            while history
                .front()
                .is_some_and(|c| c.time_s <= time_s - self.window_s)
            {
                history.pop_front();
            }
            let scale = old
                .capacity_rps
                .abs()
                .max(new.capacity_rps.abs())
                .max(1e-12);
            let delta = new.capacity_rps - old.capacity_rps;
            let direction: i8 = if delta.abs() <= CAPACITY_TOLERANCE * scale {
                0
            } else if delta > 0.0 {
                1
            } else {
                -1
            };
            let variants_changed = old.variants != new.variants;
            if direction == 0 && !variants_changed {
                continue;
            }
            let capacity_back = direction != 0 && history.iter().any(|c| c.direction == -direction);
            let variants_back = variants_changed
                && history
                    .iter()
                    .any(|c| c.left_variants.as_ref() == Some(&new.variants));
            if capacity_back || variants_back {
                found += 1;
            }
            history.push_back(StageChange {
                time_s,
                direction,
                left_variants: variants_changed.then(|| old.variants.clone()),
            });
        }
        self.reversals += found;
        found
    }

    /// Applies that changed the host so far.
    pub fn reconfigurations(&self) -> u64 {
        self.reconfigurations
    }

    /// Reversals so far.
    pub fn reversals(&self) -> u64 {
        self.reversals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(capacity: f64, variants: &[&str]) -> Vec<StageShape> {
        vec![StageShape {
            capacity_rps: capacity,
            variants: variants.iter().map(|v| (*v).to_owned()).collect(),
        }]
    }

    #[test]
    fn unchanged_applies_are_not_reconfigurations() {
        let mut c = ChangeCounter::new(1, 300.0);
        let a = shape(100.0, &["a"]);
        assert_eq!(c.record(10.0, false, &a, &a), 0);
        assert_eq!(c.reconfigurations(), 0);
        assert_eq!(c.record(20.0, true, &a, &shape(150.0, &["a"])), 0);
        assert_eq!(c.reconfigurations(), 1);
    }

    #[test]
    fn up_then_down_within_the_window_is_a_reversal() {
        let mut c = ChangeCounter::new(1, 300.0);
        c.record(0.0, true, &shape(100.0, &["a"]), &shape(150.0, &["a"]));
        // Further up: same direction, no reversal.
        assert_eq!(
            c.record(10.0, true, &shape(150.0, &["a"]), &shape(200.0, &["a"])),
            0
        );
        // Down within 300 s of an up: reversal.
        assert_eq!(
            c.record(200.0, true, &shape(200.0, &["a"]), &shape(120.0, &["a"])),
            1
        );
        assert_eq!(c.reversals(), 1);
    }

    #[test]
    fn changes_outside_the_window_are_not_reversals() {
        let mut c = ChangeCounter::new(1, 300.0);
        c.record(0.0, true, &shape(100.0, &["a"]), &shape(150.0, &["a"]));
        assert_eq!(
            c.record(300.0, true, &shape(150.0, &["a"]), &shape(100.0, &["a"])),
            0,
            "the window is (t − 300, t]"
        );
        assert_eq!(c.reversals(), 0);
    }

    #[test]
    fn switching_back_to_a_variant_set_is_a_reversal() {
        let mut c = ChangeCounter::new(1, 300.0);
        // A → B at equal capacity, then B → A.
        c.record(0.0, true, &shape(100.0, &["a"]), &shape(100.0, &["b"]));
        assert_eq!(
            c.record(60.0, true, &shape(100.0, &["b"]), &shape(100.0, &["a"])),
            1
        );
        // A → C is new: not a reversal.
        assert_eq!(
            c.record(120.0, true, &shape(100.0, &["a"]), &shape(100.0, &["c"])),
            0
        );
    }

    #[test]
    fn one_reversal_per_stage_change_and_stages_are_independent() {
        let mut c = ChangeCounter::new(2, 300.0);
        let s = |a: f64, b: f64| {
            vec![
                StageShape {
                    capacity_rps: a,
                    variants: vec!["x".into()],
                },
                StageShape {
                    capacity_rps: b,
                    variants: vec!["y".into()],
                },
            ]
        };
        c.record(0.0, true, &s(10.0, 10.0), &s(20.0, 10.0));
        // Stage 1 goes down for the first time: no reversal; stage 0 goes back down: one.
        assert_eq!(c.record(10.0, true, &s(20.0, 10.0), &s(10.0, 5.0)), 1);
        assert_eq!(c.reconfigurations(), 2);
    }

    #[test]
    fn batch_only_changes_count_as_reconfigurations_not_capacity_moves() {
        let mut c = ChangeCounter::new(1, 300.0);
        let a = shape(100.0, &["a"]);
        c.record(0.0, true, &a, &a);
        assert_eq!(c.record(1.0, true, &a, &a), 0);
        assert_eq!(c.reconfigurations(), 2);
        assert_eq!(c.reversals(), 0);
    }
}
