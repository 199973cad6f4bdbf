//! `infadaptd forecast` end to end: backtests on a generated trace print the promised JSON
//! fields, training writes a model that backtest loads, and bad input names the file and
//! line with exit 64. On a slice of the real trace (data directory `INFADAPT_DATA`; replay
//! tests, ignored by default) ARIMA beats the max baseline.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{self, infadaptd};

use infadapt_sim::{DiurnalParams, synthetic_diurnal};
use serde_json::Value;

/// A trace file and the line where the 11 hours the tests use begin: 8 h to train the
/// LSTM, then 1 h of warm-up and 2 h scored.
struct TraceSlice {
    path: PathBuf,
    base: usize,
}

impl TraceSlice {
    /// 11 generated hours (6-hour days, trough 20 and peak 120 rps, bursts), one rate a line.
    fn generated() -> TraceSlice {
        let params = DiurnalParams {
            day_s: Some(21_600.0),
            ..DiurnalParams::default()
        };
        let rates = synthetic_diurnal(39_600, 5, &params).expect("generated workload");
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = scratch_dir(&format!(
            "generated-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
        .join("trace.txt");
        let text: String = rates.iter().map(|r| format!("{r:.3}\n")).collect();
        std::fs::write(&path, text).expect("write the generated trace");
        TraceSlice { path, base: 0 }
    }

    /// Day 13 from 8:00 to day 14 at 7:00 of the real trace.
    fn real() -> TraceSlice {
        TraceSlice {
            path: crate::real_data::real_data("twitter-trace/rps-per-second-days00-16.txt"),
            base: 1_180_800,
        }
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The line `offset` seconds into the slice.
    fn line(&self, offset: usize) -> String {
        (self.base + offset).to_string()
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    support::scratch_dir("forecast-cli", name)
}

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Two hours scored after one hour of warm-up.
fn backtest(slice: &TraceSlice, model: &str, extra: &[&str]) -> Value {
    let trace = slice.path();
    let (start, train_until, end) = (slice.line(28_800), slice.line(32_400), slice.line(39_600));
    let mut args = vec![
        "forecast",
        "backtest",
        "--trace",
        &trace,
        "--model",
        model,
        "--interval",
        "10",
        "--horizon",
        "60",
        "--start",
        &start,
        "--train-until",
        &train_until,
        "--end",
        &end,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = infadaptd(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

#[test]
fn backtest_json_has_every_promised_field() {
    json_fields(&TraceSlice::generated());
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn backtest_json_has_every_promised_field_on_a_real_slice() {
    json_fields(&TraceSlice::real());
}

fn json_fields(slice: &TraceSlice) {
    let report = backtest(slice, "max", &[]);
    for key in [
        "mae",
        "rmse",
        "smape",
        "under_rate",
        "upper_coverage",
        "upper_mean_over",
        "fit_ms_total",
        "forecast_us_median",
        "n",
    ] {
        assert!(report[key].is_number(), "missing {key} in {report}");
    }
    // 7200 s scored, one origin every 10 s, the last 60 s have no full horizon.
    assert_eq!(report["n"], 715);
    // The max model is the baseline itself.
    let mae = report["mae"].as_f64().unwrap();
    assert!((mae - report["baseline_max_mae"].as_f64().unwrap()).abs() < 1e-9);
    let coverage = report["upper_coverage"].as_f64().unwrap();
    assert!((0.8..=1.0).contains(&coverage), "coverage {coverage}");
}

#[test]
fn arima_stays_near_the_max_baseline_on_a_generated_trace() {
    // The generated load drifts like a random walk between bursts, where the recent
    // maximum is hard to beat.
    let report = backtest(&TraceSlice::generated(), "arima", &[]);
    let mae = report["mae"].as_f64().unwrap();
    let baseline = report["baseline_max_mae"].as_f64().unwrap();
    assert!(mae < 1.5 * baseline, "arima mae {mae} vs max-60 {baseline}");
    assert!(report["fits"].as_u64().unwrap() >= 1);
    assert!(report["upper_mean_over"].as_f64().unwrap() > 0.0);
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn arima_beats_the_max_baseline_on_a_real_slice() {
    let report = backtest(&TraceSlice::real(), "arima", &[]);
    let mae = report["mae"].as_f64().unwrap();
    let baseline = report["baseline_max_mae"].as_f64().unwrap();
    assert!(mae < baseline, "arima mae {mae} vs max-60 {baseline}");
    assert!(report["fits"].as_u64().unwrap() >= 1);
    assert!(report["upper_mean_over"].as_f64().unwrap() > 0.0);
}

#[test]
fn auto_and_baselines_run() {
    let slice = TraceSlice::generated();
    for model in ["naive", "ewma", "holt-winters", "auto"] {
        let report = backtest(&slice, model, &[]);
        assert!(
            report["mae"].as_f64().unwrap().is_finite(),
            "{model}: {report}"
        );
    }
}

#[test]
fn csv_trace_with_dirty_values_is_accepted_and_counted() {
    let dir = scratch_dir("csv");
    let path = dir.join("trace.csv");
    let mut text = String::from("timestamp,rps\n");
    for t in 0..900 {
        let value = match t {
            100 => "NaN".to_string(),
            200 => "-5".to_string(),
            300..=330 => "0".to_string(),
            _ => format!("{}", 40 + (t * 7) % 13),
        };
        text.push_str(&format!("{},{value}\n", 1_700_000_000 + t));
    }
    std::fs::write(&path, text).unwrap();
    let out = infadaptd(&[
        "forecast",
        "backtest",
        "--trace",
        path.to_str().unwrap(),
        "--model",
        "arima",
        "--train-until",
        "400",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(report["hygiene"]["non_finite"], 1);
    assert_eq!(report["hygiene"]["negative"], 1);
    assert_eq!(report["hygiene"]["zeros_as_gaps"], 31);
    assert!(report["mae"].as_f64().unwrap().is_finite());
}

#[test]
fn malformed_line_names_file_and_line() {
    let dir = scratch_dir("malformed");
    let path = dir.join("bad.txt");
    std::fs::write(&path, "10\n12\n1x3\n").unwrap();
    let out = infadaptd(&["forecast", "backtest", "--trace", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", path.display())),
        "stderr: {stderr}"
    );
}

#[test]
fn missing_trace_names_the_file() {
    let out = infadaptd(&["forecast", "backtest", "--trace", "/nonexistent/trace.txt"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.txt"));
}

#[test]
fn unknown_model_is_a_usage_error() {
    let trace = TraceSlice::generated().path();
    let out = infadaptd(&[
        "forecast", "backtest", "--trace", &trace, "--model", "oracle",
    ]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn lstm_train_writes_a_model_that_backtest_loads() {
    let dir = scratch_dir("lstm");
    let model = dir.join("lstm.json");
    let slice = TraceSlice::generated();
    let trace = slice.path();
    let (train_start, start, short_end) = (slice.line(0), slice.line(28_800), slice.line(29_800));
    let out = infadaptd(&[
        "forecast",
        "train",
        "--trace",
        &trace,
        "--start",
        &train_start,
        "--end",
        &start,
        "--units",
        "8",
        "--epochs",
        "2",
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_of(&out);
    assert_eq!(summary["schema_version"], 1);
    assert!(summary["train_samples"].as_u64().unwrap() > 2000);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(saved["schema_version"], 1);
    assert!(saved["normalisation"]["scale"].as_f64().unwrap() > 0.0);
    let report = backtest(&slice, "lstm", &["--lstm-model", model.to_str().unwrap()]);
    let mae = report["mae"].as_f64().unwrap();
    assert!(mae.is_finite() && mae < 3.0 * report["baseline_max_mae"].as_f64().unwrap());

    // A model trained for another horizon is refused.
    let out = infadaptd(&[
        "forecast",
        "backtest",
        "--trace",
        &trace,
        "--model",
        "lstm",
        "--lstm-model",
        model.to_str().unwrap(),
        "--horizon",
        "30",
        "--start",
        &start,
        "--end",
        &short_end,
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("60 s horizon"));

    // A model from another schema version is refused with the file named.
    let text = std::fs::read_to_string(&model)
        .unwrap()
        .replace("\"schema_version\":1", "\"schema_version\":7");
    let old = dir.join("old.json");
    std::fs::write(&old, text).unwrap();
    let out = infadaptd(&[
        "forecast",
        "backtest",
        "--trace",
        &trace,
        "--model",
        "lstm",
        "--lstm-model",
        old.to_str().unwrap(),
        "--start",
        &start,
        "--end",
        &short_end,
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema version 7"));
}
