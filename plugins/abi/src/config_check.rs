//! The answer of a plugin's `check_config` entry (ABI version 2): every problem with the
//! backend table of the daemon's configuration, each naming the key it is about, so that the
//! daemon can point at the file, line and column; and the helpers plugins build it with.

use serde::{Deserialize, Serialize};

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

    /// Every problem on one line, `; `-separated (for the error of `create`).
    pub fn joined(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
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
