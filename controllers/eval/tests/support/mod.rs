//! Fixtures the eval crate's integration tests share: a variant with a linear profile and a
//! one-stage scenario of a cheap and an accurate variant.

use infadapt_eval::{LoopSettings, Scenario};
use infadapt_model::Variant;
use infadapt_planner::Problem;
use infadapt_sim::SimConfig;
use infadapt_testkit::{pipeline as pipeline_of, point, stage};

/// A variant serving `per_core` requests/s per core at batch 1 on 1, 2 or 4 cores, with a
/// p99 of `p99_over_mean` times its mean latency (above 1, every batch draws a random
/// service time) and `load_time_s` of cold start.
pub fn variant(
    name: &str,
    accuracy: f64,
    per_core: f64,
    p99_over_mean: f64,
    load_time_s: f64,
) -> Variant {
    let points = [1u32, 2, 4]
        .iter()
        .map(|&c| {
            point(
                1,
                c,
                Some(1000.0 * p99_over_mean / (per_core * f64::from(c))),
                Some(1000.0 / (per_core * f64::from(c))),
                Some(per_core * f64::from(c)),
            )
        })
        .collect();
    infadapt_testkit::variant(name, accuracy, load_time_s, points)
}

/// How the one-stage scenario's variants and simulator are set up.
#[derive(Debug, Clone)]
pub struct OneStage {
    pub name: &'static str,
    pub slo_ms: f64,
    pub p99_over_mean: f64,
    pub load_time_s: f64,
    pub sim: SimConfig,
    pub warmup_s: usize,
}

/// One stage of `small` (accuracy 0.7, 20 rps per core) and `big` (0.85, 6 rps per core),
/// batch 1, 1–4 cores, up to 16 replicas, the default loop settings.
pub fn one_stage_scenario(setup: OneStage) -> Scenario {
    let variant = |name, accuracy, per_core| {
        variant(
            name,
            accuracy,
            per_core,
            setup.p99_over_mean,
            setup.load_time_s,
        )
    };
    let pipeline = pipeline_of(
        "p",
        setup.slo_ms,
        vec![stage(
            "s",
            vec![variant("small", 0.7, 20.0), variant("big", 0.85, 6.0)],
            &[1],
            &[1, 2, 4],
            16,
        )],
    );
    Scenario {
        name: setup.name.into(),
        problem: Problem::new(pipeline, 0.0),
        initial: None,
        sim: setup.sim,
        warmup_s: setup.warmup_s,
        loop_settings: LoopSettings::default(),
    }
}
