//! Property tests: on thousands of random small instances the Pareto-DP, the MILP and the
//! brute force agree on feasibility and on the optimal objective, and every plan respects
//! the SLO, the capacity of its replicas and the host limits.

mod common;

use common::{assert_respects_constraints, compare_with_brute_force, random_problem};
use infadapt_planner::brute::brute_force;
use infadapt_planner::{LatencyModel, PinnedCores, Problem, Solution, SolverChoice, solve};
use proptest::prelude::*;

/// `problem` under IPA's rules: latency without the queueing wait, and (from `seed`) some
/// variants pinned to one core count, which need not be among the stage's options.
fn ipa_rules(mut problem: Problem, seed: u64) -> Problem {
    problem.latency_model = LatencyModel::BatchWaitOnly;
    let mut bits = seed;
    for stage in &problem.pipeline.stages {
        for variant in &stage.variants {
            bits = bits.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
            if !bits.is_multiple_of(3) {
                problem.pinned_cores.push(PinnedCores {
                    stage: stage.name.clone(),
                    variant: variant.name.clone(),
                    cores: [1, 2, 4, 3][(bits >> 8) as usize % 4],
                });
            }
        }
    }
    problem
}

/// Every assignment of a pinned variant runs at its pinned core count.
fn assert_pins_held(problem: &Problem, solution: &Solution) {
    for stage in &solution.plan.stages {
        for a in &stage.assignments {
            if let Some(p) = problem
                .pinned_cores
                .iter()
                .find(|p| p.stage == stage.stage && p.variant == a.variant)
            {
                assert_eq!(a.cores, p.cores, "{:?}", solution.plan);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ipa_rules_pareto_dp_equals_brute_force(seed in any::<u64>()) {
        let problem = ipa_rules(random_problem(seed, 3), seed);
        let reference = brute_force(&problem);
        if let Some(r) = &reference {
            assert_respects_constraints(&problem, r);
            assert_pins_held(&problem, r);
        }
        let got = solve(&problem);
        if let Ok(s) = &got {
            assert_pins_held(&problem, s);
        }
        compare_with_brute_force(&problem, reference, got, |_| {})?;
    }

    #[test]
    fn ipa_rules_milp_equals_brute_force(seed in any::<u64>()) {
        let mut problem = ipa_rules(random_problem(seed, 3), seed);
        problem.solver = SolverChoice::Milp;
        compare_with_brute_force(&problem, brute_force(&problem), solve(&problem), |_| {})?;
    }

    #[test]
    fn ipa_rules_mix_milp_equals_brute_force(seed in any::<u64>()) {
        let mut problem = ipa_rules(random_problem(seed, 1), seed);
        problem.allow_mix = true;
        problem.solver = SolverChoice::Auto;
        compare_with_brute_force(&problem, brute_force(&problem), solve(&problem), |_| {})?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pareto_dp_equals_brute_force(seed in any::<u64>()) {
        let problem = random_problem(seed, 3);
        let reference = brute_force(&problem);
        if let Some(r) = &reference {
            assert_respects_constraints(&problem, r);
        }
        compare_with_brute_force(&problem, reference, solve(&problem), |_| {})?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn milp_equals_brute_force(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 3);
        problem.solver = SolverChoice::Milp;
        let reference = brute_force(&problem);
        let got = solve(&problem);
        if let Ok(s) = &got {
            prop_assert!(s.solver == "milp", "solver {}", s.solver);
        }
        compare_with_brute_force(&problem, reference, got, |_| {})?;
    }

    #[test]
    fn mix_milp_equals_brute_force(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 1);
        problem.allow_mix = true;
        problem.solver = SolverChoice::Auto;
        let reference = brute_force(&problem);
        let got = solve(&problem);
        if let Ok(s) = &got {
            prop_assert!(s.solver == "milp", "solver {}", s.solver);
        }
        compare_with_brute_force(&problem, reference, got, |_| {})?;
    }

    #[test]
    fn mix_is_never_worse_than_a_single_variant(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 1);
        problem.solver = SolverChoice::ParetoDp;
        let single = solve(&problem);
        problem.allow_mix = true;
        problem.solver = SolverChoice::Milp;
        let mixed = solve(&problem);
        if let Ok(single) = single {
            let mixed = mixed.expect("a single-variant plan is also a mix");
            prop_assert!(mixed.objective >= single.objective - 1e-6 * single.objective.abs().max(1.0));
        }
    }
}
