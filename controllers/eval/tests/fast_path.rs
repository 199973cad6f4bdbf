//! The fast path in closed loop: a load step is met within seconds, not at the next tick,
//! a steady load never sets it off, and it lowers the misses of a step on every seed.

mod support;

use infadapt_control::FastPathConfig;
use infadapt_eval::{PolicyReport, Scenario, evaluate};
use infadapt_sim::SimConfig;
use support::{OneStage, one_stage_scenario};

fn scenario(seed: u64, fast_path: bool) -> Scenario {
    let mut scenario = one_stage_scenario(OneStage {
        name: "fast-path",
        slo_ms: 500.0,
        p99_over_mean: 1.5,
        load_time_s: 4.0,
        sim: SimConfig::with_seed(seed),
        warmup_s: 0,
    });
    if !fast_path {
        scenario.loop_settings.fast_path = FastPathConfig::disabled();
    }
    scenario
}

/// 40 rps for 10 minutes, then 120 rps from second 603 (between two ticks) on.
fn step() -> Vec<f64> {
    let mut rates = vec![40.0; 603];
    rates.extend(vec![120.0; 297]);
    rates
}

fn run(seed: u64, fast_path: bool, rates: &[f64]) -> PolicyReport {
    evaluate("infadapt", &scenario(seed, fast_path), rates, true, None).expect("runs")
}

#[test]
fn a_step_is_met_within_seconds_between_ticks() {
    let report = run(1, true, &step());
    let fast: Vec<f64> = report
        .timeline
        .iter()
        .filter(|p| p.fast_path.is_some())
        .map(|p| p.time_s)
        .collect();
    let first = fast
        .first()
        .copied()
        .expect("the fast path fires on the step");
    assert!(
        (604.0..=606.0).contains(&first),
        "first fast-path decision at {first} s (step at 603 s, tick at 610 s): {fast:?}"
    );
    let point = report
        .timeline
        .iter()
        .find(|p| p.time_s == first)
        .expect("point");
    assert!(point.changed, "the fast path applied a change: {point:?}");
    assert!(
        point.capacity_rps * 0.8 >= 120.0,
        "it plans for what arrives: {point:?}"
    );
}

#[test]
fn a_steady_load_never_sets_it_off() {
    for seed in 1..=3 {
        let report = run(seed, true, &vec![60.0; 900]);
        let fired: Vec<&str> = report
            .timeline
            .iter()
            .filter_map(|p| p.fast_path.as_deref())
            .collect();
        assert!(fired.is_empty(), "seed {seed}: {fired:?}");
    }
}

#[test]
fn it_lowers_the_misses_of_a_step_on_every_seed() {
    let rates = step();
    for seed in 1..=3 {
        let with = run(seed, true, &rates);
        let without = run(seed, false, &rates);
        assert_eq!(with.requests, without.requests, "same arrivals");
        assert!(
            with.slo_violations < without.slo_violations,
            "seed {seed}: {} misses with the fast path, {} without",
            with.slo_violations,
            without.slo_violations
        );
    }
}
