//! The backend's configuration: the daemon's `[pipeline.backend]` table as JSON, checked
//! key by key (unknown keys are errors that name the key), plus the `pipeline` the daemon
//! adds (stage and variant names).

use std::collections::BTreeMap;
use std::time::Duration;

use infadapt_plugin_abi::{ConfigProblem, ConfigProblems, NameRule, PipelineStages};
use serde_json::Value;

use crate::TorchServeError;

/// Keys this backend reads (besides `type` and `pipeline`, which the daemon owns).
pub const KEYS: &[&str] = &[
    "management_url",
    "inference_url",
    "metrics_url",
    "archives",
    "max_batch_delay_ms",
    "drain_s",
    "request_timeout_ms",
    "call_budget_ms",
    "response_timeout_s",
    "max_replicas_per_variant",
];

/// Separator between a variant's name and its replica number in model names.
pub const REPLICA_SEPARATOR: &str = "--r";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Base URL of the management API (`http://127.0.0.1:8081`), no trailing `/`.
    pub management_url: String,
    /// Base URL of the inference API (`http://127.0.0.1:8080`), used for endpoints.
    pub inference_url: String,
    /// Full URL of the Prometheus metrics page (`http://127.0.0.1:8082/metrics`).
    pub metrics_url: String,
    /// Archive (`url` parameter of a registration) per variant.
    pub archives: BTreeMap<String, String>,
    /// `max_batch_delay` of every registration, milliseconds.
    pub max_batch_delay_ms: u64,
    /// How long a draining replica is kept after an observation first reported it
    /// draining (the router stops sending from then on).
    pub drain: Duration,
    /// Time limit of each HTTP request.
    pub request_timeout: Duration,
    /// Time all the requests of one plugin call may take together.
    pub call_budget: Duration,
    /// `response_timeout` of every registration, seconds (TorchServe's default when absent).
    pub response_timeout_s: Option<u64>,
    /// Most replicas a plan may ask of one variant.
    pub max_replicas_per_variant: u32,
    /// Stage of each variant.
    pub stage_of: BTreeMap<String, String>,
    /// Stages in pipeline order.
    pub stages: Vec<String>,
    /// Name of the pipeline (for messages).
    pub pipeline: String,
}

impl Config {
    /// Reads and checks a configuration; every problem is reported at once.
    pub fn from_json(value: &Value) -> Result<Config, TorchServeError> {
        let (config, problems) = Config::read(value);
        config.ok_or_else(|| TorchServeError::Config(problems.joined()))
    }

    /// Every problem with the configuration, each naming its key (the plugin's config
    /// check).
    pub fn check(value: &Value) -> Vec<ConfigProblem> {
        Config::read(value).1.into_problems()
    }

    fn read(value: &Value) -> (Option<Config>, ConfigProblems) {
        let Some(table) = value.as_object() else {
            let mut problems = ConfigProblems::new();
            problems.invalid("", "the configuration must be a JSON object");
            return (None, problems);
        };
        let mut problems = ConfigProblems::new();
        let mut known = KEYS.to_vec();
        known.extend(["type", "pipeline"]);
        problems.unknown_keys("", value, &known);
        let management_url = problems.url(table, "management_url", "http://127.0.0.1:8081");
        let inference_url = problems.url(table, "inference_url", "http://127.0.0.1:8080");
        let metrics_url = problems.url(table, "metrics_url", "http://127.0.0.1:8082/metrics");
        let max_batch_delay_ms = problems.count(table, "max_batch_delay_ms", 20, (0, 60_000));
        let drain_s = problems.number(table, "drain_s", 10.0, (0.0, 3600.0));
        let request_timeout_ms = problems.count(table, "request_timeout_ms", 2000, (10, 60_000));
        let call_budget_ms = problems.count(table, "call_budget_ms", 4000, (10, 600_000));
        let response_timeout_s = table
            .get("response_timeout_s")
            .map(|_| problems.count(table, "response_timeout_s", 120, (1, 86_400)));
        let max_replicas_per_variant =
            problems.count(table, "max_replicas_per_variant", 32, (1, 10_000)) as u32;

        let PipelineStages {
            name: pipeline,
            stages,
            stage_of,
        } = PipelineStages::read(table.get("pipeline"), &MODEL_NAMES, &mut problems);

        let mut archives = BTreeMap::new();
        match table.get("archives") {
            None => {}
            Some(Value::Object(map)) => {
                for (variant, archive) in map {
                    match archive.as_str() {
                        Some(a) if !a.trim().is_empty() => {
                            archives.insert(variant.clone(), a.to_owned());
                        }
                        _ => problems.invalid(
                            format!("archives.{variant}"),
                            "must be a non-empty string (an archive file in the model store \
                             or a URL TorchServe accepts)",
                        ),
                    }
                    if !stage_of.is_empty() && !stage_of.contains_key(variant) {
                        problems.invalid(
                            format!("archives.{variant}"),
                            format!("no variant `{variant}` in pipeline `{pipeline}`"),
                        );
                    }
                }
            }
            Some(_) => problems.invalid("archives", "must be a table of variant = \"archive.mar\""),
        }
        for variant in stage_of.keys() {
            archives
                .entry(variant.clone())
                .or_insert_with(|| format!("{variant}.mar"));
        }

        if !problems.is_empty() {
            return (None, problems);
        }
        let config = Config {
            management_url,
            inference_url,
            metrics_url,
            archives,
            max_batch_delay_ms,
            drain: Duration::from_secs_f64(drain_s),
            request_timeout: Duration::from_millis(request_timeout_ms),
            call_budget: Duration::from_millis(call_budget_ms),
            response_timeout_s,
            max_replicas_per_variant,
            stage_of,
            stages,
            pipeline,
        };
        (Some(config), problems)
    }
}

/// The names TorchServe accepts as (part of) a model name that cannot be confused with a
/// replica's name; a variant name is unique over the pipeline (one server).
const MODEL_NAMES: NameRule = NameRule {
    valid: valid_variant_name,
    described: "a TorchServe model name (letters, digits, `-`, `_`, `.`, starting with a \
                letter or digit, no `--`)",
    stages_too: false,
    duplicates_break: "model names must be unique on one server",
};

/// Whether TorchServe accepts `name` as (part of) a model name and it cannot be confused
/// with a replica's name.
pub fn valid_variant_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pipeline() -> Value {
        json!({ "name": "demo", "stages": [
            { "name": "classify", "variants": ["small", { "name": "large", "accuracy": 0.9 }] },
            { "name": "rank", "variants": ["ranker"] }
        ] })
    }

    #[test]
    fn defaults_fill_everything_but_the_pipeline() {
        let config = Config::from_json(&json!({ "pipeline": pipeline() })).expect("valid");
        assert_eq!(config.management_url, "http://127.0.0.1:8081");
        assert_eq!(config.metrics_url, "http://127.0.0.1:8082/metrics");
        assert_eq!(config.archives["large"], "large.mar");
        assert_eq!(config.stage_of["ranker"], "rank");
        assert_eq!(config.stages, vec!["classify", "rank"]);
        assert_eq!(config.drain, Duration::from_secs(10));
        assert_eq!(config.max_batch_delay_ms, 20);
        assert_eq!(config.response_timeout_s, None);
        assert_eq!(config.call_budget, Duration::from_secs(4));
    }

    #[test]
    fn keys_are_read_and_urls_lose_their_trailing_slash() {
        let config = Config::from_json(&json!({
            "type": "torchserve", "pipeline": pipeline(),
            "management_url": "http://10.0.0.1:9081/", "drain_s": 2.5,
            "archives": { "small": "file:///models/small-v2.mar" },
            "max_batch_delay_ms": 5, "request_timeout_ms": 700, "response_timeout_s": 30
        }))
        .expect("valid");
        assert_eq!(config.management_url, "http://10.0.0.1:9081");
        assert_eq!(config.archives["small"], "file:///models/small-v2.mar");
        assert_eq!(config.drain, Duration::from_millis(2500));
        assert_eq!(config.request_timeout, Duration::from_millis(700));
        assert_eq!(config.response_timeout_s, Some(30));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let err = Config::from_json(&json!({
            "pipeline": { "stages": [ { "name": "s", "variants": ["ok", "bad--name", "x y"] },
                                      { "name": "t", "variants": ["ok"] } ] },
            "drain_s": -1, "management_url": "localhost:8081", "archive": {},
            "archives": { "missing": "m.mar", "ok": 3 }, "request_timeout_ms": 1.5
        }))
        .expect_err("invalid")
        .to_string();
        for needle in [
            "`archive`: unknown key (did you mean `archives`?)",
            "`drain_s`: must be a number from 0 to 3600, got -1",
            "`management_url`: must be an http:// or https:// URL",
            "`bad--name` cannot be a TorchServe model name",
            "`x y` cannot be",
            "variant `ok` is also in stage `s`",
            "`archives.missing`: no variant `missing`",
            "`archives.ok`: must be a non-empty string",
            "`request_timeout_ms`: must be a whole number from 10 to 60000, got 1.5",
        ] {
            assert!(err.contains(needle), "`{needle}` not in: {err}");
        }
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
