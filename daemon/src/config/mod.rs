//! The daemon's configuration file: `[daemon]` settings and `[[pipeline]]` tables (stages,
//! catalog, SLO, weights, limits, solver, forecaster, damping, backend), read raw with
//! positions and validated, every problem reported at once as `file:line:col: field: message`.
//!
//! ```toml
//! [daemon]
//! period_s = 10
//! [daemon.http]
//! listen = "127.0.0.1:9187"
//! token_file = "api-token"                # optional: enables pause/resume (mode 0600)
//! max_connections = 128                   # connection limit, header and idle timeouts
//! header_timeout_s = 10
//! idle_timeout_s = 60
//!
//! [[pipeline]]
//! name = "resnet"
//! catalog = "catalogs/resnet-synthetic.toml"   # relative to this file
//! slo_ms = 750
//! [[pipeline.stage]]
//! name = "classify"
//! variants = ["resnet18", "resnet50"]
//! [pipeline.backend]
//! type = "sim"
//! [pipeline.router]                      # optional: one stable endpoint for clients
//! listen = "127.0.0.1:8080"
//! timeout_ms = 10000
//! ready_wait_ms = 5000
//! max_connections = 1024
//! header_timeout_ms = 10000
//! idle_timeout_ms = 60000
//! ```

pub mod backend_check;
pub mod reference;
pub mod tomlread;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use infadapt_control::{
    ControlConfig, DampingConfig, FastPathConfig, ForecastBasis, LoadFloor, SelectPolicy,
    SpareConfig, damping_keys, fast_path_keys, forecast_keys, spare_keys,
};
use infadapt_forecast::ForecastError;
use infadapt_forecast::lstm::LstmModel;
use infadapt_forecast::models::ModelKind;
use infadapt_model::Catalog;
use infadapt_planner::Problem;
use infadapt_plugin_abi::{ConfigProblem, ProblemKind};

use self::backend_check::BackendCheck;
use self::tomlread::{Diagnostics, TableReader, read_document, with_range_check};
use crate::http_server::ServerLimits;
use crate::problem_file::{
    CatalogLookup, apply_solver_settings, build_pipeline, read_catalog, read_limits, read_weights,
};
use crate::router::RouterSettings;

/// Where the packaged configuration is installed.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/infadaptd/infadaptd.toml";
/// Default state directory (overridden by `STATE_DIRECTORY`, then by `state_dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/infadaptd";
/// Default control period of every pipeline, seconds.
pub const DEFAULT_PERIOD_S: f64 = 10.0;
/// Default time a stop waits for in-flight applies, seconds.
pub const DEFAULT_GRACE_S: f64 = 10.0;
/// Default number of decisions kept per pipeline.
pub const DEFAULT_DECISIONS_KEPT: u32 = 100;
/// Default time limit of one backend call, seconds.
pub const DEFAULT_BACKEND_TIMEOUT_S: f64 = 5.0;
/// Default load the first plan is sized for, requests/s.
pub const DEFAULT_INITIAL_LOAD_RPS: f64 = 1.0;
/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// Default connection limit of the HTTP API.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: u32 = 128;
/// Default header timeout of the HTTP API, seconds.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_S: f64 = 10.0;
/// Default idle timeout of the HTTP API, seconds.
pub const DEFAULT_HTTP_IDLE_TIMEOUT_S: f64 = 60.0;
/// Name of the backend linked into the daemon.
pub const SIM_BACKEND: &str = "sim";

/// Where the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Disabled,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Default control period of every pipeline, seconds.
    pub period_s: f64,
    /// Explicit state directory (`state_dir`); see [`DaemonSettings::resolved_state_dir`].
    pub state_dir: Option<PathBuf>,
    pub plugin_dirs: Vec<PathBuf>,
    pub http: HttpListen,
    /// Log filter when `RUST_LOG` is unset, e.g. `info` or `infadaptd=debug`.
    pub log: String,
    /// Seconds a shutdown waits for in-flight applies before exiting anyway.
    pub grace_s: f64,
    /// Decisions kept per pipeline for `/v1/decisions`.
    pub decisions_kept: usize,
    /// Seconds a backend call may take before it counts as failed.
    pub backend_timeout_s: f64,
    /// Exit with an error at start when no pipeline could create its backend (a service
    /// that would only report failures is restarted instead of looking ready).
    pub require_running_pipeline: bool,
    /// `[daemon.http] token_file`: the file holding the bearer token of the API's write
    /// endpoints (pause, resume); `None` turns them off (403).
    pub token_file: Option<PathBuf>,
    /// `[daemon.http] max_connections`, `header_timeout_s`, `idle_timeout_s`.
    pub http_limits: ServerLimits,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            period_s: DEFAULT_PERIOD_S,
            state_dir: None,
            plugin_dirs: vec![PathBuf::from("/usr/lib/infadaptd/plugins")],
            http: HttpListen::Tcp(DEFAULT_LISTEN.parse().expect("valid default address")),
            log: "info".to_owned(),
            grace_s: DEFAULT_GRACE_S,
            decisions_kept: DEFAULT_DECISIONS_KEPT as usize,
            backend_timeout_s: DEFAULT_BACKEND_TIMEOUT_S,
            require_running_pipeline: true,
            token_file: None,
            http_limits: ServerLimits {
                max_connections: DEFAULT_HTTP_MAX_CONNECTIONS as usize,
                header_timeout: std::time::Duration::from_secs_f64(DEFAULT_HTTP_HEADER_TIMEOUT_S),
                idle_timeout: std::time::Duration::from_secs_f64(DEFAULT_HTTP_IDLE_TIMEOUT_S),
            },
        }
    }
}

impl DaemonSettings {
    /// `state_dir` when set, else `$STATE_DIRECTORY` (its first entry), else the default.
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        std::env::var("STATE_DIRECTORY")
            .ok()
            .and_then(|v| v.split(':').next().map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

/// The `[pipeline.backend]` table: its `type` and the rest of the table as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub kind: String,
    /// The table without `type`, handed to the backend.
    pub settings: serde_json::Value,
}

/// One `[[pipeline]]`, ready to build a control loop.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub name: String,
    /// Control settings; `interval_s` is the pipeline's period.
    pub control: ControlConfig,
    pub backend: BackendConfig,
    /// `[pipeline.router]`: the request router in front of the backend, when configured.
    pub router: Option<RouterSettings>,
    /// `[pipeline.fast_path] check_s`: seconds of loop time between two looks at the
    /// load between ticks (the period is split into `round(period_s / check_s)` of them).
    pub check_s: f64,
    /// `[pipeline.forecast] lstm_model`: the trained model file, whose network is in
    /// `control.forecast.lstm`.
    pub lstm_model: Option<LstmModelFile>,
}

/// A trained LSTM model file named by `[pipeline.forecast] lstm_model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LstmModelFile {
    /// The file, resolved against the configuration file's directory.
    pub path: PathBuf,
    /// FNV-1a 64 of the file's bytes in hex: which content was loaded.
    pub fingerprint: String,
}

/// FNV-1a 64 of `bytes`, as 16 hex digits.
fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A whole validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The file it was read from (for reloads and messages).
    pub path: PathBuf,
    pub daemon: DaemonSettings,
    pub pipelines: Vec<PipelineConfig>,
    /// What could not be checked and is not an error (a plugin without a config check).
    pub warnings: Vec<String>,
}

/// Checks a pipeline's backend keys with the backend's own rules (see
/// [`backend_check`]).
pub type BackendChecker<'a> = dyn FnMut(&DaemonSettings, &PipelineConfig) -> BackendCheck + 'a;

/// Reads and validates a configuration file, as `run` and reloads do; catalogs are
/// resolved relative to it. Each plugin backend checks its own keys (their problems are
/// errors at their positions); a plugin that cannot be loaded is a warning here, since its
/// pipeline starts degraded and the others run (see [`load_config_strict`]).
pub fn load_config(path: &Path) -> Result<DaemonConfig, Diagnostics> {
    load_config_checked(path, None, false)
}

/// [`load_config`] as `validate` reads a file: a plugin that is refused (ownership,
/// permissions, ABI), fails or hangs while loading or checking is an error too.
/// `plugin_dirs` (when given) replace the file's `[daemon] plugin_dirs`: backend libraries
/// are looked for there (`validate --plugin-dir`).
pub fn load_config_strict(
    path: &Path,
    plugin_dirs: Option<Vec<PathBuf>>,
) -> Result<DaemonConfig, Diagnostics> {
    load_config_checked(path, plugin_dirs, true)
}

fn load_config_checked(
    path: &Path,
    plugin_dirs: Option<Vec<PathBuf>>,
    strict: bool,
) -> Result<DaemonConfig, Diagnostics> {
    let (name, text) = crate::config::tomlread::read_source(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = parse_config_checked(
        &name,
        &text,
        &base,
        plugin_dirs,
        &mut |reference: &str| read_catalog(&base.join(reference)),
        &mut |daemon, pipeline| match backend_check::check_plugin_backend(daemon, pipeline) {
            BackendCheck::Failed(message) if !strict => BackendCheck::Unchecked(format!(
                "{message}; the pipeline starts degraded and retries"
            )),
            outcome => outcome,
        },
    )?;
    config.path = path.to_path_buf();
    Ok(config)
}

/// Parses a configuration from text; `base` resolves relative paths, `catalogs` reads a
/// catalog reference. Plugin backends are not loaded, so their own keys are not checked
/// (the linked simulator's are); [`load_config`] checks them too.
pub fn parse_config(
    name: &str,
    text: &str,
    base: &Path,
    catalogs: &mut CatalogLookup<'_>,
) -> Result<DaemonConfig, Diagnostics> {
    parse_config_checked(name, text, base, None, catalogs, &mut |_, _| {
        BackendCheck::Skipped
    })
}

/// [`parse_config`] with each plugin backend's keys checked by `backends` (its problems are
/// reported at their keys like the daemon's own), and `plugin_dirs` (when given) in place
/// of the file's.
pub fn parse_config_checked(
    name: &str,
    text: &str,
    base: &Path,
    plugin_dirs: Option<Vec<PathBuf>>,
    catalogs: &mut CatalogLookup<'_>,
    backends: &mut BackendChecker<'_>,
) -> Result<DaemonConfig, Diagnostics> {
    parse_with(
        name,
        text,
        base,
        NamedFiles::Read,
        plugin_dirs,
        catalogs,
        backends,
    )
}

/// Parses a configuration from text alone: no file is read. Catalogs come from
/// `catalogs`; a `token_file` or `lstm_model` is reported at its key as not read, and
/// plugin backends' own keys are not checked. Every other check is [`parse_config`]'s
/// (the fuzz target `config` drives this).
pub fn parse_config_text(
    name: &str,
    text: &str,
    catalogs: &mut CatalogLookup<'_>,
) -> Result<DaemonConfig, Diagnostics> {
    parse_with(
        name,
        text,
        Path::new(""),
        NamedFiles::Refuse,
        None,
        catalogs,
        &mut |_, _| BackendCheck::Skipped,
    )
}

/// Whether the reader reads the files a configuration names besides catalogs
/// (`token_file`, `lstm_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedFiles {
    /// Read them, relative to the configuration's directory.
    Read,
    /// Report each one named as not read ([`parse_config_text`]).
    Refuse,
}

/// What a named file is told when files are not read.
const NOT_READ: &str = "names a file, and this reader reads no files";

fn parse_with(
    name: &str,
    text: &str,
    base: &Path,
    files: NamedFiles,
    plugin_dirs: Option<Vec<PathBuf>>,
    catalogs: &mut CatalogLookup<'_>,
    backends: &mut BackendChecker<'_>,
) -> Result<DaemonConfig, Diagnostics> {
    let raw: Option<toml::Table> = toml::from_str(text).ok();
    // Every number is checked against its range in the configuration reference, the one
    // source of the documented ranges.
    let mut config = with_range_check(reference::range_problem, || {
        read_document(name, text, |_, root| {
            build_config(
                root,
                raw.as_ref(),
                base,
                files,
                plugin_dirs,
                catalogs,
                backends,
            )
        })
    })?;
    config.path = PathBuf::from(name);
    Ok(config)
}

fn build_config(
    root: &TableReader<'_, '_>,
    raw: Option<&toml::Table>,
    base: &Path,
    files: NamedFiles,
    plugin_dirs: Option<Vec<PathBuf>>,
    catalogs: &mut CatalogLookup<'_>,
    backends: &mut BackendChecker<'_>,
) -> Option<DaemonConfig> {
    let mut daemon = match root.opt_table("daemon") {
        Some(table) => {
            let settings = read_daemon(&table, base, files);
            table.finish();
            settings
        }
        None => DaemonSettings::default(),
    };
    if let Some(dirs) = plugin_dirs {
        daemon.plugin_dirs = dirs;
    }
    let tables = root.tables("pipeline");
    if tables.is_empty() {
        root.report("pipeline", "no [[pipeline]] configured");
    }
    let raw_pipelines = raw
        .and_then(|r| r.get("pipeline"))
        .and_then(toml::Value::as_array);
    let mut loaded: BTreeMap<String, Option<Catalog>> = BTreeMap::new();
    let mut pipelines: Vec<PipelineConfig> = Vec::new();
    let mut warnings = Vec::new();
    let mut complete = true;
    for (i, table) in tables.iter().enumerate() {
        let raw_backend = raw_pipelines
            .and_then(|p| p.get(i))
            .and_then(|p| p.get("backend"))
            .and_then(toml::Value::as_table);
        let built = read_pipeline(
            table,
            &daemon,
            base,
            files,
            raw_backend,
            &mut |t, reference| {
                loaded
                    .entry(reference.to_owned())
                    .or_insert_with(|| match catalogs(reference) {
                        Ok(c) => Some(c),
                        Err(problem) => {
                            t.report("catalog", problem.to_string());
                            None
                        }
                    })
                    .clone()
            },
        );
        table.finish();
        if let Some(p) = &built {
            check_backend_keys(table, &daemon, p, backends, &mut warnings);
        }
        match built {
            Some(p) => {
                if pipelines.iter().any(|q| q.name == p.name) {
                    table.report("name", format!("pipeline `{}` is configured twice", p.name));
                }
                if let Some(router) = &p.router {
                    let taken = pipelines.iter().find(|q| {
                        q.router
                            .as_ref()
                            .is_some_and(|r| r.listen == router.listen && router.listen.port() != 0)
                    });
                    if let Some(q) = taken {
                        table.report(
                            "router.listen",
                            format!(
                                "{} is already the router of pipeline `{}`",
                                router.listen, q.name
                            ),
                        );
                    }
                    if daemon.http == HttpListen::Tcp(router.listen) && router.listen.port() != 0 {
                        table.report(
                            "router.listen",
                            format!("{} is the daemon's HTTP API address", router.listen),
                        );
                    }
                }
                pipelines.push(p);
            }
            None => complete = false,
        }
    }
    if !complete || root.reader().has_problems() {
        return None;
    }
    Some(DaemonConfig {
        path: PathBuf::new(),
        daemon,
        pipelines,
        warnings,
    })
}

/// Reports the problems the backend finds with its own keys at their positions in
/// `[pipeline.backend]`; a backend without a check adds a warning.
fn check_backend_keys(
    pipeline_table: &TableReader<'_, '_>,
    daemon: &DaemonSettings,
    pipeline: &PipelineConfig,
    backends: &mut BackendChecker<'_>,
    warnings: &mut Vec<String>,
) {
    let kind = pipeline.backend.kind.as_str();
    // The linked simulator's keys were checked by `read_backend`; a missing plugin was
    // reported there too.
    let outcome = if kind == SIM_BACKEND
        || crate::plugin_host::find_plugin_file(&daemon.plugin_dirs, kind).is_none()
    {
        BackendCheck::Skipped
    } else {
        backends(daemon, pipeline)
    };
    let Some(table) = pipeline_table.opt_table("backend") else {
        return;
    };
    match outcome {
        BackendCheck::Checked(problems) => report_backend_problems(&table, &problems),
        BackendCheck::Failed(message) => table.report("type", message),
        BackendCheck::Unchecked(message) => {
            warnings.push(format!("pipeline `{}`: {message}", pipeline.name));
        }
        BackendCheck::Skipped => {}
    }
}

/// Reports a backend's problems with its keys at their positions in its table.
fn report_backend_problems(table: &TableReader<'_, '_>, problems: &[ConfigProblem]) {
    for problem in problems {
        let mut message = problem.message.clone();
        if let Some(hint) = &problem.hint {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
        }
        table.report_path(
            &problem.key,
            problem.kind == ProblemKind::UnknownKey,
            message,
        );
    }
}

/// The `[daemon]` table. Its numbers are checked against their ranges in the configuration
/// reference as they are read (a number out of range reads as absent), so none is checked
/// again here.
fn read_daemon(table: &TableReader<'_, '_>, base: &Path, files: NamedFiles) -> DaemonSettings {
    let defaults = DaemonSettings::default();
    let period_s = table.opt_f64("period_s").unwrap_or(defaults.period_s);
    let grace_s = table.opt_f64("grace_s").unwrap_or(defaults.grace_s);
    let backend_timeout_s = table
        .opt_f64("backend_timeout_s")
        .unwrap_or(defaults.backend_timeout_s);
    let state_dir = table.opt_str("state_dir").map(|s| base.join(s));
    let plugin_dirs = table
        .opt_str_list("plugin_dirs")
        .map(|dirs| dirs.iter().map(|d| base.join(d.get_ref())).collect())
        .unwrap_or(defaults.plugin_dirs);
    let log = table.opt_str("log").unwrap_or(defaults.log);
    let require_running_pipeline = table
        .opt_bool("require_running_pipeline")
        .unwrap_or(defaults.require_running_pipeline);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        table.report("log", format!("invalid log filter: {e}"));
    }
    let decisions_kept = table
        .opt_u32("decisions_kept")
        .map_or(defaults.decisions_kept, |n| n as usize);
    let mut token_file = None;
    let mut http_limits = defaults.http_limits;
    let http = match table.opt_table("http") {
        Some(h) => {
            // In range as read (see above).
            if let Some(n) = h.opt_u32("max_connections") {
                http_limits.max_connections = n as usize;
            }
            if let Some(s) = h.opt_f64("header_timeout_s") {
                http_limits.header_timeout = std::time::Duration::from_secs_f64(s);
            }
            if let Some(s) = h.opt_f64("idle_timeout_s") {
                http_limits.idle_timeout = std::time::Duration::from_secs_f64(s);
            }
            if let Some(path) = h.opt_str("token_file") {
                let path = base.join(path);
                // Checked here so that `validate` and a start refuse a token others may read.
                if files == NamedFiles::Refuse {
                    h.report("token_file", NOT_READ);
                } else if let Err(problem) = crate::api::access::read_token_file(&path) {
                    h.report("token_file", problem.to_string());
                }
                token_file = Some(path);
            }
            let listen = h.opt_str("listen");
            let unix = h.opt_str("unix");
            let enabled = h.opt_bool("enabled").unwrap_or(true);
            let http = match (enabled, listen, unix) {
                (false, _, _) => HttpListen::Disabled,
                (true, Some(_), Some(_)) => {
                    h.report("unix", "set either `listen` or `unix`, not both");
                    defaults.http.clone()
                }
                (true, _, Some(path)) => HttpListen::Unix(base.join(path)),
                (true, Some(addr), None) => match addr.parse::<SocketAddr>() {
                    Ok(a) => HttpListen::Tcp(a),
                    Err(_) => {
                        h.report(
                            "listen",
                            format!("`{addr}` is not an address like 127.0.0.1:9187"),
                        );
                        defaults.http.clone()
                    }
                },
                (true, None, None) => defaults.http.clone(),
            };
            h.finish();
            http
        }
        None => defaults.http,
    };
    DaemonSettings {
        period_s,
        state_dir,
        plugin_dirs,
        http,
        log,
        grace_s,
        decisions_kept,
        backend_timeout_s,
        require_running_pipeline,
        token_file,
        http_limits,
    }
}

type CatalogLoader<'a> = dyn FnMut(&TableReader<'_, '_>, &str) -> Option<Catalog> + 'a;

fn read_pipeline(
    p: &TableReader<'_, '_>,
    daemon: &DaemonSettings,
    base: &Path,
    files: NamedFiles,
    raw_backend: Option<&toml::Table>,
    load_catalog: &mut CatalogLoader<'_>,
) -> Option<PipelineConfig> {
    let default_catalog = p.opt_str("catalog").and_then(|c| load_catalog(p, &c));
    let pipeline = build_pipeline(p, default_catalog.as_ref(), &mut |t, r| load_catalog(t, r));
    // In range as read (see `read_daemon`).
    let period_s = p.opt_f64("period_s").unwrap_or(daemon.period_s);
    let initial_load = p
        .opt_f64("initial_load_rps")
        .unwrap_or(DEFAULT_INITIAL_LOAD_RPS);
    let weights = p.opt_table("weights").map(|w| read_weights(&w));
    let limits = p.opt_table("limits").map(|l| read_limits(&l));
    let placeholder = || infadapt_model::Pipeline {
        name: String::new(),
        slo_ms: 1.0,
        stages: Vec::new(),
    };
    let complete = pipeline.is_some();
    let mut problem = Problem::new(pipeline.unwrap_or_else(placeholder), initial_load);
    if let Some((weights, mode)) = weights {
        problem.weights = weights;
        problem.accuracy_mode = mode;
    }
    problem.limits = limits.unwrap_or_default();
    if let Some(s) = p.opt_table("solver") {
        apply_solver_settings(&s, &mut problem);
        s.finish();
    }
    let mut control = ControlConfig::new(problem);
    control.interval_s = period_s;
    let mut lstm_model = None;
    if let Some(f) = p.opt_table("forecast") {
        lstm_model = read_forecast(&f, &mut control, Some((base, files)));
        check_lstm_fit(&f, &mut control, lstm_model.as_ref(), complete);
        f.finish();
    }
    if let Some(d) = p.opt_table("damping") {
        control.damping = read_damping(&d);
        d.finish();
    }
    let mut check_s = DEFAULT_CHECK_S.min(period_s);
    if let Some(f) = p.opt_table("fast_path") {
        let (fast_path, check) = read_fast_path(&f, period_s);
        control.fast_path = fast_path;
        check_s = check;
        f.finish();
    }
    if let Some(w) = p.opt_table("spare") {
        control.spare = read_spare(&w);
        w.finish();
    }
    let backend = read_backend(p, raw_backend, daemon);
    let router = p.opt_table("router").and_then(|r| {
        let settings = read_router(&r);
        r.finish();
        settings
    });
    if complete && let Err(problem) = check_pipeline_name(&control.problem.pipeline.name) {
        p.report("name", problem.to_string());
    }
    if complete && !p.reader().has_problems() {
        match control.validate() {
            Err(e) => p.report("name", e.to_string()),
            // The loop `run` would build, built here: a pipeline whose SLO no configuration
            // meets, or whose loop cannot be made, is refused now rather than failing when
            // it starts.
            Ok(()) => match infadapt_control::ControlLoop::new(control.clone()) {
                Err(infadapt_control::ControlError::Plan(e)) => p.report(
                    "slo_ms",
                    format!(
                        "no configuration of the pipeline can start: {e} (at \
                         initial_load_rps = {initial_load})"
                    ),
                ),
                Err(e) => p.report("name", format!("the control loop cannot start: {e}")),
                Ok(_) => {}
            },
        }
    }
    if !complete {
        return None;
    }
    Some(PipelineConfig {
        name: control.problem.pipeline.name.clone(),
        control,
        backend: backend?,
        router,
        check_s,
        lstm_model,
    })
}

/// A pipeline's name names its state file, its log lines, its metric labels and its API
/// paths: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`, so that two
/// names never share a state file and no name can forge a log line or a path.
pub fn check_pipeline_name(name: &str) -> Result<(), PipelineNameError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(allowed) {
        // Escaped, so that a control character in the name cannot forge the message.
        let shown: String = name
            .chars()
            .take(64)
            .flat_map(char::escape_default)
            .collect();
        return Err(PipelineNameError { shown });
    }
    Ok(())
}

/// A name that cannot name a pipeline (see [`check_pipeline_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{shown}` is not a pipeline name: use 1 to 64 letters, digits, `-`, `_` or `.`, not \
     starting with `.`"
)]
pub struct PipelineNameError {
    /// The name as the message shows it: its first 64 characters, escaped.
    pub shown: String,
}

/// Default seconds between two looks at the load between ticks (the fast path).
pub const DEFAULT_CHECK_S: f64 = 1.0;

/// The `[pipeline.fast_path]` table: the loop's fast-path settings and the daemon's pulse
/// interval `check_s` (in `(0, period_s]`; default 1 s, or the period when shorter).
pub(crate) fn read_fast_path(f: &TableReader<'_, '_>, period_s: f64) -> (FastPathConfig, f64) {
    let mut fast_path = FastPathConfig::default();
    if let Some(enabled) = f.opt_bool("enabled") {
        fast_path.enabled = enabled;
    }
    f.read_numbers([
        (&fast_path_keys::WINDOW_S, &mut fast_path.window_s),
        (&fast_path_keys::SIGMAS, &mut fast_path.sigmas),
        (&fast_path_keys::MIN_GAP_S, &mut fast_path.min_gap_s),
        (
            &fast_path_keys::QUEUE_SLO_FRACTION,
            &mut fast_path.queue_slo_fraction,
        ),
    ]);
    let default_check = DEFAULT_CHECK_S.min(period_s);
    let check_s = match f.opt_f64("check_s") {
        Some(v) if v.is_finite() && v > 0.0 && v <= period_s => v,
        Some(v) => {
            f.report(
                "check_s",
                format!("must be in (0, {period_s}] (the period, seconds), got {v}"),
            );
            default_check
        }
        None => default_check,
    };
    (fast_path, check_s)
}

/// The `[pipeline.spare]` table: warm spare capacity for bursts (`enabled`, `history_s`
/// in [60, 86400]).
pub(crate) fn read_spare(w: &TableReader<'_, '_>) -> SpareConfig {
    let mut spare = SpareConfig::default();
    if let Some(enabled) = w.opt_bool("enabled") {
        spare.enabled = enabled;
    }
    if let Some(v) = w.opt_number(&spare_keys::HISTORY_S) {
        spare.history_s = v;
    }
    spare
}

/// Default limit for one forwarded request.
pub const DEFAULT_ROUTER_TIMEOUT_MS: u32 = 10_000;
/// Default time a router request waits for a ready endpoint before a 503.
pub const DEFAULT_ROUTER_READY_WAIT_MS: u32 = 5_000;
/// Default largest request body the router accepts.
pub const DEFAULT_ROUTER_MAX_BODY_BYTES: u32 = 16 * 1024 * 1024;
/// Default connection limit of a router.
pub const DEFAULT_ROUTER_MAX_CONNECTIONS: u32 = 1024;
/// Default header timeout of a router.
pub const DEFAULT_ROUTER_HEADER_TIMEOUT_MS: u32 = 10_000;
/// Default idle timeout of a router.
pub const DEFAULT_ROUTER_IDLE_TIMEOUT_MS: u32 = 60_000;

fn read_router(r: &TableReader<'_, '_>) -> Option<RouterSettings> {
    let listen = match r.req_str("listen") {
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                r.report(
                    "listen",
                    format!("`{text}` is not an address like 127.0.0.1:8080"),
                );
                None
            }
        },
        None => None,
    };
    // Numbers in range as read (see `read_daemon`).
    let timeout_ms = r.opt_u32("timeout_ms").unwrap_or(DEFAULT_ROUTER_TIMEOUT_MS);
    let max_body_bytes = r
        .opt_u32("max_body_bytes")
        .unwrap_or(DEFAULT_ROUTER_MAX_BODY_BYTES);
    let ready_wait_ms = r
        .opt_u32("ready_wait_ms")
        .unwrap_or(DEFAULT_ROUTER_READY_WAIT_MS);
    let max_connections = r
        .opt_u32("max_connections")
        .unwrap_or(DEFAULT_ROUTER_MAX_CONNECTIONS);
    let header_timeout_ms = r
        .opt_u32("header_timeout_ms")
        .unwrap_or(DEFAULT_ROUTER_HEADER_TIMEOUT_MS);
    let idle_timeout_ms = r
        .opt_u32("idle_timeout_ms")
        .unwrap_or(DEFAULT_ROUTER_IDLE_TIMEOUT_MS);
    Some(RouterSettings {
        listen: listen?,
        timeout: std::time::Duration::from_millis(u64::from(timeout_ms)),
        max_body_bytes: max_body_bytes as usize,
        ready_wait: std::time::Duration::from_millis(u64::from(ready_wait_ms)),
        limits: ServerLimits {
            max_connections: max_connections as usize,
            header_timeout: std::time::Duration::from_millis(u64::from(header_timeout_ms)),
            idle_timeout: std::time::Duration::from_millis(u64::from(idle_timeout_ms)),
        },
    })
}

/// What `model = "lstm"` without a model file is told.
const LSTM_NEEDS_A_FILE: &str = "the lstm model needs a trained model file: set \
     `lstm_model = \"FILE\"` (relative to this file), made by `infadaptd forecast train \
     --trace TRACE --out FILE`";

/// The `[pipeline.forecast]` table. `lstm_files` is the directory a trained model file
/// (`lstm_model`) is read relative to, and whether it is read; without it (scenario
/// files), `lstm` and `lstm_model` are not offered. Returns the model file read, its network in
/// `control.forecast.lstm`.
pub(crate) fn read_forecast(
    f: &TableReader<'_, '_>,
    control: &mut ControlConfig,
    lstm_files: Option<(&Path, NamedFiles)>,
) -> Option<LstmModelFile> {
    let names: Vec<&str> = ModelKind::ALL
        .iter()
        .map(|k| k.as_str())
        .filter(|n| lstm_files.is_some() || *n != "lstm")
        .collect();
    let chosen = f.opt_choice("model", &names);
    if let Some(kind) = chosen.as_deref().and_then(|m| m.parse::<ModelKind>().ok()) {
        control.forecast.model = kind;
    }
    // A bad `model` is reported already; whether it needs a file is then unknown.
    let model_known = chosen.is_some() || !f.has("model");
    let file =
        lstm_files.and_then(|(base, files)| read_lstm_model(f, base, files, control, model_known));
    if let Some(v) = f.opt_number(&forecast_keys::HORIZON_S) {
        control.forecast.horizon_s = Some(v);
    }
    if let Some(v) = f.opt_number(&forecast_keys::SMOOTHING_S) {
        control.forecast.smoothing_s = v;
    }
    if let Some(v) = f.opt_number(&forecast_keys::UPPER_QUANTILE) {
        control.forecast.upper_quantile = Some(v);
    }
    match f.opt_choice("basis", &["upper", "point"]).as_deref() {
        Some("point") => control.forecast.basis = ForecastBasis::Point,
        Some(_) => control.forecast.basis = ForecastBasis::Upper,
        None => {}
    }
    if let Some(v) = f.opt_number(&forecast_keys::MARGIN) {
        control.margin = v;
    }
    match f
        .opt_choice("floor", &["none", "observed-mean", "observed-peak"])
        .as_deref()
    {
        Some("none") => control.floor = LoadFloor::None,
        Some("observed-peak") => control.floor = LoadFloor::ObservedPeak,
        Some(_) => control.floor = LoadFloor::ObservedMean,
        None => {}
    }
    file
}

/// `lstm_model`: reads and parses the file (relative to `base`) into
/// `control.forecast.lstm`; a missing file for a model that needs one, an unreadable,
/// truncated or other-version file, and a file the model does not use are reported.
fn read_lstm_model(
    f: &TableReader<'_, '_>,
    base: &Path,
    files: NamedFiles,
    control: &mut ControlConfig,
    model_known: bool,
) -> Option<LstmModelFile> {
    let kind = control.forecast.model;
    let uses_file = matches!(kind, ModelKind::Lstm | ModelKind::Auto | ModelKind::IpaLstm);
    let Some(reference) = f.opt_str("lstm_model") else {
        if matches!(kind, ModelKind::Lstm | ModelKind::IpaLstm) && !f.has("lstm_model") {
            f.report("model", LSTM_NEEDS_A_FILE);
        }
        return None;
    };
    if !uses_file && model_known {
        f.report(
            "lstm_model",
            format!(
                "is read only with model = \"lstm\", \"auto\" or \"ipa-lstm\" (model is \
                 `{kind}`); set one of them or leave lstm_model out"
            ),
        );
        return None;
    }
    if files == NamedFiles::Refuse {
        f.report("lstm_model", NOT_READ);
        return None;
    }
    let path = base.join(&reference);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            f.report(
                "lstm_model",
                format!("cannot read `{}`: {e}", path.display()),
            );
            return None;
        }
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| ForecastError::InvalidModel("not UTF-8 text".to_owned()))
        .and_then(LstmModel::from_json);
    match parsed {
        Ok(model) => {
            control.forecast.lstm = Some(model);
            Some(LstmModelFile {
                path,
                fingerprint: fingerprint(&bytes),
            })
        }
        Err(e) => {
            let hint = match e {
                ForecastError::UnsupportedSchema { .. } => {
                    "; train it again with this version's `infadaptd forecast train`"
                }
                _ => "",
            };
            f.report("lstm_model", format!("`{}`: {e}{hint}", path.display()));
            None
        }
    }
}

/// Checks that the trained network fits the pipeline, reported at `lstm_model`: it
/// forecasts the maximum over its own horizon, which must be the configured `horizon_s`,
/// or without one cover the lead time (period plus longest cold start; the pipeline then
/// forecasts the network's horizon); the forecaster's input, averaged over `smoothing_s`,
/// must not be smoother than one of the network's buckets; IPA's predictor needs
/// whole-second buckets. `complete`: whether the pipeline was read whole (else the lead
/// time is unknown and not checked).
fn check_lstm_fit(
    f: &TableReader<'_, '_>,
    control: &mut ControlConfig,
    file: Option<&LstmModelFile>,
    complete: bool,
) {
    let (Some(model), Some(file)) = (control.forecast.lstm.as_ref(), file) else {
        return;
    };
    let name = file.path.display();
    let trained = model.config;
    let kind = control.forecast.model;
    if kind == ModelKind::IpaLstm {
        if let Err(e) = infadapt_forecast::models::build(kind, trained.horizon_s, Some(model)) {
            f.report("lstm_model", format!("`{name}`: {e}"));
        }
        return;
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let mut fits = true;
    match control.forecast.horizon_s {
        Some(horizon) if !close(horizon, trained.horizon_s) => {
            f.report(
                "lstm_model",
                format!(
                    "`{name}` forecasts the maximum of the next {} s, but horizon_s is {horizon}: \
                     set horizon_s = {} or train it with `--horizon {horizon}`",
                    trained.horizon_s, trained.horizon_s
                ),
            );
            fits = false;
        }
        Some(_) => {}
        None if complete => {
            let lead = control.horizon_s();
            if trained.horizon_s + 1e-9 < lead {
                let needed = (lead / trained.bucket_s).ceil() * trained.bucket_s;
                f.report(
                    "lstm_model",
                    format!(
                        "`{name}` forecasts the maximum of the next {} s, shorter than the \
                         pipeline's lead time of {lead} s (period plus the longest cold start): \
                         train it with `--horizon {needed}` or set horizon_s = {}",
                        trained.horizon_s, trained.horizon_s
                    ),
                );
                fits = false;
            }
        }
        None => {}
    }
    if control.forecast.smoothing_s > trained.bucket_s + 1e-9 {
        f.report(
            "lstm_model",
            format!(
                "`{name}` reads {} s buckets, but smoothing_s = {} averages the rates over \
                 longer than a bucket: set smoothing_s to at most {} or train it with \
                 `--bucket {}`",
                trained.bucket_s,
                control.forecast.smoothing_s,
                trained.bucket_s,
                control.forecast.smoothing_s
            ),
        );
        fits = false;
    }
    if fits && control.forecast.horizon_s.is_none() {
        control.forecast.horizon_s = Some(trained.horizon_s);
    }
}

pub(crate) fn read_damping(d: &TableReader<'_, '_>) -> DampingConfig {
    let mut damping = DampingConfig::default();
    if let Some(enabled) = d.opt_bool("enabled") {
        if !enabled {
            damping = DampingConfig::disabled();
        }
        damping.enabled = enabled;
    }
    d.read_numbers([
        (
            &damping_keys::STABILIZATION_WINDOW_S,
            &mut damping.stabilization_window_s,
        ),
        (
            &damping_keys::SCALE_UP_STABILIZATION_WINDOW_S,
            &mut damping.scale_up_stabilization_window_s,
        ),
    ]);
    if let Some(v) = d.opt_number(&damping_keys::MAX_SCALE_UP_PERCENT) {
        damping.max_scale_up_percent = Some(v);
    }
    match d
        .opt_choice("scale_up_select_policy", &["max", "min"])
        .as_deref()
    {
        Some("min") => damping.scale_up_select_policy = SelectPolicy::Min,
        Some(_) => damping.scale_up_select_policy = SelectPolicy::Max,
        None => {}
    }
    d.read_numbers([
        (&damping_keys::MIN_DWELL_S, &mut damping.min_dwell_s),
        (&damping_keys::MIN_SWITCH_GAIN, &mut damping.min_switch_gain),
        (
            &damping_keys::DEADBAND_FRACTION,
            &mut damping.deadband_fraction,
        ),
    ]);
    if let Some(v) = d.opt_count(&damping_keys::DEADBAND_REPLICAS) {
        damping.deadband_replicas = v;
    }
    for (key, slot) in [
        (
            &damping_keys::MAX_REPLICAS_ADDED_PER_TICK,
            &mut damping.max_replicas_added_per_tick,
        ),
        (
            &damping_keys::MAX_REPLICAS_REMOVED_PER_TICK,
            &mut damping.max_replicas_removed_per_tick,
        ),
    ] {
        if let Some(v) = d.opt_count(key) {
            *slot = Some(v);
        }
    }
    damping
}

fn read_backend(
    p: &TableReader<'_, '_>,
    raw_backend: Option<&toml::Table>,
    daemon: &DaemonSettings,
) -> Option<BackendConfig> {
    let Some(table) = p.opt_table("backend") else {
        if !p.has("backend") {
            p.report("backend", "missing required table [pipeline.backend]");
        }
        return None;
    };
    // Only `type` is the daemon's; the other keys belong to the backend, which checks them.
    let kind = table.req_str("type")?;
    if kind.is_empty()
        || !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        table.report(
            "type",
            "a backend name is letters, digits, `-` and `_` only",
        );
        return None;
    }
    let mut settings = serde_json::Map::new();
    for (key, value) in raw_backend.into_iter().flatten() {
        if key != "type" {
            match serde_json::to_value(value) {
                Ok(v) => {
                    settings.insert(key.clone(), v);
                }
                Err(e) => table.report(key, format!("cannot be passed to the backend: {e}")),
            }
        }
    }
    let settings = serde_json::Value::Object(settings);
    // A plugin's own keys are checked by the plugin once the pipeline is built
    // (`check_backend_keys`); the linked simulator's here.
    if kind == SIM_BACKEND {
        report_backend_problems(
            &table,
            &crate::service::sim_backend::SimSettings::check(&settings),
        );
    } else {
        if settings.get("pipeline").is_some() {
            table.report(
                "pipeline",
                "is passed to the plugin by the daemon (the pipeline's name, SLO and stages); \
                 leave it out",
            );
        }
        // Only the file's presence is checked here; loading runs code and happens in `run`.
        if crate::plugin_host::find_plugin_file(&daemon.plugin_dirs, &kind).is_none() {
            let dirs = if daemon.plugin_dirs.is_empty() {
                "(no plugin_dirs configured)".to_owned()
            } else {
                daemon
                    .plugin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            table.report(
                "type",
                format!(
                    "no plugin library for backend `{kind}` in {dirs} (looked for \
                     libinfadapt_plugin_{kind}.so or lib{kind}.so); `{SIM_BACKEND}` is the \
                     only backend built in"
                ),
            );
        }
    }
    Some(BackendConfig { kind, settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, Diagnostics> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        parse_config("c.toml", text, &dir, &mut |r: &str| {
            read_catalog(&dir.join(r))
        })
    }

    const GOOD: &str = r#"
[daemon]
period_s = 2
[daemon.http]
listen = "127.0.0.1:0"
[[pipeline]]
name = "resnet"
catalog = "catalogs/resnet-synthetic.toml"
slo_ms = 750
[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50"]
core_options = [1, 2, 4]
max_replicas = 10
[pipeline.damping]
min_dwell_s = 30
min_switch_gain = 0.01
[pipeline.forecast]
model = "ewma"
[pipeline.backend]
type = "sim"
seed = 3
peak_rps = 80
"#;

    #[test]
    fn a_good_file_builds_every_pipeline() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.daemon.period_s, 2.0);
        let p = &config.pipelines[0];
        assert_eq!(p.name, "resnet");
        assert_eq!(p.control.interval_s, 2.0);
        assert_eq!(p.control.damping.min_dwell_s, 30.0);
        assert_eq!(p.control.damping.min_switch_gain, 0.01);
        assert_eq!(p.control.forecast.model, ModelKind::Ewma);
        assert_eq!(p.backend.kind, "sim");
        assert_eq!(p.backend.settings["seed"], 3);
        assert_eq!(p.router, None);
        let routed = parse(&format!(
            "{GOOD}[pipeline.router]\nlisten = \"127.0.0.1:8080\"\n"
        ))
        .expect("valid");
        let router = routed.pipelines[0].router.as_ref().expect("router");
        assert_eq!(router.listen.port(), 8080);
        assert_eq!(router.timeout.as_millis(), 10_000);
        // The servers' limits: defaults, then as written.
        let default_limits = (1024, 10_000, 60_000);
        let limits = |l: &ServerLimits| {
            (
                l.max_connections,
                l.header_timeout.as_millis(),
                l.idle_timeout.as_millis(),
            )
        };
        assert_eq!(limits(&router.limits), default_limits);
        assert_eq!(limits(&config.daemon.http_limits), (128, 10_000, 60_000));
        let limited = parse(
            &(GOOD.replace(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:0\"\nmax_connections = 8\nheader_timeout_s = 0.5\n\
                 idle_timeout_s = 2",
            ) + "[pipeline.router]\nlisten = \"127.0.0.1:8080\"\nmax_connections = 9\n\
                  header_timeout_ms = 300\nidle_timeout_ms = 700\n"),
        )
        .expect("valid");
        assert_eq!(limits(&limited.daemon.http_limits), (8, 500, 2000));
        let router = limited.pipelines[0].router.as_ref().expect("router");
        assert_eq!(limits(&router.limits), (9, 300, 700));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("period_s = 2", "period_s = -1\nbogus = 1")
            .replace("slo_ms = 750", "slo_ms = \"fast\"")
            .replace("min_dwell_s = 30", "min_dwell_s = -3")
            .replace("min_switch_gain = 0.01", "min_switch_gain = -0.5")
            .replace("seed = 3", "seed = 3\nnot_a_sim_key = 1")
            + "[pipeline.router]\nlisten = \"localhost\"\ntimeout_ms = 0\ncolour = 1\n";
        let errors = parse(&text).expect_err("invalid").to_string();
        for needle in [
            "daemon.period_s: must be in (0, 86400], got -1",
            "daemon.bogus: unknown field",
            "pipeline[0].slo_ms: expected a number",
            "pipeline[0].damping.min_dwell_s: must be in [0, 86400], got -3",
            "pipeline[0].damping.min_switch_gain: must be in [0, 1000000000], got -0.5",
            "not_a_sim_key",
            "pipeline[0].router.listen: `localhost` is not an address",
            "pipeline[0].router.timeout_ms: must be in [1, 3600000], got 0",
            "pipeline[0].router.colour: unknown field",
        ] {
            assert!(errors.contains(needle), "{needle} missing from:\n{errors}");
        }
        assert!(errors.lines().all(|l| l.starts_with("c.toml:")), "{errors}");
    }

    /// A directory of LSTM model files for one test.
    fn model_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("infadapt-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("model dir");
        dir
    }

    /// An untrained network of the given bucket and horizon, as `forecast train` saves it.
    fn model_text(bucket_s: f64, horizon_s: f64, seed: u64) -> String {
        use infadapt_forecast::lstm::{LstmConfig, Normalisation};
        let config = LstmConfig {
            bucket_s,
            horizon_s,
            window: 4,
            units: 3,
            seed,
            ..LstmConfig::default()
        };
        let normalisation = Normalisation {
            offset: 20.0,
            scale: 5.0,
        };
        LstmModel::new(config, normalisation)
            .expect("valid shape")
            .to_json()
    }

    /// `GOOD` with `forecast` as its `[pipeline.forecast]` table, parsed with model files
    /// relative to `dir` (catalogs from `etc/`).
    fn parse_in(dir: &Path, forecast: &str) -> Result<DaemonConfig, Diagnostics> {
        let text = GOOD.replace("model = \"ewma\"\n", forecast);
        let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        parse_config("c.toml", &text, dir, &mut |r: &str| {
            read_catalog(&etc.join(r))
        })
    }

    /// `file:line:col: field` of the value of `key = ` in `forecast` as placed in `GOOD`.
    fn at(forecast: &str, key: &str) -> String {
        let text = GOOD.replace("model = \"ewma\"\n", forecast);
        let (line, column) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                l.strip_prefix(&format!("{key} = "))
                    .map(|_| (i + 1, key.len() + 4))
            })
            .expect("key in the text");
        format!("c.toml:{line}:{column}: pipeline[0].forecast.{key}: ")
    }

    #[test]
    fn an_lstm_model_file_is_read_relative_to_the_config_and_sets_the_horizon() {
        let dir = model_dir("accepted");
        std::fs::create_dir_all(dir.join("models")).unwrap();
        let text = model_text(10.0, 60.0, 1);
        std::fs::write(dir.join("models/resnet.lstm.json"), &text).unwrap();
        let forecast = "model = \"lstm\"\nlstm_model = \"models/resnet.lstm.json\"\n";
        let config = parse_in(&dir, forecast).expect("valid");
        let p = &config.pipelines[0];
        assert_eq!(p.control.forecast.model, ModelKind::Lstm);
        assert_eq!(
            p.control.forecast.lstm.as_ref(),
            Some(&LstmModel::from_json(&text).unwrap())
        );
        // Without horizon_s the pipeline forecasts the network's horizon (it covers the
        // lead time: period 2 s plus the longest cold start, 5 s).
        assert_eq!(p.control.forecast.horizon_s, Some(60.0));
        let file = p.lstm_model.as_ref().expect("model file");
        assert_eq!(file.path, dir.join("models/resnet.lstm.json"));
        assert_eq!(file.fingerprint.len(), 16);

        // `auto` takes the network as one more candidate; with an explicit equal horizon.
        let auto = parse_in(
            &dir,
            "model = \"auto\"\nlstm_model = \"models/resnet.lstm.json\"\nhorizon_s = 60\n",
        )
        .expect("valid");
        let p = &auto.pipelines[0];
        assert_eq!(p.control.forecast.model, ModelKind::Auto);
        assert!(p.control.forecast.lstm.is_some());
        // `auto` without a model file needs none.
        let plain = parse_in(&dir, "model = \"auto\"\n").expect("valid");
        assert_eq!(plain.pipelines[0].control.forecast.lstm, None);
        assert_eq!(plain.pipelines[0].lstm_model, None);

        // New content under the same path is a different configuration (a reload takes it).
        std::fs::write(
            dir.join("models/resnet.lstm.json"),
            model_text(10.0, 60.0, 2),
        )
        .unwrap();
        let retrained = parse_in(&dir, forecast).expect("valid");
        assert_ne!(retrained.pipelines[0], config.pipelines[0]);
        assert_ne!(
            retrained.pipelines[0]
                .lstm_model
                .as_ref()
                .map(|f| &f.fingerprint),
            Some(&file.fingerprint)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_unreadable_or_unfitting_lstm_model_is_reported_at_its_key() {
        let dir = model_dir("errors");
        let good = model_text(10.0, 60.0, 1);
        std::fs::write(
            dir.join("other-version.json"),
            good.replace("\"schema_version\":1", "\"schema_version\":7"),
        )
        .unwrap();
        std::fs::write(dir.join("truncated.json"), &good[..good.len() / 3]).unwrap();
        std::fs::write(dir.join("short.json"), model_text(5.0, 5.0, 1)).unwrap();
        std::fs::write(dir.join("m.json"), &good).unwrap();
        let cases: [(&str, &str, &str); 7] = [
            (
                "model = \"lstm\"\nlstm_model = \"absent.json\"\n",
                "lstm_model",
                "cannot read `",
            ),
            (
                "model = \"lstm\"\nlstm_model = \"other-version.json\"\n",
                "lstm_model",
                "other-version.json`: unsupported model schema version 7 (expected 1); train \
                 it again with this version's `infadaptd forecast train`",
            ),
            (
                "model = \"lstm\"\nlstm_model = \"truncated.json\"\n",
                "lstm_model",
                "truncated.json`: invalid model file: the file ends early (truncated?)",
            ),
            (
                "model = \"lstm\"\nlstm_model = \"m.json\"\nhorizon_s = 30\n",
                "lstm_model",
                "m.json` forecasts the maximum of the next 60 s, but horizon_s is 30: set \
                 horizon_s = 60 or train it with `--horizon 30`",
            ),
            (
                "model = \"auto\"\nlstm_model = \"short.json\"\nsmoothing_s = 3\n",
                "lstm_model",
                "short.json` forecasts the maximum of the next 5 s, shorter than the \
                 pipeline's lead time of 7 s (period plus the longest cold start): train \
                 it with `--horizon 10` or set horizon_s = 5",
            ),
            (
                "model = \"lstm\"\nlstm_model = \"short.json\"\nhorizon_s = 5\nsmoothing_s = 8\n",
                "lstm_model",
                "short.json` reads 5 s buckets, but smoothing_s = 8 averages the rates over \
                 longer than a bucket: set smoothing_s to at most 5 or train it with \
                 `--bucket 8`",
            ),
            (
                "model = \"max\"\nlstm_model = \"m.json\"\n",
                "lstm_model",
                "is read only with model = \"lstm\", \"auto\" or \"ipa-lstm\" (model is \
                 `max`)",
            ),
        ];
        for (forecast, key, message) in cases {
            let errors = parse_in(&dir, forecast).expect_err(forecast).to_string();
            let expected = format!("{}{}", at(forecast, key), message);
            assert!(
                errors
                    .lines()
                    .any(|l| l.starts_with(&at(forecast, key)) && l.contains(message)),
                "expected `{expected}` in:\n{errors}"
            );
        }
        // Without a file the model itself is the error, with the command that makes one.
        for model in ["lstm", "ipa-lstm"] {
            let forecast = format!("model = \"{model}\"\n");
            let errors = parse_in(&dir, &forecast)
                .expect_err("needs a file")
                .to_string();
            assert!(
                errors.starts_with(&at(&forecast, "model"))
                    && errors.contains("set `lstm_model = \"FILE\"`")
                    && errors.contains("infadaptd forecast train --trace TRACE --out FILE"),
                "{errors}"
            );
        }
        // Every problem at once: the model file's and another key's.
        let errors = parse_in(
            &dir,
            "model = \"lstm\"\nlstm_model = \"truncated.json\"\nupper_quantile = 2\n",
        )
        .expect_err("invalid")
        .to_string();
        assert!(errors.contains("forecast.lstm_model: `"), "{errors}");
        assert!(
            errors.contains("forecast.upper_quantile: must be in (0, 1)"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scenario_files_still_refuse_lstm_and_its_key() {
        let text = "[control.forecast]\nmodel = \"lstm\"\nlstm_model = \"m.json\"\n";
        let errors = tomlread::read_document("s.toml", text, |_, root| {
            let control = root.opt_table("control")?;
            let f = control.opt_table("forecast")?;
            let mut config = ControlConfig::new(Problem::new(
                infadapt_model::Pipeline {
                    name: "p".into(),
                    slo_ms: 100.0,
                    stages: Vec::new(),
                },
                1.0,
            ));
            let file = read_forecast(&f, &mut config, None);
            f.finish();
            control.finish();
            file
        })
        .expect_err("refused");
        let text = errors.to_string();
        assert!(
            text.contains("forecast.model: unknown value `lstm`"),
            "{text}"
        );
        assert!(
            text.contains("forecast.lstm_model: unknown field"),
            "{text}"
        );
    }

    #[test]
    fn min_replicas_and_the_scale_up_knobs_are_read_and_checked_with_positions() {
        let config = parse(GOOD).expect("valid");
        let p = &config.pipelines[0];
        assert_eq!(p.control.problem.pipeline.stages[0].min_replicas, 1);
        assert_eq!(p.control.damping.scale_up_stabilization_window_s, 0.0);
        assert_eq!(p.control.damping.max_scale_up_percent, None);
        assert_eq!(p.control.damping.scale_up_select_policy, SelectPolicy::Max);
        let set = parse(
            &GOOD
                .replace("max_replicas = 10", "max_replicas = 10\nmin_replicas = 2")
                .replace(
                    "min_switch_gain = 0.01",
                    "min_switch_gain = 0.01\nscale_up_stabilization_window_s = 30\n\
                     max_scale_up_percent = 50\nscale_up_select_policy = \"min\"",
                ),
        )
        .expect("valid");
        let p = &set.pipelines[0];
        assert_eq!(p.control.problem.pipeline.stages[0].min_replicas, 2);
        assert_eq!(p.control.damping.scale_up_stabilization_window_s, 30.0);
        assert_eq!(p.control.damping.max_scale_up_percent, Some(50.0));
        assert_eq!(p.control.damping.scale_up_select_policy, SelectPolicy::Min);

        let bad = parse(
            &GOOD
                .replace("max_replicas = 10", "max_replicas = 10\nmin_replicas = 11")
                .replace(
                    "min_switch_gain = 0.01",
                    "min_switch_gain = 0.01\nscale_up_stabilization_window_s = -1\n\
                     max_scale_up_percent = 0\nscale_up_select_policy = \"most\"",
                ),
        )
        .expect_err("invalid")
        .to_string();
        for needle in [
            "c.toml:15:16: pipeline[0].stage[0].min_replicas: must be at most max_replicas (10), got 11",
            "c.toml:19:35: pipeline[0].damping.scale_up_stabilization_window_s: must be in [0, 86400], got -1",
            "c.toml:20:24: pipeline[0].damping.max_scale_up_percent: must be in (0, 100000], got 0",
            "c.toml:21:26: pipeline[0].damping.scale_up_select_policy:",
        ] {
            assert!(bad.contains(needle), "{needle} missing from:\n{bad}");
        }
        let zero = parse(&GOOD.replace("max_replicas = 10", "max_replicas = 10\nmin_replicas = 0"))
            .expect_err("invalid")
            .to_string();
        assert!(
            zero.contains("pipeline[0].stage[0].min_replicas: must be in [1, 100000], got 0"),
            "{zero}"
        );
    }

    #[test]
    fn a_token_file_must_exist_and_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir =
            std::env::temp_dir().join(format!("infadaptd-config-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "abcdef0123456789\n").expect("write");
        let with_token = |path: &Path| {
            GOOD.replace(
                "listen = \"127.0.0.1:0\"",
                &format!(
                    "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
                    path.display()
                ),
            )
        };
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let config = parse(&with_token(&token)).expect("valid");
        assert_eq!(config.daemon.token_file.as_deref(), Some(token.as_path()));
        assert_eq!(parse(GOOD).expect("valid").daemon.token_file, None);
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let errors = parse(&with_token(&token))
            .expect_err("readable by others")
            .to_string();
        assert!(
            errors.contains("c.toml:6:14: daemon.http.token_file:")
                && errors.contains("(mode 0644)")
                && errors.contains("chmod 600"),
            "{errors}"
        );
        let errors = parse(&with_token(&dir.join("missing")))
            .expect_err("missing")
            .to_string();
        assert!(
            errors.contains("daemon.http.token_file: cannot read"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_pipeline_no_configuration_can_start_is_refused_at_its_slo() {
        let errors = parse(&GOOD.replace("slo_ms = 750", "slo_ms = 1"))
            .expect_err("infeasible")
            .to_string();
        assert!(
            errors.contains(
                "pipeline[0].slo_ms: no configuration of the pipeline can start: no \
                             feasible plan"
            ),
            "{errors}"
        );
        assert!(errors.starts_with("c.toml:9:10:"), "{errors}");
    }

    #[test]
    fn pipeline_names_that_could_share_a_state_file_or_forge_a_line_are_refused() {
        for bad in [
            "a/b",
            "a b",
            "x\ny",
            "\u{1b}[31mred",
            ".hidden",
            "",
            &"n".repeat(65),
        ] {
            let quoted = toml::Value::String(bad.to_owned()).to_string();
            let text = GOOD.replace("name = \"resnet\"", &format!("name = {quoted}"));
            let errors = parse(&text).expect_err(bad).to_string();
            assert!(
                errors.contains("pipeline[0].name:") && errors.contains("is not a pipeline name"),
                "{bad:?}: {errors}"
            );
            assert_eq!(errors.lines().count(), 1, "{errors}");
        }
        for good in ["a_b", "resnet-50.v2", &"n".repeat(64)] {
            let text = GOOD.replace("name = \"resnet\"", &format!("name = {good:?}"));
            assert!(parse(&text).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_fast_path_is_on_by_default_and_its_keys_are_read_and_checked() {
        let config = parse(GOOD).expect("valid");
        let p = &config.pipelines[0];
        assert_eq!(p.control.fast_path, FastPathConfig::default());
        assert!(p.control.fast_path.enabled);
        assert_eq!(p.check_s, 1.0);
        let set = parse(&format!(
            "{GOOD}[pipeline.fast_path]\nenabled = false\nwindow_s = 3\nsigmas = 4.5\n\
             queue_slo_fraction = 0.25\nmin_gap_s = 0\ncheck_s = 0.5\n"
        ))
        .expect("valid");
        let p = &set.pipelines[0];
        assert_eq!(
            p.control.fast_path,
            FastPathConfig {
                enabled: false,
                window_s: 3.0,
                sigmas: 4.5,
                queue_slo_fraction: 0.25,
                min_gap_s: 0.0,
            }
        );
        assert_eq!(p.check_s, 0.5);
        // A period shorter than a second is checked every period by default.
        let short = parse(&GOOD.replace("period_s = 2", "period_s = 0.5")).expect("valid");
        assert_eq!(short.pipelines[0].check_s, 0.5);

        let bad = parse(&format!(
            "{GOOD}[pipeline.fast_path]\nenabled = 1\nwindow_s = 0.5\nsigmas = -1\n\
             queue_slo_fraction = 0\nmin_gap_s = 1e9\ncheck_s = 3\nperiod = 1\n"
        ))
        .expect_err("invalid")
        .to_string();
        for needle in [
            "pipeline[0].fast_path.enabled: expected",
            "pipeline[0].fast_path.window_s: must be in [1, 3600], got 0.5",
            "pipeline[0].fast_path.sigmas: must be in [0, 3600], got -1",
            "pipeline[0].fast_path.queue_slo_fraction: must be in (0, 100], got 0",
            "pipeline[0].fast_path.min_gap_s: must be in [0, 3600]",
            "pipeline[0].fast_path.check_s: must be in (0, 2] (the period, seconds), got 3",
            "pipeline[0].fast_path.period: unknown field",
        ] {
            assert!(bad.contains(needle), "{needle} missing from:\n{bad}");
        }
        assert!(bad.lines().all(|l| l.starts_with("c.toml:")), "{bad}");
    }

    /// The text-only reader (the fuzz target `config`) reads the same files as
    /// `parse_config` and reads no other file: a named token or LSTM file is an error at
    /// its key, even one that exists.
    #[test]
    fn text_parsing_reads_no_files_and_reports_the_keys_that_name_one() {
        let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        let mut catalogs = |r: &str| read_catalog(&etc.join(r));
        let config = parse_config_text("c.toml", GOOD, &mut catalogs).expect("valid");
        assert_eq!(Ok(config), parse(GOOD));
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let text = GOOD
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:0\"\ntoken_file = \"{manifest}\""),
            )
            .replace(
                "model = \"ewma\"",
                &format!("model = \"auto\"\nlstm_model = \"{manifest}\""),
            );
        let err = parse_config_text("c.toml", &text, &mut catalogs)
            .expect_err("files named")
            .to_string();
        // `token_file` is on line 6 of GOOD as changed (line 1 is empty).
        assert!(
            err.lines().any(|l| l.starts_with("c.toml:6:")
                && l.ends_with(
                    "daemon.http.token_file: names a file, and this reader reads no files"
                )),
            "{err}"
        );
        assert!(
            err.contains("pipeline[0].forecast.lstm_model: names a file"),
            "{err}"
        );
    }
}
