//! TorchServe backend for infadaptd: scales a TorchServe server's models through its
//! management API and reads what happened from the management API and the Prometheus
//! metrics. Built as a `cdylib` (`libinfadapt_plugin_torchserve.so`, loaded by the daemon
//! for `type = "torchserve"`) and as an `rlib` (tests drive [`TorchServeBackend`] directly).
//!
//! # One registration per replica
//!
//! TorchServe cannot remove one chosen worker of a model gracefully: lowering `min_worker`
//! kills a worker with its in-flight requests (they fail with "Worker died." or are never
//! answered). So every replica of a variant is its own registered model, named
//! `{variant}--r{index}`, with one worker and the plan's batch size. Each registration is
//! one endpoint (`http://…/predictions/{variant}--r{index}`, protocol `raw-http`, weight 1)
//! that the daemon's router sends requests to while it is `ready`:
//!
//! - scale-up registers new replicas; they are `starting` until the server reports a READY
//!   worker, then `ready`;
//! - scale-down marks replicas `draining` (the router sends them nothing new) and
//!   unregisters each only when `drain_s` has passed since an observation first reported
//!   it draining and its queue (`jobQueueStatus.pendingRequests`) is empty; this is checked
//!   on later `observe` and `apply` calls. A replica never reported `ready` carries no
//!   traffic and is unregistered at once;
//! - a change of variant, batch size or batch delay is make-before-break: replicas with the
//!   new settings are registered, and the old ones drain once all new ones of the stage are
//!   ready;
//! - `apply` is idempotent (a met plan changes nothing), and `create` adopts the replicas
//!   already registered on the server, so a restarted daemon neither duplicates nor loses
//!   them.
//!
//! # Config (JSON object; the daemon's `[pipeline.backend]` table)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `management_url` | `http://127.0.0.1:8081` | TorchServe management API |
//! | `inference_url` | `http://127.0.0.1:8080` | inference API, the base of endpoint URLs |
//! | `metrics_url` | `http://127.0.0.1:8082/metrics` | Prometheus page (`metrics_mode=prometheus`) |
//! | `archives` | `{variant}.mar` | table variant → archive (`url` of a registration: a file in the model store or a URL the server allows) |
//! | `max_batch_delay_ms` | 20 | `max_batch_delay` of every registration |
//! | `drain_s` | 10 | seconds a draining replica keeps running after it was reported draining; longer than the slowest request |
//! | `request_timeout_ms` | 2000 | time limit of every HTTP request |
//! | `call_budget_ms` | 4000 | time all the requests of one plugin call may take together (keep it below the daemon's `backend_timeout_s`) |
//! | `response_timeout_s` | server default | `response_timeout` of every registration |
//! | `max_replicas_per_variant` | 32 | plans asking for more are refused |
//!
//! `pipeline` (stage and variant names) is added by the daemon; variant names must be
//! valid TorchServe model names without `--`, unique across stages. Unknown keys are errors.
//!
//! # Observations
//!
//! Per-model counters `ts_inference_requests_total`, `ts_inference_latency_microseconds`
//! and `ts_queue_latency_microseconds` (summed over the pipeline's replicas) give the
//! arrivals (the period's mean rate, one value per elapsed second), completions and busy
//! fractions; the host-wide `Requests5XX` counts dropped requests. TorchServe exports no
//! latency percentiles, so `latency_p99_ms` stays empty. Missing metrics read as no change
//! and counters that go backwards count as reset; the pipeline's counters with values that
//! are no counts (NaN, infinite, negative) fail the observation.

mod config;
pub mod metrics;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use infadapt_plugin_abi::{
    ApplyReport, AssignmentMessage, Backend, BackendError, Capabilities, Description, HealthReport,
    ObservedStage, PlanMessage, PluginObservation, SCHEMA_VERSION, StagePlanMessage,
};
use serde_json::Value;

pub use config::{Config, KEYS as CONFIG_KEYS};
use infadapt_plugin_support::call::{self as http, CallError, Client};
use infadapt_plugin_support::http::{Method, encode_query};
use metrics::{ModelCounters, Scrape};
use replicas::{Action, Drain, Phase, Replica, parse_replica_name, reconcile, replica_name};

/// Name the backend reports in `describe`.
pub const BACKEND_NAME: &str = "torchserve";

/// Most pages of `GET /models` read (100 models each).
const MAX_MODEL_PAGES: usize = 100;

/// Everything that can go wrong; each message names the call or the config key.
#[derive(Debug, thiserror::Error)]
pub enum TorchServeError {
    #[error("config: {0}")]
    Config(String),
    #[error("plan: {0}")]
    Plan(String),
    /// A request to the server failed or was answered wrongly.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl From<TorchServeError> for BackendError {
    fn from(error: TorchServeError) -> BackendError {
        let message = error.to_string();
        match error {
            TorchServeError::Config(_) | TorchServeError::Plan(_) => BackendError::invalid(message),
            TorchServeError::Call(e) if e.is_unavailable() => BackendError::unavailable(message),
            TorchServeError::Call(_) => BackendError::failed(message),
        }
    }
}

/// What `GET /models/{name}` says about one registration.
#[derive(Debug, Clone, PartialEq)]
struct ModelStatus {
    batch: u32,
    max_batch_delay_ms: u64,
    worker_ready: bool,
    pending: u64,
}

/// The backend: one TorchServe server, the pipeline's replicas on it, the plan being
/// followed and the counters of the previous observation.
#[derive(Debug)]
pub struct TorchServeBackend {
    config: Config,
    client: Client,
    replicas: BTreeMap<String, Replica>,
    target: Option<PlanMessage>,
    /// Last planned share and cores per variant (kept after a variant leaves the plan so
    /// that replicas still draining into a switch report sensible values).
    shares: HashMap<String, f64>,
    cores: HashMap<String, u32>,
    /// Counters per model at the previous scrape; `None` before the first one.
    counters: Option<HashMap<String, ModelCounters>>,
    requests_5xx: Option<f64>,
    last_observe: Instant,
    /// Fraction of a second not yet reported in `arrivals_per_second`.
    carried_s: f64,
}

impl TorchServeBackend {
    /// Connects to the server, adopts the replicas registered there and takes the metrics
    /// baseline.
    pub fn new(config: Config) -> Result<TorchServeBackend, TorchServeError> {
        let client = Client::new(config.request_timeout);
        client.start_call(config.call_budget);
        let mut backend = TorchServeBackend {
            config,
            client,
            replicas: BTreeMap::new(),
            target: None,
            shares: HashMap::new(),
            cores: HashMap::new(),
            counters: None,
            requests_5xx: None,
            last_observe: Instant::now(),
            carried_s: 0.0,
        };
        backend.refresh(true)?;
        backend.scrape_deltas()?;
        backend.last_observe = Instant::now();
        Ok(backend)
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The replicas known now, by model name.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    fn management(&self, path: &str) -> String {
        format!("{}{path}", self.config.management_url)
    }

    /// Model names registered on the server (all pages).
    fn list_models(&self) -> Result<Vec<String>, TorchServeError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let url = match &token {
                None => self.management("/models?limit=100"),
                Some(t) => self.management(&format!(
                    "/models?limit=100&next_page_token={}",
                    encode_query(t)
                )),
            };
            let answer = self.client.get_json(&url, "list models")?;
            let garbage = |detail: &str| CallError::Garbage {
                call: http::describe(Method::Get, &url, "list models"),
                detail: detail.to_owned(),
            };
            let models = answer
                .get("models")
                .and_then(Value::as_array)
                .ok_or_else(|| garbage("answer has no `models` list"))?;
            for model in models {
                let name = model
                    .get("modelName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| garbage("a model without `modelName`"))?;
                names.push(name.to_owned());
            }
            if models.is_empty() {
                return Ok(names);
            }
            token = match answer.get("nextPageToken") {
                Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => return Ok(names),
            };
        }
        Ok(names)
    }

    /// One registration's settings and workers; `None` when it is gone.
    fn model_status(&self, name: &str) -> Result<Option<ModelStatus>, TorchServeError> {
        let url = self.management(&format!("/models/{}", encode_query(name)));
        let call = "describe model";
        let answer = self.client.send(Method::Get, &url, None, call)?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&answer.status) {
            return Err(CallError::Status {
                call: http::describe(Method::Get, &url, call),
                status: answer.status,
                body: http::quote(&answer.body),
            }
            .into());
        }
        let document = http::parse_json(&answer.body, Method::Get, &url, call)?;
        let garbage = |detail: &str| CallError::Garbage {
            call: http::describe(Method::Get, &url, call),
            detail: format!("{detail}: {}", http::quote(&answer.body)),
        };
        let model = document
            .as_array()
            .and_then(|versions| versions.first())
            .ok_or_else(|| garbage("answer is not a list of model versions"))?;
        let batch = model
            .get("batchSize")
            .and_then(Value::as_u64)
            .filter(|b| *b >= 1 && *b <= u64::from(u32::MAX))
            .ok_or_else(|| garbage("no valid `batchSize`"))? as u32;
        let max_batch_delay_ms = model
            .get("maxBatchDelay")
            .and_then(Value::as_u64)
            .ok_or_else(|| garbage("no valid `maxBatchDelay`"))?;
        let workers = model
            .get("workers")
            .and_then(Value::as_array)
            .ok_or_else(|| garbage("no `workers` list"))?;
        let worker_ready = workers
            .iter()
            .any(|w| w.get("status").and_then(Value::as_str) == Some("READY"));
        let pending = model
            .get("jobQueueStatus")
            .and_then(|q| q.get("pendingRequests"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Some(ModelStatus {
            batch,
            max_batch_delay_ms,
            worker_ready,
            pending,
        }))
    }

    /// Brings the replica list up to date with the server. Registrations that follow the
    /// naming scheme for a variant of this pipeline and are not known yet are adopted
    /// (`adopting`: at creation, a ready one is taken as routed to).
    fn refresh(&mut self, adopting: bool) -> Result<(), TorchServeError> {
        let names = self.list_models()?;
        self.replicas.retain(|name, _| names.contains(name));
        for name in &names {
            let Some((variant, index)) = parse_replica_name(name) else {
                continue;
            };
            let Some(stage) = self.config.stage_of.get(variant).cloned() else {
                continue;
            };
            let variant = variant.to_owned();
            let Some(status) = self.model_status(name)? else {
                self.replicas.remove(name);
                continue;
            };
            let replica = self
                .replicas
                .entry(name.clone())
                .or_insert_with(|| Replica {
                    name: name.clone(),
                    stage,
                    variant,
                    index,
                    batch: status.batch,
                    max_batch_delay_ms: status.max_batch_delay_ms,
                    worker_ready: status.worker_ready,
                    pending: status.pending,
                    // A replica found ready may have been routed to by an earlier daemon.
                    advertised: adopting && status.worker_ready,
                    draining: None,
                });
            replica.batch = status.batch;
            replica.max_batch_delay_ms = status.max_batch_delay_ms;
            replica.worker_ready = status.worker_ready;
            replica.pending = status.pending;
        }
        Ok(())
    }

    /// Runs the reconcile step towards the plan being followed; returns what was done.
    fn follow_target(&mut self) -> Result<Vec<String>, TorchServeError> {
        let Some(target) = &self.target else {
            return Ok(Vec::new());
        };
        let replicas: Vec<Replica> = self.replicas.values().cloned().collect();
        let actions = reconcile(
            &replicas,
            target,
            self.config.max_batch_delay_ms,
            self.config.drain,
            Instant::now(),
        );
        let mut done = Vec::new();
        for action in actions {
            done.push(self.execute(action)?);
        }
        Ok(done)
    }

    fn execute(&mut self, action: Action) -> Result<String, TorchServeError> {
        match action {
            Action::Register {
                stage,
                variant,
                index,
                batch,
            } => {
                let name = replica_name(&variant, index);
                let archive = self.config.archives.get(&variant).cloned().ok_or_else(|| {
                    TorchServeError::Plan(format!("no archive for variant `{variant}`"))
                })?;
                let mut query = format!(
                    "/models?url={}&model_name={}&batch_size={batch}&max_batch_delay={}\
                     &initial_workers=1&synchronous=false",
                    encode_query(&archive),
                    encode_query(&name),
                    self.config.max_batch_delay_ms
                );
                if let Some(seconds) = self.config.response_timeout_s {
                    query.push_str(&format!("&response_timeout={seconds}"));
                }
                let url = self.management(&query);
                let answer = self
                    .client
                    .send(Method::Post, &url, None, "register replica")?;
                // 409: registered already (by a call whose answer was lost); adopt it.
                if !(200..300).contains(&answer.status) && answer.status != 409 {
                    return Err(CallError::Status {
                        call: http::describe(Method::Post, &url, "register replica"),
                        status: answer.status,
                        body: http::quote(&answer.body),
                    }
                    .into());
                }
                self.replicas.insert(
                    name.clone(),
                    Replica {
                        name: name.clone(),
                        stage: stage.clone(),
                        variant,
                        index,
                        batch,
                        max_batch_delay_ms: self.config.max_batch_delay_ms,
                        worker_ready: false,
                        pending: 0,
                        advertised: false,
                        draining: None,
                    },
                );
                Ok(format!("{stage}: registered {name} (batch {batch})"))
            }
            Action::Drain { name } => {
                if let Some(replica) = self.replicas.get_mut(&name) {
                    replica.draining = Some(Drain { announced_at: None });
                }
                Ok(format!("draining {name}"))
            }
            Action::Reinstate { name } => {
                if let Some(replica) = self.replicas.get_mut(&name) {
                    replica.draining = None;
                }
                Ok(format!("serving {name} again"))
            }
            Action::Unregister { name } => {
                let url = self.management(&format!("/models/{}", encode_query(&name)));
                let answer = self
                    .client
                    .send(Method::Delete, &url, None, "unregister replica")?;
                if !(200..300).contains(&answer.status) && answer.status != 404 {
                    return Err(CallError::Status {
                        call: http::describe(Method::Delete, &url, "unregister replica"),
                        status: answer.status,
                        body: http::quote(&answer.body),
                    }
                    .into());
                }
                self.replicas.remove(&name);
                Ok(format!("unregistered {name}"))
            }
        }
    }

    /// Checks a plan against the pipeline before anything is changed.
    fn check_plan(&self, plan: &PlanMessage) -> Result<(), TorchServeError> {
        let mut problems = Vec::new();
        for stage in &plan.stages {
            if !self.config.stages.contains(&stage.stage) {
                problems.push(format!("no stage `{}` in the pipeline", stage.stage));
                continue;
            }
            for a in &stage.assignments {
                match self.config.stage_of.get(&a.variant) {
                    Some(s) if *s == stage.stage => {}
                    Some(s) => problems.push(format!(
                        "variant `{}` belongs to stage `{s}`, not `{}`",
                        a.variant, stage.stage
                    )),
                    None => problems.push(format!(
                        "stage `{}`: unknown variant `{}`",
                        stage.stage, a.variant
                    )),
                }
                if a.batch == 0 {
                    problems.push(format!("variant `{}`: batch must be at least 1", a.variant));
                }
                if a.replicas > self.config.max_replicas_per_variant {
                    problems.push(format!(
                        "variant `{}`: {} replicas exceed max_replicas_per_variant = {}",
                        a.variant, a.replicas, self.config.max_replicas_per_variant
                    ));
                }
                if !a.share.is_finite() || a.share < 0.0 {
                    problems.push(format!(
                        "variant `{}`: share {} is invalid",
                        a.variant, a.share
                    ));
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for a in &stage.assignments {
                if !seen.insert(&a.variant) {
                    problems.push(format!(
                        "stage `{}`: variant `{}` appears twice",
                        stage.stage, a.variant
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TorchServeError::Plan(problems.join("; ")))
        }
    }

    /// Reconciles the server towards `plan` (idempotent).
    pub fn apply_plan(&mut self, plan: &PlanMessage) -> Result<ApplyReport, TorchServeError> {
        self.check_plan(plan)?;
        self.client.start_call(self.config.call_budget);
        for stage in &plan.stages {
            for a in &stage.assignments {
                self.shares.insert(a.variant.clone(), a.share);
                self.cores.insert(a.variant.clone(), a.cores);
            }
        }
        self.target = Some(plan.clone());
        self.refresh(false)?;
        let actions = self.follow_target()?;
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed: !actions.is_empty(),
            actions,
        })
    }

    /// Follows up on the plan (replicas that became ready, drains that finished) and
    /// reports what happened since the previous observation.
    pub fn observe_server(&mut self) -> Result<PluginObservation, TorchServeError> {
        self.client.start_call(self.config.call_budget);
        self.refresh(false)?;
        self.follow_target()?;
        let now = Instant::now();
        for replica in self.replicas.values_mut() {
            match replica.phase() {
                Phase::Ready => replica.advertised = true,
                Phase::Draining => {
                    if let Some(drain) = &mut replica.draining {
                        drain.announced_at.get_or_insert(now);
                    }
                }
                Phase::Starting => {}
            }
        }
        let (deltas, dropped) = self.scrape_deltas()?;
        let elapsed_s = now.duration_since(self.last_observe).as_secs_f64();
        self.last_observe = now;

        let ours: Vec<&Replica> = self.replicas.values().collect();
        let mut completed = 0.0;
        for (model, delta) in &deltas {
            if self.counts_as_ours(model) {
                completed += delta.requests;
            }
        }
        let whole_s = (elapsed_s + self.carried_s).floor();
        self.carried_s = (elapsed_s + self.carried_s - whole_s).clamp(0.0, 1.0);
        let rate = if elapsed_s > 0.0 {
            completed / elapsed_s
        } else {
            0.0
        };
        let arrivals_per_second = vec![rate; whole_s as usize];

        let mut stages = Vec::new();
        for stage in &self.config.stages {
            let in_stage: Vec<&&Replica> = ours.iter().filter(|r| r.stage == *stage).collect();
            let ready = in_stage.iter().filter(|r| r.serving()).count();
            let busy_s: f64 = in_stage
                .iter()
                .filter_map(|r| {
                    deltas
                        .get(&r.name)
                        .map(|d| d.inference_us / 1e6 / f64::from(r.batch))
                })
                .sum();
            let workers = in_stage.iter().filter(|r| r.worker_ready).count();
            let busy_fraction = if workers > 0 && elapsed_s > 0.0 {
                (busy_s / (elapsed_s * workers as f64)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            stages.push(ObservedStage {
                stage: stage.clone(),
                queue_len: in_stage.iter().map(|r| r.pending as f64).sum(),
                busy_fraction,
                ready_replicas: ready as u32,
                starting_replicas: in_stage
                    .iter()
                    .filter(|r| r.phase() == Phase::Starting)
                    .count() as u32,
            });
        }

        let dropped = dropped.round() as u64;
        Ok(PluginObservation {
            nodes: Vec::new(),
            placement: Vec::new(),
            schema: SCHEMA_VERSION,
            arrivals_per_second,
            completed: completed.round() as u64,
            dropped,
            slo_misses: dropped,
            latency_p99_ms: None,
            stages,
            deployed: self.deployed(),
            endpoints: self.endpoints(),
        })
    }

    fn counts_as_ours(&self, model: &str) -> bool {
        parse_replica_name(model)
            .is_some_and(|(variant, _)| self.config.stage_of.contains_key(variant))
    }

    /// Scrapes the metrics page; returns per-model deltas since the previous scrape and
    /// the change of the host-wide 5xx counter.
    fn scrape_deltas(&mut self) -> Result<(HashMap<String, ModelCounters>, f64), TorchServeError> {
        let url = self.config.metrics_url.clone();
        let text = self
            .client
            .expect_ok(Method::Get, &url, None, "read metrics")?;
        let page = metrics::parse(&text);
        if page.samples.is_empty() && page.bad_lines > 0 {
            return Err(CallError::Garbage {
                call: http::describe(Method::Get, &url, "read metrics"),
                detail: format!(
                    "not Prometheus text ({}): {}",
                    page.first_problem.unwrap_or_default(),
                    http::quote(&text)
                ),
            }
            .into());
        }
        let scrape = Scrape::from_page(&page);
        // Counters that are no counts (NaN, infinite, negative) make the page unusable:
        // read as nothing they would look like no load.
        let invalid: Vec<String> = scrape
            .invalid
            .iter()
            .filter(|(model, _)| model.as_deref().is_none_or(|m| self.counts_as_ours(m)))
            .map(|(model, value)| match model {
                Some(m) => format!("{m}: {value}"),
                None => value.clone(),
            })
            .collect();
        if !invalid.is_empty() {
            return Err(CallError::Garbage {
                call: http::describe(Method::Get, &url, "read metrics"),
                detail: format!("values that are no counts: {}", invalid.join("; ")),
            }
            .into());
        }
        let first = self.counters.is_none();
        let previous = self.counters.get_or_insert_with(HashMap::new);
        let mut deltas = HashMap::new();
        for (model, current) in &scrape.models {
            // After the first scrape a model not seen before had no requests then (TorchServe
            // creates a model's series with its first request, and keeps it).
            let delta = metrics::model_delta(previous.get(model), current, !first);
            previous.insert(model.clone(), *current);
            deltas.insert(model.clone(), delta);
        }
        let dropped = match scrape.requests_5xx {
            Some(current) => {
                let d = metrics::counter_delta(
                    if first {
                        None
                    } else {
                        Some(self.requests_5xx.unwrap_or(0.0))
                    },
                    current,
                );
                self.requests_5xx = Some(current);
                d
            }
            None => 0.0,
        };
        Ok((deltas, dropped))
    }

    /// What serves now: per variant, its ready replicas that are not draining.
    fn deployed(&self) -> PlanMessage {
        let mut stages = Vec::new();
        for stage in &self.config.stages {
            let mut by_variant: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
            for r in self
                .replicas
                .values()
                .filter(|r| r.stage == *stage && r.serving())
            {
                by_variant.entry(&r.variant).or_default().push(r);
            }
            let planned_batch = |variant: &str| {
                self.target.as_ref().and_then(|t| {
                    t.stages
                        .iter()
                        .flat_map(|s| &s.assignments)
                        .find(|a| a.variant == variant)
                        .map(|a| a.batch)
                })
            };
            let total_share: f64 = by_variant
                .keys()
                .map(|v| self.shares.get(*v).copied().unwrap_or(1.0))
                .sum();
            let mut assignments = Vec::new();
            for (variant, replicas) in &by_variant {
                let mut batches: BTreeMap<u32, usize> = BTreeMap::new();
                for r in replicas {
                    *batches.entry(r.batch).or_default() += 1;
                }
                let planned = planned_batch(variant);
                let batch = batches
                    .iter()
                    .max_by_key(|(b, n)| (**n, Some(**b) == planned))
                    .map(|(b, _)| *b)
                    .unwrap_or(1);
                let share = self.shares.get(*variant).copied().unwrap_or(1.0);
                assignments.push(AssignmentMessage {
                    variant: (*variant).to_owned(),
                    batch,
                    cores: self.cores.get(*variant).copied().unwrap_or(1),
                    replicas: replicas.len() as u32,
                    share: if total_share > 0.0 {
                        share / total_share
                    } else {
                        1.0 / by_variant.len() as f64
                    },
                });
            }
            stages.push(StagePlanMessage {
                stage: stage.clone(),
                assignments,
            });
        }
        PlanMessage {
            placement: Vec::new(),
            schema: SCHEMA_VERSION,
            stages,
        }
    }

    fn endpoints(&self) -> Vec<EndpointMessage> {
        self.replicas
            .values()
            .map(|r| EndpointMessage {
                stage: r.stage.clone(),
                variant: r.variant.clone(),
                url: format!(
                    "{}/predictions/{}",
                    self.config.inference_url,
                    encode_query(&r.name)
                ),
                protocol: EndpointProtocol::RawHttp,
                state: match r.phase() {
                    Phase::Ready => EndpointState::Ready,
                    Phase::Draining => EndpointState::Draining,
                    Phase::Starting => EndpointState::Starting,
                },
                weight: 1.0,
            })
            .collect()
    }

    /// Whether the inference API answers `/ping` healthy, with a summary of the replicas.
    pub fn check_health(&mut self) -> Result<HealthReport, TorchServeError> {
        self.client.start_call(self.config.call_budget);
        let url = format!("{}/ping", self.config.inference_url);
        let answer = self.client.send(Method::Get, &url, None, "ping")?;
        let document = http::parse_json(&answer.body, Method::Get, &url, "ping")?;
        let status = document
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("no status")
            .to_owned();
        let count = |phase: Phase| {
            self.replicas
                .values()
                .filter(|r| r.phase() == phase)
                .count()
        };
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: answer.status == 200 && status == "Healthy",
            detail: format!(
                "ping: {status}; replicas: {} ready, {} starting, {} draining",
                count(Phase::Ready),
                count(Phase::Starting),
                count(Phase::Draining)
            ),
        })
    }
}

impl Backend for TorchServeBackend {
    fn create(config: Value) -> Result<Self, BackendError> {
        let config = Config::from_json(&config)?;
        Ok(TorchServeBackend::new(config)?)
    }

    fn check_config(config: &Value) -> Vec<infadapt_plugin_abi::ConfigProblem> {
        Config::check(config)
    }

    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: BACKEND_NAME.into(),
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
        Ok(self.observe_server()?)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        Ok(self.apply_plan(plan)?)
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(self.check_health()?)
    }
}

infadapt_plugin_abi::export_plugin!(TorchServeBackend);

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// What a fake server does with a request for a path.
    #[derive(Clone, Copy)]
    enum Reply {
        Json(&'static str),
        Text(&'static str),
        /// Bytes that are not HTTP at all.
        Raw(&'static [u8]),
        /// Reads the request and never answers.
        Silent,
        /// Answers JSON after a delay in milliseconds.
        Late(u64, &'static str),
    }

    /// A loopback server that answers by path prefix (first match) on its own thread;
    /// it lives as long as the test process.
    fn fake_server(routes: Vec<(&'static str, Reply)>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = routes.clone();
                std::thread::spawn(move || serve(stream, &routes));
            }
        });
        port
    }

    fn serve(mut stream: TcpStream, routes: &[(&str, Reply)]) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let reply = routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, r)| *r)
            .unwrap_or(Reply::Text("not found"));
        let http = |content_type: &str, body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let bytes = match reply {
            Reply::Json(body) => http("application/json", body).into_bytes(),
            Reply::Text(body) => http("text/plain", body).into_bytes(),
            Reply::Raw(bytes) => bytes.to_vec(),
            Reply::Silent => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            Reply::Late(ms, body) => {
                std::thread::sleep(Duration::from_millis(ms));
                http("application/json", body).into_bytes()
            }
        };
        let _ = stream.write_all(&bytes);
    }

    fn config_for(port: u16, timeout_ms: u64) -> Value {
        json!({
            "management_url": format!("http://127.0.0.1:{port}"),
            "inference_url": format!("http://127.0.0.1:{port}"),
            "metrics_url": format!("http://127.0.0.1:{port}/metrics"),
            "request_timeout_ms": timeout_ms,
            "pipeline": { "name": "p", "stages": [{ "name": "s", "variants": ["small"] }] }
        })
    }

    fn create_error(config: Value) -> BackendError {
        match <TorchServeBackend as Backend>::create(config) {
            Ok(_) => panic!("create should fail"),
            Err(e) => e,
        }
    }

    const MODELS: Reply = Reply::Json(r#"{"models": [{"modelName": "small--r0"}]}"#);
    const SMALL_R0: Reply = Reply::Json(
        r#"[{"modelName": "small--r0", "batchSize": 2, "maxBatchDelay": 20,
             "workers": [{"id": "9000", "status": "READY"}],
             "jobQueueStatus": {"pendingRequests": 3}}]"#,
    );
    const METRICS: Reply = Reply::Text(
        "ts_inference_requests_total{model_name=\"small--r0\",model_version=\"default\",} 5.0\n",
    );

    #[test]
    fn a_server_that_is_down_is_unavailable_and_named() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = create_error(config_for(port, 500));
        assert_eq!(err.code, infadapt_plugin_abi::STATUS_UNAVAILABLE);
        assert!(
            err.message.starts_with(&format!(
                "GET http://127.0.0.1:{port}/models?limit=100 (list models): server unreachable"
            )),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_slow_server_times_out_within_the_request_limit() {
        let port = fake_server(vec![("/", Reply::Silent)]);
        let started = Instant::now();
        let err = create_error(config_for(port, 300));
        let waited = started.elapsed();
        assert_eq!(err.code, infadapt_plugin_abi::STATUS_UNAVAILABLE);
        assert!(
            err.message
                .ends_with("(list models): no answer within 300 ms"),
            "{}",
            err.message
        );
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[test]
    fn one_call_stops_when_its_time_budget_is_spent() {
        let port = fake_server(vec![
            (
                "/models?",
                Reply::Late(200, r#"{"models": [{"modelName": "small--r0"}]}"#),
            ),
            ("/models/small--r0", Reply::Silent),
        ]);
        let mut config = config_for(port, 2000);
        config["call_budget_ms"] = json!(600);
        let started = Instant::now();
        let err = create_error(config);
        let waited = started.elapsed();
        assert_eq!(
            err.code,
            infadapt_plugin_abi::STATUS_UNAVAILABLE,
            "{} after {waited:?}",
            err.message
        );
        assert!(
            err.message.contains("(describe model): no answer within")
                && err
                    .message
                    .ends_with("(what was left of the call's 600 ms budget)"),
            "{}",
            err.message
        );
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
    }

    #[test]
    fn garbage_answers_are_errors_that_name_the_call() {
        let cases: Vec<(Vec<(&'static str, Reply)>, &str)> = vec![
            (
                vec![("/", Reply::Raw(b"\x00\x01 definitely not http\r\n\r\n"))],
                "(list models): not a valid HTTP answer",
            ),
            (
                vec![("/", Reply::Text("<html>oops</html>"))],
                "(list models): answer is not JSON",
            ),
            (
                vec![("/models", Reply::Json(r#"{"items": []}"#))],
                "(list models): answer has no `models` list",
            ),
            (
                vec![
                    ("/models?", MODELS),
                    ("/models/small--r0", Reply::Json(r#"{"oops": 1}"#)),
                ],
                "GET http://127.0.0.1:PORT/models/small--r0 (describe model): answer is not a \
                 list of model versions",
            ),
            (
                vec![
                    ("/models?", MODELS),
                    ("/models/small--r0", Reply::Json(r#"[{"batchSize": 0}]"#)),
                ],
                "(describe model): no valid `batchSize`",
            ),
            (
                vec![
                    ("/models?", MODELS),
                    ("/models/small--r0", SMALL_R0),
                    (
                        "/metrics",
                        Reply::Text("<html><body>502 Bad Gateway</body></html>"),
                    ),
                ],
                "GET http://127.0.0.1:PORT/metrics (read metrics): not Prometheus text (line 1:",
            ),
        ];
        for (routes, expected) in cases {
            let port = fake_server(routes);
            let err = create_error(config_for(port, 2000));
            let expected = expected.replace("PORT", &port.to_string());
            assert_eq!(
                err.code,
                infadapt_plugin_abi::STATUS_ERROR,
                "{}",
                err.message
            );
            assert!(
                err.message.contains(&expected),
                "`{expected}` not in `{}`",
                err.message
            );
        }
    }

    #[test]
    fn adopted_replicas_and_counters_come_from_the_server() {
        let port = fake_server(vec![
            ("/models?", MODELS),
            ("/models/small--r0", SMALL_R0),
            ("/metrics", METRICS),
            ("/ping", Reply::Json(r#"{"status": "Healthy"}"#)),
        ]);
        let mut backend =
            <TorchServeBackend as Backend>::create(config_for(port, 2000)).expect("create");
        let observation = Backend::observe(&mut backend).expect("observe");
        assert_eq!(observation.deployed.stages[0].assignments.len(), 1);
        let adopted = &observation.deployed.stages[0].assignments[0];
        assert_eq!((adopted.batch, adopted.replicas), (2, 1));
        assert_eq!(observation.stages[0].queue_len, 3.0);
        assert_eq!(observation.stages[0].ready_replicas, 1);
        // The counters seen at create are the baseline, not new traffic.
        assert_eq!(observation.completed, 0);
        assert_eq!(observation.endpoints.len(), 1);
        assert_eq!(
            observation.endpoints[0].url,
            format!("http://127.0.0.1:{port}/predictions/small--r0")
        );
        let health = Backend::health(&mut backend).expect("health");
        assert!(health.healthy, "{health:?}");
        // A plan for a variant the pipeline lacks changes nothing and says why.
        let plan: PlanMessage = serde_json::from_value(json!({ "stages": [{ "stage": "s",
            "assignments": [{ "variant": "big", "batch": 0, "cores": 1, "replicas": 1 }] }] }))
        .expect("plan");
        let err = Backend::apply(&mut backend, &plan).expect_err("invalid plan");
        assert_eq!(err.code, infadapt_plugin_abi::STATUS_INVALID_INPUT);
        assert!(
            err.message.contains("unknown variant `big`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("batch must be at least 1"),
            "{}",
            err.message
        );
    }
}
