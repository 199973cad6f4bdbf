//! The real `infadaptd` binary with `type = "rayserve"` (the plugin loaded from
//! `plugin_dirs`) in front of a real two-node Ray cluster, under a compressed, scaled replay
//! of the generated bursty window (`crate::replay`) sent through the daemon's router: the
//! daemon switches from the accurate variant to the fast one as the burst comes and back as
//! it goes, every plan it holds is seen running in Serve (replicas per variant), the
//! replicas spread over both nodes and no node holds more CPUs than it has, a placement the
//! daemon plans names the cluster's nodes, fits their CPUs and adds up to the plan, and no
//! request fails during the switches. The plugin pins each variant's replicas to the nodes
//! the plan places them on (see docs/backends/rayserve.md), so every plan held long enough
//! must also be seen running where it was placed, node by node.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fixture::{LARGE, Load, RayCluster, SMALL, TestVariant, app_dir};
use crate::plugins::{TempDir, install_rust_plugin};
use crate::support::{
    Daemon, NotifySink, free_port, http_get, pipeline_status, scratch, status_of,
};

/// The profiles the daemon plans with: the fast variant serves 15 requests/s per 1-core
/// replica, the accurate one 5 (the test application's real work is far lighter, so the
/// planned capacity is always there).
const CATALOG: &str = r#"
schema = 1
[[variant]]
name = "small"
accuracy = 0.70
load_time_s = 3.0
points = [ { batch = 1, cores = 1, p99_ms = 40.0, throughput_rps = 15.0 } ]
[[variant]]
name = "large"
accuracy = 0.80
load_time_s = 3.0
points = [ { batch = 1, cores = 1, p99_ms = 150.0, throughput_rps = 5.0 } ]
"#;

/// The cluster: two nodes of 2 CPUs each. The plans hold at most 2 cores, so a switch
/// (the new variant started before the old one goes) never needs more than the 4 CPUs.
const NODES: [u32; 2] = [2, 2];
const TOTAL_CORES: u32 = 2;

/// Trace seconds averaged into one replayed second: 80 replayed seconds, the burst about
/// 16 of them (Ray takes 6–10 s to start a new variant here, so a shorter burst is over
/// before the fast variant serves).
const COMPRESSION: usize = 15;
/// Peak of the replayed load: beyond what two replicas of `large` serve (8 requests/s at
/// 80 % utilisation), within two of `small` (24); the steady part (about 4) suits `large`.
const PEAK_RPS: f64 = 20.0;

fn variant_table(variant: TestVariant) -> String {
    format!(
        r#"
[pipeline.backend.variants.{name}]
import_path = "app:app"
args = {{ variant = "{name}", work = {work} }}
runtime_env = {{ working_dir = "local://{dir}" }}
"#,
        name = variant.name,
        work = variant.work,
        dir = app_dir().display(),
    )
}

fn daemon_config(
    dir: &Path,
    port: u16,
    router_port: u16,
    plugins: &Path,
    cluster: &RayCluster,
) -> String {
    format!(
        r#"
[daemon]
period_s = 2
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
backend_timeout_s = 5
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
variants = ["small", "large"]
batch_sizes = [1]
core_options = [1]
max_replicas = 2
[pipeline.weights]
alpha = 1.0
beta_per_core = 0.01
[pipeline.limits]
total_cores = {TOTAL_CORES}
[pipeline.forecast]
model = "naive"
basis = "point"
[pipeline.damping]
stabilization_window_s = 8
min_dwell_s = 12
[pipeline.router]
listen = "127.0.0.1:{router_port}"
ready_wait_ms = 10000
[pipeline.backend]
type = "rayserve"
dashboard_url = "{dashboard}"
proxy_url = "{proxy}"
proxy_location = "HeadOnly"
http_host = "127.0.0.1"
drain_s = 3
call_budget_ms = 4000
{small}{large}"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
        catalog = dir.join("catalog.toml").display(),
        dashboard = cluster.dashboard_url(),
        proxy = cluster.proxy_url(),
        small = variant_table(SMALL),
        large = variant_table(LARGE),
    )
}

/// (variant, replicas) of the plan the daemon last applied, sorted.
type PlanKey = Vec<(String, u64)>;
/// (variant, node id, replicas), sorted.
type PlacementKey = Vec<(String, String, u64)>;

fn planned(pipeline: &Value) -> Option<PlanKey> {
    let mut plan: PlanKey = pipeline["plan"]["stages"][0]["assignments"]
        .as_array()?
        .iter()
        .map(|a| Some((a["variant"].as_str()?.to_owned(), a["replicas"].as_u64()?)))
        .collect::<Option<_>>()?;
    plan.sort();
    Some(plan)
}

fn planned_placement(pipeline: &Value) -> PlacementKey {
    let mut placement: PlacementKey = pipeline["placement"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| {
            Some((
                p["variant"].as_str()?.to_owned(),
                p["node"].as_str()?.to_owned(),
                p["replicas"].as_u64()?,
            ))
        })
        .collect();
    placement.sort();
    placement
}

/// What Serve runs for the pipeline: running replicas per variant, per variant and node,
/// and CPUs held per node by every running replica of the cluster.
#[derive(Debug, Default, Clone, PartialEq)]
struct Observed {
    running: BTreeMap<String, u64>,
    /// Replicas of any state (starting, stopping) per variant.
    listed: BTreeMap<String, u64>,
    placement: PlacementKey,
    cpus_by_node: BTreeMap<String, f64>,
}

fn observe(cluster: &RayCluster) -> Observed {
    let details = cluster.serve_details();
    let mut observed = Observed::default();
    let mut placement: BTreeMap<(String, String), u64> = BTreeMap::new();
    let applications = details["applications"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, app) in &applications {
        let Some(deployments) = app["deployments"].as_object() else {
            continue;
        };
        // The pipeline's applications: one per variant and node it is placed on
        // (`images-classify-VARIANT-NODE`), each with one deployment named after the
        // variant.
        let pipelines_app = name.starts_with("images-classify-");
        for (deployment_name, deployment) in deployments {
            let ours = pipelines_app.then(|| deployment_name.clone());
            let cpus = deployment["deployment_config"]["ray_actor_options"]["num_cpus"]
                .as_f64()
                .unwrap_or(0.0);
            for replica in deployment["replicas"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if let Some(variant) = &ours {
                    *observed.listed.entry(variant.clone()).or_default() += 1;
                }
                let Some(node) = replica["node_id"].as_str() else {
                    continue;
                };
                // Every replica with a node holds its CPUs there, whatever its state.
                *observed.cpus_by_node.entry(node.to_owned()).or_default() += cpus;
                if replica["state"] != "RUNNING" {
                    continue;
                }
                if let Some(variant) = &ours {
                    *observed.running.entry(variant.clone()).or_default() += 1;
                    *placement
                        .entry((variant.clone(), node.to_owned()))
                        .or_default() += 1;
                }
            }
        }
    }
    observed.placement = placement
        .into_iter()
        .map(|((variant, node), n)| (variant, node, n))
        .collect();
    observed
}

/// One look at the daemon's plan and at Serve.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    plan: PlanKey,
    placement: PlacementKey,
    observed: Observed,
}

impl Sample {
    /// Every planned variant runs exactly its planned replicas.
    fn runs_plan(&self) -> bool {
        self.plan
            .iter()
            .all(|(variant, n)| self.observed.running.get(variant) == Some(n))
    }

    /// Only the planned variants exist, each with its planned replicas all running.
    fn runs_only_plan(&self) -> bool {
        let planned: BTreeMap<String, u64> = self.plan.iter().cloned().collect();
        self.runs_plan() && self.observed.listed == planned
    }

    fn placed_as_planned(&self) -> bool {
        !self.placement.is_empty() && self.placement == self.observed.placement
    }

    /// What is wrong with the planned placement: a node the cluster lacks, a node given more
    /// CPUs than it has (every replica holds one core here), counts that do not add up to
    /// the plan's replicas.
    fn placement_problems(&self, node_cpus: &BTreeMap<String, f64>) -> Vec<String> {
        if self.placement.is_empty() {
            return Vec::new();
        }
        let mut problems = Vec::new();
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        let mut per_variant: BTreeMap<String, u64> = BTreeMap::new();
        for (variant, node, n) in &self.placement {
            *per_node.entry(node).or_default() += n;
            *per_variant.entry(variant.clone()).or_default() += n;
        }
        for (node, n) in per_node {
            match node_cpus.get(node) {
                None => problems.push(format!("unknown node {node}")),
                Some(cpus) if n as f64 > *cpus => problems.push(format!(
                    "{n} one-core replicas on node {node} of {cpus} CPUs"
                )),
                Some(_) => {}
            }
        }
        let planned: BTreeMap<String, u64> = self.plan.iter().cloned().collect();
        if per_variant != planned {
            problems.push(format!("placed {per_variant:?}, planned {planned:?}"));
        }
        problems
    }

    fn line(&self, node_names: &BTreeMap<String, String>) -> String {
        let name = |id: &str| {
            node_names
                .get(id)
                .cloned()
                .unwrap_or_else(|| id[..8].to_owned())
        };
        let placed: Vec<String> = self
            .observed
            .placement
            .iter()
            .map(|(v, node, n)| format!("{v}@{}×{n}", name(node)))
            .collect();
        let planned_placement: Vec<String> = self
            .placement
            .iter()
            .map(|(v, node, n)| format!("{v}@{}×{n}", name(node)))
            .collect();
        format!(
            "{:5.1} s: plan {:?} placed {:?}; running {:?} listed {:?} at {}",
            self.at_s,
            self.plan,
            planned_placement,
            self.observed.running,
            self.observed.listed,
            placed.join(" ")
        )
    }
}

/// A stretch of samples with one plan (and planned placement), and whether it was seen
/// running (and, with a planned placement, running where it was placed).
#[derive(Debug, Clone)]
struct Stretch {
    plan: PlanKey,
    placement: PlacementKey,
    from_s: f64,
    to_s: f64,
    ran: bool,
    placed: bool,
}

fn stretches(samples: &[Sample]) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = Vec::new();
    for sample in samples {
        match out.last_mut() {
            Some(last) if last.plan == sample.plan && last.placement == sample.placement => {
                last.to_s = sample.at_s;
                last.ran |= sample.runs_plan();
                last.placed |= sample.runs_plan() && sample.placed_as_planned();
            }
            _ => out.push(Stretch {
                plan: sample.plan.clone(),
                placement: sample.placement.clone(),
                from_s: sample.at_s,
                to_s: sample.at_s,
                ran: sample.runs_plan(),
                placed: sample.runs_plan() && sample.placed_as_planned(),
            }),
        }
    }
    out
}

/// A plan held this long must have been seen running: starting an application on a loaded
/// two-core machine takes Ray up to about 15 s.
const RUN_WITHIN_S: f64 = 20.0;

#[test]
fn daemon_with_the_rayserve_plugin_follows_a_trace_replay_across_nodes() {
    let test_started = Instant::now();
    let cluster = RayCluster::start(&NODES);
    let cluster_start_s = cluster.started_in().as_secs_f64();
    let node_cpus: BTreeMap<String, f64> = cluster
        .node_ids()
        .iter()
        .cloned()
        .zip(cluster.node_cpus().into_iter().map(f64::from))
        .collect();
    let node_names: BTreeMap<String, String> = cluster
        .node_ids()
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.clone(),
                if i == 0 {
                    "head".into()
                } else {
                    format!("w{i}")
                },
            )
        })
        .collect();

    let plugins = TempDir::new("rayserve-daemon");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_rayserve.so",
        "libinfadapt_plugin_rayserve.so",
    );
    let dir = scratch("rayserve");
    std::fs::write(dir.join("catalog.toml"), CATALOG).expect("write catalog");
    let port = free_port();
    let router_port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(
        &config,
        daemon_config(&dir, port, router_port, plugins.path(), &cluster),
    )
    .expect("write config");
    let notify = dir.join("notify.sock");
    let _notifications = NotifySink::bind(&notify);
    let mut daemon = Daemon::start(&config, &notify);
    let failure_context = |what: &str| {
        format!(
            "{what}\nstatus: {:?}\ndaemon log:\n{}\nray:\n{}",
            http_get(port, "/v1/status"),
            daemon.log(),
            cluster.log_tail()
        )
    };

    // The starting plan (4 requests/s: the accurate variant) runs, and the router is ready.
    let deploy_started = Instant::now();
    let first_ready = crate::support::wait_until(Duration::from_secs(90), || {
        http_get(router_port, "/v2/health/ready").is_some_and(|(code, _)| code == 200)
    });
    assert!(
        first_ready,
        "{}",
        failure_context("the router never became ready")
    );
    let first_deploy_s = deploy_started.elapsed().as_secs_f64();

    // The replay through the router, sampling the daemon's plan and Serve every half second.
    let rates = crate::replay::bursty_window(COMPRESSION, PEAK_RPS);
    let url = format!("http://127.0.0.1:{router_port}/v2/models/images/infer");
    let load = Load::replay(&url, rates.clone());
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut over_cpus: Vec<String> = Vec::new();
    let limit = Duration::from_secs(rates.len() as u64 + 60);
    while started.elapsed() < limit {
        let at_s = started.elapsed().as_secs_f64();
        let Some(status) = status_of(port) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let pipeline = pipeline_status(&status, "images").clone();
        let Some(plan) = planned(&pipeline) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let sample = Sample {
            at_s,
            plan,
            placement: planned_placement(&pipeline),
            observed: observe(&cluster),
        };
        for (node, used) in &sample.observed.cpus_by_node {
            if *used > node_cpus.get(node).copied().unwrap_or(0.0) + 1e-9 {
                over_cpus.push(sample.line(&node_names));
            }
        }
        samples.push(sample);
        // Done once the replay is over, the burst was served by the fast variant and the
        // accurate one alone has run its plan for 5 s.
        let replayed = at_s > rates.len() as f64;
        let switched = samples
            .iter()
            .any(|s| s.plan.iter().any(|(v, _)| v == "small"));
        let settled = samples.len() >= 10
            && samples[samples.len() - 10..]
                .iter()
                .all(|s| s.plan.iter().all(|(v, _)| v == "large") && s.runs_only_plan());
        if replayed && switched && settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = load.finish();
    let timeline: Vec<String> = samples.iter().map(|s| s.line(&node_names)).collect();
    let timeline = timeline.join("\n");
    eprintln!("timeline (plan and Serve every half second):\n{timeline}");

    // Every plan held long enough ran in Serve, and where the daemon placed replicas, they
    // ran there.
    let stretches = stretches(&samples);
    for stretch in &stretches {
        assert!(
            stretch.to_s - stretch.from_s < RUN_WITHIN_S || stretch.ran,
            "{stretch:?} never ran:\n{timeline}\n{}",
            failure_context("")
        );
        assert!(
            stretch.to_s - stretch.from_s < RUN_WITHIN_S
                || stretch.placement.is_empty()
                || stretch.placed,
            "{stretch:?} never ran where it was placed:\n{timeline}\n{}",
            failure_context("")
        );
    }
    // A placement the daemon planned is one the cluster can hold.
    let bad_placements: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            let problems = s.placement_problems(&node_cpus);
            (!problems.is_empty()).then(|| format!("{}: {problems:?}", s.line(&node_names)))
        })
        .collect();
    assert!(
        bad_placements.is_empty(),
        "planned placements the cluster cannot hold:\n{}",
        bad_placements.join("\n")
    );
    // The burst moved the pipeline to the fast variant and back.
    let variants_in_order: Vec<&str> = stretches
        .iter()
        .filter(|s| s.ran)
        .flat_map(|s| s.plan.iter().map(|(v, _)| v.as_str()))
        .fold(Vec::new(), |mut order, v| {
            if order.last() != Some(&v) {
                order.push(v);
            }
            order
        });
    assert!(
        variants_in_order
            .windows(3)
            .any(|w| w == ["large", "small", "large"]),
        "no switch large → small → large seen running:\n{timeline}"
    );
    let last = samples.last().expect("samples");
    assert!(
        last.plan.iter().all(|(v, _)| v == "large") && last.runs_only_plan(),
        "not back to the accurate variant alone after the burst:\n{timeline}\n{}",
        failure_context("")
    );
    // No node held more CPUs than it has, and the replicas ran on both nodes.
    assert!(
        over_cpus.is_empty(),
        "a node over its CPUs:\n{}",
        over_cpus.join("\n")
    );
    let nodes_used: std::collections::BTreeSet<&str> = samples
        .iter()
        .flat_map(|s| {
            s.observed
                .placement
                .iter()
                .map(|(_, node, _)| node.as_str())
        })
        .collect();
    assert_eq!(
        nodes_used.len(),
        2,
        "replicas ran on one node only:\n{timeline}"
    );

    // No request failed, both variants and both nodes answered.
    let expected: f64 = rates.iter().sum();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed, first ones: {:?}\n{timeline}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.ok as f64 >= expected * 0.9,
        "{} requests answered of about {expected}",
        report.ok
    );
    for variant in ["small", "large"] {
        assert!(
            report.per_variant.get(variant).copied().unwrap_or(0) > 0,
            "no answer from {variant}: {:?}\n{timeline}\n{}",
            report.per_variant,
            failure_context("")
        );
    }
    assert_eq!(
        report.per_node.len(),
        2,
        "answers by node: {:?}",
        report.per_node
    );

    let status = status_of(port).expect("status");
    let pipeline = pipeline_status(&status, "images");
    assert_eq!(pipeline["backend"], "rayserve", "{pipeline}");
    assert_eq!(pipeline["degraded"], false, "{pipeline}");
    assert_eq!(pipeline["router"]["failed"], 0, "{pipeline}");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    let plans: Vec<String> = stretches
        .iter()
        .map(|s| format!("{:?} ({:.0}-{:.0} s)", s.plan, s.from_s, s.to_s))
        .collect();
    let placed_plans = stretches.iter().filter(|s| !s.placement.is_empty()).count();
    let placed_as_planned = stretches.iter().filter(|s| s.placed).count();
    eprintln!(
        "daemon + rayserve trace replay: cluster start {cluster_start_s:.1} s, first deploy \
         {first_deploy_s:.1} s, plans {}; {} requests ({:?}, by node {:?}), 0 failed; {} \
         of {} plans carried a placement, {} ran as placed; total {:.1} s",
        plans.join(" → "),
        report.ok,
        report.per_variant,
        report.per_node.values().collect::<Vec<_>>(),
        placed_plans,
        stretches.len(),
        placed_as_planned,
        test_started.elapsed().as_secs_f64()
    );
}
