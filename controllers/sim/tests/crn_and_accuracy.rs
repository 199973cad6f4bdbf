//! Common random numbers and on-time accuracy: the arrivals of a seed do not depend on the
//! plans, and on-time accuracy counts only requests that completed within the SLO, over every
//! arrival.

mod common;

use common::*;
use infadapt_model::{Pipeline, Plan};
use infadapt_sim::{
    ARRIVAL_STREAM, AccuracyComposition, HostSim, SERVICE_STREAM, SimConfig, splitmix64,
    stream_seed,
};
use proptest::prelude::*;

/// A two-stage pipeline whose service times are random (p99 twice the mean), so every batch
/// draws from a generator.
fn noisy_pipeline() -> Pipeline {
    pipeline(
        150.0,
        vec![
            stage(
                "a",
                vec![
                    variant("a-fast", 0.6, 2.0, 3.0, 2.0),
                    variant("a-slow", 0.9, 4.0, 9.0, 2.0),
                ],
            ),
            stage("b", vec![variant("b1", 0.8, 2.0, 4.0, 2.0)]),
        ],
    )
}

/// One replica per stage at batch 1: drops most of a load of a few hundred per second.
fn tiny_plan() -> Plan {
    plan(&[
        ("a", vec![assignment("a-slow", 1, 1, 1, 1.0)]),
        ("b", vec![assignment("b1", 1, 1, 1, 1.0)]),
    ])
}

/// Far more capacity than the load needs, with a mix in the first stage.
fn huge_plan() -> Plan {
    plan(&[
        (
            "a",
            vec![
                assignment("a-fast", 4, 2, 40, 0.5),
                assignment("a-slow", 8, 4, 40, 0.5),
            ],
        ),
        ("b", vec![assignment("b1", 2, 1, 60, 1.0)]),
    ])
}

/// A load that rises and falls between 20 and 420 requests per second.
fn rates(seconds: usize) -> Vec<f64> {
    (0..seconds)
        .map(|s| 220.0 + 200.0 * (s as f64 / 40.0).sin())
        .collect()
}

/// Steps `sim` through `rates`, applying `switch` every 45 s when given, and returns the
/// arrivals of every second as the observations report them.
fn arrivals(sim: &mut HostSim, rates: &[f64], switch: Option<(&Plan, &Plan)>) -> Vec<u32> {
    let mut seen = Vec::new();
    for (second, &rate) in rates.iter().enumerate() {
        if let Some((a, b)) = switch
            && second % 45 == 44
        {
            let next = if (second / 45) % 2 == 0 { b } else { a };
            sim.apply(next).expect("valid plan");
        }
        sim.step_second(rate);
        if second % 10 == 9 {
            seen.extend(sim.observe().arrivals_per_second);
        }
    }
    seen.extend(sim.observe().arrivals_per_second);
    seen
}

#[test]
fn splitmix64_matches_the_reference_generator() {
    // The first outputs of the reference SplitMix64 seeded with 0 and with 1234567.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(splitmix64(1_234_567), 0x599e_d017_fb08_fc85);
    // Streams of one seed, and one stream of two seeds, get different generator seeds.
    assert_ne!(
        stream_seed(1, ARRIVAL_STREAM),
        stream_seed(1, SERVICE_STREAM)
    );
    assert_ne!(
        stream_seed(1, ARRIVAL_STREAM),
        stream_seed(2, ARRIVAL_STREAM)
    );
    assert_ne!(stream_seed(1, ARRIVAL_STREAM), 1);
}

#[test]
fn arrivals_depend_on_the_seed_and_rates_only_never_on_the_plan() {
    let p = noisy_pipeline();
    let load = rates(400);
    let run = |seed: u64, initial: &Plan, switch: Option<(&Plan, &Plan)>| {
        let mut sim = HostSim::new(&p, initial, SimConfig::with_seed(seed)).expect("sim");
        let per_second = arrivals(&mut sim, &load, switch);
        (per_second, sim.totals())
    };
    let (tiny, tiny_totals) = run(7, &tiny_plan(), None);
    let (huge, huge_totals) = run(7, &huge_plan(), None);
    let (switching, switching_totals) = run(7, &tiny_plan(), Some((&tiny_plan(), &huge_plan())));
    // The plans serve very differently...
    assert!(
        tiny_totals.dropped > tiny_totals.requests / 3,
        "the tiny plan drops heavily: {tiny_totals:?}"
    );
    assert!(
        huge_totals.dropped == 0 && huge_totals.completed > 2 * tiny_totals.completed,
        "{huge_totals:?}"
    );
    // ...on the very same arrivals.
    assert_eq!(tiny.len(), load.len());
    assert_eq!(tiny, huge);
    assert_eq!(tiny, switching);
    assert_eq!(tiny_totals.requests, huge_totals.requests);
    assert_eq!(tiny_totals.requests, switching_totals.requests);
    assert_eq!(
        tiny_totals.requests,
        tiny.iter().map(|&n| u64::from(n)).sum::<u64>()
    );
    // Another seed draws other arrivals.
    let (other, other_totals) = run(8, &huge_plan(), None);
    assert_ne!(other, tiny);
    assert_ne!(other_totals.requests, tiny_totals.requests);
}

#[test]
fn on_time_accuracy_counts_on_time_completions_over_every_arrival() {
    // Deterministic service: one replica of 20 ms per request (50 rps) per stage, offered
    // 80 rps for 20 s, then nothing: queues build up, late completions and timeouts follow.
    let p = pipeline(
        300.0,
        vec![
            stage("a", vec![variant("a1", 0.9, 0.0, 20.0, 1.0)]),
            stage("b", vec![variant("b1", 0.8, 0.0, 2.0, 1.0)]),
        ],
    );
    let initial = plan(&[
        ("a", vec![assignment("a1", 1, 1, 1, 1.0)]),
        ("b", vec![assignment("b1", 1, 1, 1, 1.0)]),
    ]);
    let config = SimConfig {
        seed: 3,
        noise_scale: 0.0,
        max_queue_delay_ms: 0.0,
        timeout_ms: Some(2_000.0),
        accuracy: AccuracyComposition::Product,
        ..SimConfig::default()
    };
    let mut sim = HostSim::new(&p, &initial, config).expect("sim");
    let mut window_sum = 0.0;
    for second in 0..20 {
        sim.step_second(80.0);
        if second % 5 == 4 {
            window_sum += sim.observe().on_time_accuracy_sum;
        }
    }
    // Stop mid-way once with requests still in flight: they count in the denominator.
    let midway = sim.totals();
    assert!(midway.in_flight > 0, "{midway:?}");
    let composed = 0.9 * 0.8;
    let on_time = (midway.completed - midway.completed_late) as f64;
    assert!(
        (midway.on_time_accuracy - composed * on_time / midway.requests as f64).abs() < 1e-12,
        "{midway:?}"
    );
    for _ in 0..10 {
        sim.step_second(0.0);
    }
    window_sum += sim.observe().on_time_accuracy_sum;
    let t = sim.totals();
    assert_eq!(t.in_flight, 0);
    assert!(t.completed_late > 0 && t.dropped > 0, "{t:?}");
    assert!((t.mean_accuracy - composed).abs() < 1e-12, "{t:?}");
    let on_time = (t.completed - t.completed_late) as f64;
    let expected = composed * on_time / t.requests as f64;
    assert!((t.on_time_accuracy - expected).abs() < 1e-12, "{t:?}");
    assert!((t.on_time_accuracy_sum - composed * on_time).abs() < 1e-9);
    assert!(t.on_time_accuracy < t.mean_accuracy - 0.05, "{t:?}");
    // The windows add up to the total.
    assert!((window_sum - t.on_time_accuracy_sum).abs() < 1e-9);
}

#[test]
fn on_time_accuracy_is_zero_without_arrivals() {
    let p = fixed_pipeline(10.0, 0.0);
    let mut sim = HostSim::new(&p, &single("s", "v", 1, 1), SimConfig::default()).expect("sim");
    sim.step_seconds(&[0.0; 5]);
    let t = sim.totals();
    assert_eq!((t.requests, t.on_time_accuracy), (0, 0.0));
}

fn stage_plan(
    variant: usize,
    batch: u32,
    cores: u32,
    replicas: u32,
) -> Vec<infadapt_model::Assignment> {
    let names = ["a-fast", "a-slow"];
    vec![assignment(names[variant], batch, cores, replicas, 1.0)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_two_plans_see_the_same_arrivals_and_on_time_is_bounded(
        seed in any::<u64>(),
        first in (0usize..2, 1u32..9, 1u32..4, 1u32..30, 1u32..30),
        second in (0usize..2, 1u32..9, 1u32..4, 1u32..30, 1u32..30),
        load in proptest::collection::vec(0.0f64..600.0, 1..40),
    ) {
        let p = noisy_pipeline();
        let build = |(v, batch, cores, a, b): (usize, u32, u32, u32, u32)| {
            plan(&[("a", stage_plan(v, batch, cores, a)), ("b", vec![assignment("b1", 1, 1, b, 1.0)])])
        };
        let config = SimConfig { seed, max_queue_len: 300, ..SimConfig::default() };
        let mut one = HostSim::new(&p, &build(first), config.clone()).expect("sim");
        let mut two = HostSim::new(&p, &build(second), config).expect("sim");
        one.step_seconds(&load);
        two.step_seconds(&load);
        prop_assert_eq!(one.observe().arrivals_per_second, two.observe().arrivals_per_second);
        for t in [one.totals(), two.totals()] {
            prop_assert_eq!(t.requests, one.totals().requests);
            prop_assert!(t.on_time_accuracy.is_finite() && t.on_time_accuracy >= 0.0);
            if t.requests > 0 {
                let bound = t.mean_accuracy * t.completed as f64 / t.requests as f64;
                prop_assert!(t.on_time_accuracy <= bound + 1e-12, "{:?}", t);
            } else {
                prop_assert_eq!(t.on_time_accuracy, 0.0);
            }
        }
    }
}
