//! What the planner benches share: one synthetic pipeline, its profiles from
//! l(b, c) = γ·b/c + δ·b + ε/c + η with coefficients rising with the variant and the stage,
//! variants of rising accuracy and latency.

use infadapt_model::{Pipeline, Profile, ProfilePoint, Stage, Variant};

/// Mean latency of variant `v` of stage `s` at batch `b` on `c` cores, ms (the p99 is 1.3×).
pub fn latency_ms(s: usize, v: usize, b: u32, c: u32) -> f64 {
    let scale = 1.0 + v as f64 * 0.6 + s as f64 * 0.05;
    let (g, d, e, h) = (
        6.0 * scale,
        0.8 * scale,
        4.0 * scale + s as f64,
        2.0 + v as f64,
    );
    g * f64::from(b) / f64::from(c) + d * f64::from(b) + e / f64::from(c) + h
}

/// A pipeline `name` of `stages` stages with `variants` variants each, measured at every
/// batch of `batches` on every core count of `cores` (also the stages' options), at most
/// `max_replicas` replicas per stage and an SLO of 120 ms per stage.
pub fn synthetic_pipeline(
    name: &str,
    stages: usize,
    variants: usize,
    batches: &[u32],
    cores: &[u32],
    max_replicas: u32,
) -> Pipeline {
    let stages = (0..stages)
        .map(|s| {
            let variants = (0..variants)
                .map(|v| {
                    let points = batches
                        .iter()
                        .flat_map(|&b| cores.iter().map(move |&c| (b, c)))
                        .map(|(b, c)| {
                            let l = latency_ms(s, v, b, c);
                            ProfilePoint {
                                batch: b,
                                cores: c,
                                p99_ms: Some(1.3 * l),
                                mean_ms: Some(l),
                                throughput_rps: None,
                            }
                        })
                        .collect();
                    Variant {
                        name: format!("s{s}v{v}"),
                        accuracy: 0.6 + 0.35 * (v as f64 + 1.0) / variants as f64,
                        load_time_s: 2.0 + v as f64,
                        gpu_mem_mb: Some(0.0),
                        profile: Profile::new(points).expect("valid synthetic profile"),
                    }
                })
                .collect();
            Stage {
                name: format!("stage{s}"),
                variants,
                batch_sizes: batches.to_vec(),
                core_options: cores.to_vec(),
                max_replicas,
                min_replicas: 1,
            }
        })
        .collect::<Vec<_>>();
    Pipeline {
        name: name.to_owned(),
        slo_ms: 120.0 * stages.len() as f64,
        stages,
    }
}
