//! Matching variant names across tables (names a table truncated with `...` by unique
//! prefix) and resolving their accuracy and load time.

use super::*;
use std::collections::BTreeSet;

/// A variant name resolved against the metadata and accuracy tables.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Resolved {
    pub(super) name: String,
    /// Value and where it came from.
    pub(super) accuracy: Option<(f64, String)>,
    pub(super) load_time_s: Option<(f64, String)>,
    /// The table truncated the name and nothing resolved it.
    pub(super) unresolved_truncation: bool,
}

pub(super) struct Resolver<'o> {
    pub(super) options: &'o ImportOptions,
}

impl<'o> Resolver<'o> {
    pub(super) fn new(options: &'o ImportOptions) -> Self {
        Resolver { options }
    }

    pub(super) fn known_names(&self) -> BTreeSet<&'o str> {
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
    pub(super) fn resolve(
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
pub(super) fn truncated_prefix(name: &str) -> Option<&str> {
    name.strip_suffix("...").or_else(|| name.strip_suffix('…'))
}
