//! The NVIDIA Triton Inference Server backend: scales instance groups, sets dynamic
//! batching, loads and unloads model variants make-before-break, reads the repository index,
//! model configs and Prometheus metrics, and tells the daemon's router where each variant
//! is served.
//!
//! Built as a `cdylib` (`libinfadapt_plugin_triton.so`, loaded for `type = "triton"`) and
//! as an `rlib` (for programs that link the backend in; such a program must not also
//! link another plugin's rlib, since each exports the same C entry symbol).
//!
//! # Config (the `[pipeline.backend]` table, as JSON)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | required | base URL of Triton's HTTP API, `http://host:8000` or `https://…` |
//! | `metrics_url` | none | Triton's metrics page, `http://host:8002/metrics`; without it `observe` reports no rates, failures or busy time |
//! | `inference_url` | `url` | base URL given to the router for `/v2/models/M/infer` |
//! | `models` | `{}` | variant name → Triton model name, for variants whose model is named differently |
//! | `timeout_ms` | 2000 | limit for each ordinary call (index, config, metrics, health, unload) |
//! | `call_budget_ms` | 4000 | limit for all the HTTP calls of one `observe`, `apply` or `health` together (keep it under the daemon's `backend_timeout_s`) |
//! | `load_timeout_s` | 120 | limit for one model load (loads run on a background thread) |
//! | `drain_s` | 10 | how long a variant that left the plan is reported `draining` before it is unloaded |
//! | `queue_delay_us` | 1000 | the dynamic batcher's `max_queue_delay_microseconds` for batching models |
//! | `retry_s` | 5 | wait after a failed load before that model is tried again |
//! | `headers` | `{}` | extra HTTP headers on every call (for example `Authorization`) |
//! | `tls_ca_file` | web roots | PEM file with the CA certificates trusted for `https://` URLs |
//!
//! The daemon adds `pipeline` (name, stages, variants); variants of the pipeline's stages
//! are the models this backend manages. Other models on the server are left alone.
//!
//! # How a plan is applied
//!
//! For each planned variant: a model that is not loaded is loaded (from the repository, on
//! a background thread; it is `starting` until the index says READY). A loaded model whose
//! instance count or batching differs from the plan is loaded again with the *full* config
//! as the server reports it, changed in those fields only (Triton replaces the whole config
//! on an override; the old version serves until the new one is ready, and instance-count
//! changes happen in place). Batch size `b` sets `max_batch_size = b` and
//! `preferred_batch_size = [b]` on batching models.
//!
//! A managed variant that is no longer planned keeps serving (`ready`) while no planned
//! variant of its stage is READY; after that it is reported `draining` (the router sends it
//! nothing new) and is unloaded once `drain_s` have passed, on a later `apply` or `observe`.
//! Both calls reconcile, so a plan completes without further applies; `apply` with a plan
//! that is already in place changes nothing.

mod http;
pub mod metrics;
pub mod model_config;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use infadapt_plugin_abi::{
    ApplyReport, AssignmentMessage, Backend, BackendError, Capabilities, ConfigProblem,
    ConfigProblems, Description, HealthReport, ObservedStage, PlanMessage, PluginObservation,
    SCHEMA_VERSION, StagePlanMessage,
};
use serde_json::{Value, json};

pub use http::{Client, TlsSettings};

/// Everything that goes wrong talking to Triton.
#[derive(Debug, thiserror::Error)]
pub enum TritonError {
    #[error("config: {0}")]
    Config(String),
    #[error("plan: {0}")]
    Plan(String),
    #[error("{call}: server unreachable: {detail}")]
    Unreachable { call: String, detail: String },
    #[error("{call}: no answer within {seconds:.1} s")]
    Timeout { call: String, seconds: f64 },
    #[error("{call}: HTTP {status}: {body}")]
    Status {
        call: String,
        status: u16,
        body: String,
    },
    #[error("{call}: {detail}")]
    Protocol { call: String, detail: String },
    #[error("model `{model}`: the server answered garbage: {detail}")]
    Garbage { model: String, detail: String },
    /// A URL key's value is not a string (a problem reported at its key).
    #[error("must be a string, got {0}")]
    UrlNotString(Value),
    /// A URL key's value is neither `http://` nor `https://` (reported at its key).
    #[error("must start with http:// or https://, got `{0}`")]
    UrlScheme(String),
    /// A duration key's value is negative, not a number or too large (reported at its key).
    #[error("must be a non-negative number below {limit}, got {value}")]
    BadDuration { value: Value, limit: f64 },
}

impl From<TritonError> for BackendError {
    fn from(e: TritonError) -> BackendError {
        let message = format!("triton: {e}");
        match e {
            TritonError::Config(_) | TritonError::Plan(_) => BackendError::invalid(message),
            TritonError::Unreachable { .. } | TritonError::Timeout { .. } => {
                BackendError::unavailable(message)
            }
            _ => BackendError::failed(message),
        }
    }
}

/// Settings read from the backend config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub metrics_url: Option<String>,
    pub inference_url: String,
    pub models: BTreeMap<String, String>,
    pub timeout: Duration,
    pub call_budget: Duration,
    pub load_timeout: Duration,
    pub drain: Duration,
    pub queue_delay_us: u64,
    pub retry: Duration,
    pub headers: Vec<(String, String)>,
    pub tls: TlsSettings,
    /// Stage name → its variants, in the pipeline's order.
    pub stages: Vec<(String, Vec<String>)>,
}

const KNOWN_KEYS: &[&str] = &[
    "url",
    "metrics_url",
    "inference_url",
    "models",
    "timeout_ms",
    "call_budget_ms",
    "load_timeout_s",
    "drain_s",
    "queue_delay_us",
    "retry_s",
    "headers",
    "tls_ca_file",
    "pipeline",
];

fn base_url(value: &Value) -> Result<String, TritonError> {
    let text = value
        .as_str()
        .ok_or_else(|| TritonError::UrlNotString(value.clone()))?;
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(TritonError::UrlScheme(text.to_owned()));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn seconds(
    map: &serde_json::Map<String, Value>,
    key: &str,
    default: f64,
    scale: f64,
) -> Result<Duration, TritonError> {
    match map.get(key) {
        None => Ok(Duration::from_secs_f64(default / scale)),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 && x / scale < 1e6 => {
                Ok(Duration::from_secs_f64(x / scale))
            }
            _ => Err(TritonError::BadDuration {
                value: v.clone(),
                limit: 1e6 * scale,
            }),
        },
    }
}

impl Settings {
    /// Reads and checks the config; every problem at once.
    pub fn from_json(config: &Value) -> Result<Settings, TritonError> {
        let (settings, problems) = Settings::read(config);
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(TritonError::Config(problems.joined())),
        }
    }

    /// Every problem with the config, each naming its key (the plugin's config check).
    pub fn check(config: &Value) -> Vec<ConfigProblem> {
        Settings::read(config).1.into_problems()
    }

    fn read(config: &Value) -> (Option<Settings>, ConfigProblems) {
        let mut problems = ConfigProblems::new();
        let Some(map) = config.as_object() else {
            problems.invalid("", "the backend config must be a table");
            return (None, problems);
        };
        let mut known = KNOWN_KEYS.to_vec();
        known.push("type");
        problems.unknown_keys("", config, &known);
        let mut url = String::new();
        match map.get("url") {
            None => problems.missing("url", "is required (the server's HTTP address)"),
            Some(v) => match base_url(v) {
                Ok(u) => url = u,
                Err(problem) => problems.invalid("url", problem.to_string()),
            },
        }
        let mut optional_url = |key: &str| match map.get(key).map(base_url) {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(problem)) => {
                problems.invalid(key, problem.to_string());
                None
            }
        };
        let metrics_url = optional_url("metrics_url");
        let inference_url = optional_url("inference_url");
        let mut models = BTreeMap::new();
        if let Some(v) = map.get("models") {
            match v.as_object() {
                Some(m) => {
                    for (variant, model) in m {
                        match model.as_str() {
                            Some(name) if !name.is_empty() && !name.contains('/') => {
                                models.insert(variant.clone(), name.to_owned());
                            }
                            _ => problems.invalid(
                                format!("models.{variant}"),
                                "must be a Triton model name",
                            ),
                        }
                    }
                }
                None => problems.invalid("models", "must be a table of variant = \"model\""),
            }
        }
        let mut headers = Vec::new();
        if let Some(v) = map.get("headers") {
            match v.as_object() {
                Some(h) => {
                    for (name, value) in h {
                        let valid_name = !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                        match value.as_str() {
                            Some(text) if valid_name && !text.contains(['\r', '\n']) => {
                                headers.push((name.clone(), text.to_owned()));
                            }
                            _ => problems.invalid(
                                format!("headers.{name}"),
                                "must be a header name with a one-line string value",
                            ),
                        }
                    }
                }
                None => problems.invalid("headers", "must be a table of name = \"value\""),
            }
        }
        let tls = TlsSettings {
            ca_file: match map.get("tls_ca_file") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    problems.invalid("tls_ca_file", "must be a path");
                    None
                }
            },
        };
        let mut duration =
            |key: &str, default: f64, scale: f64| match seconds(map, key, default, scale) {
                Ok(d) => d,
                Err(problem) => {
                    problems.invalid(key, problem.to_string());
                    Duration::ZERO
                }
            };
        let timeout = duration("timeout_ms", 2000.0, 1000.0);
        let call_budget = duration("call_budget_ms", 4000.0, 1000.0);
        let load_timeout = duration("load_timeout_s", 120.0, 1.0);
        let drain = duration("drain_s", 10.0, 1.0);
        let retry = duration("retry_s", 5.0, 1.0);
        let queue_delay_us = match map.get("queue_delay_us") {
            None => 1000,
            Some(v) => v.as_u64().unwrap_or_else(|| {
                problems.invalid(
                    "queue_delay_us",
                    format!("must be a whole number of microseconds, got {v}"),
                );
                0
            }),
        };
        if timeout.is_zero() && map.get("timeout_ms").is_some_and(|v| v.as_f64().is_some()) {
            problems.invalid("timeout_ms", "must be above 0");
        }
        let mut stages = Vec::new();
        if let Some(stage_list) = config
            .get("pipeline")
            .and_then(|p| p.get("stages"))
            .and_then(|s| s.as_array())
        {
            for stage in stage_list {
                let name = stage.get("name").and_then(|n| n.as_str()).unwrap_or("");
                let variants: Vec<String> = stage
                    .get("variants")
                    .and_then(|v| v.as_array())
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| {
                                v.as_str()
                                    .or_else(|| v.get("name").and_then(|n| n.as_str()))
                                    .map(str::to_owned)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if name.is_empty() || variants.is_empty() {
                    problems.invalid("pipeline.stages", "entries need a name and variants");
                } else {
                    stages.push((name.to_owned(), variants));
                }
            }
        }
        if stages.is_empty() {
            problems.missing(
                "pipeline",
                "with at least one stage is required (the daemon adds it)",
            );
        }
        if !problems.is_empty() {
            return (None, problems);
        }
        let settings = Settings {
            inference_url: inference_url.unwrap_or_else(|| url.clone()),
            url,
            metrics_url,
            models,
            timeout,
            call_budget,
            load_timeout,
            drain,
            queue_delay_us,
            retry,
            headers,
            tls,
            stages,
        };
        (Some(settings), problems)
    }

    /// The Triton model serving `variant`.
    pub fn model_of<'a>(&'a self, variant: &'a str) -> &'a str {
        self.models
            .get(variant)
            .map(String::as_str)
            .unwrap_or(variant)
    }
}

/// A model load running on a background thread.
#[derive(Debug)]
enum LoadJob {
    Running,
    Failed { message: String, at: Instant },
}

/// Model name → its background load; shared with the load threads.
type Jobs = Arc<Mutex<HashMap<String, LoadJob>>>;

/// What the plugin knows about one managed variant.
#[derive(Debug, Default, Clone)]
struct VariantState {
    /// When it was first reported draining (cleared when it is planned again).
    draining_since: Option<Instant>,
}

/// One variant as the last reconcile saw it.
#[derive(Debug, Clone)]
struct Seen {
    stage: String,
    variant: String,
    model: String,
    state: EndpointState,
    /// Instances and batch when the model is READY.
    shape: Option<model_config::Shape>,
}

/// The Triton backend instance.
#[derive(Debug)]
pub struct TritonBackend {
    settings: Settings,
    client: Client,
    jobs: Jobs,
    variants: HashMap<String, VariantState>,
    desired: Option<PlanMessage>,
    counters: metrics::CounterTracker,
    last_observe: Option<Instant>,
    /// Fraction of a second observed but not yet reported in `arrivals_per_second`.
    carried_s: f64,
    /// When the current plugin call's HTTP budget runs out.
    deadline: Instant,
}

impl TritonBackend {
    pub fn new(settings: Settings) -> Result<TritonBackend, TritonError> {
        let client = Client::new(settings.headers.clone(), settings.timeout, &settings.tls)?;
        Ok(TritonBackend {
            settings,
            client,
            jobs: Arc::default(),
            variants: HashMap::new(),
            desired: None,
            counters: metrics::CounterTracker::default(),
            last_observe: None,
            carried_s: 0.0,
            deadline: Instant::now(),
        })
    }

    /// Starts the HTTP budget of one plugin call.
    fn begin_call(&mut self) {
        self.deadline = Instant::now() + self.settings.call_budget;
    }

    /// The limit for the next request: `timeout_ms`, cut to what the call has left.
    fn limit(&self, call: &str) -> Result<Duration, TritonError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(50) {
            return Err(TritonError::Timeout {
                call: format!(
                    "{call} (the call's budget of {} ms was spent)",
                    self.settings.call_budget.as_millis()
                ),
                seconds: self.settings.call_budget.as_secs_f64(),
            });
        }
        Ok(left.min(self.settings.timeout))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.url)
    }

    /// Model name → state from the repository index (`READY`, `UNLOADING`, …).
    fn index(&self) -> Result<HashMap<String, String>, TritonError> {
        let url = self.url("/v2/repository/index");
        let answer =
            self.client
                .post_json(&url, Some(&json!({})), self.limit(&format!("POST {url}"))?)?;
        let entries = answer.as_array().ok_or_else(|| TritonError::Protocol {
            call: format!("POST {url}"),
            detail: "the repository index is not a list".into(),
        })?;
        let mut states = HashMap::new();
        for entry in entries {
            let (Some(name), state) = (
                entry.get("name").and_then(|n| n.as_str()),
                entry.get("state").and_then(|s| s.as_str()).unwrap_or(""),
            ) else {
                return Err(TritonError::Protocol {
                    call: format!("POST {url}"),
                    detail: format!("an index entry has no name: {entry}"),
                });
            };
            // Several versions: READY wins.
            let slot = states.entry(name.to_owned()).or_insert_with(String::new);
            if slot.as_str() != "READY" {
                *slot = state.to_owned();
            }
        }
        Ok(states)
    }

    fn model_config(&self, model: &str) -> Result<Value, TritonError> {
        let url = self.url(&format!("/v2/models/{model}/config"));
        self.client
            .get_json(&url, self.limit(&format!("GET {url}"))?)
    }

    /// Starts loading `model` (with `config` as the full override, or from the repository)
    /// on a background thread, unless a load is running or failed within `retry_s`.
    fn start_load(&self, model: &str, config: Option<Value>) -> bool {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.get(model) {
            Some(LoadJob::Running) => return false,
            Some(LoadJob::Failed { at, .. }) if at.elapsed() < self.settings.retry => return false,
            _ => {}
        }
        jobs.insert(model.to_owned(), LoadJob::Running);
        drop(jobs);
        let client = self.client.clone();
        let url = self.url(&format!("/v2/repository/models/{model}/load"));
        let body = config.map(|c| json!({ "parameters": { "config": c.to_string() } }));
        let timeout = self.settings.load_timeout;
        let jobs = Arc::clone(&self.jobs);
        let model_name = model.to_owned();
        let model = model.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("triton-load-{model}"))
            .spawn(move || {
                let result = client.post(&url, Some(body.as_ref().unwrap_or(&json!({}))), timeout);
                let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(_) => {
                        jobs.remove(&model);
                    }
                    Err(e) => {
                        jobs.insert(
                            model,
                            LoadJob::Failed {
                                message: e.to_string(),
                                at: Instant::now(),
                            },
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.insert(
                model_name,
                LoadJob::Failed {
                    message: format!("cannot start a load thread: {e}"),
                    at: Instant::now(),
                },
            );
            return false;
        }
        true
    }

    fn job_running(&self, model: &str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        matches!(jobs.get(model), Some(LoadJob::Running))
    }

    fn failed_loads(&self) -> Vec<String> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed: Vec<String> = jobs
            .iter()
            .filter_map(|(model, job)| match job {
                LoadJob::Failed { message, .. } => {
                    Some(format!("loading `{model}` failed: {message}"))
                }
                LoadJob::Running => None,
            })
            .collect();
        failed.sort();
        failed
    }

    /// Moves the server towards the desired plan and reports every managed variant's state.
    fn reconcile(&mut self, actions: &mut Vec<String>) -> Result<Vec<Seen>, TritonError> {
        let index = self.index()?;
        let desired = self.desired.clone();
        let planned = |stage: &str, variant: &str| -> Option<AssignmentMessage> {
            desired.as_ref().and_then(|plan| {
                plan.stages
                    .iter()
                    .find(|s| s.stage == stage)
                    .and_then(|s| s.assignments.iter().find(|a| a.variant == variant))
                    .cloned()
            })
        };
        let mut seen = Vec::new();
        let stages = self.settings.stages.clone();
        for (stage, variants) in &stages {
            let mut stage_seen = Vec::new();
            for variant in variants {
                let model = self.settings.model_of(variant).to_owned();
                let state = index.get(&model).map(String::as_str).unwrap_or("");
                let ready = state == "READY";
                let shape = if ready {
                    let config = self.model_config(&model)?;
                    Some((model_config::read(&model, &config)?, config))
                } else {
                    None
                };
                let loading = self.job_running(&model);
                let entry = Seen {
                    stage: stage.clone(),
                    variant: variant.clone(),
                    model: model.clone(),
                    state: if ready {
                        EndpointState::Ready
                    } else {
                        EndpointState::Starting
                    },
                    shape: shape.as_ref().map(|(s, _)| s.clone()),
                };
                match planned(stage, variant) {
                    Some(assignment) => {
                        self.variants
                            .entry(variant.clone())
                            .or_default()
                            .draining_since = None;
                        if let Some((current, config)) = &shape {
                            let want = model_config::target(
                                current,
                                assignment.replicas.max(1),
                                assignment.batch,
                                self.settings.queue_delay_us,
                            );
                            if &want != current && !loading {
                                let changed = model_config::apply(config, &want);
                                if self.start_load(&model, Some(changed)) {
                                    actions.push(format!(
                                        "{stage}: {variant}: reconfiguring `{model}`: {} → {} instances, batch {} → {}",
                                        current.instances,
                                        want.instances,
                                        model_config::batch_of(current),
                                        model_config::batch_of(&want)
                                    ));
                                }
                            }
                        } else if !loading && state != "UNLOADING" && self.start_load(&model, None)
                        {
                            actions.push(format!("{stage}: {variant}: loading `{model}`"));
                        }
                        stage_seen.push((entry, true));
                    }
                    None => {
                        if ready || loading {
                            stage_seen.push((entry, false));
                        }
                    }
                }
            }
            // Make-before-break: unplanned variants serve until a planned one is READY.
            let planned_ready = stage_seen
                .iter()
                .any(|(s, planned)| *planned && s.state == EndpointState::Ready);
            for (mut entry, is_planned) in stage_seen {
                if !is_planned && entry.state == EndpointState::Ready && planned_ready {
                    let since = *self
                        .variants
                        .entry(entry.variant.clone())
                        .or_default()
                        .draining_since
                        .get_or_insert_with(Instant::now);
                    entry.state = EndpointState::Draining;
                    if since.elapsed() >= self.settings.drain && !self.job_running(&entry.model) {
                        let url =
                            self.url(&format!("/v2/repository/models/{}/unload", entry.model));
                        self.client.post(
                            &url,
                            Some(&json!({})),
                            self.limit(&format!("POST {url}"))?,
                        )?;
                        actions.push(format!(
                            "{}: {}: unloaded `{}` after draining {:.1} s",
                            entry.stage,
                            entry.variant,
                            entry.model,
                            since.elapsed().as_secs_f64()
                        ));
                        self.variants.remove(&entry.variant);
                        continue;
                    }
                }
                seen.push(entry);
            }
        }
        Ok(seen)
    }

    fn endpoint(&self, seen: &Seen) -> EndpointMessage {
        EndpointMessage {
            stage: seen.stage.clone(),
            variant: seen.variant.clone(),
            url: format!(
                "{}/v2/models/{}/infer",
                self.settings.inference_url, seen.model
            ),
            protocol: EndpointProtocol::KserveV2,
            state: seen.state,
            weight: seen
                .shape
                .as_ref()
                .map(|s| s.instances.max(1) as f64)
                .unwrap_or(1.0),
        }
    }

    /// What runs now: the serving (ready) variants of each stage, with the plan's cores and
    /// shares (shares split evenly among serving variants the plan does not list).
    fn deployed(&self, seen: &[Seen]) -> PlanMessage {
        let mut stages = Vec::new();
        for (stage, _) in &self.settings.stages {
            let serving: Vec<&Seen> = seen
                .iter()
                .filter(|s| &s.stage == stage && s.state == EndpointState::Ready)
                .collect();
            let planned_stage = self
                .desired
                .as_ref()
                .and_then(|p| p.stages.iter().find(|s| &s.stage == stage));
            let mut assignments = Vec::new();
            for s in &serving {
                let Some(shape) = &s.shape else { continue };
                let planned = planned_stage
                    .and_then(|p| p.assignments.iter().find(|a| a.variant == s.variant));
                assignments.push(AssignmentMessage {
                    variant: s.variant.clone(),
                    batch: model_config::batch_of(shape),
                    cores: planned.map(|a| a.cores).unwrap_or(1),
                    replicas: shape.instances,
                    share: planned
                        .map(|a| a.share)
                        .unwrap_or(1.0 / serving.len().max(1) as f64),
                });
            }
            if !assignments.is_empty() {
                stages.push(StagePlanMessage {
                    stage: stage.clone(),
                    assignments,
                });
            }
        }
        PlanMessage {
            placement: Vec::new(),
            schema: SCHEMA_VERSION,
            stages,
        }
    }

    fn check_plan(&self, plan: &PlanMessage) -> Result<(), TritonError> {
        let mut problems = Vec::new();
        for stage in &plan.stages {
            let Some((_, variants)) = self.settings.stages.iter().find(|(n, _)| n == &stage.stage)
            else {
                problems.push(format!("unknown stage `{}`", stage.stage));
                continue;
            };
            for a in &stage.assignments {
                if !variants.contains(&a.variant) {
                    problems.push(format!(
                        "stage `{}`: unknown variant `{}`",
                        stage.stage, a.variant
                    ));
                }
                if a.replicas == 0 || a.replicas > 256 {
                    problems.push(format!(
                        "stage `{}`: variant `{}`: replicas must be 1..=256, got {}",
                        stage.stage, a.variant, a.replicas
                    ));
                }
                if a.batch == 0 || a.batch > 4096 {
                    problems.push(format!(
                        "stage `{}`: variant `{}`: batch must be 1..=4096, got {}",
                        stage.stage, a.variant, a.batch
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TritonError::Plan(problems.join("; ")))
        }
    }

    fn observe_inner(&mut self) -> Result<PluginObservation, TritonError> {
        let mut actions = Vec::new();
        let seen = self.reconcile(&mut actions)?;
        let now = Instant::now();
        let elapsed = self
            .last_observe
            .map(|t| now.duration_since(t).as_secs_f64());
        self.last_observe = Some(now);
        let mut observation = PluginObservation {
            deployed: self.deployed(&seen),
            endpoints: seen.iter().map(|s| self.endpoint(s)).collect(),
            ..PluginObservation::default()
        };
        let mut stage_rows: BTreeMap<String, ObservedStage> = BTreeMap::new();
        for s in &seen {
            let row = stage_rows
                .entry(s.stage.clone())
                .or_insert_with(|| ObservedStage {
                    stage: s.stage.clone(),
                    ..ObservedStage::default()
                });
            match (s.state, &s.shape) {
                (EndpointState::Ready | EndpointState::Draining, Some(shape)) => {
                    row.ready_replicas += shape.instances
                }
                _ => {
                    let planned = self.desired.as_ref().and_then(|p| {
                        p.stages
                            .iter()
                            .find(|st| st.stage == s.stage)
                            .and_then(|st| st.assignments.iter().find(|a| a.variant == s.variant))
                    });
                    row.starting_replicas += planned.map(|a| a.replicas).unwrap_or(1);
                }
            }
        }
        if let Some(metrics_url) = self.settings.metrics_url.clone() {
            let text = self
                .client
                .get_text(&metrics_url, self.limit(&format!("GET {metrics_url}"))?)?;
            let scrape = metrics::parse(&text);
            if scrape.samples == 0 && !text.trim().is_empty() {
                return Err(TritonError::Protocol {
                    call: format!("GET {metrics_url}"),
                    detail: "the answer holds no Prometheus samples".into(),
                });
            }
            // Counters of the pipeline's models that are no counts (NaN, infinite, negative)
            // make the page unusable: read as nothing they would look like no load.
            let invalid: Vec<String> = self
                .settings
                .stages
                .iter()
                .flat_map(|(_, variants)| variants)
                .filter_map(|variant| {
                    let model = self.settings.model_of(variant);
                    scrape
                        .invalid
                        .get(model)
                        .map(|values| format!("model `{model}`: {}", values.join(", ")))
                })
                .collect();
            if !invalid.is_empty() {
                return Err(TritonError::Protocol {
                    call: format!("GET {metrics_url}"),
                    detail: format!("values that are no counts: {}", invalid.join("; ")),
                });
            }
            let mut requests = 0.0;
            let mut arrivals_known = false;
            for (stage, variants) in self.settings.stages.clone() {
                let mut compute_us = 0.0;
                let mut pending = 0.0;
                let mut first_stage_requests = 0.0;
                for variant in &variants {
                    let model = self.settings.model_of(variant).to_owned();
                    let Some(counters) = scrape.models.get(&model) else {
                        continue;
                    };
                    let Some(delta) = self.counters.delta(&model, counters) else {
                        continue;
                    };
                    arrivals_known = true;
                    compute_us += delta.compute_us;
                    pending += delta.pending;
                    first_stage_requests += delta.success + delta.failure;
                    if Some(&stage) == self.settings.stages.last().map(|(s, _)| s) {
                        observation.completed += delta.success.round() as u64;
                    }
                    observation.dropped += delta.failure.round() as u64;
                }
                if Some(&stage) == self.settings.stages.first().map(|(s, _)| s) {
                    requests = first_stage_requests;
                }
                if let Some(row) = stage_rows.get_mut(&stage) {
                    row.queue_len = pending;
                    if let Some(seconds) = elapsed.filter(|e| *e > 0.0) {
                        let capacity = seconds * 1e6 * row.ready_replicas.max(1) as f64;
                        row.busy_fraction = (compute_us / capacity).clamp(0.0, 1.0);
                    }
                }
            }
            // One value per whole second observed; the fractions left over carry to the
            // next observation, so that periods under a second report arrivals too.
            if let Some(seconds) = elapsed.filter(|e| *e > 0.0)
                && arrivals_known
            {
                let (whole, carried) = whole_seconds(seconds, self.carried_s);
                self.carried_s = carried;
                observation.arrivals_per_second = vec![requests / seconds; whole];
            }
            observation.slo_misses = observation.dropped;
        }
        observation.stages = self
            .settings
            .stages
            .iter()
            .map(|(stage, _)| {
                stage_rows.remove(stage).unwrap_or_else(|| ObservedStage {
                    stage: stage.clone(),
                    ..ObservedStage::default()
                })
            })
            .collect();
        Ok(observation)
    }
}

/// The whole seconds in `elapsed_s` plus the fraction `carried_s` left over before, and
/// the fraction left over now.
fn whole_seconds(elapsed_s: f64, carried_s: f64) -> (usize, f64) {
    let total = elapsed_s + carried_s;
    let whole = total.floor();
    (whole as usize, (total - whole).clamp(0.0, 1.0))
}

impl Backend for TritonBackend {
    fn create(config: Value) -> Result<Self, BackendError> {
        let settings = Settings::from_json(&config)?;
        Ok(TritonBackend::new(settings)?)
    }

    fn check_config(config: &Value) -> Vec<ConfigProblem> {
        Settings::check(config)
    }

    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: "triton".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities {
                variant_mix: true,
                batching: true,
                cores: false,
                gpu: false,
            },
            gpu_mem_mb: None,
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        self.begin_call();
        Ok(self.observe_inner()?)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        self.check_plan(plan)?;
        self.begin_call();
        self.desired = Some(plan.clone());
        let mut actions = Vec::new();
        self.reconcile(&mut actions)?;
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed: !actions.is_empty(),
            actions,
        })
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        // `ready` is false while any loaded model is not (strict readiness), which is normal
        // during a switch: liveness decides, readiness goes into the detail.
        self.begin_call();
        let live_url = self.url("/v2/health/live");
        let ready_url = self.url("/v2/health/ready");
        let live = self
            .limit(&format!("GET {live_url}"))
            .and_then(|t| self.client.get_text(&live_url, t));
        let ready = self
            .limit(&format!("GET {ready_url}"))
            .and_then(|t| self.client.get_text(&ready_url, t));
        let mut detail = match (&live, &ready) {
            (Ok(_), Ok(_)) => String::from("server live and ready"),
            (Ok(_), Err(e)) => format!("server live, not ready: {e}"),
            (Err(e), _) => e.to_string(),
        };
        let failed = self.failed_loads();
        for problem in &failed {
            detail.push_str("; ");
            detail.push_str(problem);
        }
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: live.is_ok() && failed.is_empty(),
            detail,
        })
    }
}

infadapt_plugin_abi::export_plugin!(TritonBackend);

#[cfg(test)]
mod tests {
    use super::whole_seconds;

    #[test]
    fn observations_under_a_second_apart_report_every_second_once() {
        let mut carried = 0.0;
        let mut seconds = 0;
        for _ in 0..40 {
            let (whole, left) = whole_seconds(0.25, carried);
            carried = left;
            seconds += whole;
        }
        assert_eq!(seconds, 10);
        assert_eq!(whole_seconds(2.5, 0.0), (2, 0.5));
        assert_eq!(whole_seconds(1.5, 0.5), (2, 0.0));
    }
}
