//! Running the daemon as a service in the integration tests: its command line, a started
//! daemon with its log, the notification socket, plain HTTP requests to its API and the
//! values read from them, `validate`, and the scratch directories of these tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An empty scratch directory `infadapt-daemon-PID-NAME` (see `infadapt_testkit::scratch_dir`).
pub(crate) fn scratch(name: &str) -> PathBuf {
    super::scratch_dir("daemon", name)
}

/// `infadaptd run EXTRA --config FILE` as started without a service manager: plain logs at
/// `info`, no notification socket, watchdog or journal.
pub(crate) fn run_command(extra: &[&str], config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infadaptd"));
    command
        .arg("run")
        .args(extra)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    command
}

/// A running daemon with its stderr collected.
pub(crate) struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub(crate) fn start(config: &Path, notify: &Path) -> Daemon {
        Daemon::start_with_watchdog(config, notify, None)
    }

    /// Starts the daemon; `watchdog_usec` sets the watchdog interval the service manager
    /// would ask for.
    pub(crate) fn start_with_watchdog(
        config: &Path,
        notify: &Path,
        watchdog_usec: Option<u64>,
    ) -> Daemon {
        let mut command = run_command(&[], config);
        command.env("NOTIFY_SOCKET", notify);
        if let Some(usec) = watchdog_usec {
            command.env("WATCHDOG_USEC", usec.to_string());
        }
        Daemon::spawn(command)
    }

    /// Starts `command` (an `infadaptd run` set up by the caller) with its stderr collected.
    pub(crate) fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start infadaptd");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    pub(crate) fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Writes `text` to `config`, sends SIGHUP and waits until the daemon reports that it
    /// took the new settings in place.
    pub(crate) fn reload_in_place(&self, config: &Path, text: &str) {
        std::fs::write(config, text).expect("write the new config");
        self.signal("HUP");
        assert!(
            self.wait_log("reconfigured in place", Duration::from_secs(10)),
            "not reconfigured in place:\n{}",
            self.log()
        );
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit; the exit code, or `None` on timeout (the process is then killed).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// Waits until the notification socket has received a message containing `needle`.
pub(crate) fn wait_notify(socket: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < timeout {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = message.lines().any(|l| l == needle);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
    panic!("no {needle} on the notification socket within {timeout:?}; saw {seen:?}");
}

/// Runs `infadaptd validate --config FILE`.
pub(crate) fn run_validate(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .expect("run infadaptd validate")
}

pub(crate) fn status_of(port: u16) -> Option<serde_json::Value> {
    http_get(port, "/v1/status").and_then(|(_, body)| serde_json::from_str(&body).ok())
}

pub(crate) fn pipeline_status<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> &'a serde_json::Value {
    status["pipelines"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// The value of the metric line starting with `series` (name and labels).
pub(crate) fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A service-manager notification socket read by a thread until dropped (a socket nobody
/// reads fills up, and the daemon's notifications then block).
pub(crate) struct NotifySink {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySink {
    pub(crate) fn bind(path: &Path) -> NotifySink {
        let socket = UnixDatagram::bind(path).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = socket.recv(&mut buffer);
            }
        });
        NotifySink {
            stop,
            reader: Some(reader),
        }
    }
}

impl Drop for NotifySink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
