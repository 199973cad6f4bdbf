//! IPA profiler tables: one variant per `model_variant`, one point per (`max_batch_size`,
//! `cpu_request`), taken from the most loaded run that has values.

use super::*;
use std::collections::BTreeMap;

use infadapt_model::ProfilePoint;

/// Which column a table's throughput comes from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ThroughputColumn {
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
    pub(super) fn index(self) -> usize {
        match self {
            ThroughputColumn::ExpectedMax(c)
            | ThroughputColumn::Expected(c)
            | ThroughputColumn::ObservedMax(c) => c,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct IpaRow {
    pub(super) input: usize,
    pub(super) line: u64,
    pub(super) variant: String,
    pub(super) batch: u32,
    pub(super) cores: u32,
    pub(super) load: f64,
    p99_ms: Option<f64>,
    pub(super) mean_ms: Option<f64>,
    pub(super) throughput_rps: Option<f64>,
    /// `throughput_max` was only the offered load, so `throughput_rps` was left empty.
    pub(super) unsaturated: bool,
}

/// Converts IPA profiler tables.
///
/// Per (variant, batch, cores) the run at the highest offered load that has values is kept:
/// it is the most loaded measurement, so its latencies include the most queueing and its
/// throughput is the least optimistic; lower-load runs mostly measure the offered load.
/// Latencies are converted from seconds to milliseconds. Throughput comes from
/// `expected_max_throughput`, else `expected_throughput`, else `throughput_max` where the
/// server was saturated; `throughput_avg` (a run average that includes ramp-up) is never used.
pub(super) fn import_ipa(
    inputs: &[InputText<'_>],
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
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

pub(super) fn read_ipa_rows_unsorted(
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

pub(super) fn read_ipa_rows(
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
