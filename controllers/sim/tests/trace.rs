//! The real request trace: it parses completely, and a paper window replays through the
//! simulator. The trace lives outside the repository; these tests fail when it is missing.

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};
use infadapt_sim::{HostSim, SimConfig, parse_rps_lines, slice};

const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/twitter-trace/rps-per-second-days00-16.txt"
);

fn trace() -> Vec<f64> {
    let text =
        std::fs::read_to_string(TRACE).unwrap_or_else(|e| panic!("trace {TRACE} is required: {e}"));
    parse_rps_lines(&text).expect("trace parses")
}

#[test]
fn trace_parses_completely() {
    let rates = trace();
    assert_eq!(rates.len(), 1_382_400);
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert!((300.0..=400.0).contains(&max), "max {max}");
    let total: f64 = rates.iter().sum();
    assert!((80.0e6..100.0e6).contains(&total), "total {total}");
}

#[test]
fn paper_window_replays() {
    // infadapter_eval_21min in experiment_slices_index.json.
    let rates = slice(&trace(), 1_300_920, 1_302_180, 1.0).expect("window");
    let variant = Variant {
        name: "resnet50".to_owned(),
        accuracy: 0.76,
        load_time_s: 8.0,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(vec![ProfilePoint {
            batch: 1,
            cores: 4,
            p99_ms: Some(120.0),
            mean_ms: Some(80.0),
            throughput_rps: Some(40.0),
        }])
        .expect("profile"),
    };
    let pipeline = Pipeline {
        name: "resnet".to_owned(),
        slo_ms: 750.0,
        stages: vec![Stage {
            name: "classify".to_owned(),
            variants: vec![variant],
            batch_sizes: vec![1],
            core_options: vec![4],
            max_replicas: 20,
            min_replicas: 1,
        }],
    };
    let plan = Plan {
        stages: vec![StagePlan {
            stage: "classify".to_owned(),
            assignments: vec![Assignment {
                variant: "resnet50".to_owned(),
                batch: 1,
                cores: 4,
                replicas: 5,
                share: 1.0,
            }],
        }],
    };
    let mut sim = HostSim::new(&pipeline, &plan, SimConfig::with_seed(1)).expect("sim");
    sim.step_seconds(&rates);
    let t = sim.totals();
    let expected: f64 = rates.iter().sum();
    assert!(
        (t.requests as f64 - expected).abs() < 5.0 * expected.sqrt(),
        "{} vs {expected}",
        t.requests
    );
    assert_eq!(t.requests, t.completed + t.dropped + t.in_flight);
    assert!((t.core_seconds - 20.0 * rates.len() as f64).abs() < 1e-6);
}
