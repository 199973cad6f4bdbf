//! Speed targets: ARIMA fit on one day of 10-s points (target 50 ms), one ARIMA forecast
//! (target 100 us), one LSTM inference with 25 units (target 50 us).
//! Run with `cargo bench -p infadapt-forecast --bench forecast_speed`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infadapt_forecast::Forecaster;
use infadapt_forecast::arima::{
    ArimaFitConfig, ArimaForecaster, ArimaForecasterConfig, ArimaModel,
};
use infadapt_forecast::lstm::{LstmConfig, LstmForecaster, LstmModel, Normalisation};

#[path = "../../../tests/real_data.rs"]
mod real_data;

/// The request trace, in the data directory named by `INFADAPT_DATA`.
const TRACE: &str = "twitter-trace/rps-per-second-days00-16.txt";

/// Day 13 of the trace as per-second values.
fn day_13() -> Vec<f64> {
    let text = std::fs::read_to_string(real_data::real_data(TRACE))
        .unwrap_or_else(|e| panic!("the trace {TRACE} in INFADAPT_DATA cannot be read: {e}"));
    text.lines()
        .skip(13 * 86_400)
        .take(86_400)
        .map(|l| l.trim().parse::<f64>().expect("numeric line"))
        .collect()
}

/// 10-s bucket means with gaps (zeros) carried forward, as the ARIMA forecaster builds them.
fn bucket_means(values: &[f64]) -> Vec<f64> {
    let mut held = 0.0;
    values
        .chunks(10)
        .map(|chunk| {
            let seen: Vec<f64> = chunk.iter().copied().filter(|v| *v > 0.0).collect();
            if !seen.is_empty() {
                held = seen.iter().sum::<f64>() / seen.len() as f64;
            }
            held
        })
        .collect()
}

fn arima(c: &mut Criterion) {
    let day = day_13();
    let series = bucket_means(&day);
    assert_eq!(series.len(), 8640);
    c.bench_function("arima_fit_auto_one_day_10s", |b| {
        b.iter(|| ArimaModel::fit_auto(black_box(&series), &ArimaFitConfig::default()).unwrap())
    });
    let mut forecaster = ArimaForecaster::new(ArimaForecasterConfig::default());
    for (t, v) in day.iter().enumerate() {
        forecaster.observe(t as f64, *v);
    }
    forecaster.refit(86_400.0).unwrap();
    c.bench_function("arima_forecast_60s", |b| {
        b.iter(|| forecaster.forecast(black_box(86_400.0), 60.0))
    });
}

fn lstm(c: &mut Criterion) {
    let day = day_13();
    let model = LstmModel::new(
        LstmConfig::default(),
        Normalisation {
            offset: 80.0,
            scale: 20.0,
        },
    )
    .unwrap();
    let mut forecaster = LstmForecaster::new(model);
    for (t, v) in day.iter().enumerate().take(3600) {
        forecaster.observe(t as f64, *v);
    }
    c.bench_function("lstm_forecast_25_units_window_12", |b| {
        b.iter(|| forecaster.forecast(black_box(3600.0), 60.0))
    });
}

criterion_group!(benches, arima, lstm);
criterion_main!(benches);
