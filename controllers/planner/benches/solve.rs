//! Planner benchmarks on synthetic pipelines (`support::synthetic_pipeline`): profiles from
//! l(b, c) = γ·b/c + δ·b + ε/c + η with varied coefficients, variants of rising accuracy
//! and latency.

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infadapt_planner::{Problem, SolverChoice, solve};
use support::synthetic_pipeline;

const BATCHES: [u32; 8] = [1, 2, 4, 8, 12, 16, 24, 32];

fn synthetic(stages: usize, variants: usize, cores: &[u32]) -> Problem {
    Problem::new(
        synthetic_pipeline("bench", stages, variants, &BATCHES, cores, 32),
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
