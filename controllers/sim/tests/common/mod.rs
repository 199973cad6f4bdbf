//! Pipelines and plans shared by the simulator's integration tests.
#![allow(dead_code)]

use infadapt_model::{Pipeline, Plan, Stage, Variant};
pub use infadapt_testkit::{assignment, plan};
use infadapt_testkit::{fixed_rate_variant, point, single_plan};

/// A variant whose batch of `k` takes `per_request_ms · k` (mean), p99 = `p99_factor` × mean,
/// on any core count, with throughput `k / mean` unless `throughput` overrides batch 1.
pub fn variant(
    name: &str,
    accuracy: f64,
    load_time_s: f64,
    per_request_ms: f64,
    p99_factor: f64,
) -> Variant {
    let points = [1u32, 2, 4, 8]
        .iter()
        .map(|&b| {
            let mean = per_request_ms * f64::from(b);
            point(b, 1, Some(mean * p99_factor), Some(mean), None)
        })
        .collect();
    infadapt_testkit::variant(name, accuracy, load_time_s, points)
}

/// A variant with one measured point (batch 1, 1 core): fixed latency and throughput.
pub fn measured_variant(
    name: &str,
    accuracy: f64,
    load_time_s: f64,
    p99_ms: f64,
    throughput_rps: f64,
) -> Variant {
    fixed_rate_variant(name, accuracy, load_time_s, p99_ms, throughput_rps)
}

pub fn stage(name: &str, variants: Vec<Variant>) -> Stage {
    infadapt_testkit::stage(name, variants, &[1, 2, 4, 8], &[1, 2, 4], 64)
}

pub fn pipeline(slo_ms: f64, stages: Vec<Stage>) -> Pipeline {
    infadapt_testkit::pipeline("test", slo_ms, stages)
}

/// One stage `s` with one variant `v` of fixed service time `service_ms` (deterministic).
pub fn fixed_pipeline(service_ms: f64, load_time_s: f64) -> Pipeline {
    pipeline(
        1000.0,
        vec![stage(
            "s",
            vec![variant("v", 0.7, load_time_s, service_ms, 1.0)],
        )],
    )
}

/// One assignment per stage of a single-variant-per-stage plan.
pub fn single(stage: &str, variant: &str, batch: u32, replicas: u32) -> Plan {
    single_plan(stage, variant, batch, 1, replicas)
}
