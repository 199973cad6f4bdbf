//! The LSTM forecaster in the service end to end: `forecast train` on a generated workload
//! writes a small model, `validate` accepts a configuration with `model = "lstm"` naming it
//! and reports a mismatched one at the `lstm_model` key, `run` on the simulated backend
//! forecasts with it (every decision says `lstm`), a reload after the file was retrained in
//! place takes the new content, a reload with a truncated file is rejected at the key and
//! the running model stays, and a restart does not restore the old network's state over
//! the new one.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    self, Daemon, free_port, http_get, infadaptd, pipeline_status, scratch, status_of,
};

/// Fifty minutes of a generated per-second workload: a 10-minute wave between 15 and 45
/// requests per second with a little deterministic jitter.
fn write_workload(path: &Path) {
    let text: String = (0..3000)
        .map(|t| {
            let wave = (2.0 * std::f64::consts::PI * f64::from(t) / 600.0).sin();
            let jitter = f64::from((t * 7919) % 11) / 5.0;
            format!("{:.2}\n", 30.0 + 15.0 * wave + jitter)
        })
        .collect();
    std::fs::write(path, text).expect("write the workload");
}

/// Trains a small network (5-s buckets, a 30-s window, 10-s horizon, a few units and
/// epochs: seconds in a debug build) on `trace` into `out`.
fn train(trace: &Path, out: &Path, seed: &str) {
    let (trace, out) = (trace.to_str().expect("UTF-8"), out.to_str().expect("UTF-8"));
    let result = infadaptd(&[
        "forecast",
        "train",
        "--trace",
        trace,
        "--out",
        out,
        "--bucket",
        "5",
        "--window",
        "6",
        "--units",
        "4",
        "--horizon",
        "10",
        "--epochs",
        "2",
        "--seed",
        seed,
        "--json",
    ]);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report: Value = serde_json::from_slice(&result.stdout).expect("JSON report");
    assert_eq!(report["schema_version"], 1, "{report}");
}

/// The daemon tests' service configuration (1-s period, simulated backend) forecasting
/// with the LSTM in `models/resnet.lstm.json`, plus `extra` keys in `[pipeline.forecast]`.
fn config_text(port: u16, state_dir: &Path, extra: &str) -> String {
    support::config_text(port, state_dir, 40)
        + "[pipeline.forecast]\nmodel = \"lstm\"\nlstm_model = \"models/resnet.lstm.json\"\n"
        + extra
}

/// `file:line:col: field: ` of the `lstm_model` value in `text` read from `file`.
fn lstm_model_position(file: &Path, text: &str) -> String {
    let line = text
        .lines()
        .position(|l| l.starts_with("lstm_model = "))
        .expect("lstm_model line")
        + 1;
    format!(
        "{}:{line}:14: pipeline[0].forecast.lstm_model: ",
        file.display()
    )
}

fn decisions(port: u16) -> Vec<Value> {
    http_get(port, "/v1/decisions?pipeline=resnet&limit=1000")
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|v| v["decisions"].as_array().cloned())
        .unwrap_or_default()
}

fn lstm_fingerprint(port: u16) -> Option<String> {
    let status = status_of(port)?;
    pipeline_status(&status, "resnet")["lstm_model"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

/// Waits for `count` decisions made after `after` (a tick), each from the LSTM with a
/// finite forecast; returns them.
fn wait_for_lstm_decisions(daemon: &Daemon, port: u16, after: u64, count: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let found = support::wait_until(Duration::from_secs(60), || {
        seen = decisions(port)
            .into_iter()
            .filter(|d| d["tick"].as_u64().is_some_and(|t| t > after))
            .collect();
        seen.len() >= count
    });
    assert!(
        found,
        "{} decisions after tick {after}:\n{}",
        seen.len(),
        daemon.log()
    );
    for d in &seen {
        assert_eq!(d["forecaster"], "lstm", "{d}");
        let forecast = d["decision"]["forecast_rps"].as_f64();
        assert!(forecast.is_some_and(|f| f.is_finite() && f >= 0.0), "{d}");
    }
    seen
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn the_daemon_forecasts_with_a_trained_lstm_and_reloads_a_retrained_one() {
    let dir = scratch("lstm-run");
    let state_dir = dir.join("state");
    let trace = dir.join("workload.txt");
    let model = dir.join("models/resnet.lstm.json");
    std::fs::create_dir_all(dir.join("models")).expect("models dir");
    write_workload(&trace);
    train(&trace, &model, "1");

    // validate: the configuration as it will run, then one whose horizon does not fit.
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    let text = config_text(port, &state_dir, "");
    std::fs::write(&config, &text).expect("config");
    let checked = infadaptd(&["validate", "--config", config.to_str().expect("UTF-8")]);
    assert_eq!(
        checked.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mismatched = dir.join("mismatched.toml");
    let bad_text = config_text(port, &state_dir, "horizon_s = 30\n");
    std::fs::write(&mismatched, &bad_text).expect("config");
    let refused = infadaptd(&["validate", "--config", mismatched.to_str().expect("UTF-8")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}`{}` forecasts the maximum of the next 10 s, but horizon_s is 30",
            lstm_model_position(&mismatched, &bad_text),
            model.display()
        )),
        "{stderr}"
    );

    // run: every decision forecast by the LSTM; the status names the model file.
    let mut service = Daemon::spawn(support::run_command(&[], &config));
    let first = wait_for_lstm_decisions(&service, port, 0, 3);
    assert!(
        service
            .log()
            .contains("forecasting with the trained LSTM model")
    );
    let status = status_of(port).expect("status");
    let resnet = pipeline_status(&status, "resnet");
    assert_eq!(resnet["forecaster"], "lstm", "{resnet}");
    assert_eq!(
        resnet["lstm_model"]["path"],
        model.display().to_string(),
        "{resnet}"
    );
    let trained_first = lstm_fingerprint(port).expect("fingerprint");

    // Retrained in place: same path, new content; a reload takes it without a restart.
    train(&trace, &model, "2");
    let reconfigured = count(&service.log(), "reconfigured in place");
    service.signal("HUP");
    assert!(
        support::wait_until(Duration::from_secs(20), || count(
            &service.log(),
            "reconfigured in place"
        ) > reconfigured),
        "the new model content was not taken:\n{}",
        service.log()
    );
    let trained_second = lstm_fingerprint(port).expect("fingerprint");
    assert_ne!(trained_first, trained_second);
    let last_tick = first.iter().filter_map(|d| d["tick"].as_u64()).max();
    let now = decisions(port)
        .iter()
        .filter_map(|d| d["tick"].as_u64())
        .max()
        .or(last_tick)
        .unwrap_or(0);
    wait_for_lstm_decisions(&service, port, now, 2);

    // A truncated file is refused at the key; the running model stays.
    let saved = std::fs::read(&model).expect("model");
    std::fs::write(&model, &saved[..saved.len() / 2]).expect("truncate");
    service.signal("HUP");
    assert!(
        service.wait_log("reload rejected", Duration::from_secs(20)),
        "{}",
        service.log()
    );
    let log = service.log();
    assert!(
        log.contains(&format!(
            "{}`{}`: invalid model file: the file ends early (truncated?)",
            lstm_model_position(&config, &text),
            model.display()
        )),
        "{log}"
    );
    assert_eq!(
        lstm_fingerprint(port).as_deref(),
        Some(trained_second.as_str())
    );

    service.signal("TERM");
    assert_eq!(
        service.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        service.log()
    );

    // Restarted with yet another network: the saved state of the old one is not restored
    // over it, and the new one forecasts.
    train(&trace, &model, "3");
    let mut restarted = Daemon::spawn(support::run_command(&[], &config));
    wait_for_lstm_decisions(&restarted, port, 0, 2);
    assert!(
        restarted
            .log()
            .contains("ran another trained LSTM model than the configured one"),
        "{}",
        restarted.log()
    );
    restarted.signal("TERM");
    assert_eq!(restarted.wait_exit(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
