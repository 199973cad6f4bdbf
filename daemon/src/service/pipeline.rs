//! One pipeline's control loop as a task: observe through the backend → decide (forecast,
//! plan, damp) → apply unless dry-run → record, every period, until told to stop. A failing
//! backend or planner marks this pipeline degraded and never touches the others.
//!
//! The backend is a [`GuardedBackend`]: the linked-in simulator for `type = "sim"`, else the
//! plugin library of that name loaded through the shared [`PluginHost`]. Every call runs on
//! the blocking pool with the configured time limit; failures put the backend into backoff.
//! When the library cannot be loaded or the instance cannot be created, the pipeline stays
//! degraded and retries with a doubling backoff, each attempt at a tick.
//!
//! With `[pipeline.router]` the task also runs the pipeline's request router: every
//! observation refreshes its endpoints, every apply its load shares, and every tick takes
//! its measurements (arrivals per second, completions, failures, SLO misses, p99), which
//! replace the backend's in the observation the control loop sees.
//!
//! The fast path between ticks (`[pipeline.fast_path]`, on by default): one timer wakes the
//! task every `check_s` of loop time; every `round(period_s / check_s)`-th wake is a tick,
//! the others are pulses. A pulse shows the loop the arrivals of the seconds since the
//! previous wake and the requests waiting ([`Pulse`]); the loop may answer with a decision,
//! applied and recorded at once like a tick's. Pulses come from the router's live
//! measurements (a peek that leaves every second to the tick's window), or, on the linked
//! simulator without a router, from a report of the simulated host over the last wake: the
//! tick merges those reports with its own into the report of the whole period, so the tick
//! sees what one observation over the period would have shown. Other backends without a
//! router have no fast path (said once in the log and in `/v1/status` `fast_path`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infadapt_bridge::{
    merge_observations, node_capacities, observation_from_plugin, placed_plan_to_message,
    plan_from_message, pulse_from_plugin, sanitise_observation,
};
use infadapt_control::{ControlLoop, Decision, Policy, Pulse};
use infadapt_model::{CatalogVariant, Placement, Plan};
use infadapt_plugin_abi::messages::EndpointMessage;
use infadapt_plugin_abi::{BackendInstance, PluginObservation};
use infadapt_plugin_sim::ManualClock;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::ServiceError;
use super::sim_backend::SimBackend;
use super::state::{self, PipelineState, STATE_SCHEMA};
use super::status::{
    DecisionRecord, DegradedReason, Histogram, LstmModelStatus, PeriodCounts, PluginStatus,
    Registry,
};
use crate::config::{PipelineConfig, SIM_BACKEND};
use crate::plugin_host::{
    BackendOrigin, CallPolicy, GuardedBackend, HostError, InstanceFactory, PluginHost,
};
use crate::router::{Front, Router, RouterSettings};

/// Callback for each decision (the demo prints them).
pub type DecisionSink = Arc<dyn Fn(&DecisionRecord) + Send + Sync>;

/// How a pipeline task runs.
#[derive(Clone)]
pub struct TaskOptions {
    pub dry_run: bool,
    /// Where state is kept; `None` keeps none.
    pub state_dir: Option<PathBuf>,
    pub backend_timeout: Duration,
    /// Loads plugin backends (shared by every pipeline).
    pub plugins: Arc<PluginHost>,
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

/// What woke a pipeline task.
enum Wake {
    Stop,
    Reconfigure(Box<PipelineConfig>),
    Timer,
}

/// Where the fast path's pulses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PulseSource {
    /// The router's live measurements.
    Router,
    /// A short report of the linked simulator.
    Sim,
}

/// The pulse source of `config`, or why it has no fast path.
fn pulse_source(config: &PipelineConfig) -> Result<PulseSource, &'static str> {
    if !config.control.fast_path.enabled {
        Err("off: [pipeline.fast_path] enabled = false")
    } else if config.router.is_some() {
        Ok(PulseSource::Router)
    } else if config.backend.kind == SIM_BACKEND {
        Ok(PulseSource::Sim)
    } else {
        Err("off: needs [pipeline.router]")
    }
}

/// The timer of a task: one wake every `every` of wall time, the first one `every` from now.
fn wake_timer(every: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// The plan in force once `plan` is applied: each stage's shares as the proportions a
/// backend splits the load by (divided by their sum, as the simulated host keeps them), so
/// that the loop compares its next decision with the plan as it runs.
fn in_force(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    for stage in &mut plan.stages {
        let total: f64 = stage.assignments.iter().map(|a| a.share).sum();
        if total.is_finite() && total > 0.0 {
            for a in &mut stage.assignments {
                a.share /= total;
            }
        }
    }
    plan
}

/// Requests the plan's replicas serve at once: Σ replicas × batch over every stage.
fn serving_slots(plan: &Plan) -> u64 {
    plan.stages
        .iter()
        .flat_map(|s| &s.assignments)
        .map(|a| u64::from(a.replicas) * u64::from(a.batch))
        .sum()
}

/// Runs one pipeline until `stop` turns true; persists its state on the way out. A
/// configuration sent on `reconfigure` replaces the control settings in place (see
/// [`PipelineTask::reconfigure`]): the backend, its workers and the router keep running.
/// With `[pipeline.router]` it binds the router's address itself and closes it when done;
/// the service keeps the address across restarts instead ([`run_pipeline_at`]).
pub async fn run_pipeline(
    config: PipelineConfig,
    options: TaskOptions,
    registry: Registry,
    stop: watch::Receiver<bool>,
    reconfigure: mpsc::UnboundedReceiver<PipelineConfig>,
) {
    let front = match &config.router {
        Some(settings) => Some(Front::bind(settings).await),
        None => None,
    };
    let own = front.as_ref().and_then(|f| f.as_ref().ok().cloned());
    run_pipeline_at(config, options, registry, stop, reconfigure, front).await;
    if let Some(front) = own {
        front.close();
    }
}

/// [`run_pipeline`] on a router address bound by the caller (`front`: the bound address, or
/// why it could not be bound; `None` without `[pipeline.router]`). The task attaches its
/// router to the front; when told to stop, it detaches it, lets it finish the requests it
/// accepted (at most twice its `timeout_ms` plus `ready_wait_ms`) and only then drops the
/// backend, so a restart with the same address loses no request.
pub async fn run_pipeline_at(
    config: PipelineConfig,
    options: TaskOptions,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
    mut reconfigure: mpsc::UnboundedReceiver<PipelineConfig>,
    front: Option<Result<Front, crate::router::RouterError>>,
) {
    let name = config.name.clone();
    let span = info_span!("pipeline", pipeline = %name);
    async move {
        registry.update(&name, |s| {
            s.backend = config.backend.kind.clone();
            s.state = "starting".to_owned();
            s.dry_run = options.dry_run;
            s.period_s = config.control.interval_s;
            s.forecaster = config.control.forecast.model.to_string();
            s.lstm_model = LstmModelStatus::of(config.lstm_model.as_ref());
            s.slo_ms = config.control.problem.pipeline.slo_ms;
        });
        if let Some(model) = &config.lstm_model {
            info!(
                path = %model.path.display(),
                fingerprint = %model.fingerprint,
                "forecasting with the trained LSTM model"
            );
        }
        let mut front_in_use = None;
        let router = match (&config.router, front) {
            (Some(settings), Some(Ok(front))) => {
                let pipeline = &config.control.problem.pipeline;
                let router = Router::new(
                    &pipeline.name,
                    pipeline.slo_ms,
                    pipeline.stages.iter().map(|s| s.name.clone()).collect(),
                    settings.timeout,
                    settings.ready_wait,
                )
                .with_connections(front.connections());
                // Taking over from a router still attached: its warm connections too.
                let router = match front.attached() {
                    Some(previous) => router.with_pool_of(&previous),
                    None => router,
                };
                front.attach(router.clone(), settings);
                front_in_use = Some((front, settings.clone()));
                Some(router)
            }
            (Some(settings), bound) => {
                let message = match bound {
                    Some(Err(error)) => error.to_string(),
                    _ => format!("router: {} was not bound", settings.listen),
                };
                error!(error = %message, "pipeline cannot start; the others keep running");
                registry.update(&name, |s| {
                    s.state = "failed".to_owned();
                    s.last_error = Some(message.to_string());
                });
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            (None, _) => None,
        };
        let started = PipelineTask::start(config, options, registry.clone(), router.clone()).await;
        let mut task = match started {
            Ok(task) => task,
            Err(message) => {
                if let (Some((front, _)), Some(router)) = (&front_in_use, &router) {
                    front.detach(router);
                }
                error!(error = %message, "pipeline cannot start; the others keep running");
                registry.update(&name, |s| {
                    s.state = "failed".to_owned();
                    s.last_error = Some(message.to_string());
                });
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
        };
        registry.update(&name, |s| s.state = "running".to_owned());
        let mut timer = wake_timer(task.wake_wall());
        // Watched by the watchdog from now on, until the task ends (see `liveness`).
        let heart = registry
            .liveness()
            .register(&name, task.liveness_limit(), Instant::now());
        loop {
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Wake::Stop,
                Some(new) = reconfigure.recv() => Wake::Reconfigure(Box::new(new)),
                _ = timer.tick() => Wake::Timer,
            };
            match wake {
                Wake::Stop => break,
                Wake::Reconfigure(new) => {
                    if task.reconfigure(*new).await {
                        timer = wake_timer(task.wake_wall());
                    }
                    heart.beat(task.liveness_limit(), Instant::now());
                    continue;
                }
                Wake::Timer => {}
            }
            task.wake().await;
            heart.beat(task.liveness_limit(), Instant::now());
            if task.options.max_ticks.is_some_and(|m| task.ticks >= m) {
                break;
            }
        }
        drop(heart);
        if let (Some((front, settings)), Some(router)) = (&front_in_use, &router) {
            front.detach(router);
            drain(router, settings).await;
            task.publish_router();
        }
        task.persist().await;
        registry.update(&name, |s| s.state = "stopped".to_owned());
        info!("pipeline stopped");
    }
    .instrument(span)
    .await;
}

/// Waits until `router`, detached from its front, has answered the requests it accepted,
/// at most twice its timeout (a request and its one retry) plus its wait for a ready endpoint.
async fn drain(router: &Router, settings: &RouterSettings) {
    let limit = settings.timeout.saturating_mul(2) + settings.ready_wait;
    let deadline = Instant::now() + limit;
    let began = Instant::now();
    let held = router.in_flight();
    while router.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = router.in_flight();
    if left > 0 {
        warn!(
            left,
            limit_s = limit.as_secs_f64(),
            "the router did not finish its requests in time; stopping anyway"
        );
    } else if held > 0 {
        info!(
            requests = held,
            took_ms = began.elapsed().as_millis() as u64,
            "the router finished its requests before stopping"
        );
    }
}

struct PipelineTask {
    name: String,
    config: PipelineConfig,
    options: TaskOptions,
    registry: Registry,
    /// `None` until the backend could be created.
    backend: Option<GuardedBackend>,
    creation: Creation,
    /// The kind of the backend's last failure (for the degraded reason).
    last_failure: Option<DegradedReason>,
    control: Option<ControlLoop>,
    /// The plan the task started from (the simulator starts running it).
    start_plan: Plan,
    /// Whether a saved plan was found at start.
    resumed: bool,
    /// The plan the backend was last told to run.
    applied: Plan,
    period_s: f64,
    /// The request router in front of the backend, when configured.
    router: Option<Router>,
    /// The endpoints the backend reported last (the router's table is built from them).
    endpoints: Vec<EndpointMessage>,
    /// The router's request durations as last added to the status (the status adds what
    /// came since, so its histogram never goes backwards when a new router starts).
    durations_seen: Histogram,
    started: Instant,
    /// Loop clock at start: the saved clock plus the downtime when resuming, else 0.
    clock_offset_s: f64,
    ticks: u64,
    /// The linked simulator's clock: moved one wake's loop time per wake (one period per
    /// tick), so the simulated host lives on the loop's clock (nothing is simulated before
    /// the first wake).
    sim_clock: ManualClock,
    /// Where pulses come from; `None`: decisions at ticks only.
    pulse_source: Option<PulseSource>,
    /// Wakes per period: `round(period_s / check_s)` with the fast path, else 1.
    wakes_per_tick: u64,
    /// Wakes since the last tick.
    wakes_in_period: u64,
    /// Accelerated loop time at the last change of the wake interval, seconds since start.
    wake_base_s: f64,
    /// Wakes since then.
    wakes_since_base: u64,
    /// The simulator's reports taken at the pulses since the last tick, oldest first.
    pulse_reports: Vec<PluginObservation>,
    /// The plan the backend reported at the last tick (the plan in force in a dry run).
    reported: Option<Plan>,
    /// The tick's observations have failed since the last one that succeeded (the first
    /// failure is logged, the others quietly: the backend's own warning tells more).
    observe_failing: bool,
}

impl PipelineTask {
    async fn start(
        config: PipelineConfig,
        options: TaskOptions,
        registry: Registry,
        router: Option<Router>,
    ) -> Result<PipelineTask, ServiceError> {
        let name = config.name.clone();
        let pipeline = config.control.problem.pipeline.clone();
        // An unreadable state file was moved aside: a good one replaces it once started.
        let mut replace_state = false;
        let saved = match &options.state_dir {
            Some(dir) => match state::load(dir, &name) {
                Ok(Some(s)) if state::plan_fits(&s.plan, &pipeline) => Some(s),
                Ok(Some(_)) => {
                    warn!("saved plan does not fit the configured pipeline; ignoring it");
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    replace_state = e.was_set_aside();
                    warn!("cannot read saved state; starting fresh: {e}");
                    None
                }
            },
            None => None,
        };
        let mut control_config = config.control.clone();
        if let Some(s) = &saved {
            control_config.initial_plan = Some(s.plan.clone());
        }
        let mut control = tokio::task::spawn_blocking(move || ControlLoop::new(control_config))
            .await
            .map_err(|_| ServiceError::ControlLoopPanicked)?
            .map_err(ServiceError::ControlLoop)?;
        // The loop's clock continues across restarts so that the restored forecaster sees the
        // downtime as a gap rather than time running backwards.
        let mut clock_offset_s = 0.0;
        if let Some(s) = &saved {
            let downtime = state::unix_now_s().saturating_sub(s.saved_unix_s) as f64;
            if s.clock_s.is_finite() && s.clock_s >= 0.0 {
                clock_offset_s = s.clock_s + downtime;
            }
            if let Some(forecaster) = s.forecaster.clone() {
                match control.restore_forecaster_state(forecaster) {
                    Ok(()) => info!("restored the forecaster's state"),
                    Err(e) => warn!(error = %e, "not restoring the forecaster's state"),
                }
            }
        }
        let start_plan = control.initial_plan();
        let period_s = config.control.interval_s;
        let mut task = PipelineTask {
            name,
            config,
            options,
            registry,
            backend: None,
            creation: Creation::default(),
            last_failure: None,
            control: Some(control),
            applied: in_force(&start_plan),
            start_plan,
            resumed: saved.is_some(),
            period_s,
            router,
            endpoints: Vec::new(),
            durations_seen: Histogram::default(),
            started: Instant::now(),
            clock_offset_s,
            ticks: 0,
            sim_clock: ManualClock::new(),
            pulse_source: None,
            wakes_per_tick: 1,
            wakes_in_period: 0,
            wake_base_s: 0.0,
            wakes_since_base: 0,
            pulse_reports: Vec::new(),
            reported: None,
            observe_failing: false,
        };
        task.schedule();
        task.ensure_backend().await;
        if replace_state {
            task.persist().await;
        }
        let plan = task.applied.clone();
        task.registry.update(&task.name, |s| s.plan = Some(plan));
        Ok(task)
    }

    /// Replaces the control settings with `new` (same pipeline, backend and router; the
    /// caller checks): a new control loop starts from the applied plan with the old loop's
    /// forecaster state where it is of the same kind, and keeps the backend's GPU memory
    /// limit. Returns whether it took; when the new loop cannot be built, the old one
    /// keeps running and the error is logged.
    async fn reconfigure(&mut self, new: PipelineConfig) -> bool {
        let mut control_config = new.control.clone();
        control_config.initial_plan = Some(self.applied.clone());
        let built = tokio::task::spawn_blocking(move || ControlLoop::new(control_config)).await;
        let mut control = match built {
            Ok(Ok(control)) => control,
            Ok(Err(e)) => {
                error!(error = %e, "reconfiguration rejected; the running settings stay");
                return false;
            }
            Err(_) => {
                error!("building the new control loop panicked; the running settings stay");
                return false;
            }
        };
        if let Some(old) = &self.control {
            match old.forecaster_state() {
                Ok(saved) => match control.restore_forecaster_state(saved) {
                    Ok(()) => debug!("the forecaster's state carried over"),
                    Err(e) => info!(error = %e, "the new forecaster starts fresh"),
                },
                Err(e) => warn!(error = %e, "the forecaster's state cannot be carried over"),
            }
        }
        // The loop clock keeps counting from where it is under the new interval.
        let now_s = self.now_s() - self.clock_offset_s;
        self.period_s = new.control.interval_s;
        self.config = new;
        self.control = Some(control);
        self.wake_base_s = now_s;
        self.wakes_since_base = 0;
        self.wakes_in_period = 0;
        self.schedule();
        self.bound_by_backend_gpus();
        let period_s = self.period_s;
        let forecaster = self.config.control.forecast.model.to_string();
        let lstm_model = LstmModelStatus::of(self.config.lstm_model.as_ref());
        if let Some(model) = &lstm_model {
            info!(
                path = %model.path,
                fingerprint = %model.fingerprint,
                "forecasting with the trained LSTM model"
            );
        }
        self.registry.update(&self.name, |s| {
            s.period_s = period_s;
            s.forecaster = forecaster;
            s.lstm_model = lstm_model;
        });
        info!("reconfigured in place; the backend and router keep running");
        true
    }

    /// Plans within the GPU memory the backend reports (and any configured limit): for a
    /// new backend, a rebuilt control loop and a reconfigured one alike.
    fn bound_by_backend_gpus(&mut self) {
        let reported = self
            .backend
            .as_ref()
            .and_then(|b| b.description().gpu_mem_mb);
        if let (Some(reported), Some(control)) = (reported, self.control.as_mut()) {
            let limit = control.limit_gpu_memory(reported);
            info!(
                reported_mb = reported,
                limit_mb = limit,
                "the backend's GPUs bound the plans"
            );
            self.registry
                .update(&self.name, |s| s.gpu_mem_limit_mb = limit);
        }
    }

    /// Sets the pulse source and the wakes per period from the configuration, and says
    /// whether the fast path is on (log and status).
    fn schedule(&mut self) {
        let source = pulse_source(&self.config);
        self.pulse_source = source.ok();
        self.wakes_per_tick = match source {
            Ok(_) => ((self.period_s / self.config.check_s).round() as u64).max(1),
            Err(_) => 1,
        };
        let text = match source {
            Ok(PulseSource::Router) => "on (router)",
            Ok(PulseSource::Sim) => "on (simulated backend)",
            Err(why) => why,
        };
        let check_s = self.wake_s();
        match source {
            Ok(_) => info!(check_s, "fast path {text}"),
            Err(_) => info!("fast path {text}; decisions at ticks only"),
        }
        self.registry
            .update(&self.name, |s| s.fast_path = text.to_owned());
    }

    /// How long this loop may go without a finished wake before the watchdog counts it
    /// stuck: from the period in wall time and the backend calls' time limit.
    fn liveness_limit(&self) -> Duration {
        let period = Duration::from_secs_f64((self.period_s / self.options.speed).max(0.0));
        super::liveness::limit(period, self.options.backend_timeout)
    }

    /// Loop time between two wakes, seconds.
    fn wake_s(&self) -> f64 {
        self.period_s / self.wakes_per_tick as f64
    }

    /// Wall time between two wakes.
    fn wake_wall(&self) -> Duration {
        Duration::from_secs_f64((self.wake_s() / self.options.speed).max(1e-6))
    }

    /// The call policy: the configured time limit, and a backoff that starts at one period.
    fn policy(&self) -> CallPolicy {
        let period = Duration::from_secs_f64((self.period_s / self.options.speed).max(0.001));
        CallPolicy {
            timeout: self.options.backend_timeout,
            backoff_initial: period,
            backoff_max: (period * 32).min(Duration::from_secs(300)).max(period),
        }
    }

    /// Creates the backend when it does not exist yet and its backoff has passed, then
    /// reconciles it with the starting plan; whether a backend is there.
    async fn ensure_backend(&mut self) -> bool {
        if self.backend.is_some() {
            return true;
        }
        if self.creation.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match self.create_backend().await {
            Ok(backend) => {
                info!(
                    backend = %backend.name(),
                    origin = %backend.origin(),
                    "backend created"
                );
                self.backend = Some(backend);
                self.bound_by_backend_gpus();
                self.creation = Creation::default();
                self.last_failure = None;
                self.reconcile_at_start().await;
                self.publish_backend();
                true
            }
            Err(failure) => {
                let policy = self.policy();
                self.creation.consecutive = self.creation.consecutive.saturating_add(1);
                let backoff = infadapt_plugin_support::exponential_backoff(
                    policy.backoff_initial,
                    policy.backoff_max,
                    self.creation.consecutive,
                );
                self.creation.failures += 1;
                self.creation.retry_at = Some(Instant::now() + backoff);
                warn!(
                    backend = %self.config.backend.kind,
                    retry_in_s = backoff.as_secs_f64(),
                    "backend cannot be created; the pipeline is degraded: {}",
                    failure.message
                );
                self.last_failure = Some(failure);
                self.publish_backend();
                false
            }
        }
    }

    async fn create_backend(&mut self) -> Result<GuardedBackend, DegradedReason> {
        let policy = self.policy();
        let kind = self.config.backend.kind.clone();
        let failure = |kind: &str, message: String| DegradedReason {
            kind: kind.to_owned(),
            message,
        };
        if kind == SIM_BACKEND {
            let pipeline = self.config.control.problem.pipeline.clone();
            let start = self.start_plan.clone();
            let settings = self.config.backend.settings.clone();
            let clock = self.sim_clock.clone();
            let factory: InstanceFactory = Arc::new(move || {
                SimBackend::new(&pipeline, &start, &settings, clock.clone())
                    .map(|b| Box::new(b) as Box<dyn BackendInstance>)
            });
            let instance = factory().map_err(|e| {
                failure(
                    "create",
                    format!("backend `sim` (linked in): create failed: {}", e.message),
                )
            })?;
            return Ok(
                GuardedBackend::new(instance, BackendOrigin::Linked, policy).with_factory(factory)
            );
        }
        let host = Arc::clone(&self.options.plugins);
        let name = kind.clone();
        // Mapping a library runs its initialisers: off the async threads, within the limit.
        let loading = tokio::task::spawn_blocking(move || host.library(&name));
        let library = match tokio::time::timeout(policy.timeout, loading).await {
            Ok(Ok(Ok(library))) => library,
            Ok(Ok(Err(e))) => return Err(failure("load", e.to_string())),
            Ok(Err(_)) => {
                return Err(failure("load", format!("loading plugin `{kind}` panicked")));
            }
            Err(_) => {
                return Err(failure(
                    "load",
                    format!(
                        "loading plugin `{kind}` did not finish within {:.1} s",
                        policy.timeout.as_secs_f64()
                    ),
                ));
            }
        };
        let config = plugin_config(&self.config).to_string();
        GuardedBackend::create_plugin(library, config, policy)
            .await
            .map_err(|e| failure("create", e.to_string()))
    }

    /// Startup reconcile: leave a backend alone that already runs the starting plan.
    async fn reconcile_at_start(&mut self) {
        let start_plan = self.start_plan.clone();
        match self.observe().await {
            Ok(observation) => {
                let deployed = plan_from_message(&observation.deployed);
                if deployed == start_plan {
                    let origin = if self.resumed { "saved" } else { "initial" };
                    info!(
                        origin,
                        "resumed: the backend already runs the {origin} plan; nothing applied"
                    );
                } else if self.options.dry_run {
                    info!("dry run: the starting plan differs from the backend; not applied");
                    self.applied = deployed;
                } else if self.registry.is_paused(&self.name) {
                    info!("paused: the starting plan differs from the backend; not applied");
                    self.applied = deployed;
                } else {
                    // A cluster backend gets the starting plan placed on the nodes it
                    // reports, when it places; else without a placement (its scheduler
                    // places it) until the first tick plans within the nodes.
                    let nodes = node_capacities(&observation.nodes);
                    let pipeline = self.control.as_ref().map(|c| &c.config().problem.pipeline);
                    let placement = match pipeline {
                        Some(pipeline) if !nodes.is_empty() => {
                            match infadapt_planner::place_plan(pipeline, &start_plan, &nodes) {
                                Ok(placement) => placement,
                                Err(e) => {
                                    info!(error = %e, "the starting plan is applied without a placement");
                                    Vec::new()
                                }
                            }
                        }
                        _ => Vec::new(),
                    };
                    self.apply(&start_plan, &placement, "startup").await;
                }
            }
            Err(e) => warn!(error = %e, "backend not observable at startup"),
        }
    }

    /// Observes through the guarded backend, booking the outcome.
    async fn observe(&mut self) -> Result<infadapt_plugin_abi::PluginObservation, HostError> {
        let Some(backend) = self.backend.as_mut() else {
            return Err(self.no_backend(crate::plugin_host::Call::Observe));
        };
        let result = backend.observe().await.map(|observation| {
            // A report the loop cannot act on as it is (negative or non-finite rates,
            // latencies, queues) is made fit and the fields it changed are logged and
            // counted: bad data never scales the pipeline.
            let (clean, problems) = sanitise_observation(&observation);
            if !problems.is_empty() {
                warn!(
                    backend = %self.config.backend.kind,
                    "observe: the backend reported values that make no sense: {}",
                    problems.join("; ")
                );
                self.registry
                    .update(&self.name, |s| s.bad_observations += 1);
            }
            clean
        });
        self.note(result.as_ref().err());
        if let (Ok(observation), Some(router)) = (&result, &self.router) {
            self.endpoints = observation.endpoints.clone();
            router.update(&self.applied, &self.endpoints);
        }
        result
    }

    fn no_backend(&self, call: crate::plugin_host::Call) -> HostError {
        HostError::Unusable {
            backend: self.config.backend.kind.clone(),
            origin: BackendOrigin::Linked,
            call,
            reason: "the backend has not been created".to_owned(),
        }
    }

    /// Remembers the kind of a real failure (refusals keep the previous one) and publishes
    /// the backend's counters.
    fn note(&mut self, error: Option<&HostError>) {
        if let Some(e) = error {
            let kind = match e {
                HostError::Panicked { .. } => Some("panic"),
                HostError::TimedOut { .. } => Some("timeout"),
                HostError::Failed { .. } => Some("error"),
                HostError::Unusable { .. } => Some("unusable"),
                HostError::Hung { .. } | HostError::Backoff { .. } => None,
                _ => Some("error"),
            };
            if let Some(kind) = kind {
                self.last_failure = Some(DegradedReason {
                    kind: kind.to_owned(),
                    message: e.to_string(),
                });
            } else {
                debug!(error = %e, "backend call not attempted");
            }
        }
        self.publish_backend();
    }

    /// Copies the guard's counters and degraded state into the registry.
    fn publish_backend(&self) {
        let mut plugin = PluginStatus {
            create_failures: self.creation.failures,
            ..PluginStatus::default()
        };
        let degraded = match &self.backend {
            Some(backend) => {
                let stats = backend.stats();
                plugin.origin = backend.origin().to_string();
                plugin.calls = stats.calls;
                plugin.errors = stats.errors;
                plugin.panics = stats.panics;
                plugin.timeouts = stats.timeouts;
                plugin.refused = stats.refused;
                plugin.restarts = stats.restarts;
                plugin.hung = backend.is_hung();
                plugin.retry_in_s = stats.degraded.as_ref().map(|d| {
                    d.retry_at
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                });
                backend.is_degraded() || plugin.hung
            }
            None => {
                plugin.retry_in_s = self
                    .creation
                    .retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64());
                true
            }
        };
        if degraded {
            plugin.degraded = self.last_failure.clone();
        }
        let last_error = plugin.degraded.as_ref().map(|d| d.message.clone());
        self.registry.update(&self.name, |s| {
            s.plugin_errors = plugin.failures();
            s.degraded = degraded;
            if last_error.is_some() {
                s.last_error = last_error;
            }
            s.plugin = plugin;
        });
    }

    /// Seconds since start: wall time in service, wakes × their loop time when accelerated.
    fn now_s(&self) -> f64 {
        let since_start = if self.options.speed > 1.0 {
            self.wake_base_s
                + self.wakes_since_base as f64 * self.period_s / self.wakes_per_tick as f64
        } else {
            self.started.elapsed().as_secs_f64()
        };
        self.clock_offset_s + since_start
    }

    async fn apply(
        &mut self,
        plan: &Plan,
        placement: &[Placement],
        reason: &str,
    ) -> Option<Vec<String>> {
        let message = placed_plan_to_message(plan, placement);
        let result = match self.backend.as_mut() {
            Some(backend) => backend.apply(&message).await,
            None => Err(self.no_backend(crate::plugin_host::Call::Apply)),
        };
        self.note(result.as_ref().err());
        match result {
            Ok(report) => {
                self.applied = in_force(plan);
                if let Some(router) = &self.router {
                    router.update(plan, &self.endpoints);
                }
                if report.changed {
                    info!(reason, actions = %report.actions.join("; "), "applied");
                }
                let changed = report.changed;
                let applied = self.applied.clone();
                let placement = placement.to_vec();
                self.registry.update(&self.name, |s| {
                    s.plan = Some(applied);
                    s.placement = placement;
                    if changed {
                        s.reconfigurations += 1;
                    }
                });
                self.persist().await;
                Some(report.actions)
            }
            Err(e) => {
                info!(error = %e, reason, "plan not applied; will retry next period");
                None
            }
        }
    }

    /// One wake of the timer: the loop clock (and the simulator's) moves one wake; every
    /// `wakes_per_tick`-th wake is a tick, the others are pulses.
    async fn wake(&mut self) {
        self.wakes_since_base += 1;
        self.wakes_in_period += 1;
        self.sim_clock.advance(self.wake_s());
        if self.wakes_in_period >= self.wakes_per_tick {
            self.wakes_in_period = 0;
            self.tick().await;
        } else {
            self.pulse().await;
        }
        self.publish_router();
    }

    /// Copies the router's totals and the request durations since the last wake into the
    /// status (every wake, so `/metrics` lags the router by one wake at most).
    fn publish_router(&mut self) {
        let Some(router) = &self.router else {
            return;
        };
        let counters = router.counters();
        let durations = router.durations();
        let new = durations.since(&self.durations_seen);
        self.durations_seen = durations;
        self.registry.update(&self.name, |s| {
            s.router = Some(counters);
            s.request_latency.add(&new);
        });
    }

    async fn tick(&mut self) {
        self.ticks += 1;
        let tick = self.ticks;
        let started = Instant::now();
        let span = info_span!("tick", tick);
        // A tick that observed nothing books an empty period: the windows move on.
        let (counts, arrived) = self.tick_inner(tick).instrument(span).await.unwrap_or((
            PeriodCounts {
                at: Instant::now(),
                completed: 0,
                dropped: 0,
                slo_misses: 0,
            },
            0.0,
        ));
        let seconds = started.elapsed().as_secs_f64();
        self.registry.update(&self.name, |s| {
            s.ticks = tick;
            s.tick_times.record(seconds);
            s.record_period(counts, arrived);
        });
    }

    /// Observes, decides and carries the decision out; what the period observed (its
    /// counts and arrivals) when there was an observation.
    async fn tick_inner(&mut self, tick: u64) -> Option<(PeriodCounts, f64)> {
        if !self.ensure_backend().await {
            return None;
        }
        let observation = match self.observe().await {
            Ok(o) => {
                self.observe_failing = false;
                o
            }
            Err(e) => {
                if matches!(e, HostError::Backoff { .. } | HostError::Hung { .. }) {
                    // Not attempted: nothing new to say.
                } else if self.observe_failing {
                    debug!(error = %e, "still no observation; keeping the current plan");
                } else {
                    self.observe_failing = true;
                    info!(error = %e, "no observation; keeping the current plan");
                }
                return None;
            }
        };
        // The reports taken at this period's pulses and the tick's own make the report of
        // the whole period.
        let observation = if self.pulse_reports.is_empty() {
            observation
        } else {
            let mut parts = std::mem::take(&mut self.pulse_reports);
            parts.push(observation);
            merge_observations(&parts).unwrap_or_default()
        };
        // The loop damps against the plan in force (see `infadapt_bridge`): the plan last
        // applied, or in a dry run, where nothing is applied, what the backend runs.
        let reported = plan_from_message(&observation.deployed);
        let in_force = if self.options.dry_run {
            reported.clone()
        } else {
            self.applied.clone()
        };
        self.reported = Some(reported);
        let mut observation = observation_from_plugin(&observation, self.now_s(), &in_force);
        if let Some(router) = &self.router {
            // Clients come in through the router: its measurements are the load.
            let window = router.take_window();
            observation.window_s = window.arrivals_per_second.len() as f64;
            observation.arrivals_per_second = window.arrivals_per_second;
            observation.completed = window.completed;
            observation.dropped = window.failed;
            observation.slo_misses = window.slo_misses;
            observation.latency_p99_ms = window.latency_p99_ms;
        }
        // Booked whether or not the loop then decides.
        let period = (
            PeriodCounts {
                at: Instant::now(),
                completed: observation.completed,
                dropped: observation.dropped,
                slo_misses: observation.slo_misses,
            },
            observation
                .arrivals_per_second
                .iter()
                .filter(|a| a.is_finite() && **a > 0.0)
                .sum::<f64>(),
        );
        let input = observation.clone();
        let Some((decision, decide_ms)) = self.consult(move |c| c.decide(&input)).await else {
            return Some(period);
        };
        let seen = Seen {
            tick,
            observed_rps: observation.mean_rps(),
            latency_p99_ms: observation.latency_p99_ms,
            decide_ms,
        };
        self.carry_out(decision, seen).await;
        Some(period)
    }

    /// One pulse between ticks: shows the loop what arrived since the previous wake and
    /// what waits now; a decision it answers with is carried out at once.
    async fn pulse(&mut self) {
        let Some(source) = self.pulse_source else {
            return;
        };
        if self.control.is_none() {
            return;
        }
        let pulse = match source {
            PulseSource::Router => {
                let Some(router) = &self.router else {
                    return;
                };
                let peek = router.peek();
                let in_force = if self.options.dry_run {
                    self.reported
                        .clone()
                        .unwrap_or_else(|| self.applied.clone())
                } else {
                    self.applied.clone()
                };
                // The router sees requests in flight; those beyond what the replicas in
                // force serve at once are waiting.
                let waiting = peek.in_flight.saturating_sub(serving_slots(&in_force));
                Pulse {
                    time_s: self.now_s(),
                    arrivals_per_second: peek.arrivals_per_second,
                    queue_len: waiting as f64,
                    deployed: in_force,
                }
            }
            PulseSource::Sim => {
                if self.backend.is_none() {
                    return;
                }
                // A failed look is no pulse; the next observation covers its seconds.
                let Ok(report) = self.observe().await else {
                    return;
                };
                let in_force = if self.options.dry_run {
                    plan_from_message(&report.deployed)
                } else {
                    self.applied.clone()
                };
                let pulse = pulse_from_plugin(&report, self.now_s(), &in_force);
                self.pulse_reports.push(report);
                pulse
            }
        };
        let observed_rps = if pulse.arrivals_per_second.is_empty() {
            0.0
        } else {
            pulse.arrivals_per_second.iter().sum::<f64>() / pulse.arrivals_per_second.len() as f64
        };
        let input = pulse;
        let Some((decision, decide_ms)) = self.consult(move |c| c.react(&input)).await else {
            return;
        };
        let Some(decision) = decision else {
            return;
        };
        let seen = Seen {
            tick: self.ticks,
            observed_rps,
            latency_p99_ms: None,
            decide_ms,
        };
        let span = info_span!("fast_path", tick = self.ticks);
        self.carry_out(decision, seen).instrument(span).await;
    }

    /// Runs `f` on the control loop on the blocking pool; its answer and how long it took
    /// (ms). `None` when there is no loop or it panicked (then it is rebuilt from the
    /// applied plan).
    async fn consult<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut ControlLoop) -> R + Send + 'static,
    ) -> Option<(R, f64)> {
        let mut control = self.control.take()?;
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let answer = f(&mut control);
            (control, answer)
        })
        .await;
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok((control, answer)) => {
                self.control = Some(control);
                Some((answer, took_ms))
            }
            Err(_) => {
                error!("the control loop panicked; rebuilding it");
                let mut config = self.config.control.clone();
                config.initial_plan = Some(self.applied.clone());
                self.control = ControlLoop::new(config).ok();
                // The rebuilt loop keeps planning within the backend's GPU memory.
                self.bound_by_backend_gpus();
                self.registry.update(&self.name, |s| s.planner_errors += 1);
                None
            }
        }
    }

    /// Applies `decision` unless it keeps the plan or this is a dry run, records it and
    /// hands it to the decision sink: for a tick and a fast-path decision alike.
    async fn carry_out(&mut self, decision: Decision, seen: Seen) {
        let fast_path = decision.fast_path.is_some();
        if let Some(e) = &decision.error {
            warn!(error = %e, "no plan found; keeping the deployed plan");
        }
        if let Some(why) = &decision.fast_path {
            info!(reason = %why, "fast path: re-planned between ticks");
        }
        let mut applied = false;
        let mut not_applied = None;
        let mut actions = Vec::new();
        if decision.plan != self.applied && !decision.plan.stages.is_empty() {
            let reason = if fast_path { "fast path" } else { "tick" };
            if self.options.dry_run {
                info!(plan = %decision.plan, reason, "dry run: would apply");
                not_applied = Some("dry run");
            } else if self.registry.is_paused(&self.name) {
                debug!(reason, "paused: the decision is recorded, not applied");
                not_applied = Some("paused");
            } else if let Some(a) = self
                .apply(&decision.plan.clone(), &decision.placement.clone(), reason)
                .await
            {
                applied = true;
                actions = a;
            } else {
                not_applied = Some("apply failed");
            }
        }
        let record = DecisionRecord {
            pipeline: self.name.clone(),
            tick: seen.tick,
            unix_s: state::unix_now_s(),
            applied,
            not_applied: not_applied.map(str::to_owned),
            apply_actions: actions,
            observed_rps: seen.observed_rps,
            latency_p99_ms: seen.latency_p99_ms,
            decide_ms: seen.decide_ms,
            forecaster: self
                .control
                .as_ref()
                .map_or_else(String::new, |c| c.forecaster_following().to_owned()),
            fast_path,
            decision,
        };
        let planner_error = record.decision.error.clone();
        self.registry.update(&self.name, |s| {
            if fast_path {
                s.fast_path_decisions += 1;
            }
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

    async fn persist(&mut self) {
        let Some(dir) = self.options.state_dir.clone() else {
            return;
        };
        let state = PipelineState {
            schema: STATE_SCHEMA,
            pipeline: self.name.clone(),
            plan: self.applied.clone(),
            saved_unix_s: state::unix_now_s(),
            clock_s: self.now_s(),
            forecaster: self
                .control
                .as_ref()
                .and_then(|c| match c.forecaster_state() {
                    Ok(v) => Some(v),
                    Err(e) => {
                        warn!(error = %e, "cannot save the forecaster's state");
                        None
                    }
                }),
        };
        match tokio::task::spawn_blocking(move || state::save(&dir, &state)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot save state"),
            Err(_) => warn!("saving state panicked"),
        }
    }
}

/// What a decision was taken on, for its record.
struct Seen {
    /// The tick (for a fast-path decision: the last tick before it).
    tick: u64,
    observed_rps: f64,
    latency_p99_ms: Option<f64>,
    decide_ms: f64,
}

/// When the backend could not be created: how often, and when to try again.
#[derive(Debug, Default)]
struct Creation {
    /// Failures since the start (a counter).
    failures: u64,
    /// Failures since the last success (sets the backoff).
    consecutive: u32,
    retry_at: Option<Instant>,
}

/// The config a plugin backend is created with: the `[pipeline.backend]` table (without
/// `type`) as a JSON object, plus `pipeline`: its name, SLO and stages, each variant written
/// out as a catalog entry (name, accuracy, load time, GPU memory, profile points).
pub fn plugin_config(config: &PipelineConfig) -> serde_json::Value {
    let pipeline = &config.control.problem.pipeline;
    let stages: Vec<serde_json::Value> = pipeline
        .stages
        .iter()
        .map(|stage| {
            let variants: Vec<CatalogVariant> = stage
                .variants
                .iter()
                .map(|v| CatalogVariant {
                    name: v.name.clone(),
                    accuracy: v.accuracy,
                    load_time_s: v.load_time_s,
                    gpu_mem_mb: v.gpu_mem_mb,
                    source: String::new(),
                    points: v.profile.points().to_vec(),
                })
                .collect();
            json!({
                "name": stage.name,
                "variants": variants,
                "batch_sizes": stage.batch_sizes,
                "core_options": stage.core_options,
                "max_replicas": stage.max_replicas,
            })
        })
        .collect();
    let mut table = match &config.backend.settings {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    table.insert(
        "pipeline".to_owned(),
        json!({ "name": pipeline.name, "slo_ms": pipeline.slo_ms, "stages": stages }),
    );
    serde_json::Value::Object(table)
}
