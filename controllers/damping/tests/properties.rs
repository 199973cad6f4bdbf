//! Stability properties of the damper on virtual time: data-driven cases and property
//! tests over random proposal sequences.

use infadapt_damping::{
    Damper, DampingConfig, DampingInput, SelectPolicy, lead_time_horizon_s, plan_capacity_rps,
    plan_gpu_mem_mb,
};
use infadapt_model::{Pipeline, Plan, Variant};
use infadapt_planner::HostLimits;
use infadapt_testkit::{fixed_rate_variant, pipeline as pipeline_of, single_plan, stage};
use proptest::prelude::*;

const TICK_S: f64 = 10.0;
const CAP: f64 = 0.8;

/// A variant with a fixed throughput per replica (batch 1, 1 core).
fn variant(name: &str, throughput_rps: f64, load_time_s: f64) -> Variant {
    fixed_rate_variant(name, 0.5, load_time_s, 10.0, throughput_rps)
}

/// One stage with a fast (10 rps per replica) and a slow (4 rps) variant; the SLO is so
/// loose that the latency check never binds.
fn pipeline() -> Pipeline {
    static PIPELINE: std::sync::OnceLock<Pipeline> = std::sync::OnceLock::new();
    PIPELINE.get_or_init(build_pipeline).clone()
}

fn build_pipeline() -> Pipeline {
    pipeline_of(
        "p",
        1e9,
        vec![stage(
            "s",
            vec![variant("fast", 10.0, 5.0), variant("slow", 4.0, 15.0)],
            &[1],
            &[1],
            10_000,
        )],
    )
}

fn plan(variant: &str, replicas: u32) -> Plan {
    single_plan("s", variant, 1, 1, replicas)
}

fn capacity(p: &Plan) -> f64 {
    static PIPELINE: std::sync::OnceLock<Pipeline> = std::sync::OnceLock::new();
    plan_capacity_rps(PIPELINE.get_or_init(build_pipeline), p).expect("capacity")
}

fn variant_of(p: &Plan) -> &str {
    &p.stages[0].assignments[0].variant
}

/// One tick: what the planner proposed, for which load, and the observed demand.
#[derive(Debug, Clone)]
struct Tick {
    proposed: Plan,
    planned_load_rps: f64,
    demand_rps: f64,
}

/// A proposal sized by the planner's rule: the fewest replicas that carry `load` at the cap.
fn sized(variant: &str, load: f64) -> Tick {
    let per_replica = if variant == "fast" { 10.0 } else { 4.0 };
    let replicas = ((load / (CAP * per_replica)).ceil() as u32).max(1);
    Tick {
        proposed: plan(variant, replicas),
        planned_load_rps: load,
        demand_rps: load / 1.2,
    }
}

/// Runs the damper over `ticks` (one every 10 s from t = 10) from `initial`; returns the
/// deployed plan after each tick and the reasons given.
fn drive(config: DampingConfig, initial: Plan, ticks: &[Tick]) -> (Vec<Plan>, Vec<Vec<String>>) {
    drive_within(config, HostLimits::default(), initial, ticks)
}

/// [`drive`] on a host with `limits`.
fn drive_within(
    config: DampingConfig,
    limits: HostLimits,
    initial: Plan,
    ticks: &[Tick],
) -> (Vec<Plan>, Vec<Vec<String>>) {
    drive_on(&pipeline(), config, limits, initial, ticks)
}

/// [`drive_within`] for `pipeline` instead of the test pipeline.
fn drive_on(
    pipeline: &Pipeline,
    config: DampingConfig,
    limits: HostLimits,
    initial: Plan,
    ticks: &[Tick],
) -> (Vec<Plan>, Vec<Vec<String>>) {
    let mut damper = Damper::new(config).expect("config");
    let mut deployed = initial;
    let mut plans = Vec::new();
    let mut reasons = Vec::new();
    for (i, tick) in ticks.iter().enumerate() {
        let damped = damper
            .damp(&DampingInput {
                now_s: (i as f64 + 1.0) * TICK_S,
                pipeline,
                proposed: &tick.proposed,
                deployed: &deployed,
                demand_rps: tick.demand_rps,
                planned_load_rps: tick.planned_load_rps,
                utilisation_cap: CAP,
                limits,
            })
            .expect("damp");
        deployed = damped.plan;
        plans.push(deployed.clone());
        reasons.push(damped.held_back);
    }
    (plans, reasons)
}

/// Pairs of ticks `(i, j)`, `j ≤ i + within`, where capacity moved one way at `i` and the
/// other way at `j`.
fn reversals(initial: &Plan, plans: &[Plan], within: usize) -> Vec<(usize, usize)> {
    let mut caps = vec![capacity(initial)];
    caps.extend(plans.iter().map(capacity));
    let moves: Vec<(usize, f64)> = caps
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| ((w[1] - w[0]).abs() > 1e-9).then_some((i, (w[1] - w[0]).signum())))
        .collect();
    moves
        .windows(2)
        .filter(|p| p[0].1 != p[1].1 && p[1].0 - p[0].0 <= within)
        .map(|p| (p[0].0, p[1].0))
        .collect()
}

fn change_ticks(initial: &Plan, plans: &[Plan]) -> Vec<usize> {
    let mut all = vec![initial.clone()];
    all.extend(plans.iter().cloned());
    all.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] != w[1])
        .map(|(i, _)| i)
        .collect()
}

/// Data-driven: (name, initial, ticks, expected replicas after each tick, expected
/// variant after each tick).
#[test]
fn damping_cases() {
    let ups = |n: usize, t: Tick| vec![t; n];
    struct Case {
        name: &'static str,
        initial: Plan,
        ticks: Vec<Tick>,
        replicas: Vec<u32>,
        variants: Vec<&'static str>,
    }
    let mut step_down = ups(1, sized("fast", 80.0));
    step_down.extend(ups(14, sized("fast", 40.0)));
    let mut dwell = vec![sized("slow", 40.0)];
    dwell.extend(ups(13, sized("fast", 40.0)));
    let cases = vec![
        Case {
            name: "scale-up is immediate",
            initial: plan("fast", 5),
            ticks: ups(3, sized("fast", 80.0)),
            replicas: vec![10, 10, 10],
            variants: vec!["fast"; 3],
        },
        Case {
            name: "scale-down waits for the 120 s window, then goes at once",
            initial: plan("fast", 10),
            ticks: step_down,
            // The decrease is first recommended at t = 20; the 80-rps recommendation of
            // t = 10 leaves the window at t = 140 (tick 13). The 5 replicas proposed for
            // 40 rps sit exactly at the cap, so the decrease keeps the 10 % hysteresis
            // headroom: 40 / (0.9 · 0.8 · 10) → 6 replicas.
            replicas: [vec![10; 13], vec![6; 2]].concat(),
            variants: vec!["fast"; 15],
        },
        Case {
            name: "optional increase within the 10 % deadband is ignored",
            initial: plan("fast", 20),
            ticks: vec![Tick {
                proposed: plan("fast", 21),
                planned_load_rps: 100.0,
                demand_rps: 90.0,
            }],
            replicas: vec![20],
            variants: vec!["fast"],
        },
        Case {
            name: "optional increase is step-limited",
            initial: plan("fast", 10),
            ticks: vec![
                Tick {
                    proposed: plan("fast", 30),
                    planned_load_rps: 60.0,
                    demand_rps: 60.0,
                };
                2
            ],
            replicas: vec![18, 26],
            variants: vec!["fast"; 2],
        },
        Case {
            name: "needed increase is never step-limited",
            initial: plan("fast", 10),
            ticks: ups(1, sized("fast", 240.0)),
            replicas: vec![30],
            variants: vec!["fast"],
        },
        Case {
            name: "variant switches respect the dwell time",
            initial: plan("fast", 5),
            // The switch to `slow` at t = 10 (planned for 40 rps: 13 slow replicas) is an
            // increase and goes; the switch back is a decrease, held by the dwell time until
            // t = 130 and by the window until t = 140 (tick 13).
            ticks: dwell,
            replicas: [vec![13; 13], vec![5]].concat(),
            variants: [vec!["slow"; 13], vec!["fast"]].concat(),
        },
        Case {
            name: "never below observed demand even when the proposal is smaller",
            initial: plan("fast", 10),
            ticks: vec![Tick {
                proposed: plan("fast", 2),
                planned_load_rps: 10.0,
                demand_rps: 70.0,
            }],
            replicas: vec![10],
            variants: vec!["fast"],
        },
    ];
    for case in cases {
        let (plans, reasons) = drive(DampingConfig::default(), case.initial.clone(), &case.ticks);
        let replicas: Vec<u32> = plans
            .iter()
            .map(|p| p.stages[0].assignments[0].replicas)
            .collect();
        let variants: Vec<&str> = plans.iter().map(variant_of).collect();
        assert_eq!(
            replicas, case.replicas,
            "{}: replicas (reasons {reasons:?})",
            case.name
        );
        assert_eq!(variants, case.variants, "{}: variants", case.name);
    }
}

#[test]
fn dwell_time_holds_a_second_switch_and_scales_instead() {
    // fast → slow at t = 10 (needed), then at t = 20 the planner wants fast again for a
    // higher load: the switch is held by the dwell time, and `slow` is scaled to carry it.
    let ticks = vec![sized("slow", 60.0), sized("fast", 90.0)];
    let (plans, reasons) = drive(DampingConfig::default(), plan("fast", 2), &ticks);
    assert_eq!(variant_of(&plans[0]), "slow");
    assert_eq!(variant_of(&plans[1]), "slow");
    assert!(capacity(&plans[1]) * CAP >= 90.0);
    assert!(reasons[1][0].contains("dwell"), "{reasons:?}");
}

#[test]
fn a_switch_never_applied_starts_no_dwell_time() {
    // A dry run: the damper lets fast → slow through at t = 10, but the plan in force stays
    // `fast`. At t = 20 the same switch is let through again, not "held by the dwell
    // time", exactly as a live run that had not switched yet would decide.
    let pipeline = pipeline();
    let mut damper = Damper::new(DampingConfig::default()).expect("config");
    let tick = sized("slow", 60.0);
    let damp = |damper: &mut Damper, now_s: f64, deployed: &Plan| {
        damper
            .damp(&DampingInput {
                now_s,
                pipeline: &pipeline,
                proposed: &tick.proposed,
                deployed,
                demand_rps: tick.demand_rps,
                planned_load_rps: tick.planned_load_rps,
                utilisation_cap: CAP,
                limits: HostLimits::default(),
            })
            .expect("damp")
    };
    let deployed = plan("fast", 2);
    for t in [10.0, 20.0, 30.0] {
        let damped = damp(&mut damper, t, &deployed);
        assert_eq!(
            variant_of(&damped.plan),
            "slow",
            "t = {t}: {:?}",
            damped.held_back
        );
        assert!(
            damped.held_back.iter().all(|r| !r.contains("dwell")),
            "t = {t}: {:?}",
            damped.held_back
        );
        assert_eq!(damper.last_switch_s("s"), None);
    }
    // Once the plan in force shows the switch, its dwell time runs from when it was let
    // through (t = 30).
    damp(&mut damper, 40.0, &tick.proposed);
    assert_eq!(damper.last_switch_s("s"), Some(30.0));
}

#[test]
fn holding_the_deployed_plan_does_not_restart_the_window() {
    // fast × 10 deployed; 13 ticks propose 9 replicas for 71 rps (held: 9 replicas leave
    // less than the 10 % headroom for 71 rps), then 3 replicas for 20 rps. The decrease
    // comes at the first tick whose window holds no 71-rps recommendation (t = 260): the
    // holds in between are not recommendations and do not extend the window.
    let mut ticks = vec![
        Tick {
            proposed: plan("fast", 9),
            planned_load_rps: 71.0,
            demand_rps: 60.0,
        };
        13
    ];
    ticks.extend(vec![sized("fast", 20.0); 20]);
    let (plans, reasons) = drive(DampingConfig::default(), plan("fast", 10), &ticks);
    let replicas: Vec<u32> = plans
        .iter()
        .map(|p| p.stages[0].assignments[0].replicas)
        .collect();
    let first_decrease = replicas.iter().position(|&r| r < 10).expect("a decrease");
    assert_eq!(
        (first_decrease + 1) as f64 * TICK_S,
        260.0,
        "{replicas:?} {reasons:?}"
    );
    assert_eq!(replicas[first_decrease], 3);
}

#[test]
fn host_limits_override_the_dwell_time() {
    // As above, but scaling `slow` to carry 90 rps needs 29 cores on a 20-core host: the
    // proposal (12 × fast, within the limit) applies before the dwell time ends.
    let limits = HostLimits {
        total_cores: Some(20),
        gpu_mem_mb: None,
    };
    let ticks = vec![sized("slow", 60.0), sized("fast", 90.0)];
    let (plans, reasons) = drive_within(DampingConfig::default(), limits, plan("fast", 2), &ticks);
    assert_eq!(variant_of(&plans[0]), "slow");
    assert_eq!(plans[1], ticks[1].proposed);
    assert!(plans[1].cores() <= 20);
    assert!(
        reasons[1]
            .iter()
            .any(|r| r.contains("29 cores of the host's 20")),
        "{reasons:?}"
    );
}

#[test]
fn unmeasured_gpu_memory_never_counts_as_fitting_a_gpu_limit() {
    // As above, with `slow`'s GPU memory unmeasured and a GPU limit instead of a core
    // limit: growing `slow` cannot be shown to fit, so the proposal applies.
    let mut pipeline = pipeline();
    pipeline.stages[0].variants[1].gpu_mem_mb = None;
    assert_eq!(
        plan_gpu_mem_mb(&pipeline, &plan("slow", 2)).expect("fits"),
        None
    );
    assert_eq!(
        plan_gpu_mem_mb(&pipeline, &plan("fast", 2)).expect("fits"),
        Some(0.0)
    );
    let limits = HostLimits {
        total_cores: None,
        gpu_mem_mb: Some(1e6),
    };
    let ticks = [sized("slow", 60.0), sized("fast", 90.0)];
    let (plans, reasons) = drive_on(
        &pipeline,
        DampingConfig::default(),
        limits,
        plan("fast", 2),
        &ticks,
    );
    assert_eq!(plans[1], ticks[1].proposed);
    assert!(
        reasons[1].iter().any(|r| r.contains("not measured")),
        "{reasons:?}"
    );
}

#[test]
fn disabled_passes_everything_through() {
    let ticks: Vec<Tick> = [80.0, 10.0, 50.0, 5.0]
        .iter()
        .map(|&l| sized("fast", l))
        .collect();
    let (plans, reasons) = drive(DampingConfig::disabled(), plan("fast", 3), &ticks);
    for (tick, plan) in ticks.iter().zip(&plans) {
        assert_eq!(&tick.proposed, plan);
    }
    assert!(reasons.iter().all(Vec::is_empty));
}

#[test]
fn infadapter_rule_skips_four_decreases() {
    let config = DampingConfig::skip_scale_down(4, TICK_S);
    let mut ticks = vec![sized("fast", 80.0)];
    ticks.extend(vec![sized("fast", 10.0); 6]);
    let (plans, _) = drive(config, plan("fast", 10), &ticks);
    let replicas: Vec<u32> = plans
        .iter()
        .map(|p| p.stages[0].assignments[0].replicas)
        .collect();
    assert_eq!(replicas, vec![10, 10, 10, 10, 10, 2, 2]);
}

#[test]
fn lead_time_covers_interval_and_longest_cold_start() {
    assert_eq!(lead_time_horizon_s(&pipeline(), 10.0), 25.0);
    assert_eq!(lead_time_horizon_s(&pipeline(), f64::NAN), 15.0);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let pipeline = pipeline();
    let mut damper = Damper::new(DampingConfig::default()).unwrap();
    let p = plan("fast", 2);
    let unknown = plan("nope", 2);
    for (now, demand, proposed) in [
        (f64::NAN, 1.0, &p),
        (10.0, -1.0, &p),
        (10.0, f64::INFINITY, &p),
        (10.0, 1.0, &unknown),
    ] {
        let result = damper.damp(&DampingInput {
            now_s: now,
            pipeline: &pipeline,
            proposed,
            deployed: &p,
            demand_rps: demand,
            planned_load_rps: 1.0,
            utilisation_cap: CAP,
            limits: HostLimits::default(),
        });
        assert!(result.is_err());
    }
    let bad = DampingConfig {
        deadband_fraction: 2.0,
        ..DampingConfig::default()
    };
    assert!(Damper::new(bad).is_err());
}

#[test]
fn the_config_serializes_under_its_keys_names() {
    // What a decision record shows of the settings names each field as the configuration
    // file does, and the policy as its key's value.
    let shown = serde_json::to_value(DampingConfig::default()).unwrap();
    let mut fields: Vec<&str> = shown
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys: Vec<&str> = infadapt_damping::DAMPING_KEYS
        .iter()
        .map(|k| k.name)
        .collect();
    fields.sort_unstable();
    keys.sort_unstable();
    assert_eq!(fields, keys);
    assert_eq!(shown["scale_up_select_policy"], "max");
    assert_eq!(
        shown["max_replicas_removed_per_tick"],
        serde_json::Value::Null
    );
}

#[test]
fn rate_policies_combine_like_the_horizontal_autoscaler() {
    let both = |policy| DampingConfig {
        max_replicas_added_per_tick: Some(8),
        max_scale_up_percent: Some(50.0),
        scale_up_select_policy: policy,
        ..DampingConfig::default()
    };
    // 50 % of 10 replicas is 5: `max` takes the 8 of the replica policy, `min` the 5.
    assert_eq!(both(SelectPolicy::Max).scale_up_limit(10), Some(8));
    assert_eq!(both(SelectPolicy::Min).scale_up_limit(10), Some(5));
    // 50 % of 40 is 20, more permissive than 8.
    assert_eq!(both(SelectPolicy::Max).scale_up_limit(40), Some(20));
    // A percentage rounds up and always allows one replica.
    let percent_only = DampingConfig {
        max_replicas_added_per_tick: None,
        max_scale_up_percent: Some(10.0),
        ..DampingConfig::default()
    };
    assert_eq!(percent_only.scale_up_limit(1), Some(1));
    assert_eq!(percent_only.scale_up_limit(11), Some(2));
    assert_eq!(DampingConfig::disabled().scale_up_limit(10), None);
    for bad in [0.0, -5.0, f64::NAN] {
        let config = DampingConfig {
            max_scale_up_percent: Some(bad),
            ..DampingConfig::default()
        };
        assert!(Damper::new(config).is_err(), "{bad}");
    }
}

#[test]
fn a_needed_increase_ignores_the_scale_up_window_and_rate_policies() {
    // Deployed fast × 5 carries 40 rps; the proposal for 240 rps (30 replicas) is needed.
    // The observed demand is still 30 rps, which the deployed plan carries: only the
    // planned load makes the increase needed (the demand floor does not come into it).
    let config = DampingConfig {
        scale_up_stabilization_window_s: 600.0,
        max_replicas_added_per_tick: Some(1),
        max_scale_up_percent: Some(10.0),
        scale_up_select_policy: SelectPolicy::Min,
        ..DampingConfig::default()
    };
    let mut rising = sized("fast", 240.0);
    rising.demand_rps = 30.0;
    let ticks = vec![sized("fast", 20.0), rising];
    let (plans, reasons) = drive(config, plan("fast", 5), &ticks);
    assert_eq!(plans[1], ticks[1].proposed, "{reasons:?}");
    // Let through as needed, not held and then overridden by a guard.
    assert!(reasons[1].is_empty(), "{reasons:?}");
}

#[test]
fn the_scale_up_window_holds_an_optional_increase_until_the_window_asks_for_it() {
    // fast × 10 carries 60 rps; the planner asks for 14 replicas (optional: extra replicas
    // for latency) from t = 20 after 10 at t = 10. With a 30 s window the increase waits
    // until the 10-replica recommendation of t = 10 has left it (t = 50).
    let config = DampingConfig {
        scale_up_stabilization_window_s: 30.0,
        ..DampingConfig::default()
    };
    let optional = |replicas| Tick {
        proposed: plan("fast", replicas),
        planned_load_rps: 60.0,
        demand_rps: 50.0,
    };
    let mut ticks = vec![optional(10)];
    ticks.extend(vec![optional(14); 5]);
    let (plans, reasons) = drive(config, plan("fast", 10), &ticks);
    let replicas: Vec<u32> = plans
        .iter()
        .map(|p| p.stages[0].assignments[0].replicas)
        .collect();
    assert_eq!(replicas, vec![10, 10, 10, 10, 14, 14], "{reasons:?}");
    assert!(
        reasons[1][0].contains("held by the 30 s scale-up stabilization window"),
        "{reasons:?}"
    );
}

#[test]
fn damping_never_keeps_a_stage_below_its_min_replicas() {
    // The minimum was raised to 3 while one replica runs: the proposal of 3 replicas for a
    // light load is an optional change the replica deadband would ignore, but it applies.
    let mut pipeline = pipeline();
    pipeline.stages[0].min_replicas = 3;
    let ticks: Vec<Tick> = (0..3)
        .map(|_| Tick {
            proposed: plan("fast", 3),
            planned_load_rps: 1.0,
            demand_rps: 1.0,
        })
        .collect();
    let (plans, reasons) = drive_on(
        &pipeline,
        DampingConfig {
            deadband_replicas: 5,
            ..DampingConfig::default()
        },
        HostLimits::default(),
        plan("fast", 1),
        &ticks,
    );
    for (i, (tick, plan)) in ticks.iter().zip(&plans).enumerate() {
        assert_eq!(plan, &tick.proposed, "{:?}", reasons[i]);
    }
    assert!(
        reasons[0]
            .iter()
            .any(|r| r.contains("1 replicas would be below its min_replicas of 3")),
        "{:?}",
        reasons[0]
    );
}

/// Settings drawn for the scale-up properties: the rate policies, the select policy and a
/// scale-up window of 0 to 6 ticks.
fn scale_up_config() -> impl Strategy<Value = DampingConfig> {
    (
        prop::option::of(1u32..12),
        prop::option::of(5.0f64..200.0),
        prop::bool::ANY,
        0u32..7,
    )
        .prop_map(|(added, percent, max, window_ticks)| DampingConfig {
            max_replicas_added_per_tick: added,
            max_scale_up_percent: percent,
            scale_up_select_policy: if max {
                SelectPolicy::Max
            } else {
                SelectPolicy::Min
            },
            scale_up_stabilization_window_s: f64::from(window_ticks) * TICK_S,
            ..DampingConfig::default()
        })
}

/// A proposal of any size of the fast variant, not sized to its load: increases are often
/// optional (the deployed plan carries the load).
fn free_tick() -> impl Strategy<Value = Tick> {
    (1u32..60, 1.0f64..200.0, 0.5f64..1.0).prop_map(|(replicas, load, share)| Tick {
        proposed: plan("fast", replicas),
        planned_load_rps: load,
        demand_rps: load * share,
    })
}

fn tick_strategy() -> impl Strategy<Value = Tick> {
    (prop::bool::ANY, 1.0f64..200.0, 0.5f64..1.0).prop_map(|(fast, load, demand_share)| {
        let mut tick = sized(if fast { "fast" } else { "slow" }, load);
        tick.demand_rps = load * demand_share;
        tick
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Never below observed demand, and a needed scale-up is never delayed: the damped
    /// plan always carries max(planned load, demand) within the cap when the proposal does.
    #[test]
    fn carries_demand_and_never_delays_scale_up(ticks in prop::collection::vec(tick_strategy(), 1..40)) {
        let (plans, _) = drive(DampingConfig::default(), plan("fast", 1), &ticks);
        for (tick, damped) in ticks.iter().zip(&plans) {
            let needed = tick.planned_load_rps.max(tick.demand_rps);
            if capacity(&tick.proposed) * CAP >= needed {
                prop_assert!(capacity(damped) * CAP >= needed - 1e-9,
                    "damped {} < needed {}", capacity(damped) * CAP, needed);
            }
            prop_assert!(capacity(damped) * CAP >= tick.demand_rps.min(capacity(&tick.proposed) * CAP) - 1e-9);
        }
    }

    /// With any scale-up window and rate policies, a needed increase still goes at once
    /// and the demand is still carried.
    #[test]
    fn scale_up_knobs_never_delay_a_needed_increase(config in scale_up_config(), ticks in prop::collection::vec(tick_strategy(), 1..40)) {
        let (plans, _) = drive(config, plan("fast", 1), &ticks);
        for (tick, damped) in ticks.iter().zip(&plans) {
            let needed = tick.planned_load_rps.max(tick.demand_rps);
            if capacity(&tick.proposed) * CAP >= needed {
                prop_assert!(capacity(damped) * CAP >= needed - 1e-9,
                    "damped {} < needed {}", capacity(damped) * CAP, needed);
            }
        }
    }

    /// An optional increase adds at most what the rate policies allow per tick.
    #[test]
    fn optional_increases_respect_the_rate_policy(config in scale_up_config(), ticks in prop::collection::vec(free_tick(), 1..40)) {
        let initial = plan("fast", 4);
        let (plans, _) = drive(config.clone(), initial.clone(), &ticks);
        let mut before = initial;
        for (tick, damped) in ticks.iter().zip(&plans) {
            let needed = tick.planned_load_rps.max(tick.demand_rps);
            let optional = capacity(&before) * CAP >= needed;
            let from = u64::from(before.stages[0].assignments[0].replicas);
            let to = u64::from(damped.stages[0].assignments[0].replicas);
            if optional && to > from && let Some(limit) = config.scale_up_limit(from) {
                prop_assert!(to - from <= limit, "{from} → {to} with limit {limit}");
            }
            before = damped.clone();
        }
    }

    /// With a scale-up window (no deadband, dwell or rate limit), an optional increase
    /// goes exactly to the lowest capacity proposed within the window, or holds when that
    /// is no increase; a needed one carries the load.
    #[test]
    fn the_scale_up_window_takes_the_lowest_recent_recommendation(window_ticks in 1u32..7, ticks in prop::collection::vec(prop_oneof![tick_strategy(), free_tick()], 1..40)) {
        let config = DampingConfig {
            scale_up_stabilization_window_s: f64::from(window_ticks) * TICK_S,
            deadband_fraction: 0.0,
            min_dwell_s: 0.0,
            max_replicas_added_per_tick: None,
            ..DampingConfig::default()
        };
        let initial = plan("fast", 4);
        let (plans, reasons) = drive(config, initial.clone(), &ticks);
        let mut before = initial;
        for (i, (tick, damped)) in ticks.iter().zip(&plans).enumerate() {
            let needed = tick.planned_load_rps.max(tick.demand_rps);
            let deployed = capacity(&before);
            if capacity(&tick.proposed) > deployed && deployed * CAP >= needed {
                let lowest = ticks[i.saturating_sub(window_ticks as usize)..=i]
                    .iter()
                    .map(|t| capacity(&t.proposed))
                    .fold(f64::INFINITY, f64::min);
                prop_assert!(
                    (capacity(damped) - deployed.max(lowest)).abs() < 1e-9,
                    "tick {i}: damped {} from {deployed}, lowest recent {lowest}: {:?}",
                    capacity(damped), reasons[i]
                );
            }
            before = damped.clone();
        }
    }

    /// The damped plan fits the host whenever the planner's proposal does.
    #[test]
    fn never_exceeds_the_host_when_the_proposal_fits(ticks in prop::collection::vec(tick_strategy(), 1..40), limit in 1u32..60) {
        let limits = HostLimits { total_cores: Some(limit), gpu_mem_mb: None };
        let (plans, _) = drive_within(DampingConfig::default(), limits, plan("fast", 1), &ticks);
        for (tick, damped) in ticks.iter().zip(&plans) {
            if tick.proposed.cores() <= u64::from(limit) {
                prop_assert!(damped.cores() <= u64::from(limit),
                    "damped {} cores on a {limit}-core host", damped.cores());
            }
        }
    }

    /// An increase is never undone within the stabilization window (12 ticks ≥ 10).
    #[test]
    fn no_decrease_within_the_window_after_an_increase(ticks in prop::collection::vec(tick_strategy(), 1..40)) {
        let initial = plan("fast", 1);
        let (plans, _) = drive(DampingConfig::default(), initial.clone(), &ticks);
        let mut caps = vec![capacity(&initial)];
        caps.extend(plans.iter().map(capacity));
        for i in 1..caps.len() {
            if caps[i] > caps[i - 1] + 1e-9 {
                for j in i + 1..caps.len().min(i + 12) {
                    prop_assert!(caps[j] >= caps[j - 1] - 1e-9,
                        "increase at tick {i} undone at tick {j}: {caps:?}");
                }
            }
        }
    }

    /// Variant switches of a stage are at least `min_dwell_s` apart.
    #[test]
    fn switches_respect_the_dwell_time(ticks in prop::collection::vec(tick_strategy(), 1..40)) {
        let config = DampingConfig::default();
        let dwell_ticks = (config.min_dwell_s / TICK_S) as usize;
        let initial = plan("fast", 1);
        let (plans, _) = drive(config, initial.clone(), &ticks);
        let mut last_switch: Option<usize> = None;
        let mut previous = variant_of(&initial).to_owned();
        for (i, p) in plans.iter().enumerate() {
            if variant_of(p) != previous {
                if let Some(last) = last_switch {
                    prop_assert!(i - last >= dwell_ticks, "switches at {last} and {i}");
                }
                last_switch = Some(i);
                previous = variant_of(p).to_owned();
            }
        }
    }

    /// Constant proposals: no reversal, and at most one change (the first tick, or the
    /// decrease at the end of the window).
    #[test]
    fn constant_load_no_reversal(tick in tick_strategy(), start in 1u32..40, n in 12usize..30) {
        let initial = plan(variant_of(&tick.proposed), start);
        let ticks = vec![tick; n];
        let (plans, _) = drive(DampingConfig::default(), initial.clone(), &ticks);
        prop_assert!(reversals(&initial, &plans, 10).is_empty());
        prop_assert!(change_ticks(&initial, &plans).len() <= 1);
    }

    /// After a step in the load (constant before and after), a step up settles at once
    /// and a step down settles within 2 ticks of the end of the window.
    #[test]
    fn step_settles(variant_fast in prop::bool::ANY, before in 5.0f64..150.0, after in 5.0f64..150.0) {
        let name = if variant_fast { "fast" } else { "slow" };
        let first = sized(name, before);
        let initial = first.proposed.clone();
        let mut ticks = vec![first; 5];
        ticks.extend(vec![sized(name, after); 30]);
        let (plans, _) = drive(DampingConfig::default(), initial.clone(), &ticks);
        let changes = change_ticks(&initial, &plans);
        prop_assert!(reversals(&initial, &plans, 10).is_empty());
        let window_ticks = (DampingConfig::default().stabilization_window_s / TICK_S) as usize;
        let limit = if after >= before { 5 + 2 } else { 5 + window_ticks + 2 };
        prop_assert!(changes.iter().all(|&t| t < limit), "changes {changes:?}, limit {limit}");
    }
}
