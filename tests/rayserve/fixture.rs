//! Fixture for tests against a real local Ray cluster with Ray Serve (ray 2.60.0 from the
//! venv made by `tests/rayserve/install.sh`): a head node and worker nodes started on this
//! machine, each with its own CPU count (standing for separate hosts), on ports chosen per
//! cluster and in a temporary directory of its own; helpers to PUT a Serve configuration of
//! the test application (`tests/rayserve/app.py`), to read Serve's and the nodes' state and
//! to wait for an application. The cluster is stopped on drop: exactly its own processes
//! (every process that carries the cluster's marker in its environment), never any other
//! Ray on the machine. When Ray cannot start, the fixture panics with the nodes' logs (the
//! tests fail, they are never skipped). Shared by the daemon's integration tests and, through
//! `#[path]`, by the plugin crate's tests, so each uses only part of it; it needs `ureq`,
//! `serde_json` and the test-support crate only, and a `crate::one_real_server_at_a_time()`
//! lock in the crate that includes it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use infadapt_testkit::{Scratch, free_port, repo_root};

/// A free loopback port not handed out before in this process: the system may offer a
/// port it just released again, and Ray refuses two components on one port.
fn distinct_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = free_port();
        if given.insert(port) {
            return port;
        }
    }
}
use serde_json::{Value, json};

/// The environment variable that marks every process of one cluster (the raylets pass their
/// environment on to the workers): its value is the cluster's directory.
const MARKER: &str = "INFADAPT_RAY_CLUSTER";

/// How long the nodes may take to start on a loaded two-core machine.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Real servers saturate two cores: one at a time, through the lock of the test crate that
/// includes this file (shared with its other real-server tests).
fn one_server_at_a_time() -> MutexGuard<'static, ()> {
    crate::one_real_server_at_a_time()
}

/// `$INFADAPT_RAYSERVE_VENV`, else `<target>/rayserve-venv` of this test binary.
pub fn venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFADAPT_RAYSERVE_VENV") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/<test>-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary in <target>/<profile>/deps");
    target.join("rayserve-venv")
}

fn ray_tool() -> PathBuf {
    let tool = venv().join("bin").join("ray");
    assert!(
        tool.exists(),
        "Ray is not installed at {}: run `tests/rayserve/install.sh` (with the same \
         CARGO_TARGET_DIR) or point INFADAPT_RAYSERVE_VENV at a venv with ray[serve]==2.60.0",
        venv().display()
    );
    tool
}

/// The directory of the test application module (`app.py`), as Serve's `working_dir`.
pub fn app_dir() -> PathBuf {
    repo_root().join("tests/rayserve")
}

/// A test variant of `app.py`: `work` loop steps per request.
#[derive(Debug, Clone, Copy)]
pub struct TestVariant {
    pub name: &'static str,
    pub work: u64,
}

pub const SMALL: TestVariant = TestVariant {
    name: "small",
    work: 20_000,
};
pub const MEDIUM: TestVariant = TestVariant {
    name: "medium",
    work: 40_000,
};
pub const LARGE: TestVariant = TestVariant {
    name: "large",
    work: 80_000,
};

/// One Serve application of `app.py` serving `variant` at `route_prefix`: one deployment
/// named after the variant with `replicas` replicas of `cpus` cores and `max_batch_size`;
/// `node`, when given, pins the replicas to that node (a `label_selector` on its node id).
pub fn test_application(
    name: &str,
    route_prefix: &str,
    variant: TestVariant,
    replicas: u32,
    cpus: f64,
    max_batch_size: u32,
    node: Option<&str>,
) -> Value {
    let mut actor_options = json!({ "num_cpus": cpus });
    if let Some(node) = node {
        actor_options["label_selector"] = json!({ "ray.io/node-id": node });
    }
    json!({
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "app:app",
        "runtime_env": { "working_dir": format!("local://{}", app_dir().display()) },
        "args": { "variant": variant.name, "work": variant.work },
        "deployments": [{
            "name": variant.name,
            "num_replicas": replicas,
            "ray_actor_options": actor_options,
            "user_config": { "max_batch_size": max_batch_size },
        }],
    })
}

/// One node of the cluster: `ray start --block`, in its own process group.
struct Node {
    child: Child,
    cpus: u32,
    node_manager_port: u16,
    metrics_port: u16,
    log: PathBuf,
}

/// A running local Ray cluster; stopped on drop.
pub struct RayCluster {
    dir: Scratch,
    nodes: Vec<Node>,
    pub gcs_port: u16,
    pub dashboard_port: u16,
    pub proxy_port: u16,
    pub grpc_proxy_port: u16,
    node_ids: Vec<String>,
    started_in: Duration,
    _serial: MutexGuard<'static, ()>,
}

impl RayCluster {
    /// Starts a head node with `nodes[0]` CPUs and a worker node for each further entry;
    /// waits until the dashboard answers and every node is alive.
    pub fn start(nodes: &[u32]) -> RayCluster {
        assert!(!nodes.is_empty(), "a cluster needs a head node");
        let serial = one_server_at_a_time();
        let started = Instant::now();
        let ray = ray_tool();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        // Short: Ray's socket paths under it must stay within the Unix socket path limit.
        let dir = Scratch::new("ray", &COUNT.fetch_add(1, Ordering::Relaxed).to_string());
        let mut cluster = RayCluster {
            dir,
            nodes: Vec::new(),
            gcs_port: distinct_port(),
            dashboard_port: distinct_port(),
            proxy_port: distinct_port(),
            grpc_proxy_port: distinct_port(),
            node_ids: Vec::new(),
            started_in: Duration::ZERO,
            _serial: serial,
        };
        let head = cluster.spawn_node(&ray, 0, nodes[0]);
        cluster.nodes.push(head);
        cluster.wait_nodes_alive(1);
        for (index, &cpus) in nodes.iter().enumerate().skip(1) {
            let node = cluster.spawn_node(&ray, index, cpus);
            cluster.nodes.push(node);
        }
        cluster.wait_nodes_alive(nodes.len());
        cluster.node_ids = cluster.read_node_ids();
        cluster.wait_resources_reported();
        cluster.wait_serve_api();
        cluster.started_in = started.elapsed();
        cluster
    }

    fn spawn_node(&self, ray: &PathBuf, index: usize, cpus: u32) -> Node {
        let node_manager_port = distinct_port();
        let metrics_port = distinct_port();
        let log = self.dir.join(format!("node-{index}.log"));
        let out = std::fs::File::create(&log).expect("node log");
        let mut command = Command::new(ray);
        command.arg("start").arg("--block");
        if index == 0 {
            command
                .arg("--head")
                .args(["--port", &self.gcs_port.to_string()])
                .args(["--include-dashboard", "true"])
                .args(["--dashboard-host", "127.0.0.1"])
                .args(["--dashboard-port", &self.dashboard_port.to_string()])
                .args(["--ray-client-server-port", &distinct_port().to_string()]);
        } else {
            command.args(["--address", &format!("127.0.0.1:{}", self.gcs_port)]);
        }
        command
            .args(["--num-cpus", &cpus.to_string()])
            .args(["--num-gpus", "0"])
            .args(["--node-ip-address", "127.0.0.1"])
            .args(["--node-manager-port", &node_manager_port.to_string()])
            .args(["--object-manager-port", &distinct_port().to_string()])
            .args(["--metrics-export-port", &metrics_port.to_string()])
            .args([
                "--dashboard-agent-listen-port",
                &distinct_port().to_string(),
            ])
            .args(["--dashboard-agent-grpc-port", &distinct_port().to_string()])
            .args(["--runtime-env-agent-port", &distinct_port().to_string()])
            // Workers of every node bind ports the system chooses: nodes on one machine
            // would otherwise share the default range.
            .args(["--min-worker-port", "0", "--max-worker-port", "0"])
            .args(["--object-store-memory", "100000000"])
            .arg("--disable-usage-stats")
            .arg("--temp-dir")
            .arg(self.dir.path())
            .env(MARKER, self.dir.path())
            .env("RAY_USAGE_STATS_ENABLED", "0")
            // Metrics reach the nodes' Prometheus endpoints within a second or two.
            .env("RAY_metrics_report_interval_ms", "1000")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", ray.display()));
        Node {
            child,
            cpus,
            node_manager_port,
            metrics_port,
            log,
        }
    }

    /// Waits until the dashboard lists `count` alive nodes; panics with the logs when a
    /// node's `ray start` exits or the time is up.
    fn wait_nodes_alive(&mut self, count: usize) {
        let started = Instant::now();
        loop {
            if let Some(nodes) = self.try_get_json("/api/v0/nodes") {
                let alive = nodes["data"]["result"]["result"]
                    .as_array()
                    .map(|list| list.iter().filter(|n| n["state"] == "ALIVE").count())
                    .unwrap_or(0);
                if alive >= count {
                    return;
                }
            }
            for (index, node) in self.nodes.iter_mut().enumerate() {
                if let Ok(Some(status)) = node.child.try_wait() {
                    panic!(
                        "Ray node {index} exited during startup ({status}):\n{}",
                        self.log_tail()
                    );
                }
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "the Ray cluster did not show {count} alive nodes within {START_LIMIT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the cluster status reports the resources of every node (it lags the
    /// nodes' registration by a few seconds).
    fn wait_resources_reported(&self) {
        let started = Instant::now();
        while self.cpu_usage_by_node().len() < self.nodes.len() {
            assert!(
                started.elapsed() < START_LIMIT,
                "the cluster status did not report every node's resources within \
                 {START_LIMIT:?}: {:?}\n{}",
                self.cpu_usage_by_node(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until Serve's REST API answers: the dashboard's first answer there takes
    /// seconds (measured: over 2 s on a loaded machine), later ones milliseconds.
    fn wait_serve_api(&self) {
        let started = Instant::now();
        let url = format!("{}/api/serve/applications/", self.dashboard_url());
        loop {
            let answered = agent(Duration::from_secs(30))
                .get(&url)
                .call()
                .is_ok_and(|answer| answer.status() == 200);
            if answered {
                return;
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "Serve's REST API did not answer within {START_LIMIT:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node ids in the order of `start`'s list, matched by node-manager port.
    fn read_node_ids(&self) -> Vec<String> {
        let summary = self.get_json("/nodes?view=summary");
        let by_port: BTreeMap<u64, String> = summary["data"]["summary"]
            .as_array()
            .expect("node summary list")
            .iter()
            .filter_map(|n| {
                let raylet = &n["raylet"];
                Some((
                    raylet["nodeManagerPort"].as_u64()?,
                    raylet["nodeId"].as_str()?.to_owned(),
                ))
            })
            .collect();
        self.nodes
            .iter()
            .map(|node| {
                by_port
                    .get(&u64::from(node.node_manager_port))
                    .unwrap_or_else(|| {
                        panic!(
                            "no node with node-manager port {} in {summary}",
                            node.node_manager_port
                        )
                    })
                    .clone()
            })
            .collect()
    }

    /// How long `start` took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The dashboard's base URL (Serve's REST API is under `/api/serve/applications/`).
    pub fn dashboard_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.dashboard_port)
    }

    /// Serve's HTTP proxy (on the head node), as configured by [`RayCluster::serve_config`].
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// Node ids, head first, in the order of `start`'s list.
    pub fn node_ids(&self) -> &[String] {
        &self.node_ids
    }

    /// CPUs per node, in the order of `start`'s list.
    pub fn node_cpus(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.cpus).collect()
    }

    /// Each node's Prometheus endpoint, in the order of `start`'s list.
    pub fn metrics_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}/metrics", n.metrics_port))
            .collect()
    }

    /// The whole Serve configuration for `applications`: the proxy on the head node only (the
    /// nodes share one address here) at this cluster's ports.
    pub fn serve_config(&self, applications: Vec<Value>) -> Value {
        json!({
            "proxy_location": "HeadOnly",
            "http_options": { "host": "127.0.0.1", "port": self.proxy_port },
            "grpc_options": { "port": self.grpc_proxy_port },
            "applications": applications,
        })
    }

    /// PUTs a Serve configuration; panics unless it is accepted.
    pub fn put_serve(&self, config: &Value) {
        let (status, body) = self.try_put_serve(config);
        assert_eq!(
            status, 200,
            "PUT of the Serve config refused: {body}\n{config}"
        );
    }

    /// PUTs a Serve configuration: the status and the answer's text.
    pub fn try_put_serve(&self, config: &Value) -> (u16, String) {
        let url = format!("{}/api/serve/applications/", self.dashboard_url());
        let mut answer = agent(Duration::from_secs(30))
            .put(&url)
            .header("content-type", "application/json")
            .send(config.to_string())
            .unwrap_or_else(|e| panic!("PUT {url}: {e}\n{}", self.log_tail()));
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        (answer.status().as_u16(), body)
    }

    /// Serve's state: the answer of `GET /api/serve/applications/`.
    pub fn serve_details(&self) -> Value {
        self.get_json("/api/serve/applications/")
    }

    /// Waits until application `name` is `RUNNING` with every deployment's target replicas
    /// running; the details then. Panics with the application's state and the logs when it
    /// fails to deploy or the time is up.
    pub fn wait_app_running(&self, name: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let details = self.serve_details();
            let app = &details["applications"][name];
            if app["status"] == "RUNNING" && all_replicas_running(app) {
                return details;
            }
            assert!(
                app["status"] != "DEPLOY_FAILED",
                "application {name} failed to deploy: {app}\n{}",
                self.log_tail()
            );
            assert!(
                started.elapsed() < limit,
                "application {name} not running within {limit:?}: {app}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Per node id: (used, total) CPUs, from the dashboard's cluster status.
    pub fn cpu_usage_by_node(&self) -> BTreeMap<String, (f64, f64)> {
        let status = self.get_json("/api/cluster_status");
        let by_node = &status["data"]["clusterStatus"]["loadMetricsReport"]["usageByNode"];
        by_node
            .as_object()
            .expect("usageByNode")
            .iter()
            .filter_map(|(id, usage)| {
                let cpu = usage["CPU"].as_array()?;
                Some((id.clone(), (cpu.first()?.as_f64()?, cpu.get(1)?.as_f64()?)))
            })
            .collect()
    }

    /// `GET` of a dashboard path that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        self.try_get_json(path).unwrap_or_else(|| {
            panic!(
                "GET {}{path} did not answer JSON\n{}",
                self.dashboard_url(),
                self.log_tail()
            )
        })
    }

    fn try_get_json(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.dashboard_url());
        let mut answer = agent(Duration::from_secs(10)).get(&url).call().ok()?;
        if answer.status() != 200 {
            return None;
        }
        let body = answer.body_mut().read_to_string().ok()?;
        serde_json::from_str(&body).ok()
    }

    /// The last lines of every node's output and of Ray's main logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut files: Vec<PathBuf> = self.nodes.iter().map(|n| n.log.clone()).collect();
        let logs = self.dir.join("session_latest/logs");
        for name in [
            "gcs_server.err",
            "raylet.err",
            "dashboard.err",
            "dashboard.log",
        ] {
            files.push(logs.join(name));
        }
        let mut text = String::new();
        for file in files {
            let content = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            if !tail.trim().is_empty() {
                text.push_str(&format!("--- {}\n{tail}\n", file.display()));
            }
        }
        text
    }

    /// The processes of this cluster now: those that carry its marker in their environment
    /// or whose working directory is in the cluster's directory.
    pub fn processes(&self) -> Vec<u32> {
        cluster_processes(
            &format!("{MARKER}={}", self.dir.path().display()),
            self.dir.path(),
        )
    }
}

/// Whether every deployment of an application (an entry of the GET's `applications`) has
/// its target number of replicas running and no other.
pub fn all_replicas_running(app: &Value) -> bool {
    let Some(deployments) = app["deployments"].as_object() else {
        return false;
    };
    !deployments.is_empty()
        && deployments.values().all(|d| {
            let replicas = d["replicas"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let running = replicas.iter().filter(|r| r["state"] == "RUNNING").count();
            d["target_num_replicas"].as_u64() == Some(running as u64) && replicas.len() == running
        })
}

/// The running replicas of one deployment: (replica id, node id).
pub fn running_replicas(details: &Value, app: &str, deployment: &str) -> Vec<(String, String)> {
    details["applications"][app]["deployments"][deployment]["replicas"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|r| r["state"] == "RUNNING")
        .map(|r| {
            (
                r["replica_id"].as_str().unwrap_or_default().to_owned(),
                r["node_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

impl Drop for RayCluster {
    fn drop(&mut self) {
        let before = self.processes();
        // `ray start --block` stops its node's processes when terminated (workers first);
        // what has not stopped within a few seconds is killed: nothing of a test cluster
        // needs keeping.
        for node in self.nodes.iter().rev() {
            signal("-TERM", &node.child.id().to_string());
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for node in self.nodes.iter_mut().rev() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = node.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Whatever of this cluster is left goes now: each node's process group (the node's
        // own processes), and every process that carries the marker in its environment or
        // works in the cluster's directory (workers run in process groups of their own, and
        // the agents overwrite their environment with their process title).
        let groups: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("-{}", node.child.id()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed: std::collections::BTreeSet<u32> = before.into_iter().collect();
        loop {
            for group in &groups {
                signal("-KILL", group);
            }
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                signal("-KILL", &pid.to_string());
                killed.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
        // A killed process loses its environment and working directory before it is gone:
        // wait until the ones killed are gone (or zombies), so the ports are free again.
        while killed.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn signal(name: &str, pid: &str) {
    let _ = Command::new("kill")
        .args([name, "--", pid])
        .stderr(Stdio::null())
        .status();
}

/// Processes whose environment holds `entry` (`NAME=value`) or whose working directory is
/// `dir` or below it, zombies excluded.
pub fn cluster_processes(entry: &str, dir: &Path) -> Vec<u32> {
    let Ok(list) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    list.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if zombie {
                return false;
            }
            let marked = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|variable| variable == entry.as_bytes())
            });
            let inside = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(dir));
            marked || inside
        })
        .collect()
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// POSTs `body` to `url` (a Serve route through the proxy): status and answer text, or the
/// transport error as text with status 0.
pub fn post(url: &str, body: &str, timeout: Duration) -> (u16, String) {
    match agent(timeout)
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(mut answer) => (
            answer.status().as_u16(),
            answer.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// What the load sender saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    /// Requests that did not answer 200, with the second they were sent in and why.
    pub failures: Vec<String>,
    /// Answers per variant named in them.
    pub per_variant: BTreeMap<String, u64>,
    /// Answers per node id named in them.
    pub per_node: BTreeMap<String, u64>,
}

/// An open-loop sender: POSTs to one URL (the daemon's router) at the given rates, one per
/// second in turn, each second's requests spread evenly over it (fractions carry over); the
/// schedule never waits for answers (a pool of senders answers them).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    scheduler: Option<std::thread::JoinHandle<()>>,
    report: std::sync::Arc<std::sync::Mutex<LoadReport>>,
}

impl Load {
    pub fn replay(url: &str, rates_rps: Vec<f64>) -> Load {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex, mpsc};
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let (jobs, receiver) = mpsc::channel::<usize>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut senders = Vec::new();
        for _ in 0..24 {
            let receiver = Arc::clone(&receiver);
            let report = Arc::clone(&report);
            let url = url.to_owned();
            senders.push(std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(30));
                loop {
                    let Ok(second) = receiver.lock().expect("jobs").recv() else {
                        return;
                    };
                    let outcome = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(r#"{"inputs": []}"#);
                    let (status, body) = match outcome {
                        Ok(mut answer) => (
                            answer.status().as_u16(),
                            answer.body_mut().read_to_string().unwrap_or_default(),
                        ),
                        Err(e) => (0, e.to_string()),
                    };
                    let mut report = report.lock().expect("report");
                    let answer = serde_json::from_str::<Value>(&body).ok();
                    match answer {
                        Some(answer) if status == 200 => {
                            report.ok += 1;
                            let variant = answer["variant"].as_str().unwrap_or("?").to_owned();
                            let node = answer["node_id"].as_str().unwrap_or("?").to_owned();
                            *report.per_variant.entry(variant).or_default() += 1;
                            *report.per_node.entry(node).or_default() += 1;
                        }
                        _ => report
                            .failures
                            .push(format!("second {second}: {status} {body}")),
                    }
                }
            }));
        }
        let scheduler = {
            let stop = Arc::clone(&stop);
            let report = Arc::clone(&report);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut due = 0.0_f64;
                let mut sent = 0_u64;
                'schedule: for (second, rate) in rates_rps.iter().enumerate() {
                    due += rate;
                    let count = due.floor() as u64;
                    due -= count as f64;
                    for k in 0..count {
                        if stop.load(Ordering::Relaxed) {
                            break 'schedule;
                        }
                        let at = Duration::from_secs_f64(second as f64 + k as f64 / count as f64);
                        if let Some(wait) = at.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                        let _ = jobs.send(second);
                        sent += 1;
                    }
                }
                report.lock().expect("report").sent = sent;
                drop(jobs);
                for sender in senders {
                    let _ = sender.join();
                }
            })
        };
        Load {
            stop,
            scheduler: Some(scheduler),
            report,
        }
    }

    /// Waits for the schedule to end and every request to be answered; the report.
    pub fn finish(mut self) -> LoadReport {
        if let Some(scheduler) = self.scheduler.take() {
            let _ = scheduler.join();
        }
        std::mem::take(&mut *self.report.lock().expect("report"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(scheduler) = self.scheduler.take() {
            let _ = scheduler.join();
        }
    }
}
