//! `infadaptd run` and `validate` as a service: readiness on a notification socket the test
//! listens on, the HTTP API, a rejected reload that keeps the old configuration, a clean
//! stop on SIGTERM with state written, and a restart that resumes from it without
//! reconfiguring the backend. Uses the simulated backend with a 1 s period. Then plugin
//! backends that panic, hang or have the wrong ABI, contained while the simulated pipeline
//! ticks on.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, config_text, free_port, http_get, metric, pipeline_status, pipeline_text, run_validate,
    scratch, status_of, wait_notify, wait_until,
};

#[test]
fn service_lifecycle_ready_http_reload_stop_and_resume() {
    let dir = scratch("lifecycle");
    let state_dir = dir.join("state");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    std::fs::write(&config, config_text(port, &state_dir, 60)).expect("config");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    let mut daemon = Daemon::start(&config, &notify_path);
    wait_notify(&notify, "READY=1", Duration::from_secs(20));

    // The HTTP API answers, and decisions arrive every period.
    assert!(
        wait_until(Duration::from_secs(15), || {
            http_get(port, "/v1/decisions").is_some_and(|(_, b)| b.contains("\"tick\":2"))
        }),
        "no decisions; log:\n{}",
        daemon.log()
    );
    let (code, body) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for metric in [
        "infadapt_forecast_rps{pipeline=\"resnet\"}",
        "infadapt_provisioned_rps{pipeline=\"resnet\"}",
        "infadapt_plan_replicas{pipeline=\"resnet\",stage=\"classify\"",
        "infadapt_reconfigurations_total{pipeline=\"resnet\"}",
        "infadapt_degraded{pipeline=\"resnet\"} 0",
        "infadapt_slo_seconds{pipeline=\"resnet\"} 0.75",
        "infadapt_build_info{version=\"",
        "\nprocess_resident_memory_bytes ",
        "\nprocess_start_time_seconds ",
    ] {
        assert!(body.contains(metric), "{metric} missing from:\n{body}");
    }
    // The real exposition follows the text format; requests observed by the simulated
    // backend count up, and the window has a value once some finished.
    let families = crate::metrics::check_exposition(&body);
    assert_eq!(
        families
            .get("infadapt_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let mut body = body;
    assert!(
        wait_until(Duration::from_secs(10), || {
            body = http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            metric(
                &body,
                "infadapt_requests_completed_total{pipeline=\"resnet\"}",
            )
            .is_some_and(|v| v > 0.0)
        }),
        "no completed requests in:\n{body}"
    );
    assert!(
        metric(
            &body,
            "infadapt_requests_arrived_total{pipeline=\"resnet\"}"
        )
        .is_some_and(|v| v > 0.0),
        "{body}"
    );
    let attainment = metric(
        &body,
        "infadapt_slo_attainment_ratio{pipeline=\"resnet\",window=\"5m\"}",
    );
    assert!(
        attainment.is_some_and(|v| (0.0..=1.0).contains(&v)),
        "{body}"
    );
    // No router: no request duration series for the pipeline.
    assert!(!body.contains("infadapt_request_duration_seconds_count{pipeline=\"resnet\"}"));
    let (code, body) = http_get(port, "/v1/status").expect("status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["pipelines"][0]["name"], "resnet");
    assert_eq!(status["pipelines"][0]["state"], "running");
    assert!(
        status["pipelines"][0]["plan"]["stages"].is_array(),
        "{status}"
    );
    assert_eq!(http_get(port, "/healthz").expect("healthz").0, 200);
    // Requests the API cannot answer as asked: a JSON error, not an empty answer.
    let (code, body) = http_get(port, "/v1/decisions?pipeline=nope").expect("unknown");
    assert_eq!(code, 404, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("error is JSON");
    assert_eq!(error["error"], "unknown pipeline `nope`; known: `resnet`");
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=many",
        "limit=10001",
        "pipline=resnet",
    ] {
        let (code, body) = http_get(port, &format!("/v1/decisions?{bad}")).expect("bad");
        assert_eq!(code, 400, "{bad}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("error is JSON");
        assert!(error["error"].is_string(), "{bad}: {body}");
    }
    let (code, body) = http_get(port, "/v1/decisions?pipeline=resnet&limit=1").expect("one");
    assert_eq!(code, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).expect("decisions are JSON");
    assert_eq!(one["decisions"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["decisions"][0]["pipeline"], "resnet");

    // A broken configuration is rejected on SIGHUP with every problem; the old one runs on.
    let broken = config_text(port, &state_dir, 60)
        .replace("slo_ms = 750", "slo_ms = -5")
        .replace("max_replicas = 10", "max_replicas = 10\nbogus = true");
    std::fs::write(&config, broken).expect("broken config");
    daemon.signal("HUP");
    assert!(
        daemon.wait_log("reload rejected", Duration::from_secs(10)),
        "no rejection logged:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("pipeline[0].slo_ms: must be in (0, 3600000]"),
        "{log}"
    );
    assert!(
        log.contains("pipeline[0].stage[0].bogus: unknown field"),
        "{log}"
    );
    wait_notify(&notify, "READY=1", Duration::from_secs(5));
    let ticks_before = status_of(port)
        .and_then(|v| v["pipelines"][0]["ticks"].as_u64())
        .expect("ticks");
    assert!(
        wait_until(Duration::from_secs(10), || {
            status_of(port)
                .and_then(|v| v["pipelines"][0]["ticks"].as_u64())
                .is_some_and(|t| t > ticks_before)
        }),
        "the old configuration stopped ticking after a rejected reload"
    );

    // New control settings only (period, damping): taken in place on SIGHUP. The task and
    // its backend run on (its tick count goes on rather than restarting), at the new period.
    let ticks_before = status_of(port)
        .and_then(|v| v["pipelines"][0]["ticks"].as_u64())
        .expect("ticks");
    daemon.reload_in_place(
        &config,
        &config_text(port, &state_dir, 60).replace(
            "initial_load_rps = 30\n",
            "initial_load_rps = 30\nperiod_s = 2\n[pipeline.damping]\nmin_dwell_s = 60\n",
        ),
    );
    wait_notify(&notify, "READY=1", Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(10), || {
            status_of(port).is_some_and(|v| {
                v["pipelines"][0]["period_s"].as_f64() == Some(2.0)
                    && v["pipelines"][0]["ticks"]
                        .as_u64()
                        .is_some_and(|t| t > ticks_before)
            })
        }),
        "the reconfigured pipeline does not tick on at the new period: {:?}\n{}",
        status_of(port),
        daemon.log()
    );
    let log = daemon.log();
    assert!(!log.contains("(re)started"), "restarted:\n{log}");
    assert_eq!(log.matches("backend created").count(), 1, "{log}");

    // SIGTERM: STOPPING, exit 0 in time, state written.
    std::fs::write(&config, config_text(port, &state_dir, 60)).expect("config");
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    wait_notify(&notify, "STOPPING=1", Duration::from_secs(2));
    let state_file = state_dir.join("pipeline-resnet.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state written")).expect("JSON");
    assert_eq!(saved["pipeline"], "resnet");
    assert!(saved["clock_s"].as_f64().expect("loop clock saved") > 0.0);
    assert!(
        saved["forecaster"].is_object(),
        "forecaster state saved: {saved}"
    );
    assert!(
        !saved["plan"]["stages"]
            .as_array()
            .expect("stages")
            .is_empty()
    );

    // A restart resumes from the saved plan and does not reconfigure the backend for it.
    let mut daemon = Daemon::start(&config, &notify_path);
    wait_notify(&notify, "READY=1", Duration::from_secs(20));
    assert!(
        daemon.wait_log("resumed", Duration::from_secs(10)),
        "no resume logged:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("saved plan"), "{log}");
    assert!(
        log.contains("restored the forecaster's state"),
        "forecaster not restored:\n{log}"
    );
    assert!(
        !log.contains("reason=\"startup\""),
        "re-applied at startup:\n{log}"
    );
    daemon.signal("INT");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_service_manager_that_stops_reading_notifications_does_not_stall_the_daemon() {
    let dir = scratch("notify-stall");
    let state_dir = dir.join("state");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    std::fs::write(&config, config_text(port, &state_dir, 60)).expect("config");
    let notify_path = dir.join("notify.sock");
    // Bound but never read: with a 2 ms watchdog (a keep-alive every millisecond) the
    // socket's queue is full within a second, and a blocking send would stop everything.
    let _notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut daemon = Daemon::start_with_watchdog(&config, &notify_path, Some(2_000));
    let tick = |port| {
        http_get(port, "/v1/status")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|status| status["pipelines"][0]["ticks"].as_u64())
    };
    assert!(
        wait_until(Duration::from_secs(20), || tick(port)
            .is_some_and(|t| t >= 2)),
        "the daemon did not start ticking; log:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = tick(port).expect("status answers");
    assert!(
        wait_until(Duration::from_secs(10), || tick(port)
            .is_some_and(|t| t >= before + 2)),
        "ticks stopped at {before} while notifications were not read; log:\n{}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("not reading notifications"),
        "{}",
        daemon.log()
    );
}

#[test]
fn validate_lists_every_problem_and_exits_64() {
    let dir = scratch("validate");
    let config = dir.join("c.toml");
    let good = config_text(9, &dir, 60);
    std::fs::write(&config, &good).expect("config");
    let out = run_validate(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = good
        .replace("period_s = 1", "period_s = 0")
        .replace("listen = \"127.0.0.1:9\"", "listen = \"nowhere\"")
        .replace(
            "variants = [\"resnet18\", \"resnet50\"]",
            "variants = [\"resnet18\", \"resnet9000\"]",
        )
        .replace("type = \"sim\"", "type = \"sim\"\nwarp = 9");
    std::fs::write(&config, bad).expect("config");
    let out = run_validate(&config);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "daemon.period_s: must be in (0, 86400], got 0",
        "daemon.http.listen:",
        "pipeline[0].stage[0].variants: variant `resnet9000` is not in the catalog",
        "warp",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    let prefix = format!("{}:", config.display());
    assert!(stderr.lines().all(|l| l.starts_with(&prefix)), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_runs_on_the_embedded_default_and_exits_by_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["run", "--demo", "--duration", "120", "--speed", "2000"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("t=   10s resnet"), "{stdout}");
    assert!(
        stdout.contains("summary after 120 virtual seconds"),
        "{stdout}"
    );
    assert!(stdout.contains("resnet: 12 ticks"), "{stdout}");
}

fn plugin_service_config(port: u16, state_dir: &Path, plugin_dir: &Path) -> String {
    let mut text = format!(
        r#"
[daemon]
period_s = 1
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
grace_s = 3
backend_timeout_s = 1
[daemon.http]
listen = "127.0.0.1:{port}"
"#,
        state = state_dir.display(),
        plugins = plugin_dir.display(),
    );
    text.push_str(&pipeline_text(
        "steady",
        "type = \"sim\"\npeak_rps = 60\nday_s = 60",
    ));
    text.push_str(&pipeline_text(
        "panicky",
        "type = \"misbehave\"\nobserve = \"panic\"",
    ));
    text.push_str(&pipeline_text(
        "stuck",
        "type = \"misbehave\"\nobserve = \"hang\"\nhang_ms = 60000",
    ));
    text.push_str(&pipeline_text("old-abi", "type = \"wrong_abi\""));
    text.push_str(&pipeline_text(
        "gpus",
        "type = \"misbehave\"\ngpu_mem_mb = 2500",
    ));
    text
}

#[test]
fn misbehaving_plugins_are_contained_while_other_pipelines_run() {
    use crate::plugins::{TempDir, WRONG_ABI, compile_c_text, install_rust_plugin};
    let plugin_dir = TempDir::new("daemon");
    install_rust_plugin(
        &plugin_dir,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    compile_c_text(&plugin_dir, WRONG_ABI, "libwrong_abi.so");
    let dir = scratch("plugins");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    let text = plugin_service_config(port, &dir.join("state"), plugin_dir.path());

    // `validate` names a missing library.
    let missing = text.replace("type = \"wrong_abi\"", "type = \"nosuch\"");
    std::fs::write(&config, &missing).expect("config");
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("pipeline[3].backend.type: no plugin library for backend `nosuch` in"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:", config.display())),
        "{stderr}"
    );
    // It loads them as `run` would (the misbehaving ones pass: their keys are fine), and
    // refuses the one built for another ABI; `run` starts that pipeline degraded instead.
    std::fs::write(&config, &text).expect("config");
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("pipeline[3].backend.type: plugin ")
            && stderr.contains("refused: built for plugin ABI version 99"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut daemon = Daemon::start(&config, &notify_path);
    wait_notify(&notify, "READY=1", Duration::from_secs(20));

    let contained = |status: &serde_json::Value| {
        let steady = pipeline_status(status, "steady");
        let kind = |name: &str| pipeline_status(status, name)["plugin"]["degraded"]["kind"].clone();
        steady["ticks"].as_u64().unwrap_or(0) >= 3
            && kind("panicky") == "panic"
            && kind("stuck") == "timeout"
            && kind("old-abi") == "load"
    };
    let mut last = serde_json::Value::Null;
    let reached = wait_until(Duration::from_secs(12), || {
        last = status_of(port).unwrap_or(serde_json::Value::Null);
        contained(&last)
    });
    assert!(
        reached,
        "not contained as expected:\n{last:#}\nlog:\n{}",
        daemon.log()
    );

    // A backend that reports its GPUs bounds that pipeline's plans by their memory.
    assert!(
        wait_until(Duration::from_secs(10), || {
            status_of(port)
                .is_some_and(|s| pipeline_status(&s, "gpus")["gpu_mem_limit_mb"] == 2500.0)
        }),
        "the reported GPU memory is not the pipeline's limit:\n{last:#}"
    );
    assert!(pipeline_status(&last, "steady")["gpu_mem_limit_mb"].is_null());

    // Degraded with the reason, in /v1/status.
    let steady = pipeline_status(&last, "steady");
    assert_eq!(steady["degraded"], false, "{steady:#}");
    assert_eq!(steady["plugin"]["origin"], "linked in");
    assert_eq!(steady["plugin"]["panics"], 0);
    let panicky = pipeline_status(&last, "panicky");
    assert_eq!(panicky["degraded"], true);
    assert_eq!(panicky["state"], "running");
    let message = panicky["plugin"]["degraded"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("observe panicked") && message.contains("asked to panic in observe"),
        "{message}"
    );
    assert!(panicky["plugin"]["panics"].as_u64().unwrap_or(0) >= 1);
    let stuck = pipeline_status(&last, "stuck");
    assert_eq!(stuck["degraded"], true);
    assert_eq!(stuck["plugin"]["hung"], true, "{stuck:#}");
    assert_eq!(stuck["plugin"]["timeouts"], 1, "{stuck:#}");
    let message = stuck["plugin"]["degraded"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.ends_with("observe timed out after 1 s"),
        "{message}"
    );
    let old = pipeline_status(&last, "old-abi");
    assert_eq!(old["degraded"], true);
    let message = old["plugin"]["degraded"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("libwrong_abi.so refused: built for plugin ABI version 99"),
        "{message}"
    );
    assert!(old["plugin"]["create_failures"].as_u64().unwrap_or(0) >= 1);

    // The simulated pipeline keeps ticking.
    let ticks = steady["ticks"].as_u64().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            status_of(port).is_some_and(|s| {
                pipeline_status(&s, "steady")["ticks"].as_u64().unwrap_or(0) > ticks
            })
        }),
        "the sim pipeline stopped ticking:\n{}",
        daemon.log()
    );

    // And in /metrics.
    let (code, body) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for (series, wanted) in [
        ("infadapt_degraded{pipeline=\"steady\"}", Some(0.0)),
        ("infadapt_degraded{pipeline=\"panicky\"}", Some(1.0)),
        ("infadapt_degraded{pipeline=\"stuck\"}", Some(1.0)),
        ("infadapt_degraded{pipeline=\"old-abi\"}", Some(1.0)),
        (
            "infadapt_plugin_timeouts_total{pipeline=\"stuck\"}",
            Some(1.0),
        ),
        ("infadapt_plugin_hung{pipeline=\"stuck\"}", Some(1.0)),
        (
            "infadapt_degraded_reason{pipeline=\"panicky\",backend=\"misbehave\",reason=\"panic\"}",
            Some(1.0),
        ),
        (
            "infadapt_degraded_reason{pipeline=\"old-abi\",backend=\"wrong_abi\",reason=\"load\"}",
            Some(1.0),
        ),
        ("infadapt_plugin_panics_total{pipeline=\"panicky\"}", None),
        ("infadapt_plugin_errors_total{pipeline=\"old-abi\"}", None),
        ("infadapt_plugin_calls_total{pipeline=\"steady\"}", None),
        ("infadapt_tick_seconds_count{pipeline=\"steady\"}", None),
    ] {
        let value = metric(&body, series);
        match wanted {
            Some(v) => assert_eq!(value, Some(v), "{series} in:\n{body}"),
            None => assert!(value.is_some_and(|v| v >= 1.0), "{series} in:\n{body}"),
        }
    }
    assert!(
        !body.contains("infadapt_degraded_reason{pipeline=\"steady\""),
        "{body}"
    );
    let (code, health) = http_get(port, "/healthz").expect("healthz");
    assert_eq!(code, 503, "{health}");
    assert_eq!(http_get(port, "/livez").map(|(c, _)| c), Some(200));
    assert!(
        health.contains("panicky") && health.contains("stuck"),
        "{health}"
    );

    // SIGTERM exits 0 in time although a plugin call still hangs.
    let stopping = Instant::now();
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
    assert!(dir.join("state/pipeline-steady.json").exists());
    let _ = std::fs::remove_dir_all(dir);
}
