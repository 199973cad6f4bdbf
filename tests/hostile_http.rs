//! The daemon against hostile HTTP clients (the probe that found it: about a thousand idle
//! local connections made every backend call fail with "Too many open files"). The daemon
//! runs with an open-files limit of 300 set from outside (`prlimit`), well under the 2,000
//! connections the test opens to its API and its router: the connections over the limits
//! are refused, the daemon's descriptors (counted in `/proc/PID/fd`) stay bounded, the
//! pipeline keeps ticking and calling its backend, and the API answers once the idle
//! connections have timed out while the test still holds them. Then a client that trickles
//! its headers is closed after the header timeout, a 100 MB body to a 1 MiB limit is
//! refused with 413 without the daemon's resident memory growing, and a daemon out of
//! descriptors retries its accepts without spinning and logs that once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, config_text, free_port, http_get, metric, run_command, scratch, wait_until,
};

/// Connection limits and timeouts of the daemon under test.
const API_MAX: usize = 50;
const ROUTER_MAX: usize = 50;

/// The lifecycle test's configuration with short timeouts, small connection limits and a
/// router on `router_port`.
fn hostile_config(port: u16, router_port: u16, state_dir: &Path) -> String {
    let text = config_text(port, state_dir, 40).replace(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nmax_connections = {API_MAX}\n\
             header_timeout_s = 1\nidle_timeout_s = 2\n"
        ),
    );
    format!(
        "{text}[pipeline.router]\nlisten = \"127.0.0.1:{router_port}\"\nready_wait_ms = 0\n\
         max_body_bytes = 1048576\nmax_connections = {ROUTER_MAX}\nheader_timeout_ms = 1000\n\
         idle_timeout_ms = 2000\n"
    )
}

/// Starts the daemon; with `soft_limit`, under `prlimit` with that soft limit on open files
/// (the hard one unchanged).
fn start(name: &str, soft_limit: Option<u64>) -> (Daemon, u16, u16, std::path::PathBuf) {
    let dir = scratch(name);
    let (port, router_port) = (free_port(), free_port());
    let config = dir.join("infadaptd.toml");
    std::fs::write(
        &config,
        hostile_config(port, router_port, &dir.join("state")),
    )
    .expect("config");
    let mut command = run_command(&[], &config);
    if let Some(soft) = soft_limit {
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let mut wrapped = Command::new("prlimit");
        wrapped
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        command = wrapped;
    }
    let daemon = Daemon::spawn(command);
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_get(port, "/healthz").is_some_and(|(code, _)| code == 200)
        }),
        "the daemon did not become healthy:\n{}",
        daemon.log()
    );
    (daemon, port, router_port, dir)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(usize::MAX)
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// POSTs a body of `length` bytes announced, `send` of them sent, to the router of
/// `port`, reading the answer while sending: the bytes the daemon took before it closed,
/// and the answer.
fn post_body(port: u16, length: usize, send: usize) -> (usize, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = stream.try_clone().expect("clone");
    let reading = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the daemon closes (a reset after the answer ends it too).
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    write!(
        stream,
        "POST /v2/models/resnet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    )
    .expect("head");
    let chunk = vec![b'x'; 1 << 16];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        // The daemon stops reading past the limit and closes.
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let answer = reading.join().expect("reader");
    (sent, answer)
}

/// `/metrics` of the daemon.
fn metrics(port: u16) -> String {
    http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[test]
fn idle_connections_over_the_limits_leave_the_daemons_descriptors_bounded() {
    let (daemon, port, router_port, _dir) = start("hostile-idle", None);
    let pid = daemon.pid();
    // The probe's situation: a daemon that may hold 300 descriptors in all.
    let limited = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=300:300"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(limited.success());
    // This process holds 2,000 sockets.
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if soft < 4096 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(8192),
            hard,
        )
        .expect("raise this test's open-files limit");
    }
    let ticks = |text: &str| metric(text, "infadapt_ticks_total{pipeline=\"resnet\"}");
    let ticks_before = ticks(&metrics(port)).expect("ticks");
    let calls_before = metric(
        &metrics(port),
        "infadapt_plugin_calls_total{pipeline=\"resnet\"}",
    )
    .expect("calls");
    let baseline = open_fds(pid);

    let started = Instant::now();
    let mut idle = Vec::new();
    for target in [port, router_port] {
        for _ in 0..1000 {
            idle.push(TcpStream::connect(("127.0.0.1", target)).expect("connect"));
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    // While they are held: the daemon's descriptors stay within the limits.
    let mut most = 0;
    for _ in 0..10 {
        most = most.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "daemon fds: {baseline} before, at most {most} with 2000 connections held \
         (opened in {connect_s:.2} s)"
    );
    assert!(
        most <= baseline + API_MAX + ROUTER_MAX + 10,
        "{most} descriptors open (baseline {baseline})"
    );
    // A connection over the limit is closed at once, after a 503 when it fits.
    for stream in idle.iter_mut().rev().take(5) {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
    }

    // The held idle connections time out (1 s); then the API and the router answer while
    // this process still holds all 2,000 sockets.
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(port, "/healthz").is_some_and(|(code, _)| code == 200)
        }),
        "the API did not answer:\n{}",
        daemon.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(router_port, "/v2/health/live").is_some_and(|(code, _)| code == 200)
        }),
        "the router did not answer:\n{}",
        daemon.log()
    );
    // Descriptors back to where they were, give or take the connections just served.
    assert!(
        wait_until(Duration::from_secs(10), || open_fds(pid) <= baseline + 5),
        "{} descriptors open (baseline {baseline})",
        open_fds(pid)
    );
    eprintln!(
        "daemon fds once the idle ones timed out: {} ({} s after the first connect)",
        open_fds(pid),
        started.elapsed().as_secs()
    );

    // The pipeline did not degrade: it kept ticking and its backend calls kept succeeding.
    let calls = |text: &str| metric(text, "infadapt_plugin_calls_total{pipeline=\"resnet\"}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let text = metrics(port);
            ticks(&text).is_some_and(|t| t >= ticks_before + 2.0)
                && calls(&text).is_some_and(|c| c > calls_before)
        }),
        "the pipeline stopped ticking:\n{}",
        daemon.log()
    );
    let text = metrics(port);
    assert_eq!(
        metric(&text, "infadapt_degraded{pipeline=\"resnet\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "infadapt_plugin_errors_total{pipeline=\"resnet\"}"),
        Some(0.0)
    );
    // Every connection was either served or refused at once; with a 1 s header timeout
    // some of the later ones found a free slot.
    for (server, series) in [
        ("api", "server=\"api\"".to_owned()),
        ("router", "server=\"router\",pipeline=\"resnet\"".to_owned()),
    ] {
        let count = |family: &str| {
            metric(
                &text,
                &format!("infadapt_http_connections_{family}{{{series}}}"),
            )
            .unwrap_or(0.0)
        };
        let (accepted, refused) = (count("accepted_total"), count("refused_total"));
        eprintln!("{server}: {accepted} connections served, {refused} refused");
        assert!(
            accepted + refused >= 1000.0,
            "{server}: {accepted} + {refused}"
        );
        assert!(refused >= 100.0, "{server}: only {refused} refused");
    }
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
    drop(idle);
}

#[test]
fn a_slow_client_is_closed_and_a_huge_body_is_refused_with_bounded_memory() {
    // Started with a soft limit of 512 open files: the daemon raises it to the hard limit.
    let (daemon, port, router_port, _dir) = start("hostile-slow", Some(512));
    let pid = daemon.pid();
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let raised = hard.min(1 << 20);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some(raised.to_string().as_str()),
        "{open_files}"
    );
    assert!(
        daemon
            .log()
            .contains(&format!("open files limit soft={raised}")),
        "{}",
        daemon.log()
    );

    // Slowloris: the head one byte every 100 ms; closed after the 1 s header timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "s".repeat(100)
    );
    let mut closed_after = None;
    for byte in head.bytes() {
        if slow.write_all(&[byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Closed (perhaps after a 408), but never answered.
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(!text.contains(" 200 "), "{text}");
                closed_after = Some(started.elapsed());
                break;
            }
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("the slow client was never closed");
    eprintln!(
        "slow client closed after {:.2} s",
        closed_after.as_secs_f64()
    );
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );

    // 100 MB to the router's 1 MiB limit: 413, and the daemon's memory does not grow.
    let before = resident_kib(pid);
    let total = 100_000_000;
    let (sent, answer) = post_body(router_port, total, total);
    let after = resident_kib(pid);
    eprintln!(
        "100 MB body: {sent} bytes sent before the close; daemon RSS {before} kB before, \
         {after} kB after"
    );
    assert!(sent < total, "the daemon read the whole body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    assert_eq!(http_get(port, "/healthz").map(|(code, _)| code), Some(200));
}

/// The lowest descriptor number the process `pid` does not use: with its open-files limit
/// set to this, it cannot open anything.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// User and system CPU time of `pid`, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let number = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    number(11) + number(12)
}

#[test]
fn out_of_descriptors_the_accept_loop_backs_off_and_logs_once() {
    let (daemon, port, _router_port, _dir) = start("hostile-emfile", None);
    let pid = daemon.pid();
    let limit = lowest_free_fd(pid);
    // The soft limit only: the hard one stays, so that the soft one can be raised again.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("hard limit")
        .to_owned();
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{hard}"),
        ])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success());
    // A client waits in the listener's queue; every accept fails with EMFILE.
    let mut waiting = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        waiting,
        "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu_used = cpu_ticks(pid) - cpu_before;
    let log = daemon.log();
    let logged = log.matches("cannot accept connections").count();
    eprintln!("out of descriptors for 2 s: {cpu_used} CPU ticks, {logged} log line(s)");
    assert_eq!(logged, 1, "{log}");
    assert!(log.contains("Too many open files"), "{log}");
    // Not spinning: a spinning loop takes about 2 s of CPU (200 ticks at 100 Hz).
    assert!(cpu_used < 50, "{cpu_used} ticks of CPU in 2 s");
    // Descriptors back: the waiting client is served.
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile=1024:{hard}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success());
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = waiting.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(http_get(port, "/healthz").map(|(code, _)| code), Some(200));
}
