//! Assembly: the points read per variant, with names resolved, into the catalog and the
//! import's summary.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

use infadapt_model::catalog::CATALOG_SCHEMA;
use infadapt_model::{Catalog, CatalogVariant, ProfilePoint};

#[derive(Debug, Default)]
pub(super) struct Draft {
    pub(super) resolved: Option<Resolved>,
    pub(super) inputs: BTreeSet<usize>,
    pub(super) points: Vec<ProfilePoint>,
}

/// Variants in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Drafts {
    pub(super) order: Vec<String>,
    pub(super) by_name: BTreeMap<String, Draft>,
}

impl Drafts {
    pub(super) fn entry(&mut self, resolved: &Resolved) -> &mut Draft {
        if !self.by_name.contains_key(&resolved.name) {
            self.order.push(resolved.name.clone());
        }
        let draft = self.by_name.entry(resolved.name.clone()).or_default();
        draft.resolved.get_or_insert_with(|| resolved.clone());
        draft
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
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
