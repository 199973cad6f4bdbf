//! One pipeline's control loop as a task: observe through the backend → decide (forecast,
//! plan, damp) → apply unless dry-run → record, every period, until told to stop. A failing
//! backend or planner marks this pipeline degraded and never touches the others.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infadapt_control::{ControlLoop, Decision, Policy};
use infadapt_model::Plan;
use tokio::sync::watch;
use tracing::{Instrument, error, info, info_span, warn};

use super::backend::BackendHandle;
use super::convert::{observation_from_plugin, plan_to_message};
use super::sim_backend::SimBackend;
use super::state::{self, PipelineState, STATE_SCHEMA};
use super::status::{DecisionRecord, Registry};
use crate::config::{PipelineConfig, SIM_BACKEND};

/// Callback for each decision (the demo prints them).
pub type DecisionSink = Arc<dyn Fn(&DecisionRecord) + Send + Sync>;

/// How a pipeline task runs.
#[derive(Clone)]
pub struct TaskOptions {
    pub dry_run: bool,
    /// Where state is kept; `None` keeps none.
    pub state_dir: Option<PathBuf>,
    pub backend_timeout: Duration,
    /// Wall time between ticks divided into the period: 1 in service, more in the demo.
    pub speed: f64,
    pub on_decision: Option<DecisionSink>,
    /// Stop after this many ticks (the demo).
    pub max_ticks: Option<u64>,
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("dry_run", &self.dry_run)
            .field("state_dir", &self.state_dir)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

/// Runs one pipeline until `stop` turns true; persists its state on the way out.
pub async fn run_pipeline(
    config: PipelineConfig,
    options: TaskOptions,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) {
    let name = config.name.clone();
    let span = info_span!("pipeline", pipeline = %name);
    async move {
        registry.update(&name, |s| {
            s.backend = config.backend.kind.clone();
            s.state = "starting".to_owned();
            s.dry_run = options.dry_run;
            s.period_s = config.control.interval_s;
        });
        let mut task = match PipelineTask::start(config, options, registry.clone()).await {
            Ok(task) => task,
            Err(message) => {
                error!(error = %message, "pipeline cannot start; the others keep running");
                registry.update(&name, |s| {
                    s.state = "failed".to_owned();
                    s.last_error = Some(message);
                });
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
        };
        registry.update(&name, |s| s.state = "running".to_owned());
        let period = Duration::from_secs_f64(task.period_s / task.options.speed);
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => true,
                _ = timer.tick() => false,
            };
            if stopping {
                break;
            }
            task.tick().await;
            if task.options.max_ticks.is_some_and(|m| task.ticks >= m) {
                break;
            }
        }
        task.persist().await;
        registry.update(&name, |s| s.state = "stopped".to_owned());
        info!("pipeline stopped");
    }
    .instrument(span)
    .await;
}

struct PipelineTask {
    name: String,
    config: PipelineConfig,
    options: TaskOptions,
    registry: Registry,
    backend: BackendHandle,
    control: Option<ControlLoop>,
    /// The plan the backend was last told to run.
    applied: Plan,
    period_s: f64,
    started: Instant,
    ticks: u64,
}

impl PipelineTask {
    async fn start(
        config: PipelineConfig,
        options: TaskOptions,
        registry: Registry,
    ) -> Result<PipelineTask, String> {
        let name = config.name.clone();
        let pipeline = config.control.problem.pipeline.clone();
        let saved = match &options.state_dir {
            Some(dir) => match state::load(dir, &name) {
                Ok(Some(s)) if state::plan_fits(&s.plan, &pipeline) => Some(s.plan),
                Ok(Some(_)) => {
                    warn!("saved plan does not fit the configured pipeline; ignoring it");
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    warn!(error = %e, "cannot read saved state; starting fresh");
                    None
                }
            },
            None => None,
        };
        let mut control_config = config.control.clone();
        if let Some(plan) = &saved {
            control_config.initial_plan = Some(plan.clone());
        }
        let control = tokio::task::spawn_blocking(move || ControlLoop::new(control_config))
            .await
            .map_err(|_| "building the control loop panicked".to_owned())?
            .map_err(|e| e.to_string())?;
        let start_plan = control.initial_plan();
        let period_s = config.control.interval_s;
        let instance: Box<dyn infadapt_plugin_abi::BackendInstance> =
            if config.backend.kind == SIM_BACKEND {
                let step = period_s.round().max(1.0) as u32;
                Box::new(
                    SimBackend::new(&pipeline, &start_plan, &config.backend.settings, step)
                        .map_err(|e| format!("sim backend: {e}"))?,
                )
            } else {
                return Err(format!(
                    "backend `{}`: loading plugin backends is not available in this build",
                    config.backend.kind
                ));
            };
        let backend = BackendHandle::new(
            config.backend.kind.clone(),
            instance,
            options.backend_timeout,
        );
        let mut task = PipelineTask {
            name,
            config,
            options,
            registry,
            backend,
            control: Some(control),
            applied: start_plan.clone(),
            period_s,
            started: Instant::now(),
            ticks: 0,
        };
        // Startup reconcile: leave a backend alone that already runs the plan.
        match task.backend.call("observe", |b| b.observe()).await {
            Ok(observation) => {
                let deployed = super::convert::message_to_plan(&observation.deployed);
                if deployed == start_plan {
                    let origin = if saved.is_some() { "saved" } else { "initial" };
                    info!(
                        origin,
                        "resumed: the backend already runs the {origin} plan; nothing applied"
                    );
                } else if task.options.dry_run {
                    info!("dry run: the starting plan differs from the backend; not applied");
                    task.applied = deployed;
                } else {
                    task.apply(&start_plan, "startup").await;
                }
            }
            Err(e) => {
                warn!(error = %e, "backend not observable at startup");
                task.registry.update(&task.name, |s| {
                    s.plugin_errors += 1;
                    s.degraded = true;
                    s.last_error = Some(e.to_string());
                });
            }
        }
        let plan = task.applied.clone();
        task.registry.update(&task.name, |s| s.plan = Some(plan));
        Ok(task)
    }

    /// Seconds since start: wall time in service, tick count × period when accelerated.
    fn now_s(&self) -> f64 {
        if self.options.speed > 1.0 {
            self.ticks as f64 * self.period_s
        } else {
            self.started.elapsed().as_secs_f64()
        }
    }

    async fn apply(&mut self, plan: &Plan, reason: &str) -> Option<Vec<String>> {
        let message = plan_to_message(plan);
        match self.backend.call("apply", move |b| b.apply(&message)).await {
            Ok(report) => {
                self.applied = plan.clone();
                if report.changed {
                    info!(reason, actions = ?report.actions, "applied");
                }
                let changed = report.changed;
                let applied = plan.clone();
                self.registry.update(&self.name, |s| {
                    s.plan = Some(applied);
                    s.degraded = false;
                    if changed {
                        s.reconfigurations += 1;
                    }
                });
                self.persist().await;
                Some(report.actions)
            }
            Err(e) => {
                warn!(error = %e, reason, "apply failed; will retry next period");
                self.registry.update(&self.name, |s| {
                    s.plugin_errors += 1;
                    s.degraded = true;
                    s.last_error = Some(e.to_string());
                });
                None
            }
        }
    }

    async fn tick(&mut self) {
        self.ticks += 1;
        let tick = self.ticks;
        let span = info_span!("tick", tick);
        async {
            let observation = match self.backend.call("observe", |b| b.observe()).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(error = %e, "observe failed; keeping the current plan");
                    self.registry.update(&self.name, |s| {
                        s.ticks = tick;
                        s.plugin_errors += 1;
                        s.degraded = true;
                        s.last_error = Some(e.to_string());
                    });
                    return;
                }
            };
            let observation = observation_from_plugin(&observation, self.now_s());
            let Some(mut control) = self.control.take() else {
                return;
            };
            let started = Instant::now();
            let input = observation.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let decision = control.decide(&input);
                (control, decision)
            })
            .await;
            let decide_ms = started.elapsed().as_secs_f64() * 1000.0;
            let decision: Decision = match outcome {
                Ok((control, decision)) => {
                    self.control = Some(control);
                    decision
                }
                Err(_) => {
                    error!("the control loop panicked; rebuilding it");
                    let mut config = self.config.control.clone();
                    config.initial_plan = Some(self.applied.clone());
                    self.control = ControlLoop::new(config).ok();
                    self.registry.update(&self.name, |s| s.planner_errors += 1);
                    return;
                }
            };
            if let Some(e) = &decision.error {
                warn!(error = %e, "no plan found; keeping the deployed plan");
            }
            let mut applied = false;
            let mut actions = Vec::new();
            if decision.plan != self.applied && !decision.plan.stages.is_empty() {
                if self.options.dry_run {
                    info!(plan = ?decision.plan, "dry run: would apply");
                } else if let Some(a) = self.apply(&decision.plan.clone(), "tick").await {
                    applied = true;
                    actions = a;
                }
            }
            let record = DecisionRecord {
                pipeline: self.name.clone(),
                tick,
                unix_s: state::unix_now_s(),
                applied,
                apply_actions: actions,
                observed_rps: observation.mean_rps(),
                latency_p99_ms: observation.latency_p99_ms,
                decide_ms,
                decision,
            };
            let planner_error = record.decision.error.clone();
            self.registry.update(&self.name, |s| {
                s.ticks = tick;
                s.completed += observation.completed;
                s.dropped += observation.dropped;
                s.slo_misses += observation.slo_misses;
                if let Some(e) = planner_error {
                    s.planner_errors += 1;
                    s.last_error = Some(e);
                }
            });
            if let Some(sink) = &self.options.on_decision {
                sink(&record);
            }
            self.registry.record(record);
        }
        .instrument(span)
        .await;
    }

    async fn persist(&self) {
        let Some(dir) = self.options.state_dir.clone() else {
            return;
        };
        let state = PipelineState {
            schema: STATE_SCHEMA,
            pipeline: self.name.clone(),
            plan: self.applied.clone(),
            saved_unix_s: state::unix_now_s(),
        };
        match tokio::task::spawn_blocking(move || state::save(&dir, &state)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot save state"),
            Err(_) => warn!("saving state panicked"),
        }
    }
}
