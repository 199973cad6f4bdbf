//! The trial load: before the daemon maps a plugin library into itself, a child process of
//! the same program maps it first (`infadaptd plugin-probe FILE`). A library whose
//! initialisers never finish, end the process or crash fails the trial within its time
//! limit and is not loaded, so it cannot hold the C library's loader lock inside the
//! daemon (which would stop the daemon from starting threads and from exiting).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HostError;

/// The subcommand the child runs (parsed apart from the command line the user sees).
pub const PROBE_COMMAND: &str = "plugin-probe";

/// How a plugin is tried before it is loaded: the program to run (this one) and how long
/// the trial may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialLoad {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl TrialLoad {
    /// Trials run by the running program itself, within `timeout`; `None` when the
    /// program's own path cannot be found.
    pub fn by_this_program(timeout: Duration) -> Option<TrialLoad> {
        std::env::current_exe()
            .ok()
            .map(|program| TrialLoad { program, timeout })
    }

    /// Maps `library` in a child process; `Err` says why the trial failed.
    ///
    /// # Errors
    ///
    /// [`HostError::TrialStart`], [`HostError::TrialTimeout`], [`HostError::TrialWait`] or
    /// [`HostError::TrialEnded`].
    pub fn run(&self, library: &Path) -> Result<(), HostError> {
        let mut child = Command::new(&self.program)
            .arg(PROBE_COMMAND)
            .arg(library)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .spawn()
            .map_err(|source| HostError::TrialStart {
                path: library.to_owned(),
                program: self.program.clone(),
                source,
            })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HostError::TrialTimeout {
                        path: library.to_owned(),
                        seconds: self.timeout.as_secs_f64(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(HostError::TrialWait {
                        path: library.to_owned(),
                        source,
                    });
                }
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.by_ref().take(4096).read_to_string(&mut said);
        }
        let said = said.trim();
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "an unknown status".to_owned(),
        };
        Err(HostError::TrialEnded {
            path: library.to_owned(),
            how,
            said: (!said.is_empty()).then(|| said.to_owned()),
        })
    }
}
