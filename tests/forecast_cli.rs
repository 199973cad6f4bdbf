//! `infadaptd forecast` end to end: backtests on a slice of the real trace print the
//! promised JSON fields, training writes a model that backtest loads, and bad input names
//! the file and line with exit 64.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::{self, infadaptd};

fn trace_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/twitter-trace/rps-per-second-days00-16.txt");
    assert!(path.exists(), "trace missing at {}", path.display());
    path
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

/// Two hours of day 14 after one hour of warm-up.
fn backtest(model: &str, extra: &[&str]) -> Value {
    let trace = trace_path().display().to_string();
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
        "1209600",
        "--train-until",
        "1213200",
        "--end",
        "1220400",
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
    let report = backtest("max", &[]);
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
fn arima_beats_the_max_baseline_on_a_real_slice() {
    let report = backtest("arima", &[]);
    let mae = report["mae"].as_f64().unwrap();
    let baseline = report["baseline_max_mae"].as_f64().unwrap();
    assert!(mae < baseline, "arima mae {mae} vs max-60 {baseline}");
    assert!(report["fits"].as_u64().unwrap() >= 1);
    assert!(report["upper_mean_over"].as_f64().unwrap() > 0.0);
}

#[test]
fn auto_and_baselines_run() {
    for model in ["naive", "ewma", "holt-winters", "auto"] {
        let report = backtest(model, &[]);
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
    let trace = trace_path().display().to_string();
    let out = infadaptd(&[
        "forecast", "backtest", "--trace", &trace, "--model", "oracle",
    ]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn lstm_train_writes_a_model_that_backtest_loads() {
    let dir = scratch_dir("lstm");
    let model = dir.join("lstm.json");
    let trace = trace_path().display().to_string();
    let out = infadaptd(&[
        "forecast",
        "train",
        "--trace",
        &trace,
        "--start",
        "1180800",
        "--end",
        "1209600",
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
    let report = backtest("lstm", &["--lstm-model", model.to_str().unwrap()]);
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
        "1209600",
        "--end",
        "1210600",
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
        "1209600",
        "--end",
        "1210600",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema version 7"));
}
