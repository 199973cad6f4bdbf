//! The service: one task per pipeline, the HTTP API, service-manager notifications, and a
//! main loop over a closed set of [`Event`]s (signals, timers) in one `select!`.
//!
//! SIGHUP re-reads and fully validates the configuration, then restarts only the pipelines
//! whose configuration changed; on any problem the running configuration stays. A restarted
//! pipeline keeps its router's socket (the service holds it, see `router::Front`): the old
//! router finishes what it accepted, new requests wait for the new one. SIGTERM or
//! SIGINT lets every pipeline finish its tick (an in-flight apply included), persists state
//! and returns within the grace period; a second signal exits at once.

pub mod liveness;
pub mod notify;
pub mod pipeline;
pub mod process;
pub mod sim_backend;
pub mod state;
pub mod status;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::api::access::{self, WriteAccess};
use crate::config::{DaemonConfig, HttpListen, PipelineConfig, load_config};
use crate::plugin_host::{PluginHost, TrialLoad};
use crate::router::{Front, RouterSettings};
use pipeline::{DecisionSink, TaskOptions, run_pipeline_at};
use status::Registry;

/// Why the service could not run.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(
        "no pipeline could start, so there is nothing to serve ({0}); fix the configuration \
         or the backends, or set `require_running_pipeline = false` in [daemon] to start anyway"
    )]
    NoPipelineRuns(String),
    #[error("[daemon.http] token_file: {0}")]
    Token(crate::api::access::TokenFileError),
    /// The pipeline's control loop cannot be built from its settings.
    #[error("{0}")]
    ControlLoop(infadapt_control::ControlError),
    #[error("building the control loop panicked")]
    ControlLoopPanicked,
    /// The open files limit cannot be read (a warning: the service runs with it as it is).
    #[error("cannot read it: {0}")]
    OpenFilesLimitUnreadable(nix::errno::Errno),
    #[error("cannot raise it from {soft} to {wanted}: {source}")]
    OpenFilesLimitNotRaised {
        soft: u64,
        wanted: u64,
        source: nix::errno::Errno,
    },
    /// The linked simulator's backend settings do not read as its settings (the reader's
    /// message).
    #[error("{0}")]
    SimSettings(serde_json::Error),
    #[error("rps must be >= 0, got {0}")]
    SimNegativeRps(f64),
    #[error("day_s must be at least 1")]
    SimNoDay,
    /// The simulator refuses the settings of its generated workload.
    #[error("{0}")]
    SimWorkload(infadapt_sim::SimError),
}

/// How to run the service.
#[derive(Clone)]
pub struct ServiceOptions {
    pub config: DaemonConfig,
    pub dry_run: bool,
    /// Keep state in the configured state directory (off for the demo).
    pub persist_state: bool,
    /// Serve the HTTP API (off for the demo).
    pub serve_http: bool,
    /// Virtual seconds per wall second (1 in service).
    pub speed: f64,
    /// Every pipeline stops by itself after this many ticks, and then the service (demo).
    pub max_ticks: Option<u64>,
    pub on_decision: Option<DecisionSink>,
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("config", &self.config.path)
            .field("dry_run", &self.dry_run)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

/// Everything the main loop reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Reload,
    Stop(&'static str),
    Watchdog,
    Status,
}

struct Running {
    config: PipelineConfig,
    stop: watch::Sender<bool>,
    /// New control settings for the running task (see `App::reload`).
    reconfigure: mpsc::UnboundedSender<PipelineConfig>,
    handle: JoinHandle<()>,
}

/// The running service.
struct App {
    options: ServiceOptions,
    config: DaemonConfig,
    registry: Registry,
    plugins: Arc<PluginHost>,
    pipelines: BTreeMap<String, Running>,
    /// The bound router address of each pipeline with a router (as configured, and the
    /// listening front): kept across restarts of the pipeline while the address stays.
    fronts: BTreeMap<String, (std::net::SocketAddr, Front)>,
}

/// How the service ended.
#[derive(Debug)]
pub struct Stopped {
    /// Every pipeline's final status.
    pub registry: Registry,
    /// When stopping began (the grace period runs from here).
    pub stop_began: Instant,
}

/// The uid this process runs as (the service user): the owner of `/proc/self`.
pub(crate) fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

impl App {
    fn task_options(&self) -> TaskOptions {
        TaskOptions {
            dry_run: self.options.dry_run,
            state_dir: self
                .options
                .persist_state
                .then(|| self.config.daemon.resolved_state_dir()),
            backend_timeout: Duration::from_secs_f64(self.config.daemon.backend_timeout_s),
            plugins: Arc::clone(&self.plugins),
            speed: self.options.speed,
            on_decision: self.options.on_decision.clone(),
            max_ticks: self.options.max_ticks,
        }
    }

    /// The router front for pipeline `name` with `settings`: the one it has when the address
    /// is the same (and not an ephemeral port 0), else a new one; a front it no longer uses
    /// is closed. `None` without a router.
    async fn front_for(
        &mut self,
        name: &str,
        settings: Option<&RouterSettings>,
    ) -> Option<Result<Front, crate::router::RouterError>> {
        if let Some((address, front)) = self.fronts.get(name) {
            if settings.is_some_and(|s| s.listen == *address && address.port() != 0) {
                return Some(Ok(front.clone()));
            }
            front.close();
            self.fronts.remove(name);
        }
        let settings = settings?;
        let bound = Front::bind(settings).await;
        if let Ok(front) = &bound {
            self.fronts
                .insert(name.to_owned(), (settings.listen, front.clone()));
        }
        Some(bound)
    }

    async fn start(&mut self, config: PipelineConfig) {
        // A pipeline paused over the API stays paused across restarts and, when a reload
        // removed it and brings it back, across that too: the state directory keeps the
        // pauses of pipelines the service does not run.
        let kept_paused = !self.registry.contains(&config.name)
            && self.options.persist_state
            && match state::load_paused(&self.config.daemon.resolved_state_dir()) {
                Ok(paused) => paused.contains(&config.name),
                Err(e) => {
                    warn!("cannot read the paused pipelines; none kept paused: {e}");
                    false
                }
            };
        if kept_paused {
            info!(pipeline = %config.name, "paused (kept from before the restart)");
        }
        // Known to the API from now on, before its task first runs: a request for it does
        // not meet an unknown pipeline.
        self.registry.update(&config.name, |s| {
            s.state = "starting".to_owned();
            s.paused |= kept_paused;
        });
        let (stop, stopped) = watch::channel(false);
        let (reconfigure, reconfigured) = mpsc::unbounded_channel();
        let front = self.front_for(&config.name, config.router.as_ref()).await;
        let handle = tokio::spawn(run_pipeline_at(
            config.clone(),
            self.task_options(),
            self.registry.clone(),
            stopped,
            reconfigured,
            front,
        ));
        self.pipelines.insert(
            config.name.clone(),
            Running {
                config,
                stop,
                reconfigure,
                handle,
            },
        );
    }

    async fn stop_one(&mut self, name: &str) {
        if let Some(running) = self.pipelines.remove(name) {
            let _ = running.stop.send(true);
            let grace = Duration::from_secs_f64(self.config.daemon.grace_s);
            if tokio::time::timeout(grace, running.handle).await.is_err() {
                warn!(
                    pipeline = name,
                    "pipeline did not stop within the grace period"
                );
            }
        }
    }

    async fn reload(&mut self) {
        notify::reloading();
        let path = self.config.path.clone();
        info!(config = %path.display(), "reloading configuration");
        let loaded = tokio::task::spawn_blocking(move || load_config(&path)).await;
        match loaded {
            Ok(Ok(new)) => {
                for warning in &new.warnings {
                    warn!("{warning}");
                }
                if new.daemon != self.config.daemon {
                    warn!("changes to [daemon] take effect after a restart");
                }
                let mut changed = Vec::new();
                let mut in_place = Vec::new();
                for name in self.pipelines.keys().cloned().collect::<Vec<_>>() {
                    let now = new.pipelines.iter().find(|p| p.name == name);
                    // Only the control settings changed (weights, limits, solver, forecast,
                    // damping, period): the task takes them in place, so the backend, its
                    // workers and the router, with the requests in flight, are untouched.
                    if let (Some(now), Some(running)) = (now, self.pipelines.get_mut(&name))
                        && now != &running.config
                        && now.backend == running.config.backend
                        && now.router == running.config.router
                        && now.control.problem.pipeline == running.config.control.problem.pipeline
                        && running.reconfigure.send(now.clone()).is_ok()
                    {
                        running.config = now.clone();
                        in_place.push(name);
                        continue;
                    }
                    if now.is_none_or(|p| Some(p) != self.pipelines.get(&name).map(|r| &r.config)) {
                        self.stop_one(&name).await;
                        if now.is_none() {
                            if let Some((_, front)) = self.fronts.remove(&name) {
                                front.close();
                            }
                            self.registry.remove(&name);
                            info!(pipeline = %name, "pipeline removed");
                        }
                        changed.push(name);
                    }
                }
                for p in &new.pipelines {
                    if !self.pipelines.contains_key(&p.name) {
                        info!(pipeline = %p.name, "pipeline (re)started with the new configuration");
                        self.start(p.clone()).await;
                    }
                }
                let daemon = self.config.daemon.clone();
                self.config = DaemonConfig { daemon, ..new };
                info!(
                    restarted = %listed(&changed),
                    reconfigured = %listed(&in_place),
                    "configuration reloaded"
                );
            }
            Ok(Err(diagnostics)) => {
                for line in diagnostics.to_string().lines() {
                    error!("{line}");
                }
                error!("reload rejected; the running configuration stays");
            }
            Err(_) => error!("reload panicked; the running configuration stays"),
        }
        notify::ready(&self.registry.summary());
    }

    async fn shutdown(&mut self, why: &str, signals: &mut Signals) {
        notify::stopping();
        info!(why, "stopping: finishing in-flight work and saving state");
        for running in self.pipelines.values() {
            let _ = running.stop.send(true);
        }
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut self.pipelines)
            .into_values()
            .map(|r| r.handle)
            .collect();
        let grace = Duration::from_secs_f64(self.config.daemon.grace_s);
        let all = async {
            for h in handles {
                let _ = h.await;
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(grace, all) => {
                for (_, front) in std::mem::take(&mut self.fronts).into_values() {
                    front.close();
                }
            }
            _ = signals.term.recv() => { warn!("second signal: exiting now"); std::process::exit(1) }
            _ = signals.int.recv() => { warn!("second signal: exiting now"); std::process::exit(1) }
        }
    }
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

async fn tick_opt(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs the service until a stop signal (or every pipeline ran `max_ticks`).
///
/// A backend call that hangs keeps a thread of the blocking pool busy: end the runtime with
/// `Runtime::shutdown_timeout` (the grace left after [`Stopped::stop_began`]), not by
/// dropping it, which would wait for that thread.
pub async fn run(options: ServiceOptions) -> Result<Stopped, ServiceError> {
    let mut signals = Signals {
        hup: signal(SignalKind::hangup()).map_err(ServiceError::Signals)?,
        term: signal(SignalKind::terminate()).map_err(ServiceError::Signals)?,
        int: signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?,
    };
    let config = options.config.clone();
    let registry = Registry::new(config.daemon.decisions_kept);
    let state_dir = options
        .persist_state
        .then(|| config.daemon.resolved_state_dir());
    check_descriptors(&config, options.serve_http);
    // Turned true once the service has stopped: the API then closes, answering the requests
    // in flight first.
    let (api_stop, api_stopped) = watch::channel(false);
    let mut api_task = None;
    if options.serve_http {
        let access = match &config.daemon.token_file {
            Some(path) => WriteAccess::with_token(
                access::read_token_file(path).map_err(ServiceError::Token)?,
                state_dir.clone(),
            ),
            None => WriteAccess::disabled(),
        };
        api_task = serve_http(&config.daemon, registry.clone(), access, api_stopped).await?;
    }
    let plugins = Arc::new(
        PluginHost::new(config.daemon.plugin_dirs.clone(), own_uid()).with_trial_load(
            TrialLoad::by_this_program(Duration::from_secs_f64(
                config.daemon.backend_timeout_s.clamp(0.001, 3600.0),
            )),
        ),
    );
    let mut app = App {
        options: options.clone(),
        config: config.clone(),
        registry: registry.clone(),
        plugins,
        pipelines: BTreeMap::new(),
        fronts: BTreeMap::new(),
    };
    for p in config.pipelines {
        app.start(p).await;
    }
    // Ready once every pipeline has tried to create its backend, so that the status sent
    // with READY=1 names the ones that could not (and none is mistaken for ready).
    let settle = Duration::from_secs_f64(config.daemon.backend_timeout_s.clamp(0.001, 3600.0))
        .saturating_mul(3)
        + Duration::from_secs(1);
    let settled = async {
        while !registry.snapshot().iter().all(|s| s.state != "starting") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(settle, settled).await.is_err() {
        warn!("some pipelines are still starting; ready anyway");
    }
    let statuses = registry.snapshot();
    if config.daemon.require_running_pipeline
        && !statuses.is_empty()
        && statuses.iter().all(|s| !s.is_serving())
    {
        let why = statuses
            .iter()
            .map(|s| {
                format!(
                    "{}: {}",
                    s.name,
                    s.last_error
                        .clone()
                        .or_else(|| s.plugin.degraded.as_ref().map(|d| d.message.clone()))
                        .unwrap_or_else(|| s.state.clone())
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        error!("no pipeline could start: {why}");
        notify::status(&format!("no pipeline could start: {}", registry.summary()));
        app.shutdown("no pipeline could start", &mut signals).await;
        return Err(ServiceError::NoPipelineRuns(why));
    }
    notify::ready(&registry.summary());
    info!(
        pipelines = app.pipelines.len(),
        dry_run = options.dry_run,
        "ready"
    );

    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let status_period =
        Duration::from_secs_f64((app.config.daemon.period_s / options.speed).clamp(0.05, 10.0));
    let mut status_timer = tokio::time::interval(status_period);
    let stop_began = loop {
        let event = tokio::select! {
            _ = signals.hup.recv() => Event::Reload,
            _ = signals.term.recv() => Event::Stop("SIGTERM"),
            _ = signals.int.recv() => Event::Stop("SIGINT"),
            _ = tick_opt(&mut watchdog) => Event::Watchdog,
            _ = status_timer.tick() => Event::Status,
        };
        match event {
            Event::Reload => app.reload().await,
            Event::Watchdog => keep_alive(&registry),
            Event::Status => {
                notify::status(&registry.summary());
                if options.max_ticks.is_some()
                    && app.pipelines.values().all(|r| r.handle.is_finished())
                {
                    let began = Instant::now();
                    app.shutdown("every pipeline ran its ticks", &mut signals)
                        .await;
                    break began;
                }
            }
            Event::Stop(why) => {
                let began = Instant::now();
                app.shutdown(why, &mut signals).await;
                break began;
            }
        }
    };
    let _ = api_stop.send(true);
    if let Some(task) = api_task {
        // Requests in flight are answered; within the grace period, and briefly.
        let grace = Duration::from_secs_f64(app.config.daemon.grace_s);
        let left = grace.saturating_sub(stop_began.elapsed());
        let _ = tokio::time::timeout(left.min(API_STOP_WAIT), task).await;
    }
    if let HttpListen::Unix(path) = &app.config.daemon.http {
        // Ours: `prepare_unix_socket` refused to start over anything else.
        let _ = std::fs::remove_file(path);
    }
    info!("stopped");
    Ok(Stopped {
        registry,
        stop_began,
    })
}

/// Sends the watchdog keep-alive when every running control loop finished a wake within
/// its limit (see [`liveness`]); names a stuck loop once, and once more when it recovers.
fn keep_alive(registry: &Registry) {
    let verdict = registry.liveness().check(Instant::now());
    for stuck in &verdict.newly_stuck {
        error!(
            pipeline = %stuck.pipeline,
            silent_s = stuck.silent.as_secs_f64().round(),
            limit_s = stuck.limit.as_secs_f64().round(),
            "the control loop of pipeline `{}` is stuck: no finished tick for {:.0} s; \
             withholding the watchdog keep-alive so that the service manager restarts the service",
            stuck.pipeline,
            stuck.silent.as_secs_f64()
        );
    }
    for name in &verdict.recovered {
        warn!(pipeline = %name, "the control loop of pipeline `{name}` ticks again; keep-alives resume");
    }
    if verdict.alive {
        notify::watchdog();
    }
}

/// The longest a stop waits for the API's requests in flight.
const API_STOP_WAIT: Duration = Duration::from_secs(2);

/// Descriptors kept free for backend calls, plugins and files beyond the HTTP connections.
const DESCRIPTOR_RESERVE: u64 = 256;

/// Warns when the configured connection limits leave too few descriptors under the
/// process's open-files limit for backend calls.
fn check_descriptors(config: &DaemonConfig, serve_http: bool) {
    let api = if serve_http && config.daemon.http != HttpListen::Disabled {
        config.daemon.http_limits.max_connections as u64
    } else {
        0
    };
    let routers: u64 = config
        .pipelines
        .iter()
        .filter_map(|p| p.router.as_ref())
        .map(|r| r.limits.max_connections as u64)
        .sum();
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return;
    };
    if let Some(warning) =
        crate::http_server::descriptor_warning(api + routers, DESCRIPTOR_RESERVE, soft)
    {
        warn!("{warning}");
    }
}

async fn serve_http(
    daemon: &crate::config::DaemonSettings,
    registry: Registry,
    access: WriteAccess,
    mut stopped: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, ServiceError> {
    let connections = Arc::new(crate::http_server::ConnectionStats::default());
    let router = crate::api::router(registry, access, Arc::clone(&connections));
    let limits = daemon.http_limits;
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let task = match &daemon.http {
        HttpListen::Disabled => None,
        HttpListen::Tcp(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ServiceError::Listen {
                    address: address.to_string(),
                    source,
                })?;
            let bound = listener
                .local_addr()
                .map_or_else(|_| address.to_string(), |a| a.to_string());
            info!(
                address = %bound,
                max_connections = limits.max_connections,
                "HTTP API listening"
            );
            Some(tokio::spawn(crate::http_server::serve(
                listener,
                router,
                limits,
                connections,
                "API".to_owned(),
                shutdown,
            )))
        }
        HttpListen::Unix(path) => {
            prepare_unix_socket(path)?;
            let listener =
                tokio::net::UnixListener::bind(path).map_err(|source| ServiceError::Listen {
                    address: path.display().to_string(),
                    source,
                })?;
            info!(
                socket = %path.display(),
                max_connections = limits.max_connections,
                "HTTP API listening"
            );
            Some(tokio::spawn(crate::http_server::serve(
                listener,
                router,
                limits,
                connections,
                "API".to_owned(),
                shutdown,
            )))
        }
    };
    Ok(task)
}

/// Makes `path` free for the API's socket: nothing there, or a socket nobody answers on (left
/// by a daemon that died), which is removed. Anything else is refused and left alone: a
/// file that is not a socket, or a socket another process serves (a second instance must
/// not take over a running daemon's API).
pub fn prepare_unix_socket(path: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::FileTypeExt as _;
    let refuse = |why: String| ServiceError::Listen {
        address: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, why),
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServiceError::Listen {
                address: path.display().to_string(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(refuse(
            "something that is not a socket is there; remove it or choose another `unix` path"
                .to_owned(),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(refuse(
            "another process serves this socket (is the daemon already running?)".to_owned(),
        ));
    }
    std::fs::remove_file(path).map_err(|source| ServiceError::Listen {
        address: path.display().to_string(),
        source,
    })
}

/// The state directory a configuration resolves to (for messages).
pub fn state_dir(config: &DaemonConfig) -> PathBuf {
    config.daemon.resolved_state_dir()
}

/// Pipeline names for the log, `a, b`, or `none`.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod socket_tests {
    use super::prepare_unix_socket;

    #[test]
    fn the_api_socket_replaces_only_a_dead_socket() {
        let dir = std::env::temp_dir().join(format!("infadaptd-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("api.sock");

        // Nothing there: free.
        prepare_unix_socket(&path).expect("free");

        // A regular file is refused and kept.
        std::fs::write(&path, "precious").expect("file");
        let err = prepare_unix_socket(&path).expect_err("a file");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "precious");
        std::fs::remove_file(&path).expect("rm");

        // A socket someone serves is refused and kept.
        let live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let err = prepare_unix_socket(&path).expect_err("served");
        assert!(err.to_string().contains("another process serves"), "{err}");
        assert!(path.exists());

        // The same socket once nobody serves it: removed.
        drop(live);
        prepare_unix_socket(&path).expect("stale socket replaced");
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
