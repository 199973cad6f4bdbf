//! What the process backend asks of the operating system: process identity from `/proc`
//! (start time against PID reuse, zombies), signals to a worker's process group, CPU
//! affinity of every thread of a worker, free ports and health checks over HTTP.

use std::net::TcpListener;
use std::time::Duration;

use infadapt_plugin_support::http::{ClientOptions, HttpClient};
use nix::errno::Errno;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::ProcessError;

/// State letter and start time (clock ticks after boot) of a process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`; `None` when the process does not exist (or cannot be read).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after `)`.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Whether `pid` is a live (not zombie, not dead) process started at `start_ticks`.
pub fn is_same_live_process(pid: i32, start_ticks: u64) -> bool {
    match proc_stat(pid) {
        Some(stat) => stat.start_ticks == start_ticks && !matches!(stat.state, 'Z' | 'X' | 'x'),
        None => false,
    }
}

/// The kernel's boot id: recorded workers from another boot are not ours.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// How an adopted (not our child) or child process ended, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// Still running.
    Running,
    /// Ended; the text says how when it is known.
    Exited(String),
}

/// Reaps `pid` if it is our child and has exited; for other processes looks at `/proc`.
pub fn reap(pid: i32, start_ticks: u64) -> Reaped {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Reaped::Running,
        Ok(WaitStatus::Exited(_, code)) => Reaped::Exited(format!("exited with status {code}")),
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            Reaped::Exited(format!("killed by {}", signal.as_str()))
        }
        Ok(_) => Reaped::Running,
        // Not our child (adopted after a restart): its parent reaps it; look at /proc.
        Err(_) => {
            if is_same_live_process(pid, start_ticks) {
                Reaped::Running
            } else {
                Reaped::Exited("gone (exit status unknown: not a child of this daemon)".into())
            }
        }
    }
}

/// Sends `signal` to the worker's process group (it leads its own), falling back to the
/// process alone; a process that is already gone is not an error.
pub fn signal_worker(pid: i32, signal: Signal) -> Result<(), ProcessError> {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(_) => match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal {
                signal,
                pid,
                source,
            }),
        },
    }
}

/// CPUs this process may run on (its own affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => std::thread::available_parallelism()
            .map(|n| (0..n.get()).collect())
            .unwrap_or_else(|_| vec![0]),
    }
}

/// CPU numbers as the `{cpus}` placeholder writes them: `0,1,3`.
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Pins every thread of `pid` to `cpus`: the main thread first (threads it starts later
/// inherit the mask), then each task listed in `/proc/PID/task`.
pub fn pin(pid: i32, cpus: &[usize]) -> Result<(), ProcessError> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .map_err(|source| ProcessError::AffinityMask { cpu, source })?;
    }
    sched_setaffinity(Pid::from_raw(pid), &set).map_err(|source| ProcessError::Pin {
        pid,
        cpus: cpus.to_vec(),
        source,
    })?;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            {
                // A thread that ended meanwhile is fine.
                let _ = sched_setaffinity(Pid::from_raw(tid), &set);
            }
        }
    }
    Ok(())
}

/// CPUs a thread of `pid` may run on, from `/proc/PID/task/TID/status` (for checks).
pub fn thread_cpus(pid: i32) -> Vec<Vec<usize>> {
    let mut all = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        if let Some(line) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            all.push(parse_cpu_list(
                line.trim_start_matches("Cpus_allowed_list:").trim(),
            ));
        }
    }
    all
}

/// Parses a kernel CPU list such as `0-2,5`.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => {
                if let Ok(c) = part.parse() {
                    cpus.push(c);
                }
            }
        }
    }
    cpus
}

/// Whether nothing listens on `host:port` now (binding it succeeds).
pub fn port_is_free(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// A blocking HTTP client for health checks, every request limited to `timeout` (the
/// support crate's client; `health_url` is plain `http://`).
#[derive(Debug, Clone)]
pub struct HealthChecker {
    client: HttpClient,
}

/// Largest health or counters document read.
const HEALTH_BODY_LIMIT: u64 = 64 * 1024;

impl HealthChecker {
    pub fn new(timeout: Duration) -> HealthChecker {
        let mut options = ClientOptions::new(timeout);
        options.body_limit = HEALTH_BODY_LIMIT;
        HealthChecker {
            client: HttpClient::new(&options).expect("a client without a CA file always builds"),
        }
    }

    /// The JSON document `url` answers with (2xx, at most 64 KiB).
    pub fn get_json(&self, url: &str) -> Result<serde_json::Value, ProcessError> {
        self.client
            .get_json(url)
            .map_err(|e| ProcessError::worker_request(url, e))
    }

    /// `Ok` when `url` answers 2xx; otherwise what went wrong.
    pub fn check(&self, url: &str) -> Result<(), ProcessError> {
        match self.client.get_status(url) {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(ProcessError::WorkerStatus {
                url: url.to_owned(),
                status,
            }),
            Err(e) => Err(ProcessError::worker_request(url, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_live_and_identified_by_start_time() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).expect("own /proc entry");
        assert!(is_same_live_process(me, stat.start_ticks));
        assert!(!is_same_live_process(me, stat.start_ticks + 1));
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("3"), vec![3]);
        assert!(parse_cpu_list("").is_empty());
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn a_bound_port_is_not_free() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!port_is_free("127.0.0.1", port));
        drop(listener);
        assert!(port_is_free("127.0.0.1", port));
    }

    #[test]
    fn a_health_check_of_a_closed_port_fails_quickly_and_names_the_url() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let checker = HealthChecker::new(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let error = checker
            .check(&format!("http://127.0.0.1:{port}/healthz"))
            .unwrap_err();
        assert!(error.to_string().contains(&port.to_string()), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
