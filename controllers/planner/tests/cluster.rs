//! Cluster placement: plans with nodes place every replica on one node within its CPUs and
//! GPUs, node sets where the total fits but placement does not, a clear error when nothing
//! places, and on random small instances the solvers equal the brute force with placement.

mod common;

use common::{Rng, close, compare_with_brute_force, random_problem};
use infadapt_model::Placement;
use infadapt_model::Variant;
use infadapt_planner::brute::brute_force;
use infadapt_planner::placement::{Group, Packing, ReplicaNeed, pack, placement_fits};
use infadapt_planner::{
    Constraint, NodeCapacity, PinnedCores, PlanError, Problem, Solution, SolverChoice,
    place_plan_near, solve,
};
use infadapt_testkit::{pipeline, point, stage, variant};
use proptest::prelude::*;

fn node(id: &str, cpus: f64, gpus: f64) -> NodeCapacity {
    NodeCapacity {
        held_cpus: 0.0,
        held_gpus: 0.0,
        id: id.to_owned(),
        cpus,
        gpus,
    }
}

/// A variant measured at batch 1 on `cores` cores only.
fn measured_at(name: &str, accuracy: f64, cores: u32, p99_ms: f64, rps: f64) -> Variant {
    variant(
        name,
        accuracy,
        1.0,
        vec![point(1, cores, Some(p99_ms), None, Some(rps))],
    )
}

/// Variant `variant` of stage `s` runs on `cores` cores only.
fn pinned(variant: &str, cores: u32) -> PinnedCores {
    PinnedCores {
        stage: "s".into(),
        variant: variant.into(),
        cores,
    }
}

/// One stage `s`: `big` (accuracy 0.9) on 2-core replicas, `small` (0.8) on 1-core ones,
/// each 10 rps per replica within a 10 ms p99; 20 rps needs 3 replicas of either.
fn big_or_small() -> Problem {
    let variants = vec![
        measured_at("big", 0.9, 2, 10.0, 10.0),
        measured_at("small", 0.8, 1, 10.0, 10.0),
    ];
    let mut problem = Problem::new(
        pipeline("p", 100.0, vec![stage("s", variants, &[1], &[1, 2], 8)]),
        20.0,
    );
    problem.extra_replicas = 0;
    problem.pinned_cores = vec![pinned("big", 2), pinned("small", 1)];
    problem
}

fn assert_placed(problem: &Problem, solution: &Solution) {
    assert!(
        placement_fits(
            &problem.pipeline,
            &solution.plan,
            &solution.placement,
            &problem.nodes
        ),
        "placement {:?} of {} does not fit {:?}",
        solution.placement,
        solution.plan,
        problem.nodes
    );
}

#[test]
fn without_nodes_the_plan_and_its_solver_are_unchanged() {
    let problem = big_or_small();
    let solution = solve(&problem).expect("feasible");
    assert_eq!(solution.plan.to_string(), "s: big b1 2c×3");
    assert!(solution.placement.is_empty());
    assert_eq!(solution.solver, "pareto-dp");
}

#[test]
fn when_the_total_fits_but_the_replicas_do_not_pack_the_planner_picks_a_plan_that_places() {
    // 6 CPUs in all carry three 2-core replicas, but a 3-CPU node holds only one of them.
    let mut problem = big_or_small();
    problem.nodes = vec![node("a", 3.0, 0.0), node("b", 3.0, 0.0)];
    for solver in [SolverChoice::Auto, SolverChoice::Milp] {
        problem.solver = solver;
        let solution = solve(&problem).expect("feasible");
        assert_eq!(solution.plan.to_string(), "s: small b1 1c×3", "{solver:?}");
        assert_placed(&problem, &solution);
        assert_eq!(solution.solver, "milp (placement)");
        assert!(solution.binding.contains(&Constraint::NodePlacement));
        let reference = brute_force(&problem).expect("brute force finds it too");
        assert!(close(reference.objective, solution.objective));
    }
}

#[test]
fn a_node_set_with_room_keeps_the_best_plan_and_says_where_each_replica_goes() {
    let mut problem = big_or_small();
    problem.nodes = vec![node("a", 4.0, 0.0), node("b", 2.5, 0.0)];
    let solution = solve(&problem).expect("feasible");
    assert_eq!(solution.plan.to_string(), "s: big b1 2c×3");
    assert_eq!(
        solution.solver, "pareto-dp",
        "the relaxation's optimum places"
    );
    assert_placed(&problem, &solution);
    let on = |id: &str| {
        solution
            .placement
            .iter()
            .filter(|p| p.node == id)
            .map(|p| p.replicas)
            .sum::<u32>()
    };
    assert_eq!((on("a"), on("b")), (2, 1));
}

#[test]
fn replicas_larger_than_every_node_are_never_planned() {
    // The only variant fast enough runs on 4 cores; the nodes have 3 CPUs each.
    let variants = vec![
        measured_at("fast", 0.9, 4, 10.0, 50.0),
        measured_at("slow", 0.9, 2, 400.0, 50.0),
    ];
    let mut problem = Problem::new(
        pipeline("p", 100.0, vec![stage("s", variants, &[1], &[2, 4], 8)]),
        20.0,
    );
    problem.pinned_cores = vec![pinned("fast", 4), pinned("slow", 2)];
    problem.limits.total_cores = Some(6);
    assert!(solve(&problem).is_ok(), "6 cores carry one 4-core replica");
    problem.nodes = vec![node("n1", 3.0, 0.0), node("n2", 3.0, 0.0)];
    let Err(PlanError::Infeasible(why)) = solve(&problem) else {
        panic!("a 4-core replica fits no 3-CPU node");
    };
    assert_eq!(why.binding, Constraint::NodePlacement);
    assert!(
        why.message
            .contains("n1 (3 CPUs, 0 GPUs), n2 (3 CPUs, 0 GPUs)"),
        "{}",
        why.message
    );
    assert!(brute_force(&problem).is_none());
}

#[test]
fn nodes_with_garbage_or_twice_the_same_id_are_an_invalid_problem() {
    let mut problem = big_or_small();
    problem.nodes = vec![node("a", f64::NAN, 0.0)];
    assert!(matches!(solve(&problem), Err(PlanError::InvalidProblem(m)) if m.contains("node `a`")));
    problem.nodes = vec![node("a", 2.0, -1.0)];
    assert!(matches!(solve(&problem), Err(PlanError::InvalidProblem(_))));
    problem.nodes = vec![node("a", 2.0, 0.0), node("a", 4.0, 0.0)];
    assert!(
        matches!(solve(&problem), Err(PlanError::InvalidProblem(m)) if m.contains("listed twice"))
    );
}

#[test]
fn gpu_replicas_need_a_gpu_on_their_node() {
    let mut gpu = measured_at("gpu", 0.9, 1, 10.0, 10.0);
    gpu.gpu_mem_mb = Some(1000.0);
    let mut problem = Problem::new(
        pipeline("p", 100.0, vec![stage("s", vec![gpu], &[1], &[1], 8)]),
        12.0,
    );
    problem.extra_replicas = 0;
    problem.nodes = vec![node("cpu-only", 32.0, 0.0), node("one-gpu", 2.0, 1.0)];
    let Err(PlanError::Infeasible(why)) = solve(&problem) else {
        panic!("two GPU replicas, one GPU");
    };
    assert_eq!(why.binding, Constraint::NodePlacement);
    problem.nodes.push(node("another-gpu", 1.0, 1.0));
    let solution = solve(&problem).expect("two GPUs on two nodes");
    assert_placed(&problem, &solution);
    assert!(solution.placement.iter().all(|p| p.node != "cpu-only"));
}

#[test]
fn the_exact_packing_finds_what_first_fit_decreasing_misses() {
    // Sizes 3, 3, 2, 2, 2 into two nodes of 6: first fit puts both 3s on the first node
    // and the three 2s do not fit the second; 3+3 | 2+2+2 works.
    let need = |cpus| ReplicaNeed { gpus: 0, cpus };
    let groups = vec![
        Group {
            stage: "s".into(),
            variant: "a".into(),
            need: need(3),
            count: 2,
        },
        Group {
            stage: "s".into(),
            variant: "b".into(),
            need: need(2),
            count: 3,
        },
    ];
    let nodes = [node("x", 6.0, 0.0), node("y", 6.0, 0.0)];
    assert!(matches!(pack(&groups, &nodes, None), Packing::Placed(_)));
    // 3+2 | 3+2 | 2 needs a third node: sizes 3, 3, 2, 2, 2 into nodes of 5, 5, 1 do not fit.
    let tight = [
        node("x", 5.0, 0.0),
        node("y", 5.0, 0.0),
        node("z", 2.0, 0.0),
    ];
    assert!(matches!(pack(&groups, &tight, None), Packing::Placed(_)));
    let short = [
        node("x", 5.0, 0.0),
        node("y", 5.0, 0.0),
        node("z", 1.5, 0.0),
    ];
    assert!(matches!(
        pack(&groups, &short, None),
        Packing::Impossible(_)
    ));
    // 3+3 into 4 and 4 (total 8 ≥ 6 + 0) does not pack, and the search proves it.
    let pairs = [node("x", 4.0, 0.0), node("y", 4.0, 0.0)];
    let threes = &groups[..1];
    assert!(matches!(pack(threes, &pairs, None), Packing::Placed(_)));
    let one = [node("x", 5.0, 0.0), node("y", 2.0, 0.0)];
    assert!(matches!(pack(threes, &one, None), Packing::Impossible(_)));
}

/// 1–3 random nodes with 1–8 CPUs (some fractional) and 0–2 GPUs.
fn random_nodes(seed: u64) -> Vec<NodeCapacity> {
    let mut rng = Rng::new(seed ^ 0x5eed_0fc1_u64);
    (0..rng.int(1, 3))
        .map(|i| {
            let cpus = if rng.chance(0.3) {
                rng.range(1.0, 8.0)
            } else {
                f64::from(rng.int(1, 8))
            };
            node(&format!("n{i}"), cpus, f64::from(rng.int(0, 2)))
        })
        .collect()
}

fn at(variant: &str, node: &str, replicas: u32) -> Placement {
    Placement {
        stage: "s".into(),
        variant: variant.into(),
        node: node.into(),
        replicas,
    }
}

#[test]
fn a_switched_in_variant_goes_to_the_room_nobody_holds_before_the_room_it_replaces() {
    // The pipeline's `big` (2 cores) holds node a's 2 CPUs; b is free. The plan switches
    // to two `small` replicas (1 core each): placed on b, where they can start while `big`
    // still serves on a (make-before-break), not on a, where they would wait for it.
    let problem = big_or_small();
    let plan = infadapt_testkit::single_plan("s", "small", 1, 1, 2);
    let held = |id: &str, cpus: f64, held_cpus: f64| NodeCapacity {
        held_cpus,
        ..node(id, cpus, 0.0)
    };
    let nodes = [held("a", 2.0, 2.0), held("b", 2.0, 0.0)];
    let running = [at("big", "a", 1)];
    let placed = place_plan_near(&problem.pipeline, &plan, &nodes, &running).expect("places");
    assert_eq!(placed, [at("small", "b", 2)]);
    // What the pipeline holds counts, not only what is seen running: one `big` replica
    // runs on a, a second is still starting there (4 CPUs, all held): b again.
    let nodes = [held("a", 4.0, 4.0), held("b", 2.0, 0.0)];
    let placed = place_plan_near(&problem.pipeline, &plan, &nodes, &running).expect("places");
    assert_eq!(placed, [at("small", "b", 2)]);
    // Without room elsewhere, the room it replaces is used (the switch then waits there).
    let tight = [held("a", 2.0, 2.0), held("b", 1.0, 0.0)];
    let placed = place_plan_near(&problem.pipeline, &plan, &tight, &running).expect("places");
    assert!(
        placement_fits(&problem.pipeline, &plan, &placed, &tight),
        "{placed:?}"
    );
    assert_eq!(placed.iter().map(|p| p.replicas).sum::<u32>(), 2);
}

#[test]
fn replicas_stay_on_the_nodes_they_run_on_where_they_fit() {
    let problem = big_or_small();
    let plan = infadapt_testkit::single_plan("s", "small", 1, 1, 4);
    let nodes = [
        node("a", 3.0, 0.0),
        node("b", 3.0, 0.0),
        node("c", 2.0, 0.0),
    ];
    // Two run on c and one on b (and one on a node that is gone): they stay, the fourth
    // goes where first fit puts it.
    let running = [
        at("small", "c", 2),
        at("small", "b", 1),
        at("small", "gone", 1),
    ];
    let placed = place_plan_near(&problem.pipeline, &plan, &nodes, &running).expect("places");
    assert!(placement_fits(&problem.pipeline, &plan, &placed, &nodes));
    let on = |id: &str| {
        placed
            .iter()
            .filter(|p| p.node == id)
            .map(|p| p.replicas)
            .sum::<u32>()
    };
    assert_eq!((on("a"), on("b"), on("c")), (1, 1, 2), "{placed:?}");
    // More running on a node than it now holds: as many as fit stay.
    let crowded = [at("small", "c", 4)];
    let placed = place_plan_near(&problem.pipeline, &plan, &nodes, &crowded).expect("places");
    assert!(placement_fits(&problem.pipeline, &plan, &placed, &nodes));
    assert_eq!(
        placed.iter().find(|p| p.node == "c").map(|p| p.replicas),
        Some(2)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn with_nodes_the_planner_equals_the_brute_force_and_every_plan_places(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 2);
        problem.nodes = random_nodes(seed);
        let reference = brute_force(&problem);
        let got = solve(&problem);
        if let Ok(solution) = &got {
            // The same plan placed near a running placement on other nodes still places.
            let mut running = solution.placement.clone();
            for (i, p) in running.iter_mut().enumerate() {
                p.node = problem.nodes[(i + seed as usize) % problem.nodes.len()].id.clone();
                p.replicas += (seed % 3) as u32;
            }
            let near = place_plan_near(&problem.pipeline, &solution.plan, &problem.nodes, &running)
                .expect("a plan that places also places near a running placement");
            prop_assert!(placement_fits(&problem.pipeline, &solution.plan, &near, &problem.nodes));
        }
        compare_with_brute_force(&problem, reference, got, |s| assert_placed(&problem, s))?;
    }

    #[test]
    fn with_nodes_the_milp_equals_the_brute_force(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 2);
        problem.nodes = random_nodes(seed);
        problem.solver = SolverChoice::Milp;
        let reference = brute_force(&problem);
        compare_with_brute_force(&problem, reference, solve(&problem), |s| assert_placed(&problem, s))?;
    }

    #[test]
    fn with_nodes_a_mix_equals_the_brute_force(seed in any::<u64>()) {
        let mut problem = random_problem(seed, 1);
        problem.nodes = random_nodes(seed);
        problem.allow_mix = true;
        problem.solver = SolverChoice::Auto;
        let reference = brute_force(&problem);
        compare_with_brute_force(&problem, reference, solve(&problem), |s| assert_placed(&problem, s))?;
    }
}

#[test]
fn the_exported_model_has_the_placement_block() {
    let mut problem = big_or_small();
    problem.nodes = vec![node("a", 3.0, 0.0), node("b", 3.0, 0.0)];
    let lp = infadapt_planner::export_lp(&problem).expect("valid problem");
    for line in [
        "cpus_n0: + 1 y_r0_n0 + 2 y_r1_n0 <= 3",
        "placed_r1: + 1 y_r1_n0 + 1 y_r1_n1 - 3 x_s0_o0 = 0",
        " 0 <= y_r1_n1 <= 1\n",
        "General\n y_r0_n0 y_r0_n1 y_r1_n0 y_r1_n1\n",
    ] {
        assert!(lp.contains(line), "{line:?} not in\n{lp}");
    }
}
