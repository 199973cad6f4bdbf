//! The backend's configuration: the daemon's `[pipeline.backend]` table as JSON, checked
//! key by key (unknown keys are problems with did-you-mean hints), plus the `pipeline` the
//! daemon adds (stage and variant names).

use std::collections::BTreeMap;
use std::time::Duration;

use infadapt_plugin_abi::messages::EndpointProtocol;
use infadapt_plugin_abi::{ConfigProblem, ConfigProblems, NameRule, PipelineStages, is_http_url};
use serde_json::{Map, Value};

use crate::RayServeError;
use crate::serve::StartOptions;

/// Values Serve accepts for `proxy_location`.
pub const PROXY_LOCATIONS: &[&str] = &["EveryNode", "HeadOnly", "Disabled"];

/// Values of the `placement` key.
pub const PLACEMENT_MODES: &[&str] = &["planned", "scheduler"];

/// The label every Ray node carries with its node id, which pins a deployment to a node
/// through `ray_actor_options.label_selector`.
pub const NODE_ID_LABEL: &str = "ray.io/node-id";

/// Characters of a node id that name its application and route.
pub const NODE_SUFFIX_LEN: usize = 12;

/// Who decides where a variant's replicas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementMode {
    /// The plan's placement, when it has one: one application per node a variant uses,
    /// pinned to it.
    Planned,
    /// Serve's scheduler: one application per variant, placed by Ray.
    Scheduler,
}

/// Keys of the backend table (besides `type` and `pipeline`, which the daemon owns).
pub const KEYS: &[&str] = &[
    "dashboard_url",
    "proxy_url",
    "app_prefix",
    "drain_s",
    "request_timeout_ms",
    "call_budget_ms",
    "metrics",
    "metrics_urls",
    "max_replicas_per_variant",
    "max_surge_percent",
    "batch_wait_timeout_s",
    "http_host",
    "proxy_location",
    "placement",
    "variants",
];

/// Keys of one `variants.NAME` table.
pub const VARIANT_KEYS: &[&str] = &[
    "import_path",
    "args",
    "deployment",
    "num_gpus",
    "runtime_env",
    "user_config",
    "protocol",
    "max_ongoing_requests",
];

/// `user_config` keys the plugin sets itself from the plan and the configuration.
pub const BATCH_KEYS: &[&str] = &["max_batch_size", "batch_wait_timeout_s"];

/// How one variant is deployed: the Serve application's code and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantConfig {
    /// `module:attribute` of the bound Serve application (`import_path`).
    pub import_path: String,
    /// Arguments of the application builder (`args`), a JSON object.
    pub args: Map<String, Value>,
    /// Name of the application's one deployment (defaults to the variant's name).
    pub deployment: String,
    /// GPUs per replica (`ray_actor_options.num_gpus`).
    pub num_gpus: f64,
    /// The application's `runtime_env`, when set.
    pub runtime_env: Option<Map<String, Value>>,
    /// `user_config` keys of the variant's own, merged under the batch settings.
    pub user_config: Map<String, Value>,
    /// How the router talks to the variant's route.
    pub protocol: EndpointProtocol,
    /// The deployment's `max_ongoing_requests`, when set.
    pub max_ongoing_requests: Option<u64>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Base URL of the Ray dashboard (`http://127.0.0.1:8265`), no trailing `/`.
    pub dashboard_url: String,
    /// Base URL of the Serve HTTP proxy (`http://127.0.0.1:8000`), the base of endpoints.
    pub proxy_url: String,
    /// Start of every application name and route prefix the plugin owns.
    pub app_prefix: String,
    /// How long a draining variant keeps serving after it was first reported draining.
    pub drain: Duration,
    /// Time limit of each HTTP request.
    pub request_timeout: Duration,
    /// Time all the requests of one plugin call may take together.
    pub call_budget: Duration,
    /// Whether request counters are read from the nodes' metrics pages.
    pub metrics: bool,
    /// Metrics pages to read instead of the ones the dashboard lists.
    pub metrics_urls: Vec<String>,
    /// Most replicas a plan may ask of one variant.
    pub max_replicas_per_variant: u32,
    /// The deployments' `max_surge_percent`: replacements start before old replicas stop
    /// when a change restarts replicas (cores, GPUs).
    pub max_surge_percent: u32,
    /// `batch_wait_timeout_s` in every variant's `user_config`.
    pub batch_wait_timeout_s: f64,
    /// `http_options.host` when the plugin starts Serve.
    pub http_host: String,
    /// `proxy_location` when the plugin starts Serve (Serve's default when `None`).
    pub proxy_location: Option<String>,
    /// Whether the plan's placement is enforced.
    pub placement: PlacementMode,
    /// Per variant, how it is deployed.
    pub variants: BTreeMap<String, VariantConfig>,
    /// Stage of each variant.
    pub stage_of: BTreeMap<String, String>,
    /// Stages in pipeline order.
    pub stages: Vec<String>,
    /// Name of the pipeline (for messages).
    pub pipeline: String,
}

impl Config {
    /// Reads and checks a configuration; every problem is reported at once.
    pub fn from_json(value: &Value) -> Result<Config, RayServeError> {
        let (config, problems) = Config::read(value);
        config.ok_or_else(|| RayServeError::Config(problems.joined()))
    }

    /// Every problem with the configuration, each naming its key (the plugin's config
    /// check).
    pub fn check(value: &Value) -> Vec<ConfigProblem> {
        Config::read(value).1.into_problems()
    }

    /// Name of the Serve application of a variant of a stage.
    pub fn app_name(&self, stage: &str, variant: &str) -> String {
        format!("{}-{stage}-{variant}", self.app_prefix)
    }

    /// Route prefix of a variant of a stage.
    pub fn route_prefix(&self, stage: &str, variant: &str) -> String {
        format!("/{}/{stage}/{variant}", self.app_prefix)
    }

    /// Name of the Serve application of a variant of a stage on one node (`node` = `None`:
    /// the variant's one application, placed by Serve).
    pub fn app_name_on(&self, stage: &str, variant: &str, node: Option<&str>) -> String {
        match node {
            Some(node) => format!(
                "{}-{stage}-{variant}-{}",
                self.app_prefix,
                node_suffix(node)
            ),
            None => self.app_name(stage, variant),
        }
    }

    /// Route prefix of a variant of a stage on one node (`None`: the variant's route).
    pub fn route_prefix_on(&self, stage: &str, variant: &str, node: Option<&str>) -> String {
        match node {
            Some(node) => format!(
                "/{}/{stage}/{variant}/{}",
                self.app_prefix,
                node_suffix(node)
            ),
            None => self.route_prefix(stage, variant),
        }
    }

    /// How the plugin starts Serve when its `PUT` is the first.
    pub fn serve_start(&self) -> StartOptions {
        StartOptions {
            http_host: self.http_host.clone(),
            port: self.proxy_port(),
            proxy_location: self.proxy_location.clone(),
        }
    }

    /// Port of the proxy URL (Serve's `http_options.port` when the plugin starts Serve).
    pub fn proxy_port(&self) -> Option<u16> {
        let rest = self.proxy_url.split("://").nth(1)?;
        let host_port = rest.split('/').next()?;
        match host_port.rsplit_once(':') {
            Some((_, port)) => port.parse().ok(),
            None if self.proxy_url.starts_with("https://") => Some(443),
            None => Some(80),
        }
    }

    fn read(value: &Value) -> (Option<Config>, ConfigProblems) {
        let mut problems = ConfigProblems::new();
        let Some(table) = value.as_object() else {
            problems.invalid("", "the configuration must be a JSON object");
            return (None, problems);
        };
        let mut known = KEYS.to_vec();
        known.extend(["type", "pipeline"]);
        problems.unknown_keys("", value, &known);
        let dashboard_url = problems.url(table, "dashboard_url", "http://127.0.0.1:8265");
        let proxy_url = problems.url(table, "proxy_url", "http://127.0.0.1:8000");
        let drain_s = problems.number(table, "drain_s", 10.0, (0.0, 3600.0));
        let request_timeout_ms = problems.count(table, "request_timeout_ms", 2000, (10, 60_000));
        let call_budget_ms = problems.count(table, "call_budget_ms", 4000, (10, 600_000));
        let max_replicas_per_variant =
            problems.count(table, "max_replicas_per_variant", 64, (1, 10_000)) as u32;
        let max_surge_percent = problems.count(table, "max_surge_percent", 100, (0, 100)) as u32;
        let batch_wait_timeout_s =
            problems.number(table, "batch_wait_timeout_s", 0.01, (0.0, 60.0));
        let metrics = match table.get("metrics") {
            None => true,
            Some(Value::Bool(on)) => *on,
            Some(other) => {
                problems.invalid("metrics", format!("must be true or false, got {other}"));
                true
            }
        };
        let mut metrics_urls = Vec::new();
        match table.get("metrics_urls") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, url) in list.iter().enumerate() {
                    match url.as_str() {
                        Some(u) if is_http_url(u) => metrics_urls.push(u.to_owned()),
                        _ => problems.invalid(
                            format!("metrics_urls[{i}]"),
                            format!("must be an http:// or https:// URL, got {url}"),
                        ),
                    }
                }
            }
            Some(other) => problems.invalid(
                "metrics_urls",
                format!("must be a list of metrics page URLs, got {other}"),
            ),
        }

        let http_host = match table.get("http_host") {
            None => "0.0.0.0".to_owned(),
            Some(Value::String(h)) if !h.trim().is_empty() && !h.contains('/') => h.clone(),
            Some(other) => {
                problems.invalid(
                    "http_host",
                    format!("must be an address to listen on, got {other}"),
                );
                String::new()
            }
        };
        let proxy_location = match table.get("proxy_location") {
            None => None,
            Some(Value::String(l)) if PROXY_LOCATIONS.contains(&l.as_str()) => Some(l.clone()),
            Some(other) => {
                problems.invalid(
                    "proxy_location",
                    format!("must be one of {}, got {other}", PROXY_LOCATIONS.join(", ")),
                );
                None
            }
        };
        let placement = match table.get("placement") {
            None => PlacementMode::Planned,
            Some(Value::String(m)) if m == "planned" => PlacementMode::Planned,
            Some(Value::String(m)) if m == "scheduler" => PlacementMode::Scheduler,
            Some(other) => {
                problems.invalid(
                    "placement",
                    format!("must be one of {}, got {other}", PLACEMENT_MODES.join(", ")),
                );
                PlacementMode::Planned
            }
        };
        let PipelineStages {
            name: pipeline,
            stages,
            stage_of,
        } = PipelineStages::read(table.get("pipeline"), &SERVE_NAMES, &mut problems);
        let app_prefix = match table.get("app_prefix") {
            None => pipeline.clone(),
            Some(Value::String(p)) if valid_name(p) => p.clone(),
            Some(other) => {
                problems.invalid(
                    "app_prefix",
                    format!(
                        "must be letters, digits, `-`, `_` or `.`, starting with a letter or \
                         digit, got {other}"
                    ),
                );
                String::new()
            }
        };
        if table.get("app_prefix").is_none() && !pipeline.is_empty() && !valid_name(&pipeline) {
            problems.missing(
                "app_prefix",
                format!(
                    "the pipeline's name `{pipeline}` cannot start application names; set \
                     `app_prefix`"
                ),
            );
        }
        let variants = read_variants(table.get("variants"), &stage_of, &pipeline, &mut problems);

        if !problems.is_empty() {
            return (None, problems);
        }
        let config = Config {
            dashboard_url,
            proxy_url,
            app_prefix,
            drain: Duration::from_secs_f64(drain_s),
            request_timeout: Duration::from_millis(request_timeout_ms),
            call_budget: Duration::from_millis(call_budget_ms),
            metrics,
            metrics_urls,
            max_replicas_per_variant,
            max_surge_percent,
            batch_wait_timeout_s,
            http_host,
            proxy_location,
            placement,
            variants,
            stage_of,
            stages,
            pipeline,
        };
        (Some(config), problems)
    }
}

fn read_variants(
    value: Option<&Value>,
    stage_of: &BTreeMap<String, String>,
    pipeline: &str,
    problems: &mut ConfigProblems,
) -> BTreeMap<String, VariantConfig> {
    let mut variants = BTreeMap::new();
    let empty = Map::new();
    let table = match value {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.invalid(
                "variants",
                format!("must be a table of variant name = {{ import_path = … }}, got {other}"),
            );
            return variants;
        }
    };
    for (name, entry) in table {
        let key = format!("variants.{name}");
        if !stage_of.is_empty() && !stage_of.contains_key(name) {
            problems.invalid(
                &key,
                format!("no variant `{name}` in pipeline `{pipeline}`"),
            );
        }
        let Some(entry_table) = entry.as_object() else {
            problems.invalid(
                &key,
                format!("must be a table with `import_path`, got {entry}"),
            );
            continue;
        };
        problems.unknown_keys(&key, entry, VARIANT_KEYS);
        let import_path = match entry_table.get("import_path") {
            Some(Value::String(p)) if p.contains(':') || p.contains('.') => p.clone(),
            Some(other) => {
                problems.invalid(
                    format!("{key}.import_path"),
                    format!("must be `module:application` (or `module.application`), got {other}"),
                );
                String::new()
            }
            None => {
                problems.missing(
                    format!("{key}.import_path"),
                    "missing (`module:application` of the Serve application to deploy)",
                );
                String::new()
            }
        };
        let object = |field: &str, problems: &mut ConfigProblems| match entry_table.get(field) {
            None => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(other) => {
                problems.invalid(
                    format!("{key}.{field}"),
                    format!("must be a table, got {other}"),
                );
                None
            }
        };
        let args = object("args", problems).unwrap_or_default();
        let runtime_env = object("runtime_env", problems);
        let user_config = object("user_config", problems).unwrap_or_default();
        for batch_key in BATCH_KEYS {
            if user_config.contains_key(*batch_key) {
                problems.invalid(
                    format!("{key}.user_config.{batch_key}"),
                    if *batch_key == "max_batch_size" {
                        "set by the plugin from the plan's batch size; remove it".to_owned()
                    } else {
                        "set by the plugin from the backend's `batch_wait_timeout_s`; set it \
                         there"
                            .to_owned()
                    },
                );
            }
        }
        let deployment = match entry_table.get("deployment") {
            None => name.clone(),
            Some(Value::String(d)) if !d.trim().is_empty() => d.clone(),
            Some(other) => {
                problems.invalid(
                    format!("{key}.deployment"),
                    format!("must be the deployment's name, got {other}"),
                );
                String::new()
            }
        };
        let num_gpus = match entry_table.get("num_gpus") {
            None => 0.0,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (0.0..=64.0).contains(&x) => x,
                _ => {
                    problems.invalid(
                        format!("{key}.num_gpus"),
                        format!("must be a number from 0 to 64, got {v}"),
                    );
                    0.0
                }
            },
        };
        let protocol = match entry_table.get("protocol").map(|p| p.as_str()) {
            None | Some(Some("raw-http")) => EndpointProtocol::RawHttp,
            Some(Some("kserve-v2")) => EndpointProtocol::KserveV2,
            Some(_) => {
                problems.invalid(
                    format!("{key}.protocol"),
                    format!(
                        "must be \"raw-http\" or \"kserve-v2\", got {}",
                        entry_table["protocol"]
                    ),
                );
                EndpointProtocol::RawHttp
            }
        };
        let max_ongoing_requests = match entry_table.get("max_ongoing_requests") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(x) if (1..=100_000).contains(&x) => Some(x),
                _ => {
                    problems.invalid(
                        format!("{key}.max_ongoing_requests"),
                        format!("must be a whole number from 1 to 100000, got {v}"),
                    );
                    None
                }
            },
        };
        variants.insert(
            name.clone(),
            VariantConfig {
                import_path,
                args,
                deployment,
                num_gpus,
                runtime_env,
                user_config,
                protocol,
                max_ongoing_requests,
            },
        );
    }
    for variant in stage_of.keys() {
        if !table.contains_key(variant) {
            problems.missing(
                format!("variants.{variant}.import_path"),
                format!(
                    "missing: every variant of the pipeline needs its Serve application \
                     (`[pipeline.backend.variants.{variant}] import_path = \"module:app\"`)"
                ),
            );
        }
    }
    variants
}

/// The names that can be part of a Serve application name and a route prefix: stages and
/// variants; a variant name is unique over the pipeline (the `variants` table's keys).
const SERVE_NAMES: NameRule = NameRule {
    valid: valid_name,
    described: "part of a Serve application name and route (letters, digits, `-`, `_`, \
                `.`, starting with a letter or digit)",
    stages_too: true,
    duplicates_break: "the backend's `variants` table needs unique names",
};

/// Whether `name` can be part of a Serve application name and a route prefix.
/// The start of a node id that names its application and route: its first
/// [`NODE_SUFFIX_LEN`] letters and digits (Ray's node ids are 56 hex digits).
pub fn node_suffix(node: &str) -> String {
    node.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(NODE_SUFFIX_LEN)
        .collect()
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use infadapt_plugin_abi::ProblemKind;
    use serde_json::json;

    use super::*;

    fn pipeline() -> Value {
        json!({ "name": "demo", "stages": [
            { "name": "classify", "variants": ["small", { "name": "large", "accuracy": 0.9 }] },
            { "name": "rank", "variants": ["ranker"] }
        ] })
    }

    fn variants() -> Value {
        json!({
            "small": { "import_path": "app:small" },
            "large": { "import_path": "app:large", "num_gpus": 0.5, "protocol": "kserve-v2",
                       "args": { "model": "l" }, "user_config": { "threshold": 0.3 },
                       "deployment": "Classifier", "runtime_env": { "pip": [] },
                       "max_ongoing_requests": 8 },
            "ranker": { "import_path": "rank.app" }
        })
    }

    #[test]
    fn defaults_fill_everything_but_the_pipeline_and_the_variants() {
        let config = Config::from_json(&json!({ "pipeline": pipeline(), "variants": variants() }))
            .expect("valid");
        assert_eq!(config.dashboard_url, "http://127.0.0.1:8265");
        assert_eq!(config.proxy_url, "http://127.0.0.1:8000");
        assert_eq!(config.proxy_port(), Some(8000));
        assert_eq!(config.app_prefix, "demo");
        assert_eq!(config.app_name("classify", "small"), "demo-classify-small");
        assert_eq!(
            config.route_prefix("classify", "small"),
            "/demo/classify/small"
        );
        assert_eq!(config.drain, Duration::from_secs(10));
        assert!(config.metrics && config.metrics_urls.is_empty());
        assert_eq!(config.max_surge_percent, 100);
        assert_eq!(config.batch_wait_timeout_s, 0.01);
        let small = &config.variants["small"];
        assert_eq!(small.deployment, "small");
        assert_eq!(small.num_gpus, 0.0);
        assert_eq!(small.protocol, EndpointProtocol::RawHttp);
        let large = &config.variants["large"];
        assert_eq!(large.deployment, "Classifier");
        assert_eq!(large.num_gpus, 0.5);
        assert_eq!(large.protocol, EndpointProtocol::KserveV2);
        assert_eq!(large.args["model"], "l");
        assert_eq!(large.user_config["threshold"], 0.3);
        assert_eq!(large.max_ongoing_requests, Some(8));
        assert!(large.runtime_env.is_some());
        assert_eq!(config.stage_of["ranker"], "rank");
        assert_eq!(config.placement, PlacementMode::Planned);
        let node = "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d";
        assert_eq!(
            config.app_name_on("classify", "small", Some(node)),
            "demo-classify-small-0a1b2c3d4e5f"
        );
        assert_eq!(
            config.route_prefix_on("classify", "small", Some(node)),
            "/demo/classify/small/0a1b2c3d4e5f"
        );
        assert_eq!(
            config.app_name_on("classify", "small", None),
            "demo-classify-small"
        );
    }

    #[test]
    fn keys_are_read_and_urls_lose_their_trailing_slash() {
        let config = Config::from_json(&json!({
            "type": "rayserve", "pipeline": pipeline(), "variants": variants(),
            "dashboard_url": "http://10.0.0.1:8265/", "proxy_url": "http://10.0.0.1:8250/",
            "app_prefix": "shop", "drain_s": 2.5, "metrics": false,
            "metrics_urls": ["http://10.0.0.1:11001/metrics"], "request_timeout_ms": 700,
            "max_surge_percent": 0, "batch_wait_timeout_s": 0.05,
            "proxy_location": "HeadOnly", "http_host": "127.0.0.1", "placement": "scheduler"
        }))
        .expect("valid");
        assert_eq!(config.placement, PlacementMode::Scheduler);
        assert_eq!(config.dashboard_url, "http://10.0.0.1:8265");
        assert_eq!(config.proxy_port(), Some(8250));
        assert_eq!(config.app_name("rank", "ranker"), "shop-rank-ranker");
        assert_eq!(config.drain, Duration::from_millis(2500));
        assert!(!config.metrics);
        assert_eq!(config.metrics_urls, ["http://10.0.0.1:11001/metrics"]);
        assert_eq!(config.request_timeout, Duration::from_millis(700));
        assert_eq!(config.max_surge_percent, 0);
        let start = config.serve_start();
        assert_eq!(
            (
                start.http_host.as_str(),
                start.port,
                start.proxy_location.as_deref()
            ),
            ("127.0.0.1", Some(8250), Some("HeadOnly"))
        );
    }

    #[test]
    fn every_problem_is_named_at_once_with_hints() {
        let problems = Config::check(&json!({
            "pipeline": { "name": "bad name", "stages": [
                { "name": "s", "variants": ["ok", "x y", "gone"] },
                { "name": "t", "variants": ["ok"] } ] },
            "dashbord_url": "http://x", "drain_s": -1, "proxy_url": "localhost:8000",
            "metrics": "on", "max_surge_percent": 150, "proxy_location": "Everywhere",
            "placement": "random",
            "variants": {
                "ok": { "import_path": "app", "num_gpu": 1, "num_gpus": -1,
                        "user_config": { "max_batch_size": 4 }, "protocol": "grpc",
                        "args": [1] },
                "missing": { "import_path": "a:b" }
            }
        }));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        for needle in [
            "`dashbord_url`: unknown key (did you mean `dashboard_url`?)",
            "`variants.ok.num_gpu`: unknown key (did you mean `num_gpus`?)",
            "`drain_s`: must be a number from 0 to 3600, got -1",
            "`proxy_url`: must be an http:// or https:// URL",
            "`metrics`: must be true or false",
            "`proxy_location`: must be one of EveryNode, HeadOnly, Disabled",
            "`placement`: must be one of planned, scheduler, got \"random\"",
            "`max_surge_percent`: must be a whole number from 0 to 100, got 150",
            "`x y` cannot be part of a Serve application name",
            "variant `ok` is also in stage `s`",
            "`variants.ok.import_path`: must be `module:application`",
            "`variants.ok.num_gpus`: must be a number from 0 to 64, got -1",
            "`variants.ok.user_config.max_batch_size`: set by the plugin",
            "`variants.ok.protocol`: must be \"raw-http\" or \"kserve-v2\"",
            "`variants.ok.args`: must be a table",
            "`variants.missing`: no variant `missing` in pipeline `bad name`",
            "`variants.gone.import_path`: missing",
            "`app_prefix`: the pipeline's name `bad name` cannot start application names",
        ] {
            assert!(text.contains(needle), "`{needle}` not in:\n{text}");
        }
        let hinted = problems
            .iter()
            .find(|p| p.key == "dashbord_url")
            .expect("unknown key");
        assert_eq!(hinted.kind, ProblemKind::UnknownKey);
        assert_eq!(hinted.hint.as_deref(), Some("dashboard_url"));
        let missing = problems
            .iter()
            .find(|p| p.key == "variants.gone.import_path")
            .expect("missing");
        assert_eq!(missing.kind, ProblemKind::Missing);
        let err = Config::from_json(&json!([1]))
            .expect_err("not an object")
            .to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = Config::from_json(&json!({}))
            .expect_err("no pipeline")
            .to_string();
        assert!(err.contains("`pipeline`: missing"), "{err}");
    }
}
