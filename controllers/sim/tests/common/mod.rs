//! Pipelines and plans shared by the simulator's integration tests.
#![allow(dead_code)]

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};

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
        .map(|&b| ProfilePoint {
            batch: b,
            cores: 1,
            mean_ms: Some(per_request_ms * f64::from(b)),
            p99_ms: Some(per_request_ms * f64::from(b) * p99_factor),
            throughput_rps: None,
        })
        .collect();
    Variant {
        name: name.to_owned(),
        accuracy,
        load_time_s,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(points).expect("valid profile"),
    }
}

/// A variant with one measured point (batch 1, 1 core): fixed latency and throughput.
pub fn measured_variant(
    name: &str,
    accuracy: f64,
    load_time_s: f64,
    p99_ms: f64,
    throughput_rps: f64,
) -> Variant {
    Variant {
        name: name.to_owned(),
        accuracy,
        load_time_s,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(vec![ProfilePoint {
            batch: 1,
            cores: 1,
            p99_ms: Some(p99_ms),
            mean_ms: None,
            throughput_rps: Some(throughput_rps),
        }])
        .expect("valid profile"),
    }
}

pub fn stage(name: &str, variants: Vec<Variant>) -> Stage {
    Stage {
        name: name.to_owned(),
        variants,
        batch_sizes: vec![1, 2, 4, 8],
        core_options: vec![1, 2, 4],
        max_replicas: 64,
        min_replicas: 1,
    }
}

pub fn pipeline(slo_ms: f64, stages: Vec<Stage>) -> Pipeline {
    Pipeline {
        name: "test".to_owned(),
        slo_ms,
        stages,
    }
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

pub fn assignment(variant: &str, batch: u32, cores: u32, replicas: u32, share: f64) -> Assignment {
    Assignment {
        variant: variant.to_owned(),
        batch,
        cores,
        replicas,
        share,
    }
}

/// A plan from `(stage, assignments)` pairs.
pub fn plan(stages: &[(&str, Vec<Assignment>)]) -> Plan {
    Plan {
        stages: stages
            .iter()
            .map(|(name, assignments)| StagePlan {
                stage: (*name).to_owned(),
                assignments: assignments.clone(),
            })
            .collect(),
    }
}

/// One assignment per stage of a single-variant-per-stage plan.
pub fn single(stage: &str, variant: &str, batch: u32, replicas: u32) -> Plan {
    plan(&[(stage, vec![assignment(variant, batch, 1, replicas, 1.0)])])
}
