//! Fixture for tests against a real TorchServe 0.12.0: builds test archives and runs the
//! server on loopback ports (stopped by process group on drop), a load sender that plays
//! the daemon's router (it sends only to `ready` endpoints, by the deployed shares), and
//! helpers that observe a backend until a condition holds. The server comes from the venv
//! made by `tests/torchserve/install.sh`; without it the tests fail and say how to install
//! it. Shared by the daemon's integration tests and the plugin crate's own tests (included
//! with `#[path]`), so each uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::EndpointState;
use infadapt_plugin_abi::{BackendInstance, PlanMessage, PluginObservation};
use infadapt_testkit::{Scratch, free_port, repo_root, stage_plan_message};
use serde_json::{Value, json};

/// The servers saturate two cores: one real server at a time, through the lock of the test
/// crate that includes this file (shared with its other real-server tests).
fn one_server_at_a_time() -> MutexGuard<'static, ()> {
    crate::one_real_server_at_a_time()
}

/// A directory for one server, removed when dropped: `infadapt-torchserve-PID-N`, a new `N`
/// for each server of the test process.
fn server_dir() -> Scratch {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    Scratch::new(
        "torchserve",
        &COUNT.fetch_add(1, Ordering::Relaxed).to_string(),
    )
}

/// `$INFADAPT_TORCHSERVE_VENV`, else `<target>/torchserve-venv` of this test binary.
fn venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFADAPT_TORCHSERVE_VENV") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/integration-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary in <target>/<profile>/deps");
    target.join("torchserve-venv")
}

fn venv_tool(name: &str) -> PathBuf {
    let venv = venv();
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "TorchServe is not installed at {}: run `tests/torchserve/install.sh` (with the same \
         CARGO_TARGET_DIR) or point INFADAPT_TORCHSERVE_VENV at a venv with torchserve==0.12.0, \
         torch-model-archiver==0.12.0 and pyyaml",
        venv.display()
    );
    tool
}

/// A test variant: its archive does `iterations` loop steps of CPU work per request.
#[derive(Debug, Clone, Copy)]
pub struct TestVariant {
    pub name: &'static str,
    pub iterations: u64,
}

pub const SMALL: TestVariant = TestVariant {
    name: "small",
    iterations: 20_000,
};
pub const LARGE: TestVariant = TestVariant {
    name: "large",
    iterations: 60_000,
};

/// A running TorchServe with its own directories and ports; stopped on drop.
pub struct TorchServe {
    dir: Scratch,
    child: Option<Child>,
    pub inference_port: u16,
    pub management_port: u16,
    pub metrics_port: u16,
    _serial: MutexGuard<'static, ()>,
}

impl TorchServe {
    /// Builds one archive per variant and starts the server; waits for `/ping`.
    pub fn start(variants: &[TestVariant]) -> TorchServe {
        let serial = one_server_at_a_time();
        let torchserve = venv_tool("torchserve");
        let archiver = venv_tool("torch-model-archiver");
        let dir = server_dir();
        let store = dir.path().join("store");
        for sub in ["store", "tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create server dirs");
        }
        for variant in variants {
            build_archive(&archiver, dir.path(), &store, variant);
        }
        let (inference_port, management_port, metrics_port) =
            (free_port(), free_port(), free_port());
        let properties = format!(
            "inference_address=http://127.0.0.1:{inference_port}\n\
             management_address=http://127.0.0.1:{management_port}\n\
             metrics_address=http://127.0.0.1:{metrics_port}\n\
             grpc_inference_port={}\n\
             grpc_management_port={}\n\
             metrics_mode=prometheus\n\
             disable_token_authorization=true\n\
             enable_model_api=true\n\
             default_workers_per_model=1\n\
             job_queue_size=1000\n",
            free_port(),
            free_port()
        );
        let config = dir.path().join("config.properties");
        std::fs::write(&config, properties).expect("write config.properties");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let bin = torchserve.parent().expect("venv bin").to_owned();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let tmp = dir.path().join("tmp");
        let child = Command::new(&torchserve)
            .args([
                "--start",
                "--foreground",
                "--ncs",
                "--disable-token-auth",
                "--enable-model-api",
            ])
            .arg("--ts-config")
            .arg(&config)
            .arg("--model-store")
            .arg(&store)
            .env("PATH", path)
            .env("TMPDIR", &tmp)
            .env("TEMP", &tmp)
            .env("LOG_LOCATION", dir.path().join("logs"))
            .env("METRICS_LOCATION", dir.path().join("logs"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group: the Java frontend and the Python workers stop together.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", torchserve.display()));
        let mut server = TorchServe {
            dir,
            child: Some(child),
            inference_port,
            management_port,
            metrics_port,
            _serial: serial,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&mut self, limit: Duration) {
        let agent = agent(Duration::from_secs(2));
        let url = format!("http://127.0.0.1:{}/ping", self.inference_port);
        let started = Instant::now();
        loop {
            if let Ok(mut answer) = agent.get(&url).call() {
                let body = answer.body_mut().read_to_string().unwrap_or_default();
                if answer.status() == 200 && body.contains("Healthy") {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "TorchServe exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < limit,
                "TorchServe did not answer /ping within {limit:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the server's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The plugin configuration for this server and `variants` in one stage `classify`.
    pub fn backend_config(&self, variants: &[TestVariant], drain_s: f64) -> Value {
        let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
        json!({
            "management_url": format!("http://127.0.0.1:{}", self.management_port),
            "inference_url": format!("http://127.0.0.1:{}", self.inference_port),
            "metrics_url": format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            "drain_s": drain_s,
            "max_batch_delay_ms": 10,
            "request_timeout_ms": 3000,
            "pipeline": { "name": "images", "slo_ms": 1000.0,
                          "stages": [{ "name": "classify", "variants": names }] }
        })
    }

    /// Model names registered on the server now.
    pub fn registered(&self) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/models?limit=1000",
            self.management_port
        );
        let body = agent(Duration::from_secs(5))
            .get(&url)
            .call()
            .expect("list models")
            .body_mut()
            .read_to_string()
            .expect("list body");
        let doc: Value = serde_json::from_str(&body).expect("models JSON");
        let mut names: Vec<String> = doc["models"]
            .as_array()
            .expect("models")
            .iter()
            .map(|m| m["modelName"].as_str().expect("name").to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TorchServe {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever is left of the group (workers included) goes now.
        signal("-KILL");
        let _ = child.wait();
    }
}

fn build_archive(archiver: &Path, work: &Path, store: &Path, variant: &TestVariant) {
    let source = work.join(format!("src-{}", variant.name));
    std::fs::create_dir_all(&source).expect("archive source dir");
    let here = repo_root().join("tests/torchserve");
    for file in ["handler.py", "torch.py"] {
        std::fs::copy(here.join(file), source.join(file)).expect("copy handler files");
    }
    std::fs::write(
        source.join("work.json"),
        json!({ "variant": variant.name, "iterations": variant.iterations }).to_string(),
    )
    .expect("write work.json");
    let output = Command::new(archiver)
        .current_dir(&source)
        .args(["--model-name", variant.name, "--version", "1.0"])
        .args(["--handler", "handler.py"])
        .args(["--extra-files", "torch.py,work.json", "--force"])
        .arg("--export-path")
        .arg(store)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", archiver.display()));
    assert!(
        output.status.success(),
        "torch-model-archiver failed for {}:\n{}",
        variant.name,
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Where the router may send: ready endpoints with their variant's share.
#[derive(Debug, Clone, Default)]
struct Routes {
    /// (url, weight) pairs; a weight is the variant's share split over its endpoints.
    targets: Vec<(String, f64)>,
}

impl Routes {
    fn from_observation(observation: &PluginObservation) -> Routes {
        let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
        for stage in &observation.deployed.stages {
            for a in &stage.assignments {
                shares.insert(&a.variant, a.share);
            }
        }
        let ready: Vec<_> = observation
            .endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Ready)
            .collect();
        let mut weight_of_variant: BTreeMap<&str, f64> = BTreeMap::new();
        for e in &ready {
            *weight_of_variant.entry(&e.variant).or_default() += e.weight;
        }
        let targets = ready
            .iter()
            .map(|e| {
                let share = shares.get(e.variant.as_str()).copied().unwrap_or(0.0);
                let total = weight_of_variant[e.variant.as_str()];
                (e.url.clone(), share * e.weight / total)
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();
        Routes { targets }
    }

    /// Picks a target for the `n`-th request (deterministic low-discrepancy spread).
    fn pick(&self, n: u64) -> Option<&str> {
        let total: f64 = self.targets.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return None;
        }
        let x = ((n as f64) * 0.618_033_988_75).fract() * total;
        let mut acc = 0.0;
        for (url, w) in &self.targets {
            acc += w;
            if x < acc {
                return Some(url);
            }
        }
        self.targets.last().map(|(u, _)| u.as_str())
    }
}

/// What the load sender saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failures: Vec<String>,
    /// Requests per endpoint URL answered 200.
    pub per_url: BTreeMap<String, u64>,
    /// Variants named in the answers.
    pub per_variant: BTreeMap<String, u64>,
    /// Requests not sent because no endpoint was ready.
    pub unroutable: u64,
}

/// An open-loop sender at a fixed rate: the schedule does not wait for answers.
pub struct Load {
    routes: Arc<Mutex<Routes>>,
    stop: Arc<AtomicBool>,
    scheduler: Option<JoinHandle<()>>,
    report: Arc<Mutex<LoadReport>>,
    in_flight: Arc<AtomicU64>,
}

impl Load {
    /// A constant rate.
    pub fn start(rate_rps: f64, observation: &PluginObservation) -> Load {
        Load::replay(vec![rate_rps], observation)
    }

    /// Rates per second, one after another; the last one holds until `finish`. Each
    /// second's requests are spread evenly over it (fractions carry over).
    pub fn replay(rates_rps: Vec<f64>, observation: &PluginObservation) -> Load {
        assert!(!rates_rps.is_empty(), "no rates to replay");
        let routes = Arc::new(Mutex::new(Routes::from_observation(observation)));
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let (jobs, receiver) = mpsc::channel::<String>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        for _ in 0..24 {
            let receiver = Arc::clone(&receiver);
            let report = Arc::clone(&report);
            let in_flight = Arc::clone(&in_flight);
            workers.push(std::thread::spawn(move || {
                // A lost request shows up as a timeout here, never as a hang.
                let agent = agent(Duration::from_secs(30));
                loop {
                    let url = match receiver.lock().map(|r| r.recv()) {
                        Ok(Ok(url)) => url,
                        _ => return,
                    };
                    let outcome = agent.post(&url).send("image-bytes");
                    let mut report = report.lock().expect("report");
                    match outcome {
                        Ok(mut answer) => {
                            let status = answer.status().as_u16();
                            let body = answer.body_mut().read_to_string().unwrap_or_default();
                            if status == 200 {
                                report.ok += 1;
                                *report.per_url.entry(url.clone()).or_default() += 1;
                                let variant = serde_json::from_str::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["variant"].as_str().map(str::to_owned))
                                    .unwrap_or_else(|| format!("unreadable answer {body}"));
                                *report.per_variant.entry(variant).or_default() += 1;
                            } else {
                                report
                                    .failures
                                    .push(format!("{url}: status {status}: {body}"));
                            }
                        }
                        Err(e) => report.failures.push(format!("{url}: {e}")),
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        let scheduler = {
            let routes = Arc::clone(&routes);
            let stop = Arc::clone(&stop);
            let report = Arc::clone(&report);
            let in_flight = Arc::clone(&in_flight);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut n: u64 = 0;
                let mut carried = 0.0;
                'seconds: for second in 0.. {
                    let rate = rates_rps[second.min(rates_rps.len() - 1)].max(0.0);
                    carried += rate;
                    let count = carried.floor();
                    carried -= count;
                    let count = count as u32;
                    let second_start = started + Duration::from_secs(second as u64);
                    for k in 0..count {
                        if stop.load(Ordering::SeqCst) {
                            break 'seconds;
                        }
                        let due =
                            second_start + Duration::from_secs_f64(f64::from(k) / f64::from(count));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let target = routes.lock().expect("routes").pick(n).map(str::to_owned);
                        match target {
                            Some(url) => {
                                in_flight.fetch_add(1, Ordering::SeqCst);
                                report.lock().expect("report").sent += 1;
                                if jobs.send(url).is_err() {
                                    break 'seconds;
                                }
                            }
                            None => report.lock().expect("report").unroutable += 1,
                        }
                        n += 1;
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Some(wait) = (second_start + Duration::from_secs(1))
                        .checked_duration_since(Instant::now())
                    {
                        std::thread::sleep(wait);
                    }
                }
                drop(jobs);
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        Load {
            routes,
            stop,
            scheduler: Some(scheduler),
            report,
            in_flight,
        }
    }

    /// Takes the endpoints of a new observation (as the router does).
    pub fn route(&self, observation: &PluginObservation) {
        *self.routes.lock().expect("routes") = Routes::from_observation(observation);
    }

    /// Stops sending, waits for every request in flight and returns the report.
    pub fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.join().expect("load scheduler");
        }
        assert_eq!(self.in_flight.load(Ordering::SeqCst), 0);
        std::mem::take(&mut *self.report.lock().expect("report"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Requests per second of the steady load (the two cores also run the server).
pub const RATE_RPS: f64 = 20.0;
/// How long draining replicas keep running after the router was told.
pub const DRAIN_S: f64 = 1.0;

/// A one-stage plan: (variant, batch, replicas, share).
pub fn plan(assignments: &[(&str, u32, u32, f64)]) -> PlanMessage {
    stage_plan_message("classify", 1, assignments)
}

pub fn endpoints_in(observation: &PluginObservation, state: EndpointState) -> usize {
    observation
        .endpoints
        .iter()
        .filter(|e| e.state == state)
        .count()
}

/// The deployed (variant, batch, replicas) of the stage, sorted.
pub fn deployed(observation: &PluginObservation) -> Vec<(String, u32, u32)> {
    let mut out: Vec<(String, u32, u32)> = observation
        .deployed
        .stages
        .iter()
        .flat_map(|s| &s.assignments)
        .map(|a| (a.variant.clone(), a.batch, a.replicas))
        .collect();
    out.sort();
    out
}

/// Observes every 300 ms (handing each observation to the load's router) until `done`
/// holds; fails with the last observation and the server's log after `limit`.
pub fn observe_until(
    backend: &mut dyn BackendInstance,
    server: &TorchServe,
    load: Option<&Load>,
    totals: &mut Totals,
    what: &str,
    limit: Duration,
    done: impl Fn(&PluginObservation) -> bool,
) -> PluginObservation {
    let started = Instant::now();
    loop {
        let observation = backend.observe().expect("observe");
        totals.add(&observation);
        if let Some(load) = load {
            load.route(&observation);
        }
        if done(&observation) {
            return observation;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not reached within {limit:?}; last observation: {}\nserver log:\n{}",
            serde_json::to_string_pretty(&observation).unwrap_or_default(),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Keeps observing (and routing) for `duration`.
pub fn observe_for(
    backend: &mut dyn BackendInstance,
    server: &TorchServe,
    load: &Load,
    totals: &mut Totals,
    duration: Duration,
) {
    let until = Instant::now() + duration;
    observe_until(
        backend,
        server,
        Some(load),
        totals,
        "steady state",
        duration + Duration::from_secs(5),
        |_| Instant::now() >= until,
    );
}

/// What the observations added up to.
#[derive(Debug, Default)]
pub struct Totals {
    pub completed: u64,
    pub dropped: u64,
    pub seconds: usize,
    pub max_busy: f64,
}

impl Totals {
    pub fn add(&mut self, observation: &PluginObservation) {
        self.completed += observation.completed;
        self.dropped += observation.dropped;
        self.seconds += observation.arrivals_per_second.len();
        for stage in &observation.stages {
            self.max_busy = self.max_busy.max(stage.busy_fraction);
        }
    }
}

pub fn assert_no_failures(report: &LoadReport, at_least: u64) {
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:#?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );
    assert_eq!(report.ok, report.sent, "every request sent was answered");
    assert!(
        report.ok >= at_least,
        "only {} requests answered (expected at least {at_least})",
        report.ok
    );
}
