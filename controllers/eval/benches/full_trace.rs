//! Speed benchmark of the harness: days 0–16 of the request trace (≈ 88 M requests) through
//! one policy at a time (`infadapt`, then `ipa`) on the ResNet CPU service (one stage, 20
//! cores, 750 ms SLO); prints wall time, requests per second and peak RSS (VmHWM).
//!
//! `cargo bench -p infadapt-eval --bench full_trace` (release). Optional arguments: a number
//! of seconds to replay (a quick look), policy names, and `no-mix` to forbid variant mixes
//! (mixes are planned by the MILP, the slow path of the planner).

use std::time::Instant;

use infadapt_eval::{LoopSettings, Scenario, evaluate};
use infadapt_model::{Catalog, Pipeline, Stage};
use infadapt_planner::{HostLimits, Problem};
use infadapt_sim::{SimConfig, parse_rps_lines};

#[path = "../../../tests/real_data.rs"]
mod real_data;

/// The request trace, in the data directory named by `INFADAPT_DATA`.
const TRACE: &str = "twitter-trace/rps-per-second-days00-16.txt";
const CATALOG: &str = include_str!("../../../etc/catalogs/resnet-synthetic.toml");

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

/// The scenario of etc/scenarios/resnet-cpu.toml, built in code (on its synthetic catalog).
fn resnet_scenario() -> Scenario {
    let catalog = Catalog::from_toml_str(CATALOG).expect("catalog parses");
    let variants = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
        .iter()
        .map(|n| {
            catalog
                .get(n)
                .expect("variant in catalog")
                .to_variant()
                .expect("variant")
        })
        .collect();
    let pipeline = Pipeline {
        name: "resnet".into(),
        slo_ms: 750.0,
        stages: vec![Stage {
            name: "classify".into(),
            variants,
            batch_sizes: vec![1],
            core_options: vec![1, 2, 4, 8],
            max_replicas: 20,
            min_replicas: 1,
        }],
    };
    let mut problem = Problem::new(pipeline, 0.0);
    problem.allow_mix = true;
    problem.limits = HostLimits {
        total_cores: Some(20),
        gpu_mem_mb: None,
    };
    Scenario {
        name: "resnet".into(),
        problem,
        initial: None,
        sim: SimConfig::with_seed(42),
        warmup_s: 0,
        loop_settings: LoopSettings::default(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let limit: Option<usize> = args.iter().find_map(|a| a.parse().ok());
    let mut names: Vec<&str> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err() && *a != "no-mix")
        .map(String::as_str)
        .collect();
    if names.is_empty() {
        names = vec!["infadapt", "ipa"];
    }
    let started = Instant::now();
    let text = std::fs::read_to_string(real_data::real_data(TRACE))
        .unwrap_or_else(|e| panic!("the trace {TRACE} in INFADAPT_DATA cannot be read: {e}"));
    let mut rates = parse_rps_lines(&text).expect("trace parses");
    drop(text);
    if let Some(limit) = limit {
        rates.truncate(limit);
    }
    println!(
        "trace: {} seconds, {:.1} M requests expected, read in {:.2} s",
        rates.len(),
        rates.iter().sum::<f64>() / 1e6,
        started.elapsed().as_secs_f64()
    );
    let mut scenario = resnet_scenario();
    if args.iter().any(|a| a == "no-mix") {
        scenario.problem.allow_mix = false;
    }
    println!("variant mixes: {}", scenario.problem.allow_mix);
    for name in names {
        let started = Instant::now();
        let report = evaluate(name, &scenario, &rates, false, None).expect("policy runs");
        let wall = started.elapsed().as_secs_f64();
        println!(
            "{name}: {} requests in {wall:.1} s ({:.2} M requests/s), {} decisions; SLO violations {:.4}, \
             p99 {:.0} ms, on-time accuracy {:.4}, accuracy (served) {:.4}, {:.0} core-hours, {} reconfigurations, {} reversals; peak RSS {:.0} MB",
            report.requests,
            report.requests as f64 / wall / 1e6,
            report.decisions,
            report.slo_violation_rate,
            report.p99_latency_ms,
            report.on_time_accuracy,
            report.mean_accuracy,
            report.cost_core_hours,
            report.reconfigurations,
            report.reversals,
            peak_rss_mb(),
        );
    }
}
