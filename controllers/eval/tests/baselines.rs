//! The compared policies as the evaluation builds them: sized from the warm-up when there is
//! enough of it, and labelled oracles when sized from the window they are scored on.

mod support;

use infadapt_eval::{MIN_SIZING_HISTORY_S, Scenario, evaluate};
use infadapt_sim::SimConfig;
use support::{OneStage, one_stage_scenario};

fn scenario(warmup_s: usize) -> Scenario {
    one_stage_scenario(OneStage {
        name: "sizing",
        slo_ms: 800.0,
        p99_over_mean: 1.5,
        load_time_s: 2.0,
        sim: SimConfig::with_seed(3),
        warmup_s,
    })
}

/// `warmup_s` seconds at 20 rps, then 120 measured seconds at 60 rps.
fn workload(warmup_s: usize) -> Vec<f64> {
    let mut rates = vec![20.0; warmup_s];
    rates.extend(std::iter::repeat_n(60.0, 120));
    rates
}

#[test]
fn statistics_come_from_the_warm_up_when_there_is_an_hour_of_it() {
    let warmup = MIN_SIZING_HISTORY_S;
    let report = evaluate(
        "static-max",
        &scenario(warmup),
        &workload(warmup),
        true,
        None,
    )
    .expect("runs");
    assert!(!report.oracle);
    let provisioned = report.timeline[0].provisioned_rps;
    assert_eq!(provisioned, 20.0, "sized from the warm-up peak");
}

#[test]
fn statistics_from_the_measured_window_make_an_oracle() {
    let warmup = 60;
    for name in ["static-max", "static-min", "hpa", "vpa"] {
        let report =
            evaluate(name, &scenario(warmup), &workload(warmup), true, None).expect("runs");
        assert!(report.oracle, "{name}");
        if name == "static-max" {
            assert_eq!(
                report.timeline[0].provisioned_rps, 60.0,
                "the window's peak"
            );
        }
    }
    // The policies that decide online are never oracles.
    for name in ["infadapt", "ipa", "infadapter", "ms+"] {
        let report =
            evaluate(name, &scenario(warmup), &workload(warmup), false, None).expect("runs");
        assert!(!report.oracle, "{name}");
    }
}

#[test]
fn ipa_lstm_without_a_model_says_so() {
    let error = evaluate("ipa-lstm", &scenario(60), &workload(60), false, None)
        .expect_err("no model in the scenario");
    let text = error.to_string();
    assert!(text.contains("LSTM") && text.contains("`ipa`"), "{text}");
}
