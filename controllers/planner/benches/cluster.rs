//! Planner cost with cluster placement: solve time on synthetic clusters of 1 to 64 nodes
//! × 2, 4 and 8 variants per stage (3 stages, batches 1/4/8, 1/2/4 cores), at three loads
//! (30 %, 60 % and 90 % of what the cluster's CPUs carry with the fastest variant), on two
//! kinds of nodes: `mixed` (8, 6, 4, 12 CPUs in turn) and `odd` (3, 5 CPUs in turn, where
//! 2- and 4-core replicas leave CPUs over and placement binds more often). Prints one table
//! row per (nodes, variants, kind): median and max solve time, how the plans were found
//! (the unplaced optimum placed, the placement MILP, or a fallback), infeasible loads and
//! whether every plan placed.
//!
//! `cargo bench -p infadapt-planner --bench cluster` runs the whole table; run without
//! `--bench` (as `cargo test --all-targets` does) it solves one small cluster as a check.

mod support;

use std::time::{Duration, Instant};

use infadapt_planner::placement::placement_fits;
use infadapt_planner::{NodeCapacity, PlanError, Problem, solve};
use support::{latency_ms, synthetic_pipeline};

const BATCHES: [u32; 3] = [1, 4, 8];
const CORES: [u32; 3] = [1, 2, 4];
const STAGES: usize = 3;
const MIXED_CPUS: [f64; 4] = [8.0, 6.0, 4.0, 12.0];
const ODD_CPUS: [f64; 2] = [3.0, 5.0];
const LOADS: [f64; 3] = [0.3, 0.6, 0.9];

fn nodes(count: usize, cpus: &[f64]) -> Vec<NodeCapacity> {
    (0..count)
        .map(|i| NodeCapacity {
            id: format!("node{i}"),
            cpus: cpus[i % cpus.len()],
            gpus: 0.0,
            held_cpus: 0.0,
            held_gpus: 0.0,
        })
        .collect()
}

/// One row of the table.
struct Row {
    times: Vec<Duration>,
    relaxed: usize,
    milp: usize,
    other: usize,
    infeasible: usize,
    all_placed: bool,
}

fn run(node_count: usize, variants: usize, kind: &[f64]) -> Row {
    let nodes = nodes(node_count, kind);
    let cpus: f64 = nodes.iter().map(|n| n.cpus).sum();
    // Requests/s one CPU carries with the fastest variant at batch 8, per stage.
    let per_cpu = 8.0 * 1000.0 / latency_ms(0, 0, 8, 1);
    let mut row = Row {
        times: Vec::new(),
        relaxed: 0,
        milp: 0,
        other: 0,
        infeasible: 0,
        all_placed: true,
    };
    for fraction in LOADS {
        let load = fraction * cpus * per_cpu * 0.8 / STAGES as f64;
        let mut problem = Problem::new(
            synthetic_pipeline("cluster-bench", STAGES, variants, &BATCHES, &CORES, 512),
            load,
        );
        problem.nodes = nodes.clone();
        problem.time_limit_ms = 2000;
        let started = Instant::now();
        let outcome = solve(&problem);
        row.times.push(started.elapsed());
        match outcome {
            Ok(solution) => {
                match solution.solver.as_str() {
                    "pareto-dp" | "milp" => row.relaxed += 1,
                    "milp (placement)" => row.milp += 1,
                    _ => row.other += 1,
                }
                row.all_placed &= !solution.placement.is_empty()
                    && placement_fits(
                        &problem.pipeline,
                        &solution.plan,
                        &solution.placement,
                        &problem.nodes,
                    );
            }
            Err(PlanError::Infeasible(_)) => row.infeasible += 1,
            Err(e) => panic!("{node_count} nodes × {variants} variants: {e}"),
        }
    }
    row
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (node_counts, variant_counts): (&[usize], &[usize]) = if full {
        (&[1, 2, 4, 8, 16, 32, 64], &[2, 4, 8])
    } else {
        (&[2], &[2])
    };
    println!(
        "{:>5} {:>8} {:>5} {:>11} {:>11} {:>8} {:>6} {:>6} {:>10} {:>10}",
        "nodes",
        "variants",
        "kind",
        "median ms",
        "max ms",
        "unplaced",
        "milp",
        "other",
        "infeasible",
        "all placed"
    );
    let started = Instant::now();
    for (kind, cpus) in [("mixed", &MIXED_CPUS[..]), ("odd", &ODD_CPUS[..])] {
        for &n in node_counts {
            for &v in variant_counts {
                let mut row = run(n, v, cpus);
                row.times.sort();
                let median = row.times[row.times.len() / 2];
                let max = *row.times.last().expect("one time per load");
                println!(
                    "{n:>5} {v:>8} {kind:>5} {:>11.2} {:>11.2} {:>8} {:>6} {:>6} {:>10} {:>10}",
                    ms(median),
                    ms(max),
                    row.relaxed,
                    row.milp,
                    row.other,
                    row.infeasible,
                    if row.all_placed { "yes" } else { "NO" }
                );
                assert!(row.all_placed, "a plan returned with nodes did not place");
            }
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
