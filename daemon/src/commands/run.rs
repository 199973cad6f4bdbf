//! `infadaptd run`: the service (`--config FILE [--dry-run]`) or the embedded demo (`--demo`:
//! the packaged default on the simulated backend in accelerated virtual time, decisions
//! printed as they happen, fast-path decisions between ticks marked, a summary at the end,
//! and with `--plot FILE.svg` a plot of the decisions over time). `--log-format text|json`
//! chooses how the log on stderr is written.

mod plot;

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::commands::stderr::CommandFailure;
use crate::config::{DEFAULT_CONFIG_PATH, DaemonConfig, HttpListen, load_config, parse_config};
use crate::outln;
use crate::problem_file::CatalogError;
use crate::service::status::{DecisionRecord, PipelineStatus, Registry};
use crate::service::{self, ServiceOptions};

/// The packaged default configuration, embedded for the demo.
const EMBEDDED_CONFIG: &str = include_str!("../../../etc/infadaptd.toml");
const EMBEDDED_CATALOGS: [(&str, &str); 2] = [
    (
        "resnet-synthetic.toml",
        include_str!("../../../etc/catalogs/resnet-synthetic.toml"),
    ),
    (
        "video-synthetic.toml",
        include_str!("../../../etc/catalogs/video-synthetic.toml"),
    ),
];

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Plan, damp, explain and export metrics, but apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the embedded default (simulated backend, synthetic load, accelerated virtual
    /// time) instead of a configuration file, print decisions and a summary, then exit.
    #[arg(long)]
    pub demo: bool,
    /// With --demo: virtual seconds to simulate.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1800,
        requires = "demo"
    )]
    pub duration: u32,
    /// With --demo: virtual seconds per wall second.
    #[arg(long, default_value_t = 400.0, requires = "demo")]
    pub speed: f64,
    /// With --demo: also draw the decisions over time as an SVG (load, forecast, upper
    /// bound, provisioned load, capacity of the plan, fast-path decisions; p99 vs SLO).
    #[arg(long, value_name = "FILE.svg", requires = "demo")]
    pub plot: Option<PathBuf>,
    /// How the log is written: text (human-readable on stderr, coloured only on a terminal;
    /// to the journal instead under the service manager) or json (one object per line on
    /// stderr with timestamp, level, message, the event's fields, target, span and spans).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the log is written (`run --log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; the journal under the service manager.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    if args.demo {
        return run_demo(args);
    }
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(diagnostics) => bail!(CommandFailure::usage().diagnostics(&diagnostics)),
    };
    init_logging(&config.daemon.log, args.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Connections, backend calls and files share the descriptors: take what the service
    // manager allows (LimitNOFILE), so that the connection limits stay well below it.
    match service::process::raise_open_files_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!("open files limit: {e}"),
    }
    let grace = Duration::from_secs_f64(config.daemon.grace_s);
    let options = ServiceOptions {
        config,
        dry_run: args.dry_run,
        persist_state: !args.dry_run,
        serve_http: true,
        speed: 1.0,
        max_ticks: None,
        on_decision: None,
    };
    run_service(options, grace).context("service failed")?;
    Ok(())
}

/// Runs the service on a runtime built here and ended with `shutdown_timeout`: a backend
/// call that hangs holds a blocking thread, and dropping the runtime would wait for it. The
/// runtime gets what is left of the grace period (at least a moment) to finish.
fn run_service(options: ServiceOptions, grace: Duration) -> anyhow::Result<Registry> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(service::run(options));
    let left = match &outcome {
        Ok(stopped) => grace.saturating_sub(stopped.stop_began.elapsed()),
        Err(_) => grace,
    };
    runtime.shutdown_timeout(left.max(Duration::from_millis(100)));
    Ok(outcome?.registry)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("cannot start the async runtime")
}

/// Logs as `format` says: `text` to the journal under the service manager, else
/// human-readable to stderr, coloured only where stderr is a terminal and `NO_COLOR` is
/// unset; `json` one object per line to stderr. `RUST_LOG` overrides the configured filter.
fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .with_ansi(false)
                .with_writer(std::io::stderr);
            let _ = registry.with(json).try_init();
        }
        LogFormat::Text => {
            if std::env::var_os("JOURNAL_STREAM").is_some()
                && let Ok(journald) = tracing_journald::layer()
            {
                let _ = registry.with(journald).try_init();
                return;
            }
            let ansi = colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            let text = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr);
            let _ = registry.with(text).try_init();
        }
    }
}

/// Whether the text log is coloured: only on a terminal, and not where `NO_COLOR` is set to
/// anything but the empty string.
fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The embedded default configuration with its catalogs.
pub fn embedded_config() -> Result<DaemonConfig, crate::config::tomlread::Diagnostics> {
    parse_config(
        "(embedded) etc/infadaptd.toml",
        EMBEDDED_CONFIG,
        Path::new("/"),
        &mut |reference: &str| {
            let file = reference.rsplit('/').next().unwrap_or(reference);
            EMBEDDED_CATALOGS
                .iter()
                .find(|(name, _)| *name == file)
                .ok_or_else(|| CatalogError::NotEmbedded(reference.to_owned()))
                .and_then(|(_, text)| {
                    infadapt_model::Catalog::from_toml_str(text)
                        .map_err(|source| CatalogError::EmbeddedInvalid { source })
                })
        },
    )
}

/// A rate for the decision lines; `-` when there is none (a fast-path decision forecasts
/// nothing).
fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn print_decision(record: &DecisionRecord) {
    let d = &record.decision;
    // A fast-path decision comes between ticks, on the last second's arrivals.
    let kind = if record.fast_path { "FAST" } else { "tick" };
    let mut line = format!(
        "t={:>5.0}s {:<8} {kind} load {:>5.1} rps  forecast {:>5} (upper {:>5})  p99 {:>6}  plan {}",
        d.time_s,
        record.pipeline,
        record.observed_rps,
        rate(d.forecast_rps),
        rate(d.upper_rps),
        record
            .latency_p99_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}ms")),
        d.plan,
    );
    if record.applied {
        line.push_str("  [applied]");
    }
    if let Some(why) = &d.fast_path {
        line.push_str(&format!("  [{why}]"));
    }
    if let Some(why) = &d.warm_spare {
        line.push_str(&format!("  [{why}]"));
    }
    if !d.held_back.is_empty() {
        line.push_str(&format!("  held back: {}", d.held_back.join("; ")));
    }
    if let Some(e) = &d.error {
        line.push_str(&format!("  error: {e}"));
    }
    outln!("{line}");
}

fn print_summary(statuses: &[PipelineStatus], virtual_s: u32) {
    outln!("\nsummary after {virtual_s} virtual seconds:");
    for s in statuses {
        let cores: u64 = s
            .plan
            .as_ref()
            .map_or(0, |p| p.stages.iter().map(|st| st.cores()).sum());
        outln!(
            "  {}: {} ticks, {} fast-path decisions, {} reconfigurations, {} requests completed, \
             SLO attainment {:.2}%, {} dropped, final plan {} ({} cores), {} backend errors",
            s.name,
            s.ticks,
            s.fast_path_decisions,
            s.reconfigurations,
            s.completed,
            s.slo_attainment() * 100.0,
            s.dropped,
            s.plan
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            cores,
            s.plugin_errors
        );
    }
}

fn run_demo(args: &RunArgs) -> anyhow::Result<()> {
    if !(args.speed.is_finite() && args.speed >= 1.0) {
        bail!(CommandFailure::usage().error("--speed must be at least 1"));
    }
    let mut config = embedded_config().map_err(|d| anyhow::anyhow!("{d}"))?;
    config.daemon.http = HttpListen::Disabled;
    init_logging("warn", args.log_format);
    let period = config.daemon.period_s;
    outln!(
        "infadaptd demo: the embedded default ({} pipeline, simulated backend, synthetic load), \
         {} virtual seconds at {}× speed, {period} s control period",
        config.pipelines.len(),
        args.duration,
        args.speed
    );
    let ticks = (f64::from(args.duration) / period).floor().max(1.0) as u64;
    let pipelines: Vec<infadapt_model::Pipeline> = config
        .pipelines
        .iter()
        .map(|p| p.control.problem.pipeline.clone())
        .collect();
    let records: Arc<Mutex<Vec<DecisionRecord>>> = Arc::default();
    let kept = Arc::clone(&records);
    let keep = args.plot.is_some();
    let options = ServiceOptions {
        config,
        dry_run: args.dry_run,
        persist_state: false,
        serve_http: false,
        speed: args.speed,
        max_ticks: Some(ticks),
        on_decision: Some(Arc::new(move |record: &DecisionRecord| {
            print_decision(record);
            if keep {
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(record.clone());
            }
        })),
    };
    let grace = Duration::from_secs_f64(options.config.daemon.grace_s);
    let registry = run_service(options, grace).context("demo failed")?;
    print_summary(&registry.snapshot(), args.duration);
    if let Some(path) = &args.plot {
        let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
        let per_pipeline: Vec<(&infadapt_model::Pipeline, Vec<DecisionRecord>)> = pipelines
            .iter()
            .map(|p| {
                let mine = records
                    .iter()
                    .filter(|r| r.pipeline == p.name)
                    .cloned()
                    .collect();
                (p, mine)
            })
            .collect();
        plot::write_svg(path, &per_pipeline)
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!("plot written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn log_format_takes_text_or_json() {
        use clap::Parser as _;
        let parse =
            |args: &[&str]| crate::commands::cli::Cli::try_parse_from(args).map(|cli| cli.command);
        let format = |args: &[&str]| match parse(args) {
            Ok(crate::commands::cli::Command::Run(run)) => Some(run.log_format),
            _ => None,
        };
        assert_eq!(format(&["infadaptd", "run"]), Some(LogFormat::Text));
        assert_eq!(
            format(&["infadaptd", "run", "--log-format", "json"]),
            Some(LogFormat::Json)
        );
        assert_eq!(
            format(&["infadaptd", "run", "--log-format", "text"]),
            Some(LogFormat::Text)
        );
        assert!(parse(&["infadaptd", "run", "--log-format", "xml"]).is_err());
    }
}
