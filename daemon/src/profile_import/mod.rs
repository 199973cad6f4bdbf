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

mod assemble;
mod infadapter;
mod ipa;
mod metadata;
mod names;
mod render;
mod table;

use assemble::*;
use infadapter::*;
use ipa::*;
use metadata::*;
pub use metadata::{AccuracyTable, MetadataTable, parse_accuracies, parse_metadata};
use names::*;
use render::*;
pub use render::{render_catalog, summary_line};
use table::*;

use std::fmt;
use std::path::Path;

use infadapt_model::Catalog;

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

#[cfg(test)]
mod tests;
