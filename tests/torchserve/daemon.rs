//! The real `infadaptd` binary with `type = "torchserve"` (the plugin loaded from
//! `plugin_dirs`) against a real TorchServe, under a compressed, scaled replay of a
//! generated bursty window (`crate::replay`): the daemon plans 1 → 3 → 1 replicas as the burst
//! comes and goes, every plan it holds is seen running on the server, and no request fails.
//! The load goes through the daemon's router, which spreads it over the ready replicas and
//! stops sending to a replica the plugin drains before it is unregistered.

use std::path::Path;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::PluginObservation;
use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use serde_json::Value;

use super::fixture::{Load, SMALL, TorchServe, assert_no_failures};
use crate::plugins::{TempDir, install_rust_plugin};
use crate::support::{Daemon, NotifySink, free_port, pipeline_status, scratch, status_of};

/// 15 requests/s per replica at most 80 % utilisation: 12 requests/s each.
const CATALOG: &str = r#"
schema = 1
[[variant]]
name = "small"
accuracy = 0.7
load_time_s = 1.0
points = [ { batch = 1, cores = 1, p99_ms = 40.0, throughput_rps = 15.0 } ]
"#;

fn daemon_config(
    dir: &Path,
    port: u16,
    router_port: u16,
    plugins: &Path,
    server: &TorchServe,
) -> String {
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
[pipeline.router]
listen = "127.0.0.1:{router_port}"
"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
        catalog = dir.join("catalog.toml").display(),
        management = server.management_port,
        inference = server.inference_port,
        metrics = server.metrics_port,
    )
}

/// An observation whose only ready endpoint is the daemon's router, so that the test's
/// sender plays a client of the pipeline.
fn through_router(router_port: u16) -> PluginObservation {
    let deployed = serde_json::from_value(serde_json::json!({ "schema": 1, "stages": [{
        "stage": "classify", "assignments": [{ "variant": "small", "batch": 1, "cores": 1,
        "replicas": 1, "share": 1.0 }] }] }))
    .expect("plan");
    PluginObservation {
        deployed,
        endpoints: vec![EndpointMessage {
            stage: "classify".into(),
            variant: "small".into(),
            url: format!("http://127.0.0.1:{router_port}/v2/models/images/infer"),
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
            crate::support::http_get(port, "/v1/status"),
            daemon.log(),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Trace seconds averaged into one replayed second.
const COMPRESSION: usize = 20;
/// Peak of the replayed load: three replicas' worth.
const PEAK_RPS: f64 = 36.0;

/// The generated bursty window, `COMPRESSION` seconds per replayed second, scaled to
/// `PEAK_RPS` (60 replayed seconds: about 7 requests/s, a burst to 36, back to 7).
fn replay_rates() -> Vec<f64> {
    crate::replay::bursty_window(COMPRESSION, PEAK_RPS)
}

#[test]
fn daemon_with_the_torchserve_plugin_follows_a_trace_replay() {
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
    let router_port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(
        &config,
        daemon_config(&dir, port, router_port, plugins.path(), &server),
    )
    .expect("write config");
    let notify = dir.join("notify.sock");
    let _notifications = NotifySink::bind(&notify);
    let mut daemon = Daemon::start(&config, &notify);

    // The starting plan (4 requests/s: one replica) is applied.
    assert_eq!(
        wait_converged(&server, &daemon, port, "start", |n| n == 1),
        1
    );

    // Clients start once the router has a ready endpoint.
    assert!(
        crate::support::wait_until(Duration::from_secs(20), || {
            crate::support::http_get(router_port, "/v2/health/ready").is_some_and(|(c, _)| c == 200)
        }),
        "the router never became ready; log:\n{}",
        daemon.log()
    );

    // The replay, sampling the daemon's plan and the server every half second.
    let rates = replay_rates();
    let load = Load::replay(rates.clone(), &through_router(router_port));
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    while started.elapsed() < Duration::from_secs(rates.len() as u64 + 8) {
        let at_s = started.elapsed().as_secs_f64();
        if let Some(planned) = planned_replicas(port) {
            samples.push(Sample {
                at_s,
                planned,
                registered: server.registered().len() as u64,
                ready: ready_registrations(&server) as u64,
            });
        }
        // Done once the burst has come and gone and one replica has run for 5 s.
        let peaked = samples.iter().any(|s| s.planned >= 3);
        let settled = samples.len() >= 10
            && samples[samples.len() - 10..]
                .iter()
                .all(|s| s.planned == 1 && s.running());
        if peaked && settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = load.finish();
    let timeline: Vec<String> = samples.iter().map(Sample::line).collect();
    let timeline = timeline.join("\n");

    // Every plan held for 4 s or more was seen running: all its replicas registered and
    // ready, nothing else registered.
    let stretches = stretches(&samples);
    for stretch in &stretches {
        assert!(
            stretch.to_s - stretch.from_s < 4.0 || stretch.ran,
            "{stretch:?} never ran:\n{timeline}\ndaemon log:\n{}",
            daemon.log()
        );
    }
    let peak = stretches.iter().map(|s| s.planned).max().unwrap_or(0);
    assert!(
        (3..=4).contains(&peak),
        "the burst (36 requests/s, 12 per replica) should need 3 replicas:\n{timeline}"
    );
    let last = stretches.last().expect("samples");
    assert!(
        last.planned == 1 && last.ran,
        "back to one replica after the burst:\n{timeline}"
    );
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);
    let expected: f64 = rates.iter().sum();
    assert_no_failures(&report, (expected * 0.9) as u64);

    let status = status_of(port).expect("status");
    let pipeline = pipeline_status(&status, "images");
    let metrics = crate::support::http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("infadapt_router_failed_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(failed, Some(0.0), "router failures:\n{metrics}");
    assert_eq!(pipeline["backend"], "torchserve", "{pipeline}");
    assert_eq!(pipeline["degraded"], false, "{pipeline}");
    assert_eq!(pipeline["plugin_errors"], 0, "{pipeline}");
    assert!(
        pipeline["completed"].as_u64().unwrap_or(0) > report.ok / 2,
        "the daemon saw the requests: {pipeline}"
    );

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    let plans: Vec<String> = stretches
        .iter()
        .map(|s| format!("{} ({:.1}-{:.1} s)", s.planned, s.from_s, s.to_s))
        .collect();
    eprintln!(
        "daemon + torchserve trace replay: plans {}; {} requests, 0 failed",
        plans.join(" → "),
        report.ok
    );
}

/// One look at the daemon's plan and the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    planned: u64,
    registered: u64,
    ready: u64,
}

impl Sample {
    fn line(&self) -> String {
        format!(
            "{:5.1} s: plan {} replicas, {} registered, {} ready",
            self.at_s, self.planned, self.registered, self.ready
        )
    }

    fn running(&self) -> bool {
        self.registered == self.planned && self.ready == self.planned
    }
}

/// A stretch of samples with one planned replica count, and whether it was seen running.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    planned: u64,
    from_s: f64,
    to_s: f64,
    ran: bool,
}

fn stretches(samples: &[Sample]) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = Vec::new();
    for sample in samples {
        match out.last_mut() {
            Some(last) if last.planned == sample.planned => {
                last.to_s = sample.at_s;
                last.ran |= sample.running();
            }
            _ => out.push(Stretch {
                planned: sample.planned,
                from_s: sample.at_s,
                to_s: sample.at_s,
                ran: sample.running(),
            }),
        }
    }
    out
}
