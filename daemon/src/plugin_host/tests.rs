//! Tests of the guarded backend and the plugin host.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::*;

use super::guarded::*;
use super::*;

/// A linked-in backend whose observe follows a script.
#[derive(Debug)]
struct Scripted {
    script: Arc<Mutex<Vec<&'static str>>>,
    sleep: Duration,
}

impl BackendInstance for Scripted {
    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: "scripted".into(),
            version: "0".into(),
            capabilities: Default::default(),
            gpu_mem_mb: None,
        }
    }
    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        let step = self.script.lock().unwrap().pop().unwrap_or("ok");
        match step {
            "panic" => panic!("scripted panic"),
            "error" => Err(BackendError::unavailable("scripted failure")),
            "sleep" => {
                std::thread::sleep(self.sleep);
                Ok(PluginObservation::default())
            }
            _ => Ok(PluginObservation::default()),
        }
    }
    fn apply(&mut self, _plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        Ok(ApplyReport::default())
    }
    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: true,
            detail: String::new(),
        })
    }
}

/// `steps` run first to last.
fn scripted(steps: &[&'static str], sleep_ms: u64) -> Box<dyn BackendInstance> {
    let mut script: Vec<&'static str> = steps.to_vec();
    script.reverse();
    Box::new(Scripted {
        script: Arc::new(Mutex::new(script)),
        sleep: Duration::from_millis(sleep_ms),
    })
}

fn policy(timeout_ms: u64, backoff_ms: u64) -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_millis(timeout_ms),
        backoff_initial: Duration::from_millis(backoff_ms),
        backoff_max: Duration::from_millis(backoff_ms * 4),
    }
}

#[test]
fn plugin_names_come_from_file_names() {
    assert_eq!(
        plugin_name(Path::new("/x/libinfadapt_plugin_sim.so")).as_deref(),
        Some("sim")
    );
    assert_eq!(
        plugin_name(Path::new("libecho.so")).as_deref(),
        Some("echo")
    );
    assert_eq!(plugin_name(Path::new("echo.so")).as_deref(), Some("echo"));
    assert_eq!(plugin_name(Path::new("echo.so.1")), None);
    assert_eq!(plugin_name(Path::new("lib.so")), None);
}

#[tokio::test]
async fn errors_degrade_with_doubling_backoff_then_recover() {
    let mut backend = GuardedBackend::new(
        scripted(&["error", "error"], 0),
        BackendOrigin::Linked,
        policy(1000, 40),
    );
    let err = backend.observe().await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("backend `scripted` (linked in): observe failed (unavailable)"),
        "{err}"
    );
    assert!(backend.is_degraded());
    let refused = backend.observe().await.unwrap_err();
    assert!(matches!(refused, HostError::Backoff { .. }), "{refused}");
    assert!(
        refused.to_string().contains("scripted failure"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend.observe().await.unwrap_err();
    let degraded = backend.stats().degraded.clone().unwrap();
    let wait = degraded.retry_at - Instant::now();
    assert!(
        wait > Duration::from_millis(50),
        "second backoff doubles: {wait:?}"
    );
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    backend.observe().await.unwrap();
    assert!(!backend.is_degraded());
    let stats = backend.stats();
    assert_eq!((stats.errors, stats.refused, stats.calls), (2, 1, 3));
}

#[tokio::test]
async fn a_health_probe_while_backing_off_lets_a_recovered_backend_answer_early() {
    // A long backoff (400 ms after two failures) but probes every 20 ms.
    let policy = CallPolicy {
        timeout: Duration::from_millis(1000),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_secs(10),
    };
    let mut backend = GuardedBackend::new(
        scripted(&["error", "error", "error", "error", "error"], 0),
        BackendOrigin::Linked,
        policy,
    );
    backend.observe().await.unwrap_err();
    // Still failing: the probe is healthy, the observe it lets through fails, and the
    // backoff keeps doubling.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let err = backend.observe().await.unwrap_err();
        assert!(!matches!(err, HostError::Backoff { .. }), "{err}");
    }
    let stats = backend.stats();
    assert_eq!(stats.consecutive_failures, 4);
    let degraded = stats.degraded.clone().expect("degraded");
    assert!(degraded.retry_at - Instant::now() > Duration::from_millis(100));
    // Within the probe interval, calls are refused as before.
    let refused = backend.observe().await.unwrap_err();
    assert!(matches!(refused, HostError::Backoff { .. }), "{refused}");
    // The backend is back: the next probe finds it long before the backoff ends.
    tokio::time::sleep(Duration::from_millis(25)).await;
    backend.observe().await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(25)).await;
    backend.observe().await.expect("answered after a probe");
    assert!(!backend.is_degraded());
    assert_eq!(backend.stats().consecutive_failures, 0);
}

#[tokio::test]
async fn a_linked_panic_is_contained_and_the_instance_recreated() {
    let mut backend = GuardedBackend::new(
        scripted(&["panic"], 0),
        BackendOrigin::Linked,
        policy(1000, 1),
    )
    .with_factory(Arc::new(|| Ok(scripted(&["ok"], 0))));
    let err = backend.observe().await.unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert!(err.to_string().contains("scripted panic"), "{err}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    backend.observe().await.unwrap();
    assert_eq!(backend.stats().restarts, 1);
    assert_eq!(backend.stats().panics, 1);
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_not_called_again_until_it_returns() {
    let mut backend = GuardedBackend::new(
        scripted(&["sleep"], 400),
        BackendOrigin::Linked,
        policy(100, 1),
    );
    let started = Instant::now();
    let err = backend.observe().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(
        err.to_string(),
        "backend `scripted` (linked in): observe timed out after 100 ms"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let hung = backend.health().await.unwrap_err();
    assert!(matches!(hung, HostError::Hung { .. }), "{hung}");
    assert!(backend.is_hung());
    tokio::time::sleep(Duration::from_millis(450)).await;
    backend.health().await.unwrap();
    backend.observe().await.unwrap();
    assert!(!backend.is_hung());
    assert_eq!(backend.stats().timeouts, 1);
}

#[test]
fn refuses_writable_or_foreign_files_before_loading() {
    let dir = std::env::temp_dir().join(format!("infadapt-host-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uid = std::fs::metadata(&dir).unwrap().uid();
    let file = dir.join("libwritable.so");
    std::fs::write(&file, b"not a library").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let host = PluginHost::new(vec![dir.clone()], None).with_allowed_owners(vec![uid]);
    let err = host.load(&file).unwrap_err().to_string();
    assert!(err.contains("libwritable.so refused"), "{err}");
    assert!(err.contains("world-writable"), "{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let foreign = PluginHost::new(vec![dir.clone()], None).with_allowed_owners(vec![uid + 1]);
    let err = foreign.load(&file).unwrap_err().to_string();
    assert!(err.contains(&format!("owned by uid {uid}")), "{err}");

    let err = host.load(&file).unwrap_err();
    assert!(matches!(err, HostError::Load { .. }), "{err}");
    let err = host.library("missing").unwrap_err().to_string();
    assert!(err.starts_with("no plugin named `missing` in"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by the fuzz target `abi_from_plugin`: serde reads a struct from a JSON array,
/// so `[2]` decoded as a config-check answer of schema 2 past the schema check.
#[test]
fn fuzz_regression_an_answer_that_is_an_array_is_refused() {
    let err = decode::<ConfigCheck>(b"[2]").expect_err("an array is not an answer");
    assert!(err.message.contains("not a JSON object"), "{}", err.message);
    let err = decode::<ApplyReport>(b"[2, true, []]").expect_err("an array is not an answer");
    assert!(err.message.contains("not a JSON object"), "{}", err.message);
    let err = decode::<HealthReport>(b"\"ok\"").expect_err("a string is not an answer");
    assert!(err.message.contains("not a JSON object"), "{}", err.message);
    let read: ApplyReport = decode(br#"{"changed": true}"#).expect("an object is read");
    assert!(read.changed);
    let err = decode::<ApplyReport>(br#"{"schema": 2, "changed": true}"#)
        .expect_err("schema 2 is refused");
    assert!(err.message.contains("schema 2"), "{}", err.message);
}
