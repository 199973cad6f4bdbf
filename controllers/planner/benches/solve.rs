//! Planner benchmarks on synthetic pipelines: profiles from l(b, c) = γ·b/c + δ·b + ε/c + η
//! with varied coefficients, variants of rising accuracy and latency.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infadapt_model::{Pipeline, Profile, ProfilePoint, Stage, Variant};
use infadapt_planner::{Problem, SolverChoice, solve};

const BATCHES: [u32; 8] = [1, 2, 4, 8, 12, 16, 24, 32];

fn synthetic(stages: usize, variants: usize, cores: &[u32]) -> Problem {
    let stages = (0..stages)
        .map(|s| {
            let variants = (0..variants)
                .map(|v| {
                    let scale = 1.0 + v as f64 * 0.6 + s as f64 * 0.05;
                    let (g, d, e, h) = (
                        6.0 * scale,
                        0.8 * scale,
                        4.0 * scale + s as f64,
                        2.0 + v as f64,
                    );
                    let points = BATCHES
                        .iter()
                        .flat_map(|&b| cores.iter().map(move |&c| (b, c)))
                        .map(|(b, c)| {
                            let l = g * f64::from(b) / f64::from(c)
                                + d * f64::from(b)
                                + e / f64::from(c)
                                + h;
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
                batch_sizes: BATCHES.to_vec(),
                core_options: cores.to_vec(),
                max_replicas: 32,
                min_replicas: 1,
            }
        })
        .collect::<Vec<_>>();
    let slo_ms = 120.0 * stages.len() as f64;
    Problem::new(
        Pipeline {
            name: "bench".into(),
            slo_ms,
            stages,
        },
        150.0,
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("solve");
    for (label, stages, variants) in [("3x5x8", 3, 5), ("10x10x8", 10, 10)] {
        for (name, solver) in [("dp", SolverChoice::ParetoDp), ("milp", SolverChoice::Milp)] {
            let mut problem = synthetic(stages, variants, &[4]);
            problem.solver = solver;
            problem.time_limit_ms = 10_000;
            let solution = solve(&problem).expect("the synthetic problem is feasible");
            assert!(
                solution.solver == "pareto-dp" || solution.solver == "milp",
                "{}",
                solution.solver
            );
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| solve(black_box(&problem)))
            });
        }
    }
    let mut mix = synthetic(1, 5, &[2, 4]);
    mix.allow_mix = true;
    mix.load_rps = 400.0;
    mix.pipeline.stages[0].max_replicas = 6;
    solve(&mix).expect("the synthetic mix is feasible");
    group.bench_function("milp-mix/1x5x8x2", |b| b.iter(|| solve(black_box(&mix))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
