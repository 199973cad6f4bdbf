//! Builders for the model's values: profile points, variants, stages, pipelines and plans.

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};

/// A profile point of `batch` on `cores` with the given p99, mean latency and throughput.
pub fn point(
    batch: u32,
    cores: u32,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    throughput_rps: Option<f64>,
) -> ProfilePoint {
    ProfilePoint {
        batch,
        cores,
        p99_ms,
        mean_ms,
        throughput_rps,
    }
}

/// A variant with the measured `points`, `load_time_s` of cold start and no GPU memory
/// (`gpu_mem_mb = Some(0.0)`; set the field for another value). Panics on an invalid
/// profile: the fixture is wrong, not the code under test.
pub fn variant(name: &str, accuracy: f64, load_time_s: f64, points: Vec<ProfilePoint>) -> Variant {
    Variant {
        name: name.to_owned(),
        accuracy,
        load_time_s,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(points).expect("valid profile"),
    }
}

/// A variant with one measured point (batch 1, 1 core): a p99 and a throughput per
/// replica, no mean latency.
pub fn fixed_rate_variant(
    name: &str,
    accuracy: f64,
    load_time_s: f64,
    p99_ms: f64,
    throughput_rps: f64,
) -> Variant {
    variant(
        name,
        accuracy,
        load_time_s,
        vec![point(1, 1, Some(p99_ms), None, Some(throughput_rps))],
    )
}

/// A stage offering `variants` at the given batch sizes and core counts, up to
/// `max_replicas` replicas, with `min_replicas = 1`.
pub fn stage(
    name: &str,
    variants: Vec<Variant>,
    batch_sizes: &[u32],
    core_options: &[u32],
    max_replicas: u32,
) -> Stage {
    Stage {
        name: name.to_owned(),
        variants,
        batch_sizes: batch_sizes.to_vec(),
        core_options: core_options.to_vec(),
        max_replicas,
        min_replicas: 1,
    }
}

/// A pipeline of `stages` under an SLO of `slo_ms`.
pub fn pipeline(name: &str, slo_ms: f64, stages: Vec<Stage>) -> Pipeline {
    Pipeline {
        name: name.to_owned(),
        slo_ms,
        stages,
    }
}

/// `replicas` replicas of `variant` at `batch` on `cores`, carrying `share` of the load.
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

/// A one-stage plan: `replicas` replicas of `variant` at `batch` on `cores` in `stage`,
/// carrying all the load.
pub fn single_plan(stage: &str, variant: &str, batch: u32, cores: u32, replicas: u32) -> Plan {
    plan(&[(
        stage,
        vec![assignment(variant, batch, cores, replicas, 1.0)],
    )])
}
