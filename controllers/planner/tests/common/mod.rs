//! Shared helpers of the planner tests: a deterministic generator of small random
//! instances, checks every plan must pass, and the comparison of a solver with the brute
//! force.
#![allow(dead_code)]

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};
use infadapt_planner::{
    AccuracyMode, ExtrapolationPolicy, HostLimits, PlanError, Problem, Solution, SolverChoice,
    Weights,
};
use proptest::prelude::*;

/// A small deterministic random number generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }
    /// `k` distinct values of `pool`, sorted.
    pub fn subset(&mut self, pool: &[u32], k: usize) -> Vec<u32> {
        let mut v = pool.to_vec();
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v.truncate(k.min(pool.len()));
        v.sort_unstable();
        v
    }
}

/// A random variant with a profile measured on part of the (batch, cores) grid.
pub fn random_variant(
    rng: &mut Rng,
    name: String,
    batches: &[u32],
    cores: &[u32],
    accuracy: f64,
) -> Variant {
    let (g, d, e, h) = (
        rng.range(0.0, 40.0),
        rng.range(0.0, 10.0),
        rng.range(0.0, 30.0),
        rng.range(1.0, 20.0),
    );
    let mut points = Vec::new();
    for &b in batches {
        for &c in cores {
            if points.is_empty() || rng.chance(0.6) {
                let l = g * f64::from(b) / f64::from(c) + d * f64::from(b) + e / f64::from(c) + h;
                let throughput = rng
                    .chance(0.5)
                    .then(|| f64::from(b) * 1000.0 / l * rng.range(0.8, 1.6));
                points.push(ProfilePoint {
                    batch: b,
                    cores: c,
                    p99_ms: Some(l * rng.range(1.05, 1.6)),
                    mean_ms: rng.chance(0.8).then_some(l),
                    throughput_rps: throughput,
                });
            }
        }
    }
    Variant {
        name,
        accuracy,
        load_time_s: rng.range(0.0, 10.0),
        gpu_mem_mb: if rng.chance(0.15) {
            None
        } else if rng.chance(0.5) {
            Some(0.0)
        } else {
            Some(rng.range(100.0, 2000.0))
        },
        profile: Profile::new(points).expect("valid random profile"),
    }
}

/// A random small problem: 1–`max_stages` stages, 1–3 variants, 1–3 batches, 1–2 core options.
pub fn random_problem(seed: u64, max_stages: u32) -> Problem {
    let mut rng = Rng::new(seed);
    let n_stages = rng.int(1, max_stages);
    let mut stages = Vec::new();
    for s in 0..n_stages {
        let n_batches = rng.int(1, 3) as usize;
        let batches = rng.subset(&[1, 2, 4, 8], n_batches);
        let n_cores = rng.int(1, 2) as usize;
        let cores = rng.subset(&[1, 2, 4], n_cores);
        // Profiles are measured on a grid that may be smaller than the choices.
        let k_b = rng.int(1, 3) as usize;
        let k_c = rng.int(1, 2) as usize;
        let (measured_b, measured_c) = if rng.chance(0.7) {
            (batches.clone(), cores.clone())
        } else {
            (rng.subset(&[1, 2, 4, 8], k_b), rng.subset(&[1, 2, 4], k_c))
        };
        let n_variants = rng.int(1, 3);
        let variants = (0..n_variants)
            .map(|v| {
                let accuracy = rng.range(0.3, 1.0);
                random_variant(
                    &mut rng,
                    format!("v{v}"),
                    &measured_b,
                    &measured_c,
                    accuracy,
                )
            })
            .collect();
        stages.push(Stage {
            name: format!("stage{s}"),
            variants,
            batch_sizes: batches,
            core_options: cores,
            max_replicas: rng.int(1, 6),
            min_replicas: 1,
        });
    }
    let slo_ms = rng.range(20.0, 700.0) * f64::from(n_stages);
    let pipeline = Pipeline {
        name: "random".into(),
        slo_ms,
        stages,
    };
    let load_rps = if rng.chance(0.05) {
        0.0
    } else {
        rng.range(1.0, 150.0)
    };
    let mut problem = Problem::new(pipeline, load_rps);
    problem.weights = Weights {
        alpha: if rng.chance(0.1) {
            rng.range(-1.0, 0.0)
        } else {
            rng.range(0.1, 2.0)
        },
        beta_per_core: rng.range(0.0, 0.05),
        beta_per_gpu_gib: if rng.chance(0.3) {
            0.0
        } else {
            rng.range(0.0, 0.1)
        },
        gamma_per_cold_start_s: rng.range(0.0, 0.01),
    };
    problem.accuracy_mode = if rng.chance(0.5) {
        AccuracyMode::Sum
    } else {
        AccuracyMode::Product
    };
    problem.limits = HostLimits {
        total_cores: rng.chance(0.4).then(|| rng.int(1, 30)),
        gpu_mem_mb: rng.chance(0.3).then(|| rng.range(0.0, 8000.0)),
    };
    problem.utilisation_cap = rng.range(0.5, 1.0);
    problem.extra_replicas = rng.int(0, 2);
    problem.service_cv2 = rng.range(0.0, 1.0);
    problem.extrapolation = if rng.chance(0.3) {
        ExtrapolationPolicy::Forbid
    } else {
        ExtrapolationPolicy::Warn {
            max_factor: rng.range(1.0, 4.0),
        }
    };
    if rng.chance(0.5) {
        let stages = problem
            .pipeline
            .stages
            .iter()
            .map(|st| {
                let v = &st.variants[rng.int(0, st.variants.len() as u32 - 1) as usize];
                StagePlan {
                    stage: st.name.clone(),
                    assignments: vec![Assignment {
                        variant: v.name.clone(),
                        batch: st.batch_sizes[rng.int(0, st.batch_sizes.len() as u32 - 1) as usize],
                        cores: st.core_options
                            [rng.int(0, st.core_options.len() as u32 - 1) as usize],
                        replicas: rng.int(1, 4),
                        share: 1.0,
                    }],
                }
            })
            .collect();
        problem.current = Some(Plan { stages });
    }
    // Drawn last, so that the instances of the other draws stay those of earlier seeds.
    for stage in &mut problem.pipeline.stages {
        if rng.chance(0.4) {
            stage.min_replicas = rng.int(1, stage.max_replicas);
        }
    }
    problem.solver = SolverChoice::ParetoDp;
    problem.time_limit_ms = 60_000;
    problem
}

/// Relative closeness of two objectives.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Checks a solver's answer against the brute force's `reference`: both infeasible, or both
/// feasible with the same objective, the solver's plan within every constraint, and
/// `also_check` holding for the solver's solution and then for the brute force's. The
/// failure message shows both plans, and the problem's nodes where it has any.
pub fn compare_with_brute_force(
    problem: &Problem,
    reference: Option<Solution>,
    got: Result<Solution, PlanError>,
    also_check: impl Fn(&Solution),
) -> Result<(), TestCaseError> {
    match (reference, got) {
        (Some(r), Ok(s)) => {
            let nodes = if problem.nodes.is_empty() {
                String::new()
            } else {
                format!("\nnodes {:?}", problem.nodes)
            };
            prop_assert!(
                close(r.objective, s.objective),
                "objective {} ({}) != brute force {}\nplan {:?}\nbrute {:?}{nodes}",
                s.objective,
                s.solver,
                r.objective,
                s.plan,
                r.plan
            );
            assert_respects_constraints(problem, &s);
            also_check(&s);
            also_check(&r);
        }
        (None, Err(PlanError::Infeasible(_))) => {}
        (r, s) => prop_assert!(
            false,
            "feasibility differs: brute force {:?}, solver {:?}",
            r.map(|x| x.objective),
            s
        ),
    }
    Ok(())
}

/// Checks a plan against the SLO, the capacity of every assignment and the host limits.
pub fn assert_respects_constraints(problem: &Problem, solution: &Solution) {
    let slo = problem.pipeline.slo_ms;
    assert!(
        solution.latency_ms <= slo * (1.0 + 1e-9),
        "latency {} > slo {slo}",
        solution.latency_ms
    );
    assert_eq!(solution.plan.stages.len(), problem.pipeline.stages.len());
    let mut gpu = 0.0;
    for (sp, stage) in solution.plan.stages.iter().zip(&problem.pipeline.stages) {
        assert_eq!(sp.stage, stage.name);
        let shares: f64 = sp.assignments.iter().map(|a| a.share).sum();
        assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
        for a in &sp.assignments {
            let variant = stage.variant(&a.variant).expect("known variant");
            let mu = variant.profile.estimate(a.batch, a.cores).throughput_rps;
            let load = problem.load_rps * a.share;
            assert!(
                load <= problem.utilisation_cap * f64::from(a.replicas) * mu * (1.0 + 1e-9),
                "assignment {a:?} over capacity: {load} rps > {} × {} × {mu}",
                problem.utilisation_cap,
                a.replicas
            );
            assert!(a.replicas >= 1 && a.replicas <= stage.max_replicas);
            // GPU memory that was not measured is never planned where it counts.
            let gpu_counts =
                problem.limits.gpu_mem_mb.is_some() || problem.weights.beta_per_gpu_gib != 0.0;
            assert!(
                variant.gpu_mem_mb.is_some() || !gpu_counts,
                "assignment {a:?} uses a variant with unmeasured GPU memory"
            );
            gpu += variant.gpu_mem_mb.unwrap_or(0.0) * f64::from(a.replicas);
        }
        let replicas: u32 = sp.assignments.iter().map(|a| a.replicas).sum();
        assert!(
            replicas >= stage.min_replicas,
            "stage {} has {replicas} replicas, below its min_replicas {}",
            stage.name,
            stage.min_replicas
        );
        let report = solution
            .stages
            .iter()
            .find(|r| r.stage == stage.name)
            .expect("stage report");
        assert!(report.latency_ms <= slo * (1.0 + 1e-9));
    }
    if let Some(limit) = problem.limits.total_cores {
        assert!(solution.plan.cores() <= u64::from(limit));
    }
    if let Some(limit) = problem.limits.gpu_mem_mb {
        assert!(gpu <= limit * (1.0 + 1e-9) + 1e-9);
    }
}
