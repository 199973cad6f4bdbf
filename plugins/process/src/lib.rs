//! The bare-metal process backend: runs each replica of a planned variant as a worker
//! process on this host, pinned to its planned number of cores, health-checked, drained
//! before it is stopped, restarted with backoff when it crashes, and adopted (or cleaned
//! up) after a daemon restart from the PIDs it recorded.
//!
//! Built as a `cdylib` (`libinfadapt_plugin_process.so`, loaded for
//! `[pipeline.backend] type = "process"`) and as an `rlib` for tests.
//!
//! # Config
//!
//! The `[pipeline.backend]` table (the daemon adds `pipeline`). Full reference with an
//! example: `docs/backends/process.md`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `state_dir` | required | where the workers are recorded (`process-{pipeline}.json`) |
//! | `log_dir` | `{state_dir}/logs` | each worker's stdout and stderr: `{stage}-{variant}-{port}.log` |
//! | `host` | `"127.0.0.1"` | the `{host}` placeholder; ports are checked free on it |
//! | `port_range` | `[20000, 20999]` | ports handed out to workers, never two at once |
//! | `cpus` | the daemon's own CPUs | CPUs workers are pinned to |
//! | `drain_s` | 5 | a worker the plan no longer wants is `draining` this long before SIGTERM |
//! | `stop_timeout_s` | 5 | SIGKILL this long after SIGTERM (keep it below the daemon's `grace_s`) |
//! | `health_timeout_s` | 0.5 | limit of one health check (above 0, at most 2) |
//! | `unhealthy_after` | 3 | failed health checks in a row that make a ready worker be replaced |
//! | `restart_backoff_s`, `restart_backoff_max_s` | 1, 60 | delay before restarting a crashed variant, doubled per crash in a row |
//! | `on_exit` | `"stop"` | when the instance is destroyed: `"stop"` the workers or `"keep"` them for the next one to adopt |
//! | `variants.NAME.command` | required | program and arguments (no shell), with placeholders |
//! | `variants.NAME.health_url` | `"http://{host}:{port}/healthz"` | a worker is `ready` once this answers 2xx |
//! | `variants.NAME.url` | `"http://{host}:{port}/infer"` | the endpoint the router sends requests to (`raw-http`) |
//! | `variants.NAME.stats_url` | none | JSON `{"served": N, "in_flight": M}` (cumulative answered requests, requests in flight): observe reports completed requests, arrivals and queue length from it |
//! | `variants.NAME.readiness_timeout_s` | 60 | a worker not ready by then is killed and restarted |
//! | `variants.NAME.env` | none | extra environment, with placeholders |
//! | `variants.NAME.working_dir` | the daemon's | working directory of the worker |
//! | `variants.NAME.gpu` | `"none"` | `"none"`, `"preferred"` or `"required"` |
//! | `variants.NAME.gpu_mem_mb` | the catalog's | GPU memory one worker needs |
//!
//! Placeholders: `{port}`, `{host}`, `{gpu}` (NVML index, empty without a GPU), `{cores}`
//! (planned count), `{cpus}` (the pinned CPU list, `0,1`), `{variant}`, `{stage}`, `{batch}`.
//!
//! # Behaviour
//!
//! `apply` records the plan as the target and reconciles towards it; `observe`, `apply` and
//! `health` all first make progress: reap exited workers (no zombies), health-check the
//! starting and ready ones, start missing replicas, drain surplus ones, move draining ones on
//! to SIGTERM after `drain_s` and SIGKILL after `stop_timeout_s`. Replicas whose variant,
//! batch, cores or command changed are replaced make-before-break: the old ones drain once
//! the stage's new workers are all ready. Workers are reported as endpoints (`starting`,
//! `ready`, `draining`); only ready ones count as deployed. The backend sees no traffic
//! itself: with a `stats_url` it reports the requests its workers answered (as completed
//! requests and arrivals, assuming none dropped) and those in flight (as queue length);
//! latency percentiles are the router's to measure.

mod adoption;
mod config;
mod error;
mod gpu;
mod observe;
mod placement;
mod reconcile;
mod state;
mod supervise;
pub mod system;

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use infadapt_plugin_abi::{
    ApplyReport, AssignmentMessage, Backend, BackendError, Capabilities, Description, HealthReport,
    ObservedStage, PlanMessage, PluginObservation, SCHEMA_VERSION, StagePlanMessage,
};
use infadapt_plugin_support::exponential_backoff;
use nix::sys::signal::Signal;

pub use config::{GpuUse, OnExit, ProcessConfig, VariantConfig};
pub use error::ProcessError;
pub use gpu::{GpuInfo, Gpus};
pub use state::{StateFile, WorkerRecord, state_path};

use config::render;
use placement::*;
use supervise::*;
use system::{HealthChecker, Reaped};

/// Name the backend reports in `describe`.
pub const BACKEND_NAME: &str = "process";

/// Most replicas of one assignment the backend accepts in a plan.
pub const MAX_REPLICAS: u32 = 256;

/// Events kept for `health`'s detail.
const RECENT_EVENTS: usize = 20;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Started (or adopted); not answering its health URL yet.
    Starting { since: Instant },
    /// Answering its health URL; `failures` health checks failed in a row since.
    Ready { failures: u32 },
    /// Not wanted any more: no new requests; SIGTERM once `drain_s` has passed.
    Draining { since: Instant },
    /// SIGTERM sent at `since` (SIGKILL too when `killed`); waiting for it to exit.
    Stopping { since: Instant, killed: bool },
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Starting { .. } => "starting",
            Phase::Ready { .. } => "ready",
            Phase::Draining { .. } => "draining",
            Phase::Stopping { .. } => "stopping",
        }
    }

    fn is_live(self) -> bool {
        matches!(self, Phase::Starting { .. } | Phase::Ready { .. })
    }
}

/// One worker process.
#[derive(Debug)]
struct Worker {
    stage: String,
    variant: String,
    batch: u32,
    cores: u32,
    cpus: Vec<usize>,
    gpu: Option<(u32, String)>,
    gpu_mem_mb: f64,
    port: u16,
    pid: i32,
    start_ticks: u64,
    argv: Vec<String>,
    url: String,
    health_url: String,
    stats_url: Option<String>,
    /// The worker's `served` counter when last read; `None` until the first read of an
    /// adopted worker (whose earlier requests were counted by the previous daemon).
    served_seen: Option<u64>,
    stats_error_reported: bool,
    readiness_timeout: Duration,
    phase: Phase,
    /// Our child (reaped through it); `None` for a worker adopted from a previous daemon.
    child: Option<Child>,
}

impl Worker {
    fn key(&self) -> (String, String) {
        (self.stage.clone(), self.variant.clone())
    }

    fn label(&self) -> String {
        format!(
            "{}/{}: worker pid {} (port {})",
            self.stage, self.variant, self.pid, self.port
        )
    }

    fn record(&self) -> WorkerRecord {
        WorkerRecord {
            stage: self.stage.clone(),
            variant: self.variant.clone(),
            batch: self.batch,
            cores: self.cores,
            cpus: self.cpus.clone(),
            gpu: self.gpu.as_ref().map(|g| g.0),
            gpu_uuid: self.gpu.as_ref().map(|g| g.1.clone()),
            port: self.port,
            pid: self.pid,
            start_ticks: self.start_ticks,
            argv: self.argv.clone(),
            url: self.url.clone(),
            health_url: self.health_url.clone(),
            state: self.phase.name().to_owned(),
        }
    }
}

/// A worker as the backend sees it (for tests and tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub stage: String,
    pub variant: String,
    pub pid: i32,
    pub port: u16,
    pub cores: u32,
    pub cpus: Vec<usize>,
    pub gpu: Option<u32>,
    /// `starting`, `ready`, `draining` or `stopping`.
    pub state: String,
    /// Whether this daemon started it (otherwise it was adopted).
    pub own_child: bool,
}

/// Counts since the instance was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub started: u64,
    /// Workers that exited or failed health or readiness while they were wanted.
    pub crashes: u64,
    pub adopted: u64,
    /// Recorded workers found gone (or another process under their PID) at creation.
    pub stale: u64,
    pub stopped: u64,
}

/// Restart delay of a (stage, variant) after crashes in a row.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    not_before: Instant,
}

/// The backend instance.
pub struct ProcessBackend {
    config: ProcessConfig,
    state_path: PathBuf,
    boot_id: String,
    cpus: Vec<usize>,
    gpus: Gpus,
    checker: HealthChecker,
    workers: Vec<Worker>,
    target: Option<PlanMessage>,
    backoff: BTreeMap<(String, String), Backoff>,
    port_cursor: u16,
    /// Events not yet handed out in an apply report.
    pending_events: Vec<String>,
    recent_events: VecDeque<String>,
    counters: Counters,
    last_written: Option<StateFile>,
    detached: bool,
    last_observe: Option<Instant>,
}

impl std::fmt::Debug for ProcessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBackend")
            .field("pipeline", &self.config.pipeline)
            .field("workers", &self.workers.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// What the current plan wants of one (variant, batch, cores) in a stage.
#[derive(Debug, Clone, PartialEq)]
struct Want {
    variant: String,
    batch: u32,
    cores: u32,
    replicas: u32,
}

impl ProcessBackend {
    /// Builds the backend from its config and adopts the recorded workers that still run.
    pub fn new(config: ProcessConfig) -> Result<ProcessBackend, ProcessError> {
        let state_path = state::state_path(&config.state_dir, &config.pipeline);
        let cpus = config.cpus.clone().unwrap_or_else(system::allowed_cpus);
        let gpus = if config.wants_gpu() {
            Gpus::probe()
        } else {
            Gpus::not_wanted()
        };
        let checker = HealthChecker::new(config.health_timeout);
        let mut backend = ProcessBackend {
            port_cursor: config.port_first,
            config,
            state_path,
            boot_id: system::boot_id(),
            cpus,
            gpus,
            checker,
            workers: Vec::new(),
            target: None,
            backoff: BTreeMap::new(),
            pending_events: Vec::new(),
            recent_events: VecDeque::new(),
            counters: Counters::default(),
            last_written: None,
            detached: false,
            last_observe: None,
        };
        if backend.config.wants_gpu()
            && let Some(reason) = backend.gpus.unavailable_reason()
        {
            backend.event(reason.to_string());
        }
        backend.adopt()?;
        backend.save()?;
        Ok(backend)
    }

    /// Leaves the workers running and recorded, as a daemon that crashed would: the next
    /// instance adopts them.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Every worker now.
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|w| WorkerView {
                stage: w.stage.clone(),
                variant: w.variant.clone(),
                pid: w.pid,
                port: w.port,
                cores: w.cores,
                cpus: w.cpus.clone(),
                gpu: w.gpu.as_ref().map(|g| g.0),
                state: w.phase.name().to_owned(),
                own_child: w.child.is_some(),
            })
            .collect()
    }

    /// Counts since creation.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The latest events (crashes, restarts, adoption, GPU availability), oldest first.
    pub fn recent_events(&self) -> Vec<String> {
        self.recent_events.iter().cloned().collect()
    }

    fn event(&mut self, message: String) {
        eprintln!(
            "infadapt-plugin-process: pipeline {}: {message}",
            self.config.pipeline
        );
        if self.recent_events.len() == RECENT_EVENTS {
            self.recent_events.pop_front();
        }
        self.recent_events.push_back(message.clone());
        self.pending_events.push(message);
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        if !self.detached && self.config.on_exit == OnExit::Stop {
            self.stop_all();
        }
        let _ = self.save();
    }
}

impl Backend for ProcessBackend {
    fn create(config: serde_json::Value) -> Result<Self, BackendError> {
        let config = ProcessConfig::from_json(&config)?;
        Ok(ProcessBackend::new(config)?)
    }

    fn check_config(config: &serde_json::Value) -> Vec<infadapt_plugin_abi::ConfigProblem> {
        ProcessConfig::check(config)
    }

    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: BACKEND_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities {
                variant_mix: true,
                batching: true,
                cores: true,
                gpu: self.gpus.unavailable_reason().is_none(),
            },
            gpu_mem_mb: self
                .gpus
                .list()
                .ok()
                .map(|gpus| gpus.iter().map(|g| g.total_mb).sum::<f64>())
                .filter(|mb| mb.is_finite() && *mb > 0.0),
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        let now = Instant::now();
        let changes = self.step(now);
        self.pending_events.extend(changes);
        let counted = self.workers.iter().any(|w| w.stats_url.is_some());
        let (completed, in_flight) = self.read_counters();
        let mut observation = self.observation(now);
        for stage in &mut observation.stages {
            stage.queue_len = in_flight.get(&stage.stage).copied().unwrap_or(0.0);
        }
        if counted && let Some(previous) = self.last_observe {
            let seconds = now.duration_since(previous).as_secs_f64().max(1e-3);
            let whole = (seconds.round() as usize).max(1);
            observation.completed = completed;
            observation.arrivals_per_second = vec![completed as f64 / seconds; whole];
        }
        self.last_observe = Some(now);
        Ok(observation)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        self.check_plan(plan)?;
        let now = Instant::now();
        let target_changed = self.target.as_ref() != Some(plan);
        self.target = Some(plan.clone());
        if target_changed {
            // A new target is worth recording even if no worker changes yet.
            self.last_written = None;
        }
        let changes = self.step(now);
        let changed = !changes.is_empty();
        let mut actions = std::mem::take(&mut self.pending_events);
        actions.extend(changes);
        Ok(ApplyReport {
            changed,
            actions,
            ..ApplyReport::default()
        })
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        let now = Instant::now();
        let changes = self.step(now);
        self.pending_events.extend(changes);
        let count = |name: &str| {
            self.workers
                .iter()
                .filter(|w| w.phase.name() == name)
                .count()
        };
        let crash_looping: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, b)| b.failures >= 3)
            .map(|((stage, variant), b)| {
                format!("{stage}/{variant} failed {} times in a row", b.failures)
            })
            .collect();
        let mut detail = format!(
            "{} ready, {} starting, {} draining, {} stopping; {} started, {} crashed, {} adopted",
            count("ready"),
            count("starting"),
            count("draining"),
            count("stopping"),
            self.counters.started,
            self.counters.crashes,
            self.counters.adopted
        );
        if !crash_looping.is_empty() {
            detail.push_str(&format!("; {}", crash_looping.join("; ")));
        }
        if let Some(reason) = self.gpus.unavailable_reason()
            && self.config.wants_gpu()
        {
            detail.push_str(&format!("; {reason}"));
        }
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: crash_looping.is_empty(),
            detail,
        })
    }
}

infadapt_plugin_abi::export_plugin!(ProcessBackend);
