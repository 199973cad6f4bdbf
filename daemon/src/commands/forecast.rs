//! `infadaptd forecast`: backtest and train load forecasters on a trace.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use infadapt_forecast::ForecastError;
use infadapt_forecast::backtest::{BacktestConfig, BacktestReport, run_backtest};
use infadapt_forecast::conformal::{Calibrated, ConformalConfig};
use infadapt_forecast::lstm::{LstmConfig, LstmModel};
use infadapt_forecast::models::{ModelKind, build};
use infadapt_forecast::trace::{Trace, parse_trace};
use serde_json::json;

use crate::commands::stderr::CommandFailure;

#[derive(Debug, Subcommand)]
pub enum ForecastCommand {
    /// Rolling-origin backtest of a forecaster on a trace.
    Backtest(BacktestArgs),
    /// Train an LSTM forecaster on a trace and save it.
    Train(TrainArgs),
}

/// Options of `forecast backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Trace: one requests-per-second value per line, or `timestamp,value` CSV.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    // Model: the names of the forecaster registry.
    #[arg(
        long,
        default_value = "arima",
        value_parser = parse_model,
        help = format!("Model: {}.", ModelKind::CHOICES.replace('`', ""))
    )]
    pub model: ModelKind,
    /// Seconds between forecast origins.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Seconds each forecast covers; the target is the maximum rate within it.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub horizon: f64,
    /// First sample replayed (0-based index of the data lines).
    #[arg(long, default_value_t = 0, value_name = "LINE")]
    pub start: usize,
    /// One past the last sample replayed (default: the end of the trace).
    #[arg(long, value_name = "LINE")]
    pub end: Option<usize>,
    /// Samples before this one train or warm up the model; scoring starts here
    /// (default: --start).
    #[arg(long, value_name = "LINE")]
    pub train_until: Option<usize>,
    /// Coverage of the conformal upper bound.
    #[arg(long, default_value_t = 0.9, value_name = "Q")]
    pub quantile: f64,
    /// Trained LSTM model (for lstm and auto); without it, lstm trains on
    /// [--start, --train-until) first.
    #[arg(long, value_name = "FILE")]
    pub lstm_model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `forecast train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Trace: one requests-per-second value per line, or `timestamp,value` CSV.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// Where to write the model (versioned JSON).
    #[arg(long, value_name = "MODEL")]
    pub out: PathBuf,
    /// First sample used (0-based index of the data lines).
    #[arg(long, default_value_t = 0, value_name = "LINE")]
    pub start: usize,
    /// One past the last sample used (default: the end of the trace).
    #[arg(long, value_name = "LINE")]
    pub end: Option<usize>,
    /// Bucket length in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub bucket: f64,
    /// Buckets per input window.
    #[arg(long, default_value_t = 12)]
    pub window: usize,
    /// Hidden units per layer.
    #[arg(long, default_value_t = 25)]
    pub units: usize,
    /// Stacked LSTM layers.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Horizon in seconds the model predicts the maximum of.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub horizon: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Seed of the initialisation and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_model(text: &str) -> Result<ModelKind, ForecastError> {
    text.parse()
}

/// Runs a `forecast` subcommand; bad input fails with exit 64.
pub fn run(cmd: &ForecastCommand) -> anyhow::Result<()> {
    let outcome = match cmd {
        ForecastCommand::Backtest(args) => backtest(args),
        ForecastCommand::Train(args) => train(args),
    };
    Ok(outcome?)
}

fn read_trace(path: &Path) -> Result<Trace, CommandFailure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandFailure::usage().error(format!("cannot read trace {}: {e}", path.display()))
    })?;
    parse_trace(&text).map_err(|e| match e {
        ForecastError::MalformedLine { line, reason } => {
            CommandFailure::usage().error(format!("{}:{line}: {reason}", path.display()))
        }
        other => CommandFailure::usage().error(format!("{}: {other}", path.display())),
    })
}

fn read_model(path: &Path) -> Result<LstmModel, CommandFailure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandFailure::usage().error(format!("cannot read model {}: {e}", path.display()))
    })?;
    LstmModel::from_json(&text)
        .map_err(|e| CommandFailure::usage().error(format!("{}: {e}", path.display())))
}

fn slice(trace: &Trace, start: usize, end: usize) -> Trace {
    Trace {
        times_s: trace.times_s[start..end].to_vec(),
        rps: trace.rps[start..end].to_vec(),
    }
}

fn check_range(start: usize, end: Option<usize>, len: usize) -> Result<usize, CommandFailure> {
    let end = end.unwrap_or(len).min(len);
    if start >= end {
        return Err(CommandFailure::usage().error(format!(
            "empty range: --start {start} is not before the end {end} (the trace has {len} samples)"
        )));
    }
    Ok(end)
}

fn backtest(args: &BacktestArgs) -> Result<(), CommandFailure> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.interval) || !positive(args.horizon) {
        return Err(CommandFailure::usage().error("--interval and --horizon must be positive"));
    }
    if !(args.quantile > 0.0 && args.quantile < 1.0) {
        return Err(CommandFailure::usage().error("--quantile must lie strictly between 0 and 1"));
    }
    let trace = read_trace(&args.trace)?;
    let end = check_range(args.start, args.end, trace.len())?;
    let train_until = args
        .train_until
        .unwrap_or(args.start)
        .clamp(args.start, end);
    if train_until >= end {
        return Err(CommandFailure::usage().error(format!(
            "--train-until {train_until} leaves nothing to score before the end {end}"
        )));
    }
    let mut train_ms = 0.0;
    let lstm = match (&args.lstm_model, args.model) {
        (Some(path), _) => {
            let model = read_model(path)?;
            if (model.config.horizon_s - args.horizon).abs() > 1e-9 {
                return Err(CommandFailure::usage().error(format!(
                    "{}: the model predicts a {} s horizon, --horizon is {}",
                    path.display(),
                    model.config.horizon_s,
                    args.horizon
                )));
            }
            Some(model)
        }
        (None, ModelKind::Lstm) => {
            if train_until <= args.start {
                return Err(CommandFailure::usage().error(
                    "the lstm model needs --lstm-model FILE or --train-until past --start",
                ));
            }
            let config = LstmConfig {
                horizon_s: args.horizon,
                ..LstmConfig::default()
            };
            let started = Instant::now();
            let (model, _) = LstmModel::train(&slice(&trace, args.start, train_until), config)
                .map_err(|e| {
                    CommandFailure::usage().error(format!("cannot train the lstm: {e}"))
                })?;
            train_ms = started.elapsed().as_secs_f64() * 1000.0;
            Some(model)
        }
        (None, _) => None,
    };
    let inner = build(args.model, args.horizon, lstm.as_ref())
        .map_err(|e| CommandFailure::usage().error(e))?;
    let mut forecaster = Calibrated::new(
        inner,
        ConformalConfig {
            quantile: args.quantile,
            ..ConformalConfig::default()
        },
    );
    let config = BacktestConfig {
        interval_s: args.interval,
        horizon_s: args.horizon,
        start: args.start,
        end,
        train_until,
    };
    let epoch = Instant::now();
    let mut stopwatch = move || epoch.elapsed().as_secs_f64() * 1e6;
    let report =
        run_backtest(&trace, &mut forecaster, &config, &mut stopwatch, train_ms).map_err(|e| {
            match e {
                ForecastError::NotEnoughData(_) | ForecastError::InvalidConfig(_) => {
                    CommandFailure::usage().error(format!("{}: {e}", args.trace.display()))
                }
                other => CommandFailure::of(other.into()),
            }
        })?;
    if args.json {
        print_json(&report, args);
    } else {
        print_text(&report, args);
    }
    Ok(())
}

fn print_json(report: &BacktestReport, args: &BacktestArgs) {
    let value = json!({
        "model": report.model,
        "trace": args.trace.display().to_string(),
        "interval_s": args.interval,
        "horizon_s": args.horizon,
        "n": report.n,
        "mae": report.mae,
        "rmse": report.rmse,
        "smape": report.smape,
        "under_rate": report.under_rate,
        "upper_coverage": report.upper_coverage,
        "upper_quantile": report.upper_quantile,
        "upper_mean_over": report.upper_mean_over,
        "baseline_max_mae": report.baseline_max_mae,
        "mae_vs_baseline": report.mae_vs_baseline,
        "fit_ms_total": report.fit_ms_total,
        "fits": report.fits,
        "fit_failures": report.fit_failures,
        "forecast_us_median": report.forecast_us_median,
        "hygiene": report.hygiene,
    });
    println!("{value}");
}

fn print_text(report: &BacktestReport, args: &BacktestArgs) {
    println!(
        "{} on {}: {} origins every {} s, horizon {} s",
        report.model,
        args.trace.display(),
        report.n,
        args.interval,
        args.horizon
    );
    println!(
        "  point: mae {:.3} (max-of-last-{}-s baseline {:.3}, {:+.1} %), rmse {:.3}, smape {:.2} %, under {:.1} %",
        report.mae,
        args.horizon,
        report.baseline_max_mae,
        100.0 * report.mae_vs_baseline,
        report.rmse,
        report.smape,
        100.0 * report.under_rate
    );
    println!(
        "  upper ({:.0} %): coverage {:.1} %, mean over-provision {:.3} rps",
        100.0 * report.upper_quantile,
        100.0 * report.upper_coverage,
        report.upper_mean_over
    );
    println!(
        "  time: fit {:.1} ms in {} fit(s) ({} failed), forecast median {:.1} us",
        report.fit_ms_total, report.fits, report.fit_failures, report.forecast_us_median
    );
    let h = report.hygiene;
    println!(
        "  input: {} samples, {} zeros as gaps, {} gaps, {} non-finite, {} negative, {} out of order",
        h.seen, h.zeros_as_gaps, h.gaps, h.non_finite, h.negative, h.out_of_order
    );
}

fn train(args: &TrainArgs) -> Result<(), CommandFailure> {
    let trace = read_trace(&args.trace)?;
    let end = check_range(args.start, args.end, trace.len())?;
    let config = LstmConfig {
        bucket_s: args.bucket,
        window: args.window,
        units: args.units,
        layers: args.layers,
        horizon_s: args.horizon,
        epochs: args.epochs,
        seed: args.seed,
        ..LstmConfig::default()
    };
    let started = Instant::now();
    let (model, report) = LstmModel::train(&slice(&trace, args.start, end), config)
        .map_err(|e| CommandFailure::usage().error(format!("{}: {e}", args.trace.display())))?;
    let train_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::fs::write(&args.out, model.to_json()).map_err(|e| {
        CommandFailure::of(anyhow::anyhow!("cannot write {}: {e}", args.out.display()))
    })?;
    if args.json {
        let value = json!({
            "out": args.out.display().to_string(),
            "schema_version": model.schema_version,
            "train_ms": train_ms,
            "train_samples": report.train_samples,
            "validation_samples": report.validation_samples,
            "validation_mae": report.validation_mae,
            "best_epoch": report.best_epoch,
        });
        println!("{value}");
    } else {
        println!(
            "trained lstm ({} x {} units, window {} x {} s) on {} sequences in {:.1} s",
            config.layers,
            config.units,
            config.window,
            config.bucket_s,
            report.train_samples,
            train_ms / 1000.0
        );
        let maes: Vec<String> = report
            .validation_mae
            .iter()
            .map(|m| format!("{m:.3}"))
            .collect();
        println!(
            "  validation mae per epoch: {} (kept epoch {})",
            maes.join(", "),
            report.best_epoch
        );
        println!("  wrote {}", args.out.display());
        println!(
            "  forecasts the maximum of the next {} s; use it in the daemon with \
             [pipeline.forecast] model = \"lstm\" and lstm_model = \"{}\" (relative to \
             the configuration file)",
            config.horizon_s,
            args.out.display()
        );
    }
    Ok(())
}
