//! What users read never shows Rust `Debug` output: the demo's decision lines and summary,
//! `plan`'s table and its LP file header, `simulate`'s report, and the service's log (dry-run
//! decisions, a reload) and API answers are checked for the shapes `{:?}` and tracing's `?`
//! print (`Plan { stages: [StagePlan …`, `Some(…)`, `LatencySlo`, `accuracy mode Sum`).

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, Daemon, free_port, http_get, repo_root, scratch};

fn infadaptd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run infadaptd")
}

/// Both output streams of a run that must succeed.
fn text_of(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stdout}\n{stderr}");
    format!("{stdout}\n{stderr}")
}

/// Fragments that only `Debug` formatting produces.
const DEBUG_FRAGMENTS: [&str; 10] = [
    "Plan {",
    "StagePlan",
    "Assignment {",
    "Some(",
    "None",
    "Capacity {",
    "[\"",
    "\\\"",
    "{ ",
    " }",
];

/// Enum variant names that `Debug` prints bare; user text says them in words.
const DEBUG_WORDS: [&str; 6] = [
    "Sum",
    "Product",
    "LatencySlo",
    "HostCores",
    "HostGpuMemory",
    "Capacity",
];

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Fails with the offending line when `text` shows `Debug` output; `json` skips the
/// fragments JSON itself may contain (braces, escaped quotes).
fn assert_no_debug(what: &str, text: &str, json: bool) {
    for line in text.lines() {
        for fragment in DEBUG_FRAGMENTS {
            if json && ["{ ", " }", "\\\"", "[\""].contains(&fragment) {
                continue;
            }
            assert!(
                !line.contains(fragment),
                "{what}: `{fragment}` (Debug output) in:\n{line}"
            );
        }
        for word in DEBUG_WORDS {
            assert!(
                !has_word(line, word),
                "{what}: the bare enum name `{word}` in:\n{line}"
            );
        }
    }
}

#[test]
fn the_checker_catches_debug_output() {
    let plan = "plan Plan { stages: [StagePlan { stage: \"c\" }] }";
    for (text, json) in [
        (plan, false),
        ("binding: LatencySlo", false),
        ("\\ load 1 rps, accuracy mode Sum, objective", false),
        ("limit_mb=Some(1024.0)", false),
        ("actions=[\"started\"]", false),
        ("{\"binding\":[\"HostCores\"]}", true),
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_debug("sample", text, json));
        assert!(caught.is_err(), "not caught: {text}");
    }
    assert_no_debug(
        "sample",
        "binding: end-to-end latency SLO, capacity of stage classify; summed accuracy",
        false,
    );
}

#[test]
fn the_demo_plan_and_simulate_print_no_debug_output() {
    let demo = text_of(
        &infadaptd(&["run", "--demo", "--duration", "120", "--speed", "2000"]),
        "demo",
    );
    assert!(demo.contains("plan classify: resnet"), "{demo}");
    assert_no_debug("run --demo", &demo, false);

    let dir = scratch("no-debug-plan");
    for example in ["resnet-service.toml", "video-pipeline.toml"] {
        let problem = repo_root().join("etc/examples").join(example);
        let lp = dir.join(format!("{example}.lp"));
        let out = infadaptd(&[
            "plan",
            "--problem",
            problem.to_str().expect("UTF-8 path"),
            "--export-lp",
            lp.to_str().expect("UTF-8 path"),
        ]);
        let table = text_of(&out, example);
        assert!(table.contains("objective"), "{table}");
        assert_no_debug(&format!("plan {example}"), &table, false);
        let model = std::fs::read_to_string(&lp).expect("LP written");
        let header: String = model
            .lines()
            .filter(|l| l.starts_with('\\'))
            .collect::<Vec<_>>()
            .join("\n");
        let mode = if example.starts_with("video") {
            "product"
        } else {
            "sum"
        };
        assert!(
            header.contains(&format!("accuracy mode {mode},")),
            "{example}: {header}"
        );
        assert_no_debug(&format!("LP header of {example}"), &header, false);
    }
    // Infeasible: the binding constraint is said in words.
    let problem = repo_root().join("etc/examples/resnet-service.toml");
    let out = infadaptd(&[
        "plan",
        "--problem",
        problem.to_str().expect("UTF-8 path"),
        "--load",
        "100000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let infeasible = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_debug("infeasible plan", &infeasible, false);
    let _ = std::fs::remove_dir_all(&dir);

    let simulated = text_of(
        &infadaptd(&["simulate", "--seconds", "120", "--warmup", "0"]),
        "simulate",
    );
    assert!(simulated.contains("SLO viol"), "{simulated}");
    assert_no_debug("simulate", &simulated, false);
}

#[test]
fn the_service_log_and_api_show_no_debug_output() {
    let dir = scratch("no-debug-service");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    let text = support::config_text(port, &dir.join("state"), 120);
    std::fs::write(&config, &text).expect("config");
    let mut service = Daemon::spawn(support::run_command(&["--dry-run"], &config));
    assert!(
        service.wait_log("dry run: would apply", Duration::from_secs(30)),
        "no dry-run decision:\n{}",
        service.log()
    );
    let reloaded = text.replace("time_limit_ms = 200", "time_limit_ms = 300");
    assert_ne!(reloaded, text, "the solver line moved");
    service.reload_in_place(&config, &reloaded);
    assert!(
        service.wait_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        service.log()
    );
    let mut api = String::new();
    for path in ["/v1/status", "/v1/decisions?limit=5"] {
        let (code, body) = http_get(port, path).unwrap_or_else(|| panic!("{path} answers"));
        assert_eq!(code, 200, "{path}: {body}");
        api.push_str(&body);
        api.push('\n');
    }
    service.signal("TERM");
    assert_eq!(
        service.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        service.log()
    );
    let log = service.log();
    let would_apply = log
        .lines()
        .find(|l| l.contains("dry run: would apply"))
        .expect("dry-run line");
    assert!(
        would_apply.contains("plan=classify: resnet"),
        "{would_apply}"
    );
    let reload = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .expect("reload line");
    assert!(
        reload.contains("restarted=none") && reload.contains("reconfigured=resnet"),
        "{reload}"
    );
    assert_no_debug("service log", &log, false);
    assert_no_debug("HTTP API", &api, true);
    let _ = std::fs::remove_dir_all(&dir);
}
