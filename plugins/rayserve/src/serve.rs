//! Ray Serve's declarative REST API as the plugin reads and writes it: the answer of
//! `GET /api/serve/applications/` (applications, their deployments, replicas per state and
//! node, deployed configs) read leniently into [`ServeState`], the application config of one
//! variant built from its plan, and the whole config a `PUT` sends, which keeps every
//! application the plugin does not own as it was deployed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::config::{Config, NODE_ID_LABEL};

/// Replica state Serve reports for a replica that serves requests.
pub const RUNNING: &str = "RUNNING";
/// Replica state of a replica a restarted controller is taking over again.
pub const RECOVERING: &str = "RECOVERING";
/// Application status of an application whose deployments all run.
pub const APP_RUNNING: &str = "RUNNING";
/// Application status of an application being deleted.
pub const APP_DELETING: &str = "DELETING";

/// One replica of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// `RUNNING`, `STARTING`, `UPDATING`, `RECOVERING`, `STOPPING`, …
    pub state: String,
    /// The node it runs on, once placed.
    pub node_id: Option<String>,
}

/// One deployment of an application, as Serve reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    /// `HEALTHY`, `UPDATING`, `UPSCALING`, `DOWNSCALING`, `UNHEALTHY`, `DEPLOY_FAILED`.
    pub status: String,
    pub message: String,
    /// Replicas Serve aims at now.
    pub target_num_replicas: u32,
    /// `deployment_config.num_replicas` (a number, or `"auto"` with autoscaling).
    pub num_replicas: Option<Value>,
    /// Whether `deployment_config.autoscaling_config` is set.
    pub autoscaling: bool,
    /// `deployment_config.ray_actor_options.num_cpus`.
    pub num_cpus: Option<f64>,
    /// `deployment_config.ray_actor_options.num_gpus`.
    pub num_gpus: Option<f64>,
    /// `deployment_config.user_config`.
    pub user_config: Option<Value>,
    pub replicas: Vec<Replica>,
}

impl Deployment {
    /// Replicas in `state`.
    pub fn count(&self, state: &str) -> u32 {
        self.replicas.iter().filter(|r| r.state == state).count() as u32
    }

    /// Replicas that hold resources on a node now (placed and not stopping).
    pub fn placed(&self) -> impl Iterator<Item = (&str, &Replica)> {
        self.replicas.iter().filter_map(|r| {
            r.node_id
                .as_deref()
                .filter(|_| r.state != "STOPPING")
                .map(|node| (node, r))
        })
    }

    /// Why the deployment is not held at a fixed replica count, if it is not.
    pub fn autoscaling_problem(&self) -> Option<String> {
        if self.autoscaling {
            return Some(format!(
                "deployment `{}` has an autoscaling_config (Serve's autoscaler is on)",
                self.name
            ));
        }
        match &self.num_replicas {
            Some(Value::Number(_)) | None => None,
            Some(other) => Some(format!(
                "deployment `{}` has num_replicas = {other}, not a fixed count",
                self.name
            )),
        }
    }
}

/// One Serve application, as Serve reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub name: String,
    /// `NOT_STARTED`, `DEPLOYING`, `RUNNING`, `DEPLOY_FAILED`, `UNHEALTHY`, `DELETING`.
    pub status: String,
    pub message: String,
    pub route_prefix: Option<String>,
    /// The config it was deployed with through the declarative API (`None` for an
    /// application deployed from Python with `serve.run`).
    pub deployed_app_config: Option<Value>,
    /// Whether the application accepts replica counts from an outside scaler.
    pub external_scaler_enabled: bool,
    pub deployments: BTreeMap<String, Deployment>,
}

/// The answer of `GET /api/serve/applications/`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServeState {
    /// Whether a Serve controller answered (`controller_info` names an actor). The dashboard
    /// answers an empty instance while no controller is reachable: before Serve was started,
    /// and while a controller restarts.
    pub controller_running: bool,
    pub applications: BTreeMap<String, Application>,
    /// Nodes that run a Serve proxy (whose metrics pages hold the request counters).
    pub proxy_nodes: BTreeSet<String>,
    pub proxy_location: Option<Value>,
    pub http_options: Option<Value>,
    pub grpc_options: Option<Value>,
    pub target_capacity: Option<f64>,
}

/// Reads the answer of `GET /api/serve/applications/`; `Err` says what is missing.
pub fn parse_state(answer: &Value) -> Result<ServeState, String> {
    let top = answer
        .as_object()
        .ok_or_else(|| "the answer is not a JSON object".to_owned())?;
    let controller_running = top
        .get("controller_info")
        .and_then(Value::as_object)
        .is_some_and(|info| {
            ["actor_id", "actor_name", "node_id"]
                .iter()
                .any(|k| info.get(*k).is_some_and(|v| !v.is_null()))
        });
    let apps = match top.get("applications") {
        Some(Value::Object(apps)) => apps,
        Some(Value::Null) | None if !controller_running => &Map::new(),
        _ => return Err("the answer has no `applications` table".to_owned()),
    };
    let mut applications = BTreeMap::new();
    for (name, app) in apps {
        applications.insert(name.clone(), parse_application(name, app)?);
    }
    let present = |key: &str| top.get(key).filter(|v| !v.is_null()).cloned();
    let proxy_nodes = top
        .get("proxies")
        .and_then(Value::as_object)
        .map(|proxies| proxies.keys().cloned().collect())
        .unwrap_or_default();
    Ok(ServeState {
        controller_running,
        applications,
        proxy_nodes,
        proxy_location: present("proxy_location"),
        http_options: present("http_options"),
        grpc_options: present("grpc_options"),
        target_capacity: top.get("target_capacity").and_then(Value::as_f64),
    })
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn parse_application(name: &str, app: &Value) -> Result<Application, String> {
    if !app.is_object() {
        return Err(format!("application `{name}` is not a JSON object"));
    }
    let mut deployments = BTreeMap::new();
    if let Some(map) = app.get("deployments").and_then(Value::as_object) {
        for (dep_name, dep) in map {
            deployments.insert(dep_name.clone(), parse_deployment(name, dep_name, dep)?);
        }
    }
    Ok(Application {
        name: name.to_owned(),
        status: text(app, "status"),
        message: text(app, "message"),
        route_prefix: app
            .get("route_prefix")
            .and_then(Value::as_str)
            .map(str::to_owned),
        deployed_app_config: app
            .get("deployed_app_config")
            .filter(|v| v.is_object())
            .cloned(),
        external_scaler_enabled: app
            .get("external_scaler_enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        deployments,
    })
}

fn parse_deployment(app: &str, name: &str, dep: &Value) -> Result<Deployment, String> {
    let config = dep.get("deployment_config").unwrap_or(&Value::Null);
    let actor = config.get("ray_actor_options").unwrap_or(&Value::Null);
    let target = dep
        .get("target_num_replicas")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            format!("deployment `{name}` of application `{app}` has no `target_num_replicas`")
        })?;
    let mut replicas = Vec::new();
    for replica in dep
        .get("replicas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        replicas.push(Replica {
            state: text(replica, "state"),
            node_id: replica
                .get("node_id")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        });
    }
    Ok(Deployment {
        name: name.to_owned(),
        status: text(dep, "status"),
        message: text(dep, "message"),
        target_num_replicas: target.min(u64::from(u32::MAX)) as u32,
        num_replicas: config.get("num_replicas").cloned(),
        autoscaling: config
            .get("autoscaling_config")
            .is_some_and(|a| !a.is_null()),
        num_cpus: actor.get("num_cpus").and_then(Value::as_f64),
        num_gpus: actor.get("num_gpus").and_then(Value::as_f64),
        user_config: config.get("user_config").filter(|v| !v.is_null()).cloned(),
        replicas,
    })
}

/// The node an application's deployments are pinned to: the node id its deployed config
/// selects (`ray_actor_options.label_selector`), when every deployment selects the same one.
pub fn pinned_node(app: &Application) -> Option<String> {
    let deployments = app
        .deployed_app_config
        .as_ref()?
        .get("deployments")?
        .as_array()?;
    let mut nodes = deployments.iter().map(|d| {
        d.get("ray_actor_options")
            .and_then(|o| o.get("label_selector"))
            .and_then(|l| l.get(NODE_ID_LABEL))
            .and_then(Value::as_str)
    });
    let first = nodes.next()??;
    nodes.all(|n| n == Some(first)).then(|| first.to_owned())
}

/// What the plan asks of one variant's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub replicas: u32,
    pub cores: u32,
    pub batch: u32,
}

/// The application config of a variant of a stage (one entry of a PUT's `applications`):
/// its route, code and one deployment at a fixed replica count, without autoscaling; with a
/// `node`, the deployment is pinned to it (`ray_actor_options.label_selector` on the node's
/// id label) and the application is named and routed after the node.
pub fn app_config(
    config: &Config,
    stage: &str,
    variant: &str,
    node: Option<&str>,
    spec: Spec,
) -> Value {
    let settings = &config.variants[variant];
    let mut user_config = settings.user_config.clone();
    user_config.insert("max_batch_size".into(), json!(spec.batch));
    user_config.insert(
        "batch_wait_timeout_s".into(),
        json!(config.batch_wait_timeout_s),
    );
    let mut deployment = json!({
        "name": settings.deployment,
        "num_replicas": spec.replicas,
        "autoscaling_config": null,
        "ray_actor_options": { "num_cpus": spec.cores, "num_gpus": settings.num_gpus },
        "user_config": user_config,
        "max_surge_percent": config.max_surge_percent,
    });
    if let Some(limit) = settings.max_ongoing_requests {
        deployment["max_ongoing_requests"] = json!(limit);
    }
    if let Some(node) = node {
        deployment["ray_actor_options"]["label_selector"] = json!({ NODE_ID_LABEL: node });
    }
    let mut app = json!({
        "name": config.app_name_on(stage, variant, node),
        "route_prefix": config.route_prefix_on(stage, variant, node),
        "import_path": settings.import_path,
        "args": settings.args,
        "deployments": [deployment],
    });
    if let Some(env) = &settings.runtime_env {
        app["runtime_env"] = Value::Object(env.clone());
    }
    app
}

/// How the plugin starts Serve when its `PUT` is the first (Serve keeps these options
/// while it runs, and the plugin then re-sends Serve's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOptions {
    /// `http_options.host`: the address the proxies listen on.
    pub http_host: String,
    /// `http_options.port`: the proxy URL's port.
    pub port: Option<u16>,
    /// `proxy_location` (`EveryNode`, `HeadOnly`, `Disabled`); Serve's default when `None`.
    pub proxy_location: Option<String>,
}

/// The body of `PUT /api/serve/applications/`: `owned` (the plugin's applications, as they
/// should be) and every other application of `state` re-sent with the config it was deployed
/// with, so that the PUT, which replaces the whole set, leaves them unchanged. Applications
/// being deleted by someone else are left out (re-sending them would bring them back).
/// `Err` names an application that cannot be re-sent: one deployed from Python
/// (`serve.run`) has no declarative config, and the PUT would delete it.
pub fn deploy_body(
    state: &ServeState,
    owned_names: &BTreeSet<String>,
    owned: Vec<Value>,
    start: &StartOptions,
) -> Result<Value, String> {
    let mut applications = Vec::new();
    for (name, app) in &state.applications {
        if owned_names.contains(name) || app.status == APP_DELETING {
            continue;
        }
        match &app.deployed_app_config {
            Some(config) => applications.push(config.clone()),
            None => {
                return Err(format!(
                    "application `{name}` was not deployed through the declarative config \
                     (serve.run?); a PUT of the config would delete it, so none is sent"
                ));
            }
        }
    }
    applications.extend(owned);
    let mut body = json!({ "applications": applications });
    match &state.http_options {
        Some(options) => body["http_options"] = options.clone(),
        // Serve is not running yet: the PUT starts it, with its proxy where the
        // configuration says the proxy is.
        None => {
            let mut options = json!({ "host": start.http_host });
            if let Some(port) = start.port {
                options["port"] = json!(port);
            }
            body["http_options"] = options;
        }
    }
    match (&state.proxy_location, &start.proxy_location) {
        (Some(location), _) => body["proxy_location"] = location.clone(),
        (None, Some(location)) => body["proxy_location"] = json!(location),
        (None, None) => {}
    }
    if let Some(grpc) = &state.grpc_options {
        body["grpc_options"] = grpc.clone();
    }
    if let Some(capacity) = state.target_capacity {
        body["target_capacity"] = json!(capacity);
    }
    Ok(body)
}

/// Whether `deployed` holds everything `wanted` says: every key of an object in `wanted`
/// is in `deployed` with a matching value (numbers compared as numbers, so `2` matches
/// `2.0`; a `null` matches a missing key); lists match element by element. Keys Serve adds
/// with defaults do not make a difference.
pub fn matches(wanted: &Value, deployed: &Value) -> bool {
    match (wanted, deployed) {
        (Value::Object(w), Value::Object(d)) => w.iter().all(|(k, v)| match d.get(k) {
            Some(dv) => matches(v, dv),
            None => v.is_null() || v.as_object().is_some_and(Map::is_empty),
        }),
        (Value::Array(w), Value::Array(d)) => {
            w.len() == d.len() && w.iter().zip(d).all(|(a, b)| matches(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Null, Value::Null) => true,
        (Value::Object(w), Value::Null) => w.is_empty(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `GET /api/serve/applications/` answer in the documented shape: one application
    /// the plugin owns (two replicas running on two nodes, one starting) and one it does not.
    pub(crate) const TWO_APPS: &str = r#"{
      "controller_info": {"node_id": "n1", "node_ip": "10.0.0.1", "actor_id": "a1",
                          "actor_name": "SERVE_CONTROLLER_ACTOR"},
      "proxy_location": "EveryNode",
      "http_options": {"host": "0.0.0.0", "port": 8250, "root_path": "",
                       "request_timeout_s": null, "keep_alive_timeout_s": 5},
      "grpc_options": {"port": 9000, "grpc_servicer_functions": []},
      "proxies": {"n1": {"status": "HEALTHY"}},
      "applications": {
        "demo-classify-small": {
          "name": "demo-classify-small", "route_prefix": "/demo/classify/small",
          "status": "RUNNING", "message": "", "source": "declarative",
          "deployed_app_config": {"name": "demo-classify-small",
              "route_prefix": "/demo/classify/small", "import_path": "app:small",
              "args": {}, "deployments": [{"name": "small", "num_replicas": 3,
              "autoscaling_config": null, "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0},
              "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.01},
              "max_surge_percent": 100}]},
          "deployments": {"small": {
              "name": "small", "status": "UPSCALING", "message": "",
              "deployment_config": {"name": "small", "num_replicas": 3,
                  "autoscaling_config": null, "user_config": {"max_batch_size": 4},
                  "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0}},
              "target_num_replicas": 3,
              "required_resources": {"CPU": 1},
              "replicas": [
                 {"node_id": "n1", "node_ip": "10.0.0.1", "replica_id": "r1", "state": "RUNNING"},
                 {"node_id": "n2", "node_ip": "10.0.0.2", "replica_id": "r2", "state": "RUNNING"},
                 {"node_id": null, "replica_id": "r3", "state": "STARTING"}]}}
        },
        "other": {
          "name": "other", "route_prefix": "/other", "status": "RUNNING", "message": "",
          "deployed_app_config": {"name": "other", "route_prefix": "/other",
              "import_path": "other:app", "deployments": [{"name": "Other", "num_replicas": "auto"}]},
          "deployments": {"Other": {"name": "Other", "status": "HEALTHY", "message": "",
              "deployment_config": {"name": "Other", "autoscaling_config": {"min_replicas": 1}},
              "target_num_replicas": 1, "replicas": []}}
        }
      },
      "target_capacity": null
    }"#;

    #[test]
    fn reads_applications_deployments_and_replicas() {
        let state = parse_state(&serde_json::from_str(TWO_APPS).unwrap()).expect("parses");
        assert!(state.controller_running);
        assert_eq!(state.applications.len(), 2);
        let app = &state.applications["demo-classify-small"];
        assert_eq!(app.status, "RUNNING");
        assert_eq!(app.route_prefix.as_deref(), Some("/demo/classify/small"));
        let dep = &app.deployments["small"];
        assert_eq!(dep.target_num_replicas, 3);
        assert_eq!((dep.count(RUNNING), dep.count("STARTING")), (2, 1));
        assert_eq!(dep.num_cpus, Some(1.0));
        assert_eq!(
            dep.placed().map(|(n, _)| n).collect::<Vec<_>>(),
            ["n1", "n2"]
        );
        assert_eq!(dep.autoscaling_problem(), None);
        let other = &state.applications["other"].deployments["Other"];
        assert!(
            other
                .autoscaling_problem()
                .unwrap()
                .contains("autoscaling_config")
        );
        assert_eq!(state.target_capacity, None);
        assert_eq!(state.proxy_nodes, BTreeSet::from(["n1".to_owned()]));
    }

    #[test]
    fn an_empty_instance_is_serve_not_running_and_garbage_is_an_error() {
        let empty = serde_json::json!({"controller_info": {}, "proxies": {}, "applications": {},
                                       "target_capacity": null});
        let state = parse_state(&empty).expect("parses");
        assert!(!state.controller_running);
        assert!(state.applications.is_empty());
        assert!(parse_state(&serde_json::json!([1])).is_err());
        let no_target = serde_json::json!({"controller_info": {"actor_id": "a"},
            "applications": {"x": {"deployments": {"d": {"replicas": []}}}}});
        let err = parse_state(&no_target).expect_err("no target");
        assert!(err.contains("`target_num_replicas`"), "{err}");
        let no_apps = serde_json::json!({"controller_info": {"actor_id": "a"}});
        assert!(parse_state(&no_apps).is_err());
    }

    #[test]
    fn the_put_keeps_other_applications_skips_deleted_ones_and_refuses_imperative_ones() {
        let mut state = parse_state(&serde_json::from_str(TWO_APPS).unwrap()).expect("parses");
        let owned = BTreeSet::from(["demo-classify-small".to_owned()]);
        let ours = json!({"name": "demo-classify-small", "deployments": []});
        let start = StartOptions {
            http_host: "0.0.0.0".into(),
            port: Some(8250),
            proxy_location: Some("HeadOnly".into()),
        };
        let body = deploy_body(&state, &owned, vec![ours.clone()], &start).expect("body");
        let apps = body["applications"].as_array().unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(
            &apps[0],
            state.applications["other"]
                .deployed_app_config
                .as_ref()
                .unwrap()
        );
        assert_eq!(apps[1], ours);
        assert_eq!(
            body["http_options"]["port"], 8250,
            "Serve's own options are kept"
        );
        assert_eq!(
            body["proxy_location"], "EveryNode",
            "Serve's own location is kept"
        );
        assert!(body.get("target_capacity").is_none());

        state.applications.get_mut("other").unwrap().status = APP_DELETING.into();
        let body = deploy_body(&state, &owned, vec![], &start).expect("body");
        assert_eq!(
            body["applications"],
            json!([]),
            "being deleted: not brought back"
        );

        let other = state.applications.get_mut("other").unwrap();
        other.status = APP_RUNNING.into();
        other.deployed_app_config = None;
        let err = deploy_body(&state, &owned, vec![], &start).expect_err("imperative");
        assert!(
            err.contains("application `other` was not deployed through"),
            "{err}"
        );

        let not_running = ServeState::default();
        let body = deploy_body(&not_running, &owned, vec![ours], &start).expect("body");
        assert_eq!(
            body["http_options"],
            json!({"host": "0.0.0.0", "port": 8250})
        );
        assert_eq!(body["proxy_location"], "HeadOnly");
    }

    #[test]
    fn numbers_match_as_numbers_and_added_keys_do_not_matter() {
        let wanted = serde_json::json!({"a": 2, "b": {"c": null}, "d": [1], "e": {}});
        let deployed = serde_json::json!({"a": 2.0, "b": {"x": 1}, "d": [1.0], "z": true});
        assert!(matches(&wanted, &deployed));
        assert!(!matches(&serde_json::json!({"a": 3}), &deployed));
        assert!(!matches(&serde_json::json!({"d": [1, 2]}), &deployed));
        assert!(!matches(&serde_json::json!({"b": {"x": null}}), &deployed));
    }
}
