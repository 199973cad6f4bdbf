//! Speed benchmark: days 0–16 of the request trace through one fixed plan, for a 1-stage and a
//! 3-stage pipeline; prints requests per second, wall time and peak RSS.
//!
//! `cargo bench -p infadapt-sim --bench full_trace` (release). An optional argument limits
//! the number of seconds replayed (for a quick look).

use std::time::Instant;

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};
use infadapt_sim::{HostSim, SimConfig, parse_rps_lines};

#[path = "../../../tests/real_data.rs"]
mod real_data;

/// The request trace, in the data directory named by `INFADAPT_DATA`.
const TRACE: &str = "twitter-trace/rps-per-second-days00-16.txt";

/// A variant with measured points at cores 4 for batches 1..8: latency `base + per·b` ms.
fn variant(name: &str, accuracy: f64, base_ms: f64, per_request_ms: f64, overlap: f64) -> Variant {
    let points = [1u32, 2, 4, 8]
        .iter()
        .map(|&b| {
            let mean = base_ms + per_request_ms * f64::from(b);
            ProfilePoint {
                batch: b,
                cores: 4,
                mean_ms: Some(mean),
                p99_ms: Some(mean * 1.6),
                throughput_rps: Some(f64::from(b) * 1000.0 / mean * overlap),
            }
        })
        .collect();
    Variant {
        name: name.to_owned(),
        accuracy,
        load_time_s: 8.0,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(points).expect("valid profile"),
    }
}

fn stage(name: &str, variant: Variant) -> Stage {
    Stage {
        name: name.to_owned(),
        variants: vec![variant],
        batch_sizes: vec![1, 2, 4, 8],
        core_options: vec![4],
        max_replicas: 32,
        min_replicas: 1,
    }
}

fn plan_of(pipeline: &Pipeline, batch: u32, replicas: &[u32]) -> Plan {
    Plan {
        stages: pipeline
            .stages
            .iter()
            .zip(replicas)
            .map(|(s, &n)| StagePlan {
                stage: s.name.clone(),
                assignments: vec![Assignment {
                    variant: s.variants[0].name.clone(),
                    batch,
                    cores: 4,
                    replicas: n,
                    share: 1.0,
                }],
            })
            .collect(),
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run(label: &str, pipeline: &Pipeline, plan: &Plan, rates: &[f64]) {
    let mut sim = HostSim::new(pipeline, plan, SimConfig::with_seed(42)).expect("valid simulation");
    let capacity = sim
        .observe()
        .stages
        .iter()
        .map(|s| s.capacity_rps)
        .fold(f64::INFINITY, f64::min);
    let started = Instant::now();
    for (second, &rate) in rates.iter().enumerate() {
        sim.step_second(rate);
        if second % 10 == 9 {
            sim.observe();
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let t = sim.totals();
    println!(
        "{label}: capacity {capacity:.0} rps, {} requests in {wall:.2} s = {:.2} M requests/s; \
         completed {}, dropped {}, SLO violations {:.4}, p50 {:.0} ms, p99 {:.0} ms, {:.1} core-hours; peak RSS {:.0} MB",
        t.requests,
        t.requests as f64 / wall / 1e6,
        t.completed,
        t.dropped,
        t.slo_violation_rate,
        t.p50_latency_ms,
        t.p99_latency_ms,
        t.cost_core_hours,
        peak_rss_mb(),
    );
}

fn main() {
    let limit: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let started = Instant::now();
    let text = std::fs::read_to_string(real_data::real_data(TRACE))
        .unwrap_or_else(|e| panic!("the trace {TRACE} in INFADAPT_DATA cannot be read: {e}"));
    let mut rates = parse_rps_lines(&text).expect("trace parses");
    drop(text);
    if let Some(limit) = limit {
        rates.truncate(limit);
    }
    println!(
        "trace: {} seconds, {:.1} M requests expected, read and parsed in {:.2} s",
        rates.len(),
        rates.iter().sum::<f64>() / 1e6,
        started.elapsed().as_secs_f64()
    );

    // ResNet-like service: batch 4 on 4 cores ≈ 50 rps per replica, 3 replicas ≈ 150 rps.
    let one = Pipeline {
        name: "resnet".to_owned(),
        slo_ms: 750.0,
        stages: vec![stage(
            "classify",
            variant("resnet50", 0.76, 30.0, 12.5, 1.0),
        )],
    };
    run("1-stage", &one, &plan_of(&one, 4, &[3]), &rates);

    let three = Pipeline {
        name: "video".to_owned(),
        slo_ms: 1000.0,
        stages: vec![
            stage("detect", variant("yolo-s", 0.5, 20.0, 10.0, 1.2)),
            stage("classify", variant("resnet34", 0.73, 10.0, 8.0, 1.0)),
            stage("caption", variant("small-lm", 0.6, 15.0, 6.0, 1.0)),
        ],
    };
    run("3-stage", &three, &plan_of(&three, 4, &[3, 4, 3]), &rates);
}
