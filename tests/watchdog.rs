//! The watchdog keep-alive follows the control loops: `WATCHDOG=1` keeps arriving while a
//! plugin call hangs (the guard cuts it off and its pipeline ticks on, degraded), stops when a
//! pipeline's loop is truly stuck (a state write blocked on a FIFO, as on a hung filesystem,
//! which no time limit guards), the stuck pipeline is named in the log, and the keep-alives
//! resume once the loop ticks again.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, free_port, pipeline_status, pipeline_text, scratch, status_of, wait_notify, wait_until,
};

/// Collects the `WATCHDOG=1` arrivals on `socket` in a thread until dropped.
struct KeepAlives {
    seen: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl KeepAlives {
    fn collect(socket: UnixDatagram) -> KeepAlives {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, done) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf)
                    && String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "WATCHDOG=1")
                {
                    sink.lock().expect("keep-alives").push(Instant::now());
                }
            }
        });
        KeepAlives { seen, stop }
    }

    /// The arrivals after `since`.
    fn after(&self, since: Instant) -> Vec<Instant> {
        let seen = self.seen.lock().expect("keep-alives");
        seen.iter().copied().filter(|t| *t > since).collect()
    }
}

impl Drop for KeepAlives {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The longest gap between consecutive arrivals (and the ends of the window).
fn longest_gap(from: Instant, arrivals: &[Instant], to: Instant) -> Duration {
    let mut points = vec![from];
    points.extend_from_slice(arrivals);
    points.push(to);
    points
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

#[test]
fn keep_alives_stop_when_a_control_loop_is_stuck_but_not_for_a_hung_plugin_call() {
    use crate::plugins::{TempDir, install_rust_plugin};
    let plugin_dir = TempDir::new("watchdog");
    install_rust_plugin(
        &plugin_dir,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let dir = scratch("watchdog");
    let state_dir = dir.join("state");
    let config = dir.join("infadaptd.toml");
    let port = free_port();
    // Period 1 s, backend calls limited to 1 s: a loop is stuck after
    // max(2 × 1 s, 5 s) + 4 × 1 s = 9 s without a finished tick.
    let mut text = format!(
        "[daemon]\nperiod_s = 1\nstate_dir = \"{}\"\nplugin_dirs = [\"{}\"]\ngrace_s = 3\n\
         backend_timeout_s = 1\n[daemon.http]\nlisten = \"127.0.0.1:{port}\"\n",
        state_dir.display(),
        plugin_dir.path().display()
    );
    // Bursty load and no damping, so that plans (and state writes) change every few ticks.
    text.push_str(&pipeline_text(
        "resnet",
        "type = \"sim\"\npeak_rps = 200\nday_s = 60\nbursts_per_hour = 720\n\
         [pipeline.damping]\nenabled = false",
    ));
    text.push_str(&pipeline_text(
        "hung-plugin",
        "type = \"misbehave\"\nobserve = \"hang\"\nhang_ms = 60000",
    ));
    std::fs::write(&config, text).expect("config");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // The service manager asks for a keep-alive every second: the daemon sends one every 0.5 s.
    let mut daemon = Daemon::start_with_watchdog(&config, &notify_path, Some(1_000_000));
    wait_notify(&notify, "READY=1", Duration::from_secs(20));
    let keep_alives = KeepAlives::collect(notify);

    // Healthy loops and a hung plugin call: the keep-alives come on, longer than the limit.
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let to = Instant::now();
    let healthy = keep_alives.after(from);
    let gap = longest_gap(from, &healthy, to);
    println!(
        "watchdog: {} keep-alives in {:.1} s with a hung plugin call, longest gap {:.2} s",
        healthy.len(),
        (to - from).as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        healthy.len() >= 16,
        "{} keep-alives; log:\n{}",
        healthy.len(),
        daemon.log()
    );
    assert!(
        gap < Duration::from_secs(2),
        "gap {gap:?}; log:\n{}",
        daemon.log()
    );
    let status = status_of(port).expect("status");
    assert_eq!(
        pipeline_status(&status, "hung-plugin")["plugin"]["degraded"]["kind"],
        "timeout",
        "the plugin call did not hang: {status}"
    );
    assert!(!daemon.log().contains("is stuck"), "{}", daemon.log());

    // The next state write of `resnet` blocks in open(2) on a FIFO: its loop hangs.
    let fifo = state_dir.join("pipeline-resnet.json.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let needle = "the control loop of pipeline `resnet` is stuck";
    assert!(
        daemon.wait_log(needle, Duration::from_secs(60)),
        "the stuck loop was not named; log:\n{}",
        daemon.log()
    );
    let named = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let late = keep_alives.after(named);
    assert!(late.is_empty(), "{} keep-alives while stuck", late.len());
    let log = daemon.log();
    assert_eq!(log.matches(needle).count(), 1, "named once:\n{log}");
    assert!(!log.contains("pipeline `hung-plugin` is stuck"), "{log}");

    // Unblocked (the write then fails on the FIFO and is logged): the loop ticks again.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::open(&fifo).expect("open the FIFO");
            let _ = std::fs::remove_file(&fifo);
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut file, &mut sink);
        })
    };
    assert!(
        daemon.wait_log("pipeline `resnet` ticks again", Duration::from_secs(15)),
        "{}",
        daemon.log()
    );
    let resumed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !keep_alives
            .after(resumed)
            .is_empty()),
        "no keep-alive after the loop recovered"
    );
    let _ = reader.join();
    let all = keep_alives.after(from);
    println!(
        "watchdog: keep-alives withheld for {:.1} s while the loop was stuck",
        longest_gap(from, &all, Instant::now()).as_secs_f64()
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
