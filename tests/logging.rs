//! The log of `infadaptd run` on a pipe: plain text with no colour codes when stderr is not a
//! terminal (whatever `TERM` says and with `NO_COLOR` unset), and with `--log-format json`
//! one JSON object per line with the message, level, timestamp and the pipeline's span.
//! The service runs on the simulated backend with a 1 s period and no HTTP API.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, Daemon, scratch};

/// The daemon tests' service configuration with the HTTP API turned off.
fn config_text(state_dir: &Path) -> String {
    let with_api = support::config_text(0, state_dir, 60);
    let without = with_api.replace("listen = \"127.0.0.1:0\"", "enabled = false");
    assert_ne!(with_api, without, "the HTTP listener line moved");
    without
}

/// `infadaptd run ARGS` as a terminal user would start it, colours not turned off.
fn infadaptd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infadaptd"));
    command
        .arg("run")
        .args(args)
        .env("RUST_LOG", "info")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    command
}

/// Runs the service with `extra` arguments until its backend exists, stops it with SIGTERM
/// and gives its log.
fn service_log(name: &str, extra: &[&str]) -> String {
    let dir = scratch(name);
    let config = dir.join("infadaptd.toml");
    std::fs::write(&config, config_text(&dir.join("state"))).expect("config");
    let config = config.to_str().expect("UTF-8 path").to_owned();
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(extra);
    let mut daemon = Daemon::spawn(infadaptd(&args));
    assert!(
        daemon.wait_log("backend created", Duration::from_secs(20)),
        "no backend:\n{}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    // The reader thread may still hold the last lines.
    assert!(
        daemon.wait_log("stopped", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let _ = std::fs::remove_dir_all(&dir);
    log
}

#[test]
fn the_log_on_a_pipe_has_no_colour_codes() {
    let log = service_log("log-plain", &[]);
    assert!(log.contains("ready"), "{log}");
    assert!(log.contains("backend created"), "{log}");
    assert!(!log.contains("\x1b["), "colour codes in the log:\n{log:?}");

    // The demo's log, beside its decisions on stdout, too.
    let out = infadaptd(&["--demo", "--duration", "30"])
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("ready"), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in the log:\n{stderr:?}"
    );
}

#[test]
fn the_json_log_is_one_object_per_line_with_a_message() {
    let log = service_log("log-json", &["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for line in &lines {
        assert!(line["message"].is_string(), "no message: {line}");
        assert!(line["level"].is_string(), "no level: {line}");
        assert!(line["timestamp"].is_string(), "no timestamp: {line}");
    }
    let ready = lines
        .iter()
        .find(|l| l["message"] == "ready")
        .expect("a ready line");
    assert_eq!(
        (&ready["level"], &ready["pipelines"]),
        (&"INFO".into(), &1.into())
    );
    let created = lines
        .iter()
        .find(|l| l["message"] == "backend created")
        .expect("a backend line");
    assert_eq!(created["backend"], "sim", "{created}");
    assert_eq!(created["span"]["pipeline"], "resnet", "{created}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");
}
