//! One loop, two clocks: the same seed, load and settings through the evaluation harness
//! (`simulate --policy infadapt`) and through the daemon's own pipeline task on the linked
//! simulated backend, in virtual time, give the same decisions, tick for tick, and the same
//! fast-path decisions between ticks (the harness pulses every second, the daemon wakes
//! every `check_s` = 1 s), in the same order at the same times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infadapt_control::{ControlConfig, ControlLoop, Decision, Observation, Policy, Pulse};
use infadapt_eval::{LoopSettings, RunOptions, Scenario, run_policy};
use infadapt_model::Plan;
use infadapt_sim::SimConfig;
use infadaptd::config::{PipelineConfig, parse_config};
use infadaptd::plugin_host::PluginHost;
use infadaptd::problem_file::read_catalog;
use infadaptd::service::pipeline::{TaskOptions, run_pipeline};
use infadaptd::service::sim_backend::SimSettings;
use infadaptd::service::status::{DecisionRecord, Registry};
use tokio::sync::{mpsc, watch};

/// Control periods compared: one simulated day of the diurnal load below (5-s period).
const TICKS: u64 = 120;

/// The diurnal load of the tick-for-tick test: a 600-s day from 15 to 130 rps.
const DIURNAL: &str = "trough_rps = 15\npeak_rps = 130\nday_s = 600";

/// A load with bursts of two to four times the rate every few minutes: the fast path fires.
const BURSTY: &str = "trough_rps = 20\npeak_rps = 60\nday_s = 600\nbursts_per_hour = 30";

/// A daemon configuration on the shipped ResNet catalog and the linked simulator: a
/// 600-s day from 15 to 130 rps on 20 cores, so the loop scales up, switches variants and
/// scales down again. The 5-s period is shorter than every variant's cold start (6.4 to
/// 8.5 s), so the loop decides while changes are starting, when the plan in force and the
/// ready replicas differ. The MILP's time limit is wall time: where it binds, the answer
/// depends on the machine's speed, so it is set where it does not. No warm-up: both sides
/// start from the loop's initial plan.
fn daemon_pipeline(seed: u64, load: &str) -> PipelineConfig {
    let text = format!(
        r#"
[daemon]
period_s = 5

[[pipeline]]
name = "resnet"
catalog = "catalogs/resnet-synthetic.toml"
slo_ms = 750
initial_load_rps = 20

[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
batch_sizes = [1]
core_options = [1, 2, 4, 8]
max_replicas = 20

[pipeline.weights]
alpha = 1.0
beta_per_core = 0.0025
gamma_per_cold_start_s = 0.0001

[pipeline.limits]
total_cores = 20

[pipeline.solver]
allow_mix = true
time_limit_ms = 60000

[pipeline.forecast]
model = "max"
smoothing_s = 3

[pipeline.damping]
stabilization_window_s = 60
min_dwell_s = 60

[pipeline.backend]
type = "sim"
seed = {seed}
{load}
"#
    );
    let base = crate::support::repo_root().join("etc");
    let config = parse_config("one-loop.toml", &text, &base, &mut |reference: &str| {
        read_catalog(&base.join(reference))
    })
    .unwrap_or_else(|d| panic!("{d}"));
    config.pipelines.into_iter().next().expect("one pipeline")
}

/// The daemon's decisions: its real pipeline task, accelerated (the loop clock is the
/// tick count times the period, the simulator moves one period per tick).
fn daemon_decisions(config: PipelineConfig) -> Vec<DecisionRecord> {
    run_task(config, PluginHost::new(Vec::new(), None), false, TICKS).0
}

/// Runs the daemon's pipeline task for `config` in virtual time (1000× speed) for
/// `max_ticks` ticks, with plugins from `plugins`, live or as a dry run; returns every
/// decision it recorded and the status registry it wrote.
pub(crate) fn run_task(
    config: PipelineConfig,
    plugins: PluginHost,
    dry_run: bool,
    max_ticks: u64,
) -> (Vec<DecisionRecord>, Registry) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&records);
    let options = TaskOptions {
        dry_run,
        state_dir: None,
        backend_timeout: Duration::from_secs(60),
        plugins: Arc::new(plugins),
        speed: 1000.0,
        on_decision: Some(Arc::new(move |r: &DecisionRecord| {
            sink.lock().expect("records").push(r.clone());
        })),
        max_ticks: Some(max_ticks),
    };
    let registry = Registry::new(16);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let task_registry = registry.clone();
    runtime.block_on(async move {
        let (_stop, stopped) = watch::channel(false);
        let (_reconfigure, reconfigured) = mpsc::unbounded_channel();
        run_pipeline(config, options, task_registry, stopped, reconfigured).await;
    });
    let records = records.lock().expect("records").clone();
    (records, registry)
}

/// The control loop, keeping every decision it makes.
struct Recorded {
    inner: ControlLoop,
    decisions: Vec<Decision>,
}

impl Policy for Recorded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn interval_s(&self) -> f64 {
        self.inner.interval_s()
    }
    fn initial_plan(&self) -> Plan {
        self.inner.initial_plan()
    }
    fn decide(&mut self, observation: &Observation) -> Decision {
        let decision = self.inner.decide(observation);
        self.decisions.push(decision.clone());
        decision
    }
    fn react(&mut self, pulse: &Pulse) -> Option<Decision> {
        let decision = self.inner.react(pulse)?;
        self.decisions.push(decision.clone());
        Some(decision)
    }
}

/// How the `infadapt` policy of `simulate` configures the loop for a scenario.
fn infadapt_config(scenario: &Scenario, mean_rps: f64) -> ControlConfig {
    let mut config = ControlConfig::new(scenario.problem.clone());
    scenario.loop_settings.apply_to(&mut config);
    config.problem.load_rps = mean_rps;
    config.initial_plan = scenario.initial.clone();
    config
}

fn variants(plan: &Plan) -> Vec<String> {
    plan.stages[0]
        .assignments
        .iter()
        .filter(|a| a.replicas > 0)
        .map(|a| a.variant.clone())
        .collect()
}

fn replicas(plan: &Plan) -> u32 {
    plan.stages[0].assignments.iter().map(|a| a.replicas).sum()
}

/// Runs `config` through the harness (as `simulate --policy infadapt` does) and through the
/// daemon's pipeline task for [`TICKS`] periods, checks that both take the same decisions
/// (ticks and fast-path decisions, in order, at the same times) and returns them.
fn same_decisions(config: PipelineConfig, label: &str) -> Vec<Decision> {
    let period = config.control.interval_s;
    // The daemon starts from the loop's initial plan; the scenario starts there too.
    let start = ControlLoop::new(config.control.clone())
        .expect("loop")
        .initial_plan();
    let settings = SimSettings::from_json(&config.backend.settings).expect("settings");
    let workload = settings
        .workload((TICKS as f64 * period) as usize)
        .expect("workload");
    let scenario = Scenario {
        name: "one-loop".to_owned(),
        problem: config.control.problem.clone(),
        initial: Some(start),
        sim: SimConfig::with_seed(settings.seed),
        warmup_s: 0,
        loop_settings: LoopSettings::from(&config.control),
    };
    let mean = workload.iter().sum::<f64>() / workload.len() as f64;
    let harness_config = infadapt_config(&scenario, mean);
    // The daemon's keys and the scenario configure the same loop (the load the initial
    // plan is sized for aside: the plan itself is given).
    let mut expected = config.control.clone();
    expected.problem.load_rps = mean;
    expected.initial_plan = scenario.initial.clone();
    assert_eq!(harness_config, expected);

    let mut recorded = Recorded {
        inner: ControlLoop::new(harness_config).expect("loop"),
        decisions: Vec::new(),
    };
    let options = RunOptions {
        sim: scenario.sim.clone(),
        warmup_s: 0,
        ..RunOptions::default()
    };
    let report = run_policy(
        &mut recorded,
        &scenario.problem.pipeline,
        &workload,
        &options,
        None,
    )
    .expect("harness run");
    // `simulate --policy infadapt` builds that very loop: same timeline.
    let simulated =
        infadapt_eval::evaluate("infadapt", &scenario, &workload, true, None).expect("simulate");
    assert_eq!(simulated.timeline.len(), report.timeline.len(), "{label}");
    for (point, expected) in simulated.timeline.iter().zip(&report.timeline) {
        assert_eq!(point, expected, "{label}: simulate and the loop differ");
    }
    assert_eq!(report.timeline.len(), recorded.decisions.len(), "{label}");

    let daemon = daemon_decisions(config);
    let mut ticks = 0u64;
    for (k, (harness, daemon)) in recorded.decisions.iter().zip(&daemon).enumerate() {
        assert_eq!(
            harness, &daemon.decision,
            "{label}: decision {k} at {} s differs",
            harness.time_s
        );
        assert_eq!(daemon.fast_path, harness.fast_path.is_some(), "{label}");
        if daemon.fast_path {
            // Between ticks, at a whole second of the loop clock.
            assert_eq!(daemon.tick, ticks, "{label}");
            let t = daemon.decision.time_s;
            assert!(t > period * ticks as f64 && t < period * (ticks + 1) as f64);
            assert_eq!(t, t.round(), "{label}");
        } else {
            ticks += 1;
            assert_eq!(daemon.tick, ticks, "{label}");
            assert_eq!(daemon.decision.time_s, period * ticks as f64, "{label}");
        }
        let point = &report.timeline[k];
        assert_eq!(point.time_s, harness.time_s);
        assert_eq!(point.fast_path, harness.fast_path);
        assert_eq!(
            point.changed,
            daemon.applied && !daemon.apply_actions.is_empty(),
            "{label}: decision {k}"
        );
    }
    assert_eq!(daemon.len(), recorded.decisions.len(), "{label}");
    assert_eq!(ticks, TICKS, "{label}: ticks without a decision");
    recorded.decisions
}

#[test]
fn daemon_and_simulate_decide_the_same_on_the_same_seed() {
    for seed in [1, 2] {
        let label = format!("seed {seed}");
        let decisions = same_decisions(daemon_pipeline(seed, DIURNAL), &label);
        let ticks: Vec<&Decision> = decisions.iter().filter(|d| d.fast_path.is_none()).collect();
        assert_eq!(ticks.len() as u64, TICKS, "{label}");
        // The sequence exercises the loop: it scales up and down and switches variants.
        let plans: Vec<&Plan> = decisions.iter().map(|d| &d.plan).collect();
        let pairs = || plans.windows(2);
        assert!(
            pairs().any(|w| replicas(w[1]) > replicas(w[0])),
            "{label}: no scale-up"
        );
        assert!(
            pairs().any(|w| replicas(w[1]) < replicas(w[0])),
            "{label}: no scale-down"
        );
        assert!(
            pairs().any(|w| variants(w[1]) != variants(w[0])),
            "{label}: no variant switch"
        );
    }
}

#[test]
fn fast_path_decisions_between_ticks_are_the_same_through_both() {
    let decisions = same_decisions(daemon_pipeline(3, BURSTY), "bursty");
    let fast: Vec<&Decision> = decisions.iter().filter(|d| d.fast_path.is_some()).collect();
    assert!(!fast.is_empty(), "the fast path never fired");
    // A fast-path decision adds capacity at once.
    assert!(fast.iter().all(|d| d.error.is_none()));
}
