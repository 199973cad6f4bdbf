//! The policies the evaluation compares, built by name for a scenario.
//!
//! Each baseline's rule, its source in the published code and where ours differs are in
//! docs/evaluation.md ("Policies and the source of their rules"). In short:
//!
//! | name | rule | source |
//! |---|---|---|
//! | `infadapt` | this project's control loop with the scenario's settings | ARCHITECTURE.md |
//! | `ipa` | 10-s decisions; IPA's predictor (ARIMA(1,0,0) refitted every decision on the 10-s maxima of the last 2 minutes, the larger of the next 2 steps; the maximum below 12 chunks); one variant per stage at its base cores ([`planning::ipa_base_allocation`]); replicas at the profiled maximum throughput; latency = batch fill + batch p99, no queueing wait; no damping, feedback or change cost | IPA repository: `optimizer/adapter.py` `Predictor.predict`, `optimizer/models.py` `Task.base_allocations`, `optimizer/optimizer.py` `Optimizer.gurobi_optmizer`; its experiment configs |
//! | `ipa-lstm` ([`IPA_LSTM`]) | `ipa` with a trained LSTM on the same input; an error without a model | `Predictor.predict`, `LSTM_INPUT_SIZE = 12` |
//! | `infadapter` | 30-s decisions; next-60-s peak × 1.1; variant mix on one-stage services; capacity × 0.8; the whole decision skipped while the forecast is not above the load last planned for, up to 4 ticks in a row | InfAdapter repository: `auto_tuner/adapter/main.py` `Adapter.make_decision`; `adapter_settings.json` |
//! | `ms+` | `infadapter` with one variant per stage, chosen again by the same objective at every decision that is not skipped | `auto_tuner/adapter/reconfig.py` `Reconfiguration.reconfig_msp` |
//! | `hpa` | reactive horizontal replica scaling on a 0.7 utilisation target, 10 % tolerance, 300 s scale-down stabilization, fixed variant | the Kubernetes horizontal autoscaler |
//! | `vpa` | cores per replica from the 90th percentile of usage + 15 %, fixed variant and replicas | the Kubernetes vertical autoscaler |
//! | `static-max` | the most accurate variant per stage provisioned for the sizing peak | — |
//! | `static-min` | the cheapest variant per stage provisioned for the sizing mean | — |
//!
//! `infadapt`, `ipa`, `infadapter` and `ms+` are the same [`ControlLoop`] with different
//! settings ([`ControlConfig::ipa`], [`ControlConfig::infadapter`]), so they share the
//! planner and its weights (α, β; γ = 0 for `ipa`) and differ only in the published rules.
//! Where ours departs from the published code: IPA's batch wait is applied to a 0/1
//! variable in its code (ours to the batch size); IPA's per-task SLA is derived from its
//! profiles (ours splits the given SLO in proportion to them); InfAdapter's LSTM needs a
//! trained model, so `infadapter` and `ms+` forecast with ARIMA. The policies in
//! [`PolicyName::sized_from_statistics`] are sized from the warm-up by [`crate::evaluate`], or are
//! oracles (`PolicyReport::oracle`) when sized from the measured window.

pub mod fixed;
pub mod planning;
pub mod reactive;
pub mod vertical;

use infadapt_control::{ControlConfig, ControlLoop, Policy};
use infadapt_forecast::models::ModelKind;

use crate::{EvalError, Scenario, WorkloadStats};
use fixed::StaticPolicy;
use planning::{
    IPA_BASE_THRESHOLD_RPS, cheapest, choices, ipa_base_allocation, most_accurate,
    most_accurate_fitting, plan_at, restrict,
};
use reactive::{Hpa, HpaRules};
use vertical::{Vpa, VpaRules};

/// Every policy the evaluation knows by name: the one registry of policy names. [`build`]
/// matches on it, so a new variant does not compile without its builder; the doc tables
/// (this module's and docs/evaluation.md's) are checked against [`PolicyName::ALL`] by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyName {
    /// This project's control loop with the scenario's settings.
    Infadapt,
    /// IPA's rules with its ARIMA predictor.
    Ipa,
    /// `ipa` with a trained LSTM on the same input; needs a trained model.
    IpaLstm,
    /// InfAdapter's rules: 30-s decisions, variant mix on one-stage services, skip rule.
    Infadapter,
    /// `infadapter` with one variant per stage.
    MsPlus,
    /// Reactive horizontal replica scaling on a utilisation target.
    Hpa,
    /// Cores per replica from a usage percentile.
    Vpa,
    /// The most accurate variant per stage provisioned for the sizing peak.
    StaticMax,
    /// The cheapest variant per stage provisioned for the sizing mean.
    StaticMin,
}

impl PolicyName {
    /// Every policy, ours first, in the order of the doc tables.
    pub const ALL: [Self; 9] = [
        Self::Infadapt,
        Self::Ipa,
        Self::IpaLstm,
        Self::Infadapter,
        Self::MsPlus,
        Self::Hpa,
        Self::Vpa,
        Self::StaticMax,
        Self::StaticMin,
    ];

    /// The policies `all` compares: every one that needs no trained model, in [`Self::ALL`]
    /// order.
    pub const COMPARED: [Self; 8] = {
        let mut out = [Self::Infadapt; 8];
        let (mut from, mut to) = (0, 0);
        while from < Self::ALL.len() {
            if !Self::ALL[from].needs_trained_model() {
                out[to] = Self::ALL[from];
                to += 1;
            }
            from += 1;
        }
        assert!(
            to == out.len(),
            "COMPARED has one slot per policy without a model"
        );
        out
    };

    /// The name on the command line, in reports and in the docs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Infadapt => "infadapt",
            Self::Ipa => "ipa",
            Self::IpaLstm => "ipa-lstm",
            Self::Infadapter => "infadapter",
            Self::MsPlus => "ms+",
            Self::Hpa => "hpa",
            Self::Vpa => "vpa",
            Self::StaticMax => "static-max",
            Self::StaticMin => "static-min",
        }
    }

    /// Whether the policy runs only with a trained model (not part of `all` without one).
    #[must_use]
    pub const fn needs_trained_model(self) -> bool {
        matches!(self, Self::IpaLstm)
    }

    /// Whether the policy is sized from workload statistics rather than by a rule that runs
    /// online: an oracle when the statistics come from the window it is scored on.
    #[must_use]
    pub const fn sized_from_statistics(self) -> bool {
        matches!(
            self,
            Self::Hpa | Self::Vpa | Self::StaticMax | Self::StaticMin
        )
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyName {
    type Err = EvalError;

    fn from_str(name: &str) -> Result<Self, EvalError> {
        Self::ALL
            .into_iter()
            .find(|policy| policy.as_str() == name)
            .ok_or_else(|| EvalError::UnknownPolicy(name.to_owned()))
    }
}

/// The names of [`PolicyName::COMPARED`]: every policy `all` runs without a trained model.
pub const NAMES: [&str; 8] = {
    let mut out = [""; 8];
    let mut i = 0;
    while i < out.len() {
        out[i] = PolicyName::COMPARED[i].as_str();
        i += 1;
    }
    out
};

/// IPA with the LSTM predictor: not in [`NAMES`], as it needs a trained model
/// (`scenario.loop_settings.forecast.lstm`); `ipa` runs the ARIMA predictor.
pub const IPA_LSTM: &str = PolicyName::IpaLstm.as_str();

/// Per stage, the variant and (batch, cores) a fixed-variant policy keeps.
type FixedChoices = (Vec<String>, Vec<(u32, u32)>);

/// The control loop with `config`, boxed.
fn loop_policy(config: ControlConfig) -> Result<Box<dyn Policy>, infadapt_control::ControlError> {
    ControlLoop::new(config).map(|p| Box::new(p) as Box<dyn Policy>)
}

/// Builds the policy `name` for `scenario`; `stats` describe
/// the workload the static and fixed-variant policies are sized from, as an operator would
/// from history ([`crate::evaluate`] passes the warm-up), and the load the loop policies'
/// first plan is sized for when the scenario has no initial plan.
///
/// # Errors
///
/// [`EvalError::Policy`] when the scenario admits no plan for the policy.
pub fn build(
    policy_name: PolicyName,
    scenario: &Scenario,
    stats: &WorkloadStats,
) -> Result<Box<dyn Policy>, EvalError> {
    let name = policy_name.as_str();
    let fail = |problem: String| EvalError::Policy {
        policy: name.to_owned(),
        problem,
    };
    let template = &scenario.problem;
    let pipeline = &template.pipeline;
    let total_cores = template.limits.total_cores;
    let single_stage = pipeline.stages.len() == 1;
    // The fixed-variant policies keep what the most accurate plan carrying the peak uses.
    let fixed = || -> Result<FixedChoices, EvalError> {
        let best =
            most_accurate_fitting(template, stats.peak_rps).map_err(|e| fail(e.to_string()))?;
        Ok(choices(pipeline, &best.plan))
    };
    let policy: Box<dyn Policy> = match policy_name {
        PolicyName::Infadapt => {
            let mut config = ControlConfig::new(template.clone());
            scenario.loop_settings.apply_to(&mut config);
            config.problem.load_rps = stats.mean_rps;
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(|e| fail(e.to_string()))?
        }
        PolicyName::Ipa | PolicyName::IpaLstm => {
            let mut problem = template.clone();
            // Replicas sized at the profiled maximum throughput (no capacity margin).
            problem.utilisation_cap = 1.0;
            problem.load_rps = stats.mean_rps;
            // `allocation_mode: base`: each variant at its base cores.
            problem.pinned_cores = ipa_base_allocation(pipeline, IPA_BASE_THRESHOLD_RPS);
            let mut config = if policy_name == PolicyName::IpaLstm {
                let Some(model) = scenario.loop_settings.forecast.lstm.clone() else {
                    return Err(fail(
                        "needs a trained LSTM model (the scenario's forecast model file); \
                         `ipa` runs IPA's ARIMA predictor without one"
                            .to_owned(),
                    ));
                };
                let mut config = ControlConfig::ipa(problem, ModelKind::IpaLstm);
                config.name = IPA_LSTM.to_owned();
                config.forecast.lstm = Some(model);
                config
            } else {
                ControlConfig::ipa(problem, ModelKind::IpaArima)
            };
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(|e| fail(e.to_string()))?
        }
        PolicyName::Infadapter => {
            let mut problem = template.clone();
            problem.load_rps = stats.mean_rps;
            let mut config = ControlConfig::infadapter(problem, ModelKind::Arima);
            // Capacity × 0.8; mixes only where the planner supports them (one stage).
            config.problem.utilisation_cap = 0.8;
            config.problem.allow_mix = single_stage;
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(|e| fail(e.to_string()))?
        }
        PolicyName::MsPlus => {
            // InfAdapter's loop with one variant: the variant is chosen again by the same
            // objective at every decision that is not skipped.
            let mut problem = template.clone();
            problem.load_rps = stats.mean_rps;
            let mut config = ControlConfig::infadapter(problem, ModelKind::Arima);
            config.name = name.to_owned();
            config.problem.utilisation_cap = 0.8;
            config.problem.allow_mix = false;
            config.initial_plan = scenario.initial.clone();
            loop_policy(config).map_err(|e| fail(e.to_string()))?
        }
        PolicyName::Hpa => {
            let (variants, points) = fixed()?;
            let fixed_pipeline = restrict(pipeline, &variants, Some(&points));
            let initial = plan_at(template, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(Hpa::new(
                HpaRules::default(),
                fixed_pipeline,
                initial,
                total_cores,
            ))
        }
        PolicyName::Vpa => {
            let (variants, points) = fixed()?;
            let mut fixed_pipeline = restrict(pipeline, &variants, None);
            for (stage, &(batch, _)) in fixed_pipeline.stages.iter_mut().zip(&points) {
                stage.batch_sizes = vec![batch];
            }
            let initial = plan_at(template, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(Vpa::new(
                VpaRules::default(),
                fixed_pipeline,
                initial,
                total_cores,
            ))
        }
        PolicyName::StaticMax => {
            let fixed_pipeline = restrict(pipeline, &most_accurate(pipeline), None);
            let mut problem = template.clone();
            problem.allow_mix = false;
            let plan = plan_at(&problem, &fixed_pipeline, stats.peak_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(StaticPolicy::new(name, plan, stats.peak_rps))
        }
        PolicyName::StaticMin => {
            let fixed_pipeline = restrict(pipeline, &cheapest(pipeline), None);
            let mut problem = template.clone();
            problem.allow_mix = false;
            let plan = plan_at(&problem, &fixed_pipeline, stats.mean_rps)
                .map_err(|e| fail(e.to_string()))?
                .plan;
            Box::new(StaticPolicy::new(name, plan, stats.mean_rps))
        }
    };
    Ok(policy)
}

#[cfg(test)]
pub(crate) mod tests {
    use infadapt_control::{Observation, StageObservation};
    use infadapt_model::{Pipeline, Plan, Variant};
    use infadapt_testkit::{pipeline as pipeline_of, point, single_plan, stage};

    /// A variant whose replica serves `per_core` requests/s per core at batch 1.
    pub fn variant(name: &str, accuracy: f64, per_core: f64) -> Variant {
        let points = [1u32, 2, 4, 8]
            .iter()
            .map(|&c| {
                let rps = per_core * f64::from(c);
                point(1, c, Some(1500.0 / rps), Some(1000.0 / rps), Some(rps))
            })
            .collect();
        infadapt_testkit::variant(name, accuracy, 2.0, points)
    }

    /// A one-stage pipeline (variants `small` and `big`) and a plan of `replicas` × 4 cores
    /// of `small`.
    pub fn one_stage(replicas: u32) -> (Pipeline, Plan) {
        let pipeline = pipeline_of(
            "p",
            1000.0,
            vec![stage(
                "s",
                vec![variant("small", 0.7, 10.0), variant("big", 0.8, 4.0)],
                &[1],
                &[1, 2, 4, 8],
                32,
            )],
        );
        (pipeline, single_plan("s", "small", 1, 4, replicas))
    }

    /// An observation of stage `s` at `busy` with `plan` deployed.
    pub fn observation(time_s: f64, busy: f64, plan: &Plan) -> Observation {
        Observation {
            time_s,
            window_s: 15.0,
            arrivals_per_second: vec![10.0; 15],
            stages: vec![StageObservation {
                stage: "s".into(),
                busy_fraction: busy,
                ready_replicas: plan.stages[0].assignments[0].replicas,
                ..StageObservation::default()
            }],
            deployed: plan.clone(),
            ..Observation::default()
        }
    }
}

#[cfg(test)]
mod build_tests {
    use infadapt_control::Observation;
    use infadapt_model::Plan;
    use infadapt_planner::Problem;
    use infadapt_sim::SimConfig;

    use super::planning::{IPA_BASE_THRESHOLD_RPS, ipa_base_allocation};
    use super::tests::{observation, one_stage, variant};
    use super::*;
    use crate::LoopSettings;

    fn scenario(total_cores: Option<u32>) -> Scenario {
        let (pipeline, _) = one_stage(1);
        let mut problem = Problem::new(pipeline, 0.0);
        problem.limits.total_cores = total_cores;
        Scenario {
            name: "t".into(),
            problem,
            initial: None,
            sim: SimConfig::with_seed(1),
            warmup_s: 0,
            loop_settings: LoopSettings::default(),
        }
    }

    fn stats(rps: f64) -> WorkloadStats {
        WorkloadStats::of(&[rps; 10])
    }

    /// An observation of `seconds` seconds at `rps` ending at `time_s`.
    fn at(time_s: f64, seconds: usize, rps: f64, plan: &Plan) -> Observation {
        let mut o = observation(time_s, 0.5, plan);
        o.window_s = seconds as f64;
        o.arrivals_per_second = vec![rps; seconds];
        o
    }

    #[test]
    fn ipa_base_allocation_follows_the_published_walk() {
        let (mut pipeline, _) = one_stage(1);
        // One stage: its share is the whole SLO. small (10 rps/core, p99 150 ms/core) meets
        // 200 ms and 4 rps on 1 core; big (4 rps/core, p99 375 ms/core) needs 2.
        pipeline.slo_ms = 200.0;
        let pins = ipa_base_allocation(&pipeline, IPA_BASE_THRESHOLD_RPS);
        let cores = |name: &str| pins.iter().find(|p| p.variant == name).map(|p| p.cores);
        assert_eq!((cores("small"), cores("big")), (Some(1), Some(2)));
        // A higher threshold (25 rps) needs 4 cores of small; big then walks up to 8.
        let pins = ipa_base_allocation(&pipeline, 25.0);
        let cores = |name: &str| pins.iter().find(|p| p.variant == name).map(|p| p.cores);
        assert_eq!((cores("small"), cores("big")), (Some(4), Some(8)));
        // The walk never goes down: a more accurate variant that would meet the threshold
        // on 1 core keeps the 2 cores the less accurate one before it needed.
        pipeline.stages[0].variants = vec![variant("slow", 0.6, 4.0), variant("fast", 0.7, 10.0)];
        let pins = ipa_base_allocation(&pipeline, IPA_BASE_THRESHOLD_RPS);
        let cores = |name: &str| pins.iter().find(|p| p.variant == name).map(|p| p.cores);
        assert_eq!((cores("slow"), cores("fast")), (Some(2), Some(2)));
    }

    #[test]
    fn ipa_plans_only_the_base_cores() {
        let scenario = scenario(None);
        let mut policy = build(PolicyName::Ipa, &scenario, &stats(20.0)).expect("builds");
        let pins = ipa_base_allocation(&scenario.problem.pipeline, IPA_BASE_THRESHOLD_RPS);
        let mut deployed = policy.initial_plan();
        for (tick, rps) in [5.0, 30.0, 80.0, 150.0].into_iter().enumerate() {
            let d = policy.decide(&at(10.0 * (tick + 1) as f64, 10, rps, &deployed));
            assert!(d.error.is_none(), "{:?}", d.error);
            for a in &d.plan.stages[0].assignments {
                let pin = pins
                    .iter()
                    .find(|p| p.variant == a.variant)
                    .expect("pinned");
                assert_eq!(a.cores, pin.cores, "{:?}", d.plan);
            }
            deployed = d.plan;
        }
    }

    #[test]
    fn ms_plus_picks_its_one_variant_again_at_every_decision() {
        // At 20 rps the accurate `big` is worth its cores; at 300 rps it is not.
        let mut policy = build(PolicyName::MsPlus, &scenario(None), &stats(20.0)).expect("builds");
        let mut deployed = policy.initial_plan();
        assert_eq!(deployed.stages[0].assignments[0].variant, "big");
        let mut variants = Vec::new();
        for (tick, rps) in [300.0, 300.0, 20.0, 20.0, 20.0, 20.0, 20.0]
            .into_iter()
            .enumerate()
        {
            let d = policy.decide(&at(30.0 * (tick + 1) as f64, 30, rps, &deployed));
            assert!(d.error.is_none(), "{:?}", d.error);
            assert_eq!(d.plan.stages[0].assignments.len(), 1, "one variant");
            deployed = d.plan;
            variants.push(deployed.stages[0].assignments[0].variant.clone());
        }
        assert_eq!(variants[0], "small", "{variants:?}");
        // After the re-plan at tick 0 the load is never above it: InfAdapter's skip rule
        // holds ticks 1-4 (one at 300 rps, three at 20), the fifth re-plans and picks again.
        assert_eq!(variants[4], "small", "{variants:?}");
        assert_eq!(variants[5], "big", "{variants:?}");
    }

    /// The policy names of the table whose header starts with `| name | rule | source`:
    /// the first backticked word of each row whose first cell starts with one (the other
    /// rows, like `base allocation`, describe a rule, not a policy).
    fn table_names(text: &str) -> Vec<String> {
        let mut lines = text
            .lines()
            .map(|line| line.strip_prefix("//!").map_or(line, str::trim_start))
            .skip_while(|line| !line.starts_with("| name | rule | source"));
        assert!(lines.next().is_some(), "no policy table");
        lines
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let first = line.trim_start_matches('|').trim_start();
                let rest = first.strip_prefix('`')?;
                Some(rest[..rest.find('`')?].to_owned())
            })
            .collect()
    }

    #[test]
    fn the_doc_tables_list_exactly_the_registered_policies() {
        let registered: Vec<&str> = PolicyName::ALL.iter().map(|p| p.as_str()).collect();
        for (doc, text) in [
            (
                "controllers/eval/src/policies/mod.rs",
                include_str!("mod.rs"),
            ),
            (
                "docs/evaluation.md",
                include_str!("../../../../docs/evaluation.md"),
            ),
        ] {
            assert_eq!(table_names(text), registered, "the policy table of {doc}");
        }
    }

    #[test]
    fn every_name_parses_back() {
        for policy in PolicyName::ALL {
            assert_eq!(policy.as_str().parse::<PolicyName>().ok(), Some(policy));
        }
        assert_eq!(NAMES.len(), PolicyName::ALL.len() - 1);
        assert!(!NAMES.contains(&IPA_LSTM));
        assert!("nope".parse::<PolicyName>().is_err_and(|e| e.to_string()
            == "unknown policy `nope` (known: infadapt, ipa, infadapter, ms+, hpa, vpa, \
                    static-max, static-min)"));
    }
}
