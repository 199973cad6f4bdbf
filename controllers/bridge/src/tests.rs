//! Tests of the conversions, on plans drawn at random and on a simulated host.

use infadapt_model::{Pipeline, Variant};
use infadapt_sim::{HostSim, SimConfig};
use infadapt_testkit::{pipeline as pipeline_of, point, single_plan, stage};
use proptest::prelude::*;

use super::*;

fn variant(name: &str, load_time_s: f64) -> Variant {
    infadapt_testkit::variant(
        name,
        0.8,
        load_time_s,
        vec![point(1, 1, Some(30.0), Some(20.0), None)],
    )
}

fn pipeline() -> Pipeline {
    pipeline_of(
        "p",
        500.0,
        vec![stage(
            "s",
            vec![variant("small", 5.0), variant("big", 5.0)],
            &[1],
            &[1],
            8,
        )],
    )
}

fn plan(variant: &str, replicas: u32) -> Plan {
    single_plan("s", variant, 1, 1, replicas)
}

fn assignment() -> impl Strategy<Value = Assignment> {
    ("[a-z]{1,6}", 1u32..64, 1u32..16, 0u32..32, 0.0f64..=1.0).prop_map(
        |(variant, batch, cores, replicas, share)| Assignment {
            variant,
            batch,
            cores,
            replicas,
            share,
        },
    )
}

proptest! {
    #[test]
    fn plans_round_trip_through_messages(
        stages in prop::collection::vec(
            ("[a-z]{1,6}", prop::collection::vec(assignment(), 0..4)),
            0..4,
        )
    ) {
        let plan = Plan {
            stages: stages
                .into_iter()
                .map(|(stage, assignments)| StagePlan { stage, assignments })
                .collect(),
        };
        let message = plan_to_message(&plan);
        prop_assert_eq!(message.schema, SCHEMA_VERSION);
        prop_assert_eq!(plan_from_message(&message), plan);
    }
}

#[test]
fn a_cold_start_is_reported_as_ready_replicas_but_seen_as_the_plan_in_force() {
    let pipeline = pipeline();
    let mut sim = HostSim::new(&pipeline, &plan("small", 2), SimConfig::with_seed(3)).unwrap();
    for _ in 0..4 {
        sim.step_second(30.0);
    }
    sim.apply(&plan("small", 4)).unwrap();
    for _ in 0..2 {
        sim.step_second(30.0);
    }
    let seen = sim.observe();
    let message = sim_observation_message(&seen);
    // Two replicas still start: the backend reports the two that serve.
    assert_eq!(plan_from_message(&message.deployed), plan("small", 2));
    assert_eq!(message.stages[0].ready_replicas, 2);
    assert_eq!(message.stages[0].starting_replicas, 2);
    // The loop sees the four replicas in force, their readiness in the stages.
    let observation = observation_from_sim(&seen, 100.0);
    assert_eq!(observation.deployed, plan("small", 4));
    assert_eq!(observation.stages[0].starting_replicas, 2);
    assert_eq!(observation.time_s, seen.time_s + 100.0);
    assert_eq!(observation.window_s, 6.0);
    assert_eq!(observation.arrivals_per_second.len(), 6);
    let arrivals: f64 = observation.arrivals_per_second.iter().sum();
    assert_eq!(arrivals, seen.arrivals as f64);
}

#[test]
fn an_overloaded_host_reports_drops_as_slo_misses() {
    let pipeline = pipeline();
    let mut config = SimConfig::with_seed(5);
    config.max_queue_delay_ms = 50.0;
    let mut sim = HostSim::new(&pipeline, &plan("small", 1), config).unwrap();
    for _ in 0..20 {
        sim.step_second(200.0);
    }
    let seen = sim.observe();
    assert!(seen.dropped > 0, "{seen:?}");
    let observation = observation_from_sim(&seen, 0.0);
    assert_eq!(observation.dropped, seen.dropped);
    assert_eq!(observation.slo_misses, seen.slo_misses + seen.dropped);
    assert_eq!(observation.completed, seen.completed);
    assert_eq!(observation.latency_p99_ms, seen.latency_p99_ms);
}

#[test]
fn per_second_reports_merge_into_the_report_of_the_whole_period() {
    let pipeline = pipeline();
    let start = plan("small", 1);
    let rates = [3.0, 9.0, 1.0, 40.0, 7.0];
    let mut whole = HostSim::new(&pipeline, &start, SimConfig::with_seed(4)).unwrap();
    let mut split = HostSim::new(&pipeline, &start, SimConfig::with_seed(4)).unwrap();
    whole.step_seconds(&rates);
    let mut parts = Vec::new();
    for &rate in &rates {
        split.step_second(rate);
        let pulse = pulse_from_sim(&split.pulse(), 0.0);
        let part = sim_observation_message(&split.observe());
        // The fast path reads the same second from either source.
        let from_plugin = pulse_from_plugin(&part, pulse.time_s, &pulse.deployed);
        assert_eq!(pulse, from_plugin);
        parts.push(part);
    }
    let once = sim_observation_message(&whole.observe());
    let merged = merge_observations(&parts).unwrap();
    assert_eq!(merged.arrivals_per_second, once.arrivals_per_second);
    assert_eq!(merged.completed, once.completed);
    assert_eq!(merged.dropped, once.dropped);
    assert_eq!(merged.slo_misses, once.slo_misses);
    assert_eq!(merged.deployed, once.deployed);
    for (m, o) in merged.stages.iter().zip(&once.stages) {
        assert_eq!(m.queue_len, o.queue_len);
        assert_eq!(m.ready_replicas, o.ready_replicas);
        assert_eq!(m.starting_replicas, o.starting_replicas);
    }
    assert!(merged.latency_p99_ms >= once.latency_p99_ms);
    assert_eq!(merge_observations(&[]), None);
}

#[test]
fn reports_that_make_no_sense_are_made_fit_and_every_change_named() {
    let message = PluginObservation {
        arrivals_per_second: vec![10.0, -3.0, f64::NAN, f64::INFINITY, 5.0],
        latency_p99_ms: Some(-1.0),
        stages: vec![infadapt_plugin_abi::ObservedStage {
            stage: "s".to_owned(),
            queue_len: f64::NEG_INFINITY,
            busy_fraction: 7.0,
            ready_replicas: 1,
            starting_replicas: 0,
        }],
        ..PluginObservation::default()
    };
    let (clean, problems) = crate::sanitise_observation(&message);
    assert_eq!(clean.arrivals_per_second, vec![10.0, 0.0, 0.0, 0.0, 5.0]);
    assert_eq!(clean.latency_p99_ms, None);
    assert_eq!(clean.stages[0].queue_len, 0.0);
    assert_eq!(clean.stages[0].busy_fraction, 1.0);
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(
        problems[0].contains("arrivals_per_second[1] = -3"),
        "{problems:?}"
    );
    let sane = PluginObservation {
        arrivals_per_second: vec![1.0, 2.0],
        latency_p99_ms: Some(120.0),
        ..PluginObservation::default()
    };
    let (same, none) = crate::sanitise_observation(&sane);
    assert_eq!(same, sane);
    assert!(none.is_empty());
}

#[test]
fn a_placement_travels_in_the_plan_message_and_back() {
    let placed = vec![
        Placement {
            stage: "s".into(),
            variant: "small".into(),
            node: "n1".into(),
            replicas: 2,
        },
        Placement {
            stage: "s".into(),
            variant: "small".into(),
            node: "n2".into(),
            replicas: 1,
        },
    ];
    let message = placed_plan_to_message(&plan("small", 3), &placed);
    assert_eq!(plan_from_message(&message), plan("small", 3));
    assert_eq!(message.placement.len(), 2);
    assert_eq!(
        (
            message.placement[1].node.as_str(),
            message.placement[1].replicas
        ),
        ("n2", 1)
    );
    assert_eq!(placement_from_message(&message.placement), placed);
    // A plan for one host carries none (and the message then writes none).
    assert!(plan_to_message(&plan("small", 3)).placement.is_empty());
}

#[test]
fn nodes_offer_their_free_and_owned_resources_alive_ones_only_and_the_running_placement_passes() {
    let node = |id: &str, alive: bool, cpus_free: f64, cpus_owned: f64| NodeMessage {
        id: id.into(),
        name: String::new(),
        alive,
        cpus: 16.0,
        cpus_free,
        cpus_owned,
        gpus: 2.0,
        gpus_free: 1.0,
        gpus_owned: 0.5,
        memory_free_mb: None,
    };
    let report = PluginObservation {
        schema: SCHEMA_VERSION,
        arrivals_per_second: vec![1.0],
        completed: 0,
        dropped: 0,
        slo_misses: 0,
        latency_p99_ms: None,
        stages: Vec::new(),
        deployed: PlanMessage {
            schema: SCHEMA_VERSION,
            stages: Vec::new(),
            placement: Vec::new(),
        },
        endpoints: Vec::new(),
        nodes: vec![
            node("a", true, 3.0, 2.0),
            node("dead", false, 16.0, 0.0),
            node("garbage", true, f64::NAN, -1.0),
            node("a", true, 9.0, 9.0),
        ],
        placement: vec![PlacementMessage {
            stage: "s".into(),
            variant: "small".into(),
            node: "a".into(),
            replicas: 2,
        }],
    };
    let seen = observation_from_plugin(&report, 10.0, &Plan::default());
    assert_eq!(
        seen.placement,
        vec![Placement {
            stage: "s".into(),
            variant: "small".into(),
            node: "a".into(),
            replicas: 2
        }],
        "where the replicas run reaches the loop"
    );
    assert_eq!(
        seen.nodes,
        vec![
            NodeCapacity {
                id: "a".into(),
                cpus: 5.0,
                gpus: 1.5,
                held_cpus: 2.0,
                held_gpus: 0.5
            },
            NodeCapacity {
                id: "garbage".into(),
                cpus: 0.0,
                gpus: 1.5,
                held_cpus: 0.0,
                held_gpus: 0.5
            },
        ]
    );
    let one_host = PluginObservation {
        nodes: Vec::new(),
        ..report
    };
    assert!(
        observation_from_plugin(&one_host, 10.0, &Plan::default())
            .nodes
            .is_empty()
    );
}
