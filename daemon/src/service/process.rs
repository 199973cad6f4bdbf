//! The standard Prometheus process metrics of the daemon itself (`process_cpu_seconds_total`,
//! memory, file descriptors, start time), read from `/proc/self` and the kernel at each
//! scrape. A value that cannot be read is left out; nothing here fails or panics.

use std::fmt::Write as _;

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::unistd::{SysconfVar, sysconf};

use super::ServiceError;

/// One reading of the process metrics; `None` where it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessMetrics {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft limit on open files.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessMetrics {
    /// Reads the running process.
    pub fn read() -> ProcessMetrics {
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).ok().map(|usage| {
            let seconds =
                |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1_000_000.0;
            seconds(usage.user_time()) + seconds(usage.system_time())
        });
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let memory = |field: &str| status.as_deref().and_then(|t| status_kib(t, field));
        let start_time_seconds = match (
            std::fs::read_to_string("/proc/self/stat"),
            std::fs::read_to_string("/proc/stat"),
            sysconf(SysconfVar::CLK_TCK),
        ) {
            (Ok(stat), Ok(system), Ok(Some(ticks))) => start_time(&stat, &system, ticks as f64),
            _ => None,
        };
        ProcessMetrics {
            cpu_seconds,
            resident_memory_bytes: memory("VmRSS:"),
            virtual_memory_bytes: memory("VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            start_time_seconds,
        }
    }

    /// The metrics read, as Prometheus text (families without a value are left out).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                self.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                self.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                self.start_time_seconds,
            ),
        ];
        for (name, help, kind, value) in families {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
        out
    }
}

/// A `Field:   N kB` line of `/proc/self/status`, in bytes.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

/// The start time, seconds since the epoch: the `starttime` field of `/proc/self/stat`
/// (clock ticks since boot) plus `btime` of `/proc/stat`.
fn start_time(stat: &str, system: &str, ticks_per_s: f64) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // the fields after the last `)` start with field 3, so `starttime` (22) is the 20th.
    let after = &stat[stat.rfind(')')? + 1..];
    let started_ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    (ticks_per_s > 0.0).then(|| boot + started_ticks / ticks_per_s)
}

/// The highest soft limit on open files the daemon asks for (the kernel's usual `nr_open`).
const MAX_OPEN_FILES: u64 = 1 << 20;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit (at most
/// 1,048,576) and answers the limits now in force, `(soft, hard)`, or why they could not be
/// read or raised (the soft limit then stays as it was).
pub fn raise_open_files_limit() -> Result<(u64, u64), ServiceError> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(ServiceError::OpenFilesLimitUnreadable)?;
    let wanted = hard.min(MAX_OPEN_FILES);
    if soft >= wanted {
        return Ok((soft, hard));
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(|source| {
        ServiceError::OpenFilesLimitNotRaised {
            soft,
            wanted,
            source,
        }
    })?;
    Ok((wanted, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed_and_bad_ones_give_nothing() {
        let status = "Name:\tinfadaptd\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(123_456 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\tmany kB\n", "VmRSS:"), None);
        assert_eq!(status_kib("VmRSS:\t12 pages\n", "VmRSS:"), None);

        // A command name with spaces and a parenthesis; starttime is 5000 ticks.
        let stat = "42 (in fa) d) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 5000 \
                    1000 200 18446744073709551615";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
        assert_eq!(start_time(stat, system, 100.0), Some(1_700_000_050.0));
        assert_eq!(start_time(stat, "cpu 1 2 3\n", 100.0), None);
        assert_eq!(start_time("42 (short) S 1", system, 100.0), None);
        assert_eq!(start_time("no parenthesis", system, 100.0), None);
        assert_eq!(start_time(stat, system, 0.0), None);
    }

    #[test]
    fn the_running_process_is_read_and_missing_values_are_left_out() {
        let read = ProcessMetrics::read();
        let text = read.render();
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                assert!(text.contains(&format!("\n{name} ")), "{name} in:\n{text}");
            }
            assert!(read.resident_memory_bytes.is_some_and(|v| v > 0));
            assert!(read.open_fds.is_some_and(|v| v >= 3));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let started = read.start_time_seconds.unwrap_or(0.0);
            assert!(started > 1e9 && started <= now + 1.0, "{started} vs {now}");
        }
        let partial = ProcessMetrics {
            open_fds: Some(7),
            ..ProcessMetrics::default()
        };
        assert_eq!(
            partial.render(),
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 7\n"
        );
    }
}
