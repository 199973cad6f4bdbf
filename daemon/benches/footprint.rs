//! Footprint of the service: starts the real (optimised) `infadaptd` with three pipelines on
//! the simulated backend and the HTTP API on, then prints resident memory (VmRSS, VmHWM from
//! `/proc/PID/status`), the p99 tick duration (from `/v1/status`) and the CPU share over a
//! quiet window (utime + stime from `/proc/PID/stat`), once at a 1 s period and once at the
//! default 10 s period. Targets: RSS ≤ 25 MB, tick p99 ≤ 50 ms, idle CPU ≤ 1 %.
//!
//! Run with `cargo bench -p infadaptd --bench footprint` (about 45 s; `FOOTPRINT_WINDOW_S`
//! changes the CPU window, default 10). `FOOTPRINT_SOAK_S=600` instead runs
//! `FOOTPRINT_PIPELINES` (default 50) pipelines at a 1 s period for that long and prints RSS,
//! open descriptors and tick p99 at ten points. Under `cargo test` it only says so and returns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSS_TARGET_MB: f64 = 25.0;
const TICK_P99_TARGET_MS: f64 = 50.0;
const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;
const PIPELINES: usize = 3;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The packaged default's `[[pipeline]]`, `pipelines` times under different names.
fn config_text(port: u16, period_s: u32, state_dir: &Path, pipelines: usize) -> String {
    let packaged = std::fs::read_to_string(repo_root().join("etc/infadaptd.toml"))
        .expect("read etc/infadaptd.toml");
    let start = packaged
        .find("[[pipeline]]")
        .expect("the packaged default has a pipeline");
    let catalog = repo_root().join("etc/catalogs/resnet-synthetic.toml");
    let pipeline = packaged[start..].replace(
        "\"catalogs/resnet-synthetic.toml\"",
        &format!("\"{}\"", catalog.display()),
    );
    let mut text = format!(
        "[daemon]\nperiod_s = {period_s}\nstate_dir = \"{}\"\nlog = \"warn\"\n\
         [daemon.http]\nlisten = \"127.0.0.1:{port}\"\n\n",
        state_dir.display()
    );
    for i in 0..pipelines {
        text.push_str(&pipeline.replace("name = \"resnet\"", &format!("name = \"resnet-{i}\"")));
        text.push('\n');
    }
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// `VmRSS` and `VmHWM` in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may contain spaces: count after the last `)`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let number = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    number(11) + number(12)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Worst p99 tick duration over the pipelines and the ticks counted, from `/v1/status`.
fn tick_p99_ms(port: u16) -> (f64, u64) {
    let status: serde_json::Value = http_get(port, "/v1/status")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default();
    let pipelines = status["pipelines"].as_array().cloned().unwrap_or_default();
    let p99 = pipelines
        .iter()
        .filter_map(|p| p["tick_times"]["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    let ticks = pipelines
        .iter()
        .filter_map(|p| p["tick_times"]["count"].as_u64())
        .sum();
    (p99, ticks)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `infadaptd run --config CONFIG` quietly and waits up to `within` for its API on
/// `port` to answer.
fn start(config: &Path, port: u16, within: Duration) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start infadaptd");
    let daemon = Running(child);
    let started = Instant::now();
    while http_get(port, "/healthz").is_none() {
        assert!(started.elapsed() < within, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "OVER TARGET" }
}

fn measure(period_s: u32, warm_up: Duration, window: Duration) {
    let dir = std::env::temp_dir().join(format!(
        "infadapt-footprint-{}-{period_s}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(
        &config,
        config_text(port, period_s, &dir.join("state"), PIPELINES),
    )
    .expect("config");
    let started = Instant::now();
    let daemon = start(&config, port, Duration::from_secs(20));
    let pid = daemon.0.id();
    std::thread::sleep(warm_up.saturating_sub(started.elapsed()));

    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let window_start = Instant::now();
    std::thread::sleep(window);
    let cpu_s = cpu_ticks(pid).saturating_sub(before) as f64 / hz;
    let cpu_percent = 100.0 * cpu_s / window_start.elapsed().as_secs_f64();
    let (rss, hwm) = memory_mb(pid);
    let (p99, ticks) = tick_p99_ms(port);

    println!(
        "{PIPELINES} sim pipelines, period {period_s} s, HTTP on ({:.0} s warm-up, {:.0} s window):",
        warm_up.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "  RSS {rss:.1} MB (peak {hwm:.1} MB)   target <= {RSS_TARGET_MB} MB   {}",
        verdict(hwm <= RSS_TARGET_MB)
    );
    println!(
        "  tick p99 {p99:.1} ms over {ticks} ticks   target <= {TICK_P99_TARGET_MS} ms   {}",
        verdict(p99 <= TICK_P99_TARGET_MS)
    );
    let cpu_target = if period_s >= 10 {
        verdict(cpu_percent <= IDLE_CPU_TARGET_PERCENT)
    } else {
        "(target applies at a 10 s period)"
    };
    println!(
        "  CPU {cpu_percent:.2} % ({cpu_s:.2} s in {:.0} s)   target <= {IDLE_CPU_TARGET_PERCENT} %   {cpu_target}",
        window_start.elapsed().as_secs_f64()
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}

/// Open descriptors of `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Runs `pipelines` simulated pipelines at a 1 s period for `duration` and prints RSS,
/// open descriptors and the worst tick p99 at ten points, then their growth.
fn soak(pipelines: usize, duration: Duration) {
    let dir = std::env::temp_dir().join(format!("infadapt-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let port = free_port();
    let config = dir.join("infadaptd.toml");
    std::fs::write(&config, config_text(port, 1, &dir.join("state"), pipelines)).expect("config");
    let started = Instant::now();
    let daemon = start(&config, port, Duration::from_secs(60));
    let pid = daemon.0.id();
    println!(
        "{pipelines} sim pipelines, period 1 s, HTTP on, {:.0} s:",
        duration.as_secs_f64()
    );
    println!("  at s    RSS MB   descriptors   tick p99 ms   ticks");
    let mut samples = Vec::new();
    for k in 1..=10u32 {
        std::thread::sleep((started + duration * k / 10).saturating_duration_since(Instant::now()));
        let (rss, _) = memory_mb(pid);
        let fds = descriptors(pid);
        let (p99, ticks) = tick_p99_ms(port);
        println!(
            "  {:>5.0} {rss:>9.1} {fds:>13} {p99:>13.1} {ticks:>7}",
            started.elapsed().as_secs_f64()
        );
        samples.push((rss, fds));
    }
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        println!(
            "  from the second sample to the last: RSS {:+.1} MB, descriptors {:+}",
            last.0 - first.0,
            last.1 as i64 - first.1 as i64
        );
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("footprint: run it with `cargo bench -p infadaptd --bench footprint`");
        return;
    }
    let window = Duration::from_secs_f64(
        std::env::var("FOOTPRINT_WINDOW_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v: &f64| *v > 0.0)
            .unwrap_or(10.0),
    );
    let soak_s: f64 = std::env::var("FOOTPRINT_SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if soak_s > 0.0 {
        let pipelines = std::env::var("FOOTPRINT_PIPELINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        soak(pipelines, Duration::from_secs_f64(soak_s));
        return;
    }
    measure(1, Duration::from_secs(5), window);
    // The first tick comes one period after the start: warm up past it.
    measure(10, Duration::from_secs(12), window);
}
