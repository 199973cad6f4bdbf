//! Property tests: for random small pipelines, plans, rates and applies, the simulator never
//! panics, its totals are finite and requests are conserved.

mod common;

use common::*;
use infadapt_model::{Pipeline, Plan};
use infadapt_sim::{HostSim, SimConfig};
use proptest::prelude::*;

/// Rates drawn from ordinary values and the awkward ones.
fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0f64..300.0,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(-5.0),
        1 => Just(f64::INFINITY),
        1 => Just(1.0e12),
    ]
}

#[derive(Debug, Clone)]
struct StageChoice {
    variant: usize,
    batch: u32,
    cores: u32,
    replicas: u32,
}

fn stage_choice() -> impl Strategy<Value = StageChoice> {
    (0usize..2, 1u32..9, 1u32..4, 1u32..4).prop_map(|(variant, batch, cores, replicas)| {
        StageChoice {
            variant,
            batch,
            cores,
            replicas,
        }
    })
}

fn build_pipeline(stages: usize, per_request_ms: f64, load_time_s: f64) -> Pipeline {
    pipeline(
        150.0,
        (0..stages)
            .map(|k| {
                stage(
                    &format!("s{k}"),
                    vec![
                        variant("fast", 0.6, load_time_s, per_request_ms, 1.5),
                        variant("slow", 0.9, load_time_s * 2.0, per_request_ms * 3.0, 2.5),
                    ],
                )
            })
            .collect(),
    )
}

fn build_plan(choices: &[StageChoice]) -> Plan {
    let names = ["fast", "slow"];
    let stages: Vec<(String, Vec<_>)> = choices
        .iter()
        .enumerate()
        .map(|(k, c)| {
            (
                format!("s{k}"),
                vec![assignment(
                    names[c.variant],
                    c.batch,
                    c.cores,
                    c.replicas,
                    1.0,
                )],
            )
        })
        .collect();
    let borrowed: Vec<(&str, Vec<_>)> = stages
        .iter()
        .map(|(n, a)| (n.as_str(), a.clone()))
        .collect();
    plan(&borrowed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn totals_are_finite_and_requests_conserved(
        stages in 1usize..4,
        per_request_ms in 0.5f64..20.0,
        load_time_s in 0.0f64..4.0,
        initial in proptest::collection::vec(stage_choice(), 3),
        later in proptest::collection::vec(stage_choice(), 3),
        rates in proptest::collection::vec(rate(), 1..12),
        apply_at in 0usize..12,
        seed in any::<u64>(),
        max_queue_delay_ms in 0.0f64..50.0,
    ) {
        let p = build_pipeline(stages, per_request_ms, load_time_s);
        let config = SimConfig { seed, max_queue_delay_ms, max_rate_rps: 2000.0, max_queue_len: 500, ..SimConfig::default() };
        let mut sim = HostSim::new(&p, &build_plan(&initial[..stages]), config).expect("valid");
        let odd = rates.iter().filter(|r| r.is_nan() || **r < 0.0).count() as u64;
        let huge = rates.iter().filter(|r| **r > 2000.0).count() as u64;
        for (second, &rate) in rates.iter().enumerate() {
            if second == apply_at {
                let report = sim.apply(&build_plan(&later[..stages])).expect("valid plan");
                prop_assert_eq!(report.stages.len(), stages);
            }
            sim.step_second(rate);
            let t = sim.totals();
            prop_assert_eq!(t.requests, t.completed + t.dropped + t.in_flight);
        }
        let obs = sim.observe();
        prop_assert_eq!(obs.arrivals_per_second.len(), rates.len());
        for _ in 0..30 {
            sim.step_second(0.0);
        }
        let t = sim.totals();
        prop_assert_eq!(t.in_flight, 0, "everything finishes once arrivals stop");
        prop_assert_eq!(t.requests, t.completed + t.dropped);
        prop_assert_eq!((t.invalid_rates, t.clamped_rates), (odd, huge));
        for v in [t.slo_violation_rate, t.p50_latency_ms, t.p99_latency_ms, t.mean_latency_ms, t.mean_accuracy,
                  t.core_seconds, t.gpu_mib_seconds, t.cost_core_hours] {
            prop_assert!(v.is_finite() && v >= 0.0, "{:?}", t);
        }
        prop_assert!(t.slo_violation_rate <= 1.0);
        prop_assert!(t.core_seconds > 0.0);
    }
}

/// A random mix for every stage: both variants or one, shares possibly zero for one of them.
fn mix_plan(stages: usize, seed: &[(u32, u32, u32, u32, f64)]) -> Plan {
    let names: Vec<String> = (0..stages).map(|k| format!("s{k}")).collect();
    let stage_plans: Vec<(&str, Vec<_>)> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (pick, batch, cores, replicas, share) = seed[k];
            let assignments = match pick % 3 {
                0 => vec![assignment("fast", batch, cores, replicas, 1.0)],
                1 => vec![assignment("slow", batch, cores, replicas, 1.0)],
                _ => vec![
                    assignment("fast", batch, cores, replicas, share),
                    assignment("slow", batch.max(2) - 1, cores, replicas, 1.0 - share),
                ],
            };
            (name.as_str(), assignments)
        })
        .collect();
    plan(&stage_plans)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rapid_reconfiguration_keeps_every_request_accounted(
        stages in 1usize..4,
        plans in proptest::collection::vec(
            proptest::collection::vec((0u32..3, 1u32..6, 1u32..3, 1u32..4, 0.0f64..1.0), 3), 2..7),
        gaps in proptest::collection::vec(0usize..4, 6),
        load_time_s in 0.0f64..6.0,
        rate in 0.0f64..250.0,
        seed in any::<u64>(),
    ) {
        let p = build_pipeline(stages, 2.0, load_time_s);
        let config = SimConfig { seed, max_queue_delay_ms: 5.0, ..SimConfig::default() };
        let mut sim = HostSim::new(&p, &mix_plan(stages, &plans[0]), config).expect("valid");
        for (k, seeds) in plans.iter().enumerate().skip(1) {
            for _ in 0..gaps[k - 1] {
                sim.step_second(rate);
            }
            sim.apply(&mix_plan(stages, seeds)).expect("valid plan");
            let t = sim.totals();
            prop_assert_eq!(t.requests, t.completed + t.dropped + t.in_flight);
        }
        for _ in 0..20 {
            sim.step_second(0.0);
        }
        let t = sim.totals();
        prop_assert_eq!((t.in_flight, t.requests), (0, t.completed + t.dropped));
        // Once settled, only the last plan's variants hold replicas.
        let obs = sim.observe();
        for (stage, planned) in obs.stages.iter().zip(&obs.target.stages) {
            for v in &stage.variants {
                let in_plan = planned.assignment(&v.variant).is_some();
                let replicas: u32 = v.pools.iter().map(|p| p.ready + p.starting).sum();
                prop_assert!(in_plan || replicas == 0, "{:?} still holds replicas", v);
                if let Some(a) = planned.assignment(&v.variant) {
                    prop_assert_eq!(replicas, a.replicas, "{:?}", v);
                }
            }
        }
    }
}
