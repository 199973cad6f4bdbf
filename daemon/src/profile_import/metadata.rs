//! Variant metadata tables (CSV) and accuracy trees (YAML): accuracy and load time per
//! variant, in the unit of their source.

use super::*;
use std::collections::BTreeMap;

/// Accuracy and load time per variant, from a metadata table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataTable {
    pub(super) file: String,
    pub(super) entries: Vec<MetadataEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct MetadataEntry {
    pub(super) name: String,
    pub(super) accuracy: Option<f64>,
    pub(super) load_time_s: Option<f64>,
}

/// Accuracy per variant, from a pipeline → stage → variant tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccuracyTable {
    pub(super) file: String,
    pub(super) entries: Vec<AccuracyEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct AccuracyEntry {
    /// `pipeline.stage` the value was listed under.
    pub(super) place: String,
    pub(super) name: String,
    pub(super) value: f64,
}

/// Reads a variant metadata table: a name column (`model`, `variant` or `name`) and at least
/// one of `top1_accuracy` / `accuracy` and `load_time_s`.
pub fn parse_metadata(input: InputText<'_>) -> Result<MetadataTable, ImportError> {
    let mut problems = Vec::new();
    let Some(table) = read_table(input, &mut problems) else {
        return Err(ImportError { problems });
    };
    let name_column = table.find_any(&["model", "variant", "name"]);
    let accuracy_column = table.find_any(&["top1_accuracy", "accuracy"]);
    let load_column = table.find("load_time_s");
    if name_column.is_none() {
        problems.push(Problem::at(
            input.name,
            1,
            Some("model"),
            "missing column (also accepted: variant, name)",
        ));
    }
    if accuracy_column.is_none() && load_column.is_none() {
        problems.push(Problem::at(
            input.name,
            1,
            Some("top1_accuracy"),
            "missing column: the table needs top1_accuracy (or accuracy) or load_time_s",
        ));
    }
    let mut entries: Vec<MetadataEntry> = Vec::new();
    let mut first_line: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(name_column) = name_column {
        for row in &table.rows {
            let name = take(row.text(name_column), &mut problems);
            let accuracy = accuracy_column
                .and_then(|c| take(row.number(c), &mut problems))
                .flatten();
            let load_time_s = load_column
                .and_then(|c| take(row.non_negative(c), &mut problems))
                .flatten();
            let Some(name) = name else { continue };
            if let Some(first) = first_line.get(name) {
                problems.push(row.problem(
                    name_column,
                    format!("variant `{name}` is listed twice (first at line {first})"),
                ));
                continue;
            }
            first_line.insert(name.to_owned(), row.line);
            entries.push(MetadataEntry {
                name: name.to_owned(),
                accuracy,
                load_time_s,
            });
        }
    }
    sort_by_line(&mut problems);
    ImportError::from_problems(problems)?;
    Ok(MetadataTable {
        file: input.file_name(),
        entries,
    })
}

/// Reads an accuracy tree: `pipeline: { stage: { variant: value } }`. `null` values (unknown
/// accuracy) are ignored; a variant listed under several stages must have the same value.
pub fn parse_accuracies(input: InputText<'_>) -> Result<AccuracyTable, ImportError> {
    use serde_yaml_ng::Value;
    let fail = |problem: Problem| ImportError {
        problems: vec![problem],
    };
    let root: Value = serde_yaml_ng::from_str(input.text).map_err(|e| {
        let message = format!("not a valid accuracy tree: {e}");
        match e.location() {
            Some(at) => fail(Problem::at(input.name, at.line() as u64, None, message)),
            None => fail(Problem::in_file(input.name, message)),
        }
    })?;
    let key_text = |key: &Value| match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let Value::Mapping(pipelines) = &root else {
        return Err(fail(Problem::in_file(
            input.name,
            "expected a mapping of pipelines at the top level",
        )));
    };
    for (pipeline_key, stages) in pipelines {
        let pipeline = key_text(pipeline_key).unwrap_or_else(|| "?".into());
        let Value::Mapping(stages) = stages else {
            problems.push(Problem::in_file(
                input.name,
                format!("`{pipeline}`: expected a mapping of stages"),
            ));
            continue;
        };
        for (stage_key, variants) in stages {
            let place = format!(
                "{pipeline}.{}",
                key_text(stage_key).unwrap_or_else(|| "?".into())
            );
            let Value::Mapping(variants) = variants else {
                problems.push(Problem::in_file(
                    input.name,
                    format!("`{place}`: expected a mapping of variants"),
                ));
                continue;
            };
            for (variant_key, value) in variants {
                let Some(name) = key_text(variant_key) else {
                    problems.push(Problem::in_file(
                        input.name,
                        format!("`{place}`: a variant name is not text"),
                    ));
                    continue;
                };
                match value {
                    Value::Null => {}
                    Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                        let value = n.as_f64().unwrap_or_default();
                        entries.push(AccuracyEntry {
                            place: place.clone(),
                            name,
                            value,
                        });
                    }
                    other => {
                        let got = match other {
                            Value::String(text) => format!("the text `{text}`"),
                            Value::Bool(b) => format!("`{b}`"),
                            Value::Number(n) => format!("`{n}`"),
                            Value::Sequence(_) => "a list".to_owned(),
                            Value::Mapping(_) => "a mapping".to_owned(),
                            _ => "a tagged value".to_owned(),
                        };
                        problems.push(Problem::in_file(
                            input.name,
                            format!("`{place}.{name}`: accuracy must be a number, got {got}"),
                        ));
                    }
                }
            }
        }
    }
    ImportError::from_problems(problems)?;
    Ok(AccuracyTable {
        file: input.file_name(),
        entries,
    })
}
