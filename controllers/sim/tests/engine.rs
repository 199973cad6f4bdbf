//! Behaviour of the host simulator: queueing, provisioning, cold starts, switches, cost.

mod common;

use common::*;
use infadapt_sim::{AccuracyComposition, HostSim, LaneMode, SimConfig, SimError};

fn config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        max_queue_delay_ms: 0.0,
        ..SimConfig::default()
    }
}

fn run(sim: &mut HostSim, rate: f64, seconds: usize) {
    for _ in 0..seconds {
        sim.step_second(rate);
    }
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let p = pipeline(
        200.0,
        vec![stage("s", vec![variant("v", 0.7, 5.0, 8.0, 2.0)])],
    );
    let go = |seed| {
        let mut sim =
            HostSim::new(&p, &single("s", "v", 2, 1), SimConfig::with_seed(seed)).expect("sim");
        run(&mut sim, 90.0, 120);
        sim.totals()
    };
    assert_eq!(go(7), go(7));
    assert_ne!(go(7), go(8));
}

#[test]
fn requests_are_conserved_and_drain_to_zero() {
    let p = pipeline(
        300.0,
        vec![
            stage("a", vec![variant("a1", 0.5, 2.0, 4.0, 1.5)]),
            stage("b", vec![variant("b1", 0.6, 2.0, 6.0, 2.0)]),
        ],
    );
    let initial = plan(&[
        ("a", vec![assignment("a1", 4, 1, 1, 1.0)]),
        ("b", vec![assignment("b1", 2, 1, 1, 1.0)]),
    ]);
    let mut sim = HostSim::new(&p, &initial, SimConfig::with_seed(3)).expect("sim");
    for second in 0..200 {
        sim.step_second(if second % 50 < 25 { 400.0 } else { 60.0 });
        let t = sim.totals();
        assert_eq!(
            t.requests,
            t.completed + t.dropped + t.in_flight,
            "second {second}: {t:?}"
        );
    }
    run(&mut sim, 0.0, 30);
    let t = sim.totals();
    assert_eq!(t.in_flight, 0);
    assert_eq!(t.requests, t.completed + t.dropped);
    assert!(t.dropped > 0 && t.completed > 0);
}

#[test]
fn single_server_fixed_service_matches_m_d_1() {
    // Pollaczek–Khinchine for M/D/1: mean time in system = D + ρ·D / (2(1 − ρ)).
    for (rate, service_ms) in [(50.0, 10.0), (70.0, 10.0), (40.0, 20.0)] {
        let p = fixed_pipeline(service_ms, 0.0);
        let mut sim = HostSim::new(&p, &single("s", "v", 1, 1), config(11)).expect("sim");
        run(&mut sim, rate, 2000);
        let rho: f64 = rate * service_ms / 1000.0;
        let expected = service_ms + rho * service_ms / (2.0 * (1.0 - rho));
        let t = sim.totals();
        assert_eq!(t.dropped, 0);
        let relative = (t.mean_latency_ms - expected).abs() / expected;
        assert!(
            relative < 0.05,
            "λ={rate} D={service_ms}: mean {} vs {expected}",
            t.mean_latency_ms
        );
    }
}

#[test]
fn under_provisioned_queues_drop_and_violate() {
    let p = fixed_pipeline(20.0, 0.0); // one replica: 50 rps
    let cfg = SimConfig {
        timeout_ms: Some(20_000.0),
        ..config(5)
    };
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 1), cfg).expect("sim");
    run(&mut sim, 100.0, 5);
    let early = sim.observe();
    run(&mut sim, 100.0, 60);
    let late = sim.observe();
    assert!(
        late.stages[0].queue_len > early.stages[0].queue_len,
        "{} → {}",
        early.stages[0].queue_len,
        late.stages[0].queue_len
    );
    assert!(late.dropped_timeout > 1000, "{late:?}");
    assert!(late.stages[0].busy_fraction > 0.99);
    let t = sim.totals();
    assert!(t.slo_violation_rate > 0.4, "{t:?}");
    assert!(
        (t.completed as f64 / 65.0 - 50.0).abs() < 3.0,
        "served at capacity: {}",
        t.completed
    );
}

#[test]
fn over_provisioned_meets_the_slo() {
    let p = pipeline(
        100.0,
        vec![stage("s", vec![variant("v", 0.7, 0.0, 5.0, 2.0)])],
    );
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 3), config(6)).expect("sim"); // 600 rps
    run(&mut sim, 150.0, 300);
    let t = sim.totals();
    assert_eq!(t.dropped, 0);
    assert!(t.slo_violation_rate < 1e-3, "{t:?}");
    assert!(t.p99_latency_ms < 40.0);
}

#[test]
fn cold_start_adds_capacity_only_after_load_time() {
    let p = fixed_pipeline(20.0, 30.0); // 50 rps per replica, 30 s cold start
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 1), config(8)).expect("sim");
    run(&mut sim, 90.0, 60);
    sim.observe();
    let report = sim.apply(&single("s", "v", 1, 2)).expect("apply");
    assert_eq!(report.replicas_started(), 1);
    assert!(report.changed());
    run(&mut sim, 90.0, 29);
    let starting = sim.observe();
    assert_eq!(
        (
            starting.stages[0].ready_replicas,
            starting.stages[0].starting_replicas
        ),
        (1, 1)
    );
    assert!(
        starting.completed as f64 / 29.0 <= 51.0,
        "no extra capacity while starting: {}",
        starting.completed
    );
    assert!((starting.stages[0].capacity_rps - 50.0).abs() < 1e-9);
    run(&mut sim, 90.0, 11);
    sim.observe();
    run(&mut sim, 90.0, 60);
    let ready = sim.observe();
    assert_eq!(
        (
            ready.stages[0].ready_replicas,
            ready.stages[0].starting_replicas
        ),
        (2, 0)
    );
    assert!(
        (ready.completed as f64 / 60.0 - 90.0).abs() < 4.0,
        "full capacity: {}",
        ready.completed
    );
    assert_eq!(ready.dropped, 0);
    assert!((ready.stages[0].capacity_rps - 100.0).abs() < 1e-9);
}

#[test]
fn variant_switch_is_make_before_break() {
    let p = pipeline(
        500.0,
        vec![stage(
            "s",
            vec![
                variant("small", 0.7, 0.0, 10.0, 1.5),
                variant("big", 0.8, 20.0, 12.0, 1.5),
            ],
        )],
    );
    let mut sim = HostSim::new(&p, &single("s", "small", 1, 1), config(9)).expect("sim");
    run(&mut sim, 50.0, 30);
    sim.observe();
    let report = sim.apply(&single("s", "big", 1, 1)).expect("apply");
    assert_eq!(report.variant_switches(), 1);
    assert_eq!(report.stages[0].variants_removed, vec!["small".to_owned()]);
    assert_eq!(report.replicas_started(), 1);
    run(&mut sim, 50.0, 19);
    let during = sim.observe();
    assert_eq!(during.dropped, 0);
    assert!(
        (during.mean_accuracy.expect("served") - 0.7).abs() < 1e-12,
        "old variant serves"
    );
    let modes: Vec<_> = during.stages[0]
        .variants
        .iter()
        .map(|v| (v.variant.as_str(), v.mode))
        .collect();
    assert_eq!(
        modes,
        vec![("small", LaneMode::Outgoing), ("big", LaneMode::Planned)]
    );
    run(&mut sim, 50.0, 2);
    sim.observe();
    run(&mut sim, 50.0, 30);
    let after = sim.observe();
    assert_eq!(after.dropped, 0);
    assert_eq!(after.slo_misses, 0);
    assert!(
        (after.mean_accuracy.expect("served") - 0.8).abs() < 1e-12,
        "new variant serves"
    );
    let variants: Vec<_> = after.stages[0]
        .variants
        .iter()
        .map(|v| v.variant.as_str())
        .collect();
    assert_eq!(variants, vec!["big"], "old variant drained and left");
    let t = sim.totals();
    assert_eq!(t.dropped, 0);
}

#[test]
fn removing_replicas_never_loses_a_batch() {
    let p = fixed_pipeline(2000.0, 0.0); // 2 s per request
    let cfg = SimConfig {
        slo_ms: Some(10_000.0),
        timeout_ms: Some(1.0e6),
        ..config(10)
    };
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 4), cfg).expect("sim");
    run(&mut sim, 1.5, 3);
    let before = sim.totals();
    assert!(before.in_flight > 0);
    let report = sim.apply(&single("s", "v", 1, 1)).expect("apply");
    assert_eq!(report.replicas_stopped(), 3);
    run(&mut sim, 1.5, 10);
    run(&mut sim, 0.0, 60);
    let t = sim.totals();
    assert_eq!(t.dropped, 0);
    assert_eq!(t.in_flight, 0);
    assert_eq!(t.completed, t.requests);
    assert_eq!(sim.observe().stages[0].ready_replicas, 1);
}

#[test]
fn cost_integrates_cores_over_time_including_cold_starts() {
    let mut p = fixed_pipeline(10.0, 50.0);
    p.stages[0].variants[0].gpu_mem_mb = Some(1000.0);
    let four_cores = |replicas| plan(&[("s", vec![assignment("v", 1, 4, replicas, 1.0)])]);
    let mut sim = HostSim::new(&p, &four_cores(2), config(12)).expect("sim");
    run(&mut sim, 0.0, 100);
    sim.apply(&four_cores(4)).expect("scale up");
    run(&mut sim, 0.0, 100);
    let t = sim.totals();
    assert!(
        (t.core_seconds - (2.0 * 4.0 * 100.0 + 4.0 * 4.0 * 100.0)).abs() < 1e-6,
        "{t:?}"
    );
    assert!((t.gpu_mib_seconds - (2.0 * 1000.0 * 100.0 + 4.0 * 1000.0 * 100.0)).abs() < 1e-3);
    sim.apply(&four_cores(1)).expect("scale down");
    run(&mut sim, 0.0, 100);
    let t = sim.totals();
    assert!((t.core_seconds - 2800.0).abs() < 1e-6, "{t:?}");
    assert!((t.cost_core_hours - 2800.0 / 3600.0).abs() < 1e-9);
}

#[test]
fn cores_change_restarts_replicas_make_before_break() {
    let p = fixed_pipeline(10.0, 15.0);
    let on = |cores| plan(&[("s", vec![assignment("v", 1, cores, 1, 1.0)])]);
    let mut sim = HostSim::new(&p, &on(1), config(13)).expect("sim");
    run(&mut sim, 40.0, 10);
    let report = sim.apply(&on(2)).expect("apply");
    assert_eq!(
        (
            report.stages[0].cores_changes,
            report.replicas_started(),
            report.replicas_stopped()
        ),
        (1, 1, 1)
    );
    run(&mut sim, 40.0, 10);
    let during = sim.observe();
    let pools = &during.stages[0].variants[0].pools;
    assert_eq!(pools.len(), 2);
    assert_eq!(
        (
            pools[0].cores,
            pools[0].ready,
            pools[1].cores,
            pools[1].starting
        ),
        (1, 1, 2, 1)
    );
    run(&mut sim, 40.0, 10);
    let after = sim.observe();
    let pools = &after.stages[0].variants[0].pools;
    assert_eq!(pools.len(), 1);
    assert_eq!((pools[0].cores, pools[0].ready), (2, 1));
    assert_eq!(sim.totals().dropped, 0);
    // Cost: one 1-core replica for 25 s, one 2-core replica from 10 s on.
    // (the old replica may finish a batch just after 25 s)
    let core_seconds = sim.totals().core_seconds;
    assert!(
        (core_seconds - (25.0 + 2.0 * 20.0)).abs() < 0.05,
        "{core_seconds}"
    );
}

#[test]
fn batcher_waits_up_to_the_queue_delay() {
    let p = fixed_pipeline(5.0, 0.0);
    let mean_latency = |delay_ms| {
        let cfg = SimConfig {
            max_queue_delay_ms: delay_ms,
            ..config(14)
        };
        let mut sim = HostSim::new(&p, &single("s", "v", 8, 1), cfg).expect("sim");
        run(&mut sim, 10.0, 300);
        sim.totals().mean_latency_ms
    };
    let eager = mean_latency(0.0);
    assert!(eager < 8.0, "no wait without delay: {eager}");
    let patient = mean_latency(50.0);
    assert!(
        (30.0..60.0).contains(&patient),
        "waits for the batch: {patient}"
    );
}

#[test]
fn shares_split_the_load_and_accuracy_composes() {
    let p = pipeline(
        1000.0,
        vec![stage(
            "s",
            vec![
                variant("a", 0.6, 0.0, 2.0, 1.0),
                variant("b", 0.8, 0.0, 2.0, 1.0),
            ],
        )],
    );
    let mix = plan(&[(
        "s",
        vec![assignment("a", 1, 1, 1, 1.0), assignment("b", 1, 1, 1, 3.0)],
    )]);
    let mut sim = HostSim::new(&p, &mix, config(15)).expect("sim");
    run(&mut sim, 100.0, 100);
    let accuracy = sim.totals().mean_accuracy;
    assert!(
        (accuracy - (0.25 * 0.6 + 0.75 * 0.8)).abs() < 1e-3,
        "{accuracy}"
    );
    assert!((sim.target_plan().stages[0].assignments[1].share - 0.75).abs() < 1e-12);

    let chain = pipeline(
        1000.0,
        vec![
            stage("x", vec![variant("x1", 0.9, 0.0, 1.0, 1.0)]),
            stage("y", vec![variant("y1", 0.8, 0.0, 1.0, 1.0)]),
            stage("z", vec![variant("z1", 0.5, 0.0, 1.0, 1.0)]),
        ],
    );
    let all = plan(&[
        ("x", vec![assignment("x1", 1, 1, 1, 1.0)]),
        ("y", vec![assignment("y1", 1, 1, 1, 1.0)]),
        ("z", vec![assignment("z1", 1, 1, 1, 1.0)]),
    ]);
    for (mode, want) in [
        (AccuracyComposition::Product, 0.36),
        (AccuracyComposition::Sum, 2.2),
    ] {
        let mut sim = HostSim::new(
            &chain,
            &all,
            SimConfig {
                accuracy: mode,
                ..config(16)
            },
        )
        .expect("sim");
        run(&mut sim, 50.0, 20);
        assert!((sim.totals().mean_accuracy - want).abs() < 1e-9);
    }
}

#[test]
fn overlapping_server_reaches_its_profiled_throughput() {
    // 80 ms per request but 34 rps per replica: the server overlaps requests.
    let p = pipeline(
        1000.0,
        vec![stage(
            "s",
            vec![measured_variant("r18", 0.7, 0.0, 80.0, 34.0)],
        )],
    );
    let mut sim = HostSim::new(&p, &single("s", "r18", 1, 1), config(17)).expect("sim");
    run(&mut sim, 25.0, 1000);
    let t = sim.totals();
    assert_eq!(
        t.dropped, 0,
        "served at 25 rps although 80 ms latency alone allows 12.5"
    );
    // M/D/1 on the occupancy 1/34 s, plus the 80 ms latency of the request itself.
    let (rho, occupancy_ms) = (25.0 / 34.0, 1000.0 / 34.0);
    let expected = 80.0 + rho * occupancy_ms / (2.0 * (1.0 - rho));
    assert!(
        t.p50_latency_ms >= 80.0 && (t.mean_latency_ms - expected).abs() / expected < 0.1,
        "{t:?} vs {expected}"
    );
    let obs = sim.observe();
    assert!((obs.stages[0].capacity_rps - 34.0).abs() < 1e-9);
}

#[test]
fn invalid_plans_are_rejected_and_change_nothing() {
    let p = fixed_pipeline(10.0, 0.0);
    let cases = [
        (single("s", "nope", 1, 1), "not a variant"),
        (single("s", "v", 1, 0), "replicas"),
        (single("s", "v", 0, 1), "batch"),
        (single("other", "v", 1, 1), "unknown stage"),
        (
            plan(&[("s", vec![assignment("v", 1, 1, 1, f64::NAN)])]),
            "share",
        ),
        (plan(&[("s", vec![assignment("v", 1, 1, 1, 0.0)])]), "sum"),
        (plan(&[("s", vec![])]), "no assignment"),
        (plan(&[]), "missing"),
    ];
    for (bad, needle) in &cases {
        match HostSim::new(&p, bad, config(1)) {
            Err(SimError::Plan(message)) => assert!(
                message.contains(needle),
                "{message} should mention {needle}"
            ),
            other => panic!("expected a plan error for {needle}, got {other:?}"),
        }
    }
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 2), config(1)).expect("sim");
    run(&mut sim, 10.0, 5);
    for (bad, _) in &cases {
        assert!(sim.apply(bad).is_err());
    }
    assert_eq!(sim.target_plan(), &single("s", "v", 1, 2));
    assert_eq!(sim.observe().stages[0].ready_replicas, 2);
    let bad_config = SimConfig {
        timeout_ms: Some(-1.0),
        ..SimConfig::default()
    };
    assert!(matches!(
        HostSim::new(&p, &single("s", "v", 1, 1), bad_config),
        Err(SimError::Config { .. })
    ));
}

#[test]
fn observation_reports_the_window() {
    let p = fixed_pipeline(10.0, 0.0);
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 2), config(18)).expect("sim");
    run(&mut sim, 20.0, 10);
    let obs = sim.observe();
    assert_eq!(obs.arrivals_per_second.len(), 10);
    assert_eq!(
        obs.arrivals_per_second
            .iter()
            .map(|&n| u64::from(n))
            .sum::<u64>(),
        obs.arrivals
    );
    assert_eq!((obs.time_s, obs.window_s), (10.0, 10.0));
    assert!(obs.latency_p50_ms.is_some() && obs.latency_p99_ms >= obs.latency_p50_ms);
    run(&mut sim, 0.0, 5);
    sim.observe();
    run(&mut sim, 0.0, 5);
    let quiet = sim.observe();
    assert_eq!((quiet.arrivals, quiet.window_s), (0, 5.0));
    assert_eq!(quiet.latency_p99_ms, None);
    assert!(quiet.stages[0].busy_fraction < 0.05);
}
