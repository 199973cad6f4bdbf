//! The Triton plugin against a real server: loading a variant, scaling instances and
//! changing batching with the full-config override, counters that survive the reset of a
//! full reload, a make-before-break switch with drain and unload; and against fake servers
//! that are down, silent or answer garbage.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::messages::EndpointState;
use infadapt_plugin_abi::{
    BackendInstance, PlanMessage, PluginObservation, STATUS_INVALID_INPUT, STATUS_UNAVAILABLE,
};
use infadapt_testkit::stage_plan_message;
use infadaptd::plugin_host::{HostError, PluginInstance};
use serde_json::{Value, json};

use super::{TritonServer, VARIANTS, instances_of, serial, wait_until};
use crate::plugins::{TempDir, host_for, install_rust_plugin};

/// The Triton plugin built as a cdylib, loaded through the real C ABI.
pub(crate) fn triton_plugin_dir() -> TempDir {
    let dir = TempDir::new("triton");
    install_rust_plugin(
        &dir,
        "libinfadapt_plugin_triton.so",
        "libinfadapt_plugin_triton.so",
    );
    dir
}

struct Loaded {
    _dir: TempDir,
    instance: PluginInstance,
}

fn create(config: Value) -> Result<Loaded, HostError> {
    let dir = triton_plugin_dir();
    let library = host_for(&dir)
        .library("triton")
        .expect("load the triton plugin");
    let instance = library.create(&config.to_string())?;
    Ok(Loaded {
        _dir: dir,
        instance,
    })
}

impl std::ops::Deref for Loaded {
    type Target = PluginInstance;
    fn deref(&self) -> &PluginInstance {
        &self.instance
    }
}

impl std::ops::DerefMut for Loaded {
    fn deref_mut(&mut self) -> &mut PluginInstance {
        &mut self.instance
    }
}

/// (instances, preferred batch sizes, max_batch_size) as the server reports them.
fn shape(server: &TritonServer, model: &str) -> (u64, Value, u64) {
    let config = server.config(model);
    (
        instances_of(&config),
        config["dynamic_batching"]["preferred_batch_size"].clone(),
        config["max_batch_size"].as_u64().unwrap_or(0),
    )
}

fn config(url: &str, metrics_url: Option<&str>, extra: Value) -> Value {
    let mut config = json!({
        "url": url,
        "drain_s": 1.0,
        "timeout_ms": 3000,
        "pipeline": { "name": "p", "stages": [
            { "name": "classify", "variants": ["tiny", "small", "large"] } ] },
    });
    if let Some(m) = metrics_url {
        config["metrics_url"] = json!(m);
    }
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    config
}

fn plan(assignments: &[(&str, u32, u32, f64)]) -> PlanMessage {
    stage_plan_message("classify", 1, assignments)
}

fn endpoint_state(o: &PluginObservation, variant: &str) -> Option<EndpointState> {
    o.endpoints
        .iter()
        .find(|e| e.variant == variant)
        .map(|e| e.state)
}

#[test]
fn triton_plugin_scales_batches_switches_and_survives_counter_resets() {
    let _one = serial();
    let server = TritonServer::start(&VARIANTS, &["tiny"]);
    let mut backend = create(config(
        &server.url(),
        Some(&server.metrics_url()),
        json!({}),
    ))
    .expect("create");

    // The first observation: `tiny` serves with its repository config.
    let first = backend.observe().expect("observe");
    assert_eq!(endpoint_state(&first, "tiny"), Some(EndpointState::Ready));
    assert_eq!(first.deployed.stages[0].assignments[0].replicas, 1);
    assert!(
        first.endpoints[0].url.ends_with("/v2/models/tiny/infer"),
        "{:?}",
        first.endpoints
    );

    // Scale to 2 instances and batch 4: the full config is posted, the rest kept.
    let two = plan(&[("tiny", 4, 2, 1.0)]);
    let report = backend.apply(&two).expect("apply");
    assert!(report.changed, "{report:?}");
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (n, preferred, _) = shape(&server, "tiny");
            n == 2 && preferred == json!([4])
        }),
        "tiny never reached 2 instances / batch 4: {:?}\n{}",
        shape(&server, "tiny"),
        server.log_tail()
    );
    eprintln!(
        "scale 1→2 with batch 1→4 took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        server.config("tiny")["parameters"]["work_n"]["string_value"],
        "64"
    );
    assert_eq!(shape(&server, "tiny").2, 4);
    // Idempotent once in place.
    assert!(wait_until(Duration::from_secs(10), || {
        !backend.apply(&two).expect("apply again").changed
    }));

    // Traffic shows up as arrivals and completions.
    backend.observe().expect("observe");
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..30 {
        server.infer("tiny").expect("inference");
    }
    std::thread::sleep(Duration::from_millis(600));
    let seen = backend.observe().expect("observe");
    assert_eq!(seen.completed, 30, "{seen:?}");
    assert_eq!(seen.dropped, 0);
    assert!(!seen.arrivals_per_second.is_empty());
    let rate: f64 = seen.arrivals_per_second[0];
    assert!(rate > 0.0, "{seen:?}");
    assert!(seen.stages[0].busy_fraction > 0.0, "{seen:?}");
    assert_eq!(seen.stages[0].ready_replicas, 2);
    let deployed = &seen.deployed.stages[0].assignments[0];
    assert_eq!(
        (deployed.variant.as_str(), deployed.batch, deployed.replicas),
        ("tiny", 4, 2)
    );

    // A batch change is a full reload, which resets Triton's counters: the deltas must
    // neither go negative nor lose the requests served after the reload.
    let three = plan(&[("tiny", 2, 3, 1.0)]);
    backend.apply(&three).expect("apply");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (n, preferred, _) = shape(&server, "tiny");
            n == 3 && preferred == json!([2])
        }),
        "tiny never reached 3 instances / batch 2\n{}",
        server.log_tail()
    );
    for _ in 0..7 {
        server.infer("tiny").expect("inference after reload");
    }
    std::thread::sleep(Duration::from_millis(600));
    let after = backend.observe().expect("observe");
    assert_eq!(after.completed, 7, "counter reset not handled: {after:?}");

    // Switch to `small`, make-before-break: `tiny` serves until `small` is READY, then
    // drains for drain_s and is unloaded.
    let switch = plan(&[("small", 1, 1, 1.0)]);
    let report = backend.apply(&switch).expect("apply switch");
    assert!(report.changed);
    let during = backend.observe().expect("observe");
    match endpoint_state(&during, "small") {
        Some(EndpointState::Starting) => {
            assert_eq!(endpoint_state(&during, "tiny"), Some(EndpointState::Ready));
        }
        Some(EndpointState::Ready) => {
            assert_eq!(
                endpoint_state(&during, "tiny"),
                Some(EndpointState::Draining)
            );
        }
        other => panic!("small is {other:?} right after the switch: {during:?}"),
    }
    // `small` may already be READY at the first look, so that look counts too: on a loaded
    // machine the drain can end before the next one.
    let mut saw_draining = endpoint_state(&during, "tiny") == Some(EndpointState::Draining);
    let mut serving_always = true;
    assert!(
        wait_until(Duration::from_secs(40), || {
            let o = backend.observe().expect("observe during switch");
            let states: Vec<_> = o.endpoints.iter().map(|e| e.state).collect();
            serving_always &= states.contains(&EndpointState::Ready);
            saw_draining |= endpoint_state(&o, "tiny") == Some(EndpointState::Draining);
            endpoint_state(&o, "tiny").is_none()
                && endpoint_state(&o, "small") == Some(EndpointState::Ready)
        }),
        "the switch to small did not complete\n{}",
        server.log_tail()
    );
    assert!(saw_draining, "tiny was never reported draining");
    assert!(serving_always, "a moment without a ready endpoint");
    assert!(wait_until(Duration::from_secs(20), || server
        .state_of("tiny")
        != "READY"));
    server.infer("small").expect("small serves");

    // A plan naming an unknown variant is refused as invalid input, naming it.
    let error = backend.apply(&plan(&[("huge", 1, 1, 1.0)])).unwrap_err();
    assert_eq!(error.code, STATUS_INVALID_INPUT);
    assert!(error.message.contains("huge"), "{}", error.message);

    let health = backend.health().expect("health");
    assert!(health.healthy, "{health:?}");

    // A load that Triton refuses (no such model in the repository): health says so naming
    // the model, and the serving variant is never drained for a variant that is not READY.
    let mut broken = create(config(
        &server.url(),
        None,
        json!({"models": {"large": "no_such_model"}, "retry_s": 60}),
    ))
    .expect("create");
    broken.apply(&plan(&[("large", 1, 1, 1.0)])).expect("apply");
    assert!(
        wait_until(Duration::from_secs(10), || {
            !broken.health().expect("health").healthy
        }),
        "the refused load never showed in health"
    );
    let health = broken.health().expect("health");
    assert!(health.detail.contains("no_such_model"), "{health:?}");
    let o = broken.observe().expect("observe");
    assert_eq!(
        endpoint_state(&o, "small"),
        Some(EndpointState::Ready),
        "{o:?}"
    );
    assert_eq!(
        endpoint_state(&o, "large"),
        Some(EndpointState::Starting),
        "{o:?}"
    );
    server.infer("small").expect("small still serves");
}

/// Requests a fake server received, as text.
type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A TCP server that answers every connection with `answer` (or never answers), keeping
/// what it was sent.
fn fake_server(answer: Option<&'static str>) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let received = Received::default();
    let log = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut held = Vec::new();
        while started.elapsed() < Duration::from_secs(8) {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            let mut buf = [0u8; 4096];
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .ok();
            let n = stream.read(&mut buf).unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            match answer {
                Some(text) => {
                    let _ = stream.write_all(text.as_bytes());
                }
                None => held.push(stream),
            }
            if held.len() > 8 {
                break;
            }
        }
    });
    (url, received)
}

#[test]
fn triton_plugin_reports_down_silent_and_lying_servers_clearly() {
    // Down: nothing listens.
    let port = super::free_port();
    let mut down = create(config(&format!("http://127.0.0.1:{port}"), None, json!({})))
        .expect("create does not touch the network");
    let error = down.observe().unwrap_err();
    assert_eq!(error.code, STATUS_UNAVAILABLE, "{}", error.message);
    assert!(
        error.message.contains("/v2/repository/index"),
        "{}",
        error.message
    );
    let health = down.health().expect("health answers");
    assert!(!health.healthy);

    // Silent: accepts and never answers; the call ends at timeout_ms.
    let (url, _silent) = fake_server(None);
    let mut silent = create(config(&url, None, json!({"timeout_ms": 400}))).expect("create");
    let started = Instant::now();
    let error = silent.observe().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.code, STATUS_UNAVAILABLE, "{}", error.message);
    assert!(error.message.contains("within 0.4 s"), "{}", error.message);

    // The budget of one call bounds all its requests together.
    let mut budgeted = create(config(
        &url,
        None,
        json!({"timeout_ms": 3000, "call_budget_ms": 600}),
    ))
    .expect("create");
    let started = Instant::now();
    let error = budgeted.observe().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.code, STATUS_UNAVAILABLE, "{}", error.message);

    // Lying: 200 with HTML where JSON belongs.
    let (url, received) = fake_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\nconnection: close\r\n\r\n<html>hi</html>",
    ));
    let mut liar = create(config(
        &url,
        None,
        json!({"headers": {"Authorization": "Bearer s3cret", "X-Tenant": "a"}}),
    ))
    .expect("create");
    let error = liar.observe().unwrap_err();
    // The configured headers went out with the call.
    let sent = received.lock().unwrap().join("\n").to_ascii_lowercase();
    assert!(sent.contains("authorization: bearer s3cret"), "{sent}");
    assert!(sent.contains("x-tenant: a"), "{sent}");
    assert!(!error.message.contains("s3cret"), "{}", error.message);
    assert!(error.message.contains("not JSON"), "{}", error.message);
    assert!(
        error.message.starts_with("triton: POST"),
        "{}",
        error.message
    );

    // An index with the wrong shape.
    let (url, _odd) = fake_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\n{\"models\": 1}",
    ));
    let mut odd = create(config(&url, None, json!({}))).expect("create");
    let error = odd.observe().unwrap_err();
    assert!(error.message.contains("not a list"), "{}", error.message);

    // Config problems are all listed at once.
    let broken = create(json!({
        "url": "localhost:8000", "drain_s": -1, "colour": "red",
        "headers": {"Bad Header": "x"},
        "pipeline": {"name": "p", "stages": [{"name": "s", "variants": ["v"]}]}
    }));
    let Err(HostError::Failed { code, message, .. }) = broken else {
        panic!("a broken config was not refused as failed");
    };
    assert_eq!(code, STATUS_INVALID_INPUT);
    for needle in ["`url`", "drain_s", "colour", "Bad Header"] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    // A CA file that is missing or not PEM is refused at create, naming the key.
    let not_pem = std::env::temp_dir().join(format!("infadapt-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").expect("file");
    for path in [
        not_pem.display().to_string(),
        "/nonexistent/ca.pem".to_owned(),
    ] {
        let refused = create(config(
            "https://127.0.0.1:1",
            None,
            json!({"tls_ca_file": path}),
        ));
        let Err(HostError::Failed { code, message, .. }) = refused else {
            panic!("a bad tls_ca_file was accepted");
        };
        assert_eq!(code, STATUS_INVALID_INPUT);
        assert!(message.contains("tls_ca_file"), "{message}");
    }
    let _ = std::fs::remove_file(&not_pem);
}
