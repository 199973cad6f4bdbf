//! Conversion of measured profile tables (CSV) into profile catalogs (schema 1).
//!
//! Two table layouts are understood:
//!
//! - **InfAdapter capacity tables** (`REPLICA,HARDWARE,CPU,MEM,ARCH,BATCH,…,SLA,p99_latency,
//!   capacity,saturation_tp,…`): one row per (ResNet depth, cores, latency SLA). One variant
//!   per `ARCH` (named `resnetNN` when `ARCH` is a number), one point per (`BATCH`, `CPU`),
//!   taken from the row measured at the requested SLO.
//! - **IPA profiler tables** (an unnamed index column, `model_variant, max_batch_size,
//!   cpu_request, load`, then some of `model_latencies_p99`, `model_latencies_avg` in seconds,
//!   `expected_max_throughput`, `expected_throughput`, `throughput_max`): one variant per
//!   `model_variant`, one point per (`max_batch_size`, `cpu_request`), taken from the most
//!   loaded run that has values.
//!
//! Accuracy and load time come from a variant metadata table (CSV: `model`, `top1_accuracy`,
//! `load_time_s`) and/or an accuracy tree (YAML: pipeline → stage → variant → value); values
//! are kept in the unit of their source. Names that a table truncated with `...` are matched
//! to a unique known name by prefix.
//!
//! This module does no IO: callers hand in file names and contents. Every problem found is
//! collected with its file, line and column, and returned together in one [`ImportError`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::rc::Rc;

use infadapt_model::catalog::CATALOG_SCHEMA;
use infadapt_model::{Catalog, CatalogVariant, ProfilePoint};

/// A `throughput_max` below this share of the offered load means the server was saturated,
/// so the measured maximum is its capacity; at or above it, the figure is only the offered
/// load and says nothing about capacity.
const SATURATED_SHARE: f64 = 0.9;

/// Tolerance when comparing SLA values given in milliseconds.
const SLA_TOLERANCE_MS: f64 = 1e-9;

/// One input table: the name used in messages (usually the path as given) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputText<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl<'a> InputText<'a> {
    /// Pairs a name with its contents.
    pub fn new(name: &'a str, text: &'a str) -> Self {
        InputText { name, text }
    }

    /// The file name without directories, as written into catalogs.
    fn file_name(&self) -> String {
        base_name(self.name)
    }
}

fn base_name(name: &str) -> String {
    Path::new(name)
        .file_name()
        .map_or_else(|| name.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The layout of a measured profile table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// InfAdapter capacity table: max RPS with p99 ≤ SLA per (variant, cores, SLA).
    InfAdapter,
    /// IPA profiler table: latency and throughput per (variant, batch, cores, load).
    Ipa,
}

impl Format {
    /// The name used on the command line and in catalog headers.
    pub fn name(self) -> &'static str {
        match self {
            Format::InfAdapter => "infadapter",
            Format::Ipa => "ipa",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem in the input, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The input's name as given; `None` for problems of the result as a whole.
    pub file: Option<String>,
    /// 1-based line in the file.
    pub line: Option<u64>,
    /// The column (CSV header name) the problem is in.
    pub column: Option<String>,
    pub message: String,
}

impl Problem {
    fn at(file: &str, line: u64, column: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            file: Some(file.to_owned()),
            line: Some(line),
            column: column.map(str::to_owned),
            message: message.into(),
        }
    }

    fn in_file(file: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: Some(file.to_owned()),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn general(message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            f.write_str(file)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(column) = &self.column {
            write!(f, "column `{column}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with the input, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_problems(.problems))]
pub struct ImportError {
    pub problems: Vec<Problem>,
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ImportError {
    fn from_problems(problems: Vec<Problem>) -> Result<(), ImportError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ImportError { problems })
        }
    }
}

/// A measurement that was left out of the catalog, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: String,
    pub line: u64,
    pub variant: String,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.variant, self.reason
        )
    }
}

/// Accuracy and load time per variant, from a metadata table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataTable {
    file: String,
    entries: Vec<MetadataEntry>,
}

#[derive(Debug, Clone, PartialEq)]
struct MetadataEntry {
    name: String,
    accuracy: Option<f64>,
    load_time_s: Option<f64>,
}

/// Accuracy per variant, from a pipeline → stage → variant tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccuracyTable {
    file: String,
    entries: Vec<AccuracyEntry>,
}

#[derive(Debug, Clone, PartialEq)]
struct AccuracyEntry {
    /// `pipeline.stage` the value was listed under.
    place: String,
    name: String,
    value: f64,
}

/// Settings of one import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Latency SLO in milliseconds: InfAdapter rows are taken at this SLA (or the largest
    /// measured SLA below it). IPA tables carry no SLA and ignore it.
    pub slo_ms: f64,
    pub metadata: Option<MetadataTable>,
    pub accuracies: Option<AccuracyTable>,
    /// Extra comment lines for the catalog header.
    pub notes: Vec<String>,
}

impl ImportOptions {
    /// Options with the given SLO and nothing else.
    pub fn new(slo_ms: f64) -> Self {
        ImportOptions {
            slo_ms,
            metadata: None,
            accuracies: None,
            notes: Vec::new(),
        }
    }
}

/// The result of an import: the catalog plus what the user should be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub catalog: Catalog,
    pub format: Format,
    /// Comment lines for the top of the catalog file (without `# `).
    pub header: Vec<String>,
    /// Measurements left out for lack of usable values.
    pub skipped: Vec<Skipped>,
    /// Rows not used because a more loaded run of the same point was kept (IPA).
    pub superseded: usize,
    /// Things that did not stop the import but may make the catalog less useful.
    pub warnings: Vec<String>,
}

impl Imported {
    /// The catalog file text: the header as comments, then the catalog.
    pub fn render(&self) -> String {
        render_catalog(&self.header, &self.catalog)
    }
}

/// Tells the layout of a table from its header line.
pub fn detect_format(input: InputText<'_>) -> Result<Format, ImportError> {
    let headers = match header_row(input) {
        Ok(headers) => headers,
        Err(problem) => {
            return Err(ImportError {
                problems: vec![problem],
            });
        }
    };
    let has = |name: &str| headers.iter().any(|h| h == name);
    if has("ARCH") && has("SLA") && has("capacity") {
        Ok(Format::InfAdapter)
    } else if has("model_variant") && has("max_batch_size") && has("cpu_request") {
        Ok(Format::Ipa)
    } else {
        Err(ImportError {
            problems: vec![Problem::at(
                input.name,
                1,
                None,
                "cannot tell the table format: expected InfAdapter columns (ARCH, CPU, SLA, capacity) \
                 or IPA columns (model_variant, max_batch_size, cpu_request)",
            )],
        })
    }
}

/// Imports tables of one format into one catalog.
pub fn import(
    format: Format,
    inputs: &[InputText<'_>],
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    match format {
        Format::InfAdapter => import_infadapter(inputs, options),
        Format::Ipa => import_ipa(inputs, options),
    }
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

/// Writes a catalog in the format `Catalog::from_toml_str` reads, one line per point, with
/// `header` as `# ` comment lines on top.
pub fn render_catalog(header: &[String], catalog: &Catalog) -> String {
    let mut out = String::new();
    for entry in header {
        if entry.is_empty() {
            out.push_str("#\n");
        }
        for line in entry.lines() {
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                out.push_str(&format!("# {line}\n"));
            }
        }
    }
    if !header.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("schema = {}\n", catalog.schema));
    for variant in &catalog.variants {
        out.push_str("\n[[variant]]\n");
        out.push_str(&format!("name = {}\n", toml_string(&variant.name)));
        out.push_str(&format!("accuracy = {}\n", toml_float(variant.accuracy)));
        out.push_str(&format!(
            "load_time_s = {}\n",
            toml_float(variant.load_time_s)
        ));
        match variant.gpu_mem_mb {
            Some(0.0) => {}
            Some(mb) => out.push_str(&format!("gpu_mem_mb = {}\n", toml_float(mb))),
            None => out.push_str(&format!(
                "gpu_mem_mb = {}\n",
                toml_string(infadapt_model::catalog::UNMEASURED)
            )),
        }
        if !variant.source.is_empty() {
            out.push_str(&format!("source = {}\n", toml_string(&variant.source)));
        }
        out.push_str("points = [\n");
        for p in &variant.points {
            out.push_str(&format!("  {{ batch = {}, cores = {}", p.batch, p.cores));
            for (key, value) in [
                ("p99_ms", p.p99_ms),
                ("mean_ms", p.mean_ms),
                ("throughput_rps", p.throughput_rps),
            ] {
                if let Some(value) = value {
                    out.push_str(&format!(", {key} = {}", toml_float(value)));
                }
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}

/// One line describing a variant: points, batch and core ranges, fit error.
pub fn summary_line(variant: &CatalogVariant) -> String {
    let built = match variant.to_variant() {
        Ok(built) => built,
        Err(e) => return format!("{}: invalid ({e})", variant.name),
    };
    let range = |f: fn(&ProfilePoint) -> u32| {
        let lo = variant.points.iter().map(f).min().unwrap_or(0);
        let hi = variant.points.iter().map(f).max().unwrap_or(0);
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    let (fit, which) = match built.profile.p99_fit() {
        Some(fit) => (fit, "p99"),
        None => (built.profile.mean_fit(), "mean"),
    };
    format!(
        "{}: {} point{}, batch {}, cores {}, {which} fit rmse {:.2} ms",
        variant.name,
        variant.points.len(),
        if variant.points.len() == 1 { "" } else { "s" },
        range(|p| p.batch),
        range(|p| p.cores),
        fit.rmse_ms
    )
}

// ---------------------------------------------------------------------------------------
// InfAdapter capacity tables
// ---------------------------------------------------------------------------------------

/// One usable row of an InfAdapter capacity table.
#[derive(Debug, Clone)]
struct CapacityRow {
    input: usize,
    line: u64,
    variant: String,
    batch: u32,
    cores: u32,
    sla_ms: f64,
    p99_ms: Option<f64>,
    capacity_rps: Option<f64>,
}

/// Converts InfAdapter capacity tables.
///
/// Throughput is the `capacity` column, not `saturation_tp`. `capacity` is the largest
/// Poisson rate one replica served with p99 ≤ SLA: the rate it can sustain *at this SLO*,
/// which is exactly what the planner's `ceil(load / throughput)` needs. `saturation_tp` is
/// the rate under overload, where queues grow without bound and the SLO is missed; planning
/// on it would meet the rate while breaking the latency objective (it is even below
/// `capacity` in some rows, e.g. ResNet-18 on 5 cores, 122 vs 120, since the two come from
/// separate runs). The planner's utilisation cap of 0.8 then plays the role of InfAdapter's
/// `capacity × 0.8`. `p99_ms` is the p99 measured at that capacity, queueing included, so
/// it is an upper bound on the latency at lower loads; no mean latency is measured.
fn import_infadapter(
    inputs: &[InputText<'_>],
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut problems = Vec::new();
    let mut rows: Vec<CapacityRow> = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        read_capacity_rows(index, *input, &mut rows, &mut problems);
    }
    let resolver = Resolver::new(options);
    let mut drafts = Drafts::default();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut inexact_sla: BTreeSet<String> = BTreeSet::new();

    // Group by (variant, batch, cores), in order of first appearance.
    let mut groups: Vec<((String, u32, u32), Vec<usize>)> = Vec::new();
    let mut group_index: BTreeMap<(String, u32, u32), usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let key = (row.variant.clone(), row.batch, row.cores);
        let slot = *group_index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(i);
    }
    for ((variant, batch, cores), members) in &groups {
        let first = &rows[members[0]];
        let Some(resolved) = resolver.resolve(
            variant,
            inputs[first.input].name,
            first.line,
            "ARCH",
            &mut problems,
        ) else {
            continue;
        };
        let draft = drafts.entry(&resolved);
        draft.inputs.insert(first.input);
        let best_sla = members
            .iter()
            .map(|&i| rows[i].sla_ms)
            .filter(|sla| *sla <= options.slo_ms + SLA_TOLERANCE_MS)
            .fold(None, |best: Option<f64>, sla| {
                Some(best.map_or(sla, |b| b.max(sla)))
            });
        let Some(best_sla) = best_sla else {
            let measured: BTreeSet<String> = members
                .iter()
                .map(|&i| fmt_number(rows[i].sla_ms))
                .collect();
            skipped.push(Skipped {
                file: inputs[first.input].name.to_owned(),
                line: first.line,
                variant: resolved.name.clone(),
                reason: format!(
                    "batch {batch}, cores {cores}: no row at an SLA of {} ms or less (measured: {})",
                    fmt_number(options.slo_ms),
                    measured.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        };
        let at_sla: Vec<&CapacityRow> = members
            .iter()
            .map(|&i| &rows[i])
            .filter(|r| (r.sla_ms - best_sla).abs() <= SLA_TOLERANCE_MS)
            .collect();
        if let [chosen, again, ..] = at_sla.as_slice() {
            problems.push(Problem::at(
                inputs[again.input].name,
                again.line,
                Some("SLA"),
                format!(
                    "{variant} batch {batch}, cores {cores} at SLA {} ms is measured twice (first at {}:{})",
                    fmt_number(best_sla),
                    inputs[chosen.input].name,
                    chosen.line
                ),
            ));
            continue;
        }
        let chosen = at_sla[0];
        if (best_sla - options.slo_ms).abs() > SLA_TOLERANCE_MS {
            inexact_sla.insert(fmt_number(best_sla));
        }
        let skip = |reason: &str| Skipped {
            file: inputs[chosen.input].name.to_owned(),
            line: chosen.line,
            variant: resolved.name.clone(),
            reason: format!("batch {batch}, cores {cores}: {reason}"),
        };
        match (chosen.p99_ms, chosen.capacity_rps) {
            (None, _) => skipped.push(skip("no p99_latency")),
            (_, None) => skipped.push(skip("no capacity")),
            (_, Some(capacity)) if capacity <= 0.0 => skipped.push(skip("capacity 0")),
            (Some(p99), Some(capacity)) => draft.points.push(ProfilePoint {
                batch: *batch,
                cores: *cores,
                p99_ms: Some(p99),
                mean_ms: None,
                throughput_rps: Some(capacity),
            }),
        }
    }
    if !inexact_sla.is_empty() {
        warnings.push(format!(
            "no rows at SLA {} ms for some points; used the largest measured SLA below it ({} ms), \
             whose capacity also holds at the looser SLO",
            fmt_number(options.slo_ms),
            inexact_sla.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    ImportError::from_problems(problems)?;
    let detail = format!("SLA {} ms", fmt_number(options.slo_ms));
    let header_format = format!(
        "infadapter (throughput = capacity at p99 <= SLA {} ms)",
        fmt_number(options.slo_ms)
    );
    finish(
        Format::InfAdapter,
        inputs,
        options,
        drafts,
        &detail,
        &header_format,
        skipped,
        0,
        warnings,
    )
}

fn read_capacity_rows_unsorted(
    index: usize,
    input: InputText<'_>,
    rows: &mut Vec<CapacityRow>,
    problems: &mut Vec<Problem>,
) {
    let Some(table) = read_table(input, problems) else {
        return;
    };
    let Some(columns) = table.require(
        &["CPU", "ARCH", "BATCH", "SLA", "p99_latency", "capacity"],
        problems,
    ) else {
        return;
    };
    let [cpu, arch, batch, sla, p99, capacity] = columns[..] else {
        return;
    };
    let replica = table.find("REPLICA");
    for row in &table.rows {
        let before = problems.len();
        let cores = take(row.count(cpu), problems);
        let variant = take(row.text(arch), problems).map(variant_name_for_arch);
        let batch_size = take(row.count(batch), problems);
        let sla_ms = take(row.positive(sla), problems);
        let p99_ms = take(row.positive_or_missing(p99), problems);
        let capacity_rps = take(row.non_negative(capacity), problems);
        let replicas = replica.and_then(|c| take(row.count(c), problems));
        if problems.len() > before {
            continue;
        }
        let (
            Some(cores),
            Some(variant),
            Some(batch),
            Some(sla_ms),
            Some(p99_ms),
            Some(capacity_rps),
        ) = (cores, variant, batch_size, sla_ms, p99_ms, capacity_rps)
        else {
            continue;
        };
        if replicas.is_some_and(|r| r != 1) {
            problems.push(row.problem(
                replica.unwrap_or_default(),
                "only single-replica measurements are supported (capacity is per replica)",
            ));
            continue;
        }
        rows.push(CapacityRow {
            input: index,
            line: row.line,
            variant,
            batch,
            cores,
            sla_ms,
            p99_ms,
            capacity_rps,
        });
    }
}

fn read_capacity_rows(
    index: usize,
    input: InputText<'_>,
    rows: &mut Vec<CapacityRow>,
    problems: &mut Vec<Problem>,
) {
    let start = problems.len();
    read_capacity_rows_unsorted(index, input, rows, problems);
    sort_by_line(&mut problems[start..]);
}

/// Orders one file's problems by line (unreadable rows are found before the others).
fn sort_by_line(problems: &mut [Problem]) {
    problems.sort_by_key(|p| p.line);
}

/// `18` → `resnet18`; any other text is kept as the name.
fn variant_name_for_arch(arch: &str) -> String {
    if !arch.is_empty() && arch.bytes().all(|b| b.is_ascii_digit()) {
        format!("resnet{arch}")
    } else {
        arch.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// IPA profiler tables
// ---------------------------------------------------------------------------------------

/// Which column a table's throughput comes from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThroughputColumn {
    /// `expected_max_throughput`: batch size over batch latency, the capacity one replica
    /// reaches with full batches.
    ExpectedMax(usize),
    /// `expected_throughput`: the same figure under its other name.
    Expected(usize),
    /// `throughput_max`: the largest rate observed; a capacity only when the server was
    /// saturated (below [`SATURATED_SHARE`] of the offered load), else just the offered load.
    ObservedMax(usize),
}

impl ThroughputColumn {
    fn index(self) -> usize {
        match self {
            ThroughputColumn::ExpectedMax(c)
            | ThroughputColumn::Expected(c)
            | ThroughputColumn::ObservedMax(c) => c,
        }
    }
}

#[derive(Debug, Clone)]
struct IpaRow {
    input: usize,
    line: u64,
    variant: String,
    batch: u32,
    cores: u32,
    load: f64,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    throughput_rps: Option<f64>,
    /// `throughput_max` was only the offered load, so `throughput_rps` was left empty.
    unsaturated: bool,
}

/// Converts IPA profiler tables.
///
/// Per (variant, batch, cores) the run at the highest offered load that has values is kept:
/// it is the most loaded measurement, so its latencies include the most queueing and its
/// throughput is the least optimistic; lower-load runs mostly measure the offered load.
/// Latencies are converted from seconds to milliseconds. Throughput comes from
/// `expected_max_throughput`, else `expected_throughput`, else `throughput_max` where the
/// server was saturated; `throughput_avg` (a run average that includes ramp-up) is never used.
fn import_ipa(inputs: &[InputText<'_>], options: &ImportOptions) -> Result<Imported, ImportError> {
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut rows: Vec<IpaRow> = Vec::new();
    let resolver = Resolver::new(options);
    let mut resolved_names: BTreeMap<String, Option<Resolved>> = BTreeMap::new();
    for (index, input) in inputs.iter().enumerate() {
        let file_rows = read_ipa_rows(index, *input, &mut skipped, &mut problems);
        for mut row in file_rows {
            let resolved = resolved_names
                .entry(row.variant.clone())
                .or_insert_with(|| {
                    resolver.resolve(
                        &row.variant,
                        input.name,
                        row.line,
                        "model_variant",
                        &mut problems,
                    )
                });
            if let Some(resolved) = resolved {
                row.variant = resolved.name.clone();
                rows.push(row);
            }
        }
    }
    ImportError::from_problems(problems)?;
    let mut resolved_by_name: BTreeMap<String, Resolved> = BTreeMap::new();
    for resolved in resolved_names.into_values().flatten() {
        resolved_by_name
            .entry(resolved.name.clone())
            .or_insert(resolved);
    }

    // Keep, per point, the row at the highest load; ties go to the later file and line.
    let mut chosen: Vec<usize> = Vec::new();
    let mut slot_of: BTreeMap<(String, u32, u32), usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let key = (row.variant.clone(), row.batch, row.cores);
        match slot_of.get(&key) {
            None => {
                slot_of.insert(key, chosen.len());
                chosen.push(i);
            }
            Some(&slot) => {
                let kept = &rows[chosen[slot]];
                if row.load == kept.load {
                    warnings.push(format!(
                        "{} batch {}, cores {} is measured at load {} in both {}:{} and {}:{}; keeping the latter",
                        row.variant,
                        row.batch,
                        row.cores,
                        fmt_number(row.load),
                        inputs[kept.input].name,
                        kept.line,
                        inputs[row.input].name,
                        row.line
                    ));
                }
                if row.load >= kept.load {
                    chosen[slot] = i;
                }
            }
        }
    }
    let superseded = rows.len() - chosen.len();
    for (index, input) in inputs.iter().enumerate() {
        let lines: Vec<String> = chosen
            .iter()
            .map(|&i| &rows[i])
            .filter(|r| r.input == index && r.unsaturated)
            .map(|r| r.line.to_string())
            .collect();
        if !lines.is_empty() {
            warnings.push(format!(
                "{} lines {}: `throughput_max` is near the offered load (the server was not saturated), \
                 so it is not a capacity; throughput is left to the latency model",
                input.name,
                lines.join(", ")
            ));
        }
    }
    let mut drafts = Drafts::default();
    for &i in &chosen {
        let row = &rows[i];
        let Some(resolved) = resolved_by_name.get(&row.variant) else {
            continue;
        };
        let draft = drafts.entry(resolved);
        draft.inputs.insert(row.input);
        draft.points.push(ProfilePoint {
            batch: row.batch,
            cores: row.cores,
            p99_ms: row.p99_ms,
            mean_ms: row.mean_ms,
            throughput_rps: row.throughput_rps,
        });
    }
    finish(
        Format::Ipa,
        inputs,
        options,
        drafts,
        "most loaded run per point",
        "ipa (latencies converted from seconds to ms; per point the most loaded run)",
        skipped,
        superseded,
        warnings,
    )
}

fn read_ipa_rows_unsorted(
    index: usize,
    input: InputText<'_>,
    skipped: &mut Vec<Skipped>,
    problems: &mut Vec<Problem>,
) -> Vec<IpaRow> {
    let mut rows = Vec::new();
    let Some(table) = read_table(input, problems) else {
        return rows;
    };
    let Some(columns) = table.require(
        &["model_variant", "max_batch_size", "cpu_request", "load"],
        problems,
    ) else {
        return rows;
    };
    let [variant_column, batch_column, cores_column, load_column] = columns[..] else {
        return rows;
    };
    let p99_column = table.find("model_latencies_p99");
    let mean_column = table.find("model_latencies_avg");
    if p99_column.is_none() && mean_column.is_none() {
        problems.push(Problem::at(
            input.name,
            1,
            Some("model_latencies_p99"),
            "missing column: the table needs model_latencies_p99 or model_latencies_avg",
        ));
        return rows;
    }
    let throughput_column = table
        .find("expected_max_throughput")
        .map(ThroughputColumn::ExpectedMax)
        .or_else(|| {
            table
                .find("expected_throughput")
                .map(ThroughputColumn::Expected)
        })
        .or_else(|| {
            table
                .find("throughput_max")
                .map(ThroughputColumn::ObservedMax)
        });
    for row in &table.rows {
        let before = problems.len();
        let variant = take(row.text(variant_column), problems);
        let batch = take(row.count(batch_column), problems);
        let cores = take(row.count(cores_column), problems);
        let load = take(row.positive(load_column), problems);
        let p99 = p99_column.map(|c| take(row.positive_or_missing(c), problems));
        let mean = mean_column.map(|c| take(row.positive_or_missing(c), problems));
        let throughput = throughput_column.map(|c| take(row.non_negative(c.index()), problems));
        if problems.len() > before {
            continue;
        }
        let (Some(variant), Some(batch), Some(cores), Some(load)) = (variant, batch, cores, load)
        else {
            continue;
        };
        let skip = |column: usize| Skipped {
            file: input.name.to_owned(),
            line: row.line,
            variant: variant.to_owned(),
            reason: format!(
                "batch {batch}, cores {cores}, load {}: no value in `{}`",
                fmt_number(load),
                table.headers[column]
            ),
        };
        // Every value column the table has must have a value in a usable row.
        let mut missing = None;
        for (column, value) in [(p99_column, p99), (mean_column, mean)] {
            if let (Some(column), Some(Some(None))) = (column, value) {
                missing = missing.or(Some(column));
            }
        }
        if let (Some(column), Some(Some(None))) = (throughput_column, throughput) {
            missing = missing.or(Some(column.index()));
        }
        if let Some(column) = missing {
            skipped.push(skip(column));
            continue;
        }
        let seconds_to_ms =
            |v: Option<Option<Option<f64>>>| v.flatten().flatten().map(|s| round_micro(s * 1000.0));
        let mut throughput_rps = throughput.flatten().flatten();
        if throughput_rps.is_some_and(|t| t <= 0.0) {
            let column = throughput_column
                .map(ThroughputColumn::index)
                .unwrap_or_default();
            skipped.push(Skipped {
                reason: format!("{} is 0", table.headers[column]),
                ..skip(column)
            });
            continue;
        }
        let unsaturated = matches!(throughput_column, Some(ThroughputColumn::ObservedMax(_)))
            && throughput_rps.is_some_and(|observed| observed >= SATURATED_SHARE * load);
        if unsaturated {
            throughput_rps = None;
        }
        rows.push(IpaRow {
            input: index,
            line: row.line,
            variant: variant.to_owned(),
            batch,
            cores,
            load,
            p99_ms: seconds_to_ms(p99),
            mean_ms: seconds_to_ms(mean),
            throughput_rps,
            unsaturated,
        });
    }
    rows
}

fn read_ipa_rows(
    index: usize,
    input: InputText<'_>,
    skipped: &mut Vec<Skipped>,
    problems: &mut Vec<Problem>,
) -> Vec<IpaRow> {
    let start = problems.len();
    let rows = read_ipa_rows_unsorted(index, input, skipped, problems);
    sort_by_line(&mut problems[start..]);
    rows
}

// ---------------------------------------------------------------------------------------
// Names, accuracy and load time
// ---------------------------------------------------------------------------------------

/// A variant name resolved against the metadata and accuracy tables.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    name: String,
    /// Value and where it came from.
    accuracy: Option<(f64, String)>,
    load_time_s: Option<(f64, String)>,
    /// The table truncated the name and nothing resolved it.
    unresolved_truncation: bool,
}

struct Resolver<'o> {
    options: &'o ImportOptions,
}

impl<'o> Resolver<'o> {
    fn new(options: &'o ImportOptions) -> Self {
        Resolver { options }
    }

    fn known_names(&self) -> BTreeSet<&'o str> {
        let mut names = BTreeSet::new();
        if let Some(metadata) = &self.options.metadata {
            names.extend(metadata.entries.iter().map(|e| e.name.as_str()));
        }
        if let Some(accuracies) = &self.options.accuracies {
            names.extend(accuracies.entries.iter().map(|e| e.name.as_str()));
        }
        names
    }

    /// Resolves `raw` (which may end in `...`); problems are reported at `file:line`.
    fn resolve(
        &self,
        raw: &str,
        file: &str,
        line: u64,
        column: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Resolved> {
        let mut unresolved_truncation = false;
        let name = match truncated_prefix(raw) {
            None => raw.to_owned(),
            Some(prefix) => {
                let candidates: Vec<&str> = self
                    .known_names()
                    .into_iter()
                    .filter(|n| n.starts_with(prefix))
                    .collect();
                match candidates.as_slice() {
                    [only] => (*only).to_owned(),
                    [] => {
                        unresolved_truncation = true;
                        prefix.trim_end_matches(['-', '_', '.', ' ']).to_owned()
                    }
                    several => {
                        problems.push(Problem::at(
                            file,
                            line,
                            Some(column),
                            format!(
                                "variant `{raw}` is truncated and matches several known variants: {}",
                                several.join(", ")
                            ),
                        ));
                        return None;
                    }
                }
            }
        };
        let metadata = self.options.metadata.as_ref().and_then(|m| {
            let entry = m.entries.iter().find(|e| e.name == name)?;
            Some((entry, m.file.as_str()))
        });
        let mut accuracy = metadata.and_then(|(e, file)| Some((e.accuracy?, file.to_owned())));
        let load_time_s = metadata.and_then(|(e, file)| Some((e.load_time_s?, file.to_owned())));
        if accuracy.is_none()
            && let Some(table) = &self.options.accuracies
        {
            let listed: Vec<&AccuracyEntry> =
                table.entries.iter().filter(|e| e.name == name).collect();
            if let Some(first) = listed.first() {
                if let Some(other) = listed.iter().find(|e| e.value != first.value) {
                    problems.push(Problem::at(
                        file,
                        line,
                        Some(column),
                        format!(
                            "accuracy of variant `{name}` is ambiguous in {}: {} under {}, {} under {}",
                            table.file,
                            fmt_number(first.value),
                            first.place,
                            fmt_number(other.value),
                            other.place
                        ),
                    ));
                    return None;
                }
                let places: BTreeSet<&str> = listed.iter().map(|e| e.place.as_str()).collect();
                let places = places.into_iter().collect::<Vec<_>>().join(", ");
                accuracy = Some((first.value, format!("{} ({places})", table.file)));
            }
        }
        Some(Resolved {
            name,
            accuracy,
            load_time_s,
            unresolved_truncation,
        })
    }
}

/// `abc-de...` → `Some("abc-de")`; names without the ellipsis → `None`.
fn truncated_prefix(name: &str) -> Option<&str> {
    name.strip_suffix("...").or_else(|| name.strip_suffix('…'))
}

// ---------------------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Draft {
    resolved: Option<Resolved>,
    inputs: BTreeSet<usize>,
    points: Vec<ProfilePoint>,
}

/// Variants in order of first appearance.
#[derive(Debug, Default)]
struct Drafts {
    order: Vec<String>,
    by_name: BTreeMap<String, Draft>,
}

impl Drafts {
    fn entry(&mut self, resolved: &Resolved) -> &mut Draft {
        if !self.by_name.contains_key(&resolved.name) {
            self.order.push(resolved.name.clone());
        }
        let draft = self.by_name.entry(resolved.name.clone()).or_default();
        draft.resolved.get_or_insert_with(|| resolved.clone());
        draft
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    format: Format,
    inputs: &[InputText<'_>],
    options: &ImportOptions,
    mut drafts: Drafts,
    detail: &str,
    header_format: &str,
    skipped: Vec<Skipped>,
    superseded: usize,
    mut warnings: Vec<String>,
) -> Result<Imported, ImportError> {
    let mut problems = Vec::new();
    let mut variants = Vec::new();
    let mut unknown_accuracy = Vec::new();
    let mut unknown_load_time = Vec::new();
    for name in &drafts.order {
        let Some(draft) = drafts.by_name.remove(name) else {
            continue;
        };
        let Some(resolved) = draft.resolved else {
            continue;
        };
        if draft.points.is_empty() {
            warnings.push(format!(
                "variant `{name}` has no usable measurement and is left out"
            ));
            continue;
        }
        if resolved.unresolved_truncation {
            warnings.push(format!(
                "variant name `{name}` is truncated in the table and no metadata or accuracy entry completes it"
            ));
        }
        if resolved.accuracy.is_none() {
            unknown_accuracy.push(name.clone());
        }
        if resolved.load_time_s.is_none() {
            unknown_load_time.push(name.clone());
        }
        let files: Vec<String> = draft
            .inputs
            .iter()
            .map(|&i| inputs[i].file_name())
            .collect();
        let origin = |value: &Option<(f64, String)>| {
            value
                .as_ref()
                .map_or("unknown".to_owned(), |(_, from)| from.clone())
        };
        let (accuracy_from, load_time_from) =
            (origin(&resolved.accuracy), origin(&resolved.load_time_s));
        let source = if accuracy_from == load_time_from {
            format!(
                "{} ({detail}); accuracy and load time: {accuracy_from}",
                files.join(", ")
            )
        } else {
            format!(
                "{} ({detail}); accuracy: {accuracy_from}; load time: {load_time_from}",
                files.join(", ")
            )
        };
        let mut points = draft.points;
        points.sort_by_key(|p| (p.batch, p.cores));
        let variant = CatalogVariant {
            name: name.clone(),
            accuracy: resolved.accuracy.map_or(0.0, |(v, _)| v),
            load_time_s: resolved.load_time_s.map_or(0.0, |(v, _)| v),
            gpu_mem_mb: Some(0.0),
            source,
            points,
        };
        if let Err(e) = variant.to_variant() {
            problems.push(Problem::general(format!(
                "the imported variant is not valid: {e}"
            )));
            continue;
        }
        variants.push(variant);
    }
    if !unknown_accuracy.is_empty() {
        warnings.push(format!(
            "accuracy unknown for {}; set to 0 (pass --metadata or --accuracies)",
            unknown_accuracy.join(", ")
        ));
    }
    if !unknown_load_time.is_empty() {
        warnings.push(format!(
            "load time unknown for {}; set to 0 (pass --metadata)",
            unknown_load_time.join(", ")
        ));
    }
    if variants.is_empty() && problems.is_empty() {
        problems.push(Problem::general("no usable measurements in the input"));
    }
    ImportError::from_problems(problems)?;
    let mut header = vec![
        format!(
            "Profile catalog (schema {CATALOG_SCHEMA}) written by `infadaptd profiles import`."
        ),
        format!("Format: {header_format}."),
        format!(
            "Inputs: {}.",
            inputs
                .iter()
                .map(InputText::file_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    if let Some(metadata) = &options.metadata {
        header.push(format!("Accuracy and load time: {}.", metadata.file));
    }
    if let Some(accuracies) = &options.accuracies {
        header.push(format!("Accuracy: {}.", accuracies.file));
    }
    if !skipped.is_empty() {
        header.push(format!(
            "Skipped {} measurements without usable values.",
            skipped.len()
        ));
    }
    if !options.notes.is_empty() {
        header.push(String::new());
        header.extend(options.notes.iter().cloned());
    }
    Ok(Imported {
        catalog: Catalog {
            schema: CATALOG_SCHEMA,
            variants,
        },
        format,
        header,
        skipped,
        superseded,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------
// CSV reading
// ---------------------------------------------------------------------------------------

struct Table<'a> {
    input: InputText<'a>,
    headers: Rc<[String]>,
    rows: Vec<Row<'a>>,
}

/// One data row with what messages about it need: file, line and the header names.
struct Row<'a> {
    file: &'a str,
    line: u64,
    headers: Rc<[String]>,
    cells: csv::StringRecord,
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
}

fn header_row(input: InputText<'_>) -> Result<Vec<String>, Problem> {
    let mut reader = csv_reader(input.text);
    match reader.headers() {
        Ok(headers) if headers.iter().any(|h| !h.is_empty()) => {
            Ok(headers.iter().map(str::to_owned).collect())
        }
        Ok(_) => Err(Problem::at(input.name, 1, None, "the table is empty")),
        Err(e) => Err(csv_problem(input, &e)),
    }
}

/// Where the record at `byte` really starts. After a CRLF line end the CSV reader reports
/// the record as starting at the `\n` (and counts one line too few), so line ends are
/// skipped here and lines are counted from the text itself.
fn record_start(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(byte).map_or(bytes.len(), |b| b.min(bytes.len()));
    while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
        start += 1;
    }
    start
}

/// 1-based line of the record the CSV reader places at `byte`.
fn line_at(text: &str, byte: u64) -> u64 {
    let start = record_start(text, byte);
    1 + text.as_bytes()[..start]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// [`line_at`] for increasing offsets, in linear time over the whole file: `seen` is the
/// (byte, line) reached so far.
fn advance_line(text: &str, seen: &mut (usize, u64), byte: u64) -> u64 {
    let start = record_start(text, byte);
    if start < seen.0 {
        return line_at(text, byte);
    }
    seen.1 += text.as_bytes()[seen.0..start]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    seen.0 = start;
    seen.1
}

fn csv_problem(input: InputText<'_>, error: &csv::Error) -> Problem {
    let file = input.name;
    let line = error
        .position()
        .map_or(1, |p| line_at(input.text, p.byte()));
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("the row has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => error.to_string(),
    };
    Problem::at(file, line, None, message)
}

/// Reads the whole table; `None` when even the header is unreadable. Rows that cannot be
/// read are reported and left out.
fn read_table<'a>(input: InputText<'a>, problems: &mut Vec<Problem>) -> Option<Table<'a>> {
    let headers: Rc<[String]> = match header_row(input) {
        Ok(headers) => headers.into(),
        Err(problem) => {
            problems.push(problem);
            return None;
        }
    };
    let mut rows = Vec::new();
    let mut newlines_seen = (0usize, 1u64);
    for record in csv_reader(input.text).records() {
        match record {
            Ok(cells) => rows.push(Row {
                file: input.name,
                line: cells.position().map_or(0, |p| {
                    advance_line(input.text, &mut newlines_seen, p.byte())
                }),
                headers: Rc::clone(&headers),
                cells,
            }),
            Err(e) => problems.push(csv_problem(input, &e)),
        }
    }
    Some(Table {
        input,
        headers,
        rows,
    })
}

impl Table<'_> {
    fn find(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    fn find_any(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| self.find(n))
    }

    /// Positions of `names`, or `None` after reporting every missing one.
    fn require(&self, names: &[&str], problems: &mut Vec<Problem>) -> Option<Vec<usize>> {
        let found: Vec<Option<usize>> = names.iter().map(|n| self.find(n)).collect();
        for (name, position) in names.iter().zip(&found) {
            if position.is_none() {
                problems.push(Problem::at(
                    self.input.name,
                    1,
                    Some(name),
                    "missing column",
                ));
            }
        }
        found.into_iter().collect()
    }
}

impl Row<'_> {
    fn problem(&self, column: usize, message: impl Into<String>) -> Problem {
        let name = self.headers.get(column).map_or("?", String::as_str);
        Problem::at(self.file, self.line, Some(name), message)
    }

    fn cell(&self, column: usize) -> &str {
        self.cells.get(column).unwrap_or("")
    }

    /// Non-empty text.
    fn text(&self, column: usize) -> Result<&str, Problem> {
        match self.cell(column) {
            "" => Err(self.problem(column, "missing value")),
            text => Ok(text),
        }
    }

    /// A number, `None` when empty or NaN.
    fn number(&self, column: usize) -> Result<Option<f64>, Problem> {
        parse_number(self.cell(column)).map_err(|m| self.problem(column, m))
    }

    /// A number `>= 0`, `None` when empty or NaN.
    fn non_negative(&self, column: usize) -> Result<Option<f64>, Problem> {
        match self.number(column)? {
            Some(v) if v < 0.0 => Err(self.problem(
                column,
                format!("`{}` must not be negative", self.cell(column)),
            )),
            v => Ok(v),
        }
    }

    /// A number `> 0`, `None` when empty or NaN.
    fn positive_or_missing(&self, column: usize) -> Result<Option<f64>, Problem> {
        match self.number(column)? {
            Some(v) if v <= 0.0 => {
                Err(self.problem(column, format!("`{}` must be positive", self.cell(column))))
            }
            v => Ok(v),
        }
    }

    /// A required number `> 0`.
    fn positive(&self, column: usize) -> Result<f64, Problem> {
        self.positive_or_missing(column)?
            .ok_or_else(|| self.problem(column, "missing value"))
    }

    /// A required whole number `>= 1` (`4` and `4.0` both read as 4).
    fn count(&self, column: usize) -> Result<u32, Problem> {
        let value = self.positive(column)?;
        if value.fract() != 0.0 || value > f64::from(u32::MAX) {
            return Err(self.problem(
                column,
                format!("`{}` is not a whole number", self.cell(column)),
            ));
        }
        Ok(value as u32)
    }
}

fn take<T>(result: Result<T, Problem>, problems: &mut Vec<Problem>) -> Option<T> {
    result.map_err(|p| problems.push(p)).ok()
}

/// A number cell: `None` when empty or NaN, an error when not a finite number.
fn parse_number(cell: &str) -> Result<Option<f64>, String> {
    if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(format!("`{cell}` is not a number")),
    }
}

fn round_micro(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// Numbers as people write them: `750`, `0.5`.
fn fmt_number(value: f64) -> String {
    format!("{value}")
}

fn toml_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        }
    } else {
        format!("{value:?}")
    }
}

fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY_HEADER: &str =
        "REPLICA,HARDWARE,CPU,MEM,ARCH,BATCH,SLA,p99_latency,capacity,saturation_tp";
    const IPA_HEADER: &str = ",model_variant,max_batch_size,cpu_request,load,model_latencies_p99,model_latencies_avg,expected_max_throughput";

    fn table(header: &str, rows: &[&str]) -> String {
        let mut text = format!("{header}\n");
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        text
    }

    fn import_one(
        format: Format,
        text: &str,
        options: &ImportOptions,
    ) -> Result<Imported, ImportError> {
        import(format, &[InputText::new("dir/t.csv", text)], options)
    }

    fn only_point(imported: &Imported, variant: &str, batch: u32, cores: u32) -> ProfilePoint {
        let v = imported
            .catalog
            .get(variant)
            .unwrap_or_else(|| panic!("no {variant}"));
        v.points
            .iter()
            .find(|p| p.batch == batch && p.cores == cores)
            .cloned()
            .expect("point")
    }

    #[test]
    fn detects_both_formats_and_rejects_others() {
        assert_eq!(
            detect_format(InputText::new("a", &table(CAPACITY_HEADER, &[]))),
            Ok(Format::InfAdapter)
        );
        assert_eq!(
            detect_format(InputText::new("b", &table(IPA_HEADER, &[]))),
            Ok(Format::Ipa)
        );
        let err = detect_format(InputText::new("c.csv", "x,y\n1,2\n")).expect_err("unknown");
        assert!(err.to_string().starts_with("c.csv:1: cannot tell"), "{err}");
    }

    #[test]
    fn infadapter_takes_the_row_at_the_slo_and_skips_unusable_points() {
        let text = table(
            CAPACITY_HEADER,
            &[
                "1,cpu,1,1G,18,1,500,350.5,14,21",
                "1,cpu,1,1G,18,1,750,402.25,18,21",
                "1,cpu,2,1G,18,1,750,640.75,41,47",
                "1,cpu,3,1G,18,1,750,,40,49",
                "1,cpu,4,1G,18,1,750,380.0,0,49",
                "1,cpu,1,1G,152,1,750,701.0,1,5",
            ],
        );
        let imported =
            import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0)).expect("import");
        let names: Vec<&str> = imported
            .catalog
            .variants
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["resnet18", "resnet152"]);
        let p = only_point(&imported, "resnet18", 1, 1);
        assert_eq!(
            (p.p99_ms, p.mean_ms, p.throughput_rps),
            (Some(402.25), None, Some(18.0))
        );
        assert_eq!(
            imported.catalog.get("resnet18").map(|v| v.points.len()),
            Some(2)
        );
        let reasons: Vec<(u64, &str)> = imported
            .skipped
            .iter()
            .map(|s| (s.line, s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (5, "batch 1, cores 3: no p99_latency"),
                (6, "batch 1, cores 4: capacity 0")
            ]
        );
        assert!(
            imported
                .warnings
                .iter()
                .any(|w| w.contains("accuracy unknown")),
            "{:?}",
            imported.warnings
        );
        assert!(
            imported.catalog.variants[0]
                .source
                .contains("t.csv (SLA 750 ms)")
        );
    }

    #[test]
    fn infadapter_falls_back_to_the_largest_sla_below_the_slo() {
        let text = table(
            CAPACITY_HEADER,
            &[
                "1,cpu,1,1G,18,1,500,350.5,14,21",
                "1,cpu,1,1G,18,1,1000,402.25,18,21",
            ],
        );
        let imported =
            import_one(Format::InfAdapter, &text, &ImportOptions::new(800.0)).expect("import");
        assert_eq!(
            only_point(&imported, "resnet18", 1, 1).throughput_rps,
            Some(14.0)
        );
        assert!(
            imported
                .warnings
                .iter()
                .any(|w| w.contains("largest measured SLA below it (500 ms)"))
        );
        let none = import_one(Format::InfAdapter, &text, &ImportOptions::new(400.0))
            .expect_err("nothing usable");
        assert!(
            none.to_string().contains("no usable measurements"),
            "{none}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_column() {
        let text = table(
            CAPACITY_HEADER,
            &[
                "1,cpu,1,1G,18,1,750,402.25,18,21",
                "1,cpu,two,1G,18,1,750,402.25,abc,21",
                "1,cpu,1,1G,34,1,750,-3,19",
            ],
        );
        let err = import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0))
            .expect_err("malformed");
        let lines: Vec<String> = err.problems.iter().map(Problem::to_string).collect();
        assert_eq!(
            lines,
            [
                "dir/t.csv:3: column `CPU`: `two` is not a number",
                "dir/t.csv:3: column `capacity`: `abc` is not a number",
                "dir/t.csv:4: the row has 9 fields, the header has 10",
            ]
        );
        let missing = import_one(
            Format::InfAdapter,
            "CPU,ARCH,SLA\n1,18,750\n",
            &ImportOptions::new(750.0),
        )
        .expect_err("missing columns");
        let columns: Vec<Option<&str>> = missing
            .problems
            .iter()
            .map(|p| p.column.as_deref())
            .collect();
        assert_eq!(
            columns,
            [Some("BATCH"), Some("p99_latency"), Some("capacity")]
        );
    }

    #[test]
    fn line_numbers_hold_with_crlf_line_ends() {
        let text = format!(
            "{CAPACITY_HEADER}\r\n1,cpu,1,1G,18,1,750,402.25,18,21\r\n1,cpu,2,1G,18,1,750,x,18,21\r\n"
        );
        let err = import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0))
            .expect_err("malformed");
        assert_eq!(err.problems[0].line, Some(3), "{err}");
    }

    #[test]
    fn ipa_keeps_the_most_loaded_run_and_converts_seconds() {
        let text = table(
            IPA_HEADER,
            &[
                "0,small,1,1,1,0.050,0.040,25.0",
                "1,small,1,1,20,0.090,0.060,16.5",
                "2,small,1,1,40,NaN,0.070,14.0",
                "3,small,4,2,10,0.120,0.100,40.0",
            ],
        );
        let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
        let p = only_point(&imported, "small", 1, 1);
        assert_eq!(
            (p.p99_ms, p.mean_ms, p.throughput_rps),
            (Some(90.0), Some(60.0), Some(16.5))
        );
        assert_eq!(imported.superseded, 1);
        assert_eq!(imported.skipped.len(), 1);
        assert!(
            imported.skipped[0].reason.contains("model_latencies_p99"),
            "{}",
            imported.skipped[0]
        );
        assert_eq!(imported.skipped[0].line, 4);
    }

    #[test]
    fn ipa_uses_observed_throughput_only_when_saturated() {
        let header =
            ",model_variant,max_batch_size,cpu_request,load,model_latencies_avg,throughput_max";
        let text = table(header, &["0,m,1,1,20,0.100,19.5", "1,m,1,2,20,0.060,12.0"]);
        let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
        assert_eq!(
            only_point(&imported, "m", 1, 1).throughput_rps,
            None,
            "offered load, not capacity"
        );
        assert_eq!(only_point(&imported, "m", 1, 2).throughput_rps, Some(12.0));
        assert!(
            imported.warnings.iter().any(|w| w.contains("lines 2")),
            "{:?}",
            imported.warnings
        );
    }

    const ACCURACIES: &str = "
video:
  detect:
    det-small: 41.2
    det-large: 63.4
  classify:
    cls-18: 69.75
text:
  lang:
    lang-id-base-finetuned-identification: 97.25
    unknown-yet: null
other:
  classify:
    cls-18: 69.75
";

    #[test]
    fn truncated_names_resolve_by_unique_prefix() {
        let accuracies = parse_accuracies(InputText::new("acc.yaml", ACCURACIES)).expect("yaml");
        let options = ImportOptions {
            accuracies: Some(accuracies),
            ..ImportOptions::new(750.0)
        };
        let text = table(
            IPA_HEADER,
            &[
                "0,lang-id-base-...,1,1,20,0.01,0.008,100.0",
                "1,cls-18,1,1,20,0.02,0.01,90.0",
            ],
        );
        let imported = import_one(Format::Ipa, &text, &options).expect("import");
        let lang = imported
            .catalog
            .get("lang-id-base-finetuned-identification")
            .expect("full name");
        assert_eq!(lang.accuracy, 97.25);
        assert!(
            lang.source.contains("acc.yaml (text.lang)"),
            "{}",
            lang.source
        );
        let cls = imported.catalog.get("cls-18").expect("cls-18");
        assert!(
            cls.source.contains("(other.classify, video.classify)"),
            "{}",
            cls.source
        );

        let ambiguous = table(IPA_HEADER, &["0,det-...,1,1,20,0.01,0.008,100.0"]);
        let err = import_one(Format::Ipa, &ambiguous, &options).expect_err("ambiguous");
        let message = err.to_string();
        assert!(
            message.contains("dir/t.csv:2: column `model_variant`: variant `det-...`"),
            "{message}"
        );
        assert!(message.contains("det-large, det-small"), "{message}");
    }

    #[test]
    fn unresolved_truncation_keeps_the_prefix_and_warns() {
        let text = table(IPA_HEADER, &["0,some-model-...,1,1,20,0.01,0.008,100.0"]);
        let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
        assert_eq!(imported.catalog.variants[0].name, "some-model");
        assert!(imported.warnings.iter().any(|w| w.contains("truncated")));
    }

    #[test]
    fn conflicting_accuracies_are_an_error() {
        let yaml = "a:\n  s:\n    v: 1.0\nb:\n  s:\n    v: 2.0\n";
        let accuracies = parse_accuracies(InputText::new("acc.yaml", yaml)).expect("yaml");
        let options = ImportOptions {
            accuracies: Some(accuracies),
            ..ImportOptions::new(750.0)
        };
        let text = table(IPA_HEADER, &["0,v,1,1,20,0.01,0.008,100.0"]);
        let err = import_one(Format::Ipa, &text, &options).expect_err("ambiguous accuracy");
        assert!(
            err.to_string()
                .contains("accuracy of variant `v` is ambiguous"),
            "{err}"
        );
        let bad = parse_accuracies(InputText::new("bad.yaml", "a:\n  s:\n    v: high\n"))
            .expect_err("not a number");
        assert!(
            bad.to_string()
                .contains("`a.s.v`: accuracy must be a number, got the text `high`"),
            "{bad}"
        );
        let broken =
            parse_accuracies(InputText::new("broken.yaml", "a:\n  - [\n")).expect_err("syntax");
        assert!(broken.to_string().starts_with("broken.yaml:"), "{broken}");
    }

    #[test]
    fn metadata_takes_precedence_and_supplies_load_time() {
        let metadata = parse_metadata(InputText::new(
            "meta.csv",
            "model,resnet_depth,top1_accuracy,load_time_s\nresnet18,18,0.69758,6.44\n",
        ))
        .expect("metadata");
        let accuracies = parse_accuracies(InputText::new(
            "acc.yaml",
            "p:\n  s:\n    resnet18: 69.75\n",
        ))
        .expect("yaml");
        let options = ImportOptions {
            metadata: Some(metadata),
            accuracies: Some(accuracies),
            ..ImportOptions::new(750.0)
        };
        let text = table(CAPACITY_HEADER, &["1,cpu,1,1G,18,1,750,402.25,18,21"]);
        let imported = import_one(Format::InfAdapter, &text, &options).expect("import");
        let v = &imported.catalog.variants[0];
        assert_eq!((v.accuracy, v.load_time_s), (0.69758, 6.44));
        assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
        let dup = parse_metadata(InputText::new("m.csv", "model,load_time_s\na,1\na,2\n"))
            .expect_err("duplicate");
        assert_eq!(dup.problems[0].line, Some(3));
    }

    #[test]
    fn rendered_catalog_round_trips_with_its_header() {
        let text = table(
            IPA_HEADER,
            &[
                "0,a \"quoted\" name,1,1,20,0.0123456789,0.01,81.0",
                "1,b,2,4,20,1e-4,5e-5,2e4",
            ],
        );
        let options = ImportOptions {
            notes: vec!["first note".into(), "two\nlines".into()],
            ..ImportOptions::new(1.0)
        };
        let imported = import_one(Format::Ipa, &text, &options).expect("import");
        let rendered = imported.render();
        assert!(
            rendered.starts_with("# Profile catalog (schema 1)"),
            "{rendered}"
        );
        assert!(
            rendered.contains("#\n# first note\n# two\n# lines\n"),
            "{rendered}"
        );
        let parsed = Catalog::from_toml_str(&rendered).expect("parses");
        assert_eq!(parsed, imported.catalog);
        assert_eq!(
            only_point(&imported, "a \"quoted\" name", 1, 1).p99_ms,
            Some(12.345679)
        );
        assert!(
            summary_line(&imported.catalog.variants[1])
                .starts_with("b: 1 point, batch 2, cores 4, p99 fit")
        );
    }
}
