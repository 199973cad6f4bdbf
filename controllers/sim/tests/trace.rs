//! Traces through the simulator: a generated diurnal workload, written as a per-second rate
//! file, parses back and a window of it replays (default tests); the real request trace parses
//! completely and a paper window replays (replay tests, ignored by default: they need
//! `INFADAPT_DATA` and fail without it).

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};
use infadapt_sim::{DiurnalParams, HostSim, SimConfig, parse_rps_lines, slice, synthetic_diurnal};

#[path = "../../../tests/real_data.rs"]
mod real_data;
#[path = "../../../tests/trace_windows.rs"]
mod trace_windows;

/// The request trace, in the data directory named by `INFADAPT_DATA`.
const TRACE: &str = "twitter-trace/rps-per-second-days00-16.txt";

fn trace() -> Vec<f64> {
    let text = std::fs::read_to_string(real_data::real_data(TRACE))
        .unwrap_or_else(|e| panic!("the trace {TRACE} in INFADAPT_DATA cannot be read: {e}"));
    parse_rps_lines(&text).expect("trace parses")
}

/// Two generated days of 6 h (trough 20, peak 120 rps, bursts), one rate per line as in the
/// real trace's file, parsed back.
fn generated_trace() -> Vec<f64> {
    let params = DiurnalParams {
        day_s: Some(21_600.0),
        ..DiurnalParams::default()
    };
    let rates = synthetic_diurnal(43_200, 7, &params).expect("workload");
    let text: String = rates.iter().map(|r| format!("{r:.3}\n")).collect();
    parse_rps_lines(&text).expect("generated trace parses")
}

#[test]
fn generated_trace_parses_completely() {
    let rates = generated_trace();
    assert_eq!(rates.len(), 43_200);
    assert!(rates.iter().all(|r| r.is_finite() && *r >= 0.0));
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert!((120.0..=600.0).contains(&max), "max {max}");
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    assert!((50.0..=100.0).contains(&mean), "mean {mean}");
}

#[test]
fn generated_window_replays() {
    let rates = slice(&generated_trace(), 20_000, 21_260, 0.5).expect("window");
    replays(&rates);
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn trace_parses_completely() {
    let rates = trace();
    assert_eq!(rates.len(), 1_382_400);
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert!((300.0..=400.0).contains(&max), "max {max}");
    let total: f64 = rates.iter().sum();
    assert!((80.0e6..100.0e6).contains(&total), "total {total}");
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn paper_window_replays() {
    let window = trace_windows::trace_window("infadapter_eval_21min");
    replays(&slice(&trace(), window.start, window.end, window.scale).expect("window"));
}

/// Replays `rates` on a fixed plan (resnet50 on 4 cores × 5): every request accounted for.
fn replays(rates: &[f64]) {
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
    sim.step_seconds(rates);
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
