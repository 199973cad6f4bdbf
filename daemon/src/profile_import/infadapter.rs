//! InfAdapter capacity tables: one variant per `ARCH`, one point per (`BATCH`, `CPU`),
//! taken from the row measured at the requested SLO.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

use infadapt_model::ProfilePoint;

/// One usable row of an InfAdapter capacity table.
#[derive(Debug, Clone)]
pub(super) struct CapacityRow {
    pub(super) input: usize,
    pub(super) line: u64,
    pub(super) variant: String,
    pub(super) batch: u32,
    pub(super) cores: u32,
    pub(super) sla_ms: f64,
    p99_ms: Option<f64>,
    pub(super) capacity_rps: Option<f64>,
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
pub(super) fn import_infadapter(
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

pub(super) fn read_capacity_rows_unsorted(
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

pub(super) fn read_capacity_rows(
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
pub(super) fn sort_by_line(problems: &mut [Problem]) {
    problems.sort_by_key(|p| p.line);
}

/// `18` → `resnet18`; any other text is kept as the name.
pub(super) fn variant_name_for_arch(arch: &str) -> String {
    if !arch.is_empty() && arch.bytes().all(|b| b.is_ascii_digit()) {
        format!("resnet{arch}")
    } else {
        arch.to_owned()
    }
}
