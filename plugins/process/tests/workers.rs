//! The process backend driven in-process with real worker processes (`infadapt-test-worker`,
//! built here with cargo): scale 1 → 3 → 1 under load with no failed request, a worker
//! killed with SIGKILL restarted and reported, workers adopted by a new instance after the
//! old one vanished, GPU placement reported unavailable without a driver, bad configs and
//! plans refused. The load generator plays the daemon's router: it sends requests only to
//! the endpoints the backend reports `ready`. (The real daemon with this plugin is tested in
//! the workspace's `tests/process.rs`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::EndpointState;
use infadapt_plugin_abi::{Backend, PlanMessage, PluginObservation};
use infadapt_plugin_process::{ProcessBackend, StateFile, system};
use infadapt_testkit::{assignment_message, plan_message, single_plan_message};
use serde_json::json;

/// The worker binary, built once into this test binary's target directory.
struct Built {
    worker: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = infadapt_testkit::workspace_build_dir();
        let built = Built {
            worker: profile_dir.join("infadapt-test-worker"),
        };
        assert!(built.worker.exists(), "{} missing", built.worker.display());
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

/// A backend config for the worker: variant `w` doing `work` rounds per request.
fn config(dir: &Path, ports: (u16, u16), work: u32) -> serde_json::Value {
    json!({
        "state_dir": dir.join("state").display().to_string(),
        "port_range": [ports.0, ports.1],
        "drain_s": 1.0,
        "stop_timeout_s": 5.0,
        "restart_backoff_s": 0.5,
        "health_timeout_s": 1.0,
        "pipeline": { "name": "p", "stages": [{ "name": "s", "variants": ["w"] }] },
        "variants": { "w": {
            "command": [built().worker.display().to_string(), "--port", "{port}",
                        "--variant", "{variant}", "--work", work.to_string()],
            "stats_url": "http://{host}:{port}/stats",
            "readiness_timeout_s": 20
        } }
    })
}

/// `replicas` workers of `w` on `cores` cores each, in the stage `s`.
fn plan(replicas: u32, cores: u32) -> PlanMessage {
    single_plan_message("s", "w", 1, cores, replicas)
}

/// State letter of a process (`None`: no such process).
fn process_state(pid: i32) -> Option<char> {
    system::proc_stat(pid).map(|s| s.state)
}

/// Whether `pid` has ended: no process, or a zombie that PID 1 owns. (On hosts whose PID 1
/// does not reap, an orphan that the daemon adopted and stopped stays a zombie of PID 1;
/// it is dead all the same and not the daemon's to reap.)
fn has_ended(pid: i32) -> bool {
    match process_state(pid) {
        None => true,
        Some('Z') => parent_of(pid) == Some(1),
        Some(_) => false,
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Zombie children of this test process among `pids` (workers it should have reaped).
fn own_zombies(pids: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    pids.iter()
        .copied()
        .filter(|&pid| process_state(pid) == Some('Z') && parent_of(pid) == Some(me))
        .collect()
}

/// POSTs to `url` (`http://host:port/path`) with a 10 s limit; the status and body.
fn post(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (address, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connect {url}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    .map_err(|e| format!("send {url}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {url}: {e}"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line from {url}: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A closed-loop load generator standing in for the router: each client sends one request
/// at a time, round robin over the endpoints last reported ready.
struct Load {
    ready: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    served_by: Arc<Mutex<std::collections::BTreeSet<i64>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
    /// Requests the backend's observations counted as completed.
    reported: AtomicU64,
}

impl Load {
    fn start(clients: usize, limit: Duration) -> Load {
        let mut load = Load {
            ready: Arc::default(),
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            failures: Arc::default(),
            served_by: Arc::default(),
            clients: Vec::new(),
            reported: AtomicU64::new(0),
        };
        for client in 0..clients {
            let (ready, stop, ok, failed, failures, served_by) = (
                Arc::clone(&load.ready),
                Arc::clone(&load.stop),
                Arc::clone(&load.ok),
                Arc::clone(&load.failed),
                Arc::clone(&load.failures),
                Arc::clone(&load.served_by),
            );
            load.clients.push(std::thread::spawn(move || {
                let began = Instant::now();
                let mut turn = client;
                while !stop.load(Ordering::SeqCst) && began.elapsed() < limit {
                    let url = {
                        let ready = ready.lock().expect("ready");
                        if ready.is_empty() {
                            None
                        } else {
                            turn += 1;
                            Some(ready[turn % ready.len()].clone())
                        }
                    };
                    let Some(url) = url else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    match post(&url) {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let answer: serde_json::Value =
                                serde_json::from_str(&body).unwrap_or_default();
                            if let Some(pid) = answer["pid"].as_i64() {
                                served_by.lock().expect("served").insert(pid);
                            }
                        }
                        Ok((code, body)) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            failures
                                .lock()
                                .expect("f")
                                .push(format!("{url}: {code} {body}"));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            failures.lock().expect("f").push(e);
                        }
                    }
                }
            }));
        }
        load
    }

    /// Routes to the ready endpoints of an observation.
    fn route(&self, observation: &PluginObservation) {
        let urls: Vec<String> = observation
            .endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Ready)
            .map(|e| e.url.clone())
            .collect();
        *self.ready.lock().expect("ready") = urls;
        self.reported
            .fetch_add(observation.completed, Ordering::SeqCst);
    }

    /// Stops the clients; (ok, failed, failure texts, pids that answered).
    fn finish(mut self) -> (u64, u64, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients.drain(..) {
            client.join().expect("client thread");
        }
        let failures = self.failures.lock().expect("f").clone();
        let served = self.served_by.lock().expect("served").len();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            failures,
            served,
        )
    }
}

/// Observes every 100 ms (routing the load, if any) until `done` holds; the last
/// observation, or a panic naming what was seen.
fn observe_until(
    backend: &mut ProcessBackend,
    load: Option<&Load>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&PluginObservation, &ProcessBackend) -> bool,
) -> PluginObservation {
    let began = Instant::now();
    loop {
        let observation = Backend::observe(backend).expect("observe");
        if let Some(load) = load {
            load.route(&observation);
        }
        if done(&observation, backend) {
            return observation;
        }
        assert!(
            began.elapsed() < timeout,
            "not {what} within {timeout:?}; workers {:?}; events {:?}",
            backend.workers(),
            backend.recent_events()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready_count(observation: &PluginObservation) -> usize {
    observation
        .endpoints
        .iter()
        .filter(|e| e.state == EndpointState::Ready)
        .count()
}

#[test]
fn scaling_one_three_one_under_load_fails_no_request() {
    let dir = Scratch::new("scale");
    // The first port of the range is taken: the backend must skip it.
    let taken = std::net::TcpListener::bind("127.0.0.1:21000").expect("bind a port of the range");
    let mut backend = ProcessBackend::create(config(dir.path(), (21000, 21049), 300_000))
        .expect("create the backend");
    let report = Backend::apply(&mut backend, &plan(1, 1)).expect("apply 1");
    assert!(report.changed, "{report:?}");
    let first = observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "1 ready",
        |o, _| ready_count(o) == 1,
    );
    assert_eq!(first.deployed.stages[0].assignments[0].replicas, 1);
    assert!(
        !first.endpoints[0].url.contains(":21000/"),
        "a taken port was handed out: {:?}",
        first.endpoints
    );

    let load = Load::start(3, Duration::from_secs(60));
    observe_until(
        &mut backend,
        Some(&load),
        Duration::from_secs(5),
        "serving",
        |_, _| load.ok.load(Ordering::SeqCst) >= 10,
    );
    Backend::apply(&mut backend, &plan(3, 1)).expect("apply 3");
    let three = observe_until(
        &mut backend,
        Some(&load),
        Duration::from_secs(20),
        "3 ready",
        |o, _| ready_count(o) == 3,
    );
    assert_eq!(three.stages[0].ready_replicas, 3);
    assert_eq!(three.deployed.stages[0].assignments[0].replicas, 3);
    // Applying the same plan again changes nothing.
    let again = Backend::apply(&mut backend, &plan(3, 1)).expect("apply 3 again");
    assert!(!again.changed, "{again:?}");

    // Each worker is pinned to one CPU: every thread's mask is the recorded set of 1.
    let workers = backend.workers();
    let mut ports: Vec<u16> = workers.iter().map(|w| w.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "ports collide: {workers:?}");
    let usable = system::allowed_cpus().len();
    for w in &workers {
        assert_eq!(w.cpus.len(), 1, "{w:?}");
        let masks = system::thread_cpus(w.pid);
        assert!(!masks.is_empty(), "no threads read for {w:?}");
        assert!(masks.iter().all(|m| m == &w.cpus), "{w:?}: {masks:?}");
    }
    // Disjoint while the host has enough CPUs.
    let mut used: Vec<usize> = workers.iter().flat_map(|w| w.cpus.clone()).collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), usable.min(3), "{workers:?}");

    std::thread::sleep(Duration::from_millis(1500));
    let report = Backend::apply(&mut backend, &plan(1, 1)).expect("apply 1 again");
    assert!(
        report
            .actions
            .iter()
            .filter(|a| a.contains("draining"))
            .count()
            == 2,
        "{report:?}"
    );
    let all_pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
    observe_until(
        &mut backend,
        Some(&load),
        Duration::from_secs(20),
        "back to 1 worker",
        |o, b| ready_count(o) == 1 && b.workers().len() == 1,
    );
    std::thread::sleep(Duration::from_millis(500));
    // One more observation counts what the survivor served since the last one.
    load.route(&Backend::observe(&mut backend).expect("observe"));
    let reported = load.reported.load(Ordering::SeqCst);
    let (ok, failed, failures, served_by) = load.finish();
    eprintln!(
        "scale 1-3-1 under load: {ok} requests ok, {failed} failed, {served_by} workers served, \
         {reported} counted by observe"
    );
    assert_eq!(failed, 0, "{ok} ok, failures: {failures:?}");
    assert!(ok >= 30, "only {ok} requests served");
    assert!(served_by >= 3, "only {served_by} workers served requests");
    // The workers' counters reach the observations: all but what stopped workers served
    // after their last read (at most the last 100 ms before each stop).
    assert!(
        reported <= ok && reported as f64 >= 0.8 * ok as f64,
        "observations counted {reported} of {ok} requests"
    );

    let survivor = backend.workers()[0].pid;
    for pid in all_pids.iter().filter(|&&p| p != survivor) {
        assert_eq!(process_state(*pid), None, "stopped worker {pid} not reaped");
    }
    drop(backend);
    assert!(has_ended(survivor) && process_state(survivor).is_none());
    assert!(own_zombies(&all_pids).is_empty());
    drop(taken);
}

#[test]
fn a_killed_worker_is_restarted_and_reported() {
    let dir = Scratch::new("crash");
    let mut backend = ProcessBackend::create(config(dir.path(), (21100, 21149), 100_000))
        .expect("create the backend");
    Backend::apply(&mut backend, &plan(2, 1)).expect("apply 2");
    observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "2 ready",
        |o, _| ready_count(o) == 2,
    );
    let victim = backend.workers()[0].pid;
    let status = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(100));
    let right_after = Backend::observe(&mut backend).expect("observe");
    assert_eq!(
        process_state(victim),
        None,
        "the killed worker was not reaped"
    );
    assert_eq!(right_after.stages[0].ready_replicas, 1, "{right_after:?}");
    assert_eq!(
        right_after.stages[0].starting_replicas, 1,
        "{right_after:?}"
    );
    assert_eq!(backend.counters().crashes, 1);

    let back = observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "2 ready again",
        |o, _| ready_count(o) == 2,
    );
    let pids: Vec<i32> = backend.workers().iter().map(|w| w.pid).collect();
    assert!(!pids.contains(&victim), "{pids:?}");
    assert_eq!(back.deployed.stages[0].assignments[0].replicas, 2);
    assert_eq!(backend.counters().started, 3);
    // The crash is reported in the next apply and in health.
    let report = Backend::apply(&mut backend, &plan(2, 1)).expect("apply");
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains(&format!("pid {victim}")) && a.contains("killed by SIGKILL")),
        "{report:?}"
    );
    let health = Backend::health(&mut backend).expect("health");
    assert!(
        health.healthy && health.detail.contains("1 crashed"),
        "{health:?}"
    );
    drop(backend);
    assert!(pids.iter().all(|&p| process_state(p).is_none()));
}

#[test]
fn a_new_instance_adopts_the_workers_of_one_that_vanished() {
    let dir = Scratch::new("adopt");
    let settings = config(dir.path(), (21200, 21249), 100_000);
    let mut first = ProcessBackend::create(settings.clone()).expect("create");
    Backend::apply(&mut first, &plan(2, 1)).expect("apply 2");
    observe_until(
        &mut first,
        None,
        Duration::from_secs(20),
        "2 ready",
        |o, _| ready_count(o) == 2,
    );
    let mut before: Vec<i32> = first.workers().iter().map(|w| w.pid).collect();
    before.sort_unstable();
    first.detach();

    // A record whose PID now belongs to another process (this one) is not ours: it must be
    // forgotten, not signalled.
    let state_file = dir.path().join("state/process-p.json");
    let mut state: StateFile =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("state JSON");
    let mut reused = state.workers[0].clone();
    reused.pid = std::process::id() as i32;
    reused.start_ticks += 1;
    reused.port = 21248;
    state.workers.push(reused);
    std::fs::write(&state_file, serde_json::to_vec(&state).expect("encode")).expect("write");

    let mut second = ProcessBackend::create(settings).expect("create again");
    assert_eq!(second.counters().adopted, 2);
    assert_eq!(second.counters().stale, 1);
    let adopted = observe_until(
        &mut second,
        None,
        Duration::from_secs(10),
        "adopted ready",
        |o, _| ready_count(o) == 2,
    );
    let mut after: Vec<i32> = second.workers().iter().map(|w| w.pid).collect();
    after.sort_unstable();
    assert_eq!(after, before, "not the same workers");
    assert!(second.workers().iter().all(|w| !w.own_child));
    assert_eq!(second.counters().started, 0, "duplicates were started");
    assert_eq!(adopted.deployed.stages[0].assignments[0].replicas, 2);
    let report = Backend::apply(&mut second, &plan(2, 1)).expect("same plan");
    assert!(!report.changed, "{report:?}");

    // Killing an adopted worker is noticed and repaired like any crash.
    let status = Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    observe_until(
        &mut second,
        None,
        Duration::from_secs(20),
        "repaired",
        |o, b| ready_count(o) == 2 && b.counters().crashes == 1 && b.counters().started == 1,
    );
    let all: Vec<i32> = second.workers().iter().map(|w| w.pid).collect();
    drop(second);
    for pid in all.iter().chain(&before) {
        assert!(has_ended(*pid), "worker {pid} still runs");
    }
    assert!(own_zombies(&all).is_empty() && own_zombies(&before).is_empty());
    // This test process itself was left alone.
    assert!(process_state(std::process::id() as i32).is_some());
}

#[test]
fn gpu_placement_is_reported_unavailable_once_without_a_driver_and_cpu_placement_works() {
    let dir = Scratch::new("gpu");
    let mut settings = config(dir.path(), (21250, 21299), 10_000);
    settings["variants"]["w"]["gpu"] = json!("preferred");
    settings["variants"]["w"]["command"]
        .as_array_mut()
        .expect("command")
        .extend([json!("--host"), json!("127.0.0.1")]);
    let gpus = infadapt_plugin_process::Gpus::probe();
    let mut backend = ProcessBackend::create(settings).expect("create");
    Backend::apply(&mut backend, &plan(1, 1)).expect("apply");
    observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "ready",
        |o, _| ready_count(o) == 1,
    );
    for _ in 0..3 {
        Backend::observe(&mut backend).expect("observe");
    }
    let worker = backend.workers()[0].clone();
    let environ = std::fs::read(format!("/proc/{}/environ", worker.pid)).expect("environ");
    let visible = environ
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|v| v.strip_prefix("CUDA_VISIBLE_DEVICES=").map(str::to_owned))
        .expect("CUDA_VISIBLE_DEVICES is set");
    let health = Backend::health(&mut backend).expect("health");
    match gpus.unavailable_reason() {
        Some(_) => {
            let notices = backend
                .recent_events()
                .iter()
                .filter(|e| e.contains("GPU placement unavailable"))
                .count();
            assert_eq!(notices, 1, "{:?}", backend.recent_events());
            assert!(
                health.detail.contains("GPU placement unavailable"),
                "{health:?}"
            );
            assert_eq!(worker.gpu, None);
            assert_eq!(visible, "");
            assert!(!Backend::describe(&backend).capabilities.gpu);
        }
        None => {
            let listed = gpus.list().expect("GPUs listed");
            let chosen = worker.gpu.expect("a GPU was chosen");
            let gpu = listed
                .iter()
                .find(|g| g.index == chosen)
                .expect("chosen GPU exists");
            assert_eq!(visible, gpu.uuid);
            assert!(Backend::describe(&backend).capabilities.gpu);
        }
    }
    assert_eq!(worker.cpus.len(), 1);
}

#[test]
fn bad_configs_and_plans_are_refused_with_the_key_named() {
    let dir = Scratch::new("bad");
    let mut settings = config(dir.path(), (21300, 21309), 10_000);
    settings["variants"]["w"]["command"] = json!("worker --port {port}");
    settings["drain_s"] = json!("soon");
    let error = ProcessBackend::create(settings).expect_err("bad config");
    assert_eq!(error.code, infadapt_plugin_abi::STATUS_INVALID_INPUT);
    assert!(
        error.message.contains("variants.w.command: must be a list"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("drain_s: must be a number"),
        "{}",
        error.message
    );

    let mut backend =
        ProcessBackend::create(config(dir.path(), (21300, 21309), 10_000)).expect("create");
    let unknown = single_plan_message("s", "nope", 1, 1, 1);
    let error = Backend::apply(&mut backend, &unknown).expect_err("unknown variant");
    assert!(
        error
            .message
            .contains("variant `nope`: not in the backend's `variants`"),
        "{}",
        error.message
    );
    assert!(backend.workers().is_empty());

    // Garbage from a stats URL is reported once, naming the worker and the URL; the worker
    // keeps serving.
    let mut garbage = config(dir.path(), (21300, 21309), 10_000);
    garbage["variants"]["w"]["stats_url"] = json!("http://{host}:{port}/healthz");
    drop(backend);
    let mut backend = ProcessBackend::create(garbage).expect("create");
    Backend::apply(&mut backend, &plan(1, 1)).expect("apply");
    observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "ready",
        |o, _| ready_count(o) == 1,
    );
    for _ in 0..3 {
        let observed = Backend::observe(&mut backend).expect("observe");
        assert_eq!(observed.completed, 0);
    }
    let complaints: Vec<String> = backend
        .recent_events()
        .into_iter()
        .filter(|e| e.contains("stats unreadable"))
        .collect();
    assert_eq!(complaints.len(), 1, "{complaints:?}");
    assert!(
        complaints[0].contains("/healthz: not JSON") && complaints[0].contains("s/w: worker pid"),
        "{complaints:?}"
    );

    // A state file that is not one is named, not ignored.
    std::fs::write(dir.path().join("state/process-p.json"), "garbage").expect("write");
    drop(backend);
    std::fs::write(dir.path().join("state/process-p.json"), "garbage").expect("write");
    let error = ProcessBackend::create(config(dir.path(), (21300, 21309), 10_000))
        .expect_err("garbage state");
    assert!(
        error.message.contains("process-p.json")
            && error.message.contains("not a valid state file"),
        "{}",
        error.message
    );
}

#[test]
fn switching_variant_and_cores_is_make_before_break_under_load() {
    let dir = Scratch::new("switch");
    let mut settings = config(dir.path(), (21310, 21359), 200_000);
    settings["pipeline"]["stages"][0]["variants"] = json!(["w", "big"]);
    let mut big = settings["variants"]["w"].clone();
    big["command"][6] = json!("400000");
    settings["variants"]["big"] = big;
    let mut backend = ProcessBackend::create(settings).expect("create");
    Backend::apply(&mut backend, &plan(2, 1)).expect("apply w×2");
    observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "w ready",
        |o, _| ready_count(o) == 2,
    );
    let old: Vec<i32> = backend.workers().iter().map(|w| w.pid).collect();
    let load = Load::start(3, Duration::from_secs(60));
    observe_until(
        &mut backend,
        Some(&load),
        Duration::from_secs(5),
        "serving",
        |_, _| load.ok.load(Ordering::SeqCst) >= 10,
    );

    let switched = single_plan_message("s", "big", 1, 2, 1);
    Backend::apply(&mut backend, &switched).expect("apply big×1 on 2 cores");
    let began = Instant::now();
    let mut fewest_ready = usize::MAX;
    let mut old_drained_before_new_ready = false;
    loop {
        let observation = Backend::observe(&mut backend).expect("observe");
        load.route(&observation);
        fewest_ready = fewest_ready.min(ready_count(&observation));
        let new_ready = observation
            .endpoints
            .iter()
            .any(|e| e.variant == "big" && e.state == EndpointState::Ready);
        let old_leaving = observation
            .endpoints
            .iter()
            .any(|e| e.variant == "w" && e.state == EndpointState::Draining);
        if old_leaving && !new_ready {
            old_drained_before_new_ready = true;
        }
        let workers = backend.workers();
        if workers.len() == 1 && workers[0].variant == "big" && new_ready {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no switch: {workers:?} {:?}",
            backend.recent_events()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, failures, _) = load.finish();
    assert_eq!(failed, 0, "{ok} ok, failures: {failures:?}");
    assert!(fewest_ready >= 1, "a moment without a ready endpoint");
    assert!(
        !old_drained_before_new_ready,
        "old workers drained before the new one was ready"
    );
    let new = &backend.workers()[0];
    assert_eq!(
        (new.cores, new.cpus.len()),
        (2, 2.min(system::allowed_cpus().len()))
    );
    assert!(system::thread_cpus(new.pid).iter().all(|m| m == &new.cpus));
    assert!(
        old.iter().all(|&p| process_state(p).is_none()),
        "old workers not reaped"
    );
    let observed = Backend::observe(&mut backend).expect("observe");
    assert_eq!(observed.deployed, switched);
}

#[test]
fn workers_that_never_get_ready_or_cannot_start_are_retried_with_backoff_and_reported() {
    let dir = Scratch::new("retry");
    let mut settings = config(dir.path(), (21360, 21399), 10_000);
    settings["restart_backoff_s"] = json!(0.2);
    settings["restart_backoff_max_s"] = json!(0.4);
    settings["pipeline"]["stages"] = json!([
        { "name": "s", "variants": ["w"] },
        { "name": "t", "variants": ["missing"] }
    ]);
    settings["variants"]["w"]["command"]
        .as_array_mut()
        .expect("command")
        .extend([json!("--ready-after-ms"), json!("60000")]);
    settings["variants"]["w"]["readiness_timeout_s"] = json!(0.5);
    settings["variants"]["missing"] = json!({ "command": ["/nonexistent/infadapt-worker"] });
    let mut backend = ProcessBackend::create(settings).expect("create");
    let both = plan_message(&[
        ("s", vec![assignment_message("w", 1, 1, 1, 1.0)]),
        ("t", vec![assignment_message("missing", 1, 1, 1, 1.0)]),
    ]);
    let report = Backend::apply(&mut backend, &both).expect("apply");
    assert!(
        report.actions.iter().any(|a| a
            .contains("t/missing: cannot start worker: cannot run `/nonexistent/infadapt-worker`")),
        "{report:?}"
    );
    let seen = observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "two readiness timeouts",
        |o, b| {
            assert_eq!(
                ready_count(o),
                0,
                "a worker that is not ready was reported ready"
            );
            b.counters().crashes >= 2
        },
    );
    assert!(
        seen.stages
            .iter()
            .all(|s| s.ready_replicas == 0 && s.starting_replicas == 1),
        "{seen:?}"
    );
    let events = backend.recent_events();
    assert!(
        events
            .iter()
            .any(|e| e.contains("not ready within 0.5 s") && e.contains("killed")),
        "{events:?}"
    );
    let health = Backend::health(&mut backend).expect("health");
    assert!(!health.healthy, "{health:?}");
    assert!(health.detail.contains("t/missing failed"), "{health:?}");
    let pids: Vec<i32> = backend.workers().iter().map(|w| w.pid).collect();
    drop(backend);
    assert!(pids.iter().all(|&p| process_state(p).is_none()));
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let dir = Scratch::new("stubborn");
    let mut settings = config(dir.path(), (21400, 21409), 10_000);
    settings["drain_s"] = json!(0.2);
    settings["stop_timeout_s"] = json!(0.5);
    settings["variants"]["w"]["command"]
        .as_array_mut()
        .expect("command")
        .push(json!("--ignore-sigterm"));
    let mut backend = ProcessBackend::create(settings).expect("create");
    Backend::apply(&mut backend, &plan(1, 1)).expect("apply 1");
    observe_until(
        &mut backend,
        None,
        Duration::from_secs(20),
        "ready",
        |o, _| ready_count(o) == 1,
    );
    let pid = backend.workers()[0].pid;
    let report = Backend::apply(&mut backend, &plan(0, 1)).expect("apply 0");
    assert!(
        report.actions.iter().any(|a| a.contains("draining")),
        "{report:?}"
    );
    let began = Instant::now();
    let mut actions = Vec::new();
    while !backend.workers().is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            backend.workers()
        );
        std::thread::sleep(Duration::from_millis(100));
        actions.extend(
            Backend::apply(&mut backend, &plan(0, 1))
                .expect("apply")
                .actions,
        );
    }
    let stopped_after = began.elapsed();
    assert!(
        actions.iter().any(|a| a.contains("SIGTERM sent")),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.contains("did not stop within 0.5 s of SIGTERM; SIGKILL sent")),
        "{actions:?}"
    );
    assert!(
        stopped_after >= Duration::from_millis(700),
        "{stopped_after:?}"
    );
    assert_eq!(process_state(pid), None, "not reaped");
    assert_eq!(backend.counters().crashes, 0);
}

#[test]
fn with_on_exit_keep_a_destroyed_instance_leaves_its_workers_to_the_next() {
    let dir = Scratch::new("keep");
    let mut keep = config(dir.path(), (21410, 21419), 10_000);
    keep["on_exit"] = json!("keep");
    let mut first = ProcessBackend::create(keep.clone()).expect("create");
    Backend::apply(&mut first, &plan(1, 1)).expect("apply");
    observe_until(
        &mut first,
        None,
        Duration::from_secs(20),
        "ready",
        |o, _| ready_count(o) == 1,
    );
    let pid = first.workers()[0].pid;
    drop(first);
    assert_eq!(
        process_state(pid).map(|s| s != 'Z'),
        Some(true),
        "stopped despite keep"
    );

    // The next instance (here with the default `on_exit = "stop"`) adopts it, and stops it
    // when it is destroyed.
    let mut second =
        ProcessBackend::create(config(dir.path(), (21410, 21419), 10_000)).expect("create");
    assert_eq!(second.counters().adopted, 1);
    observe_until(
        &mut second,
        None,
        Duration::from_secs(10),
        "adopted",
        |o, _| ready_count(o) == 1,
    );
    assert_eq!(second.workers()[0].pid, pid);
    drop(second);
    assert_eq!(process_state(pid), None, "not stopped and reaped");
}
