//! Each backend checks its own `[pipeline.backend]` keys through the plugin ABI's config
//! check: `validate` reports a typo with the key meant and a bad value at their file
//! positions, warns about a plugin built for ABI version 1 (which has no check, and still
//! loads), refuses a plugin that cannot be loaded; `run` refuses a file the backend rejects,
//! and refuses to start, unless told otherwise, when no pipeline can create its backend.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::plugins::{TempDir, WRONG_ABI, compile_c_text, install_rust_plugin};
use crate::support::{
    Daemon, bare_pipeline_text, daemon_table, free_port, repo_root, run_validate, scratch,
    wait_notify,
};

/// `file:line:col` of the first line of `text` that starts with `prefix`, at the key (`at
/// value`: at the value after `= `).
fn position(file: &Path, text: &str, prefix: &str, at_value: bool) -> String {
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix}"));
    let column = if at_value {
        line.find("= ").map_or(1, |at| at + 3)
    } else {
        1
    };
    format!("{}:{}:{column}", file.display(), index + 1)
}

#[test]
fn validate_reports_backend_keys_at_their_positions_and_warns_about_an_old_abi() {
    let plugins = TempDir::new("check");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_triton.so",
        "libinfadapt_plugin_triton.so",
    );
    compile_c_text(
        &plugins,
        &format!(
            "#define ECHO_AS_ABI_V1 1\n#include \"{}\"\n",
            repo_root().join("plugins/examples/c-echo/echo.c").display()
        ),
        "libinfadapt_plugin_old_echo.so",
    );
    compile_c_text(&plugins, WRONG_ABI, "libwrong_abi.so");
    let dir = scratch("backend-check");
    let config = dir.join("c.toml");

    let mut text = daemon_table(plugins.path(), &dir.join("state"), "");
    text.push_str(&bare_pipeline_text(
        "triton",
        "type = \"triton\"\nurl = \"http://127.0.0.1:1\"\nmetrics_ulr = \"http://127.0.0.1:2\"\n\
         drain_s = \"ten\"\n[pipeline.backend.models]\nresnet18 = \"a/b\"",
    ));
    text.push_str(&bare_pipeline_text("old", "type = \"old_echo\""));
    text.push_str(&bare_pipeline_text("refused", "type = \"wrong_abi\""));
    std::fs::write(&config, &text).expect("config");
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for expected in [
        format!(
            "{}: pipeline[0].backend.metrics_ulr: unknown key (did you mean `metrics_url`?)",
            position(&config, &text, "metrics_ulr", false)
        ),
        format!(
            "{}: pipeline[0].backend.drain_s: must be a non-negative number",
            position(&config, &text, "drain_s", true)
        ),
        format!(
            "{}: pipeline[0].backend.models.resnet18: must be a Triton model name",
            position(&config, &text, "resnet18 = ", true)
        ),
        "pipeline[2].backend.type: plugin ".to_owned(),
        "refused: built for plugin ABI version 99".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "`{expected}` not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("warning"),
        "errors come without warnings:\n{stderr}"
    );

    // Fixed, and without the refused plugin: valid, with a warning for the old ABI.
    let fixed = text
        .replace("metrics_ulr", "metrics_url")
        .replace("drain_s = \"ten\"", "drain_s = 10")
        .replace("\"a/b\"", "\"resnet18_onnx\"")
        .replace("type = \"wrong_abi\"", "type = \"old_echo\"");
    std::fs::write(&config, &fixed).expect("config");
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: warning: pipeline `old`: backend `old_echo`: plugin",
            config.display()
        )) && stderr.contains("built for plugin ABI version 1, which has no config check"),
        "{stderr}"
    );

    // `run` reads the file the same way: a key the backend rejects stops it at once.
    std::fs::write(
        &config,
        text.replace("type = \"wrong_abi\"", "type = \"old_echo\""),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("metrics_ulr: unknown key"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plugin_check_that_panics_or_hangs_is_reported_and_validate_finishes() {
    let plugins = TempDir::new("check-misbehave");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let dir = scratch("backend-check-misbehave");
    let config = dir.join("c.toml");
    let mut text = daemon_table(plugins.path(), &dir.join("state"), "");
    text.push_str(&bare_pipeline_text(
        "panics",
        "type = \"misbehave\"\ncheck = \"panic\"",
    ));
    text.push_str(&bare_pipeline_text(
        "hangs",
        "type = \"misbehave\"\ncheck = \"hang\"\nhang_ms = 30000",
    ));
    text.push_str(&bare_pipeline_text(
        "typo",
        "type = \"misbehave\"\nobserv = \"ok\"",
    ));
    std::fs::write(&config, &text).expect("config");
    let started = std::time::Instant::now();
    let out = run_validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "validate waited for the hung check"
    );
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for needle in [
        "pipeline[0].backend.type: backend `misbehave`",
        "check_config panicked: plugin panicked: misbehave: asked to panic in check_config",
        "pipeline[1].backend.type: backend `misbehave`: loading the plugin and its check_config \
         did not finish within 2.0 s",
        "pipeline[2].backend.observ: unknown key (did you mean `observe`?)",
    ] {
        assert!(stderr.contains(needle), "`{needle}` not in:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_refuses_to_start_when_no_pipeline_can_create_its_backend_unless_told_otherwise() {
    let plugins = TempDir::new("check-start");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let dir = scratch("backend-check-start");
    let config = dir.join("c.toml");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let broken = bare_pipeline_text("broken", "type = \"misbehave\"\ncreate = \"panic\"");

    std::fs::write(
        &config,
        daemon_table(plugins.path(), &dir.join("state"), "") + &broken,
    )
    .expect("config");
    let mut daemon = Daemon::start(&config, &notify_path);
    let code = daemon.wait_exit(Duration::from_secs(20));
    let log = daemon.log();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}, log:\n{log}");
    assert!(
        log.contains("no pipeline could start")
            && log.contains("broken: backend `misbehave`")
            && log.contains("require_running_pipeline = false"),
        "{log}"
    );
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while let Ok(n) = notify.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        seen.iter().all(|m| !m.lines().any(|l| l == "READY=1")),
        "READY=1 sent: {seen:?}"
    );

    // Told to start anyway, and with one pipeline that works: ready, with the broken one
    // named in the status.
    let port = free_port();
    let text = daemon_table(
        plugins.path(),
        &dir.join("state"),
        "require_running_pipeline = false\n",
    )
    .replace("enabled = false", &format!("listen = \"127.0.0.1:{port}\""))
        + &broken;
    std::fs::write(&config, &text).expect("config");
    let mut daemon = Daemon::start(&config, &notify_path);
    let seen = wait_notify(&notify, "READY=1", Duration::from_secs(20));
    let ready = seen.last().cloned().unwrap_or_default();
    assert!(
        ready.contains("STATUS=broken: running") && ready.contains("degraded (create)"),
        "{ready}"
    );
    let degraded = crate::support::http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        degraded.contains("infadapt_degraded{pipeline=\"broken\"} 1"),
        "{degraded}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
