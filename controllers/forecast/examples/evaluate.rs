//! Evaluates every forecaster on the trace: models warm up (and the LSTM trains) on days
//! 0-13, forecasts are scored on days 14-15 (origins every 10 s, horizon 60 s, conformal
//! 90 % upper bound). Prints the figures quoted in docs/forecasting.md.
//!
//! Run with `cargo run --release -p infadapt-forecast --example evaluate [MODEL...]`.

use std::time::Instant;

use infadapt_forecast::backtest::{BacktestConfig, BacktestReport, run_backtest};
use infadapt_forecast::conformal::{Calibrated, ConformalConfig};
use infadapt_forecast::lstm::{LstmConfig, LstmModel};
use infadapt_forecast::models::{ModelKind, build};
use infadapt_forecast::trace::{Trace, parse_trace};

#[path = "../../../tests/real_data.rs"]
mod real_data;

/// The request trace, in the data directory named by `INFADAPT_DATA`.
const TRACE: &str = "twitter-trace/rps-per-second-days00-16.txt";
const TRAIN_UNTIL: usize = 1_209_600;

/// Scores `kind` on one range with the given warm-up start.
fn score(
    trace: &Trace,
    kind: ModelKind,
    lstm: Option<&LstmModel>,
    (start, train_until, end): (usize, usize, usize),
    clock: &mut dyn FnMut() -> f64,
    extra_fit_ms: f64,
) -> BacktestReport {
    let inner = build(kind, 60.0, lstm).expect("model builds");
    let mut model = Calibrated::new(inner, ConformalConfig::default());
    let config = BacktestConfig {
        interval_s: 10.0,
        horizon_s: 60.0,
        start,
        end,
        train_until,
    };
    run_backtest(trace, &mut model, &config, clock, extra_fit_ms).expect("backtest")
}

/// Warm-up start: all of the history for the daily season and auto, one day for ARIMA,
/// an hour for the rest.
fn warm_up_start(kind: ModelKind, train_until: usize) -> usize {
    match kind {
        ModelKind::HoltWinters | ModelKind::Auto => 0,
        ModelKind::Arima => train_until - 86_400,
        _ => train_until - 3600,
    }
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let text = std::fs::read_to_string(real_data::real_data(TRACE))
        .unwrap_or_else(|e| panic!("the trace {TRACE} in INFADAPT_DATA cannot be read: {e}"));
    let trace = parse_trace(&text).expect("trace parses");
    let epoch = Instant::now();
    let mut clock = move || epoch.elapsed().as_secs_f64() * 1e6;
    let selected = |kind: ModelKind| wanted.is_empty() || wanted.iter().any(|w| w == kind.as_str());

    let needs_lstm = selected(ModelKind::Lstm) || selected(ModelKind::Auto);
    let (lstm, train_ms) = if needs_lstm {
        let training = Trace {
            times_s: trace.times_s[..TRAIN_UNTIL].to_vec(),
            rps: trace.rps[..TRAIN_UNTIL].to_vec(),
        };
        let started = Instant::now();
        let (model, report) =
            LstmModel::train(&training, LstmConfig::default()).expect("lstm trains");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!(
            "lstm training on days 0-13: {:.1} s, {} sequences, validation mae {:?}, kept epoch {}",
            ms / 1000.0,
            report.train_samples,
            report.validation_mae,
            report.best_epoch
        );
        (Some(model), ms)
    } else {
        (None, 0.0)
    };

    println!(
        "{:<13} {:>6} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>5} {:>8}",
        "model", "n", "mae", "max-60", "vs", "under", "cover", "over", "fit_ms", "fits", "fc_us"
    );
    for kind in ModelKind::ALL.into_iter().filter(|k| selected(*k)) {
        let extra = if kind == ModelKind::Lstm {
            train_ms
        } else {
            0.0
        };
        let range = (warm_up_start(kind, TRAIN_UNTIL), TRAIN_UNTIL, trace.len());
        let report = score(&trace, kind, lstm.as_ref(), range, &mut clock, extra);
        println!(
            "{:<13} {:>6} {:>7.3} {:>8.3} {:>+7.1}% {:>6.1}% {:>6.1}% {:>7.2} {:>9.1} {:>5} {:>8.1}",
            report.model,
            report.n,
            report.mae,
            report.baseline_max_mae,
            100.0 * report.mae_vs_baseline,
            100.0 * report.under_rate,
            100.0 * report.upper_coverage,
            report.upper_mean_over,
            report.fit_ms_total,
            report.fits,
            report.forecast_us_median
        );
    }
    if !wanted.is_empty() {
        return;
    }
    // Per day: auto against the best baseline of that day.
    println!("per-day mae (auto vs best baseline):");
    for day in 14..16usize {
        let day_start = day * 86_400;
        let day_end = (day_start + 86_400).min(trace.len());
        let mut line = format!("day {day}:");
        let mut best_baseline = f64::INFINITY;
        let mut auto_mae = f64::NAN;
        for kind in ModelKind::ALL {
            let range = (warm_up_start(kind, day_start), day_start, day_end);
            let mae = score(&trace, kind, lstm.as_ref(), range, &mut clock, 0.0).mae;
            line.push_str(&format!(" {kind} {mae:.3}"));
            match kind {
                ModelKind::Naive | ModelKind::Max | ModelKind::Ewma | ModelKind::HoltWinters => {
                    best_baseline = best_baseline.min(mae);
                }
                ModelKind::Auto => auto_mae = mae,
                _ => {}
            }
        }
        println!("{line}");
        println!(
            "day {day}: auto {:.3} vs best baseline {:.3}: {:+.1} %",
            auto_mae,
            best_baseline,
            100.0 * (auto_mae / best_baseline - 1.0)
        );
    }
}
