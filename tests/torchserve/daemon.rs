//! The real `infadaptd` binary with `type = "torchserve"` (the plugin loaded from
//! `plugin_dirs`) against a real TorchServe: a load that rises and falls makes the daemon
//! plan 1 → 3+ → 1 replicas, and the registrations on the server follow each plan. The load
//! goes to the first replica, which the plugin keeps through every scale-down (spreading
//! it over the endpoints is the router's job; the plugin tests cover that).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use infadapt_plugin_abi::{PlanMessage, PluginObservation};
use serde_json::{Value, json};

use super::fixture::{Load, LoadReport, SMALL, TorchServe, assert_no_failures};
use crate::daemon::{Daemon, free_port, pipeline_status, scratch, status_of};
use crate::plugins::{TempDir, install_rust_plugin};

/// 15 requests/s per replica at most 80 % utilisation: 12 requests/s each.
const CATALOG: &str = r#"
schema = 1
[[variant]]
name = "small"
accuracy = 0.7
load_time_s = 1.0
points = [ { batch = 1, cores = 1, p99_ms = 40.0, throughput_rps = 15.0 } ]
"#;

fn daemon_config(dir: &Path, port: u16, plugins: &Path, server: &TorchServe) -> String {
    format!(
        r#"
[daemon]
period_s = 1
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
grace_s = 3
[daemon.http]
listen = "127.0.0.1:{port}"

[[pipeline]]
name = "images"
catalog = "{catalog}"
slo_ms = 1000
initial_load_rps = 4
[[pipeline.stage]]
name = "classify"
variants = ["small"]
batch_sizes = [1]
core_options = [1]
max_replicas = 4
[pipeline.forecast]
model = "naive"
basis = "point"
[pipeline.damping]
enabled = false
[pipeline.backend]
type = "torchserve"
management_url = "http://127.0.0.1:{management}"
inference_url = "http://127.0.0.1:{inference}"
metrics_url = "http://127.0.0.1:{metrics}/metrics"
drain_s = 1.0
max_batch_delay_ms = 10
"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
        catalog = dir.join("catalog.toml").display(),
        management = server.management_port,
        inference = server.inference_port,
        metrics = server.metrics_port,
    )
}

/// An observation whose only ready endpoint is the first replica.
fn first_replica(server: &TorchServe) -> PluginObservation {
    let mut deployed: PlanMessage = serde_json::from_value(json!({ "stages": [{
        "stage": "classify", "assignments": [{ "variant": "small", "batch": 1, "cores": 1,
        "replicas": 1, "share": 1.0 }] }] }))
    .expect("plan");
    deployed.schema = 1;
    PluginObservation {
        deployed,
        endpoints: vec![EndpointMessage {
            stage: "classify".into(),
            variant: "small".into(),
            url: format!(
                "http://127.0.0.1:{}/predictions/small--r0",
                server.inference_port
            ),
            protocol: EndpointProtocol::RawHttp,
            state: EndpointState::Ready,
            weight: 1.0,
        }],
        ..PluginObservation::default()
    }
}

/// Replicas in the plan the daemon last applied.
fn planned_replicas(port: u16) -> Option<u64> {
    let status = status_of(port)?;
    let pipeline = pipeline_status(&status, "images");
    pipeline["plan"]["stages"][0]["assignments"]
        .as_array()?
        .iter()
        .map(|a| a["replicas"].as_u64())
        .sum()
}

/// Registrations on the server with a READY worker.
fn ready_registrations(server: &TorchServe) -> usize {
    server
        .registered()
        .iter()
        .filter(|name| {
            let url = format!("http://127.0.0.1:{}/models/{name}", server.management_port);
            super::fixture::agent(Duration::from_secs(5))
                .get(&url)
                .call()
                .ok()
                .and_then(|mut a| a.body_mut().read_to_string().ok())
                .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|doc| {
                    doc[0]["workers"]
                        .as_array()
                        .is_some_and(|w| w.iter().any(|w| w["status"] == "READY"))
                })
        })
        .count()
}

/// Waits until the daemon's plan and the server agree on a replica count that `wanted`
/// accepts; returns that count.
fn wait_converged(
    server: &TorchServe,
    daemon: &Daemon,
    port: u16,
    phase: &str,
    wanted: impl Fn(u64) -> bool,
) -> u64 {
    let started = Instant::now();
    loop {
        if let Some(planned) = planned_replicas(port)
            && wanted(planned)
            && server.registered().len() as u64 == planned
            && ready_registrations(server) as u64 == planned
        {
            return planned;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{phase}: the server did not follow the daemon's plan (planned {:?}, registered \
             {:?})\nstatus: {:?}\ndaemon log:\n{}\nserver log:\n{}",
            planned_replicas(port),
            server.registered(),
            crate::daemon::http_get(port, "/v1/status"),
            daemon.log(),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Sends `rate_rps` to the first replica until the plan and the server agree as `wanted`
/// says; returns the replica count, the load's report and how long it took.
fn load_until(
    server: &TorchServe,
    daemon: &Daemon,
    port: u16,
    rate_rps: f64,
    phase: &str,
    wanted: impl Fn(u64) -> bool,
) -> (u64, LoadReport, Duration) {
    let load = Load::start(rate_rps, &first_replica(server));
    let started = Instant::now();
    let converged = wait_converged(server, daemon, port, phase, wanted);
    let took = started.elapsed();
    (converged, load.finish(), took)
}

#[test]
fn daemon_with_the_torchserve_plugin_follows_the_load() {
    let server = TorchServe::start(&[SMALL]);
    let plugins = TempDir::new("torchserve-daemon");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_torchserve.so",
        "libinfadapt_plugin_torchserve.so",
    );
    let dir = scratch("torchserve");
    std::fs::write(dir.join("catalog.toml"), CATALOG).expect("write catalog");
    let port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(&config, daemon_config(&dir, port, plugins.path(), &server))
        .expect("write config");
    let notify = dir.join("notify.sock");
    let notifications = UnixDatagram::bind(&notify).expect("notify socket");
    // Read every notification: a full socket buffer would block the daemon's sends.
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while notifications.recv(&mut buffer).is_ok() {}
    });
    let mut daemon = Daemon::start(&config, &notify);

    // The starting plan (4 requests/s: one replica) is applied, and holds under that load.
    assert_eq!(
        wait_converged(&server, &daemon, port, "start", |n| n == 1),
        1
    );
    let load = Load::start(4.0, &first_replica(&server));
    std::thread::sleep(Duration::from_secs(4));
    let low = load.finish();
    assert_eq!(planned_replicas(port), Some(1));
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);

    // 30 requests/s needs three replicas of 12 requests/s.
    let (peak, high, up_took) = load_until(&server, &daemon, port, 30.0, "scale-up", |n| n >= 3);
    assert!(peak <= 4, "planned {peak} replicas for 30 requests/s");

    // Back to 4 requests/s: one replica again, the others drained and unregistered.
    let (end, after, down_took) = load_until(&server, &daemon, port, 4.0, "scale-down", |n| n == 1);
    assert_eq!(end, 1);
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);

    let status = status_of(port).expect("status");
    let pipeline = pipeline_status(&status, "images");
    assert_eq!(pipeline["backend"], "torchserve", "{pipeline}");
    assert_eq!(pipeline["degraded"], false, "{pipeline}");
    assert_eq!(pipeline["plugin_errors"], 0, "{pipeline}");
    assert!(
        pipeline["completed"].as_u64().unwrap_or(0) > 0,
        "the daemon saw the requests: {pipeline}"
    );
    for (report, phase) in [(&low, "start"), (&high, "peak"), (&after, "end")] {
        assert!(report.failures.is_empty(), "{phase}: {:?}", report.failures);
    }
    assert_no_failures(&high, 30);

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "daemon + torchserve: 1 → {peak} replicas in {up_took:?}, back to 1 in {down_took:?}; \
         {} requests, 0 failed",
        low.ok + high.ok + after.ok
    );
}
