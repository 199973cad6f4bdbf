//! The answer of a plugin's `check_config` entry (ABI version 2): every problem with the
//! backend table of the daemon's configuration, each naming the key it is about, so that the
//! daemon can point at the file, line and column; and the helpers plugins build it with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::messages::SCHEMA_VERSION;

fn schema() -> u32 {
    SCHEMA_VERSION
}

/// What is wrong with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The key is not one the backend reads (`hint` may name the one meant).
    UnknownKey,
    /// A required key is absent (`key` names it).
    Missing,
    /// The value has the wrong type or is out of range.
    Invalid,
}

/// One problem with the backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    /// Dotted path inside the backend table (`drain_s`, `models.resnet18`,
    /// `variants.small.command`); empty for the table as a whole.
    pub key: String,
    pub kind: ProblemKind,
    /// What is wrong, without the key (the daemon prints the key in front).
    pub message: String,
    /// The key meant, for an unknown key close to a known one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (did you mean `{hint}`?)")?;
        }
        Ok(())
    }
}

/// Answer of `check_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigCheck {
    #[serde(default = "schema")]
    pub schema: u32,
    #[serde(default)]
    pub problems: Vec<ConfigProblem>,
}

impl Default for ConfigCheck {
    fn default() -> Self {
        ConfigCheck {
            schema: SCHEMA_VERSION,
            problems: Vec::new(),
        }
    }
}

/// Collects the problems of one configuration, as a plugin's config reader finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigProblems {
    problems: Vec<ConfigProblem>,
}

impl ConfigProblems {
    pub fn new() -> Self {
        ConfigProblems::default()
    }

    /// A wrong type or value at `key`.
    pub fn invalid(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            kind: ProblemKind::Invalid,
            message: message.into(),
            hint: None,
        });
    }

    /// A required `key` that is absent.
    pub fn missing(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            kind: ProblemKind::Missing,
            message: message.into(),
            hint: None,
        });
    }

    /// Reports every key of `table` that is not in `known`, with the nearest known key as a
    /// hint when it looks like a typo. `prefix` is the table's own dotted path (empty at the
    /// top of the backend table). Not an object: nothing is reported here.
    pub fn unknown_keys(&mut self, prefix: &str, table: &serde_json::Value, known: &[&str]) {
        let Some(map) = table.as_object() else {
            return;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                self.problems.push(ConfigProblem {
                    key: path,
                    kind: ProblemKind::UnknownKey,
                    message: "unknown key".to_owned(),
                    hint: closest(key, known).map(str::to_owned),
                });
            }
        }
    }

    /// Reports one unknown key `name` at `path` (its full dotted path), with the nearest of
    /// `known` as a hint.
    pub fn unknown_key(&mut self, path: impl Into<String>, name: &str, known: &[&str]) {
        self.problems.push(ConfigProblem {
            key: path.into(),
            kind: ProblemKind::UnknownKey,
            message: "unknown key".to_owned(),
            hint: closest(name, known).map(str::to_owned),
        });
    }

    /// Reads `value` as `T` (a serde type), reporting a failure at the key it happened at.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &mut self,
        value: &serde_json::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => Some(read),
            Err(e) => {
                let path = e.path().to_string();
                let key = if path == "." { String::new() } else { path };
                self.invalid(key, e.into_inner().to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<ConfigProblem> {
        self.problems
    }

    /// The URL at `key` of `table` (`http://` or `https://`, without a trailing `/`), or
    /// `default` when absent; anything else is a problem, and `default` is used.
    pub fn url(&mut self, table: &Map<String, Value>, key: &str, default: &str) -> String {
        match table.get(key) {
            None => default.to_owned(),
            Some(Value::String(s)) if is_http_url(s) => s.trim_end_matches('/').to_owned(),
            Some(other) => {
                self.invalid(
                    key,
                    format!("must be an http:// or https:// URL, got {other}"),
                );
                default.to_owned()
            }
        }
    }

    /// The finite number at `key` within `[min, max]`, or `default` when absent; anything
    /// else is a problem, and `default` is used.
    pub fn number(
        &mut self,
        table: &Map<String, Value>,
        key: &str,
        default: f64,
        (min, max): (f64, f64),
    ) -> f64 {
        match table.get(key) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (min..=max).contains(&x) => x,
                _ => {
                    self.invalid(
                        key,
                        format!("must be a number from {min} to {max}, got {v}"),
                    );
                    default
                }
            },
        }
    }

    /// The whole number at `key` within `[min, max]`, or `default` when absent; anything
    /// else is a problem, and `default` is used.
    pub fn count(
        &mut self,
        table: &Map<String, Value>,
        key: &str,
        default: u64,
        (min, max): (u64, u64),
    ) -> u64 {
        match table.get(key) {
            None => default,
            Some(v) => match v.as_u64() {
                Some(x) if (min..=max).contains(&x) => x,
                _ => {
                    self.invalid(
                        key,
                        format!("must be a whole number from {min} to {max}, got {v}"),
                    );
                    default
                }
            },
        }
    }

    /// Every problem on one line, `; `-separated (for the error of `create`).
    pub fn joined(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Whether `s` is an `http://` or `https://` URL (by its scheme).
pub fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Which names a backend can give its own objects (models, applications, routes), and what
/// breaks when two stages share a variant name: the rule [`PipelineStages::read`] checks.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    /// Whether the backend can use `name`.
    pub valid: fn(&str) -> bool,
    /// What a name must be, after "cannot be": `a model name (letters, digits, …)`.
    pub described: &'static str,
    /// Whether stage names become part of the backend's names too (checked like variants).
    pub stages_too: bool,
    /// Why a variant name in two stages is refused, after "; ".
    pub duplicates_break: &'static str,
}

/// The pipeline the daemon hands every plugin in its configuration (`pipeline`: `name`,
/// `stages` with `name` and `variants`, each a name or a table with `name`), as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStages {
    /// The pipeline's name (empty when the daemon gave none).
    pub name: String,
    /// The stages' names, in order.
    pub stages: Vec<String>,
    /// The stage of each variant.
    pub stage_of: std::collections::BTreeMap<String, String>,
}

impl PipelineStages {
    /// Reads `pipeline` (absent: a problem), checking every name against `rule`; a name
    /// the rule refuses, or a variant in two stages, is a problem at its position.
    pub fn read(value: Option<&Value>, rule: &NameRule, problems: &mut ConfigProblems) -> Self {
        let mut read = PipelineStages::default();
        let Some(pipeline) = value else {
            problems.missing(
                "pipeline",
                "missing (the daemon passes the pipeline's stages)",
            );
            return read;
        };
        read.name = pipeline
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(list) = pipeline.get("stages").and_then(Value::as_array) else {
            problems.invalid("pipeline.stages", "missing or not a list");
            return read;
        };
        for (i, stage) in list.iter().enumerate() {
            let Some(stage_name) = stage.get("name").and_then(Value::as_str) else {
                problems.missing(format!("pipeline.stages[{i}].name"), "missing");
                continue;
            };
            if rule.stages_too && !(rule.valid)(stage_name) {
                problems.invalid(
                    format!("pipeline.stages[{i}].name"),
                    format!("`{stage_name}` cannot be {}", rule.described),
                );
            }
            read.stages.push(stage_name.to_owned());
            let variants = stage.get("variants").and_then(Value::as_array);
            for (j, variant) in variants.into_iter().flatten().enumerate() {
                let at = format!("pipeline.stages[{i}].variants[{j}]");
                let variant_name = variant
                    .as_str()
                    .or_else(|| variant.get("name").and_then(Value::as_str));
                let Some(variant_name) = variant_name else {
                    problems.invalid(at, "neither a name nor an entry with `name`");
                    continue;
                };
                if !(rule.valid)(variant_name) {
                    problems.invalid(at, format!("`{variant_name}` cannot be {}", rule.described));
                    continue;
                }
                if let Some(other) = read
                    .stage_of
                    .insert(variant_name.to_owned(), stage_name.to_owned())
                {
                    problems.invalid(
                        at,
                        format!(
                            "variant `{variant_name}` is also in stage `{other}`; {}",
                            rule.duplicates_break
                        ),
                    );
                }
            }
        }
        if read.stages.is_empty() {
            problems.invalid("pipeline.stages", "empty");
        }
        read
    }
}

/// The known key nearest to `name`, when it is near enough to be a typo of it.
pub fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_readers_take_good_values_and_report_bad_ones_with_the_default_kept() {
        let table = serde_json::json!({"url": "http://h:1/", "bad_url": "ftp://h",
            "n": 2.5, "far": 99, "c": 7, "frac": 1.5});
        let table = table.as_object().unwrap();
        let mut problems = ConfigProblems::new();
        assert_eq!(problems.url(table, "url", "d"), "http://h:1");
        assert_eq!(problems.url(table, "absent", "http://d"), "http://d");
        assert_eq!(problems.url(table, "bad_url", "http://d"), "http://d");
        assert_eq!(problems.number(table, "n", 1.0, (0.0, 10.0)), 2.5);
        assert_eq!(problems.number(table, "far", 1.0, (0.0, 10.0)), 1.0);
        assert_eq!(problems.count(table, "c", 1, (0, 10)), 7);
        assert_eq!(problems.count(table, "frac", 1, (0, 10)), 1);
        let keys: Vec<_> = problems.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["bad_url", "far", "frac"]);
        assert_eq!(
            problems.problems()[1].message,
            "must be a number from 0 to 10, got 99"
        );
        assert_eq!(
            problems.problems()[2].message,
            "must be a whole number from 0 to 10, got 1.5"
        );
    }

    #[test]
    fn pipeline_stages_are_read_with_the_backends_name_rule() {
        let rule = NameRule {
            valid: |n| !n.contains(' '),
            described: "a name here (no spaces)",
            stages_too: true,
            duplicates_break: "names must be unique",
        };
        let pipeline = serde_json::json!({"name": "p", "stages": [
            {"name": "a", "variants": ["x", {"name": "y"}, {"accuracy": 1}]},
            {"name": "b c", "variants": ["x", "u v"]}]});
        let mut problems = ConfigProblems::new();
        let read = PipelineStages::read(Some(&pipeline), &rule, &mut problems);
        assert_eq!(read.name, "p");
        assert_eq!(read.stages, ["a", "b c"]);
        assert_eq!(read.stage_of.get("y").map(String::as_str), Some("a"));
        let found: Vec<_> = problems
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            found,
            [
                "pipeline.stages[0].variants[2]: neither a name nor an entry with `name`",
                "pipeline.stages[1].name: `b c` cannot be a name here (no spaces)",
                "pipeline.stages[1].variants[0]: variant `x` is also in stage `a`; names must be unique",
                "pipeline.stages[1].variants[1]: `u v` cannot be a name here (no spaces)",
            ]
        );
        let mut problems = ConfigProblems::new();
        assert_eq!(
            PipelineStages::read(None, &rule, &mut problems),
            PipelineStages::default()
        );
        assert_eq!(problems.problems()[0].kind, ProblemKind::Missing);
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_key_as_a_hint() {
        let mut problems = ConfigProblems::new();
        let table = serde_json::json!({"url": "x", "metrics_ulr": "y", "colour": 1});
        problems.unknown_keys("", &table, &["url", "metrics_url", "drain_s"]);
        let found = problems.into_problems();
        assert_eq!(found.len(), 2);
        let typo = found.iter().find(|p| p.key == "metrics_ulr").expect("typo");
        assert_eq!(typo.kind, ProblemKind::UnknownKey);
        assert_eq!(typo.hint.as_deref(), Some("metrics_url"));
        assert_eq!(
            typo.to_string(),
            "`metrics_ulr`: unknown key (did you mean `metrics_url`?)"
        );
        let far = found.iter().find(|p| p.key == "colour").expect("colour");
        assert_eq!(far.hint, None);
    }

    #[test]
    fn nested_tables_report_their_dotted_path_and_the_answer_round_trips() {
        let mut problems = ConfigProblems::new();
        problems.unknown_keys(
            "variants.small",
            &serde_json::json!({"comand": "x"}),
            &["command"],
        );
        problems.invalid("drain_s", "must be a number of seconds, got \"ten\"");
        problems.missing("url", "is required");
        let check = ConfigCheck {
            problems: problems.into_problems(),
            ..ConfigCheck::default()
        };
        let text = serde_json::to_string(&check).expect("encodes");
        assert!(text.contains(r#""kind":"unknown-key""#), "{text}");
        let back: ConfigCheck = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, check);
        assert_eq!(back.problems[0].key, "variants.small.comand");
        assert_eq!(back.problems[0].hint.as_deref(), Some("command"));
        let old: ConfigCheck = serde_json::from_str(r#"{"schema": 1}"#).expect("decodes");
        assert!(old.problems.is_empty());
    }

    #[test]
    fn serde_failures_are_reported_at_their_key() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            drain_s: f64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        let mut problems = ConfigProblems::new();
        let read: Option<Outer> =
            problems.deserialize(&serde_json::json!({"inner": {"drain_s": "ten"}}));
        assert!(read.is_none());
        assert_eq!(problems.problems()[0].key, "inner.drain_s");
        assert!(
            problems.problems()[0].message.contains("invalid type"),
            "{problems:?}"
        );
        let mut problems = ConfigProblems::new();
        assert!(
            problems
                .deserialize::<Outer>(&serde_json::json!(3))
                .is_none()
        );
        assert_eq!(problems.problems()[0].key, "");
    }
}
