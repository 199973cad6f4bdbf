//! Hand-written cases: known optima, the batch-fill delay, validation, infeasibility
//! diagnoses, change cost, warnings and the MILP fallback.

use infadapt_model::{
    Assignment, Pipeline, Plan, Profile, ProfilePoint, Stage, StagePlan, Variant,
};
use infadapt_planner::brute::brute_force;
use infadapt_planner::options::stage_options;
use infadapt_planner::{
    AccuracyMode, Constraint, ExtrapolationPolicy, HostLimits, PlanError, Problem, SolverChoice,
    solve,
};
use infadapt_testkit::point;

fn variant(name: &str, accuracy: f64, p99_b1: f64, gpu_mem_mb: f64) -> Variant {
    // Latency 0.8·p99 mean; batch b takes p99·(0.6 + 0.4·b); cores halve the latency.
    let mut points = Vec::new();
    for b in [1u32, 2, 4, 8] {
        for c in [1u32, 2] {
            let p99 = p99_b1 * (0.6 + 0.4 * f64::from(b)) / f64::from(c);
            points.push(point(b, c, Some(p99), Some(0.8 * p99), None));
        }
    }
    Variant {
        gpu_mem_mb: Some(gpu_mem_mb),
        ..infadapt_testkit::variant(name, accuracy, 5.0, points)
    }
}

fn stage(name: &str, variants: Vec<Variant>) -> Stage {
    infadapt_testkit::stage(name, variants, &[1, 2, 4, 8], &[1, 2], 8)
}

fn one_stage(slo_ms: f64, load: f64) -> Problem {
    let s = stage(
        "classify",
        vec![
            variant("small", 0.70, 10.0, 0.0),
            variant("large", 0.80, 60.0, 0.0),
        ],
    );
    Problem::new(
        Pipeline {
            name: "p".into(),
            slo_ms,
            stages: vec![s],
        },
        load,
    )
}

fn two_stage(slo_ms: f64, load: f64) -> Problem {
    let a = stage(
        "detect",
        vec![
            variant("d-small", 0.6, 20.0, 500.0),
            variant("d-large", 0.75, 50.0, 1500.0),
        ],
    );
    let b = stage(
        "classify",
        vec![
            variant("small", 0.70, 10.0, 0.0),
            variant("large", 0.80, 60.0, 0.0),
        ],
    );
    Problem::new(
        Pipeline {
            name: "p".into(),
            slo_ms,
            stages: vec![a, b],
        },
        load,
    )
}

fn chosen(solution: &infadapt_planner::Solution, k: usize) -> &Assignment {
    &solution.plan.stages[k].assignments[0]
}

#[test]
fn loose_slo_takes_the_accurate_variant_tight_slo_the_fast_one() {
    let loose = solve(&one_stage(500.0, 20.0)).expect("feasible");
    assert_eq!(chosen(&loose, 0).variant, "large");
    let tight = solve(&one_stage(30.0, 20.0)).expect("feasible");
    assert_eq!(chosen(&tight, 0).variant, "small");
    assert_eq!(tight.solver, "pareto-dp");
    assert!(tight.latency_ms <= 30.0);
}

#[test]
fn batch_fill_delay_grows_with_batch_at_low_load() {
    // At 2 rps a batch of 8 waits 3.5 s to fill: the options' latency must show it.
    let problem = one_stage(10_000.0, 2.0);
    let options = stage_options(&problem, 0, problem.load_rps);
    let latency = |b: u32| {
        options
            .iter()
            .filter(|o| o.batch == b && o.variant == 0 && o.cores == 1)
            .map(|o| o.latency.total_ms)
            .fold(f64::INFINITY, f64::min)
    };
    assert!(latency(2) > latency(1) + 400.0);
    assert!(latency(8) > latency(4) + 1900.0);
    assert!(latency(8) > 3500.0);
    // With an SLO of 1 s the planner must not batch at this load.
    let solution = solve(&one_stage(1000.0, 2.0)).expect("feasible");
    assert!(chosen(&solution, 0).batch <= 2, "{:?}", solution.plan);
    assert!(solution.stages[0].batch_fill_ms <= 500.0);
}

#[test]
fn idle_load_keeps_one_replica_without_fill_or_queue() {
    let solution = solve(&one_stage(500.0, 0.0)).expect("feasible");
    let a = chosen(&solution, 0);
    assert_eq!(a.replicas, 1);
    assert_eq!(solution.stages[0].batch_fill_ms, 0.0);
    assert_eq!(solution.stages[0].queueing_ms, 0.0);
}

#[test]
fn min_replicas_holds_every_solver_to_the_stage_total() {
    // Idle and light loads need one replica; the stage keeps its minimum of 3.
    for load in [0.0, 2.0] {
        for solver in [SolverChoice::ParetoDp, SolverChoice::Milp] {
            let mut p = two_stage(500.0, load);
            p.pipeline.stages[1].min_replicas = 3;
            p.solver = solver;
            let s = solve(&p).expect("feasible");
            assert_eq!(chosen(&s, 0).replicas, 1, "{solver:?} at {load} rps");
            assert_eq!(chosen(&s, 1).replicas, 3, "{solver:?} at {load} rps");
        }
    }
    // A mix counts the replicas of all its assignments together.
    let mut p = one_stage(400.0, 60.0);
    p.pipeline.stages[0].max_replicas = 2;
    p.pipeline.stages[0].min_replicas = 2;
    p.pipeline.stages[0].batch_sizes = vec![1];
    p.pipeline.stages[0].core_options = vec![1];
    p.allow_mix = true;
    let s = solve(&p).expect("feasible");
    let total: u32 = s.plan.stages[0]
        .assignments
        .iter()
        .map(|a| a.replicas)
        .sum();
    assert!(total >= 2, "{:?}", s.plan);
    // Cores the minimum cannot fit in make the problem infeasible, with a diagnosis.
    let mut p = one_stage(500.0, 1.0);
    p.pipeline.stages[0].min_replicas = 4;
    p.limits.total_cores = Some(3);
    assert!(matches!(solve(&p), Err(PlanError::Infeasible(_))));
}

#[test]
fn rejects_invalid_problems() {
    let base = two_stage(200.0, 50.0);
    type Edit = Box<dyn Fn(&mut Problem)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|p| p.load_rps = f64::NAN), "load_rps"),
        (Box::new(|p| p.load_rps = -1.0), "load_rps"),
        (Box::new(|p| p.utilisation_cap = 0.0), "utilisation_cap"),
        (Box::new(|p| p.utilisation_cap = 1.5), "utilisation_cap"),
        (Box::new(|p| p.weights.alpha = f64::INFINITY), "alpha"),
        (
            Box::new(|p| p.limits.gpu_mem_mb = Some(f64::NAN)),
            "gpu memory",
        ),
        (
            Box::new(|p| p.pipeline.stages[0].variants[0].gpu_mem_mb = Some(-1.0)),
            "gpu_mem_mb must be finite",
        ),
        (Box::new(|p| p.service_cv2 = f64::NAN), "service_cv2"),
        (Box::new(|p| p.pipeline.slo_ms = f64::NAN), "slo_ms"),
        (
            Box::new(|p| p.pipeline.stages[0].batch_sizes.clear()),
            "batch_sizes",
        ),
        (
            Box::new(|p| {
                p.extrapolation = ExtrapolationPolicy::Warn {
                    max_factor: f64::NAN,
                }
            }),
            "max_factor",
        ),
        (Box::new(|p| p.allow_mix = true), "single-stage"),
        (
            Box::new(|p| p.pipeline.stages[0].min_replicas = 9),
            "min_replicas must be in [1, max_replicas = 8], got 9",
        ),
        (
            Box::new(|p| p.pipeline.stages[0].min_replicas = 0),
            "min_replicas",
        ),
        (
            Box::new(|p| {
                p.accuracy_mode = AccuracyMode::Product;
                p.pipeline.stages[1].variants[0].accuracy = 76.1;
            }),
            "[0, 1]",
        ),
        (
            Box::new(|p| {
                p.current = Some(Plan {
                    stages: vec![StagePlan {
                        stage: "nope".into(),
                        assignments: vec![],
                    }],
                });
            }),
            "unknown stage `nope`",
        ),
        (
            Box::new(|p| {
                p.current = Some(Plan {
                    stages: vec![StagePlan {
                        stage: "detect".into(),
                        assignments: vec![Assignment {
                            variant: "ghost".into(),
                            batch: 1,
                            cores: 1,
                            replicas: 1,
                            share: 1.0,
                        }],
                    }],
                })
            }),
            "unknown variant `ghost`",
        ),
    ];
    for (edit, needle) in cases {
        let mut p = base.clone();
        edit(&mut p);
        match solve(&p) {
            Err(PlanError::InvalidProblem(message)) => {
                assert!(message.contains(needle), "{message} lacks {needle}")
            }
            other => panic!("expected invalid problem mentioning {needle}, got {other:?}"),
        }
    }
    let mut mix_dp = one_stage(100.0, 10.0);
    mix_dp.allow_mix = true;
    mix_dp.solver = SolverChoice::ParetoDp;
    assert!(matches!(solve(&mix_dp), Err(PlanError::InvalidProblem(m)) if m.contains("pareto-dp")));
}

fn infeasible(problem: &Problem) -> infadapt_planner::Infeasible {
    match solve(problem) {
        Err(PlanError::Infeasible(i)) => {
            assert!(!i.message.ends_with('.'), "{}", i.message);
            assert_eq!(
                i.message,
                i.message.to_lowercase(),
                "lowercase: {}",
                i.message
            );
            *i
        }
        other => panic!("expected infeasible, got {other:?}"),
    }
}

#[test]
fn diagnoses_an_slo_below_the_fastest_configuration() {
    let i = infeasible(&two_stage(5.0, 10.0));
    assert_eq!(i.binding, Constraint::LatencySlo);
    assert!(
        i.message
            .starts_with("slo 5 ms is below the fastest configuration at 10 rps"),
        "{}",
        i.message
    );
    assert!(i.message.contains("variant `d-small`"), "{}", i.message);
    assert!(i.min_latency_ms.is_some_and(|l| l > 5.0));
}

#[test]
fn diagnoses_capacity_with_the_sustainable_load() {
    let mut p = two_stage(400.0, 5000.0);
    p.pipeline.stages[1].max_replicas = 2;
    let i = infeasible(&p);
    assert_eq!(
        i.binding,
        Constraint::Capacity {
            stage: "classify".into()
        },
        "{}",
        i.message
    );
    let max = i.max_sustainable_load_rps.expect("some load fits");
    assert!(max > 0.0 && max < 5000.0);
    assert!(
        solve(&Problem {
            load_rps: max,
            ..p.clone()
        })
        .is_ok(),
        "the reported load must be feasible"
    );
    assert!(
        i.message.contains("stage `classify`") && i.message.contains("at most 2 replicas"),
        "{}",
        i.message
    );
}

#[test]
fn diagnoses_host_cores_and_gpu_memory() {
    let mut p = two_stage(400.0, 100.0);
    p.limits = HostLimits {
        total_cores: Some(1),
        gpu_mem_mb: None,
    };
    let i = infeasible(&p);
    assert_eq!(i.binding, Constraint::HostCores);
    assert!(i.message.contains("but the host has 1"), "{}", i.message);
    p.limits = HostLimits {
        total_cores: None,
        gpu_mem_mb: Some(100.0),
    };
    let i = infeasible(&p);
    assert_eq!(i.binding, Constraint::HostGpuMemory);
    assert!(
        i.message
            .contains("mib of gpu memory but the host has 100 mib"),
        "{}",
        i.message
    );
}

#[test]
fn unmeasured_gpu_memory_is_never_planned_as_free() {
    // `large` is the accurate one and would win under a loose SLO; its GPU memory is
    // unmeasured.
    let mut p = one_stage(500.0, 20.0);
    p.pipeline.stages[0].variants[1].gpu_mem_mb = None;
    // Where GPU memory counts nowhere it is planned, and the plan says its GPU figure
    // leaves it out.
    let free = solve(&p).expect("feasible");
    assert_eq!(chosen(&free, 0).variant, "large");
    assert_eq!(free.terms.gpu_gib, 0.0);
    assert!(
        free.warnings
            .iter()
            .any(|w| w.contains("`large`: GPU memory unmeasured")),
        "{:?}",
        free.warnings
    );
    // Under a GPU memory limit, under a GPU cost, and in a mix it is left out, by name.
    let mut limited = p.clone();
    limited.limits.gpu_mem_mb = Some(1e6);
    let mut costed = p.clone();
    costed.weights.beta_per_gpu_gib = 0.01;
    let mut mixed = limited.clone();
    mixed.allow_mix = true;
    for problem in [&limited, &costed, &mixed] {
        let s = solve(problem).expect("feasible without `large`");
        assert!(
            s.plan.stages[0]
                .assignments
                .iter()
                .all(|a| a.variant == "small"),
            "{:?}",
            s.plan
        );
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("variant `large`: not planned, its GPU memory is unmeasured")),
            "{:?}",
            s.warnings
        );
        let reference = brute_force(problem).expect("brute force finds the same plan");
        assert!((reference.objective - s.objective).abs() < 1e-9);
    }
}

#[test]
fn a_stage_with_only_unmeasured_gpu_memory_is_diagnosed_by_name() {
    let mut p = two_stage(400.0, 10.0);
    p.limits.gpu_mem_mb = Some(1e6);
    for v in &mut p.pipeline.stages[1].variants {
        v.gpu_mem_mb = None;
    }
    let i = infeasible(&p);
    assert_eq!(i.binding, Constraint::HostGpuMemory);
    assert!(
        i.message
            .contains("stage `classify` has no variant with measured gpu memory")
            && i.message.contains("`small`, `large` unmeasured"),
        "{}",
        i.message
    );
    // One unmeasured variant beside an infeasible remainder is named after the diagnosis.
    let mut p = two_stage(400.0, 100.0);
    p.limits = HostLimits {
        total_cores: None,
        gpu_mem_mb: Some(100.0),
    };
    p.pipeline.stages[1].variants[1].gpu_mem_mb = None;
    let i = infeasible(&p);
    assert!(
        i.message
            .ends_with("(not considered, gpu memory unmeasured: stage `classify` `large`)"),
        "{}",
        i.message
    );
}

#[test]
fn host_limits_bind() {
    let mut p = two_stage(400.0, 100.0);
    let free = solve(&p).expect("feasible");
    p.limits.total_cores = Some(free.plan.cores() as u32 - 1);
    let limited = solve(&p).expect("feasible with fewer cores");
    assert!(limited.plan.cores() < free.plan.cores());
    assert!(limited.objective <= free.objective);
}

#[test]
fn change_cost_counts_only_new_replicas() {
    let mut p = one_stage(500.0, 20.0);
    p.weights.gamma_per_cold_start_s = 0.01;
    let first = solve(&p).expect("feasible");
    assert_eq!(
        first.terms.cold_start_s, 0.0,
        "a first plan pays no change cost"
    );
    p.current = Some(first.plan.clone());
    let again = solve(&p).expect("feasible");
    assert_eq!(again.terms.cold_start_s, 0.0);
    assert_eq!(again.plan, first.plan);
    // From a plan running the other variant, everything starts cold.
    let other = if chosen(&first, 0).variant == "large" {
        "small"
    } else {
        "large"
    };
    p.current = Some(Plan {
        stages: vec![StagePlan {
            stage: "classify".into(),
            assignments: vec![Assignment {
                variant: other.into(),
                batch: 1,
                cores: 1,
                replicas: 3,
                share: 1.0,
            }],
        }],
    });
    let moved = solve(&p).expect("feasible");
    let a = chosen(&moved, 0);
    if a.variant != other {
        assert_eq!(moved.terms.cold_start_s, 5.0 * f64::from(a.replicas));
    }
}

#[test]
fn extrapolated_points_are_warned_or_forbidden() {
    let measured = vec![
        ProfilePoint {
            batch: 1,
            cores: 1,
            p99_ms: Some(10.0),
            mean_ms: Some(8.0),
            throughput_rps: None,
        },
        ProfilePoint {
            batch: 2,
            cores: 1,
            p99_ms: Some(14.0),
            mean_ms: Some(11.0),
            throughput_rps: None,
        },
    ];
    let v = Variant {
        name: "only".into(),
        accuracy: 0.7,
        load_time_s: 1.0,
        gpu_mem_mb: Some(0.0),
        profile: Profile::new(measured).expect("p"),
    };
    let s = Stage {
        name: "s".into(),
        variants: vec![v],
        batch_sizes: vec![4],
        core_options: vec![1],
        max_replicas: 8,
        min_replicas: 1,
    };
    let mut p = Problem::new(
        Pipeline {
            name: "p".into(),
            slo_ms: 1000.0,
            stages: vec![s],
        },
        50.0,
    );
    p.extrapolation = ExtrapolationPolicy::Warn { max_factor: 2.0 };
    let solution = solve(&p).expect("batch 4 is 2x the measured range");
    assert_eq!(
        solution.warnings,
        vec![
            "stage `s` variant `only` batch 4 cores 1 relies on a fit 2× beyond the measured range"
                .to_owned()
        ]
    );
    p.extrapolation = ExtrapolationPolicy::Warn { max_factor: 1.5 };
    assert_eq!(infeasible(&p).binding, Constraint::LatencySlo);
    p.extrapolation = ExtrapolationPolicy::Forbid;
    assert!(matches!(solve(&p), Err(PlanError::Infeasible(_))));
}

#[test]
fn tight_slo_is_reported_binding() {
    let loose = solve(&one_stage(30.0, 20.0)).expect("feasible");
    let exact = solve(&one_stage(loose.latency_ms, 20.0)).expect("feasible at its own latency");
    assert!(
        exact.binding.contains(&Constraint::LatencySlo),
        "{:?}",
        exact.binding
    );
}

#[test]
fn product_mode_multiplies_accuracies() {
    let mut p = two_stage(400.0, 30.0);
    p.accuracy_mode = AccuracyMode::Product;
    let s = solve(&p).expect("feasible");
    let acc = |k: usize| {
        p.pipeline.stages[k]
            .variant(&chosen(&s, k).variant)
            .expect("v")
            .accuracy
    };
    assert!((s.terms.accuracy - acc(0) * acc(1)).abs() < 1e-12);
    p.solver = SolverChoice::Milp;
    let m = solve(&p).expect("feasible");
    assert!((m.objective - s.objective).abs() < 1e-6);
}

#[test]
fn mix_splits_load_and_reports_shares() {
    // One replica each: the large variant alone cannot carry the load, a mix can.
    let mut p = one_stage(400.0, 60.0);
    p.pipeline.stages[0].max_replicas = 1;
    p.pipeline.stages[0].batch_sizes = vec![1];
    p.pipeline.stages[0].core_options = vec![1];
    p.allow_mix = true;
    let s = solve(&p).expect("feasible");
    assert_eq!(s.solver, "milp");
    let shares: f64 = s.plan.stages[0].assignments.iter().map(|a| a.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(s.latency_ms <= 400.0);
}

#[test]
fn milp_time_limit_falls_back_to_the_dp() {
    let mut p = two_stage(400.0, 100.0);
    p.solver = SolverChoice::Milp;
    p.time_limit_ms = 0;
    let s = solve(&p).expect("feasible");
    let dp = solve(&Problem {
        solver: SolverChoice::ParetoDp,
        ..p.clone()
    })
    .expect("feasible");
    assert!((s.objective - dp.objective).abs() < 1e-9);
    if s.solver != "milp" {
        assert!(
            s.solver.starts_with("pareto-dp (milp fallback: "),
            "{}",
            s.solver
        );
        assert!(!s.warnings.is_empty());
    }
}

#[test]
fn ipa_rules_pin_cores_and_drop_the_queueing_wait() {
    use infadapt_planner::{LatencyModel, PinnedCores};
    // Pinned: `large` runs only at 2 cores, `small` only at 1, whatever scores best.
    let mut problem = one_stage(1000.0, 30.0);
    problem.pinned_cores = vec![
        PinnedCores {
            stage: "classify".into(),
            variant: "large".into(),
            cores: 2,
        },
        PinnedCores {
            stage: "classify".into(),
            variant: "small".into(),
            cores: 1,
        },
    ];
    let solution = solve(&problem).expect("feasible");
    for a in &solution.plan.stages[0].assignments {
        let expected = if a.variant == "large" { 2 } else { 1 };
        assert_eq!(a.cores, expected, "{:?}", solution.plan);
    }
    // One configuration only (small, batch 1, 1 core, the fewest replicas): its queueing
    // wait is what separates the two models at an SLO between the two latencies.
    let mut only = one_stage(1000.0, 30.0);
    only.extra_replicas = 0;
    let st = &mut only.pipeline.stages[0];
    st.variants.retain(|v| v.name == "small");
    st.batch_sizes = vec![1];
    st.core_options = vec![1];
    let queueing = solve(&only).expect("feasible");
    let wait = queueing.stages[0].queueing_ms;
    assert!(wait > 0.0, "{queueing:?}");
    only.pipeline.slo_ms = queueing.latency_ms - wait / 2.0;
    assert!(matches!(solve(&only), Err(PlanError::Infeasible(_))));
    only.latency_model = LatencyModel::BatchWaitOnly;
    let ipa = solve(&only).expect("IPA's model leaves the wait out");
    assert_eq!(ipa.stages[0].queueing_ms, 0.0);
    assert!((ipa.latency_ms - (queueing.latency_ms - wait)).abs() < 1e-9);
}
