//! Crash safety of `infadaptd run`: unreadable state files (garbage, truncated, empty) are
//! reported, moved aside and replaced, never a start failure; and a daemon killed with
//! SIGKILL at random moments (mid-tick, mid-apply, mid state-write) restarts every time,
//! reaches READY, serves decisions and leaves only state files that parse.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Daemon, config_text, free_port, http_get, scratch, wait_notify, wait_until};

/// Every `*.json` file in `dir` parses as JSON with `"schema": 1`; their names.
fn state_files_parse(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("state dir")
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read state");
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} does not parse ({e}):\n{text}"));
        assert_eq!(value["schema"], 1, "{name}: {text}");
        names.push(name);
    }
    names
}

fn notify_socket(path: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    socket
}

/// Waits for the first decision served by the API.
fn serves_decisions(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        http_get(port, "/v1/decisions")
            .is_some_and(|(code, b)| code == 200 && b.contains("\"tick\":"))
    })
}

#[test]
fn unreadable_state_files_are_reported_moved_aside_and_replaced() {
    let dir = scratch("corrupt-state");
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    std::fs::write(&config, config_text(port, &state_dir, 60)).expect("config");
    for (file, bytes) in [
        (
            "pipeline-resnet.json",
            "{\"schema\": 1, \"pipeline\": \"resnet\", \"plan\": {\"st",
        ),
        ("paused.json", ""),
    ] {
        std::fs::write(state_dir.join(file), bytes).expect("garbage");
    }
    let notify_path = dir.join("notify.sock");
    let notify = notify_socket(&notify_path);
    let mut daemon = Daemon::start(&config, &notify_path);
    wait_notify(&notify, "READY=1", Duration::from_secs(20));
    assert!(
        serves_decisions(port, Duration::from_secs(15)),
        "no decisions; log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    for needle in [
        "pipeline-resnet.json: not a state file (the file ends early",
        "paused.json: not a state file (the file is empty)",
        "moved aside to",
    ] {
        assert!(log.contains(needle), "no `{needle}` in the log:\n{log}");
    }
    // A good state file replaced the bad one at once; both bad ones are kept beside.
    assert!(
        wait_until(Duration::from_secs(10), || state_dir
            .join("pipeline-resnet.json")
            .exists()),
        "no new state file; log:\n{log}"
    );
    let parsed = state_files_parse(&state_dir);
    assert!(
        parsed.contains(&"pipeline-resnet.json".to_owned()),
        "{parsed:?}"
    );
    let kept: Vec<String> = std::fs::read_dir(&state_dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().any(|n| n.starts_with("paused.json.corrupt-")),
        "{kept:?}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    state_files_parse(&state_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// xorshift64*: the random kill moments, reproducible from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn sigkill_at_random_moments_then_restart_recovers_every_time() {
    const KILLS: usize = 10;
    const SEED: u64 = 0x5eed_c0de_2026;
    println!("sigkill test: seed {SEED:#x}, {KILLS} kills");
    let dir = scratch("sigkill");
    let state_dir = dir.join("state");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    // A short period with a burst every few seconds: ticks, applies and state writes all
    // the time, so that kills land in the middle of them.
    let text = config_text(port, &state_dir, 200)
        .replace("period_s = 1\n", "period_s = 0.2\n")
        .replace("day_s = 60", "day_s = 4");
    std::fs::write(&config, text).expect("config");
    let mut rng = SEED;
    let mut restarts = 0;
    let mut applies_before_kill = Vec::new();
    for kill in 0..=KILLS {
        let notify_path = dir.join(format!("notify-{kill}.sock"));
        let notify = notify_socket(&notify_path);
        let started = Instant::now();
        let mut daemon = Daemon::start(&config, &notify_path);
        wait_notify(&notify, "READY=1", Duration::from_secs(20));
        assert!(
            serves_decisions(port, Duration::from_secs(15)),
            "start {kill}: no decisions; log:\n{}",
            daemon.log()
        );
        if kill > 0 {
            restarts += 1;
        }
        // A kill never leaves a file a restart cannot read.
        let log = daemon.log();
        assert!(!log.contains("not a state file"), "start {kill}:\n{log}");
        assert!(
            !log.contains("cannot read saved state"),
            "start {kill}:\n{log}"
        );
        if kill == KILLS {
            daemon.signal("TERM");
            assert_eq!(
                daemon.wait_exit(Duration::from_secs(15)),
                Some(0),
                "{}",
                daemon.log()
            );
            break;
        }
        let delay = Duration::from_millis(next(&mut rng) % 1500);
        std::thread::sleep(delay);
        daemon.signal("KILL");
        // Killed by the signal: no exit code.
        assert_eq!(daemon.wait_exit(Duration::from_secs(5)), None, "killed");
        let applies = daemon
            .log()
            .lines()
            .filter(|l| l.contains(" applied") && !l.contains("not applied"))
            .count();
        applies_before_kill.push(applies);
        println!(
            "kill {}: {} ms after READY and a decision ({:.1} s after start)",
            kill + 1,
            delay.as_millis(),
            started.elapsed().as_secs_f64()
        );
        let files = state_files_parse(&state_dir);
        assert!(
            files.contains(&"pipeline-resnet.json".to_owned()) || kill == 0,
            "kill {}: state files {files:?}",
            kill + 1
        );
        let _ = std::fs::remove_file(&notify_path);
    }
    println!(
        "sigkill test: {KILLS} kills, {restarts} restarts reached READY and served decisions; \
         apply log lines per run before its kill: {applies_before_kill:?}"
    );
    assert_eq!(restarts, KILLS);
    let _ = std::fs::remove_dir_all(&dir);
}
