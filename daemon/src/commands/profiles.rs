//! `infadaptd profiles`: import measured profile tables into catalogs, and write the project's
//! synthetic catalogs (the video pipeline, the single-stage ResNet classifier).
//!
//! ```text
//! infadaptd profiles import --out FILE [--format infadapter|ipa|auto] [--slo-ms 750]
//!     [--metadata variant_metadata.csv] [--accuracies accuracies.yaml] [--note TEXT]... INPUT...
//! ```
//!
//! Exit codes: 0 on success, 64 when an input is malformed (every problem is listed with
//! `file:line` and the column), 1 when a file cannot be read or written.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use infadapt_model::catalog::CATALOG_SCHEMA;
use infadapt_model::{Catalog, CatalogVariant, ProfilePoint};

use crate::commands::stderr::{self, CommandFailure};
use crate::profile_import::{self, Format, ImportError, ImportOptions, InputText};

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Convert measured profile tables (CSV) into one profile catalog (TOML, schema 1).
    Import(ImportArgs),
    /// Write one of the project's synthetic catalogs (regenerates
    /// etc/catalogs/video-synthetic.toml or, with --kind resnet, resnet-synthetic.toml).
    #[command(hide = true)]
    Synth(SynthArgs),
}

/// Table layout of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// InfAdapter capacity table (CPU, ARCH, BATCH, SLA, p99_latency, capacity, ...).
    Infadapter,
    /// IPA profiler table (model_variant, max_batch_size, cpu_request, load, latencies in s).
    Ipa,
    /// Tell from each file's header line.
    Auto,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Catalog file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Layout of the input tables.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Latency SLO in ms: InfAdapter rows are taken at this SLA (or the largest measured SLA
    /// below it). IPA tables carry no SLA and ignore it.
    #[arg(long, value_name = "MS", default_value_t = 750.0)]
    pub slo_ms: f64,
    /// Variant metadata table (CSV: model, top1_accuracy, load_time_s); takes precedence over
    /// --accuracies.
    #[arg(long, value_name = "CSV")]
    pub metadata: Option<PathBuf>,
    /// Accuracy tree (YAML: pipeline -> stage -> variant: value), kept in its own unit.
    #[arg(long, value_name = "YAML")]
    pub accuracies: Option<PathBuf>,
    /// Extra comment line for the catalog header (repeatable).
    #[arg(long = "note", value_name = "TEXT")]
    pub notes: Vec<String>,
    /// Measured profile tables (CSV), all of one format.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Catalog file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Which synthetic catalog.
    #[arg(long, value_enum, default_value_t = SynthKind::Video)]
    pub kind: SynthKind,
}

/// The project's synthetic catalogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SynthKind {
    /// The 3-stage video pipeline (etc/catalogs/video-synthetic.toml).
    Video,
    /// The single-stage CPU ResNet classifier (etc/catalogs/resnet-synthetic.toml).
    Resnet,
}

/// Runs the command; bad input fails with exit 64.
pub fn run(cmd: &ProfilesCommand) -> anyhow::Result<()> {
    match cmd {
        ProfilesCommand::Import(args) => run_import(args),
        ProfilesCommand::Synth(args) => {
            let (header, catalog, what) = match args.kind {
                SynthKind::Video => (synthetic_header(), synthetic_video_catalog(), "video"),
                SynthKind::Resnet => (
                    synthetic_resnet_header(),
                    synthetic_resnet_catalog(),
                    "ResNet",
                ),
            };
            let text = profile_import::render_catalog(&header, &catalog);
            write_atomically(&args.out, &text)?;
            crate::outln!(
                "wrote the synthetic {what} catalog to {}",
                args.out.display()
            );
            Ok(())
        }
    }
}

fn run_import(args: &ImportArgs) -> anyhow::Result<()> {
    if !(args.slo_ms.is_finite() && args.slo_ms > 0.0) {
        bail!(CommandFailure::usage().error(format_args!(
            "--slo-ms must be a positive number of milliseconds, got {}",
            args.slo_ms
        )));
    }
    let names: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let texts: Vec<String> = args
        .inputs
        .iter()
        .map(|p| read(p))
        .collect::<anyhow::Result<_>>()?;
    let inputs: Vec<InputText<'_>> = names
        .iter()
        .zip(&texts)
        .map(|(n, t)| InputText::new(n, t))
        .collect();

    let mut options = ImportOptions::new(args.slo_ms);
    options.notes = args.notes.clone();
    if let Some(path) = &args.metadata {
        let (name, text) = (path.display().to_string(), read(path)?);
        match profile_import::parse_metadata(InputText::new(&name, &text)) {
            Ok(table) => options.metadata = Some(table),
            Err(e) => bail!(import_failure(&e)),
        }
    }
    if let Some(path) = &args.accuracies {
        let (name, text) = (path.display().to_string(), read(path)?);
        match profile_import::parse_accuracies(InputText::new(&name, &text)) {
            Ok(table) => options.accuracies = Some(table),
            Err(e) => bail!(import_failure(&e)),
        }
    }

    let format = match args.format {
        FormatArg::Infadapter => Format::InfAdapter,
        FormatArg::Ipa => Format::Ipa,
        FormatArg::Auto => detect_one_format(&inputs)?,
    };
    let imported = match profile_import::import(format, &inputs, &options) {
        Ok(imported) => imported,
        Err(e) => bail!(import_failure(&e)),
    };

    for warning in &imported.warnings {
        stderr::warning(warning);
    }
    for skipped in &imported.skipped {
        stderr::warning(format_args!("skipped {skipped}"));
    }
    write_atomically(&args.out, &imported.render())?;
    for variant in &imported.catalog.variants {
        crate::outln!("{}", profile_import::summary_line(variant));
    }
    let mut tail = format!(
        "wrote {} variants ({} format) to {}; skipped {} measurements without usable values",
        imported.catalog.variants.len(),
        imported.format,
        args.out.display(),
        imported.skipped.len()
    );
    if imported.superseded > 0 {
        tail.push_str(&format!(
            "; {} less loaded runs of measured points not used",
            imported.superseded
        ));
    }
    crate::outln!("{tail}");
    Ok(())
}

/// The format all inputs share, or why there is none.
fn detect_one_format(inputs: &[InputText<'_>]) -> Result<Format, CommandFailure> {
    let mut found: Vec<(Format, &str)> = Vec::new();
    for input in inputs {
        match profile_import::detect_format(*input) {
            Ok(format) => found.push((format, input.name)),
            Err(e) => return Err(import_failure(&e)),
        }
    }
    let first = found[0];
    if let Some(other) = found.iter().find(|(format, _)| *format != first.0) {
        return Err(CommandFailure::usage().error(format_args!(
            "the inputs mix formats: {} is {}, {} is {}; import them separately",
            first.1, first.0, other.1, other.0
        )));
    }
    Ok(first.0)
}

/// Every problem of a failed import, one `error:` line each.
fn import_failure(error: &ImportError) -> CommandFailure {
    error
        .problems
        .iter()
        .fold(CommandFailure::usage(), |failure, problem| {
            failure.error(problem)
        })
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes beside the target, then renames, so a failed run never leaves half a catalog.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, text).with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Synthetic video-pipeline catalog
// ---------------------------------------------------------------------------------------

/// One synthetic variant: mean latency `γ·b/c + δ·b + ε/c + η` (ms), p99 = mean × `p99_factor`.
struct SyntheticVariant {
    name: &'static str,
    accuracy: f64,
    load_time_s: f64,
    gamma: f64,
    delta: f64,
    epsilon: f64,
    eta: f64,
    p99_factor: f64,
}

const fn synthetic(
    name: &'static str,
    accuracy: f64,
    load_time_s: f64,
    [gamma, delta, epsilon, eta]: [f64; 4],
    p99_factor: f64,
) -> SyntheticVariant {
    SyntheticVariant {
        name,
        accuracy,
        load_time_s,
        gamma,
        delta,
        epsilon,
        eta,
        p99_factor,
    }
}

/// Three stages: detect → classify → embed. Bigger variants are slower and more accurate;
/// γ is the per-item work that spreads over cores, δ the per-item serial part, ε the
/// per-batch work that spreads over cores, η the fixed per-batch overhead.
const SYNTHETIC_VARIANTS: &[SyntheticVariant] = &[
    synthetic("det-n", 0.28, 2.5, [55.0, 3.0, 12.0, 6.0], 1.30),
    synthetic("det-s", 0.37, 3.5, [120.0, 5.0, 18.0, 7.0], 1.32),
    synthetic("det-m", 0.45, 5.5, [270.0, 9.0, 25.0, 8.0], 1.35),
    synthetic("det-l", 0.49, 8.0, [520.0, 14.0, 35.0, 10.0], 1.38),
    synthetic("det-x", 0.51, 11.5, [900.0, 22.0, 50.0, 12.0], 1.42),
    synthetic("cls-18", 0.70, 2.0, [30.0, 1.5, 8.0, 4.0], 1.22),
    synthetic("cls-34", 0.73, 2.5, [60.0, 2.5, 10.0, 4.0], 1.24),
    synthetic("cls-50", 0.76, 3.5, [85.0, 3.5, 14.0, 5.0], 1.26),
    synthetic("cls-101", 0.775, 5.0, [160.0, 6.0, 20.0, 6.0], 1.30),
    synthetic("cls-152", 0.785, 6.5, [235.0, 8.0, 26.0, 7.0], 1.33),
    synthetic("embed-small", 0.81, 2.0, [18.0, 1.0, 6.0, 3.0], 1.20),
    synthetic("embed-base", 0.86, 4.0, [50.0, 2.0, 10.0, 4.0], 1.25),
    synthetic("embed-large", 0.89, 8.5, [140.0, 5.0, 18.0, 5.0], 1.30),
];

const SYNTHETIC_BATCHES: [u32; 5] = [1, 2, 4, 8, 16];
const SYNTHETIC_CORES: [u32; 4] = [1, 2, 4, 8];

/// The project's own synthetic catalog for a 3-stage video pipeline (no measurements).
pub fn synthetic_video_catalog() -> Catalog {
    synthetic_catalog(SYNTHETIC_VARIANTS, &SYNTHETIC_BATCHES, &SYNTHETIC_CORES)
}

/// A catalog whose every point follows its variant's latency model.
fn synthetic_catalog(variants: &[SyntheticVariant], batches: &[u32], cores: &[u32]) -> Catalog {
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let variants = variants
        .iter()
        .map(|v| {
            let mut points = Vec::new();
            for &batch in batches {
                for &cores in cores {
                    let (b, c) = (f64::from(batch), f64::from(cores));
                    let mean = v.gamma * b / c + v.delta * b + v.epsilon / c + v.eta;
                    points.push(ProfilePoint {
                        batch,
                        cores,
                        p99_ms: Some(round(mean * v.p99_factor)),
                        mean_ms: Some(round(mean)),
                        throughput_rps: Some((b * 1000.0 / mean * 1000.0).round() / 1000.0),
                    });
                }
            }
            CatalogVariant {
                name: v.name.to_owned(),
                accuracy: v.accuracy,
                load_time_s: v.load_time_s,
                gpu_mem_mb: Some(0.0),
                source: format!(
                    "synthetic: mean = {}*b/c + {}*b + {}/c + {} ms, p99 = {} x mean",
                    v.gamma, v.delta, v.epsilon, v.eta, v.p99_factor
                ),
                points,
            }
        })
        .collect();
    Catalog {
        schema: CATALOG_SCHEMA,
        variants,
    }
}

fn synthetic_header() -> Vec<String> {
    [
        "Synthetic profiles of the project's own 3-stage video pipeline (not measurements):",
        "  detect: det-n, det-s, det-m, det-l, det-x",
        "  classify: cls-18, cls-34, cls-50, cls-101, cls-152",
        "  embed: embed-small, embed-base, embed-large",
        "Every point follows mean(b, c) = gamma*b/c + delta*b + epsilon/c + eta (ms) with the",
        "per-variant coefficients in each `source`; p99 = mean x a per-variant factor (1.2-1.42);",
        "throughput = b*1000/mean; batch {1,2,4,8,16} x cores {1,2,4,8}. Accuracy is a fraction",
        "of each stage's own task metric: compare it only within a stage.",
        "",
        "Generated by: infadaptd profiles synth --out etc/catalogs/video-synthetic.toml",
        "(hidden subcommand, daemon/src/commands/profiles.rs); tests/profiles_import.rs checks that",
        "this file equals a fresh run.",
    ]
    .iter()
    .map(|line| (*line).to_owned())
    .collect()
}

// ---------------------------------------------------------------------------------------
// Synthetic single-stage ResNet classifier catalog (CPU)
// ---------------------------------------------------------------------------------------

/// One classification stage on CPU: five variants named after the ResNet depths, so that
/// configurations list `resnet18` … `resnet152`. The coefficients are the project's own
/// round numbers (no measurements): deeper variants cost more per item and are more accurate.
const SYNTHETIC_RESNET_VARIANTS: &[SyntheticVariant] = &[
    synthetic("resnet18", 0.69, 3.0, [45.0, 2.0, 10.0, 3.0], 1.25),
    synthetic("resnet34", 0.73, 4.0, [90.0, 3.0, 15.0, 4.0], 1.25),
    synthetic("resnet50", 0.76, 5.0, [130.0, 4.0, 20.0, 5.0], 1.30),
    synthetic("resnet101", 0.77, 7.0, [240.0, 6.0, 30.0, 6.0], 1.30),
    synthetic("resnet152", 0.78, 9.0, [350.0, 8.0, 40.0, 7.0], 1.35),
];

const SYNTHETIC_RESNET_BATCHES: [u32; 4] = [1, 2, 4, 8];
const SYNTHETIC_RESNET_CORES: [u32; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// The project's own synthetic catalog for a single-stage CPU image classifier (no
/// measurements): the catalog of the packaged default configuration and the examples.
pub fn synthetic_resnet_catalog() -> Catalog {
    synthetic_catalog(
        SYNTHETIC_RESNET_VARIANTS,
        &SYNTHETIC_RESNET_BATCHES,
        &SYNTHETIC_RESNET_CORES,
    )
}

fn synthetic_resnet_header() -> Vec<String> {
    [
        "Synthetic profiles of a single-stage CPU image classifier (not measurements):",
        "  classify: resnet18, resnet34, resnet50, resnet101, resnet152",
        "The variant names follow the ResNet depths so that configurations can list them; every",
        "number below was invented by the project as a round, plausible value. Every point",
        "follows mean(b, c) = gamma*b/c + delta*b + epsilon/c + eta (ms) with the per-variant",
        "coefficients in each `source`; p99 = mean x a per-variant factor (1.25-1.35);",
        "throughput = b*1000/mean; batch {1,2,4,8} x cores 1-16.",
        "",
        "Generated by: infadaptd profiles synth --kind resnet --out etc/catalogs/resnet-synthetic.toml",
        "(hidden subcommand, daemon/src/commands/profiles.rs); tests/profiles_import.rs checks that",
        "this file equals a fresh run.",
    ]
    .iter()
    .map(|line| (*line).to_owned())
    .collect()
}
