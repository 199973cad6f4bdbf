//! A fake Ray dashboard and Serve proxy for the unit tests: a loopback HTTP server that
//! keeps the deployed Serve config a `PUT` sends and answers `GET /api/serve/applications/`,
//! the proxy's routes, the node summary and a metrics page in the shapes Ray writes, with
//! knobs for what the tests need (replicas that run, a controller that is down, someone
//! turning autoscaling on, request counters); a deployment pinned to a node
//! (`label_selector`) runs its replicas there, others alternate between `n1` and `n2`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// What the fake cluster holds.
#[derive(Debug, Default)]
pub struct FakeServe {
    /// Deployed application configs by name, as the last `PUT` sent them.
    pub apps: BTreeMap<String, Value>,
    /// Running replicas per application (absent: as many as `num_replicas`).
    pub running: BTreeMap<String, u32>,
    /// The controller is away: the dashboard answers the empty instance.
    pub controller_down: bool,
    /// The controller answers no application at all.
    pub forgets_apps: bool,
    /// Applications whose deployment reports an autoscaling config.
    pub autoscaled: Vec<String>,
    /// Bodies of the `PUT`s received.
    pub puts: Vec<Value>,
    /// The metrics page.
    pub metrics: String,
    pub port: u16,
}

impl FakeServe {
    fn applications(&self) -> Value {
        let mut apps = serde_json::Map::new();
        for (name, config) in &self.apps {
            let deployment = &config["deployments"][0];
            let target = deployment["num_replicas"].as_u64().unwrap_or(1) as u32;
            let running = self.running.get(name).copied().unwrap_or(target);
            let pinned = deployment["ray_actor_options"]["label_selector"]["ray.io/node-id"]
                .as_str()
                .map(str::to_owned);
            let replicas: Vec<Value> = (0..target.max(running))
                .map(|i| {
                    let spread = if i % 2 == 0 { "n1" } else { "n2" };
                    json!({"node_id": pinned.as_deref().unwrap_or(spread),
                           "replica_id": format!("{name}-{i}"),
                           "state": if i < running { "RUNNING" } else { "STARTING" }})
                })
                .collect();
            let mut deployment_config = deployment.clone();
            if self.autoscaled.contains(name) {
                deployment_config["autoscaling_config"] = json!({"min_replicas": 1});
                deployment_config["num_replicas"] = json!("auto");
            }
            let dep_name = deployment["name"].as_str().unwrap_or_default().to_owned();
            apps.insert(
                name.clone(),
                json!({
                    "name": name, "route_prefix": config["route_prefix"],
                    "status": if running >= target { "RUNNING" } else { "DEPLOYING" },
                    "message": "", "source": "declarative",
                    "deployed_app_config": config,
                    "deployments": { dep_name.clone(): {
                        "name": dep_name, "status": "HEALTHY", "message": "",
                        "deployment_config": deployment_config,
                        "target_num_replicas": target, "replicas": replicas } }
                }),
            );
        }
        if self.controller_down {
            return json!({"controller_info": {}, "proxies": {}, "applications": {},
                          "target_capacity": null});
        }
        if self.forgets_apps {
            apps.clear();
        }
        json!({
            "controller_info": {"node_id": "n1", "actor_id": "c1",
                                "actor_name": "SERVE_CONTROLLER_ACTOR"},
            "proxy_location": "EveryNode",
            "http_options": {"host": "0.0.0.0", "port": self.port},
            "proxies": {"n1": {"node_id": "n1", "status": "HEALTHY"}},
            "applications": apps, "target_capacity": null
        })
    }

    fn routes(&self) -> Value {
        let mut routes = serde_json::Map::new();
        for (name, config) in &self.apps {
            if let Some(route) = config["route_prefix"].as_str() {
                routes.insert(route.to_owned(), json!(name));
            }
        }
        Value::Object(routes)
    }

    fn nodes(&self) -> Value {
        json!({"result": true, "msg": "Node summary fetched.", "data": {
            "summary": [
                {"ip": "127.0.0.1", "mem": [8589934592u64, 4294967296u64, 50.0, 4294967296u64],
                 "raylet": {"nodeId": "n1", "state": "ALIVE", "nodeManagerAddress": "127.0.0.1",
                            "resourcesTotal": {"CPU": 4.0}, "metricsExportPort": self.port}},
                {"ip": "127.0.0.1",
                 "raylet": {"nodeId": "n2", "state": "ALIVE", "nodeManagerAddress": "127.0.0.1",
                            "resourcesTotal": {"CPU": 4.0}, "metricsExportPort": 0}}]}})
    }

    fn cluster_status(&self) -> Value {
        json!({"result": true, "data": {"clusterStatus": {"loadMetricsReport": {"usageByNode": {
            "n1": {"CPU": [2.0, 4.0]}, "n2": {"CPU": [1.0, 4.0]}}}}}})
    }
}

/// Starts the fake on a loopback port; it lives as long as the test process.
pub fn start() -> Arc<Mutex<FakeServe>> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(Mutex::new(FakeServe {
        port,
        ..FakeServe::default()
    }));
    let shared = Arc::clone(&state);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream, &shared));
        }
    });
    state
}

fn serve(mut stream: TcpStream, state: &Mutex<FakeServe>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("/");
    let mut fake = state.lock().expect("fake");
    let (status, content_type, text) = match (method, path) {
        ("GET", "/api/serve/applications/") => {
            (200, "application/json", fake.applications().to_string())
        }
        ("PUT", "/api/serve/applications/") => {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            fake.apps = sent["applications"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| (a["name"].as_str().unwrap_or_default().to_owned(), a.clone()))
                .collect();
            fake.puts.push(sent);
            fake.autoscaled.clear();
            (200, "text/plain", String::new())
        }
        ("GET", "/-/routes") => (200, "application/json", fake.routes().to_string()),
        ("GET", "/nodes?view=summary") => (200, "application/json", fake.nodes().to_string()),
        ("GET", "/api/cluster_status") => {
            (200, "application/json", fake.cluster_status().to_string())
        }
        ("GET", "/metrics") => (200, "text/plain", fake.metrics.clone()),
        _ => (404, "text/plain", "not found".to_owned()),
    };
    drop(fake);
    let answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}
