//! Fault injection: the real `infadaptd` binary runs three pipelines, one on the built-in
//! simulator and one each on a fake Triton and a fake TorchServe server
//! (`tests/fault_server.rs`) through the built plugins. Each test takes both fake servers
//! from healthy into one fault and back, and checks from `/v1/status`, `/v1/decisions`,
//! `/metrics` and the log that the daemon stays up, the simulated pipeline keeps deciding,
//! the faulty pipelines' plans stay near their last good plan, the fault is reported with a
//! message naming the backend and the call, the log stays bounded, and both recover.
//!
//! Each test prints one `fault report:` line per backend with what it observed (the figures
//! in `docs/reliability.md` come from these lines).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fault_server::{FaultServer, Flavor, Mode};
use crate::plugins::{TempDir, install_rust_plugin};
use crate::support::{Daemon, free_port, metric, pipeline_status, run_command, scratch, status_of};

/// Control period of every pipeline, seconds.
const PERIOD_S: f64 = 0.25;
/// Requests per second each fake server plays (3 replicas of the catalog's variant).
const RPS: f64 = 30.0;
/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(6);
/// Most log lines (warnings, errors, lines with an error) a faulty pipeline may write during
/// the fault: the fault lasts 24 periods, so one line per period would be far more.
const MAX_FAULT_LOG_LINES: usize = 8;
/// Most replicas a plan may move away from the last good plan while the server is faulty.
const PLAN_BOUND: i64 = 1;
/// `max_replicas` of the fake pipelines' stage.
const MAX_REPLICAS: i64 = 8;
/// Longest time from the server's recovery to the pipeline's.
const RECOVERY_BOUND: Duration = Duration::from_secs(8);

/// 15 requests/s per replica at most 80 % utilisation: 12 requests/s each.
const CATALOG: &str = r#"
schema = 1
[[variant]]
name = "small"
accuracy = 0.7
load_time_s = 0.2
points = [ { batch = 1, cores = 1, p99_ms = 40.0, throughput_rps = 15.0 } ]
"#;

/// The two faulty pipelines: name, backend, and their fake server.
const FAKES: [(&str, &str, Flavor); 2] = [
    ("tri", "triton", Flavor::Triton),
    ("ts", "torchserve", Flavor::TorchServe),
];

fn fake_pipeline(name: &str, catalog: &Path, backend: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "{name}"
catalog = "{catalog}"
slo_ms = 1000
initial_load_rps = {RPS}
[[pipeline.stage]]
name = "classify"
variants = ["small"]
batch_sizes = [1]
core_options = [1]
max_replicas = {MAX_REPLICAS}
[pipeline.forecast]
model = "naive"
basis = "point"
[pipeline.damping]
enabled = false
[pipeline.backend]
{backend}
"#,
        catalog = catalog.display(),
    )
}

fn config_text(
    dir: &Path,
    port: u16,
    plugins: &Path,
    triton: &FaultServer,
    ts: &FaultServer,
) -> String {
    let catalog = dir.join("catalog.toml");
    let resnet = crate::support::repo_root().join("etc/catalogs/resnet-synthetic.toml");
    let mut text = format!(
        r#"
[daemon]
period_s = {PERIOD_S}
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
grace_s = 2
backend_timeout_s = 1
[daemon.http]
listen = "127.0.0.1:{port}"

[[pipeline]]
name = "steady"
catalog = "{resnet}"
slo_ms = 750
initial_load_rps = 30
[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50"]
core_options = [1, 2]
max_replicas = 6
[pipeline.forecast]
model = "naive"
[pipeline.solver]
time_limit_ms = 200
[pipeline.backend]
type = "sim"
peak_rps = 60
day_s = 60
"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
        resnet = resnet.display(),
    );
    text.push_str(&fake_pipeline(
        "tri",
        &catalog,
        &format!(
            "type = \"triton\"\nurl = \"{url}\"\nmetrics_url = \"{url}/metrics\"\ntimeout_ms = 300\ncall_budget_ms = 700\ndrain_s = 1\nretry_s = 1",
            url = triton.url()
        ),
    ));
    text.push_str(&fake_pipeline(
        "ts",
        &catalog,
        &format!(
            "type = \"torchserve\"\nmanagement_url = \"{url}\"\ninference_url = \"{url}\"\nmetrics_url = \"{url}/metrics\"\nrequest_timeout_ms = 300\ncall_budget_ms = 700\ndrain_s = 1.0",
            url = ts.url()
        ),
    ));
    text
}

/// Replicas summed over the plan the pipeline runs (`/v1/status` `plan`).
fn plan_total(pipeline: &Value) -> Option<i64> {
    pipeline["plan"]["stages"]
        .as_array()?
        .iter()
        .flat_map(|s| s["assignments"].as_array().cloned().unwrap_or_default())
        .map(|a| a["replicas"].as_i64())
        .sum()
}

/// The pipeline's recorded decisions, oldest first.
fn decisions(port: u16, pipeline: &str) -> Vec<Value> {
    crate::support::http_get(
        port,
        &format!("/v1/decisions?pipeline={pipeline}&limit=1000"),
    )
    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
    .and_then(|v| v["decisions"].as_array().cloned())
    .map(|mut d| {
        d.sort_by_key(|r| r["tick"].as_u64());
        d
    })
    .unwrap_or_default()
}

fn last_tick(port: u16, pipeline: &str) -> u64 {
    decisions(port, pipeline)
        .last()
        .and_then(|d| d["tick"].as_u64())
        .unwrap_or(0)
}

fn metrics_text(port: u16) -> String {
    crate::support::http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn series(body: &str, name: &str, pipeline: &str) -> f64 {
    metric(body, &format!("{name}{{pipeline=\"{pipeline}\"}}")).unwrap_or(0.0)
}

/// Log lines of `pipeline` that report a problem: warnings, errors and lines with an error.
fn problem_lines<'a>(log: &'a str, pipeline: &str) -> Vec<&'a str> {
    let span = format!("pipeline{{pipeline={pipeline}}}");
    log.lines()
        .filter(|l| l.contains(&span))
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("error="))
        .collect()
}

/// What one faulty pipeline went through in one test.
#[derive(Debug, Default)]
struct Watch {
    good_plan: i64,
    min_plan: i64,
    max_plan: i64,
    degraded_after: Option<Duration>,
    message: Option<String>,
    decisions_in_fault: u64,
    peak_observed_rps: f64,
    errors_before: f64,
    bad_before: f64,
}

fn run_fault(mode: Mode) {
    let plugin_dir = TempDir::new("faults");
    for file in [
        "libinfadapt_plugin_triton.so",
        "libinfadapt_plugin_torchserve.so",
    ] {
        install_rust_plugin(&plugin_dir, file, file);
    }
    let triton = FaultServer::start(Flavor::Triton, RPS);
    let torchserve = FaultServer::start(Flavor::TorchServe, RPS);
    let servers = [&triton, &torchserve];
    let dir = scratch(&format!("faults-{}", mode.name().replace(['/', ' '], "-")));
    std::fs::write(dir.join("catalog.toml"), CATALOG).expect("catalog");
    let port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(
        &config,
        config_text(&dir, port, plugin_dir.path(), &triton, &torchserve),
    )
    .expect("config");
    let mut daemon = Daemon::spawn(run_command(&[], &config));

    // Healthy: every pipeline decides, and the fake ones, not degraded, run the plan their
    // load needs (the load over 12 requests/s per replica, rounded up).
    let needed = (RPS / 12.0).ceil() as i64;
    let mut status = Value::Null;
    let settled = crate::support::wait_until(Duration::from_secs(30), || {
        status = status_of(port).unwrap_or(Value::Null);
        FAKES.iter().all(|(name, _, _)| {
            let p = pipeline_status(&status, name);
            p["degraded"] == false
                && plan_total(p) == Some(needed)
                && decisions(port, name).len() >= 6
        }) && last_tick(port, "steady") >= 3
    });
    assert!(
        settled,
        "the pipelines did not settle on {needed} replicas each: {status:#}\nlog:\n{}",
        daemon.log()
    );
    let metrics = metrics_text(port);
    let mut watches: Vec<Watch> = FAKES
        .iter()
        .map(|(name, _, _)| {
            let p = pipeline_status(&status, name);
            let good = plan_total(p).unwrap_or(0);
            Watch {
                good_plan: good,
                min_plan: good,
                max_plan: good,
                errors_before: series(&metrics, "infadapt_plugin_errors_total", name),
                bad_before: series(&metrics, "infadapt_bad_observations_total", name),
                ..Watch::default()
            }
        })
        .collect();
    let steady_before = last_tick(port, "steady");
    let last_good_tick: Vec<u64> = FAKES.iter().map(|(n, _, _)| last_tick(port, n)).collect();

    // The fault.
    let log_start = daemon.log().len();
    for server in servers {
        server.set_mode(mode);
    }
    let fault_start = Instant::now();
    while fault_start.elapsed() < FAULT {
        assert_eq!(
            crate::support::http_get(port, "/livez").map(|(c, _)| c),
            Some(200),
            "the daemon stopped answering during {}:\n{}",
            mode.name(),
            daemon.log()
        );
        let status = status_of(port).unwrap_or(Value::Null);
        for ((name, _, _), watch) in FAKES.iter().zip(watches.iter_mut()) {
            let p = pipeline_status(&status, name);
            if let Some(total) = plan_total(p) {
                watch.min_plan = watch.min_plan.min(total);
                watch.max_plan = watch.max_plan.max(total);
            }
            if p["degraded"] == true {
                watch.degraded_after.get_or_insert(fault_start.elapsed());
                if let Some(m) = p["plugin"]["degraded"]["message"].as_str() {
                    watch.message = Some(m.to_owned());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fault_log = daemon.log()[log_start..].to_owned();
    let metrics = metrics_text(port);
    let steady_during = last_tick(port, "steady");
    for ((name, _, _), (watch, before)) in FAKES.iter().zip(watches.iter_mut().zip(&last_good_tick))
    {
        let all = decisions(port, name);
        let in_fault: Vec<&Value> = all
            .iter()
            .filter(|d| d["tick"].as_u64().is_some_and(|t| t > *before))
            .collect();
        watch.decisions_in_fault = in_fault.len() as u64;
        watch.peak_observed_rps = in_fault
            .iter()
            .filter_map(|d| d["observed_rps"].as_f64())
            .fold(0.0, f64::max);
        for d in &in_fault {
            let planned: i64 = d["decision"]["plan"]["stages"]
                .as_array()
                .map(|stages| {
                    stages
                        .iter()
                        .flat_map(|s| s["assignments"].as_array().cloned().unwrap_or_default())
                        .filter_map(|a| a["replicas"].as_i64())
                        .sum()
                })
                .unwrap_or(0);
            if planned > 0 {
                watch.min_plan = watch.min_plan.min(planned);
                watch.max_plan = watch.max_plan.max(planned);
            }
        }
    }

    // Recovery.
    for server in servers {
        server.set_mode(Mode::Healthy);
    }
    let recovery_start = Instant::now();
    let fault_end_ticks: Vec<u64> = FAKES.iter().map(|(n, _, _)| last_tick(port, n)).collect();
    let mut recovered = [None, None];
    while recovery_start.elapsed() < RECOVERY_BOUND + Duration::from_secs(4)
        && recovered.iter().any(Option::is_none)
    {
        let status = status_of(port).unwrap_or(Value::Null);
        for (i, (name, _, _)) in FAKES.iter().enumerate() {
            let p = pipeline_status(&status, name);
            let fresh = decisions(port, name).iter().any(|d| {
                d["tick"].as_u64().is_some_and(|t| t > fault_end_ticks[i])
                    && d["not_applied"] != "apply failed"
            });
            if recovered[i].is_none() && p["degraded"] == false && fresh {
                recovered[i] = Some(recovery_start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = status_of(port).unwrap_or(Value::Null);

    // Report, then check.
    for (i, ((name, backend, _), watch)) in FAKES.iter().zip(&watches).enumerate() {
        let errors = series(&metrics, "infadapt_plugin_errors_total", name) - watch.errors_before;
        let bad = series(&metrics, "infadapt_bad_observations_total", name) - watch.bad_before;
        let lines = problem_lines(&fault_log, name).len();
        println!(
            "fault report: {} | {backend} | plan {} held in {}..={} | degraded after {} | backend errors +{errors} | bad observations +{bad} | decisions in fault {} (peak {:.1} rps) | problem log lines {lines} | recovered in {}",
            mode.name(),
            watch.good_plan,
            watch.min_plan,
            watch.max_plan,
            watch
                .degraded_after
                .map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            watch.decisions_in_fault,
            watch.peak_observed_rps,
            recovered[i].map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        );
        let context = format!(
            "{name} ({backend}) under {}: {watch:?}\nstatus after: {:#}\nfault log:\n{fault_log}",
            mode.name(),
            pipeline_status(&after, name)
        );
        // Bounded change, never the maximum or zero.
        assert!(
            (watch.min_plan - watch.good_plan).abs() <= PLAN_BOUND
                && (watch.max_plan - watch.good_plan).abs() <= PLAN_BOUND
                && watch.min_plan > 0
                && watch.max_plan < MAX_REPLICAS,
            "plan left its bound: {context}"
        );
        // Reported: degraded with a message naming the backend and the call, or (counter
        // resets, which are normal) decisions on the right load.
        if mode == Mode::CounterReset {
            assert!(
                watch.degraded_after.is_none(),
                "degraded on resets: {context}"
            );
            assert!(watch.decisions_in_fault >= 4, "stopped deciding: {context}");
            assert!(
                watch.peak_observed_rps <= RPS * 1.5,
                "a reset read as a burst: {context}"
            );
        } else {
            assert!(watch.degraded_after.is_some(), "never degraded: {context}");
            assert!(errors >= 1.0, "no backend errors counted: {context}");
            let message = watch.message.clone().unwrap_or_default();
            assert!(
                message.contains(backend)
                    && ["observe", "apply", "health"]
                        .iter()
                        .any(|c| message.contains(c))
                    && message.contains(&format!("127.0.0.1:{}/", servers[i].port)),
                "the message does not name the backend, the call and the URL: {message}\n{context}"
            );
        }
        // Rate-limited log.
        assert!(
            lines <= MAX_FAULT_LOG_LINES,
            "{lines} problem lines in {FAULT:?}: {context}"
        );
        // Recovery.
        let took = recovered[i].unwrap_or(Duration::MAX);
        assert!(took <= RECOVERY_BOUND, "no recovery: {context}");
        let total = plan_total(pipeline_status(&after, name)).unwrap_or(0);
        assert!(
            (total - watch.good_plan).abs() <= PLAN_BOUND,
            "plan after recovery {total}: {context}"
        );
        assert!(servers[i].requests() > 0);
    }
    // The simulated pipeline kept deciding during the fault.
    assert!(
        steady_during >= steady_before + (FAULT.as_secs_f64() / PERIOD_S / 2.0) as u64,
        "the sim pipeline stalled: {steady_before} → {steady_during}\n{}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn garbage_bodies() {
    run_fault(Mode::Garbage);
}

#[test]
fn truncated_responses() {
    run_fault(Mode::Truncated);
}

#[test]
fn http_500s() {
    run_fault(Mode::Status500);
}

#[test]
fn slow_answers() {
    run_fault(Mode::Slow);
}

#[test]
fn nan_negative_and_infinite_metrics() {
    run_fault(Mode::BadNumbers);
}

#[test]
fn counter_resets() {
    run_fault(Mode::CounterReset);
}

#[test]
fn flapping() {
    run_fault(Mode::Flapping);
}

#[test]
fn connection_resets() {
    run_fault(Mode::ConnectionReset);
}
