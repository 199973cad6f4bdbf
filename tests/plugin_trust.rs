//! Plugin trust and containment: a plugin is refused when a symbolic link leads out of its
//! directory or any directory on its path could be changed by others (by the host, by
//! `validate` and by `run` alike); plugin code that calls `exit()` ends the daemon with a
//! failure status, not its own; a plugin initialiser that never finishes does not keep a
//! stopping daemon past its grace period.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use infadaptd::plugin_host::{HostError, PLUGIN_EXIT_STATUS};

use crate::plugins::{TempDir, compile_c_text, host_for, install_rust_plugin};
use crate::support::{Daemon, repo_root, run_command, run_validate, scratch};
use crate::support::{bare_pipeline_text, daemon_table};

/// The C example plugin's source, included by the variants compiled here.
fn echo_source() -> String {
    format!(
        "#include \"{}\"\n",
        repo_root().join("plugins/examples/c-echo/echo.c").display()
    )
}

#[test]
fn a_symlink_out_of_the_plugin_directory_is_refused_and_one_inside_loads() {
    let plugins = TempDir::new("trust-link");
    let elsewhere = TempDir::new("trust-elsewhere");
    let outside = compile_c_text(&elsewhere, &echo_source(), "libreal_echo.so");
    let link = plugins.path().join("libinfadapt_plugin_linked.so");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let host = host_for(&plugins);
    let err = host
        .library("linked")
        .expect_err("a link out of the directory");
    assert!(matches!(err, HostError::Unsafe { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} refused: it is a symbolic link to {}, outside its directory {}; install the file itself there",
            link.display(),
            outside.canonicalize().expect("canonical").display(),
            plugins.path().canonicalize().expect("canonical").display()
        )
    );

    // A link to a file in the same directory (a versioned file name) is fine.
    let inside = compile_c_text(&plugins, &echo_source(), "libinside_echo.so.1");
    std::os::unix::fs::symlink(&inside, plugins.path().join("libinside.so")).expect("symlink");
    let lib = host
        .library("inside")
        .expect("a link within the directory loads");
    assert_eq!(lib.path(), inside.canonicalize().expect("canonical"));
}

#[test]
fn a_writable_directory_anywhere_on_the_path_refuses_the_plugin() {
    let outer = TempDir::new("trust-outer");
    let inner = outer.path().join("plugins");
    std::fs::create_dir(&inner).expect("inner dir");
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let scratch_dir = TempDir::new("trust-build");
    let built = compile_c_text(&scratch_dir, &echo_source(), "libinfadapt_plugin_far.so");
    std::fs::copy(&built, inner.join("libinfadapt_plugin_far.so")).expect("copy");
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&inner).expect("stat"));
    let host = infadaptd::plugin_host::PluginHost::new(vec![inner.clone()], None)
        .with_allowed_owners(vec![uid]);
    let err = host
        .library("far")
        .expect_err("a world-writable grandparent");
    assert!(
        err.to_string().contains(&format!(
            "the directory {} on its path is group- or world-writable (mode 777)",
            outer.path().display()
        )),
        "{err}"
    );
    // With the sticky bit nobody but an entry's owner may rename it: accepted, as `/tmp`.
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    host.library("far")
        .expect("a sticky directory on the path is fine");
}

#[test]
fn validate_and_run_refuse_a_plugin_others_can_write() {
    let plugins = TempDir::new("trust-validate");
    let file = install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let dir = scratch("plugin-trust-validate");
    let config = dir.join("c.toml");
    let text = daemon_table(plugins.path(), &dir.join("state"), "")
        + &bare_pipeline_text("writable", "type = \"misbehave\"");
    std::fs::write(&config, &text).expect("config");
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let refusal = format!(
        "plugin {} refused: the file is group- or world-writable (mode 666)",
        file.display()
    );
    assert!(stderr.contains(&refusal), "{stderr}");

    let out = run_command(&[], &config).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plugin_that_calls_exit_ends_the_daemon_with_a_failure_status() {
    let plugins = TempDir::new("trust-exit");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let dir = scratch("plugin-trust-exit");
    let config = dir.join("c.toml");
    let text = daemon_table(plugins.path(), &dir.join("state"), "")
        + &bare_pipeline_text("quits", "type = \"misbehave\"\nobserve = \"exit\"");
    std::fs::write(&config, &text).expect("config");
    let mut daemon = Daemon::spawn(run_command(&[], &config));
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, Some(PLUGIN_EXIT_STATUS), "{log}");
    assert!(
        log.contains("plugin code called exit(); the daemon did not ask to stop"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
#[test]
fn a_plugin_initialiser_that_never_finishes_does_not_hold_a_stopping_daemon() {
    let plugins = TempDir::new("trust-slow");
    compile_c_text(
        &plugins,
        &format!(
            "{}#include <unistd.h>\n__attribute__((constructor)) static void slow_start(void) {{ sleep(60); }}\n",
            echo_source()
        ),
        "libinfadapt_plugin_slow.so",
    );
    let dir = scratch("plugin-trust-slow");
    let config = dir.join("c.toml");
    let text = daemon_table(
        plugins.path(),
        &dir.join("state"),
        "require_running_pipeline = false\n",
    ) + &bare_pipeline_text("slow", "type = \"slow\"")
        + &bare_pipeline_text("simulated", "type = \"sim\"");
    std::fs::write(&config, &text).expect("config");
    let mut daemon = Daemon::spawn(run_command(&[], &config));
    assert!(
        daemon.wait_log("did not finish within 2.0 s", Duration::from_secs(20)),
        "the slow load was not given up:\n{}",
        daemon.log()
    );
    daemon.signal("TERM");
    let asked = Instant::now();
    let code = daemon.wait_exit(Duration::from_secs(20));
    let took = asked.elapsed();
    let log = daemon.log();
    assert_eq!(code, Some(0), "{log}");
    // grace_s = 2 in the daemon table; the initialiser sleeps for a minute.
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} with the initialiser still running:\n{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
