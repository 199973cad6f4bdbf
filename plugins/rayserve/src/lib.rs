//! Ray Serve backend for infadaptd: deploys each variant of a pipeline's stages as a Serve
//! application on a Ray cluster through Serve's declarative REST API on the Ray dashboard
//! (`PUT /api/serve/applications/`, the API the Serve docs call stable for multi-application
//! configs; the `serve deploy` command sends the same request), and reads what runs from
//! `GET /api/serve/applications/`, the cluster's nodes from `GET /nodes?view=summary` and
//! `GET /api/cluster_status` and Serve's request metrics from each node's metrics page. Built as a `cdylib` (`libinfadapt_plugin_rayserve.so`, loaded by the daemon for
//! `type = "rayserve"`) and as an `rlib` (tests drive [`RayServeBackend`] directly).
//!
//! # One application per variant
//!
//! A variant of a stage is the Serve application `{app_prefix}-{stage}-{variant}` with its
//! route `/{app_prefix}/{stage}/{variant}`, its `import_path`, `args` and `runtime_env` from
//! the variant's configuration and one deployment (named by `deployment`, by default the
//! variant) with:
//!
//! - `num_replicas` = the plan's replicas, a fixed count, and `autoscaling_config = null`:
//!   Serve's own autoscaler is off for the deployments the plugin owns (a code default is
//!   overridden). `observe` checks it: a deployment with an autoscaling config, a
//!   `num_replicas` that is not a count or an application open to an outside scaler is
//!   reported by `health` as unhealthy with the reason, and the next `apply` or `observe`
//!   puts the plugin's config back;
//! - `ray_actor_options = { num_cpus = cores, num_gpus = variants.NAME.num_gpus }`;
//! - `user_config` = the variant's `user_config` with `max_batch_size` = the plan's batch and
//!   `batch_wait_timeout_s`, for the application's `@serve.batch` method (its
//!   `reconfigure` sets them; Serve applies a `user_config` change without restarting);
//! - `max_surge_percent` (100 by default): a change that restarts replicas (cores, GPUs)
//!   starts the replacements before the old replicas stop.
//!
//! # Placement
//!
//! A plan's `placement` is enforced (`placement = "planned"`, the default): Serve pins a
//! deployment only as a whole (`ray_actor_options.label_selector` on the node's
//! `ray.io/node-id` label), so a placed variant runs as one application per node it is
//! placed on, `{app_prefix}-{stage}-{variant}-{node}` with its route
//! `/{app_prefix}/{stage}/{variant}/{node}` (`{node}`: the first 12 characters of the node
//! id), pinned there with `num_replicas` = the replicas placed there. Scaling on a node is
//! in place; a node that leaves the variant's placement is drained like a variant that
//! left the plan, once the variant's planned node applications run all their replicas. A
//! plan without placement, or `placement = "scheduler"`, keeps one application per
//! variant that Serve's scheduler places. `observe` reports where the replicas run, summed
//! per variant and node over its applications; both name forms are adopted on `create`
//! (a node application by its name and the node id its deployed config selects).
//!
//! A `PUT` replaces Serve's whole set of applications. The plugin therefore reads the
//! current config first and re-sends every application it does not own as it was deployed
//! (`deployed_app_config`), and one process-wide lock serializes its read-and-write (the
//! pipelines of one daemon share the loaded plugin). An application deployed from Python
//! (`serve.run`) has no declarative config; the plugin then sends nothing and says why.
//! One daemon owns the applications of a cluster: any other writer of the Serve config
//! races it.
//!
//! # Make-before-break
//!
//! The daemon's router splits a stage's load among its variants and sends requests only to
//! `ready` endpoints (`{proxy_url}{route_prefix}`, one per application, weighted by running
//! replicas: a placed variant's share is split among its node applications); Serve's proxy spreads a variant's requests among its replicas. A new variant
//! is `starting` until its deployment runs its target replica count and the proxy lists its
//! route (`GET {proxy_url}/-/routes`), then `ready`; a ready variant stays ready while it is
//! scaled. A variant that left the plan keeps serving until every planned variant of its
//! stage is ready, is then reported `draining`, and leaves the config `drain_s` after that
//! observation (one never reported ready leaves at once).
//!
//! # Robust to controller restarts
//!
//! While no Serve controller answers, the dashboard answers an empty instance. After the
//! plugin saw its applications deployed, such an answer (or one with no application at all,
//! up to three times in a row) fails that call as unavailable, so the daemon backs off: no
//! config is sent from it (that would delete every other application) and the plugin's own
//! state is kept.
//!
//! # Config (JSON object; the daemon's `[pipeline.backend]` table)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `dashboard_url` | `http://127.0.0.1:8265` | Ray dashboard (Serve REST API, nodes) |
//! | `proxy_url` | `http://127.0.0.1:8000` | Serve HTTP proxy, the base of endpoint URLs; its port is Serve's `http_options.port` when the plugin starts Serve |
//! | `app_prefix` | the pipeline's name | start of application names and routes |
//! | `drain_s` | 10 | seconds a replaced variant keeps serving after it was reported draining; longer than the daemon's control period and the slowest request |
//! | `request_timeout_ms` | 2000 | time limit of every HTTP request |
//! | `call_budget_ms` | 4000 | time all the requests of one plugin call may take together (keep it below the daemon's `backend_timeout_s`) |
//! | `metrics` | true | read Serve's request metrics from the nodes' metrics pages |
//! | `metrics_urls` | the nodes' pages | metrics pages to read instead (`http://host:port/metrics`) |
//! | `max_replicas_per_variant` | 64 | plans asking for more are refused |
//! | `max_surge_percent` | 100 | the deployments' `max_surge_percent` |
//! | `batch_wait_timeout_s` | 0.01 | `batch_wait_timeout_s` in every `user_config` |
//! | `http_host` | `0.0.0.0` | `http_options.host` when the plugin's PUT starts Serve (a running Serve keeps its own) |
//! | `proxy_location` | Serve's (`EveryNode`) | `proxy_location` when the plugin's PUT starts Serve: `EveryNode`, `HeadOnly` or `Disabled` |
//! | `placement` | `planned` | `planned`: the plan's placement, one application per node a variant uses; `scheduler`: one application per variant, placed by Serve |
//! | `variants.NAME.import_path` | required | `module:application` of the variant's Serve application |
//! | `variants.NAME.args` | `{}` | arguments of the application builder |
//! | `variants.NAME.deployment` | NAME | name of the application's deployment |
//! | `variants.NAME.num_gpus` | 0 | GPUs per replica |
//! | `variants.NAME.runtime_env` | none | the application's `runtime_env` |
//! | `variants.NAME.user_config` | `{}` | more `user_config` keys (not the two batch keys) |
//! | `variants.NAME.protocol` | `raw-http` | `raw-http` or `kserve-v2`: what the router sends |
//! | `variants.NAME.max_ongoing_requests` | Serve's | the deployment's `max_ongoing_requests` |
//!
//! `pipeline` (stage and variant names) is added by the daemon; every variant needs its
//! `variants` entry. Unknown keys are errors, with the key meant as a hint.
//!
//! # Observations
//!
//! `deployed` is what serves (ready variants, their running replicas summed over their
//! applications); per stage ready and
//! starting replicas; `placement` the running replicas per node; `nodes` every node with its
//! CPUs and GPUs in all, free (the scheduler's logical resources) and held by this
//! pipeline's replicas, and its free memory. Per application the proxies' counters
//! `ray_serve_num_http_requests`, `ray_serve_num_http_error_requests` and the histogram
//! `ray_serve_http_request_latency_ms` (on the metrics pages of the nodes that run a Serve
//! proxy) give arrivals (the period's mean rate per elapsed
//! second), completed and dropped requests and the period's p99 latency; a node's counters
//! that go backwards count as reset, and a metrics page that cannot be read is skipped.

mod apps;
mod config;
pub mod metrics;
pub mod nodes;
pub mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use infadapt_plugin_abi::messages::{
    EndpointMessage, EndpointState, NodeMessage, PlacementMessage,
};
use infadapt_plugin_abi::{
    ApplyReport, AssignmentMessage, Backend, BackendError, Capabilities, Description, HealthReport,
    ObservedStage, PlanMessage, PluginObservation, SCHEMA_VERSION, StagePlanMessage,
};
use infadapt_plugin_support::prometheus;
use serde_json::Value;

pub use apps::{AppKey, Apps, OwnedApp, Phase, Seen};
pub use config::{Config, KEYS as CONFIG_KEYS, PlacementMode, VARIANT_KEYS};
use infadapt_plugin_support::call::{self as http, CallError, Client};
use infadapt_plugin_support::http::Method;
use serve::{APP_RUNNING, RUNNING, ServeState, Spec};

/// Name the backend reports in `describe`.
pub const BACKEND_NAME: &str = "rayserve";

/// Path of Serve's declarative REST API on the dashboard.
pub const APPLICATIONS_PATH: &str = "/api/serve/applications/";
/// Path of the dashboard's node summary.
pub const NODES_PATH: &str = "/nodes?view=summary";
/// Path of the dashboard's cluster status (resources in use per node).
pub const CLUSTER_STATUS_PATH: &str = "/api/cluster_status";
/// Path of a Serve proxy's route table.
pub const ROUTES_PATH: &str = "/-/routes";

/// Answers with no application at all, after the plugin saw its own deployed, that are
/// taken for a controller still recovering before they are believed.
const EMPTY_ANSWERS_DOUBTED: u32 = 3;

/// Serializes the read-and-write of Serve's config among every instance in the process
/// (a `PUT` replaces all applications, so two interleaved would undo each other).
static SERVE_CONFIG_LOCK: Mutex<()> = Mutex::new(());

/// Everything that can go wrong; each message names the call or the config key.
#[derive(Debug, thiserror::Error)]
pub enum RayServeError {
    #[error("config: {0}")]
    Config(String),
    #[error("plan: {0}")]
    Plan(String),
    /// A request to the dashboard or a metrics page failed or was answered wrongly.
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("Serve controller not ready: {0}; nothing changed, the plugin's state is kept")]
    ControllerNotReady(String),
    #[error("Serve config not sent: {0}")]
    Refused(String),
}

impl From<RayServeError> for BackendError {
    fn from(error: RayServeError) -> BackendError {
        let message = error.to_string();
        match error {
            RayServeError::Config(_) | RayServeError::Plan(_) => BackendError::invalid(message),
            RayServeError::ControllerNotReady(_) => BackendError::unavailable(message),
            RayServeError::Call(e)
                if e.is_unavailable() || matches!(e, CallError::Status { status: 503, .. }) =>
            {
                BackendError::unavailable(message)
            }
            RayServeError::Call(_) | RayServeError::Refused(_) => BackendError::failed(message),
        }
    }
}

/// The backend: one Ray cluster's Serve, the pipeline's applications on it, the plan being
/// followed and the metrics of the previous observation.
#[derive(Debug)]
pub struct RayServeBackend {
    config: Config,
    client: Client,
    apps: Apps,
    target: Option<PlanMessage>,
    /// Why the owned deployments do not hold the planned replica count: Serve's
    /// autoscaler or an outside scaler (from the latest read).
    scaling_problems: Vec<String>,
    /// Other trouble the latest observation met (failed applications, unread metrics
    /// pages, the proxy's routes).
    problems: Vec<String>,
    /// The latest read had the plugin's applications (so an empty one is doubted).
    saw_own_apps: bool,
    /// Empty answers in a row while the plugin's applications were expected.
    empty_answers: u32,
    /// The latest read of Serve's state, for the observation.
    state: ServeState,
    counters: metrics::Counters,
    last_observe: Instant,
    /// Fraction of a second not yet reported in `arrivals_per_second`.
    carried_s: f64,
}

impl RayServeBackend {
    /// Connects to the dashboard, adopts the pipeline's applications found there and takes
    /// the metrics baseline.
    pub fn new(config: Config) -> Result<RayServeBackend, RayServeError> {
        let client = Client::new(config.request_timeout);
        client.start_call(config.call_budget);
        let mut backend = RayServeBackend {
            config,
            client,
            apps: Apps::default(),
            target: None,
            scaling_problems: Vec::new(),
            problems: Vec::new(),
            saw_own_apps: false,
            empty_answers: 0,
            state: ServeState::default(),
            counters: metrics::Counters::default(),
            last_observe: Instant::now(),
            carried_s: 0.0,
        };
        let state = backend.read_state()?;
        backend.adopt(&state);
        backend.state = state;
        if backend.config.metrics {
            let nodes = backend.read_nodes()?;
            backend.scrape(&nodes);
        }
        backend.last_observe = Instant::now();
        Ok(backend)
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plugin's applications now.
    pub fn apps(&self) -> &Apps {
        &self.apps
    }

    fn dashboard(&self, path: &str) -> String {
        format!("{}{path}", self.config.dashboard_url)
    }

    /// Which of the plugin's applications `name` is, if any: a variant's own
    /// (`{app_prefix}-{stage}-{variant}`), or one of a variant's node applications
    /// (`{app_prefix}-{stage}-{variant}-{node}`, pinned to that node).
    fn identify(&self, name: &str, app: &serve::Application) -> Option<AppKey> {
        self.config.stage_of.iter().find_map(|(variant, stage)| {
            let base = self.config.app_name(stage, variant);
            if name == base {
                return Some((stage.clone(), variant.clone(), None));
            }
            if !name.starts_with(&format!("{base}-")) {
                return None;
            }
            let node = serve::pinned_node(app)?;
            (self.config.app_name_on(stage, variant, Some(&node)) == name)
                .then(|| (stage.clone(), variant.clone(), Some(node)))
        })
    }

    /// Name of one of the plugin's applications.
    fn name_of(&self, app: &OwnedApp) -> String {
        self.config
            .app_name_on(&app.stage, &app.variant, app.node.as_deref())
    }

    /// Every application name the plugin owns: each variant's own, the ones it keeps and
    /// the node applications `state` holds.
    fn owned_names(&self, state: &ServeState) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .config
            .stage_of
            .iter()
            .map(|(variant, stage)| self.config.app_name(stage, variant))
            .collect();
        names.extend(self.apps.apps.values().map(|a| self.name_of(a)));
        names.extend(
            state
                .applications
                .iter()
                .filter(|(name, app)| self.identify(name, app).is_some())
                .map(|(name, _)| name.clone()),
        );
        names
    }

    /// `GET /api/serve/applications/`, read; an answer that says no controller is there,
    /// after the plugin saw its applications, is `ControllerNotReady`.
    fn read_state(&mut self) -> Result<ServeState, RayServeError> {
        let url = self.dashboard(APPLICATIONS_PATH);
        let call = "read the Serve applications";
        let answer = self.client.get_json(&url, call)?;
        let state = serve::parse_state(&answer).map_err(|detail| CallError::Garbage {
            call: http::describe(Method::Get, &url, call),
            detail: format!("{detail}: {}", http::quote(&answer.to_string())),
        })?;
        self.judge_state(state)
    }

    /// Whether an answer can be believed (see [`RayServeError::ControllerNotReady`]).
    fn judge_state(&mut self, state: ServeState) -> Result<ServeState, RayServeError> {
        if !self.saw_own_apps {
            self.empty_answers = 0;
        } else if !state.controller_running {
            return Err(RayServeError::ControllerNotReady(
                "the dashboard reports no Serve controller (starting or restarting)".into(),
            ));
        } else if state.applications.is_empty() {
            self.empty_answers += 1;
            if self.empty_answers <= EMPTY_ANSWERS_DOUBTED {
                return Err(RayServeError::ControllerNotReady(format!(
                    "the controller answered no application at all ({} time(s) in a row; \
                     believed after {EMPTY_ANSWERS_DOUBTED})",
                    self.empty_answers
                )));
            }
        } else {
            self.empty_answers = 0;
        }
        let owned = self.owned_names(&state);
        self.saw_own_apps = state.applications.keys().any(|name| owned.contains(name));
        Ok(state)
    }

    /// Takes the pipeline's applications found on the cluster as its own, with the settings
    /// they were deployed with; one running may have served requests already.
    fn adopt(&mut self, state: &ServeState) {
        for (name, app) in &state.applications {
            let Some((stage, variant, node)) = self.identify(name, app) else {
                continue;
            };
            if app.status == serve::APP_DELETING {
                continue;
            }
            let deployment = self.deployment_of(&variant, app);
            let spec = Spec {
                replicas: deployment.map_or(1, |d| d.target_num_replicas.max(1)),
                cores: deployment
                    .and_then(|d| d.num_cpus)
                    .map_or(1, |c| c.round().max(1.0) as u32),
                batch: deployment
                    .and_then(|d| d.user_config.as_ref())
                    .and_then(|u| u.get("max_batch_size"))
                    .and_then(Value::as_u64)
                    .map_or(1, |b| b.clamp(1, u64::from(u32::MAX)) as u32),
            };
            self.apps.apps.insert(
                (stage.clone(), variant.clone(), node.clone()),
                OwnedApp {
                    stage,
                    variant,
                    node,
                    spec,
                    share: 1.0,
                    advertised: app.status == APP_RUNNING
                        && deployment.is_some_and(|d| d.count(RUNNING) > 0),
                    draining: None,
                    seen: None,
                },
            );
        }
    }

    /// The variant's deployment in an application (by its configured name, else the only
    /// one).
    fn deployment_of<'a>(
        &self,
        variant: &str,
        app: &'a serve::Application,
    ) -> Option<&'a serve::Deployment> {
        let name = &self.config.variants.get(variant)?.deployment;
        app.deployments.get(name).or_else(|| {
            (app.deployments.len() == 1)
                .then(|| app.deployments.values().next())
                .flatten()
        })
    }

    /// The proxy's route table (route prefix → application); empty when the proxy does not
    /// answer (no variant can be ready then).
    fn read_routes(&self) -> (BTreeSet<String>, Option<String>) {
        let url = format!("{}{ROUTES_PATH}", self.config.proxy_url);
        match self.client.get_json(&url, "read the proxy's routes") {
            Ok(Value::Object(routes)) => (routes.keys().cloned().collect(), None),
            Ok(other) => (
                BTreeSet::new(),
                Some(format!(
                    "GET {url}: not a route table: {}",
                    http::quote(&other.to_string())
                )),
            ),
            Err(e) => (BTreeSet::new(), Some(e.to_string())),
        }
    }

    /// Brings what the plugin knows of its applications up to date with `state`, and lists
    /// what is wrong with them.
    fn update_seen(&mut self, state: &ServeState, routes: &BTreeSet<String>) {
        let mut problems = Vec::new();
        let mut scaling = Vec::new();
        let keys: Vec<AppKey> = self.apps.apps.keys().cloned().collect();
        for key in keys {
            let (stage, variant, node) = &key;
            let name = self.config.app_name_on(stage, variant, node.as_deref());
            let route = self.config.route_prefix_on(stage, variant, node.as_deref());
            let seen = state.applications.get(&name).map(|app| {
                let deployment = self.deployment_of(variant, app);
                if let Some(d) = deployment {
                    scaling.extend(d.autoscaling_problem().map(|p| format!("{name}: {p}")));
                }
                if app.external_scaler_enabled {
                    scaling.push(format!("{name}: open to an outside scaler"));
                }
                if matches!(app.status.as_str(), "DEPLOY_FAILED" | "UNHEALTHY") {
                    problems.push(format!("{name}: {} ({})", app.status, app.message.trim()));
                }
                let running = deployment.map_or(0, |d| d.count(RUNNING));
                let recovering = deployment.map_or(0, |d| d.count(serve::RECOVERING));
                let starting = deployment.map_or(0, |d| {
                    d.replicas
                        .iter()
                        .filter(|r| {
                            ![RUNNING, serve::RECOVERING, "STOPPING"].contains(&r.state.as_str())
                        })
                        .count() as u32
                });
                Seen {
                    app_running: app.status == APP_RUNNING,
                    running,
                    recovering,
                    starting,
                    routed: routes.contains(&route),
                }
            });
            if let Some(app) = self.apps.apps.get_mut(&key) {
                app.seen = seen;
            }
        }
        if let Some(capacity) = state.target_capacity.filter(|c| *c < 100.0) {
            problems.push(format!(
                "Serve's target_capacity is {capacity} %: the deployments run fewer replicas \
                 than planned"
            ));
        }
        self.problems = problems;
        self.scaling_problems = scaling;
    }

    /// Reads Serve's state and moves the cluster towards the plan being followed: drains
    /// and removals that are due, and a `PUT` of the config when the plugin's applications
    /// differ from it. Returns what was done.
    fn reconcile(&mut self) -> Result<Vec<String>, RayServeError> {
        let _lock = SERVE_CONFIG_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = self.read_state()?;
        let (routes, routes_problem) = self.read_routes();
        self.update_seen(&state, &routes);
        if let Some(problem) = routes_problem {
            self.problems.push(problem);
        }
        let mut actions = Vec::new();
        if let Some(target) = &self.target {
            actions.extend(self.apps.step(
                target,
                self.config.placement,
                self.config.drain,
                Instant::now(),
            ));
            let wanted: Vec<Value> = self
                .apps
                .apps
                .values()
                .map(|a| {
                    serve::app_config(
                        &self.config,
                        &a.stage,
                        &a.variant,
                        a.node.as_deref(),
                        a.spec,
                    )
                })
                .collect();
            if self.config_differs(&state, &wanted) {
                let owned = self.owned_names(&state);
                let count = wanted.len();
                let body = serve::deploy_body(&state, &owned, wanted, &self.config.serve_start())
                    .map_err(RayServeError::Refused)?;
                let url = self.dashboard(APPLICATIONS_PATH);
                self.client
                    .expect_ok(Method::Put, &url, Some(&body), "deploy the Serve config")?;
                actions.push(format!(
                    "sent the Serve config ({count} application(s) of this pipeline, {} in all)",
                    body["applications"].as_array().map_or(0, Vec::len)
                ));
            }
        }
        self.state = state;
        Ok(actions)
    }

    /// Whether Serve's applications of this pipeline differ from `wanted`.
    fn config_differs(&self, state: &ServeState, wanted: &[Value]) -> bool {
        let owned = self.owned_names(state);
        let wanted_names: BTreeSet<&str> =
            wanted.iter().filter_map(|w| w["name"].as_str()).collect();
        let stale = state.applications.iter().any(|(name, app)| {
            owned.contains(name)
                && !wanted_names.contains(name.as_str())
                && app.status != serve::APP_DELETING
        });
        let different = wanted.iter().any(|w| {
            let name = w["name"].as_str().unwrap_or_default();
            match state.applications.get(name) {
                Some(app) if app.status != serve::APP_DELETING => {
                    app.deployed_app_config
                        .as_ref()
                        .is_none_or(|deployed| !serve::matches(w, deployed))
                        || app
                            .deployments
                            .values()
                            .any(|d| d.autoscaling_problem().is_some())
                }
                _ => true,
            }
        });
        stale || different
    }

    /// Checks a plan against the pipeline before anything is changed.
    fn check_plan(&self, plan: &PlanMessage) -> Result<(), RayServeError> {
        let mut problems = Vec::new();
        for stage in &plan.stages {
            if !self.config.stages.contains(&stage.stage) {
                problems.push(format!("no stage `{}` in the pipeline", stage.stage));
                continue;
            }
            let mut seen = BTreeSet::new();
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
                if a.cores == 0 {
                    problems.push(format!("variant `{}`: cores must be at least 1", a.variant));
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
                if !seen.insert(&a.variant) {
                    problems.push(format!(
                        "stage `{}`: variant `{}` appears twice",
                        stage.stage, a.variant
                    ));
                }
            }
        }
        for p in &plan.placement {
            if self.config.stage_of.get(&p.variant) != Some(&p.stage) {
                problems.push(format!(
                    "placement: no variant `{}` in stage `{}`",
                    p.variant, p.stage
                ));
            }
            if config::node_suffix(&p.node).is_empty() {
                problems.push(format!(
                    "placement of `{}`: node id `{}` has no letter or digit",
                    p.variant, p.node
                ));
            }
            if p.replicas > self.config.max_replicas_per_variant {
                problems.push(format!(
                    "placement of `{}` on node `{}`: {} replicas exceed \
                     max_replicas_per_variant = {}",
                    p.variant, p.node, p.replicas, self.config.max_replicas_per_variant
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RayServeError::Plan(problems.join("; ")))
        }
    }

    /// Reconciles the cluster towards `plan` (idempotent).
    pub fn apply_plan(&mut self, plan: &PlanMessage) -> Result<ApplyReport, RayServeError> {
        self.check_plan(plan)?;
        self.client.start_call(self.config.call_budget);
        let mut actions = self.apps.set_target(plan, self.config.placement);
        self.target = Some(plan.clone());
        actions.extend(self.reconcile()?);
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed: !actions.is_empty(),
            actions,
        })
    }

    /// The cluster's nodes, with the resources in use on each when the cluster status
    /// gives them (without, a node counts as free what this pipeline does not hold, and the
    /// health says why).
    fn read_nodes(&mut self) -> Result<Vec<nodes::Node>, RayServeError> {
        let url = self.dashboard(NODES_PATH);
        let call = "read the cluster's nodes";
        let answer = self.client.get_json(&url, call)?;
        let mut cluster_nodes =
            nodes::parse_nodes(&answer).map_err(|detail| CallError::Garbage {
                call: http::describe(Method::Get, &url, call),
                detail: format!("{detail}: {}", http::quote(&answer.to_string())),
            })?;
        let url = self.dashboard(CLUSTER_STATUS_PATH);
        let call = "read the resources in use";
        let usage = self.client.get_json(&url, call).and_then(|answer| {
            nodes::add_usage(&mut cluster_nodes, &answer).map_err(|detail| CallError::Garbage {
                call: http::describe(Method::Get, &url, call),
                detail,
            })
        });
        if let Err(e) = usage {
            self.problems.push(e.to_string());
        }
        Ok(cluster_nodes)
    }

    /// Reads the metrics pages (configured, else those of the alive nodes that run a Serve
    /// proxy, whose counters these are; every alive node's while no proxy is known) and
    /// returns the per-application deltas since the previous scrape; a page that cannot be
    /// read is skipped (its node's requests count at the next scrape that reads it).
    fn scrape(&mut self, nodes: &[nodes::Node]) -> BTreeMap<String, metrics::Traffic> {
        let proxies = &self.state.proxy_nodes;
        let urls: Vec<String> = if self.config.metrics_urls.is_empty() {
            nodes
                .iter()
                .filter(|n| n.alive && (proxies.is_empty() || proxies.contains(&n.id)))
                .filter_map(nodes::Node::metrics_url)
                .collect()
        } else {
            self.config.metrics_urls.clone()
        };
        let mut pages = Vec::new();
        for url in urls {
            match self
                .client
                .expect_ok(Method::Get, &url, None, "read metrics")
            {
                Ok(text) => pages.push((url, prometheus::parse(&text))),
                Err(e) => self.problems.push(e.to_string()),
            }
        }
        // Ours: the applications owned now, and any named as a variant's node application
        // (one removed since the previous scrape still has requests to count).
        let owned = self.owned_names(&self.state);
        let variant_prefixes: Vec<String> = self
            .config
            .stage_of
            .iter()
            .map(|(variant, stage)| format!("{}-", self.config.app_name(stage, variant)))
            .collect();
        let is_ours =
            |app: &str| owned.contains(app) || variant_prefixes.iter().any(|p| app.starts_with(p));
        let (traffic, invalid) = self.counters.deltas(&pages, is_ours);
        if !invalid.is_empty() {
            self.problems.push(format!(
                "metrics: values that are no counts: {}",
                invalid.join("; ")
            ));
        }
        traffic
    }

    /// Follows up on the plan (variants that became ready, drains that finished) and
    /// reports what happened since the previous observation.
    pub fn observe_cluster(&mut self) -> Result<PluginObservation, RayServeError> {
        self.client.start_call(self.config.call_budget);
        self.reconcile()?;
        let now = Instant::now();
        self.apps.announce(now);
        let cluster_nodes = self.read_nodes()?;
        let traffic = if self.config.metrics {
            self.scrape(&cluster_nodes)
        } else {
            BTreeMap::new()
        };
        let elapsed_s = now.duration_since(self.last_observe).as_secs_f64();
        self.last_observe = now;

        let (mut requests, mut errors) = (0.0, 0.0);
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for t in traffic.values() {
            requests = prometheus::finite_sum(requests, t.requests);
            errors = prometheus::finite_sum(errors, t.errors);
            for (bound, count) in &t.buckets {
                let slot = buckets.entry(bound.to_bits()).or_insert((*bound, 0.0));
                slot.1 = prometheus::finite_sum(slot.1, *count);
            }
        }
        let buckets: Vec<(f64, f64)> = buckets.into_values().collect();
        let whole_s = (elapsed_s + self.carried_s).floor();
        self.carried_s = (elapsed_s + self.carried_s - whole_s).clamp(0.0, 1.0);
        let rate = if elapsed_s > 0.0 {
            requests / elapsed_s
        } else {
            0.0
        };
        let dropped = errors.min(requests).round() as u64;

        Ok(PluginObservation {
            schema: SCHEMA_VERSION,
            arrivals_per_second: vec![rate; whole_s as usize],
            completed: (requests - errors).max(0.0).round() as u64,
            dropped,
            slo_misses: dropped,
            latency_p99_ms: metrics::quantile(&buckets, 0.99),
            stages: self.observed_stages(),
            deployed: self.deployed(),
            endpoints: self.endpoints(),
            nodes: self.node_messages(&cluster_nodes),
            placement: self.placement(),
        })
    }

    fn observed_stages(&self) -> Vec<ObservedStage> {
        self.config
            .stages
            .iter()
            .map(|stage| {
                let (mut ready, mut starting) = (0, 0);
                for app in self.apps.apps.values().filter(|a| a.stage == *stage) {
                    let seen = app.seen.unwrap_or_default();
                    match app.phase() {
                        Phase::Ready => {
                            ready += seen.running + seen.recovering;
                            starting += seen.starting;
                        }
                        Phase::Starting => starting += seen.running + seen.starting,
                        Phase::Draining => {}
                    }
                }
                ObservedStage {
                    stage: stage.clone(),
                    ready_replicas: ready,
                    starting_replicas: starting,
                    ..ObservedStage::default()
                }
            })
            .collect()
    }

    /// The Serve deployment of one of the plugin's applications in the latest read.
    fn deployment(&self, app: &OwnedApp) -> Option<&serve::Deployment> {
        let name = self.name_of(app);
        let application = self.state.applications.get(&name)?;
        self.deployment_of(&app.variant, application)
    }

    /// What serves now: per stage, its ready variants with their running replicas (summed
    /// over a variant's ready applications).
    fn deployed(&self) -> PlanMessage {
        let mut stages = Vec::new();
        for stage in &self.config.stages {
            let mut serving: BTreeMap<&str, Vec<&OwnedApp>> = BTreeMap::new();
            for app in self
                .apps
                .apps
                .values()
                .filter(|a| a.stage == *stage && a.phase() == Phase::Ready)
            {
                serving.entry(app.variant.as_str()).or_default().push(app);
            }
            if serving.is_empty() {
                continue;
            }
            let share_of = |apps: &[&OwnedApp]| apps.iter().map(|a| a.share).fold(0.0, f64::max);
            let total_share: f64 = serving.values().map(|apps| share_of(apps)).sum();
            let assignments = serving
                .iter()
                .map(|(variant, apps)| {
                    let app = apps[0];
                    let deployment = self.deployment(app);
                    AssignmentMessage {
                        variant: (*variant).to_owned(),
                        batch: deployment
                            .and_then(|d| d.user_config.as_ref())
                            .and_then(|u| u.get("max_batch_size"))
                            .and_then(Value::as_u64)
                            .map_or(app.spec.batch, |b| b.clamp(1, u64::from(u32::MAX)) as u32),
                        cores: deployment
                            .and_then(|d| d.num_cpus)
                            .map_or(app.spec.cores, |c| c.round().max(1.0) as u32),
                        replicas: apps
                            .iter()
                            .map(|a| a.seen.map_or(0, |s| s.running + s.recovering))
                            .sum(),
                        share: if total_share > 0.0 {
                            share_of(apps) / total_share
                        } else {
                            1.0 / serving.len() as f64
                        },
                    }
                })
                .collect();
            stages.push(StagePlanMessage {
                stage: stage.clone(),
                assignments,
            });
        }
        PlanMessage {
            stages,
            ..PlanMessage::default()
        }
    }

    fn endpoints(&self) -> Vec<EndpointMessage> {
        self.apps
            .apps
            .values()
            .filter(|a| a.seen.is_some())
            .map(|app| EndpointMessage {
                stage: app.stage.clone(),
                variant: app.variant.clone(),
                url: format!(
                    "{}{}",
                    self.config.proxy_url,
                    self.config
                        .route_prefix_on(&app.stage, &app.variant, app.node.as_deref())
                ),
                protocol: self.config.variants[&app.variant].protocol,
                state: match app.phase() {
                    Phase::Ready => EndpointState::Ready,
                    Phase::Draining => EndpointState::Draining,
                    Phase::Starting => EndpointState::Starting,
                },
                weight: f64::from(app.seen.map_or(0, |s| s.running + s.recovering).max(1)),
            })
            .collect()
    }

    /// Running replicas (and ones a restarted controller is taking over) per stage, variant
    /// and node.
    fn placement(&self) -> Vec<PlacementMessage> {
        let mut per_node: BTreeMap<(&str, &str, &str), u32> = BTreeMap::new();
        for app in self.apps.apps.values() {
            let Some(deployment) = self.deployment(app) else {
                continue;
            };
            for (node, replica) in deployment.placed() {
                if replica.state == RUNNING || replica.state == serve::RECOVERING {
                    *per_node
                        .entry((app.stage.as_str(), app.variant.as_str(), node))
                        .or_default() += 1;
                }
            }
        }
        per_node
            .into_iter()
            .map(|((stage, variant, node), replicas)| PlacementMessage {
                stage: stage.to_owned(),
                variant: variant.to_owned(),
                node: node.to_owned(),
                replicas,
            })
            .collect()
    }

    /// The nodes, with the CPUs and GPUs this pipeline's replicas hold on each: the placed
    /// ones, and on the node an application is pinned to, its whole replica target (a
    /// replica Serve has not scheduled yet has no node in the answer, but will take its
    /// CPUs on that node).
    fn node_messages(&self, cluster_nodes: &[nodes::Node]) -> Vec<NodeMessage> {
        let mut owned: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for app in self.apps.apps.values() {
            let deployment = self.deployment(app);
            let cpus = deployment
                .and_then(|d| d.num_cpus)
                .unwrap_or(f64::from(app.spec.cores));
            let gpus = deployment
                .and_then(|d| d.num_gpus)
                .unwrap_or(self.config.variants[&app.variant].num_gpus);
            let mut placed: BTreeMap<&str, u32> = BTreeMap::new();
            for (node, _) in deployment.into_iter().flat_map(|d| d.placed()) {
                *placed.entry(node).or_default() += 1;
            }
            if let Some(pinned) = &app.node {
                let on_pin = placed.entry(pinned.as_str()).or_default();
                *on_pin = (*on_pin).max(app.spec.replicas);
            }
            for (node, replicas) in placed {
                let slot = owned.entry(node.to_owned()).or_default();
                slot.0 += cpus * f64::from(replicas);
                slot.1 += gpus * f64::from(replicas);
            }
        }
        nodes::node_messages(cluster_nodes, &owned)
    }

    /// Whether Serve answers and the plugin's deployments are as it set them.
    pub fn check_health(&mut self) -> Result<HealthReport, RayServeError> {
        self.client.start_call(self.config.call_budget);
        let url = self.dashboard(APPLICATIONS_PATH);
        let call = "read the Serve applications";
        let answer = self.client.get_json(&url, call)?;
        let state = serve::parse_state(&answer).map_err(|detail| CallError::Garbage {
            call: http::describe(Method::Get, &url, call),
            detail,
        })?;
        let owned = self.owned_names(&state);
        let mut scaling: Vec<String> = Vec::new();
        for (name, app) in state
            .applications
            .iter()
            .filter(|(n, _)| owned.contains(*n))
        {
            for d in app.deployments.values() {
                scaling.extend(d.autoscaling_problem().map(|p| format!("{name}: {p}")));
            }
            if app.external_scaler_enabled {
                scaling.push(format!("{name}: open to an outside scaler"));
            }
        }
        let controller_missing = self.saw_own_apps && !state.controller_running;
        let mut problems = scaling.clone();
        if controller_missing {
            problems.push("no Serve controller answers (starting or restarting)".into());
        }
        problems.extend(self.problems.iter().cloned());
        let count = |phase: Phase| {
            self.apps
                .apps
                .values()
                .filter(|a| a.phase() == phase)
                .count()
        };
        let summary = format!(
            "applications: {} ready, {} starting, {} draining",
            count(Phase::Ready),
            count(Phase::Starting),
            count(Phase::Draining)
        );
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: scaling.is_empty() && !controller_missing,
            detail: if problems.is_empty() {
                summary
            } else {
                format!("{summary}; {}", problems.join("; "))
            },
        })
    }
}

impl Backend for RayServeBackend {
    fn create(config: Value) -> Result<Self, BackendError> {
        let config = Config::from_json(&config)?;
        Ok(RayServeBackend::new(config)?)
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
                cores: true,
                gpu: self.config.variants.values().any(|v| v.num_gpus > 0.0),
            },
            gpu_mem_mb: None,
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        Ok(self.observe_cluster()?)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        Ok(self.apply_plan(plan)?)
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(self.check_health()?)
    }
}

infadapt_plugin_abi::export_plugin!(RayServeBackend);

#[cfg(test)]
mod fake;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use infadapt_plugin_abi::messages::PlacementMessage;
    use infadapt_plugin_abi::{STATUS_UNAVAILABLE, messages::EndpointProtocol};
    use serde_json::json;

    use super::*;
    use crate::fake::FakeServe;

    fn backend_for(fake: &Arc<Mutex<FakeServe>>, drain_s: f64) -> RayServeBackend {
        backend_with(fake, drain_s, "planned")
    }

    fn backend_with(
        fake: &Arc<Mutex<FakeServe>>,
        drain_s: f64,
        placement: &str,
    ) -> RayServeBackend {
        let port = fake.lock().unwrap().port;
        let config = json!({
            "placement": placement,
            "dashboard_url": format!("http://127.0.0.1:{port}"),
            "proxy_url": format!("http://127.0.0.1:{port}"),
            "drain_s": drain_s,
            "pipeline": { "name": "demo", "stages": [
                { "name": "classify", "variants": ["small", "large"] } ] },
            "variants": {
                "small": { "import_path": "app:small", "user_config": { "threshold": 0.5 } },
                "large": { "import_path": "app:large", "protocol": "kserve-v2",
                           "deployment": "Large", "args": { "size": "l" } }
            }
        });
        RayServeBackend::create(config).expect("create")
    }

    fn plan(variant: &str, batch: u32, cores: u32, replicas: u32) -> PlanMessage {
        infadapt_testkit::single_plan_message("classify", variant, batch, cores, replicas)
    }

    fn states(observation: &PluginObservation) -> Vec<(String, EndpointState)> {
        observation
            .endpoints
            .iter()
            .map(|e| (e.variant.clone(), e.state))
            .collect()
    }

    fn other_app() -> Value {
        json!({"name": "other", "route_prefix": "/other", "import_path": "other:app",
               "deployments": [{"name": "Other", "num_replicas": 1}]})
    }

    #[test]
    fn the_put_carries_the_plan_and_keeps_the_applications_of_others() {
        let fake = fake::start();
        fake.lock()
            .unwrap()
            .apps
            .insert("other".into(), other_app());
        let mut backend = backend_for(&fake, 1.0);
        let report = backend.apply_plan(&plan("small", 4, 2, 3)).expect("apply");
        assert!(report.changed, "{report:?}");
        let body = fake.lock().unwrap().puts[0].clone();
        let apps = body["applications"].as_array().expect("applications");
        assert_eq!(apps.len(), 2, "{body}");
        assert_eq!(apps[0], other_app(), "kept as it was deployed");
        let ours = &apps[1];
        assert_eq!(ours["name"], "demo-classify-small");
        assert_eq!(ours["route_prefix"], "/demo/classify/small");
        assert_eq!(ours["import_path"], "app:small");
        let deployment = &ours["deployments"][0];
        assert_eq!(deployment["name"], "small");
        assert_eq!(deployment["num_replicas"], 3);
        assert_eq!(deployment["autoscaling_config"], Value::Null);
        assert!(
            deployment
                .as_object()
                .unwrap()
                .contains_key("autoscaling_config")
        );
        assert_eq!(deployment["ray_actor_options"]["num_cpus"], 2);
        assert_eq!(deployment["ray_actor_options"]["num_gpus"], 0.0);
        assert_eq!(
            deployment["user_config"],
            json!({"threshold": 0.5, "max_batch_size": 4, "batch_wait_timeout_s": 0.01})
        );
        assert_eq!(body["http_options"]["port"], fake.lock().unwrap().port);
        assert_eq!(body["proxy_location"], "EveryNode");
        // The same plan again changes nothing and sends nothing.
        let again = backend
            .apply_plan(&plan("small", 4, 2, 3))
            .expect("apply again");
        assert!(!again.changed, "{again:?}");
        assert_eq!(fake.lock().unwrap().puts.len(), 1);
        // A new batch size is one more PUT, the other application still kept.
        backend
            .apply_plan(&plan("small", 8, 2, 3))
            .expect("apply batch 8");
        let fake = fake.lock().unwrap();
        assert_eq!(fake.puts.len(), 2);
        assert_eq!(fake.apps["other"], other_app());
        assert_eq!(
            fake.apps["demo-classify-small"]["deployments"][0]["user_config"]["max_batch_size"],
            8
        );
    }

    #[test]
    fn a_variant_switch_makes_before_it_breaks_over_several_rounds() {
        let fake = fake::start();
        let mut backend = backend_for(&fake, 0.3);
        backend
            .apply_plan(&plan("small", 2, 1, 2))
            .expect("apply small");
        fake.lock()
            .unwrap()
            .running
            .insert("demo-classify-small".into(), 1);
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(states(&o), [("small".into(), EndpointState::Starting)]);
        assert_eq!(
            (o.stages[0].ready_replicas, o.stages[0].starting_replicas),
            (0, 2)
        );
        fake.lock().unwrap().running.remove("demo-classify-small");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(states(&o), [("small".into(), EndpointState::Ready)]);
        assert_eq!(o.deployed.stages[0].assignments[0].replicas, 2);
        let port = fake.lock().unwrap().port;
        assert_eq!(
            o.endpoints[0].url,
            format!("http://127.0.0.1:{port}/demo/classify/small")
        );
        assert_eq!(o.endpoints[0].protocol, EndpointProtocol::RawHttp);
        assert_eq!(o.endpoints[0].weight, 2.0);

        // The switch: large starts, small keeps serving.
        fake.lock()
            .unwrap()
            .running
            .insert("demo-classify-large".into(), 0);
        backend
            .apply_plan(&plan("large", 2, 1, 1))
            .expect("apply large");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            states(&o),
            [
                ("large".into(), EndpointState::Starting),
                ("small".into(), EndpointState::Ready)
            ]
        );
        assert_eq!(o.endpoints[0].protocol, EndpointProtocol::KserveV2);
        assert_eq!(o.deployed.stages[0].assignments[0].variant, "small");
        // Large is ready: small drains from this observation on, still deployed.
        fake.lock().unwrap().running.remove("demo-classify-large");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            states(&o),
            [
                ("large".into(), EndpointState::Ready),
                ("small".into(), EndpointState::Draining)
            ]
        );
        assert!(
            fake.lock()
                .unwrap()
                .apps
                .contains_key("demo-classify-small")
        );
        let o = backend
            .observe_cluster()
            .expect("observe within the drain time");
        assert_eq!(o.endpoints.len(), 2);
        assert!(
            fake.lock()
                .unwrap()
                .apps
                .contains_key("demo-classify-small")
        );
        std::thread::sleep(Duration::from_millis(350));
        let o = backend
            .observe_cluster()
            .expect("observe after the drain time");
        assert_eq!(states(&o), [("large".into(), EndpointState::Ready)]);
        let apps: Vec<String> = fake.lock().unwrap().apps.keys().cloned().collect();
        assert_eq!(apps, ["demo-classify-large"]);
        assert_eq!(o.deployed.stages[0].assignments[0].variant, "large");
    }

    #[test]
    fn a_restarting_controller_fails_the_call_and_keeps_the_state() {
        let fake = fake::start();
        fake.lock()
            .unwrap()
            .apps
            .insert("other".into(), other_app());
        let mut backend = backend_for(&fake, 1.0);
        backend.apply_plan(&plan("small", 1, 1, 1)).expect("apply");
        backend.observe_cluster().expect("observe");
        let puts = fake.lock().unwrap().puts.len();

        fake.lock().unwrap().controller_down = true;
        let err: BackendError = backend.observe_cluster().expect_err("down").into();
        assert_eq!(err.code, STATUS_UNAVAILABLE);
        assert!(
            err.message.contains("Serve controller not ready"),
            "{}",
            err.message
        );
        let err: BackendError = backend
            .apply_plan(&plan("small", 1, 1, 2))
            .expect_err("down")
            .into();
        assert_eq!(err.code, STATUS_UNAVAILABLE);
        let health = backend.check_health().expect("health");
        assert!(
            !health.healthy && health.detail.contains("no Serve controller"),
            "{health:?}"
        );
        assert_eq!(fake.lock().unwrap().puts.len(), puts, "nothing sent");
        assert_eq!(backend.apps().apps.len(), 1, "state kept");

        // Back: the plan given meanwhile (2 replicas) is followed; the other app is kept.
        fake.lock().unwrap().controller_down = false;
        backend.observe_cluster().expect("observe");
        let fake_now = fake.lock().unwrap();
        assert_eq!(fake_now.puts.len(), puts + 1);
        assert!(fake_now.apps.contains_key("other"));
        assert_eq!(
            fake_now.apps["demo-classify-small"]["deployments"][0]["num_replicas"],
            2
        );
        drop(fake_now);

        // An answer with no application at all is doubted three times, then believed.
        fake.lock().unwrap().forgets_apps = true;
        for _ in 0..EMPTY_ANSWERS_DOUBTED {
            let err = backend.observe_cluster().expect_err("doubted");
            assert!(err.to_string().contains("no application at all"), "{err}");
        }
        assert_eq!(fake.lock().unwrap().puts.len(), puts + 1);
        backend.observe_cluster().expect("believed");
        assert_eq!(fake.lock().unwrap().puts.len(), puts + 2, "deployed again");
    }

    #[test]
    fn autoscaling_turned_on_is_unhealthy_and_put_back() {
        let fake = fake::start();
        let mut backend = backend_for(&fake, 1.0);
        backend.apply_plan(&plan("small", 1, 1, 2)).expect("apply");
        assert!(backend.check_health().expect("health").healthy);
        fake.lock()
            .unwrap()
            .autoscaled
            .push("demo-classify-small".into());
        let health = backend.check_health().expect("health");
        assert!(!health.healthy, "{health:?}");
        assert!(health.detail.contains("autoscaling_config"), "{health:?}");
        let puts = fake.lock().unwrap().puts.len();
        backend.observe_cluster().expect("observe");
        assert_eq!(fake.lock().unwrap().puts.len(), puts + 1, "put back");
        assert!(backend.check_health().expect("health").healthy);
    }

    #[test]
    fn metrics_nodes_and_placement_come_from_the_cluster() {
        let fake = fake::start();
        let page = |requests: u32, errors: u32| {
            format!(
                "ray_serve_num_http_requests_total{{application=\"demo-classify-small\",route=\"/demo/classify/small\",method=\"POST\",status_code=\"200\"}} {requests}\n\
                 ray_serve_num_http_error_requests_total{{application=\"demo-classify-small\",error_code=\"500\"}} {errors}\n\
                 ray_serve_http_request_latency_ms_bucket{{application=\"demo-classify-small\",le=\"50\"}} {requests}\n\
                 ray_serve_http_request_latency_ms_bucket{{application=\"demo-classify-small\",le=\"+Inf\"}} {requests}\n\
                 ray_serve_num_http_requests_total{{application=\"other\"}} 99999\n"
            )
        };
        fake.lock().unwrap().metrics = page(1000, 5);
        let mut backend = backend_for(&fake, 1.0);
        backend.apply_plan(&plan("small", 1, 2, 3)).expect("apply");
        std::thread::sleep(Duration::from_millis(1100));
        fake.lock().unwrap().metrics = page(1100, 7);
        let o = backend.observe_cluster().expect("observe");
        assert_eq!((o.completed, o.dropped, o.slo_misses), (98, 2, 2));
        assert!(!o.arrivals_per_second.is_empty());
        let rate = o.arrivals_per_second[0];
        assert!(rate > 50.0 && rate < 100.0, "{rate}");
        let p99 = o.latency_p99_ms.expect("p99");
        assert!(p99 > 0.0 && p99 <= 50.0, "{p99}");

        assert_eq!(o.nodes.len(), 2);
        let n1 = &o.nodes[0];
        // The cluster's usage says 2 of n1's 4 CPUs are used (it lags); the pipeline's two
        // 2-core replicas there hold all 4: none is free.
        assert_eq!((n1.id.as_str(), n1.cpus, n1.cpus_free), ("n1", 4.0, 0.0));
        assert_eq!(n1.cpus_owned, 4.0, "two replicas of 2 cores on n1");
        assert_eq!(o.nodes[1].cpus_owned, 2.0);
        let placement: Vec<(&str, u32)> = o
            .placement
            .iter()
            .map(|p| (p.node.as_str(), p.replicas))
            .collect();
        assert_eq!(placement, [("n1", 2), ("n2", 1)]);
        // A counter that went backwards (a proxy restarted) counts from zero.
        fake.lock().unwrap().metrics = page(10, 0);
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(o.completed, 10);
    }

    #[test]
    fn a_new_instance_adopts_the_running_applications_and_drains_them_on_a_switch() {
        let fake = fake::start();
        let mut first = backend_for(&fake, 0.2);
        first.apply_plan(&plan("small", 4, 2, 2)).expect("apply");
        let puts = fake.lock().unwrap().puts.len();
        // A restarted daemon: a new instance finds the application and its settings.
        let mut backend = backend_for(&fake, 0.2);
        let adopted = &backend.apps().apps[&("classify".to_owned(), "small".to_owned(), None)];
        assert_eq!(
            adopted.spec,
            Spec {
                replicas: 2,
                cores: 2,
                batch: 4
            }
        );
        assert!(adopted.advertised, "running: it may carry traffic");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(states(&o), [("small".into(), EndpointState::Ready)]);
        assert!(
            !backend
                .apply_plan(&plan("small", 4, 2, 2))
                .expect("same plan")
                .changed,
            "nothing to change after adoption"
        );
        assert_eq!(fake.lock().unwrap().puts.len(), puts);
        // A switch drains the adopted variant rather than dropping it.
        backend
            .apply_plan(&plan("large", 1, 1, 1))
            .expect("apply large");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            states(&o),
            [
                ("large".into(), EndpointState::Ready),
                ("small".into(), EndpointState::Draining)
            ]
        );
    }

    #[test]
    fn a_plan_for_unknown_variants_changes_nothing_and_says_why() {
        let fake = fake::start();
        let mut backend = backend_for(&fake, 1.0);
        let mut bad = plan("huge", 0, 0, 100);
        bad.stages[0].stage = "classify".into();
        let err: BackendError = backend.apply_plan(&bad).expect_err("invalid").into();
        assert_eq!(err.code, infadapt_plugin_abi::STATUS_INVALID_INPUT);
        for needle in [
            "unknown variant `huge`",
            "batch must be at least 1",
            "cores must be at least 1",
        ] {
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert!(fake.lock().unwrap().puts.is_empty());
        let description = Backend::describe(&backend);
        assert!(description.capabilities.cores && description.capabilities.variant_mix);
        assert!(!description.capabilities.gpu);
    }

    fn placed(replicas: u32, nodes: &[(&str, u32)]) -> PlanMessage {
        let mut plan = plan("small", 2, 1, replicas);
        plan.placement = nodes
            .iter()
            .map(|(node, replicas)| PlacementMessage {
                stage: "classify".into(),
                variant: "small".into(),
                node: (*node).into(),
                replicas: *replicas,
            })
            .collect();
        plan
    }

    /// Each endpoint's route (after the proxy URL), state and weight.
    fn routes(observation: &PluginObservation) -> Vec<(String, EndpointState, f64)> {
        observation
            .endpoints
            .iter()
            .map(|e| {
                let route = e.url.splitn(4, '/').nth(3).unwrap_or_default();
                (format!("/{route}"), e.state, e.weight)
            })
            .collect()
    }

    fn placement_of(observation: &PluginObservation) -> Vec<(String, u32)> {
        observation
            .placement
            .iter()
            .map(|p| (p.node.clone(), p.replicas))
            .collect()
    }

    #[test]
    fn a_placed_plan_runs_one_pinned_application_per_node_and_moves_make_before_break() {
        let fake = fake::start();
        let mut backend = backend_for(&fake, 0.3);
        let first = placed(3, &[("n1", 1), ("n2", 2)]);
        backend.apply_plan(&first).expect("apply");
        let body = fake.lock().unwrap().puts[0].clone();
        let apps = body["applications"].as_array().expect("applications");
        assert_eq!(apps.len(), 2, "{body}");
        for (app, node, replicas) in [(&apps[0], "n1", 1), (&apps[1], "n2", 2)] {
            assert_eq!(app["name"], format!("demo-classify-small-{node}"));
            assert_eq!(app["route_prefix"], format!("/demo/classify/small/{node}"));
            let deployment = &app["deployments"][0];
            assert_eq!(deployment["name"], "small");
            assert_eq!(deployment["num_replicas"], replicas);
            assert_eq!(
                deployment["ray_actor_options"]["label_selector"],
                json!({"ray.io/node-id": node})
            );
            assert_eq!(deployment["ray_actor_options"]["num_cpus"], 1);
        }
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            routes(&o),
            [
                ("/demo/classify/small/n1".into(), EndpointState::Ready, 1.0),
                ("/demo/classify/small/n2".into(), EndpointState::Ready, 2.0)
            ]
        );
        assert_eq!(placement_of(&o), [("n1".into(), 1), ("n2".into(), 2)]);
        assert_eq!(o.deployed.stages[0].assignments.len(), 1);
        assert_eq!(o.deployed.stages[0].assignments[0].replicas, 3);
        assert_eq!(o.deployed.stages[0].assignments[0].share, 1.0);
        assert_eq!(o.stages[0].ready_replicas, 3);
        let owned: Vec<f64> = o.nodes.iter().map(|n| n.cpus_owned).collect();
        assert_eq!(owned, [1.0, 2.0]);
        assert!(
            !backend.apply_plan(&first).expect("again").changed,
            "idempotent"
        );

        // The replica on n1 moves to n2: n2's application scales in place and n1's keeps
        // serving until n2 runs all three.
        let moved = placed(3, &[("n2", 3)]);
        fake.lock()
            .unwrap()
            .running
            .insert("demo-classify-small-n2".into(), 2);
        let report = backend.apply_plan(&moved).expect("apply the move");
        assert!(
            report.actions.contains(
                &"classify: small on node n2 3×1 cores, batch 2 (was 2×1, batch 2)".to_owned()
            ),
            "{report:?}"
        );
        let sent = fake.lock().unwrap().apps.clone();
        assert_eq!(
            sent["demo-classify-small-n2"]["deployments"][0]["num_replicas"],
            3
        );
        assert_eq!(
            sent["demo-classify-small-n1"]["deployments"][0]["num_replicas"],
            1
        );
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            routes(&o),
            [
                ("/demo/classify/small/n1".into(), EndpointState::Ready, 1.0),
                ("/demo/classify/small/n2".into(), EndpointState::Ready, 2.0)
            ]
        );
        fake.lock().unwrap().running.clear();
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            routes(&o),
            [
                (
                    "/demo/classify/small/n1".into(),
                    EndpointState::Draining,
                    1.0
                ),
                ("/demo/classify/small/n2".into(), EndpointState::Ready, 3.0)
            ]
        );
        assert_eq!(o.deployed.stages[0].assignments[0].replicas, 3);
        assert!(
            fake.lock()
                .unwrap()
                .apps
                .contains_key("demo-classify-small-n1")
        );
        std::thread::sleep(Duration::from_millis(350));
        let o = backend
            .observe_cluster()
            .expect("observe after the drain time");
        assert_eq!(
            routes(&o),
            [("/demo/classify/small/n2".into(), EndpointState::Ready, 3.0)]
        );
        assert_eq!(placement_of(&o), [("n2".into(), 3)]);
        let names: Vec<String> = fake.lock().unwrap().apps.keys().cloned().collect();
        assert_eq!(names, ["demo-classify-small-n2"]);
    }

    #[test]
    fn the_scheduler_mode_keeps_one_application_per_variant() {
        let fake = fake::start();
        let mut backend = backend_with(&fake, 0.3, "scheduler");
        backend
            .apply_plan(&placed(3, &[("n1", 1), ("n2", 2)]))
            .expect("apply");
        let body = fake.lock().unwrap().puts[0].clone();
        let apps = body["applications"].as_array().expect("applications");
        assert_eq!(apps.len(), 1, "{body}");
        assert_eq!(apps[0]["name"], "demo-classify-small");
        assert_eq!(apps[0]["deployments"][0]["num_replicas"], 3);
        assert!(
            apps[0]["deployments"][0]["ray_actor_options"]
                .get("label_selector")
                .is_none()
        );
        // A plan without placement is one application in the planned mode too.
        let fake = fake::start();
        let mut backend = backend_for(&fake, 0.3);
        backend.apply_plan(&plan("small", 2, 1, 3)).expect("apply");
        let names: Vec<String> = fake.lock().unwrap().apps.keys().cloned().collect();
        assert_eq!(names, ["demo-classify-small"]);
    }

    #[test]
    fn a_new_instance_adopts_node_applications_and_drains_the_one_that_left() {
        let fake = fake::start();
        let mut first = backend_for(&fake, 0.2);
        first
            .apply_plan(&placed(3, &[("n1", 1), ("n2", 2)]))
            .expect("apply");
        first.observe_cluster().expect("observe");
        let puts = fake.lock().unwrap().puts.len();
        let mut backend = backend_for(&fake, 0.2);
        let keys: Vec<AppKey> = backend.apps().apps.keys().cloned().collect();
        let key = |node: &str| {
            (
                "classify".to_owned(),
                "small".to_owned(),
                Some(node.to_owned()),
            )
        };
        assert_eq!(keys, [key("n1"), key("n2")]);
        assert_eq!(backend.apps().apps[&key("n2")].spec.replicas, 2);
        assert!(backend.apps().apps[&key("n1")].advertised);
        assert!(
            !backend
                .apply_plan(&placed(3, &[("n1", 1), ("n2", 2)]))
                .expect("same plan")
                .changed
        );
        assert_eq!(fake.lock().unwrap().puts.len(), puts);
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(placement_of(&o), [("n1".into(), 1), ("n2".into(), 2)]);
        // Back to Serve's placement: the variant's own application starts, and the node
        // applications drain once it is ready.
        let mut backend = backend_with(&fake, 0.2, "scheduler");
        assert_eq!(backend.apps().apps.len(), 2, "adopted in either mode");
        backend
            .apply_plan(&placed(3, &[("n1", 1), ("n2", 2)]))
            .expect("apply");
        let o = backend.observe_cluster().expect("observe");
        assert_eq!(
            routes(&o),
            [
                ("/demo/classify/small".into(), EndpointState::Ready, 3.0),
                (
                    "/demo/classify/small/n1".into(),
                    EndpointState::Draining,
                    1.0
                ),
                (
                    "/demo/classify/small/n2".into(),
                    EndpointState::Draining,
                    2.0
                )
            ]
        );
        let plan_placement: Vec<(String, u32)> = vec![("n1".into(), 3), ("n2".into(), 3)];
        assert_eq!(
            placement_of(&o),
            plan_placement,
            "summed over the variant's apps"
        );
    }
}
