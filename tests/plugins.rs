//! The plugin host against real shared libraries: the simulated backend built as a cdylib,
//! a C plugin compiled from the header, and misbehaving plugins (a Rust one that panics or
//! hangs on request, C ones with a wrong ABI or a missing entry point, a world-writable
//! file). Every library goes through the real C ABI; nothing here is skipped when a tool
//! is missing: the tests fail instead.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::{BackendInstance, PlanMessage};
use infadapt_testkit::single_plan_message;
use infadaptd::plugin_host::{CallPolicy, GuardedBackend, HostError, PluginHost};
use serde_json::json;

use crate::support::repo_root;

/// A directory removed when dropped; mode 0755 like a real plugin directory.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "infadapt-plugins-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The uid owning files this process creates (the allowed owner in tests).
fn own_uid(dir: &Path) -> u32 {
    std::fs::metadata(dir).expect("stat").uid()
}

pub(crate) fn host_for(dir: &TempDir) -> PluginHost {
    PluginHost::new(vec![dir.path().to_owned()], None)
        .with_allowed_owners(vec![own_uid(dir.path())])
}

/// The profile directory of the built Rust plugin cdylibs and the test worker (built once,
/// a no-op when fresh; see `testkit::workspace_build_dir`).
pub(crate) fn rust_plugins_dir() -> &'static Path {
    infadapt_testkit::workspace_build_dir()
}

/// Copies a Rust plugin cdylib into `dir` under `file_name`.
pub(crate) fn install_rust_plugin(dir: &TempDir, built: &str, file_name: &str) -> PathBuf {
    let source = rust_plugins_dir().join(built);
    assert!(source.exists(), "{} was not built", source.display());
    let target = dir.path().join(file_name);
    std::fs::copy(&source, &target).expect("copy plugin");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    target
}

/// Compiles a C plugin with the project's header into `dir/file_name`.
fn compile_c(dir: &TempDir, source: &Path, file_name: &str) -> PathBuf {
    let out = dir.path().join(file_name);
    let include = repo_root().join("plugins/abi/include");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(&include)
        .arg(source)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("a C compiler (`cc`) is required to build the C test plugins");
    assert!(
        output.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}

pub(crate) fn compile_c_text(dir: &TempDir, text: &str, file_name: &str) -> PathBuf {
    let source = dir.path().join(format!("{file_name}.c"));
    std::fs::write(&source, text).expect("write C source");
    compile_c(dir, &source, file_name)
}

fn compile_echo(dir: &TempDir, file_name: &str) -> PathBuf {
    compile_c(
        dir,
        &repo_root().join("plugins/examples/c-echo/echo.c"),
        file_name,
    )
}

fn policy(timeout_ms: u64, backoff_ms: u64) -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_millis(timeout_ms),
        backoff_initial: Duration::from_millis(backoff_ms),
        backoff_max: Duration::from_millis(backoff_ms * 8),
    }
}

fn sim_config(speed: f64) -> String {
    json!({
        "pipeline": {
            "name": "demo", "slo_ms": 500.0,
            "stages": [{ "name": "only", "variants": [
                { "name": "small", "accuracy": 0.7, "load_time_s": 2.0,
                  "points": [{ "batch": 1, "cores": 1, "p99_ms": 20.0 }] },
                { "name": "big", "accuracy": 0.9, "load_time_s": 4.0,
                  "points": [{ "batch": 1, "cores": 1, "p99_ms": 60.0 }] }
            ] }]
        },
        "initial": { "schema": 1, "stages": [{ "stage": "only", "assignments": [
            { "variant": "small", "batch": 1, "cores": 1, "replicas": 2 }] }] },
        "workload": { "rates": [20.0] },
        "speed": speed,
        "seed": 3
    })
    .to_string()
}

/// `replicas` replicas of `variant` (batch 1, one core) in the stage `only`.
fn plan(variant: &str, replicas: u32) -> PlanMessage {
    single_plan_message("only", variant, 1, 1, replicas)
}

#[tokio::test]
async fn sim_plugin_round_trips_through_the_c_abi() {
    let dir = TempDir::new("sim");
    install_rust_plugin(
        &dir,
        "libinfadapt_plugin_sim.so",
        "libinfadapt_plugin_sim.so",
    );
    let host = host_for(&dir);
    let found = host.discover();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].as_ref().expect("loads").name, "sim");
    let library = host.library("sim").expect("library");

    // The synchronous instance, as the BackendInstance trait.
    let mut instance = library.create(&sim_config(1.0)).expect("create");
    assert_eq!(instance.describe().name, "sim");
    assert!(instance.describe().capabilities.variant_mix);
    instance.health().expect("health");
    drop(instance);

    // The guarded one, as the daemon drives it.
    let mut backend = GuardedBackend::create_plugin(library, sim_config(2000.0), policy(5000, 10))
        .await
        .expect("create");
    assert_eq!(backend.name(), "sim");
    backend.observe().await.expect("first observe");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let observed = backend.observe().await.expect("observe");
    assert!(
        observed.arrivals_per_second.len() >= 30,
        "{} virtual seconds",
        observed.arrivals_per_second.len()
    );
    assert!(observed.completed > 0);
    assert_eq!(observed.deployed.stages[0].assignments[0].variant, "small");
    assert_eq!(observed.stages[0].ready_replicas, 2);

    let report = backend.apply(&plan("big", 3)).await.expect("apply");
    assert!(report.changed, "{report:?}");
    let again = backend.apply(&plan("big", 3)).await.expect("apply again");
    assert!(!again.changed, "apply must be idempotent: {again:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = backend.observe().await.expect("observe after apply");
    let deployed = &after.deployed.stages[0].assignments;
    assert_eq!(deployed.len(), 1, "{deployed:?}");
    assert_eq!(
        (deployed[0].variant.as_str(), deployed[0].replicas),
        ("big", 3)
    );

    let bad = backend
        .apply(&plan("nope", 1))
        .await
        .expect_err("unknown variant");
    let text = bad.to_string();
    assert!(text.contains("backend `sim` (plugin "), "{text}");
    assert!(text.contains("apply failed (invalid input)"), "{text}");
    assert!(backend.is_degraded());

    let err = host
        .library("sim")
        .expect("same library")
        .create("{\"pipeline\": 3}")
        .expect_err("bad config");
    assert!(
        err.to_string().contains("create failed (invalid input)"),
        "{err}"
    );
}

#[tokio::test]
async fn c_plugin_built_from_the_header_is_driven() {
    let dir = TempDir::new("c-echo");
    compile_echo(&dir, "libinfadapt_plugin_c_echo.so");
    let host = host_for(&dir);
    let library = host.library("c_echo").expect("load the C plugin");
    assert_eq!(library.declared_abi(), (2, 72));
    let mut backend = GuardedBackend::create_plugin(library.clone(), "{}".into(), policy(2000, 1))
        .await
        .expect("create");
    assert_eq!(backend.description().name, "c-echo");
    assert!(!backend.description().capabilities.variant_mix);

    let empty = backend.observe().await.expect("observe");
    assert!(empty.deployed.stages.is_empty());
    let wanted = plan("small", 4);
    assert!(backend.apply(&wanted).await.expect("apply").changed);
    assert!(!backend.apply(&wanted).await.expect("apply again").changed);
    let observed = backend.observe().await.expect("observe");
    assert_eq!(
        observed.deployed, wanted,
        "unknown answer fields are ignored"
    );
    assert_eq!(observed.completed, 4);
    assert!(backend.health().await.expect("health").healthy);

    let err = library.create("not json").expect_err("invalid config");
    assert_eq!(
        err.to_string(),
        format!(
            "backend `c_echo` (plugin {}): create failed (invalid input): c-echo: config must be a JSON object",
            library.path().display()
        )
    );
}

#[tokio::test]
async fn a_panicking_plugin_is_contained_and_the_backend_degraded() {
    let dir = TempDir::new("panic");
    install_rust_plugin(
        &dir,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    compile_echo(&dir, "libinfadapt_plugin_c_echo.so");
    let host = host_for(&dir);
    let misbehave = host.library("misbehave").expect("load");
    let mut panicky = GuardedBackend::create_plugin(
        misbehave.clone(),
        json!({ "observe": "panic" }).to_string(),
        policy(2000, 200),
    )
    .await
    .expect("create");
    let mut healthy = GuardedBackend::create_plugin(
        host.library("c_echo").expect("load"),
        "{}".into(),
        policy(2000, 1),
    )
    .await
    .expect("create");

    let err = panicky.observe().await.expect_err("the plugin panics");
    assert!(err.is_panic(), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("backend `misbehave` (plugin "), "{text}");
    assert!(
        text.contains("observe panicked: plugin panicked: misbehave: asked to panic in observe"),
        "{text}"
    );
    assert!(panicky.is_degraded());
    assert_eq!(panicky.stats().panics, 1);

    // This process survived, and other backends carry on.
    healthy
        .observe()
        .await
        .expect("another backend keeps working");

    // Backoff, then a retry on a fresh instance (which panics again, as configured).
    let refused = panicky.observe().await.expect_err("backing off");
    assert!(matches!(refused, HostError::Backoff { .. }), "{refused}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = panicky.observe().await.expect_err("panics again");
    assert!(again.is_panic(), "{again}");
    assert_eq!(panicky.stats().restarts, 1);
    assert_eq!(panicky.stats().consecutive_failures, 2);
    assert!(panicky.is_degraded());

    // A panic in create is contained too.
    let err = GuardedBackend::create_plugin(
        misbehave,
        json!({ "create": "panic" }).to_string(),
        policy(2000, 1),
    )
    .await
    .expect_err("create panics");
    assert!(err.is_panic(), "{err}");
    assert!(err.to_string().contains("create panicked"), "{err}");
}

#[tokio::test]
async fn a_hanging_plugin_times_out_while_others_keep_working() {
    let dir = TempDir::new("hang");
    install_rust_plugin(
        &dir,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    compile_echo(&dir, "libinfadapt_plugin_c_echo.so");
    let host = host_for(&dir);
    let mut hanging = GuardedBackend::create_plugin(
        host.library("misbehave").expect("load"),
        json!({ "observe": "hang_once", "hang_ms": 1200 }).to_string(),
        policy(200, 10),
    )
    .await
    .expect("create");
    let mut healthy = GuardedBackend::create_plugin(
        host.library("c_echo").expect("load"),
        "{}".into(),
        policy(2000, 1),
    )
    .await
    .expect("create");

    let started = Instant::now();
    let err = hanging.observe().await.expect_err("times out");
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000),
        "returned after {waited:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("backend `misbehave` (plugin "), "{text}");
    assert!(text.ends_with("observe timed out after 200 ms"), "{text}");
    assert!(hanging.is_degraded() && hanging.is_hung());

    // Other backends keep working while the call hangs.
    for _ in 0..3 {
        healthy
            .observe()
            .await
            .expect("another backend keeps working");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let refused = hanging.apply(&plan("x", 1)).await.expect_err("still hung");
    assert!(matches!(refused, HostError::Hung { .. }), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("its observe has been hung for"),
        "{refused}"
    );

    // Once the stuck call returns, the instance is used again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.is_hung() {
        assert!(Instant::now() < deadline, "the hung call never returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let observed = hanging.observe().await.expect("recovered");
    assert_eq!(observed.completed, 2, "the hung call counted as the first");
    assert!(!hanging.is_degraded() && !hanging.is_hung());
    assert_eq!(hanging.stats().timeouts, 1);
}

pub(crate) const WRONG_ABI: &str = r#"
#include "infadapt_plugin.h"
static const InfadaptPluginVTable VTABLE = { .abi_version = 99, .struct_size = sizeof(InfadaptPluginVTable) };
const InfadaptPluginVTable *infadapt_plugin_entry(void) { return &VTABLE; }
"#;

const SHORT_TABLE: &str = r#"
#include <stdint.h>
static const struct { uint32_t abi_version, struct_size; } VTABLE = { 1, 8 };
const void *infadapt_plugin_entry(void) { return &VTABLE; }
"#;

const NULL_ENTRY: &str = r#"
#include "infadapt_plugin.h"
static const InfadaptPluginVTable VTABLE = { .abi_version = INFADAPT_ABI_VERSION, .struct_size = sizeof(InfadaptPluginVTable) };
const InfadaptPluginVTable *infadapt_plugin_entry(void) { return &VTABLE; }
"#;

const NO_ENTRY: &str = "int not_a_plugin(void) { return 1; }\n";

#[test]
fn incompatible_libraries_are_refused_with_the_file_named() {
    let dir = TempDir::new("abi");
    let wrong = compile_c_text(&dir, WRONG_ABI, "libwrong_abi.so");
    let short = compile_c_text(&dir, SHORT_TABLE, "libshort_table.so");
    let null = compile_c_text(&dir, NULL_ENTRY, "libnull_entry.so");
    let none = compile_c_text(&dir, NO_ENTRY, "libno_entry.so");
    compile_echo(&dir, "libinfadapt_plugin_c_echo.so");
    let host = host_for(&dir);

    let err = host.library("wrong_abi").expect_err("wrong ABI");
    assert!(
        matches!(
            err,
            HostError::AbiVersion {
                found: 99,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} refused: built for plugin ABI version 99, this daemon speaks versions 1 to 2",
            wrong.display()
        )
    );
    let err = host.library("short_table").expect_err("short table");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} refused: its vtable is 8 bytes, this daemon needs at least 64",
            short.display()
        )
    );
    let err = host.library("null_entry").expect_err("null entries");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} refused: vtable entry `create` is null",
            null.display()
        )
    );
    let err = host.library("no_entry").expect_err("no entry symbol");
    assert!(
        err.to_string().starts_with(&format!(
            "plugin {} refused: it exports no `infadapt_plugin_entry` symbol",
            none.display()
        )),
        "{err}"
    );

    // Discovery reports every refusal and still loads the good plugin.
    let found = host.discover();
    assert_eq!(found.len(), 5, "{found:?}");
    let loaded: Vec<_> = found.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(loaded.len(), 1, "{found:?}");
    assert_eq!(loaded[0].name, "c_echo");
}

#[test]
fn writable_or_foreign_libraries_are_refused_before_loading() {
    let dir = TempDir::new("perm");
    let library = compile_echo(&dir, "libinfadapt_plugin_c_echo.so");
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let host = host_for(&dir);
    let err = host.library("c_echo").expect_err("world-writable");
    assert!(matches!(err, HostError::Unsafe { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} refused: the file is group- or world-writable (mode 777); run `chmod go-w` on it",
            library.display()
        )
    );

    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let uid = own_uid(dir.path());
    let strangers = PluginHost::new(vec![dir.path().to_owned()], None)
        .with_allowed_owners(vec![uid.wrapping_add(1)]);
    let err = strangers.library("c_echo").expect_err("foreign owner");
    assert!(
        err.to_string().contains(&format!(
            "the file is owned by uid {uid}, not by uid {}",
            uid.wrapping_add(1)
        )),
        "{err}"
    );

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = host
        .library("c_echo")
        .expect_err("world-writable directory");
    assert!(
        err.to_string()
            .contains("on its path is group- or world-writable"),
        "{err}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    host.library("c_echo")
        .expect("loads once the permissions are safe");
}

#[test]
fn a_version_1_plugin_still_loads_and_has_no_config_check_while_version_2_checks() {
    let dir = TempDir::new("abi-v1");
    compile_c_text(
        &dir,
        &format!(
            "#define ECHO_AS_ABI_V1 1\n#include \"{}\"\n",
            repo_root().join("plugins/examples/c-echo/echo.c").display()
        ),
        "libold_echo.so",
    );
    compile_echo(&dir, "libnew_echo.so");
    let host = host_for(&dir);

    let old = host.library("old_echo").expect("a version-1 plugin loads");
    assert_eq!(old.declared_abi(), (1, 64));
    assert_eq!(old.check_config("{}").expect("no call"), None);
    let instance = old.create("{}").expect("and creates instances");
    assert_eq!(instance.describe().name, "c-echo");

    let new = host.library("new_echo").expect("load");
    assert_eq!(new.declared_abi().0, 2);
    assert_eq!(new.check_config("{}").expect("checked"), Some(Vec::new()));
    let problems = new
        .check_config("[1]")
        .expect("checked")
        .expect("a version-2 check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "");
    assert_eq!(problems[0].message, "c-echo: config must be a JSON object");
}
