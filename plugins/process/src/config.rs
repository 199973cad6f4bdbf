//! The process backend's configuration: read from the JSON the daemon hands to `create`,
//! checked key by key, every problem reported at once with the key's path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use infadapt_plugin_abi::{ConfigProblem, ConfigProblems};

use crate::error::ProcessError;

/// Placeholders a command, health URL or endpoint URL template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "port", "host", "gpu", "cores", "cpus", "variant", "stage", "batch",
];

/// What to do with running workers when the plugin instance is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// SIGTERM every worker, SIGKILL after `stop_timeout_s`, wait for all of them.
    Stop,
    /// Leave them running and recorded; the next instance adopts them.
    Keep,
}

/// Whether a variant's workers use a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuUse {
    /// No GPU; `CUDA_VISIBLE_DEVICES` is set empty.
    None,
    /// The GPU with the most free memory if there is one, else run without.
    Preferred,
    /// A GPU with enough free memory, or the worker is not started.
    Required,
}

/// How to run one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantConfig {
    pub command: Vec<String>,
    pub health_url: String,
    pub url: String,
    /// Where the worker's request counters are read (`served`, `in_flight`), if anywhere.
    pub stats_url: Option<String>,
    pub readiness_timeout: Duration,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub gpu: GpuUse,
    /// GPU memory one worker needs (from the config, else the pipeline's catalog).
    pub gpu_mem_mb: f64,
}

/// The whole backend configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    pub pipeline: String,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub host: String,
    pub port_first: u16,
    pub port_last: u16,
    /// CPUs workers may be pinned to; `None`: those the daemon itself may run on.
    pub cpus: Option<Vec<usize>>,
    pub drain: Duration,
    pub stop_timeout: Duration,
    pub health_timeout: Duration,
    pub unhealthy_after: u32,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    pub on_exit: OnExit,
    pub variants: BTreeMap<String, VariantConfig>,
}

const TOP_KEYS: &[&str] = &[
    "pipeline",
    "state_dir",
    "log_dir",
    "host",
    "port_range",
    "cpus",
    "drain_s",
    "stop_timeout_s",
    "health_timeout_s",
    "unhealthy_after",
    "restart_backoff_s",
    "restart_backoff_max_s",
    "on_exit",
    "variants",
];

const VARIANT_KEYS: &[&str] = &[
    "command",
    "health_url",
    "url",
    "stats_url",
    "readiness_timeout_s",
    "env",
    "working_dir",
    "gpu",
    "gpu_mem_mb",
];

/// Collects problems while reading.
struct Reader {
    problems: Vec<String>,
    /// The same problems, each with its key, for the plugin's config check.
    checked: ConfigProblems,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            problems: Vec::new(),
            checked: ConfigProblems::new(),
        }
    }

    fn report(&mut self, path: &str, message: impl AsRef<str>) {
        self.problems.push(format!("{path}: {}", message.as_ref()));
        self.checked.invalid(path, message.as_ref());
    }

    fn string(&mut self, table: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        match table.get(key) {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                self.report(&join(path, key), "must be a non-empty string");
                None
            }
        }
    }

    fn seconds(
        &mut self,
        table: &Map<String, Value>,
        path: &str,
        key: &str,
        default: f64,
    ) -> Duration {
        match table.get(key) {
            None => Duration::from_secs_f64(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (0.0..=86_400.0).contains(&x) => {
                    Duration::from_secs_f64(x)
                }
                _ => {
                    self.report(
                        &join(path, key),
                        "must be a number of seconds from 0 to 86400",
                    );
                    Duration::from_secs_f64(default)
                }
            },
        }
    }

    fn unknown_keys(&mut self, table: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                self.problems.push(format!(
                    "{}: unknown key (known: {})",
                    join(path, key),
                    known.join(", ")
                ));
                self.checked.unknown_key(join(path, key), key, known);
            }
        }
    }

    fn template(&mut self, path: &str, text: &str) {
        if let Err(problem) = check_template(text) {
            self.report(path, problem.to_string());
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks that every `{name}` in a template is a known placeholder.
pub fn check_template(text: &str) -> Result<(), ProcessError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(ProcessError::UnclosedPlaceholder {
                text: text.to_owned(),
            });
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(ProcessError::UnknownPlaceholder {
                text: text.to_owned(),
                name: name.to_owned(),
            });
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Replaces the placeholders of a checked template.
pub fn render(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A variant named in the daemon's `pipeline` (name and catalog GPU memory).
#[derive(Debug, Clone, PartialEq)]
struct PipelineVariant {
    stage: String,
    name: String,
    gpu_mem_mb: f64,
}

fn pipeline_variants(reader: &mut Reader, pipeline: &Map<String, Value>) -> Vec<PipelineVariant> {
    let mut found = Vec::new();
    let Some(stages) = pipeline.get("stages").and_then(Value::as_array) else {
        return found;
    };
    for (i, stage) in stages.iter().enumerate() {
        let stage_name = stage
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(variants) = stage.get("variants").and_then(Value::as_array) else {
            reader.report(
                &format!("pipeline.stages[{i}].variants"),
                "missing or not a list",
            );
            continue;
        };
        for variant in variants {
            let (name, gpu_mem_mb) = match variant {
                Value::String(name) => (name.clone(), 0.0),
                Value::Object(entry) => (
                    entry
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    entry
                        .get("gpu_mem_mb")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                ),
                _ => (String::new(), 0.0),
            };
            if name.is_empty() {
                reader.report(
                    &format!("pipeline.stages[{i}].variants"),
                    "an entry without a name",
                );
                continue;
            }
            found.push(PipelineVariant {
                stage: stage_name.clone(),
                name,
                gpu_mem_mb,
            });
        }
    }
    found
}

impl ProcessConfig {
    /// Reads and checks the config; every problem at once.
    pub fn from_json(value: &Value) -> Result<ProcessConfig, ProcessError> {
        ProcessConfig::read(value, &mut Reader::new())
    }

    /// Every problem with the config, each naming its key (the plugin's config check).
    pub fn check(value: &Value) -> Vec<ConfigProblem> {
        let mut reader = Reader::new();
        if !value.is_object() {
            reader.report("", "the config must be a JSON object");
        }
        let _ = ProcessConfig::read(value, &mut reader);
        reader.checked.into_problems()
    }

    fn read(value: &Value, reader: &mut Reader) -> Result<ProcessConfig, ProcessError> {
        let Some(top) = value.as_object() else {
            return Err(ProcessError::Config(vec![
                "the config must be a JSON object".into(),
            ]));
        };
        reader.unknown_keys(top, "", TOP_KEYS);
        let empty = Map::new();
        let pipeline = top
            .get("pipeline")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let pipeline_name = pipeline
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        if !pipeline_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            reader.report("pipeline.name", "letters, digits, `-`, `_` and `.` only");
        }
        let planned = pipeline_variants(reader, pipeline);

        let state_dir = match reader.string(top, "", "state_dir") {
            Some(s) => PathBuf::from(s),
            None => {
                if !top.contains_key("state_dir") {
                    reader.report(
                        "state_dir",
                        "required: the directory where running workers are recorded",
                    );
                }
                PathBuf::new()
            }
        };
        let log_dir = reader
            .string(top, "", "log_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("logs"));
        let host = reader
            .string(top, "", "host")
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let (port_first, port_last) = match top.get("port_range") {
            None => (20_000, 20_999),
            Some(v) => {
                let pair = v.as_array().and_then(|a| {
                    if a.len() != 2 {
                        return None;
                    }
                    let first = a[0].as_u64().filter(|p| (1..=65_535).contains(p))?;
                    let last = a[1].as_u64().filter(|p| (first..=65_535).contains(p))?;
                    Some((first as u16, last as u16))
                });
                pair.unwrap_or_else(|| {
                    reader.report(
                        "port_range",
                        "must be [first, last], ports from 1 to 65535 with first <= last",
                    );
                    (20_000, 20_999)
                })
            }
        };
        let cpus = match top.get("cpus") {
            None => None,
            Some(v) => {
                let list: Option<Vec<usize>> = v.as_array().and_then(|a| {
                    a.iter()
                        .map(|c| c.as_u64().filter(|&c| c < 4096).map(|c| c as usize))
                        .collect()
                });
                match list {
                    Some(mut l) if !l.is_empty() => {
                        l.sort_unstable();
                        l.dedup();
                        Some(l)
                    }
                    _ => {
                        reader.report("cpus", "must be a non-empty list of CPU numbers");
                        None
                    }
                }
            }
        };
        let drain = reader.seconds(top, "", "drain_s", 5.0);
        let stop_timeout = reader.seconds(top, "", "stop_timeout_s", 5.0);
        let health_timeout = reader.seconds(top, "", "health_timeout_s", 0.5);
        if health_timeout.is_zero() || health_timeout > Duration::from_secs(2) {
            reader.report(
                "health_timeout_s",
                "must be above 0 and at most 2 (health checks run inside a backend call)",
            );
        }
        let unhealthy_after = match top.get("unhealthy_after") {
            None => 3,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1000).contains(&n) => n as u32,
                _ => {
                    reader.report("unhealthy_after", "must be a whole number from 1 to 1000");
                    3
                }
            },
        };
        let restart_backoff = reader.seconds(top, "", "restart_backoff_s", 1.0);
        let restart_backoff_max = reader.seconds(top, "", "restart_backoff_max_s", 60.0);
        if restart_backoff_max < restart_backoff {
            reader.report(
                "restart_backoff_max_s",
                "must not be below restart_backoff_s",
            );
        }
        let on_exit = match top.get("on_exit").map(|v| v.as_str()) {
            None | Some(Some("stop")) => OnExit::Stop,
            Some(Some("keep")) => OnExit::Keep,
            Some(_) => {
                reader.report("on_exit", "must be \"stop\" or \"keep\"");
                OnExit::Stop
            }
        };

        let mut variants = BTreeMap::new();
        match top.get("variants") {
            Some(Value::Object(table)) => {
                for (name, entry) in table {
                    let path = format!("variants.{name}");
                    let Some(entry) = entry.as_object() else {
                        reader.report(&path, "must be a table");
                        continue;
                    };
                    let catalog_gpu = planned
                        .iter()
                        .find(|p| &p.name == name)
                        .map_or(0.0, |p| p.gpu_mem_mb);
                    if let Some(variant) = read_variant(reader, &path, entry, catalog_gpu) {
                        variants.insert(name.clone(), variant);
                    }
                }
            }
            None => reader.report(
                "variants",
                "required: one table per variant with its `command`",
            ),
            Some(_) => reader.report("variants", "must be a table of variant tables"),
        }
        for p in &planned {
            if top.get("variants").is_some_and(Value::is_object) && !variants.contains_key(&p.name)
            {
                let written = top.get("variants").and_then(|v| v.get(&p.name)).is_some();
                if !written {
                    reader.report(
                        &format!("variants.{}", p.name),
                        format!(
                            "missing: stage `{}` may be planned with this variant",
                            p.stage
                        ),
                    );
                }
            }
        }
        if !reader.problems.is_empty() {
            return Err(ProcessError::Config(reader.problems.clone()));
        }
        Ok(ProcessConfig {
            pipeline: pipeline_name,
            state_dir,
            log_dir,
            host,
            port_first,
            port_last,
            cpus,
            drain,
            stop_timeout,
            health_timeout,
            unhealthy_after,
            restart_backoff,
            restart_backoff_max,
            on_exit,
            variants,
        })
    }

    /// Whether any variant may use a GPU.
    pub fn wants_gpu(&self) -> bool {
        self.variants.values().any(|v| v.gpu != GpuUse::None)
    }
}

fn read_variant(
    reader: &mut Reader,
    path: &str,
    entry: &Map<String, Value>,
    catalog_gpu_mem_mb: f64,
) -> Option<VariantConfig> {
    let before = reader.problems.len();
    reader.unknown_keys(entry, path, VARIANT_KEYS);
    let command: Vec<String> = match entry.get("command") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect();
            match strings {
                Some(s) if !s[0].is_empty() => s,
                _ => {
                    reader.report(&join(path, "command"), "every element must be a string");
                    Vec::new()
                }
            }
        }
        Some(Value::String(_)) => {
            reader.report(
                &join(path, "command"),
                "must be a list: [program, arg, ...] (no shell is used)",
            );
            Vec::new()
        }
        None => {
            reader.report(&join(path, "command"), "required");
            Vec::new()
        }
        Some(_) => {
            reader.report(
                &join(path, "command"),
                "must be a non-empty list of strings",
            );
            Vec::new()
        }
    };
    for (i, arg) in command.iter().enumerate() {
        reader.template(&format!("{path}.command[{i}]"), arg);
    }
    let health_url = reader
        .string(entry, path, "health_url")
        .unwrap_or_else(|| "http://{host}:{port}/healthz".to_owned());
    let url = reader
        .string(entry, path, "url")
        .unwrap_or_else(|| "http://{host}:{port}/infer".to_owned());
    let stats_url = reader.string(entry, path, "stats_url");
    let mut urls = vec![("health_url", &health_url), ("url", &url)];
    if let Some(stats) = &stats_url {
        urls.push(("stats_url", stats));
    }
    for (key, text) in urls {
        reader.template(&join(path, key), text);
        if !text.starts_with("http://") {
            reader.report(&join(path, key), "must start with http://");
        }
    }
    let readiness_timeout = reader.seconds(entry, path, "readiness_timeout_s", 60.0);
    let mut env = BTreeMap::new();
    match entry.get("env") {
        None => {}
        Some(Value::Object(table)) => {
            for (k, v) in table {
                match v.as_str() {
                    Some(s) => {
                        reader.template(&format!("{path}.env.{k}"), s);
                        env.insert(k.clone(), s.to_owned());
                    }
                    None => reader.report(&format!("{path}.env.{k}"), "must be a string"),
                }
            }
        }
        Some(_) => reader.report(&join(path, "env"), "must be a table of strings"),
    }
    let working_dir = reader.string(entry, path, "working_dir").map(PathBuf::from);
    let gpu = match entry.get("gpu").map(|v| v.as_str()) {
        None | Some(Some("none")) => GpuUse::None,
        Some(Some("preferred")) => GpuUse::Preferred,
        Some(Some("required")) => GpuUse::Required,
        Some(_) => {
            reader.report(
                &join(path, "gpu"),
                "must be \"none\", \"preferred\" or \"required\"",
            );
            GpuUse::None
        }
    };
    let gpu_mem_mb = match entry.get("gpu_mem_mb") {
        None => catalog_gpu_mem_mb,
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => x,
            _ => {
                reader.report(
                    &join(path, "gpu_mem_mb"),
                    "must be a number of MiB, 0 or more",
                );
                0.0
            }
        },
    };
    if reader.problems.len() > before {
        return None;
    }
    Some(VariantConfig {
        command,
        health_url,
        url,
        stats_url,
        readiness_timeout,
        env,
        working_dir,
        gpu,
        gpu_mem_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "state_dir": "/tmp/x",
            "pipeline": { "name": "p", "stages": [{ "name": "s", "variants": ["a"] }] },
            "variants": { "a": { "command": ["worker", "--port", "{port}"] } }
        })
    }

    #[test]
    fn a_minimal_config_gets_its_defaults() {
        let c = ProcessConfig::from_json(&minimal()).unwrap();
        assert_eq!(c.pipeline, "p");
        assert_eq!((c.port_first, c.port_last), (20_000, 20_999));
        assert_eq!(c.log_dir, PathBuf::from("/tmp/x/logs"));
        assert_eq!(c.on_exit, OnExit::Stop);
        let a = &c.variants["a"];
        assert_eq!(a.health_url, "http://{host}:{port}/healthz");
        assert_eq!(a.gpu, GpuUse::None);
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let bad = json!({
            "pipeline": { "name": "p", "stages": [{ "name": "s", "variants": ["a", "b"] }] },
            "port_range": [30, 20],
            "drain_s": -1,
            "on_exit": "later",
            "colour": "blue",
            "variants": {
                "a": { "command": "worker --port {port}", "gpu": "maybe" },
                "c": { "command": ["w", "{prot}"], "health_url": "https://x/{port}" }
            }
        });
        let ProcessError::Config(problems) = ProcessConfig::from_json(&bad).unwrap_err() else {
            panic!("expected a config error");
        };
        let text = problems.join("\n");
        for needle in [
            "state_dir: required",
            "port_range: must be [first, last]",
            "drain_s: must be a number of seconds",
            "on_exit: must be \"stop\" or \"keep\"",
            "colour: unknown key",
            "variants.a.command: must be a list",
            "variants.a.gpu: must be",
            "variants.c.command[1]: `{prot}`: unknown placeholder `{prot}`",
            "variants.c.health_url: must start with http://",
            "variants.b: missing: stage `s` may be planned with this variant",
        ] {
            assert!(text.contains(needle), "`{needle}` not in:\n{text}");
        }
    }

    #[test]
    fn templates_render_known_placeholders() {
        let mut values = BTreeMap::new();
        values.insert("port", "20001".to_owned());
        values.insert("host", "127.0.0.1".to_owned());
        assert_eq!(
            render("http://{host}:{port}/healthz", &values),
            "http://127.0.0.1:20001/healthz"
        );
        assert!(check_template("a{port}b{cores}").is_ok());
        assert!(check_template("a{port").is_err());
    }

    #[test]
    fn gpu_memory_comes_from_the_catalog_unless_given() {
        let mut config = minimal();
        config["pipeline"]["stages"][0]["variants"] =
            json!([{ "name": "a", "gpu_mem_mb": 1500.0 }]);
        config["variants"]["a"]["gpu"] = json!("required");
        let c = ProcessConfig::from_json(&config).unwrap();
        assert_eq!(c.variants["a"].gpu_mem_mb, 1500.0);
        assert!(c.wants_gpu());
        config["variants"]["a"]["gpu_mem_mb"] = json!(700);
        assert_eq!(
            ProcessConfig::from_json(&config).unwrap().variants["a"].gpu_mem_mb,
            700.0
        );
    }
}
