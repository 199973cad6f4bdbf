//! Rolling-origin backtest: replays a trace into a forecaster, asks for a forecast every
//! `interval` seconds and scores it against the maximum of the next `horizon` seconds.
//! Time for the timing figures comes from a stopwatch the caller passes in.

use serde::{Deserialize, Serialize};

use crate::error::{ForecastError, Result};
use crate::forecaster::Forecaster;
use crate::sanitize::HygieneReport;
use crate::trace::Trace;

/// What to replay and how to score it. Indices are positions in the trace (lines of a
/// one-value-per-line file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BacktestConfig {
    /// Seconds between forecast origins.
    pub interval_s: f64,
    /// Seconds covered by each forecast.
    pub horizon_s: f64,
    /// First sample replayed.
    pub start: usize,
    /// One past the last sample replayed.
    pub end: usize,
    /// Samples before this one only warm the model up; scoring starts here.
    pub train_until: usize,
}

/// Scores of one backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    /// Model name.
    pub model: String,
    /// Origins scored.
    pub n: usize,
    /// Mean absolute error of the point forecast.
    pub mae: f64,
    /// Root mean squared error of the point forecast.
    pub rmse: f64,
    /// Symmetric mean absolute percentage error, in percent (0 to 200).
    pub smape: f64,
    /// Share of origins where the point forecast was below the actual maximum.
    pub under_rate: f64,
    /// Share of origins where the upper bound covered the actual maximum.
    pub upper_coverage: f64,
    /// Mean of `max(upper - actual, 0)`.
    pub upper_mean_over: f64,
    /// Nominal coverage of the upper bound.
    pub upper_quantile: f64,
    /// MAE of the max-of-the-last-`horizon`-seconds baseline on the same origins.
    pub baseline_max_mae: f64,
    /// `mae / baseline_max_mae - 1` (negative is better than the baseline).
    pub mae_vs_baseline: f64,
    /// Milliseconds spent fitting (refits during the replay plus `extra_fit_ms`).
    pub fit_ms_total: f64,
    /// Number of fits.
    pub fits: usize,
    /// Fits that failed (the previous model was kept).
    pub fit_failures: usize,
    /// Median time of one forecast call in microseconds.
    pub forecast_us_median: f64,
    /// Input problems seen by the model.
    pub hygiene: HygieneReport,
}

fn is_valid(rps: f64) -> bool {
    rps.is_finite() && rps > 0.0
}

/// Replays `trace[start..end]` into `forecaster`. `stopwatch` returns a monotonic time in
/// microseconds; `extra_fit_ms` is added to the fit time (e.g. offline training).
pub fn run_backtest(
    trace: &Trace,
    forecaster: &mut dyn Forecaster,
    config: &BacktestConfig,
    stopwatch: &mut dyn FnMut() -> f64,
    extra_fit_ms: f64,
) -> Result<BacktestReport> {
    let BacktestConfig {
        interval_s,
        horizon_s,
        start,
        end,
        train_until,
    } = *config;
    if !(interval_s.is_finite() && interval_s > 0.0 && horizon_s.is_finite() && horizon_s > 0.0) {
        return Err(ForecastError::InvalidConfig(
            "interval and horizon must be positive".into(),
        ));
    }
    let end = end.min(trace.len());
    if start >= end {
        return Err(ForecastError::InvalidConfig(format!(
            "empty range: start {start} is not before end {end}"
        )));
    }
    let train_until = train_until.clamp(start, end - 1);
    let times = &trace.times_s[start..end];
    let rps = &trace.rps[start..end];
    let first_origin = times[train_until - start];
    let last_time = times[times.len() - 1];

    let mut fed = 0usize; // samples [0, fed) have been observed
    let mut window_start = 0usize; // first sample inside the baseline window
    let mut baseline_held = 0.0;
    let mut abs_errors = 0.0;
    let mut sq_errors = 0.0;
    let mut smape = 0.0;
    let mut under = 0usize;
    let mut covered = 0usize;
    let mut over = 0.0;
    let mut baseline_abs = 0.0;
    let mut n = 0usize;
    let mut quantile = 0.9;
    let mut fit_ms = extra_fit_ms;
    let mut fits = 0usize;
    let mut fit_failures = 0usize;
    let mut forecast_us: Vec<f64> = Vec::new();

    let mut k = 0u64;
    loop {
        let origin = first_origin + k as f64 * interval_s;
        k += 1;
        if origin + horizon_s > last_time + 1.0 {
            break;
        }
        while fed < times.len() && times[fed] < origin {
            forecaster.observe(times[fed], rps[fed]);
            fed += 1;
        }
        // Target: maximum valid rate in [origin, origin + horizon).
        let target = times[fed..]
            .iter()
            .zip(&rps[fed..])
            .take_while(|(t, _)| **t < origin + horizon_s)
            .filter(|(_, v)| is_valid(**v))
            .map(|(_, v)| *v)
            .reduce(f64::max);
        if forecaster.refit_due(origin) {
            let t0 = stopwatch();
            let outcome = forecaster.refit(origin);
            fit_ms += (stopwatch() - t0) / 1000.0;
            fits += 1;
            fit_failures += usize::from(outcome.is_err());
        }
        let t0 = stopwatch();
        let forecast = forecaster.forecast(origin, horizon_s);
        forecast_us.push(stopwatch() - t0);
        while window_start < fed && times[window_start] < origin - horizon_s {
            window_start += 1;
        }
        if let Some(m) = rps[window_start..fed]
            .iter()
            .copied()
            .filter(|v| is_valid(*v))
            .reduce(f64::max)
        {
            baseline_held = m;
        }
        let Some(actual) = target else {
            continue;
        };
        n += 1;
        quantile = forecast.quantile;
        let error = forecast.point - actual;
        abs_errors += error.abs();
        sq_errors += error * error;
        let denominator = forecast.point.abs() + actual.abs();
        if denominator > 0.0 {
            smape += 200.0 * error.abs() / denominator;
        }
        under += usize::from(forecast.point < actual);
        covered += usize::from(forecast.upper >= actual);
        over += (forecast.upper - actual).max(0.0);
        baseline_abs += (baseline_held - actual).abs();
    }
    if n == 0 {
        return Err(ForecastError::NotEnoughData(
            "no origin with an observed target in the range".into(),
        ));
    }
    forecast_us.sort_by(f64::total_cmp);
    let nf = n as f64;
    let mae = abs_errors / nf;
    let baseline_max_mae = baseline_abs / nf;
    Ok(BacktestReport {
        model: forecaster.name().to_string(),
        n,
        mae,
        rmse: (sq_errors / nf).sqrt(),
        smape: smape / nf,
        under_rate: under as f64 / nf,
        upper_coverage: covered as f64 / nf,
        upper_mean_over: over / nf,
        upper_quantile: quantile,
        baseline_max_mae,
        mae_vs_baseline: if baseline_max_mae > 0.0 {
            mae / baseline_max_mae - 1.0
        } else {
            0.0
        },
        fit_ms_total: fit_ms,
        fits,
        fit_failures,
        forecast_us_median: forecast_us
            .get(forecast_us.len() / 2)
            .copied()
            .unwrap_or(0.0),
        hygiene: forecaster.hygiene(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::{LastValue, WindowMax};

    fn counter_clock() -> impl FnMut() -> f64 {
        let mut t = 0.0;
        move || {
            t += 1.0;
            t
        }
    }

    #[test]
    fn max_baseline_scores_like_the_builtin_reference() {
        let values: Vec<f64> = (0..2000).map(|i| 10.0 + ((i * 37) % 23) as f64).collect();
        let trace = Trace::from_per_second(&values);
        let config = BacktestConfig {
            interval_s: 10.0,
            horizon_s: 60.0,
            start: 0,
            end: 2000,
            train_until: 100,
        };
        let mut clock = counter_clock();
        let report =
            run_backtest(&trace, &mut WindowMax::new(60.0), &config, &mut clock, 0.0).unwrap();
        assert!((report.mae - report.baseline_max_mae).abs() < 1e-12);
        assert_eq!(report.n, (2000 - 100 - 60) / 10 + 1);
        assert_eq!(report.forecast_us_median, 1.0);
    }

    #[test]
    fn perfect_step_is_scored_exactly() {
        // Constant 10, so the last value is exact: zero error, full coverage.
        let trace = Trace::from_per_second(&[10.0; 500]);
        let config = BacktestConfig {
            interval_s: 10.0,
            horizon_s: 60.0,
            start: 0,
            end: 500,
            train_until: 60,
        };
        let mut clock = counter_clock();
        let r = run_backtest(&trace, &mut LastValue::default(), &config, &mut clock, 5.0).unwrap();
        assert_eq!(r.mae, 0.0);
        assert_eq!(r.under_rate, 0.0);
        assert_eq!(r.upper_coverage, 1.0);
        assert_eq!(r.fit_ms_total, 5.0);
    }

    #[test]
    fn origins_without_observed_target_are_skipped() {
        let mut values = vec![10.0; 400];
        for v in &mut values[200..300] {
            *v = 0.0;
        }
        let trace = Trace::from_per_second(&values);
        let config = BacktestConfig {
            interval_s: 10.0,
            horizon_s: 60.0,
            start: 0,
            end: 400,
            train_until: 10,
        };
        let mut clock = counter_clock();
        let r = run_backtest(&trace, &mut LastValue::default(), &config, &mut clock, 0.0).unwrap();
        // Origins 200..=240 see only zeros in their horizon.
        assert_eq!(r.n, 34 - 5);
        assert_eq!(r.mae, 0.0);
        assert_eq!(r.hygiene.zeros_as_gaps, 100);
    }

    #[test]
    fn empty_range_is_an_error() {
        let trace = Trace::from_per_second(&[1.0; 10]);
        let config = BacktestConfig {
            interval_s: 10.0,
            horizon_s: 60.0,
            start: 5,
            end: 5,
            train_until: 5,
        };
        let mut clock = counter_clock();
        assert!(run_backtest(&trace, &mut LastValue::default(), &config, &mut clock, 0.0).is_err());
    }
}
