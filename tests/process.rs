//! The real daemon with the process backend plugin (built here with cargo, with the test
//! worker `infadapt-test-worker`): it loads `libinfadapt_plugin_process.so`, its workers
//! converge to the plan, a SIGKILLed daemon's workers keep running and the restarted daemon
//! adopts the same ones (no duplicates), and a clean stop leaves no worker behind. The
//! backend's own behaviour (scaling under load, crashes, GPUs) is tested in
//! `plugins/process/tests/workers.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{Daemon, NotifySink, free_port, repo_root, status_of, wait_until};

/// The worker binary and the plugin library, built once into this test binary's target
/// directory.
struct Built {
    worker: PathBuf,
    plugin: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = crate::plugins::rust_plugins_dir();
        let built = Built {
            worker: profile_dir.join("infadapt-test-worker"),
            plugin: profile_dir.join("libinfadapt_plugin_process.so"),
        };
        assert!(built.worker.exists(), "{} missing", built.worker.display());
        assert!(built.plugin.exists(), "{} missing", built.plugin.display());
        built
    })
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("infadapt-process-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// State letter, parent and start time of a process from `/proc/PID/stat`.
fn proc_stat(pid: i64) -> Option<(char, i64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Whether `pid` has ended: no process, or a zombie that PID 1 owns. (On hosts whose PID 1
/// does not reap, an orphan that the restarted daemon adopted and stopped stays a zombie of
/// PID 1; it is dead all the same and not the daemon's to reap.)
fn has_ended(pid: i64) -> bool {
    match proc_stat(pid) {
        None => true,
        Some(('Z', parent, _)) => parent == 1,
        Some(_) => false,
    }
}

/// Kills the workers a state file lists when dropped, so that a failed test leaves no
/// orphan behind (the daemon under test is killed without a chance to stop them).
struct KillRecordedWorkers(PathBuf);

impl Drop for KillRecordedWorkers {
    fn drop(&mut self) {
        for worker in recorded_workers(&self.0).unwrap_or_default() {
            let (Some(pid), Some(start)) = (worker["pid"].as_i64(), worker["start_ticks"].as_u64())
            else {
                continue;
            };
            if matches!(proc_stat(pid), Some((state, _, s)) if s == start && state != 'Z') {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The state file's workers (JSON objects).
fn recorded_workers(dir: &Path) -> Option<Vec<serde_json::Value>> {
    let bytes = std::fs::read(dir.join("workers/process-bare.json")).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    state["workers"].as_array().cloned()
}

/// The daemon config for the process backend: one stage of resnet18 on 1 core.
fn daemon_config(dir: &Path, http_port: u16, plugins: &Path) -> String {
    let catalog = repo_root().join("etc/catalogs/resnet-synthetic.toml");
    format!(
        r#"
[daemon]
period_s = 1
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
grace_s = 10
[daemon.http]
listen = "127.0.0.1:{http_port}"

[[pipeline]]
name = "bare"
catalog = "{catalog}"
slo_ms = 750
initial_load_rps = 30
[[pipeline.stage]]
name = "classify"
variants = ["resnet18"]
core_options = [1]
batch_sizes = [1]
max_replicas = 4
[pipeline.solver]
time_limit_ms = 200
[pipeline.backend]
type = "process"
state_dir = "{workers}"
port_range = [21400, 21449]
drain_s = 1
stop_timeout_s = 3
[pipeline.backend.variants.resnet18]
command = ["{worker}", "--port", "{{port}}", "--variant", "{{variant}}", "--work", "50000"]
readiness_timeout_s = 20
"#,
        state = dir.join("daemon-state").display(),
        workers = dir.join("workers").display(),
        plugins = plugins.display(),
        catalog = catalog.display(),
        worker = built().worker.display(),
    )
}

/// Ready worker processes the state file lists that run (same PID and start time).
fn live_workers(dir: &Path) -> Vec<i64> {
    recorded_workers(dir)
        .unwrap_or_default()
        .iter()
        .filter(|w| w["state"] == "ready")
        .filter_map(|w| {
            let pid = w["pid"].as_i64()?;
            let start = w["start_ticks"].as_u64()?;
            matches!(proc_stat(pid), Some((state, _, s)) if s == start && state != 'Z')
                .then_some(pid)
        })
        .collect()
}

fn planned_replicas(http_port: u16) -> Option<u64> {
    let status = status_of(http_port)?;
    let plan = &status["pipelines"][0]["plan"];
    Some(
        plan["stages"][0]["assignments"]
            .as_array()?
            .iter()
            .filter_map(|a| a["replicas"].as_u64())
            .sum(),
    )
}

#[test]
fn the_daemon_killed_and_restarted_adopts_its_workers_and_leaves_none_after_a_stop() {
    let dir = Scratch::new("daemon");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let installed = plugins.join("libinfadapt_plugin_process.so");
    std::fs::copy(&built().plugin, &installed).expect("install plugin");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http_port = free_port();
    let config = dir.path().join("infadaptd.toml");
    // Two workers from the first plan on, whatever the (absent) load: the plan
    // sized for the initial load is the one every later tick keeps.
    let adoption_config = || {
        daemon_config(dir.path(), http_port, &plugins)
            .replace("initial_load_rps = 30", "initial_load_rps = 1")
            .replace("max_replicas = 4", "min_replicas = 2\nmax_replicas = 4")
    };
    std::fs::write(&config, adoption_config()).expect("config");
    let notify = dir.path().join("notify.sock");
    let _sink = NotifySink::bind(&notify);

    // Converged: the workers match the plan, and the same ones still do more
    // than a control period later (a first plan seen just before a tick that
    // changes it is not a converged state).
    let converged = |daemon: &Daemon| -> Vec<i64> {
        let mut seen = Vec::new();
        let mut matching_since: Option<(Vec<i64>, Instant)> = None;
        let ok = wait_until(Duration::from_secs(30), || {
            seen = live_workers(dir.path());
            seen.sort_unstable();
            let matches =
                planned_replicas(http_port).is_some_and(|r| r > 0 && seen.len() as u64 == r);
            match &matching_since {
                _ if !matches => {
                    matching_since = None;
                    false
                }
                Some((same, since)) if *same == seen => {
                    since.elapsed() >= Duration::from_millis(2500)
                }
                _ => {
                    matching_since = Some((seen.clone(), Instant::now()));
                    false
                }
            }
        });
        assert!(
            ok,
            "workers {seen:?} never matched the plan {:?}; log:\n{}",
            planned_replicas(http_port),
            daemon.log()
        );
        seen.sort_unstable();
        seen
    };

    // A few ticks later the same worker processes run, none restarted or added.
    let same_workers_after_ticks = |daemon: &Daemon, first: &[i64], what: &str| {
        std::thread::sleep(Duration::from_secs(2));
        let mut still = live_workers(dir.path());
        still.sort_unstable();
        assert_eq!(still, first, "{what}:\n{}", daemon.log());
    };

    let _cleanup = KillRecordedWorkers(dir.path().to_owned());
    let mut daemon = Daemon::start(&config, &notify);
    let first = converged(&daemon);
    assert_eq!(first.len(), 2, "min_replicas = 2:\n{}", daemon.log());
    // Let a few ticks pass with the plan followed; nothing restarts.
    same_workers_after_ticks(&daemon, &first, "workers changed while the plan held");

    daemon.signal("KILL");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(5)),
        None,
        "SIGKILL has no exit code"
    );
    assert!(
        first.iter().all(|&p| !has_ended(p)),
        "workers died with the daemon"
    );

    let mut daemon = Daemon::start(&config, &notify);
    let second = converged(&daemon);
    assert_eq!(second, first, "not adopted:\n{}", daemon.log());
    assert!(
        daemon.wait_log("adopted", Duration::from_secs(5)),
        "no adoption logged:\n{}",
        daemon.log()
    );
    same_workers_after_ticks(&daemon, &first, "duplicates or restarts after adoption");

    // A reload that changes only control settings leaves the workers alone.
    daemon.reload_in_place(
        &config,
        &adoption_config().replace(
            "[pipeline.solver]",
            "[pipeline.damping]\nmin_dwell_s = 60\n[pipeline.solver]",
        ),
    );
    same_workers_after_ticks(
        &daemon,
        &first,
        "workers restarted by a control-only reload",
    );

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    for pid in &first {
        assert!(has_ended(*pid), "worker {pid} outlived a clean stop");
    }
    let left = recorded_workers(dir.path()).expect("state file");
    assert!(left.is_empty(), "{left:?}");
}

/// A series as runs, `1×12 2×4 3×20` (value × samples).
fn runs(series: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < series.len() {
        let j = (i..series.len())
            .find(|&j| series[j] != series[i])
            .unwrap_or(series.len());
        out.push(format!("{}×{}", series[i], j - i));
        i = j;
    }
    out.join(" ")
}

/// Requests the replay sends for `rates` (at least one per second).
fn sent_total(rates: &[f64]) -> f64 {
    rates.iter().map(|r| r.round().max(1.0)).sum()
}

/// POSTs to `url` with a 10 s limit; the status code.
fn post(url: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (address, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        std::net::TcpStream::connect(address).map_err(|e| format!("connect {url}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    .map_err(|e| format!("send {url}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {url}: {e}"))?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line from {url}: {response:?}"))
}

#[test]
fn the_daemon_follows_a_scaled_trace_window_with_no_failed_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    // 20 minutes of the generated bursty window, 30 s per replayed second, peak 36
    // requests/s: about 7/s, a burst to 36/s, back to 7/s, in 40 s, sent through the
    // daemon's router.
    let rates = crate::replay::bursty_window(30, 36.0);
    let dir = Scratch::new("trace");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let installed = plugins.join("libinfadapt_plugin_process.so");
    std::fs::copy(&built().plugin, &installed).expect("install plugin");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http_port = free_port();
    let router_port = free_port();
    let text = daemon_config(dir.path(), http_port, &plugins)
        .replace("initial_load_rps = 30", "initial_load_rps = 7")
        .replace("port_range = [21400, 21449]", "port_range = [21450, 21499]")
        .replace(
            "readiness_timeout_s = 20",
            "readiness_timeout_s = 20\nstats_url = \"http://{host}:{port}/stats\"",
        )
        .replace(
            "[pipeline.solver]",
            "[pipeline.forecast]\nmodel = \"max\"\nhorizon_s = 3\nbasis = \"point\"\nfloor = \"none\"\n\
             [pipeline.damping]\nstabilization_window_s = 4\nmin_dwell_s = 0\n[pipeline.solver]",
        )
        + &format!("[pipeline.router]\nlisten = \"127.0.0.1:{router_port}\"\n");
    let config = dir.path().join("infadaptd.toml");
    std::fs::write(&config, text).expect("config");
    let notify = dir.path().join("notify.sock");
    let _sink = NotifySink::bind(&notify);
    let _cleanup = KillRecordedWorkers(dir.path().to_owned());
    let mut daemon = Daemon::start(&config, &notify);
    assert!(
        wait_until(Duration::from_secs(30), || {
            planned_replicas(http_port).is_some_and(|r| live_workers(dir.path()).len() as u64 == r)
        }),
        "no worker ready; log:\n{}",
        daemon.log()
    );

    assert!(
        wait_until(Duration::from_secs(20), || {
            crate::support::http_get(router_port, "/v2/health/ready").is_some_and(|(c, _)| c == 200)
        }),
        "the router never became ready; log:\n{}",
        daemon.log()
    );
    let url = format!("http://127.0.0.1:{router_port}/v2/models/bare/infer");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let (plan_seen, live_seen) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let sampler = {
        let (stop, plan_seen, live_seen, dir) = (
            Arc::clone(&stop),
            Arc::clone(&plan_seen),
            Arc::clone(&live_seen),
            dir.path().to_owned(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = planned_replicas(http_port) {
                    plan_seen.lock().expect("plans").push(r);
                }
                live_seen
                    .lock()
                    .expect("live")
                    .push(live_workers(&dir).len() as u64);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let began = Instant::now();
    let mut requests = Vec::new();
    for (second, rate) in rates.iter().enumerate() {
        let count = rate.round().max(1.0) as u32;
        for k in 0..count {
            let due = Duration::from_secs_f64(second as f64 + f64::from(k) / f64::from(count));
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
            let (url, ok, failures) = (url.clone(), Arc::clone(&ok), Arc::clone(&failures));
            requests.push(std::thread::spawn(move || match post(&url) {
                Ok(200) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(code) => failures.lock().expect("f").push(format!("{url}: {code}")),
                Err(e) => failures.lock().expect("f").push(e),
            }));
        }
    }
    for request in requests {
        request.join().expect("request thread");
    }
    let replay_s = began.elapsed().as_secs_f64();
    // The plan settles after the burst and the workers follow it.
    let settled = wait_until(Duration::from_secs(20), || {
        planned_replicas(http_port).is_some_and(|r| live_workers(dir.path()).len() as u64 == r)
    });
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    // The router's totals reach /metrics with the next tick.
    let router_total = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        metrics = crate::support::http_get(http_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        router_total(&metrics, "infadapt_router_requests_total") == Some(sent_total(&rates))
    });
    let router_total = |name: &str| router_total(&metrics, name);
    let plans = plan_seen.lock().expect("plans").clone();
    let live = live_seen.lock().expect("live").clone();
    let failures = failures.lock().expect("f").clone();
    let sent = sent_total(&rates);
    eprintln!(
        "trace replay through the router: {sent} requests in {replay_s:.1} s, {} ok, {} failed \
         (router: {:?} requests, {:?} retries); planned replicas {}; ready workers {} \
         (4 samples/s)",
        ok.load(Ordering::SeqCst),
        failures.len(),
        router_total("infadapt_router_requests_total"),
        router_total("infadapt_router_retries_total"),
        runs(&plans),
        runs(&live)
    );
    assert!(
        settled,
        "workers did not converge to the plan; decisions {:?}; log:\n{}",
        crate::support::http_get(http_port, "/v1/decisions?limit=2"),
        daemon.log()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(ok.load(Ordering::SeqCst) as f64, sent);
    assert_eq!(
        router_total("infadapt_router_failed_total"),
        Some(0.0),
        "{metrics}"
    );
    assert!(counted, "the router did not count every request: {metrics}");
    let most = plans.iter().copied().max().unwrap_or(0);
    assert!(most >= 2, "the burst never scaled the plan up: {plans:?}");
    assert!(
        live.iter().copied().max().unwrap_or(0) >= most,
        "workers never reached {most}: {live:?}"
    );
    assert!(
        plans.last().copied().unwrap_or(most) < most,
        "the plan did not come back down after the burst: {plans:?}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(recorded_workers(dir.path()).expect("state").is_empty());
}

/// The command lines of the ready workers the state file lists that run.
fn live_worker_commands(dir: &Path) -> Vec<String> {
    live_workers(dir)
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .collect()
}

#[test]
fn reloads_that_restart_a_routed_pipeline_drop_no_request() {
    use hyper::body::Bytes;
    const RELOADS: usize = 4;
    const RPS: f64 = 200.0;
    const SECONDS: usize = 36;
    let dir = Scratch::new("reload-drain");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let installed = plugins.join("libinfadapt_plugin_process.so");
    std::fs::copy(&built().plugin, &installed).expect("install plugin");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http_port = free_port();
    let router_port = free_port();
    // Each reload changes the workers' command (a backend key): the pipeline restarts, its
    // workers are replaced by ones running the new command.
    let text = |work: u32| {
        daemon_config(dir.path(), http_port, &plugins)
            .replace("initial_load_rps = 30", "initial_load_rps = 200")
            .replace("port_range = [21400, 21449]", "port_range = [21500, 21549]")
            .replace("\"--work\", \"50000\"", &format!("\"--work\", \"{work}\""))
            + &format!(
                "[pipeline.router]\nlisten = \"127.0.0.1:{router_port}\"\nready_wait_ms = 10000\n"
            )
    };
    let config = dir.path().join("infadaptd.toml");
    std::fs::write(&config, text(2000)).expect("config");
    let notify = dir.path().join("notify.sock");
    let _sink = NotifySink::bind(&notify);
    let _cleanup = KillRecordedWorkers(dir.path().to_owned());
    let mut daemon = Daemon::start(&config, &notify);
    assert!(
        wait_until(Duration::from_secs(30), || {
            crate::support::http_get(router_port, "/v2/health/ready").is_some_and(|(c, _)| c == 200)
        }),
        "the router never became ready; log:\n{}",
        daemon.log()
    );

    // Steady Poisson load through the router for the whole test.
    let url = format!("http://127.0.0.1:{router_port}/v2/models/bare/infer");
    let arrivals = infadaptd::commands::loadgen::poisson_arrivals(&[RPS; SECONDS], 7);
    let load = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(infadaptd::commands::loadgen::run(
            &url,
            Bytes::from_static(b"hi"),
            &arrivals,
            Duration::from_secs(30),
        ))
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut took = Vec::new();
    for reload in 1..=RELOADS {
        let work = 2000 + reload as u32;
        let began = Instant::now();
        std::fs::write(&config, text(work)).expect("new config");
        daemon.signal("HUP");
        let in_force = wait_until(Duration::from_secs(20), || {
            daemon.log().matches("configuration reloaded").count() >= reload && {
                let commands = live_worker_commands(dir.path());
                !commands.is_empty()
                    && commands.iter().all(|c| {
                        c.contains(&format!("--work {work} "))
                            || c.ends_with(&format!("--work {work}"))
                    })
            }
        });
        assert!(
            in_force,
            "reload {reload}: the new workers never ran alone: {:?}\n{}",
            live_worker_commands(dir.path()),
            daemon.log()
        );
        took.push(began.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_secs(3));
    }
    let records = load.join().expect("load thread");
    let failed: Vec<String> = records
        .iter()
        .filter(|r| !r.ok())
        .map(|r| {
            format!(
                "{:.2} s: {} {}",
                r.due_s,
                r.status,
                r.error.clone().unwrap_or_default()
            )
        })
        .collect();
    let slowest = records.iter().map(|r| r.latency_ms).fold(0.0, f64::max);
    println!(
        "reload drain: {} requests at {RPS}/s over {SECONDS} s, {} failed, slowest {slowest:.0} ms; \
         {RELOADS} reloads, each in force after {took:.1?} s",
        records.len(),
        failed.len()
    );
    assert!(
        daemon.log().contains("restarted=bare"),
        "the reloads did not restart the pipeline:\n{}",
        daemon.log()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the reloads: {:?}\n{}",
        failed.len(),
        records.len(),
        &failed[..failed.len().min(20)],
        daemon.log()
    );
    assert!(records.len() > 6000, "{} requests", records.len());
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
}
