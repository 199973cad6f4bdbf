//! The whole loop against a real Triton: the daemon binary with the Triton plugin loaded
//! through the C ABI and its router in front, three variants of growing cost, and a
//! compressed, scaled replay of a generated bursty window (`crate::replay`) sent as an
//! open-loop Poisson load through the router. Checks that the server follows the daemon's
//! plans (variants and instance counts), that no request fails across the switches, and
//! reports the SLO attainment of the steady part.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use infadaptd::commands::loadgen;
use serde_json::{Value, json};

use super::plugin::triton_plugin_dir;
use super::{
    Served, TestVariant, TritonServer, free_port, http, infer_body, json_of, serial, wait_until,
};

/// Variants whose per-request work grows: ≈1 ms, ≈6 ms and ≈22 ms on one core (plus the
/// python backend's overhead).
const E2E_VARIANTS: [TestVariant; 3] = [
    TestVariant {
        name: "tiny",
        n: 64,
        rounds: 2,
    },
    TestVariant {
        name: "small",
        n: 256,
        rounds: 4,
    },
    TestVariant {
        name: "large",
        n: 256,
        rounds: 16,
    },
];

const SLO_MS: f64 = 250.0;
/// Trace seconds averaged into one replayed second.
const COMPRESSION: usize = 8;
/// Peak of the replayed load, requests/s.
const PEAK_RPS: f64 = 40.0;

const CATALOG: &str = r#"# Profiles of the e2e test models (python backend, 1 CPU instance), rounded from
# measurements on a 2-core machine.
schema = 1

[[variant]]
name = "tiny"
accuracy = 0.60
load_time_s = 2.0
points = [
  { batch = 1, cores = 1, p99_ms = 6.0, throughput_rps = 300.0 },
  { batch = 2, cores = 1, p99_ms = 9.0, throughput_rps = 350.0 },
]

[[variant]]
name = "small"
accuracy = 0.70
load_time_s = 2.0
points = [
  { batch = 1, cores = 1, p99_ms = 14.0, throughput_rps = 120.0 },
  { batch = 2, cores = 1, p99_ms = 24.0, throughput_rps = 130.0 },
]

[[variant]]
name = "large"
accuracy = 0.80
load_time_s = 2.0
points = [
  { batch = 1, cores = 1, p99_ms = 60.0, throughput_rps = 22.0 },
  { batch = 2, cores = 1, p99_ms = 110.0, throughput_rps = 23.0 },
]
"#;

/// The generated bursty window, `COMPRESSION` seconds per replayed second, scaled to `PEAK_RPS`.
fn replay_rates() -> Vec<f64> {
    crate::replay::bursty_window(COMPRESSION, PEAK_RPS)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// (variant or model, batch, replicas or instances), sorted.
type Deployment = Vec<(String, u64, u64)>;

/// One plan the daemon held: the plan, first and last sample time, whether the server was
/// seen running it.
type Stretch = (Deployment, f64, f64, bool);

/// One look at the daemon's plan and the server's models.
#[derive(Debug, Clone)]
struct Sample {
    at: f64,
    /// (variant, batch, replicas) of the daemon's current plan.
    plan: Vec<(String, u64, u64)>,
    /// (model, preferred batch, instances) of every READY model.
    served: Vec<(String, u64, u64)>,
}

fn plan_of(status: &Value) -> Vec<(String, u64, u64)> {
    let mut plan: Vec<(String, u64, u64)> =
        status["pipelines"][0]["plan"]["stages"][0]["assignments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        (
                            x["variant"].as_str().unwrap_or("").to_owned(),
                            x["batch"].as_u64().unwrap_or(0),
                            x["replicas"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
    plan.sort();
    plan
}

fn served_models(server: &impl Served) -> Vec<(String, u64, u64)> {
    let mut served = Vec::new();
    for (model, state) in server.index() {
        if state != "READY" {
            continue;
        }
        let Ok(config) = json_of(http(
            "GET",
            server.http_port(),
            &format!("/v2/models/{model}/config"),
            None,
        )) else {
            continue;
        };
        let batch = config["dynamic_batching"]["preferred_batch_size"]
            .as_array()
            .and_then(|p| p.iter().filter_map(Value::as_u64).max())
            .unwrap_or_else(|| config["max_batch_size"].as_u64().unwrap_or(1));
        served.push((model, batch, super::instances_of(&config)));
    }
    served.sort();
    served
}

/// Whether the server runs exactly the plan's variants with their batch and instances.
fn matches(plan: &[(String, u64, u64)], served: &[(String, u64, u64)]) -> bool {
    !plan.is_empty() && plan == served
}

struct Daemon {
    child: Child,
    log: PathBuf,
    /// The scratch directory (config, catalog, state, log), removed on drop.
    dir: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn triton_end_to_end_trace_replay_follows_plans_without_failed_requests() {
    let _one = serial();
    let rates = replay_rates();
    let server = TritonServer::start(&E2E_VARIANTS, &[]);
    let plugins = triton_plugin_dir();
    let dir = std::env::temp_dir().join(format!("infadapt-triton-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("catalog.toml"), CATALOG).expect("catalog");
    let api_port = free_port();
    let router_port = free_port();
    let config = format!(
        r#"[daemon]
period_s = 3
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
backend_timeout_s = 5
log = "info,infadaptd::router=info"
[daemon.http]
listen = "127.0.0.1:{api_port}"

[[pipeline]]
name = "e2e"
catalog = "catalog.toml"
slo_ms = {SLO_MS}
initial_load_rps = 5
[[pipeline.stage]]
name = "classify"
variants = ["tiny", "small", "large"]
batch_sizes = [1, 2]
core_options = [1]
max_replicas = 2
[pipeline.weights]
alpha = 1.0
beta_per_core = 0.001
gamma_per_cold_start_s = 0.0001
[pipeline.limits]
total_cores = 2
[pipeline.forecast]
model = "ewma"
[pipeline.damping]
stabilization_window_s = 6
min_dwell_s = 15
[pipeline.backend]
type = "triton"
url = "{url}"
metrics_url = "{metrics}"
drain_s = 4
[pipeline.router]
listen = "127.0.0.1:{router_port}"
timeout_ms = 30000
"#,
        state = dir.join("state").display(),
        plugins = plugins.path().display(),
        url = server.url(),
        metrics = server.metrics_url(),
    );
    std::fs::write(dir.join("infadaptd.toml"), &config).expect("config");
    let log = dir.join("daemon.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let daemon = Daemon {
        child: Command::new(env!("CARGO_BIN_EXE_infadaptd"))
            .args(["run", "--config"])
            .arg(dir.join("infadaptd.toml"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start infadaptd"),
        log,
        dir: dir.clone(),
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            http("GET", router_port, "/v2/health/ready", None).is_ok_and(|(s, _)| s == 200)
        }),
        "the router never became ready\n--- daemon ---\n{}\n--- triton ---\n{}",
        daemon.log(),
        server.log_tail()
    );
    // A request through the router reaches a variant and comes back computed.
    let answer = json_of(http(
        "POST",
        router_port,
        "/v2/models/e2e/infer",
        Some(&infer_body(1.0)),
    ))
    .expect("a request through the router");
    assert_eq!(
        answer["outputs"][0]["data"],
        json!([2.0, 3.0, 4.0, 5.0]),
        "{answer}"
    );

    // Watch the daemon's plan and the server while the load runs.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let samples = Arc::clone(&samples);
        let done = Arc::clone(&done);
        let http_port = server.http_port;
        std::thread::spawn(move || {
            let view = TritonServer::view(http_port);
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = json_of(http("GET", api_port, "/v1/status", None)) {
                    let sample = Sample {
                        at: unix_now(),
                        plan: plan_of(&status),
                        served: served_models(&view),
                    };
                    samples.lock().unwrap().push(sample);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let started = Instant::now();
    let arrivals = loadgen::poisson_arrivals(&rates, 42);
    let url = format!("http://127.0.0.1:{router_port}/v2/models/e2e/infer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let records = runtime.block_on(loadgen::run(
        &url,
        infer_body(1.0).to_string().into(),
        &arrivals,
        Duration::from_secs(60),
    ));
    let replay_s = started.elapsed().as_secs_f64();

    // After the load: the server converges to whatever the daemon plans now.
    let converged = wait_until(Duration::from_secs(40), || {
        let plan = json_of(http("GET", api_port, "/v1/status", None))
            .map(|s| plan_of(&s))
            .unwrap_or_default();
        matches(&plan, &served_models(&server))
    });
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let samples = samples.lock().unwrap().clone();
    let metrics = http("GET", api_port, "/metrics", None)
        .map(|(_, b)| b)
        .unwrap_or_default();

    // Zero failed requests, switches included.
    let failures: Vec<&loadgen::RequestRecord> = records.iter().filter(|r| !r.ok()).collect();
    let all = loadgen::summarize(&records, 0.0, rates.len() as f64, SLO_MS);
    let steady = loadgen::summarize(&records, 20.0, rates.len() as f64, SLO_MS);
    // Stretches of one plan and whether the server was seen running it.
    let mut stretches: Vec<Stretch> = Vec::new();
    for s in &samples {
        match stretches.last_mut() {
            Some((plan, _, end, seen)) if *plan == s.plan => {
                *end = s.at;
                *seen |= matches(plan, &s.served);
            }
            _ => stretches.push((s.plan.clone(), s.at, s.at, matches(&s.plan, &s.served))),
        }
    }
    let variants_used: std::collections::BTreeSet<String> = stretches
        .iter()
        .flat_map(|(p, ..)| p.iter().map(|(v, ..)| v.clone()))
        .collect();
    eprintln!(
        "e2e: replay {:.0} s of {} requests ({:.1} rps offered, peak {PEAK_RPS} rps)",
        replay_s, all.sent, all.offered_rps
    );
    eprintln!(
        "e2e: all: ok {} failed {} p50 {:.1} ms p99 {:.1} ms SLO({SLO_MS} ms) attainment {:.3}",
        all.ok, all.failed, all.p50_ms, all.p99_ms, all.slo_attainment
    );
    eprintln!(
        "e2e: steady part (from 20 s): {} requests, p99 {:.1} ms, SLO attainment {:.3}",
        steady.sent, steady.p99_ms, steady.slo_attainment
    );
    let mut windows = String::new();
    for from in (0..rates.len()).step_by(10) {
        let w = loadgen::summarize(&records, from as f64, (from + 10) as f64, SLO_MS);
        windows.push_str(&format!(
            " [{from}s {:.0}rps p99 {:.0}ms {:.2}]",
            w.offered_rps, w.p99_ms, w.slo_attainment
        ));
    }
    eprintln!("e2e: per 10 s (offered, p99, attainment):{windows}");
    for (plan, from, to, seen) in &stretches {
        eprintln!(
            "e2e: plan {plan:?} for {:.1} s (from {:.1} s) — server seen running it: {seen}",
            to - from,
            from - samples.first().map(|s| s.at).unwrap_or(0.0)
        );
    }
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("infadapt_router_"))
    {
        eprintln!("e2e: {line}");
    }

    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}\n--- daemon ---\n{}",
        failures.len(),
        records.len(),
        failures.first(),
        daemon.log()
    );
    assert_eq!(records.len(), arrivals.len());
    assert!(
        converged,
        "the server never matched the daemon's plan after the load\n{:?}\n--- daemon ---\n{}",
        samples.last(),
        daemon.log()
    );
    assert!(
        variants_used.len() >= 2,
        "the plans never switched variants: {stretches:?}\n--- daemon ---\n{}",
        daemon.log()
    );
    // Every plan the daemon held long enough to roll out (12 s) was seen on the server.
    for (plan, from, to, seen) in &stretches {
        if to - from >= 12.0 {
            assert!(
                seen,
                "plan {plan:?} held {:.1} s but never seen on the server: {samples:?}",
                to - from
            );
        }
    }
    let failed_metric = metrics
        .lines()
        .find(|l| l.starts_with("infadapt_router_failed_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(failed_metric, Some(0.0), "{metrics}");
    // A floor, not a target: it catches a router or plugin that stalls traffic, while the
    // figure itself (printed above) varies with what else the machine runs.
    assert!(
        steady.slo_attainment >= 0.5,
        "steady-state SLO attainment {:.3} is below 0.5",
        steady.slo_attainment
    );
}
