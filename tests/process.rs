//! The real daemon with the process backend plugin (built here with cargo, with the test
//! worker `infadapt-test-worker`): it loads `libinfadapt_plugin_process.so`, its workers
//! converge to the plan, a SIGKILLed daemon's workers keep running and the restarted daemon
//! adopts the same ones (no duplicates), and a clean stop leaves no worker behind. The
//! backend's own behaviour (scaling under load, crashes, GPUs) is tested in
//! `plugins/process/tests/workers.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::daemon::{Daemon, free_port, repo_root, status_of, wait_until};

/// The worker binary and the plugin library, built once into this test binary's target
/// directory.
struct Built {
    worker: PathBuf,
    plugin: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_owned();
        let target_dir = profile_dir.parent().expect("target dir").to_owned();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(&cargo);
        command
            .current_dir(repo_root())
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["build", "--quiet", "-p", "infadapt-test-worker"])
            .args(["-p", "infadapt-plugin-process"]);
        if profile != "debug" {
            command.args(["--profile", &profile]);
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("cannot run `{cargo} build` for the worker: {e}"));
        assert!(
            status.success(),
            "building the worker and the process plugin failed"
        );
        let built = Built {
            worker: profile_dir.join("infadapt-test-worker"),
            plugin: profile_dir.join("libinfadapt_plugin_process.so"),
        };
        assert!(built.worker.exists(), "{} missing", built.worker.display());
        assert!(built.plugin.exists(), "{} missing", built.plugin.display());
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

/// State letter, parent and start time of a process from `/proc/PID/stat`.
fn proc_stat(pid: i64) -> Option<(char, i64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Whether `pid` has ended: no process, or a zombie that PID 1 owns. (On hosts whose PID 1
/// does not reap, an orphan that the restarted daemon adopted and stopped stays a zombie of
/// PID 1; it is dead all the same and not the daemon's to reap.)
fn has_ended(pid: i64) -> bool {
    match proc_stat(pid) {
        None => true,
        Some(('Z', parent, _)) => parent == 1,
        Some(_) => false,
    }
}

/// The state file's workers (JSON objects).
fn recorded_workers(dir: &Path) -> Option<Vec<serde_json::Value>> {
    let bytes = std::fs::read(dir.join("workers/process-bare.json")).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    state["workers"].as_array().cloned()
}

/// The daemon config for the process backend: one stage of resnet18 on 1 core.
fn daemon_config(dir: &Path, http_port: u16, plugins: &Path) -> String {
    let catalog = repo_root().join("etc/catalogs/resnet-cpu.toml");
    format!(
        r#"
[daemon]
period_s = 1
state_dir = "{state}"
plugin_dirs = ["{plugins}"]
grace_s = 10
[daemon.http]
listen = "127.0.0.1:{http_port}"

[[pipeline]]
name = "bare"
catalog = "{catalog}"
slo_ms = 750
initial_load_rps = 30
[[pipeline.stage]]
name = "classify"
variants = ["resnet18"]
core_options = [1]
batch_sizes = [1]
max_replicas = 4
[pipeline.solver]
time_limit_ms = 200
[pipeline.backend]
type = "process"
state_dir = "{workers}"
port_range = [21400, 21449]
drain_s = 1
stop_timeout_s = 3
[pipeline.backend.variants.resnet18]
command = ["{worker}", "--port", "{{port}}", "--variant", "{{variant}}", "--work", "50000"]
readiness_timeout_s = 20
"#,
        state = dir.join("daemon-state").display(),
        workers = dir.join("workers").display(),
        plugins = plugins.display(),
        catalog = catalog.display(),
        worker = built().worker.display(),
    )
}

/// Ready worker processes the state file lists that run (same PID and start time).
fn live_workers(dir: &Path) -> Vec<i64> {
    recorded_workers(dir)
        .unwrap_or_default()
        .iter()
        .filter(|w| w["state"] == "ready")
        .filter_map(|w| {
            let pid = w["pid"].as_i64()?;
            let start = w["start_ticks"].as_u64()?;
            matches!(proc_stat(pid), Some((state, _, s)) if s == start && state != 'Z')
                .then_some(pid)
        })
        .collect()
}

fn planned_replicas(http_port: u16) -> Option<u64> {
    let status = status_of(http_port)?;
    let plan = &status["pipelines"][0]["plan"];
    Some(
        plan["stages"][0]["assignments"]
            .as_array()?
            .iter()
            .filter_map(|a| a["replicas"].as_u64())
            .sum(),
    )
}

#[test]
fn the_daemon_killed_and_restarted_adopts_its_workers_and_leaves_none_after_a_stop() {
    let dir = Scratch::new("daemon");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let installed = plugins.join("libinfadapt_plugin_process.so");
    std::fs::copy(&built().plugin, &installed).expect("install plugin");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http_port = free_port();
    let config = dir.path().join("infadaptd.toml");
    std::fs::write(&config, daemon_config(dir.path(), http_port, &plugins)).expect("config");
    let notify = dir.path().join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).expect("notify socket");

    let converged = |daemon: &Daemon| -> Vec<i64> {
        let mut seen = Vec::new();
        let ok = wait_until(Duration::from_secs(30), || {
            seen = live_workers(dir.path());
            planned_replicas(http_port).is_some_and(|r| r > 0 && seen.len() as u64 == r)
        });
        assert!(
            ok,
            "workers {seen:?} never matched the plan {:?}; log:\n{}",
            planned_replicas(http_port),
            daemon.log()
        );
        seen.sort_unstable();
        seen
    };

    let mut daemon = Daemon::start(&config, &notify);
    let first = converged(&daemon);
    // Let a few ticks pass with the plan followed; nothing restarts.
    std::thread::sleep(Duration::from_secs(2));
    let mut still = live_workers(dir.path());
    still.sort_unstable();
    assert_eq!(
        still,
        first,
        "workers changed while the plan held:\n{}",
        daemon.log()
    );

    daemon.signal("KILL");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(5)),
        None,
        "SIGKILL has no exit code"
    );
    assert!(
        first.iter().all(|&p| !has_ended(p)),
        "workers died with the daemon"
    );

    let mut daemon = Daemon::start(&config, &notify);
    let second = converged(&daemon);
    assert_eq!(second, first, "not adopted:\n{}", daemon.log());
    assert!(
        daemon.wait_log("adopted", Duration::from_secs(5)),
        "no adoption logged:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut still = live_workers(dir.path());
    still.sort_unstable();
    assert_eq!(
        still,
        first,
        "duplicates or restarts after adoption:\n{}",
        daemon.log()
    );

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    for pid in &first {
        assert!(has_ended(*pid), "worker {pid} outlived a clean stop");
    }
    let left = recorded_workers(dir.path()).expect("state file");
    assert!(left.is_empty(), "{left:?}");
}
