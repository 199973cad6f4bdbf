//! Pause and resume over the API on the daemon's own pipeline task and the linked simulated
//! backend: while paused the loop keeps deciding, every decision that would change the plan
//! is recorded as not applied (`paused`) and the plan in force stays the same tick after
//! tick; after a resume the next such decision is applied. Then the real binary: the
//! `pause` and `resume` commands through the API, and a pause kept across a restart.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infadaptd::api::access::WriteAccess;
use infadaptd::api::router;
use infadaptd::config::{PipelineConfig, parse_config};
use infadaptd::plugin_host::PluginHost;
use infadaptd::problem_file::read_catalog;
use infadaptd::service::pipeline::{TaskOptions, run_pipeline};
use infadaptd::service::status::{DecisionRecord, Registry};
use tokio::sync::{mpsc, watch};

use crate::support::{Daemon, config_text, free_port, http_get, repo_root, scratch, wait_until};

const TOKEN: &str = "pause-test-token-0123456789";

/// One stage on the shipped ResNet catalog and the linked simulator: the initial plan is
/// sized for 5 rps and the simulated load runs at 60 to 120 rps, so every decision wants
/// more capacity than the plan in force.
fn pipeline_config() -> PipelineConfig {
    let text = r#"
[daemon]
period_s = 1

[[pipeline]]
name = "resnet"
catalog = "catalogs/resnet-synthetic.toml"
slo_ms = 750
initial_load_rps = 5

[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50"]
batch_sizes = [1]
core_options = [1, 2]
max_replicas = 20

[pipeline.fast_path]
enabled = false

[pipeline.backend]
type = "sim"
seed = 7
trough_rps = 60
peak_rps = 120
day_s = 600
"#;
    let base = repo_root().join("etc");
    let config = parse_config("pause.toml", text, &base, &mut |reference: &str| {
        read_catalog(&base.join(reference))
    })
    .unwrap_or_else(|d| panic!("{d}"));
    config.pipelines.into_iter().next().expect("one pipeline")
}

/// POST `path` with the bearer token: the status code.
fn post(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

/// Waits up to `timeout` for `check` on the pipeline's decisions.
fn wait_for(
    registry: &Registry,
    timeout: Duration,
    check: impl Fn(&[DecisionRecord]) -> bool,
) -> Vec<DecisionRecord> {
    let start = Instant::now();
    loop {
        let decisions = registry.decisions(Some("resnet"), 10_000);
        if check(&decisions) {
            return decisions;
        }
        assert!(
            start.elapsed() < timeout,
            "not within {timeout:?}: {} decisions",
            decisions.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_paused_pipeline_decides_but_keeps_its_plan_until_resumed() {
    let dir = scratch("pause");
    let registry = Registry::new(10_000);
    // Known to the API before the task runs, as the service does.
    registry.update("resnet", |s| s.state = "starting".to_owned());
    let options = TaskOptions {
        dry_run: false,
        state_dir: Some(dir.clone()),
        backend_timeout: Duration::from_secs(60),
        plugins: Arc::new(PluginHost::new(Vec::new(), None)),
        // A 1-s period every 25 ms of wall time.
        speed: 40.0,
        on_decision: None,
        max_ticks: None,
    };
    // The API and the pipeline task run on their own thread; this one plays the operator.
    let (stop, stopped) = watch::channel(false);
    let (port_sender, port) = std::sync::mpsc::channel();
    let (go, start) = tokio::sync::oneshot::channel::<()>();
    let service = {
        let registry = registry.clone();
        let access = WriteAccess::with_token(TOKEN.to_owned(), Some(dir.clone()));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let _ = port_sender.send(listener.local_addr().expect("address").port());
                let api = router(registry.clone(), access, Default::default());
                tokio::spawn(async move { axum::serve(listener, api).await });
                if start.await.is_err() {
                    return;
                }
                let (_reconfigure, reconfigured) = mpsc::unbounded_channel();
                run_pipeline(pipeline_config(), options, registry, stopped, reconfigured).await;
            });
        })
    };
    let port = port
        .recv_timeout(Duration::from_secs(30))
        .expect("the API listens");
    assert_eq!(post(port, "/v1/pipelines/resnet/pause"), 200);
    let _ = go.send(());

    // Paused: ten ticks, the plan in force the same at every one of them.
    let start_plan = wait_for(&registry, Duration::from_secs(60), |d| !d.is_empty())
        .first()
        .and_then(|_| registry.snapshot().into_iter().next())
        .and_then(|s| s.plan)
        .expect("the starting plan");
    let paused = wait_for(&registry, Duration::from_secs(120), |d| {
        let status = registry.snapshot();
        assert_eq!(status[0].plan.as_ref(), Some(&start_plan), "the plan moved");
        d.len() >= 10
    });
    for record in &paused {
        assert!(!record.applied, "tick {} applied while paused", record.tick);
        if record.decision.plan != start_plan {
            assert_eq!(record.not_applied.as_deref(), Some("paused"));
        }
    }
    assert!(
        paused
            .iter()
            .any(|r| r.not_applied.as_deref() == Some("paused")),
        "the loop never wanted a change: {:?}",
        paused.iter().map(|r| &r.decision.plan).collect::<Vec<_>>()
    );
    let status = &registry.snapshot()[0];
    assert!(status.paused);
    assert_eq!(status.reconfigurations, 0);
    let (code, body) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("infadapt_paused{pipeline=\"resnet\"} 1"),
        "{body}"
    );

    // Resumed: the next decision that changes the plan is applied.
    assert_eq!(post(port, "/v1/pipelines/resnet/resume"), 200);
    let resumed = wait_for(&registry, Duration::from_secs(120), |d| {
        d.iter().any(|r| r.applied)
    });
    let first_applied = resumed.iter().find(|r| r.applied).expect("applied");
    assert!(first_applied.tick > paused.last().map_or(0, |r| r.tick));
    let status = &registry.snapshot()[0];
    assert!(!status.paused);
    assert_ne!(status.plan.as_ref(), Some(&start_plan));
    let (_, body) = http_get(port, "/metrics").expect("metrics");
    assert!(
        body.contains("infadapt_paused{pipeline=\"resnet\"} 0"),
        "{body}"
    );

    let _ = stop.send(true);
    service.join().expect("the service thread");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `infadaptd pause|resume resnet --config FILE`: the exit code and stdout.
fn cli(verb: &str, config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args([verb, "resnet", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run infadaptd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `infadaptd run --config FILE` without a service manager.
fn start(config: &std::path::Path) -> Daemon {
    Daemon::spawn(crate::support::run_command(&[], config))
}

/// Whether `/v1/status` says the pipeline is paused, once the service answers.
fn paused_in_status(port: u16, daemon: &Daemon) -> bool {
    let mut paused = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            paused = http_get(port, "/v1/status")
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|s| s["pipelines"][0]["paused"].as_bool());
            paused.is_some()
        }),
        "no status; log:\n{}",
        daemon.log()
    );
    paused.unwrap_or_default()
}

#[test]
fn the_cli_pauses_through_the_api_and_the_pause_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch("pause-restart");
    let token = dir.join("api-token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let port = free_port();
    let config = dir.join("infadaptd.toml");
    let text = config_text(port, &dir.join("state"), 60).replace(
        &format!("listen = \"127.0.0.1:{port}\""),
        &format!(
            "listen = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"",
            token.display()
        ),
    );
    std::fs::write(&config, text).expect("config");

    let mut daemon = start(&config);
    assert!(!paused_in_status(port, &daemon));
    let (code, stdout, stderr) = cli("pause", &config);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "pipeline `resnet` paused: its decisions are recorded, not applied"
    );
    assert!(paused_in_status(port, &daemon));
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        daemon.log()
    );

    let mut daemon = start(&config);
    assert!(paused_in_status(port, &daemon), "{}", daemon.log());
    assert!(
        daemon.wait_log(
            "paused (kept from before the restart)",
            Duration::from_secs(5)
        ),
        "{}",
        daemon.log()
    );
    let (code, stdout, stderr) = cli("resume", &config);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "pipeline `resnet` resumed: its decisions are applied again"
    );
    assert!(!paused_in_status(port, &daemon));
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        daemon.log()
    );

    // A token file others may read stops the command before it sends anything.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, stderr) = cli("pause", &config);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("daemon.http.token_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
