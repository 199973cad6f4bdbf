//! The Ray Serve plugin through its Rust API against a real two-node Ray cluster
//! (`tests/rayserve/fixture.rs`, the venv of `tests/rayserve/install.sh`): a plan whose
//! replicas span both nodes, seen with their placement and the nodes' resources; a variant
//! switch under a steady load sent only to the endpoints the plugin reports ready, as the
//! daemon's router does, with no failed request; a change of cores per replica (Serve
//! replaces the replica, the new one first) and a scale-up under the same load; Serve's
//! request metrics;
//! Serve's autoscaler turned on by someone else (unhealthy, put back); the Serve controller
//! killed under load; the plan's placement enforced (one application pinned to each node,
//! replicas moved between nodes under load, none failed). One cluster for the whole test
//! binary (the cluster's start dominates its time).

#[path = "../../../tests/rayserve/fixture.rs"]
mod fixture;

/// One real cluster at a time in this test binary (the fixture takes it).
pub(crate) fn one_real_server_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fixture::{MEDIUM, RayCluster, SMALL, TestVariant, app_dir, post};
use infadapt_plugin_abi::messages::{EndpointState, PlacementMessage};
use infadapt_plugin_abi::{PlanMessage, PluginObservation, StagePlanMessage};
use infadapt_plugin_rayserve::{Config, RayServeBackend};
use serde_json::{Value, json};

/// Requests per second of the steady load.
const RATE_RPS: f64 = 8.0;
/// The drain time: longer than the observation cadence below.
const DRAIN_S: f64 = 2.0;
/// How often the test observes (the daemon's control period, shortened).
const OBSERVE_EVERY: Duration = Duration::from_millis(400);

/// The slowest `observe` and `apply` calls of the test, milliseconds (checked before the
/// controller is killed: they must stay well inside the daemon's `backend_timeout_s`).
static SLOWEST_OBSERVE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SLOWEST_APPLY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn timed<T>(slowest: &std::sync::atomic::AtomicU64, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = call();
    slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
    result
}

fn observe(
    backend: &mut RayServeBackend,
) -> Result<PluginObservation, infadapt_plugin_rayserve::RayServeError> {
    timed(&SLOWEST_OBSERVE_MS, || backend.observe_cluster())
}

fn apply(backend: &mut RayServeBackend, plan: &PlanMessage) -> infadapt_plugin_abi::ApplyReport {
    timed(&SLOWEST_APPLY_MS, || backend.apply_plan(plan)).expect("apply")
}

fn variant_table(variant: TestVariant) -> Value {
    json!({
        "import_path": "app:app",
        "args": { "variant": variant.name, "work": variant.work },
        "runtime_env": { "working_dir": format!("local://{}", app_dir().display()) },
    })
}

fn backend_config(cluster: &RayCluster) -> Value {
    json!({
        "dashboard_url": cluster.dashboard_url(),
        "proxy_url": cluster.proxy_url(),
        "drain_s": DRAIN_S,
        "request_timeout_ms": 4000,
        "call_budget_ms": 10000,
        "pipeline": { "name": "rt", "stages": [
            { "name": "classify", "variants": [SMALL.name, MEDIUM.name] } ] },
        "variants": { SMALL.name: variant_table(SMALL), MEDIUM.name: variant_table(MEDIUM) }
    })
}

fn plan(variant: &str, batch: u32, replicas: u32) -> PlanMessage {
    plan_with_cores(variant, batch, 1, replicas)
}

fn plan_with_cores(variant: &str, batch: u32, cores: u32, replicas: u32) -> PlanMessage {
    infadapt_testkit::single_plan_message("classify", variant, batch, cores, replicas)
}

/// One replica of one core per node as `nodes` says, at batch 2, all of `variant`.
fn placed_plan(variant: &str, nodes: &[(&str, u32)]) -> PlanMessage {
    let replicas = nodes.iter().map(|(_, r)| r).sum();
    let mut plan = plan(variant, 2, replicas);
    plan.placement = nodes
        .iter()
        .map(|(node, replicas)| PlacementMessage {
            stage: "classify".into(),
            variant: variant.into(),
            node: (*node).to_owned(),
            replicas: *replicas,
        })
        .collect();
    plan
}

/// (variant, node, replicas) of an observation's placement.
fn placement_set(o: &PluginObservation) -> BTreeSet<(String, String, u32)> {
    o.placement
        .iter()
        .map(|p| (p.variant.clone(), p.node.clone(), p.replicas))
        .collect()
}

fn placement_set_of_plan(plan: &PlanMessage) -> BTreeSet<(String, String, u32)> {
    plan.placement
        .iter()
        .map(|p| (p.variant.clone(), p.node.clone(), p.replicas))
        .collect()
}

fn states(o: &PluginObservation) -> Vec<(String, EndpointState)> {
    o.endpoints
        .iter()
        .map(|e| (e.variant.clone(), e.state))
        .collect()
}

/// What the sender saw.
#[derive(Debug, Default)]
struct Totals {
    sent: u64,
    failed: Vec<String>,
    by_variant: BTreeMap<String, u64>,
}

/// A steady open-loop load that, like the daemon's router, sends only to the endpoints the
/// latest observation reported `ready` (round robin).
struct Load {
    ready: Arc<Mutex<Vec<String>>>,
    totals: Arc<Mutex<Totals>>,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        let totals: Arc<Mutex<Totals>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, t, s) = (Arc::clone(&ready), Arc::clone(&totals), Arc::clone(&stop));
        let sender = std::thread::spawn(move || {
            let gap = Duration::from_secs_f64(1.0 / RATE_RPS);
            let mut next = Instant::now();
            let mut turn = 0usize;
            let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let urls = r.lock().unwrap().clone();
                if let Some(url) = urls.get(turn % urls.len().max(1)).cloned() {
                    turn += 1;
                    let t = Arc::clone(&t);
                    in_flight.push(std::thread::spawn(move || {
                        let (status, body) = post(&url, "{}", Duration::from_secs(20));
                        let mut totals = t.lock().unwrap();
                        totals.sent += 1;
                        if status != 200 {
                            totals.failed.push(format!("{url}: {status} {body}"));
                            return;
                        }
                        let variant = serde_json::from_str::<Value>(&body)
                            .ok()
                            .and_then(|v| v["variant"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        *totals.by_variant.entry(variant).or_default() += 1;
                    }));
                }
                next += gap;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            for request in in_flight {
                let _ = request.join();
            }
        });
        Load {
            ready,
            totals,
            stop,
            sender: Some(sender),
        }
    }

    /// Takes the endpoints an observation reported ready.
    fn follow(&self, o: &PluginObservation) {
        *self.ready.lock().unwrap() = o
            .endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Ready)
            .map(|e| e.url.clone())
            .collect();
    }

    fn finish(mut self) -> Totals {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(sender) = self.sender.take() {
            sender.join().expect("sender");
        }
        std::mem::take(&mut *self.totals.lock().unwrap())
    }
}

/// Observes every [`OBSERVE_EVERY`] (the load following each observation) until `done`;
/// every observation goes to `seen`.
fn observe_until(
    backend: &mut RayServeBackend,
    cluster: &RayCluster,
    load: Option<&Load>,
    seen: &mut Vec<PluginObservation>,
    what: &str,
    limit: Duration,
    done: impl Fn(&PluginObservation) -> bool,
) -> PluginObservation {
    let started = Instant::now();
    loop {
        let o = observe(backend)
            .unwrap_or_else(|e| panic!("observe ({what}): {e}\n{}", cluster.log_tail()));
        if let Some(load) = load {
            load.follow(&o);
        }
        seen.push(o.clone());
        if done(&o) {
            return o;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; last: {:?}\n{}",
            states(&o),
            cluster.log_tail()
        );
        std::thread::sleep(OBSERVE_EVERY);
    }
}

#[test]
fn rayserve_places_switches_and_scales_on_a_two_node_cluster_without_failed_requests() {
    let began = Instant::now();
    let cluster = RayCluster::start(&[2, 2]);
    let started_in = cluster.started_in();
    // Serve started with the cluster's ports and the proxy on the head (the nodes share one
    // address here); the plugin keeps these options in its every PUT.
    cluster.put_serve(&cluster.serve_config(vec![]));
    let config = backend_config(&cluster);
    assert!(
        Config::check(&config).is_empty(),
        "{:?}",
        Config::check(&config)
    );
    let mut backend =
        RayServeBackend::new(Config::from_json(&config).expect("config")).expect("create");
    let mut seen = Vec::new();

    // Three replicas of one core on two nodes of two: they span both nodes.
    let t = Instant::now();
    let three = plan(SMALL.name, 2, 3);
    assert!(apply(&mut backend, &three).changed);
    assert!(!apply(&mut backend, &three).changed, "apply is idempotent");
    let first = observe_until(
        &mut backend,
        &cluster,
        None,
        &mut seen,
        "small ready",
        Duration::from_secs(90),
        |o| states(o) == [(SMALL.name.to_owned(), EndpointState::Ready)],
    );
    let first_ready = t.elapsed();
    let on_nodes: BTreeSet<&str> = first.placement.iter().map(|p| p.node.as_str()).collect();
    let placed: u32 = first.placement.iter().map(|p| p.replicas).sum();
    assert_eq!(placed, 3, "{:?}", first.placement);
    assert_eq!(
        on_nodes.len(),
        2,
        "replicas on both nodes: {:?}",
        first.placement
    );
    assert!(
        on_nodes
            .iter()
            .all(|n| cluster.node_ids().iter().any(|id| id == n))
    );
    assert_eq!(first.nodes.len(), 2, "{:?}", first.nodes);
    for node in &first.nodes {
        assert!(node.alive && node.cpus == 2.0, "{node:?}");
        let owned = first
            .placement
            .iter()
            .filter(|p| p.node == node.id)
            .map(|p| f64::from(p.replicas))
            .sum::<f64>();
        assert_eq!(node.cpus_owned, owned, "{node:?}");
        assert!(node.cpus_free <= 2.0 - owned + 1e-9, "{node:?}");
    }
    let free: f64 = first.nodes.iter().map(|n| n.cpus_free).sum();
    assert!(
        (free - 1.0).abs() < 1e-9,
        "one CPU of four left: {:?}",
        first.nodes
    );
    let deployed = &first.deployed.stages[0].assignments[0];
    assert_eq!(
        (
            deployed.variant.as_str(),
            deployed.batch,
            deployed.cores,
            deployed.replicas
        ),
        (SMALL.name, 2, 1, 3)
    );
    assert!(backend.check_health().expect("health").healthy);

    // The switch under load: medium starts, small serves until medium is ready, then drains
    // and is removed after the drain time; the load goes only to ready endpoints.
    let load = Load::start();
    load.follow(&first);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    apply(&mut backend, &plan(MEDIUM.name, 1, 1));
    let switched_from = seen.len();
    observe_until(
        &mut backend,
        &cluster,
        Some(&load),
        &mut seen,
        "switched to medium",
        Duration::from_secs(90),
        |o| states(o) == [(MEDIUM.name.to_owned(), EndpointState::Ready)],
    );
    let switch_took = t.elapsed();
    let during: Vec<Vec<(String, EndpointState)>> =
        seen[switched_from..].iter().map(states).collect();
    let ready_variants = |s: &Vec<(String, EndpointState)>| {
        s.iter()
            .filter(|(_, st)| *st == EndpointState::Ready)
            .count()
    };
    assert!(
        during.iter().all(|s| ready_variants(s) >= 1),
        "always one variant ready: {during:?}"
    );
    assert!(
        during
            .iter()
            .any(|s| s.contains(&(SMALL.name.to_owned(), EndpointState::Draining))),
        "small drained before it went: {during:?}"
    );
    // Medium's replica from one core to two under the same load: Serve restarts it, the
    // replacement first (max_surge_percent), and the variant stays ready throughout.
    let t = Instant::now();
    let replica_ids = |cluster: &RayCluster| -> Vec<(String, String)> {
        let details = cluster.serve_details();
        let deployment = &details["applications"]["rt-classify-medium"]["deployments"][MEDIUM.name];
        deployment["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let id = r["replica_id"].as_str().unwrap_or_default().to_owned();
                (id, r["state"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };
    let before = replica_ids(&cluster);
    let recored_from = seen.len();
    apply(&mut backend, &plan_with_cores(MEDIUM.name, 1, 2, 1));
    let started = Instant::now();
    loop {
        let o = observe(&mut backend).expect("observe during the cores change");
        load.follow(&o);
        seen.push(o);
        let now = replica_ids(&cluster);
        let cores = cluster.serve_details()["applications"]["rt-classify-medium"]["deployments"]
            [MEDIUM.name]["deployment_config"]["ray_actor_options"]["num_cpus"]
            .as_f64();
        if cores == Some(2.0)
            && now.len() == 1
            && now[0].1 == "RUNNING"
            && before.iter().all(|(id, _)| *id != now[0].0)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cores change not done: {now:?}"
        );
        std::thread::sleep(OBSERVE_EVERY);
    }
    let recored = t.elapsed();
    assert!(
        seen[recored_from..]
            .iter()
            .all(|o| states(o) == [(MEDIUM.name.to_owned(), EndpointState::Ready)]),
        "medium stayed ready while its replica was replaced"
    );
    let o = observe(&mut backend).expect("observe");
    assert_eq!(o.deployed.stages[0].assignments[0].cores, 2);

    // Scale medium 1 → 2 under the same load: it stays ready throughout.
    std::thread::sleep(Duration::from_secs(1));
    let scaled_from = seen.len();
    apply(&mut backend, &plan_with_cores(MEDIUM.name, 1, 2, 2));
    let scaled = observe_until(
        &mut backend,
        &cluster,
        Some(&load),
        &mut seen,
        "two medium replicas",
        Duration::from_secs(60),
        |o| {
            o.deployed
                .stages
                .first()
                .is_some_and(|s| s.assignments[0].replicas == 2)
        },
    );
    assert!(
        seen[scaled_from..]
            .iter()
            .all(|o| states(o) == [(MEDIUM.name.to_owned(), EndpointState::Ready)]),
        "medium stayed ready while it scaled"
    );
    assert_eq!(scaled.endpoints[0].weight, 2.0);
    std::thread::sleep(Duration::from_secs(1));
    let totals = load.finish();
    assert!(
        totals.failed.is_empty(),
        "{} of {} requests failed: {:?}",
        totals.failed.len(),
        totals.sent,
        totals.failed
    );
    assert!(totals.sent >= 20, "{totals:?}");
    assert!(
        totals.by_variant.get(SMALL.name).copied().unwrap_or(0) > 0
            && totals.by_variant.get(MEDIUM.name).copied().unwrap_or(0) > 0,
        "both variants served: {totals:?}"
    );
    let apps: Vec<String> = cluster.serve_details()["applications"]
        .as_object()
        .expect("applications")
        .keys()
        .cloned()
        .collect();
    assert_eq!(apps, ["rt-classify-medium"], "small removed");

    // Serve's request counters reach the observations (exported with a delay of seconds).
    let mut completed: u64 = seen.iter().map(|o| o.completed).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed < totals.sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let o = observe(&mut backend).expect("observe");
        completed += o.completed;
        assert_eq!(o.dropped, 0, "{o:?}");
    }
    assert_eq!(
        completed, totals.sent,
        "every request counted once from Serve's metrics"
    );
    // Somebody turns Serve's autoscaler on for the pipeline's deployment: the health says
    // so, and the next observation puts the plugin's fixed replica count back.
    let t = Instant::now();
    let details = cluster.serve_details();
    let mut tampered = details["applications"]["rt-classify-medium"]["deployed_app_config"].clone();
    let deployment = tampered["deployments"][0]
        .as_object_mut()
        .expect("deployment");
    deployment.remove("num_replicas");
    deployment.insert(
        "autoscaling_config".into(),
        json!({ "min_replicas": 1, "max_replicas": 2 }),
    );
    cluster.put_serve(&cluster.serve_config(vec![tampered]));
    // The deployment's details follow the config once Serve has built the application again.
    let autoscaling_of = |cluster: &RayCluster| {
        let details = cluster.serve_details();
        details["applications"]["rt-classify-medium"]["deployments"][MEDIUM.name]
            ["deployment_config"]
            .clone()
    };
    let started = Instant::now();
    while autoscaling_of(&cluster)["autoscaling_config"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "autoscaling never on"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let health = backend.check_health().expect("health");
    assert!(
        !health.healthy && health.detail.contains("autoscaling_config"),
        "{health:?}"
    );
    let report_back = observe(&mut backend).expect("observe puts it back");
    assert_eq!(
        states(&report_back),
        [(MEDIUM.name.to_owned(), EndpointState::Ready)]
    );
    let started = Instant::now();
    loop {
        let config = autoscaling_of(&cluster);
        if config["autoscaling_config"].is_null() && config["num_replicas"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not put back: {config}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(backend.check_health().expect("health").healthy);
    let autoscaling_undone = t.elapsed();

    let (slowest_observe, slowest_apply) = (
        SLOWEST_OBSERVE_MS.load(Ordering::SeqCst),
        SLOWEST_APPLY_MS.load(Ordering::SeqCst),
    );
    assert!(
        slowest_observe < 4000 && slowest_apply < 4000,
        "calls within the daemon's 5 s default time limit: observe {slowest_observe} ms, \
         apply {slowest_apply} ms"
    );

    // The Serve controller is killed (Ray restarts it): the variant keeps serving a load
    // that follows the observations, and every observation either reports it or fails as
    // unavailable; none loses the plugin's state.
    let t = Instant::now();
    let load = Load::start();
    load.follow(&report_back);
    let kill = std::process::Command::new(fixture::venv().join("bin/python"))
        .arg("-c")
        .arg(format!(
            "import ray; ray.init(address='127.0.0.1:{}', log_to_driver=False); \
             ray.kill(ray.get_actor('SERVE_CONTROLLER_ACTOR', namespace='serve'), \
             no_restart=False)",
            cluster.gcs_port
        ))
        .output()
        .expect("run python");
    assert!(
        kill.status.success(),
        "killing the controller: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
    let mut unavailable = 0;
    let mut slowest_during_restart = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let call = Instant::now();
        let observed = backend.observe_cluster();
        slowest_during_restart = slowest_during_restart.max(call.elapsed());
        match observed {
            Ok(o) => {
                assert_eq!(
                    states(&o),
                    [(MEDIUM.name.to_owned(), EndpointState::Ready)],
                    "{}",
                    cluster.serve_details()["applications"]["rt-classify-medium"]
                );
                load.follow(&o);
            }
            Err(e) => {
                unavailable += 1;
                let e: infadapt_plugin_abi::BackendError = e.into();
                assert_eq!(
                    e.code,
                    infadapt_plugin_abi::STATUS_UNAVAILABLE,
                    "{}",
                    e.message
                );
            }
        }
        std::thread::sleep(OBSERVE_EVERY);
    }
    let after_restart = load.finish();
    assert!(
        after_restart.failed.is_empty() && after_restart.sent > 0,
        "{after_restart:?}"
    );
    assert_eq!(backend.apps().apps.len(), 1);
    let controller_restart = t.elapsed();

    // The plan's placement enforced: the stage emptied (no application of the pipeline
    // left), then small placed 1 on the head and 2 on the worker, one application pinned
    // to each node; under load one replica moves from the worker to the head (both scale
    // in place), then the worker's application leaves the plan (it drains once the head's
    // runs all its replicas, and is removed after the drain time); no request fails.
    let t = Instant::now();
    let (head, worker) = (cluster.node_ids()[0].clone(), cluster.node_ids()[1].clone());
    let empty = PlanMessage {
        stages: vec![StagePlanMessage {
            stage: "classify".into(),
            assignments: vec![],
        }],
        ..PlanMessage::default()
    };
    apply(&mut backend, &empty);
    let started = Instant::now();
    loop {
        // Once the last application is gone, the plugin doubts an empty answer a few times
        // (unavailable) before it believes it: done at the first observation that succeeds
        // after Serve lists no application.
        let gone = cluster.serve_details()["applications"]
            .as_object()
            .is_some_and(|a| a.is_empty());
        if let Ok(o) = observe(&mut backend)
            && o.endpoints.is_empty()
            && gone
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stage not emptied: {:?}",
            backend.apps()
        );
        std::thread::sleep(OBSERVE_EVERY);
    }
    let emptied = t.elapsed();
    let t = Instant::now();
    let spread = placed_plan(SMALL.name, &[(&head, 1), (&worker, 2)]);
    assert!(apply(&mut backend, &spread).changed);
    assert!(!apply(&mut backend, &spread).changed, "idempotent");
    let placed_ready = observe_until(
        &mut backend,
        &cluster,
        None,
        &mut seen,
        "placed on both nodes",
        Duration::from_secs(60),
        |o| {
            o.endpoints.len() == 2
                && o.endpoints.iter().all(|e| e.state == EndpointState::Ready)
                && placement_set(o) == placement_set_of_plan(&spread)
        },
    );
    let placed_in = t.elapsed();
    let mut weights: Vec<(String, f64)> = placed_ready
        .endpoints
        .iter()
        .map(|e| (e.url.clone(), e.weight))
        .collect();
    weights.sort_by(|a, b| a.1.total_cmp(&b.1));
    let suffix = |node: &str| node[..12].to_owned();
    assert!(
        weights[0]
            .0
            .ends_with(&format!("/rt/classify/small/{}", suffix(&head)))
            && weights[0].1 == 1.0
            && weights[1]
                .0
                .ends_with(&format!("/rt/classify/small/{}", suffix(&worker)))
            && weights[1].1 == 2.0,
        "{weights:?}"
    );
    assert_eq!(placed_ready.deployed.stages[0].assignments[0].replicas, 3);
    for node in &placed_ready.nodes {
        let planned = if node.id == head { 1.0 } else { 2.0 };
        assert_eq!(node.cpus_owned, planned, "{node:?}");
    }
    let apps: BTreeSet<String> = cluster.serve_details()["applications"]
        .as_object()
        .expect("applications")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        apps,
        BTreeSet::from([
            format!("rt-classify-small-{}", suffix(&head)),
            format!("rt-classify-small-{}", suffix(&worker))
        ])
    );

    let load = Load::start();
    load.follow(&placed_ready);
    std::thread::sleep(Duration::from_secs(1));
    let moved = placed_plan(SMALL.name, &[(&head, 2), (&worker, 1)]);
    apply(&mut backend, &moved);
    let moved_from = seen.len();
    observe_until(
        &mut backend,
        &cluster,
        Some(&load),
        &mut seen,
        "one replica moved to the head",
        Duration::from_secs(60),
        |o| {
            placement_set(o) == placement_set_of_plan(&moved)
                && o.endpoints.iter().all(|e| e.state == EndpointState::Ready)
        },
    );
    let off_worker = placed_plan(SMALL.name, &[(&head, 2)]);
    apply(&mut backend, &off_worker);
    observe_until(
        &mut backend,
        &cluster,
        Some(&load),
        &mut seen,
        "the worker's application drained and removed",
        Duration::from_secs(30),
        |o| o.endpoints.len() == 1 && placement_set(o) == placement_set_of_plan(&off_worker),
    );
    std::thread::sleep(Duration::from_secs(1));
    let during_move: Vec<Vec<EndpointState>> = seen[moved_from..]
        .iter()
        .map(|o| o.endpoints.iter().map(|e| e.state).collect())
        .collect();
    assert!(
        during_move
            .iter()
            .all(|s| s.contains(&EndpointState::Ready)),
        "always an endpoint ready: {during_move:?}"
    );
    assert!(
        during_move
            .iter()
            .any(|s| s.contains(&EndpointState::Draining)),
        "the worker's application drained before it went: {during_move:?}"
    );
    let moved_load = load.finish();
    assert!(
        moved_load.failed.is_empty() && moved_load.sent >= 10,
        "{} of {} requests failed: {:?}",
        moved_load.failed.len(),
        moved_load.sent,
        moved_load.failed
    );
    // Serve deletes the removed application within seconds (`DELETING` meanwhile).
    let started = Instant::now();
    loop {
        let apps: Vec<String> = cluster.serve_details()["applications"]
            .as_object()
            .expect("applications")
            .keys()
            .cloned()
            .collect();
        if apps == [format!("rt-classify-small-{}", suffix(&head))] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker's application not deleted: {apps:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let moved_in = t.elapsed();

    eprintln!(
        "cluster started in {started_in:?}; 3 replicas ready {first_ready:?} after the plan; \
         switch {switch_took:?}; cores 1 → 2 {recored:?}; {} requests, none failed ({:?}); autoscaling found and \
         undone in {autoscaling_undone:?}; controller killed: {} requests, none failed, \
         {unavailable} observations unavailable, {controller_restart:?}; slowest observe {slowest_observe} ms, \
         apply {slowest_apply} ms, observe during the restart {slowest_during_restart:?}; \
         placement: stage emptied in {emptied:?}, 1 + 2 placed and ready {placed_in:?}, \
         moves under load {moved_in:?} ({} requests, none failed); whole test {:?}",
        totals.sent,
        totals.by_variant,
        after_restart.sent,
        moved_load.sent,
        began.elapsed()
    );
}
