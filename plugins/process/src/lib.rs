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

mod config;
mod error;
mod gpu;
mod state;
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
            Gpus::unavailable("no variant asks for a GPU")
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
            let reason = reason.to_owned();
            backend.event(reason);
        }
        backend.adopt()?;
        backend.save()?;
        Ok(backend)
    }

    /// Reads the state file and takes over the recorded workers that still run.
    fn adopt(&mut self) -> Result<(), ProcessError> {
        let Some(recorded) = state::read(&self.state_path)? else {
            return Ok(());
        };
        let now = Instant::now();
        let same_boot = recorded.boot_id == self.boot_id && !self.boot_id.is_empty();
        for record in recorded.workers {
            let label = format!(
                "{}/{}: recorded worker pid {} (port {})",
                record.stage, record.variant, record.pid, record.port
            );
            if !same_boot || !system::is_same_live_process(record.pid, record.start_ticks) {
                self.counters.stale += 1;
                self.event(format!(
                    "{label} is gone (or its PID now belongs to another process); forgotten"
                ));
                continue;
            }
            let readiness_timeout = self
                .config
                .variants
                .get(&record.variant)
                .map_or(Duration::from_secs(60), |v| v.readiness_timeout);
            let gpu_mem_mb = self
                .config
                .variants
                .get(&record.variant)
                .map_or(0.0, |v| v.gpu_mem_mb);
            let phase = match record.state.as_str() {
                "draining" | "stopping" => Phase::Draining { since: now },
                _ => Phase::Starting { since: now },
            };
            let stats_url = self.config.variants.get(&record.variant).and_then(|v| {
                let values = self.placeholder_values(
                    &record.stage,
                    &record.variant,
                    record.batch,
                    record.cores,
                    &record.cpus,
                    record.gpu,
                    record.port,
                );
                v.stats_url.as_ref().map(|t| render(t, &values))
            });
            self.counters.adopted += 1;
            self.event(format!("{label} adopted ({})", phase.name()));
            self.workers.push(Worker {
                stage: record.stage,
                variant: record.variant,
                batch: record.batch,
                cores: record.cores,
                cpus: record.cpus,
                gpu: record.gpu.zip(record.gpu_uuid),
                gpu_mem_mb,
                port: record.port,
                pid: record.pid,
                start_ticks: record.start_ticks,
                argv: record.argv,
                url: record.url,
                health_url: record.health_url,
                stats_url,
                served_seen: None,
                stats_error_reported: false,
                readiness_timeout,
                phase,
                child: None,
            });
        }
        self.target = recorded_target(&self.state_path);
        if let Some(last) = self.workers.iter().map(|w| w.port).max() {
            self.port_cursor = next_port(last, self.config.port_first, self.config.port_last);
        }
        Ok(())
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

    fn failure(&mut self, key: (String, String), now: Instant) -> Duration {
        let entry = self.backoff.entry(key).or_insert(Backoff {
            failures: 0,
            not_before: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let delay = exponential_backoff(
            self.config.restart_backoff,
            self.config.restart_backoff_max,
            entry.failures,
        );
        entry.not_before = now + delay;
        delay
    }

    /// Makes progress towards the target: reap, health-check, start, drain, stop, record.
    /// Returns the changes made (starts and stops), for apply's report.
    fn step(&mut self, now: Instant) -> Vec<String> {
        let mut changes = Vec::new();
        self.reap(now);
        self.check_health(now);
        self.reconcile(now, &mut changes);
        self.advance_stops(now, &mut changes);
        self.reap(now);
        if let Err(e) = self.save() {
            self.event(e.to_string());
        }
        changes
    }

    /// Removes workers that exited; a wanted one that did is a crash and is restarted
    /// after its backoff.
    fn reap(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.workers.len() {
            let worker = &mut self.workers[index];
            let outcome = match worker.child.as_mut() {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Reaped::Exited(describe_exit(status)),
                    Ok(None) => Reaped::Running,
                    Err(_) => system::reap(worker.pid, worker.start_ticks),
                },
                None => system::reap(worker.pid, worker.start_ticks),
            };
            let Reaped::Exited(how) = outcome else {
                index += 1;
                continue;
            };
            let worker = self.workers.remove(index);
            if worker.phase.is_live() {
                self.counters.crashes += 1;
                let delay = self.failure(worker.key(), now);
                self.event(format!(
                    "{} {how} while {}; restarting in {:.1} s",
                    worker.label(),
                    worker.phase.name(),
                    delay.as_secs_f64()
                ));
            } else {
                self.counters.stopped += 1;
            }
        }
    }

    /// Health-checks starting and ready workers (in parallel, each within the timeout).
    fn check_health(&mut self, now: Instant) {
        let targets: Vec<(usize, String)> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.phase.is_live())
            .map(|(i, w)| (i, w.health_url.clone()))
            .collect();
        let checker = &self.checker;
        let results: Vec<(usize, Result<(), String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(i, url)| (*i, scope.spawn(move || checker.check(url))))
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join()
                            .unwrap_or_else(|_| Err("health check panicked".to_owned())),
                    )
                })
                .collect()
        });
        for (index, result) in results {
            let worker = &mut self.workers[index];
            match (worker.phase, result) {
                (Phase::Starting { .. }, Ok(())) => {
                    worker.phase = Phase::Ready { failures: 0 };
                    // Threads started while it loaded get the mask too.
                    let _ = system::pin(worker.pid, &worker.cpus);
                    let key = worker.key();
                    self.backoff.remove(&key);
                }
                (Phase::Starting { since }, Err(error)) => {
                    let _ = system::pin(worker.pid, &worker.cpus);
                    if now.duration_since(since) > worker.readiness_timeout {
                        let label = worker.label();
                        let limit = worker.readiness_timeout.as_secs_f64();
                        let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                        worker.phase = Phase::Stopping {
                            since: now,
                            killed: true,
                        };
                        let key = worker.key();
                        self.counters.crashes += 1;
                        let delay = self.failure(key, now);
                        self.event(format!(
                            "{label} not ready within {limit:.1} s ({error}); killed, \
                             restarting in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    }
                }
                (Phase::Ready { .. }, Ok(())) => worker.phase = Phase::Ready { failures: 0 },
                (Phase::Ready { failures }, Err(error)) => {
                    let failures = failures + 1;
                    worker.phase = Phase::Ready { failures };
                    if failures >= self.config.unhealthy_after {
                        let label = worker.label();
                        let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
                        worker.phase = Phase::Stopping {
                            since: now,
                            killed: false,
                        };
                        let key = worker.key();
                        self.counters.crashes += 1;
                        let delay = self.failure(key, now);
                        self.event(format!(
                            "{label} failed {failures} health checks in a row ({error}); \
                             stopped, replacing in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `worker` runs what the config would start now for its own spec and place.
    fn matches_config(&self, worker: &Worker) -> bool {
        let Some(variant) = self.config.variants.get(&worker.variant) else {
            return false;
        };
        let values = self.placeholder_values(
            &worker.stage,
            &worker.variant,
            worker.batch,
            worker.cores,
            &worker.cpus,
            worker.gpu.as_ref().map(|g| g.0),
            worker.port,
        );
        let argv: Vec<String> = variant.command.iter().map(|a| render(a, &values)).collect();
        argv == worker.argv
    }

    #[allow(clippy::too_many_arguments)]
    fn placeholder_values(
        &self,
        stage: &str,
        variant: &str,
        batch: u32,
        cores: u32,
        cpus: &[usize],
        gpu: Option<u32>,
        port: u16,
    ) -> BTreeMap<&'static str, String> {
        let mut values = BTreeMap::new();
        values.insert("port", port.to_string());
        values.insert("host", self.config.host.clone());
        values.insert("gpu", gpu.map(|g| g.to_string()).unwrap_or_default());
        values.insert("cores", cores.to_string());
        values.insert("cpus", system::cpu_list(cpus));
        values.insert("variant", variant.to_owned());
        values.insert("stage", stage.to_owned());
        values.insert("batch", batch.to_string());
        values
    }

    /// Starts missing replicas and drains surplus and replaced ones.
    fn reconcile(&mut self, now: Instant, changes: &mut Vec<String>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let planned_stages: Vec<&str> = target.stages.iter().map(|s| s.stage.as_str()).collect();
        // Stages the plan does not name at all: their workers go.
        for worker in &mut self.workers {
            if !planned_stages.contains(&worker.stage.as_str()) {
                retire(worker, now, changes);
            }
        }
        for stage in &target.stages {
            let wants: Vec<Want> = stage
                .assignments
                .iter()
                .filter(|a| a.replicas > 0)
                .map(|a| Want {
                    variant: a.variant.clone(),
                    batch: a.batch,
                    cores: a.cores,
                    replicas: a.replicas,
                })
                .collect();
            let matching: Vec<bool> = self
                .workers
                .iter()
                .map(|w| self.matches_config(w))
                .collect();
            let spec_of = |w: &Worker, fits: bool| -> Option<usize> {
                if w.stage != stage.stage || !fits {
                    return None;
                }
                wants.iter().position(|x| {
                    x.variant == w.variant && x.batch == w.batch && x.cores == w.cores
                })
            };
            let mut settled = true;
            for (spec, want) in wants.iter().enumerate() {
                let mut live: Vec<usize> = (0..self.workers.len())
                    .filter(|&i| {
                        // Workers started in this pass match their spec by construction.
                        let fits = matching.get(i).copied().unwrap_or(true);
                        self.workers[i].phase.is_live()
                            && spec_of(&self.workers[i], fits) == Some(spec)
                    })
                    .collect();
                let have = live.len() as u32;
                if have > want.replicas {
                    // Surplus: the starting ones first (no traffic yet), newest first.
                    live.sort_by_key(|&i| {
                        let w = &self.workers[i];
                        (
                            matches!(w.phase, Phase::Ready { .. }),
                            std::cmp::Reverse(w.start_ticks),
                        )
                    });
                    for &i in live.iter().take((have - want.replicas) as usize) {
                        retire(&mut self.workers[i], now, changes);
                    }
                }
                let ready = live
                    .iter()
                    .filter(|&&i| matches!(self.workers[i].phase, Phase::Ready { .. }))
                    .count() as u32;
                if ready < want.replicas {
                    settled = false;
                }
                if have < want.replicas {
                    let key = (stage.stage.clone(), want.variant.clone());
                    let gate_open = self.backoff.get(&key).is_none_or(|b| now >= b.not_before);
                    if gate_open {
                        for _ in have..want.replicas {
                            match self.spawn(&stage.stage, want, now) {
                                Ok(message) => changes.push(message),
                                Err(error) => {
                                    let delay = self.failure(key.clone(), now);
                                    self.event(format!(
                                        "{error}; retrying in {:.1} s",
                                        delay.as_secs_f64()
                                    ));
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            // Replaced workers (another variant, batch, cores or command) drain once the
            // stage's wanted workers are all ready; ones still starting stop at once.
            for (i, fits) in matching.iter().enumerate() {
                let worker = &self.workers.get(i);
                let Some(worker) = worker else { break };
                if worker.stage != stage.stage || !worker.phase.is_live() {
                    continue;
                }
                if spec_of(worker, *fits).is_none() {
                    let starting = matches!(worker.phase, Phase::Starting { .. });
                    if starting || settled {
                        retire(&mut self.workers[i], now, changes);
                    }
                }
            }
        }
    }

    /// SIGTERM to drained workers, SIGKILL to those past the stop timeout.
    fn advance_stops(&mut self, now: Instant, changes: &mut Vec<String>) {
        for worker in &mut self.workers {
            match worker.phase {
                Phase::Draining { since } if now.duration_since(since) >= self.config.drain => {
                    let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
                    worker.phase = Phase::Stopping {
                        since: now,
                        killed: false,
                    };
                    changes.push(format!("{} drained; SIGTERM sent", worker.label()));
                }
                Phase::Stopping {
                    since,
                    killed: false,
                } if now.duration_since(since) >= self.config.stop_timeout => {
                    let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                    worker.phase = Phase::Stopping {
                        since,
                        killed: true,
                    };
                    changes.push(format!(
                        "{} did not stop within {:.1} s of SIGTERM; SIGKILL sent",
                        worker.label(),
                        self.config.stop_timeout.as_secs_f64()
                    ));
                }
                _ => {}
            }
        }
    }

    /// A free port of the range, not held by any worker of ours (round robin).
    fn allocate_port(&mut self) -> Result<u16, String> {
        let (first, last) = (self.config.port_first, self.config.port_last);
        let span = u32::from(last - first) + 1;
        let mut port = self.port_cursor.clamp(first, last);
        for _ in 0..span {
            let held = self.workers.iter().any(|w| w.port == port);
            if !held && system::port_is_free(&self.config.host, port) {
                self.port_cursor = next_port(port, first, last);
                return Ok(port);
            }
            port = next_port(port, first, last);
        }
        Err(format!(
            "no free port in port_range [{first}, {last}] on {}",
            self.config.host
        ))
    }

    /// The `cores` least-used CPUs (disjoint from other workers while the host has enough;
    /// shared, least-used first, when it does not). The flag says whether any is shared.
    fn choose_cpus(&self, cores: u32) -> (Vec<usize>, bool) {
        let mut usage: BTreeMap<usize, usize> = self.cpus.iter().map(|&c| (c, 0)).collect();
        for worker in &self.workers {
            for cpu in &worker.cpus {
                if let Some(n) = usage.get_mut(cpu) {
                    *n += 1;
                }
            }
        }
        let mut order: Vec<(usize, usize)> = usage.into_iter().map(|(c, n)| (n, c)).collect();
        order.sort_unstable();
        let take = (cores.max(1) as usize).min(order.len());
        let mut chosen: Vec<usize> = order[..take].iter().map(|&(_, c)| c).collect();
        chosen.sort_unstable();
        let shared = order[..take].iter().any(|&(n, _)| n > 0);
        (chosen, shared)
    }

    /// A GPU for a worker of `variant`, or why it gets none (`Err` only when required).
    fn choose_gpu(&mut self, variant: &VariantConfig) -> Result<Option<GpuInfo>, String> {
        if variant.gpu == GpuUse::None {
            return Ok(None);
        }
        let gpus = match self.gpus.list() {
            Ok(g) => g,
            Err(reason) => {
                return if variant.gpu == GpuUse::Required {
                    Err(reason)
                } else {
                    Ok(None)
                };
            }
        };
        let mut reserved: BTreeMap<u32, f64> = BTreeMap::new();
        for worker in &self.workers {
            if let (Some((index, _)), Phase::Starting { .. }) = (&worker.gpu, worker.phase) {
                *reserved.entry(*index).or_default() += worker.gpu_mem_mb;
            }
        }
        match gpu::choose(&gpus, &reserved, variant.gpu_mem_mb) {
            Some(g) => Ok(Some(g.clone())),
            None if variant.gpu == GpuUse::Required => Err(format!(
                "no GPU has {:.0} MiB free (free now: {})",
                variant.gpu_mem_mb,
                gpus.iter()
                    .map(|g| format!("GPU {} {:.0} MiB", g.index, g.free_mb))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Ok(None),
        }
    }

    /// Starts one worker for `want` in `stage`.
    fn spawn(&mut self, stage: &str, want: &Want, now: Instant) -> Result<String, ProcessError> {
        let spawn_error = |message: String| ProcessError::Spawn {
            stage: stage.to_owned(),
            variant: want.variant.clone(),
            message,
        };
        let variant = self
            .config
            .variants
            .get(&want.variant)
            .cloned()
            .ok_or_else(|| spawn_error("no such variant in the config".into()))?;
        let port = self.allocate_port().map_err(spawn_error)?;
        let (cpus, shared) = self.choose_cpus(want.cores);
        let gpu = self.choose_gpu(&variant).map_err(spawn_error)?;
        let values = self.placeholder_values(
            stage,
            &want.variant,
            want.batch,
            want.cores,
            &cpus,
            gpu.as_ref().map(|g| g.index),
            port,
        );
        let argv: Vec<String> = variant.command.iter().map(|a| render(a, &values)).collect();
        std::fs::create_dir_all(&self.config.log_dir).map_err(|e| {
            spawn_error(format!(
                "cannot create log_dir {}: {e}",
                self.config.log_dir.display()
            ))
        })?;
        let log_path = self
            .config
            .log_dir
            .join(format!("{stage}-{}-{port}.log", want.variant));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| spawn_error(format!("cannot open {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| spawn_error(format!("cannot share {}: {e}", log_path.display())))?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env(
                "CUDA_VISIBLE_DEVICES",
                gpu.as_ref().map(|g| g.uuid.clone()).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: signals reach the worker's children too, and a
            // signal to the daemon's group does not reach the worker.
            .process_group(0);
        for (key, value) in &variant.env {
            command.env(key, render(value, &values));
        }
        if let Some(dir) = &variant.working_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| spawn_error(format!("cannot run `{}`: {e}", argv[0])))?;
        let pid = child.id() as i32;
        if let Err(e) = system::pin(pid, &cpus) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(e));
        }
        let start_ticks = system::proc_stat(pid).map_or(0, |s| s.start_ticks);
        self.counters.started += 1;
        let mut message = format!(
            "{stage}/{}: started worker pid {pid} on port {port}, CPUs {}",
            want.variant,
            system::cpu_list(&cpus)
        );
        if let Some(g) = &gpu {
            message.push_str(&format!(", GPU {} ({})", g.index, g.name));
        }
        if shared {
            message.push_str(&format!(
                " (shared with other workers: {} usable CPUs)",
                self.cpus.len()
            ));
        }
        self.workers.push(Worker {
            stage: stage.to_owned(),
            variant: want.variant.clone(),
            batch: want.batch,
            cores: want.cores,
            cpus,
            gpu: gpu.map(|g| (g.index, g.uuid)),
            gpu_mem_mb: variant.gpu_mem_mb,
            port,
            pid,
            start_ticks,
            argv,
            url: render(&variant.url, &values),
            health_url: render(&variant.health_url, &values),
            stats_url: variant.stats_url.as_ref().map(|t| render(t, &values)),
            served_seen: Some(0),
            stats_error_reported: false,
            readiness_timeout: variant.readiness_timeout,
            phase: Phase::Starting { since: now },
            child: Some(child),
        });
        Ok(message)
    }

    /// Writes the state file when it changed.
    fn save(&mut self) -> Result<(), ProcessError> {
        let state = StateFile {
            schema: state::STATE_SCHEMA,
            boot_id: self.boot_id.clone(),
            writer_pid: std::process::id(),
            workers: self.workers.iter().map(Worker::record).collect(),
        };
        if self.last_written.as_ref() == Some(&state) {
            return Ok(());
        }
        state::write(&self.state_path, &state)?;
        write_target(&self.state_path, self.target.as_ref())?;
        self.last_written = Some(state);
        Ok(())
    }

    /// Checks a plan against the config and the GPUs.
    fn check_plan(&self, plan: &PlanMessage) -> Result<(), ProcessError> {
        let mut problems = Vec::new();
        let mut gpu_need_mb = 0.0;
        for stage in &plan.stages {
            for a in &stage.assignments {
                let at = format!("stage `{}` variant `{}`", stage.stage, a.variant);
                let Some(variant) = self.config.variants.get(&a.variant) else {
                    problems.push(format!("{at}: not in the backend's `variants`"));
                    continue;
                };
                if a.replicas > MAX_REPLICAS {
                    problems.push(format!(
                        "{at}: {} replicas (at most {MAX_REPLICAS})",
                        a.replicas
                    ));
                }
                if a.cores == 0 || a.batch == 0 {
                    problems.push(format!("{at}: cores and batch must be at least 1"));
                }
                if variant.gpu == GpuUse::Required {
                    if let Some(reason) = self.gpus.unavailable_reason() {
                        problems.push(format!("{at}: requires a GPU: {reason}"));
                    }
                    gpu_need_mb += variant.gpu_mem_mb * f64::from(a.replicas);
                }
            }
        }
        if gpu_need_mb > 0.0
            && let Ok(gpus) = self.gpus.list()
        {
            let total: f64 = gpus.iter().map(|g| g.total_mb).sum();
            if gpu_need_mb > total {
                problems.push(format!(
                    "needs {gpu_need_mb:.0} MiB of GPU memory; the GPUs have {total:.0} MiB"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProcessError::Plan(problems.join("; ")))
        }
    }

    /// Reads the request counters of the workers that have a `stats_url` (in parallel):
    /// requests answered since the previous read, and requests in flight per stage.
    fn read_counters(&mut self) -> (u64, BTreeMap<String, f64>) {
        let targets: Vec<(usize, String)> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                !matches!(
                    w.phase,
                    Phase::Starting { .. } | Phase::Stopping { killed: true, .. }
                )
            })
            .filter_map(|(i, w)| w.stats_url.clone().map(|u| (i, u)))
            .collect();
        let checker = &self.checker;
        let results: Vec<(usize, Result<serde_json::Value, String>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = targets
                    .iter()
                    .map(|(i, url)| (*i, scope.spawn(move || checker.get_json(url))))
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        let answer = h
                            .join()
                            .unwrap_or_else(|_| Err("stats read panicked".to_owned()));
                        (i, answer)
                    })
                    .collect()
            });
        let mut completed = 0;
        let mut in_flight: BTreeMap<String, f64> = BTreeMap::new();
        let mut problems = Vec::new();
        for (index, answer) in results {
            let worker = &mut self.workers[index];
            let counters = answer.and_then(|json| {
                let served = json["served"]
                    .as_u64()
                    .ok_or("`served` is missing or not a whole number")?;
                let busy = json["in_flight"].as_f64().unwrap_or(0.0);
                if !busy.is_finite() || busy < 0.0 {
                    return Err("`in_flight` is not a count".to_owned());
                }
                Ok((served, busy))
            });
            match counters {
                Ok((served, busy)) => {
                    completed += match worker.served_seen {
                        Some(seen) if served >= seen => served - seen,
                        // The counter went back: the worker restarted its count.
                        Some(_) => served,
                        None => 0,
                    };
                    worker.served_seen = Some(served);
                    *in_flight.entry(worker.stage.clone()).or_default() += busy;
                }
                Err(error) => {
                    if !worker.stats_error_reported {
                        worker.stats_error_reported = true;
                        problems.push(format!("{}: stats unreadable: {error}", worker.label()));
                    }
                }
            }
        }
        for problem in problems {
            self.event(problem);
        }
        (completed, in_flight)
    }

    fn observation(&self, now: Instant) -> PluginObservation {
        let mut stages: Vec<String> = self
            .target
            .iter()
            .flat_map(|t| t.stages.iter().map(|s| s.stage.clone()))
            .collect();
        for worker in &self.workers {
            if !stages.contains(&worker.stage) {
                stages.push(worker.stage.clone());
            }
        }
        let mut observed = Vec::new();
        let mut deployed = PlanMessage::default();
        for stage in &stages {
            let ready = self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Ready { .. }))
                .count() as u32;
            let starting = self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Starting { .. }))
                .count() as u32;
            // Wanted replicas that are neither ready nor starting (waiting out a backoff).
            let wanted: u32 = self
                .target
                .iter()
                .flat_map(|t| t.stages.iter().filter(|s| &s.stage == stage))
                .flat_map(|s| s.assignments.iter().map(|a| a.replicas))
                .sum();
            let waiting = wanted.saturating_sub(ready + starting);
            observed.push(ObservedStage {
                stage: stage.clone(),
                ready_replicas: ready,
                starting_replicas: starting + waiting,
                ..ObservedStage::default()
            });
            let mut groups: Vec<AssignmentMessage> = Vec::new();
            for worker in self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Ready { .. }))
            {
                match groups.iter_mut().find(|a| {
                    a.variant == worker.variant
                        && a.batch == worker.batch
                        && a.cores == worker.cores
                }) {
                    Some(a) => a.replicas += 1,
                    None => groups.push(AssignmentMessage {
                        variant: worker.variant.clone(),
                        batch: worker.batch,
                        cores: worker.cores,
                        replicas: 1,
                        share: 0.0,
                    }),
                }
            }
            let planned_share = |variant: &str| {
                self.target
                    .iter()
                    .flat_map(|t| t.stages.iter().filter(|s| &s.stage == stage))
                    .flat_map(|s| s.assignments.iter())
                    .find(|a| a.variant == variant)
                    .map(|a| a.share)
            };
            let all_planned = groups.iter().all(|a| planned_share(&a.variant).is_some());
            for a in &mut groups {
                a.share = match planned_share(&a.variant) {
                    Some(share) if all_planned => share,
                    _ => f64::from(a.replicas) / f64::from(ready.max(1)),
                };
            }
            if !groups.is_empty() {
                deployed.stages.push(StagePlanMessage {
                    stage: stage.clone(),
                    assignments: groups,
                });
            }
        }
        let endpoints = self
            .workers
            .iter()
            .map(|w| EndpointMessage {
                stage: w.stage.clone(),
                variant: w.variant.clone(),
                url: w.url.clone(),
                protocol: EndpointProtocol::RawHttp,
                state: match w.phase {
                    Phase::Starting { .. } => EndpointState::Starting,
                    Phase::Ready { .. } => EndpointState::Ready,
                    Phase::Draining { .. } | Phase::Stopping { .. } => EndpointState::Draining,
                },
                weight: 1.0,
            })
            .collect();
        let _ = now;
        PluginObservation {
            stages: observed,
            deployed,
            endpoints,
            ..PluginObservation::default()
        }
    }

    /// Stops every worker: SIGTERM, up to `stop_timeout_s` for them to exit, then SIGKILL;
    /// waits for all of them.
    fn stop_all(&mut self) {
        let began = Instant::now();
        for worker in &mut self.workers {
            let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
            worker.phase = Phase::Stopping {
                since: began,
                killed: false,
            };
        }
        // Recorded at once: an instance created meanwhile (a reload whose stop outlasted
        // the daemon's grace period) adopts them as leaving, not as serving.
        let _ = self.save();
        let mut killed = false;
        while !self.workers.is_empty() {
            self.reap(Instant::now());
            if self.workers.is_empty() {
                break;
            }
            if !killed && began.elapsed() >= self.config.stop_timeout {
                for worker in &self.workers {
                    let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                }
                killed = true;
            }
            if killed && began.elapsed() >= self.config.stop_timeout + Duration::from_secs(5) {
                // Only processes we cannot reap (adopted, stuck in the kernel) get here.
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Marks a worker as leaving: one still starting stops at once, a ready one drains.
fn retire(worker: &mut Worker, now: Instant, changes: &mut Vec<String>) {
    match worker.phase {
        Phase::Starting { .. } => {
            let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
            worker.phase = Phase::Stopping {
                since: now,
                killed: false,
            };
            changes.push(format!(
                "{} not needed before it was ready; SIGTERM sent",
                worker.label()
            ));
        }
        Phase::Ready { .. } => {
            worker.phase = Phase::Draining { since: now };
            changes.push(format!("{} draining", worker.label()));
        }
        Phase::Draining { .. } | Phase::Stopping { .. } => {}
    }
}

fn next_port(port: u16, first: u16, last: u16) -> u16 {
    if port >= last { first } else { port + 1 }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => "ended".to_owned(),
    }
}

/// The target plan is kept beside the state file, so a restarted daemon keeps reconciling.
fn target_path(state_path: &std::path::Path) -> PathBuf {
    state_path.with_extension("target.json")
}

fn write_target(
    state_path: &std::path::Path,
    target: Option<&PlanMessage>,
) -> Result<(), ProcessError> {
    let path = target_path(state_path);
    let Some(target) = target else {
        return Ok(());
    };
    let text = serde_json::to_vec(target).map_err(|e| ProcessError::State {
        path: path.display().to_string(),
        message: format!("cannot encode: {e}"),
    })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| ProcessError::State {
            path: path.display().to_string(),
            message: format!("cannot write: {e}"),
        })
}

fn recorded_target(state_path: &std::path::Path) -> Option<PlanMessage> {
    let text = std::fs::read_to_string(target_path(state_path)).ok()?;
    serde_json::from_str(&text).ok()
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
